#!/usr/bin/env python3
"""Check that every Sluice container in the deployment files can drain before it is killed.

Usage:
    scripts/check_drain_budget.py [--min-margin SECONDS] [FILE ...]
    scripts/check_drain_budget.py --self-test

With no FILE, checks docker/kubernetes/*.yaml and docker/compose.yaml (relative to the repository).

Kubernetes manifests (multi-document YAML; Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job, CronJob, PodTemplate and List) and Compose files are read. A container
(or compose service) is a Sluice one when its image contains "sluice" or it is named "sluice".

Its drain settings are read from the command line (`--drain-delay 5s` or `--drain-delay=5s`, in
`command` and `args`, also inside `sh -c` strings), from SLUICE_* environment variables (literal
values, ConfigMap references and envFrom ConfigMaps) and from the YAML config file given with
`--config` / SLUICE_CONFIG when it is mounted from a ConfigMap found in the checked files (or, for
Compose, bind-mounted from a file). Defaults: drain-delay 5s, drain-timeout 20s,
termination-grace 30s, admin port 9901. A setting given in two places with different values is
reported, so the result does not depend on which source Sluice gives precedence to.

Findings (one line each, naming file, object, container and the numbers):
  - drain-delay + drain-timeout + margin does not fit in terminationGracePeriodSeconds (default 30;
    Compose: stop_grace_period, default 10s);
  - drain-delay + drain-timeout + 1 s does not fit in Sluice's own --termination-grace (Sluice refuses
    to start, exit 1), or --termination-grace is longer than the pod's grace period (Sluice would plan with time
    it does not have);
  - a lifecycle.preStop hook on the Sluice container (it delays SIGTERM, so the drain starts late and
    the grace period is spent sleeping);
  - no readiness probe, a readiness probe that is not an httpGet of /readyz, or one on another port
    than Sluice's admin port;
  - a Compose stop_signal other than SIGTERM;
  - a setting that cannot be read or parsed.

Exit status: 0 no finding, 1 findings, 2 usage or file error.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable

try:
    import yaml
except ImportError:  # pragma: no cover - reported to the user
    sys.stderr.write("check_drain_budget.py needs PyYAML: pip install pyyaml\n")
    sys.exit(2)

DEFAULT_DRAIN_DELAY = 5.0
DEFAULT_DRAIN_TIMEOUT = 20.0
DEFAULT_TERMINATION_GRACE = 30.0  # Sluice's --termination-grace default
DEFAULT_POD_GRACE = 30.0  # Kubernetes terminationGracePeriodSeconds default
DEFAULT_COMPOSE_GRACE = 10.0  # Docker's stop timeout default
DEFAULT_ADMIN_PORT = 9901
DEFAULT_MIN_MARGIN = 1.0
SLUICE_MARGIN = 1.0  # Sluice refuses to start unless delay + timeout + 1 s <= --termination-grace
READINESS_PATH = "/readyz"

# Setting name (as in flags and the YAML config) -> environment variable.
SETTINGS = ("drain-delay", "drain-timeout", "termination-grace", "config", "admin")
ENV_NAMES = {s: "SLUICE_" + s.upper().replace("-", "_") for s in SETTINGS}

POD_TEMPLATE_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}

# ---------------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Seconds in `500ms`, `5s`, `1m30s`, `2h`, or a bare number of seconds (string or YAML number)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"negative duration: {value!r}")
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        raise ValueError(f"not a duration: {value!r} (use 500ms, 5s, 1m30s or a number of seconds)")
    return total


def fmt(seconds: float) -> str:
    """A duration as the shortest plain text: 25s, 1.5s, 0.5s."""
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------------------------------
# Findings and sources
# ---------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    file: str
    obj: str
    container: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.obj}: container {self.container}: {self.message}"


@dataclass
class Setting:
    value: Any
    source: str  # "args", "env SLUICE_X", "config /etc/sluice/sluice.yaml"


@dataclass
class Settings:
    """Every value seen for each setting, with where it came from."""

    seen: dict[str, list[Setting]] = field(default_factory=lambda: {s: [] for s in SETTINGS})
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, value: Any, source: str) -> None:
        self.seen[name].append(Setting(value, source))


class ConfigMaps:
    """ConfigMaps found in all the checked files, by (namespace, name)."""

    def __init__(self) -> None:
        self._maps: dict[tuple[str | None, str], dict[str, str]] = {}

    def add(self, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if name:
            self._maps[(meta.get("namespace"), name)] = dict(doc.get("data") or {})

    def get(self, namespace: str | None, name: str) -> dict[str, str] | None:
        if (namespace, name) in self._maps:
            return self._maps[(namespace, name)]
        # A manifest without namespaces is applied into one namespace: match by name alone.
        for (ns, n), data in self._maps.items():
            if n == name and (ns is None or namespace is None):
                return data
        return None


# ---------------------------------------------------------------------------------------------------
# Reading settings
# ---------------------------------------------------------------------------------------------------

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_k8s_vars(token: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args from the container's literal env."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), token)


def scan_tokens(tokens: list[str], settings: Settings, source: str) -> None:
    """Flags in a command line; tokens holding spaces (`sh -c "sluice ..."`) are split and scanned."""
    words: list[str] = []
    for token in tokens:
        if any(c.isspace() for c in token):
            try:
                words.extend(shlex.split(token))
            except ValueError:
                words.append(token)
        else:
            words.append(token)
    for index, word in enumerate(words):
        for name in SETTINGS:
            flag = "--" + name
            if word == flag:
                if index + 1 < len(words):
                    settings.add(name, words[index + 1], source)
                else:
                    settings.problems.append(f"{flag} has no value in {source}")
            elif word.startswith(flag + "="):
                settings.add(name, word[len(flag) + 1 :], source)


def scan_config_text(text: str, settings: Settings, source: str) -> None:
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        settings.problems.append(f"{source} is not valid YAML: {error}")
        return
    if config is None:
        return
    if not isinstance(config, dict):
        settings.problems.append(f"{source} is not a YAML mapping")
        return
    for name in ("drain-delay", "drain-timeout", "termination-grace", "admin"):
        if name in config:
            settings.add(name, config[name], source)


def resolve_k8s_config_file(
    path: str, container: dict[str, Any], pod: dict[str, Any], namespace: str | None, maps: ConfigMaps
) -> str | None:
    """The text of `path` inside the container when it comes from a ConfigMap we have, else None."""
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    # Most specific mount first.
    mounts = sorted(container.get("volumeMounts") or [], key=lambda m: -len(m.get("mountPath", "")))
    for mount in mounts:
        mount_path = (mount.get("mountPath") or "").rstrip("/")
        sub_path = mount.get("subPath")
        if sub_path:
            if path != mount_path:
                continue
            relative = sub_path
        else:
            if not path.startswith(mount_path + "/"):
                continue
            relative = path[len(mount_path) + 1 :]
        volume = volumes.get(mount.get("name")) or {}
        sources: list[dict[str, Any]] = []
        if "configMap" in volume:
            sources.append(volume["configMap"])
        for projected in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in projected:
                sources.append(projected["configMap"])
        for source in sources:
            data = maps.get(namespace, source.get("name", ""))
            if data is None:
                continue
            items = source.get("items")
            if items:
                for item in items:
                    if item.get("path") == relative and item.get("key") in data:
                        return data[item["key"]]
            elif relative in data:
                return data[relative]
        return None  # the mount that holds the path is not a ConfigMap we can read
    return None


def k8s_settings(
    container: dict[str, Any], pod: dict[str, Any], namespace: str | None, maps: ConfigMaps
) -> Settings:
    settings = Settings()
    literal_env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if not ref:
            continue
        data = maps.get(namespace, ref.get("name", "")) or {}
        prefix = source.get("prefix") or ""
        for key, value in data.items():
            literal_env[prefix + key] = str(value)
    for entry in container.get("env") or []:
        name = entry.get("name")
        if "value" in entry:
            literal_env[name] = str(entry["value"])
        elif name in ENV_NAMES.values():
            ref = (entry.get("valueFrom") or {}).get("configMapKeyRef")
            data = maps.get(namespace, ref.get("name", "")) if ref else None
            if ref and data is not None and ref.get("key") in data:
                literal_env[name] = str(data[ref["key"]])
            else:
                settings.problems.append(f"env {name} comes from a source this check cannot read")
    for setting, env_name in ENV_NAMES.items():
        if env_name in literal_env:
            settings.add(setting, literal_env[env_name], f"env {env_name}")
    tokens = [expand_k8s_vars(str(t), literal_env) for t in (container.get("command") or [])]
    tokens += [expand_k8s_vars(str(t), literal_env) for t in (container.get("args") or [])]
    scan_tokens(tokens, settings, "args")
    for config in {str(s.value) for s in settings.seen["config"]}:
        text = resolve_k8s_config_file(config, container, pod, namespace, maps)
        if text is None:
            settings.problems.append(
                f"config file {config} is not mounted from a ConfigMap in the checked files, "
                "so its drain settings cannot be verified"
            )
        else:
            scan_config_text(text, settings, f"config {config}")
    return settings


def effective(settings: Settings, name: str, default: float) -> tuple[float | None, str, list[str]]:
    """(seconds, where from, problems) for a duration setting."""
    values = settings.seen[name]
    problems: list[str] = []
    parsed: list[tuple[float, str]] = []
    for item in values:
        try:
            parsed.append((parse_duration(item.value), item.source))
        except ValueError as error:
            problems.append(f"{name} in {item.source}: {error}")
    if problems:
        return None, "", problems
    if not parsed:
        return default, "default", []
    distinct = {seconds for seconds, _ in parsed}
    if len(distinct) > 1:
        listing = ", ".join(f"{fmt(s)} in {src}" for s, src in parsed)
        return None, "", [f"{name} is set to different values: {listing}"]
    return parsed[0][0], parsed[0][1], []


def admin_port(settings: Settings) -> tuple[int | None, list[str]]:
    ports: set[int] = set()
    for item in settings.seen["admin"]:
        match = re.search(r":(\d+)$", str(item.value).strip())
        if not match:
            return None, [f"admin address {item.value!r} in {item.source} has no port"]
        ports.add(int(match.group(1)))
    if len(ports) > 1:
        return None, [f"admin is set to different ports: {sorted(ports)}"]
    return (ports.pop() if ports else DEFAULT_ADMIN_PORT), []


# ---------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------


def is_sluice(name: str, image: str) -> bool:
    return name == "sluice" or "sluice" in (image or "").lower()


def budget_findings(
    settings: Settings, grace: float, grace_name: str, min_margin: float
) -> list[str]:
    messages = list(settings.problems)
    delay, delay_src, problems = effective(settings, "drain-delay", DEFAULT_DRAIN_DELAY)
    messages += problems
    timeout, timeout_src, problems = effective(settings, "drain-timeout", DEFAULT_DRAIN_TIMEOUT)
    messages += problems
    sluice_grace, _, problems = effective(settings, "termination-grace", DEFAULT_TERMINATION_GRACE)
    messages += problems
    if delay is None or timeout is None:
        return messages
    budget = delay + timeout
    sources = f"(drain-delay from {delay_src}, drain-timeout from {timeout_src})"
    if budget + min_margin > grace:
        messages.append(
            f"drain-delay {fmt(delay)} + drain-timeout {fmt(timeout)} = {fmt(budget)}"
            f" + margin {fmt(min_margin)} = {fmt(budget + min_margin)} does not fit in"
            f" {grace_name} {fmt(grace)} {sources}"
        )
    if sluice_grace is not None:
        if budget + SLUICE_MARGIN > sluice_grace:
            messages.append(
                f"drain-delay {fmt(delay)} + drain-timeout {fmt(timeout)} + Sluice's own margin"
                f" {fmt(SLUICE_MARGIN)} = {fmt(budget + SLUICE_MARGIN)} does not fit in its"
                f" termination-grace {fmt(sluice_grace)}: Sluice refuses to start (exit 1)"
            )
        if sluice_grace > grace:
            messages.append(
                f"Sluice's termination-grace {fmt(sluice_grace)} is longer than {grace_name}"
                f" {fmt(grace)}: set them equal"
            )
    return messages


def readiness_findings(container: dict[str, Any], port: int | None) -> list[str]:
    probe = container.get("readinessProbe")
    if not probe:
        return [f"no readinessProbe: add httpGet {READINESS_PATH} on the admin port"]
    http = probe.get("httpGet")
    if not http:
        kind = next((k for k in ("tcpSocket", "exec", "grpc") if k in probe), "unknown")
        return [f"readinessProbe uses {kind}, not httpGet {READINESS_PATH}"]
    messages = []
    path = http.get("path", "/")
    if path != READINESS_PATH:
        messages.append(f"readinessProbe path is {path!r}, not {READINESS_PATH!r}")
    probe_port = http.get("port")
    if isinstance(probe_port, str) and not probe_port.isdigit():
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if probe_port not in named:
            messages.append(f"readinessProbe port {probe_port!r} is not a named port of the container")
            return messages
        probe_port = named[probe_port]
    if port is not None and probe_port is not None and int(probe_port) != port:
        messages.append(f"readinessProbe port is {probe_port}, not the admin port {port}")
    return messages


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    path = POD_TEMPLATE_PATHS.get(doc.get("kind", ""))
    node: Any = doc
    if path is None:
        return None
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def check_k8s_doc(
    file: str, doc: dict[str, Any], maps: ConfigMaps, min_margin: float
) -> tuple[list[Finding], int]:
    pod = pod_spec(doc)
    if pod is None:
        return [], 0
    meta = doc.get("metadata") or {}
    namespace = meta.get("namespace")
    obj = f"{doc.get('kind')}/{meta.get('name', '?')}"
    if namespace:
        obj = f"{namespace}/{obj}"
    findings: list[Finding] = []
    count = 0
    grace_value = pod.get("terminationGracePeriodSeconds")
    grace = DEFAULT_POD_GRACE if grace_value is None else float(grace_value)
    grace_name = "terminationGracePeriodSeconds" + ("" if grace_value is not None else " (default)")
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or []:
            name = container.get("name", "?")
            if not is_sluice(name, container.get("image", "")):
                continue
            count += 1
            label = name if group == "containers" else f"{name} (initContainers)"
            settings = k8s_settings(container, pod, namespace, maps)
            messages = budget_findings(settings, grace, grace_name, min_margin)
            pre_stop = (container.get("lifecycle") or {}).get("preStop")
            if pre_stop:
                action = next(iter(pre_stop), "hook")
                messages.append(
                    f"has a lifecycle.preStop {action} hook: it delays SIGTERM, so the drain starts"
                    " late and eats into the grace period; Sluice needs none"
                )
            port, problems = admin_port(settings)
            messages += problems
            messages += readiness_findings(container, port)
            findings += [Finding(file, obj, label, m) for m in messages]
    return findings, count


def compose_settings(service: dict[str, Any], base_dir: str, top: dict[str, Any]) -> Settings:
    settings = Settings()
    env_block = service.get("environment") or {}
    env: dict[str, str] = {}
    if isinstance(env_block, dict):
        env = {k: "" if v is None else str(v) for k, v in env_block.items()}
    else:
        for entry in env_block:
            key, _, value = str(entry).partition("=")
            env[key] = value
    for setting, env_name in ENV_NAMES.items():
        if env_name in env:
            settings.add(setting, env[env_name], f"environment {env_name}")
    tokens: list[str] = []
    for key in ("entrypoint", "command"):
        part = service.get(key)
        if isinstance(part, str):
            tokens += shlex.split(part)
        elif isinstance(part, list):
            tokens += [str(t) for t in part]
    scan_tokens(tokens, settings, "command")
    # Files mounted into the container: short and long bind syntax, and top-level configs.
    files: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            if len(parts) >= 2 and parts[0].startswith((".", "/", "~")):
                files[parts[1]] = parts[0]
        elif isinstance(volume, dict) and volume.get("type") == "bind":
            files[volume.get("target", "")] = volume.get("source", "")
    top_configs = top.get("configs") or {}
    for config in service.get("configs") or []:
        name = config if isinstance(config, str) else config.get("source")
        target = f"/{name}" if isinstance(config, str) else config.get("target", f"/{name}")
        source_file = (top_configs.get(name) or {}).get("file")
        if source_file:
            files[target] = source_file
    for config in {str(s.value) for s in settings.seen["config"]}:
        host = files.get(config)
        if host is None:
            settings.problems.append(f"config file {config} is not bind-mounted from a file")
            continue
        host_path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(host)))
        try:
            with open(host_path, encoding="utf-8") as handle:
                scan_config_text(handle.read(), settings, f"config {config}")
        except OSError as error:
            settings.problems.append(f"config file {config} ({host_path}) cannot be read: {error}")
    return settings


def check_compose(file: str, doc: dict[str, Any], min_margin: float) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    count = 0
    base_dir = os.path.dirname(os.path.abspath(file))
    for name, service in (doc.get("services") or {}).items():
        service = service or {}
        if not is_sluice(name, str(service.get("image", ""))):
            continue
        count += 1
        obj = f"service/{name}"
        settings = compose_settings(service, base_dir, doc)
        messages: list[str] = []
        grace_value = service.get("stop_grace_period")
        grace_name = "stop_grace_period" + ("" if grace_value is not None else " (default)")
        try:
            grace = DEFAULT_COMPOSE_GRACE if grace_value is None else parse_duration(grace_value)
        except ValueError as error:
            messages.append(f"stop_grace_period: {error}")
            grace = None
        if grace is not None:
            messages += budget_findings(settings, grace, grace_name, min_margin)
        signal = str(service.get("stop_signal", "SIGTERM")).upper()
        if signal not in ("SIGTERM", "TERM", "15"):
            messages.append(f"stop_signal is {signal}: Sluice drains on SIGTERM (SIGQUIT cuts at once)")
        findings += [Finding(file, obj, name, m) for m in messages]
    return findings, count


def load_documents(file: str) -> list[Any]:
    with open(file, encoding="utf-8") as handle:
        return [d for d in yaml.safe_load_all(handle) if d is not None]


def flatten(docs: Iterable[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and "items" in doc:
            out += flatten(doc.get("items") or [])
        elif isinstance(doc, dict):
            out.append(doc)
    return out


def check_files(files: list[str], min_margin: float = DEFAULT_MIN_MARGIN) -> tuple[list[Finding], int]:
    """All findings in `files`, and how many Sluice containers were checked."""
    loaded: list[tuple[str, list[dict[str, Any]]]] = []
    maps = ConfigMaps()
    for file in files:
        docs = flatten(load_documents(file))
        loaded.append((file, docs))
        for doc in docs:
            if doc.get("kind") == "ConfigMap":
                maps.add(doc)
    findings: list[Finding] = []
    count = 0
    for file, docs in loaded:
        for doc in docs:
            if "kind" in doc:
                more, n = check_k8s_doc(file, doc, maps, min_margin)
            elif "services" in doc:
                more, n = check_compose(file, doc, min_margin)
            else:
                continue
            findings += more
            count += n
    return findings, count


def default_files() -> list[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "docker", "kubernetes", "*.y*ml")))
    compose = os.path.join(root, "docker", "compose.yaml")
    if os.path.exists(compose):
        files.append(compose)
    return [os.path.relpath(f) for f in files]


# ---------------------------------------------------------------------------------------------------
# Self-test: bad manifests must be caught, good ones must pass.
# ---------------------------------------------------------------------------------------------------

_POD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: demo}}
spec:
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo}}}}
    spec:
{grace}
      containers:
        - name: {name}
          image: {image}
          args: {args}
{env}
{extra}
          ports:
            - {{name: http, containerPort: 8080}}
            - {{name: admin, containerPort: 9901}}
{probe}
{volumes}
"""

_PROBE = """\
          readinessProbe:
            httpGet: {{path: {path}, port: {port}}}"""


def _pod(
    *,
    grace: str = "      terminationGracePeriodSeconds: 30",
    name: str = "sluice",
    image: str = "sluice:dev",
    args: str = "[--drain-delay, 5s, --drain-timeout, 20s]",
    env: str = "",
    extra: str = "",
    probe: str | None = None,
    volumes: str = "",
) -> str:
    if probe is None:
        probe = _PROBE.format(path="/readyz", port="admin")
    return _POD.format(
        grace=grace, name=name, image=image, args=args, env=env, extra=extra, probe=probe, volumes=volumes
    )


_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: demo-config}}
data:
  sluice.yaml: |
    drain-delay: {delay}
    drain-timeout: {timeout}
---
"""

_MOUNT = """\
          volumeMounts:
            - {name: config, mountPath: /etc/sluice}"""

_VOLUME = """\
      volumes:
        - name: config
          configMap: {name: demo-config}"""


def _self_test_cases() -> list[tuple[str, str, str, list[str]]]:
    """(description, file name, text, substrings that must each appear in some finding; [] = pass)."""
    compose_ok = """\
services:
  sluice:
    image: sluice:dev
    command: [--drain-delay, 5s, --drain-timeout, 20s]
    stop_grace_period: 30s
"""
    return [
        ("good manifest passes", "good.yaml", _pod(), []),
        (
            "budget too big for the grace period (args)",
            "big.yaml",
            _pod(args="[--drain-delay, 10s, --drain-timeout, 25s, --termination-grace, 30s]"),
            ["= 35s + margin 1s = 36s does not fit in terminationGracePeriodSeconds 30s",
             "= 36s does not fit in its termination-grace 30s: Sluice refuses to start"],
        ),
        (
            "budget too big with the default grace period (--flag=value form)",
            "big-default.yaml",
            _pod(grace="", args="[--drain-delay=1m, --drain-timeout=1m30s]"),
            ["= 150s + margin 1s = 151s does not fit in terminationGracePeriodSeconds (default) 30s"],
        ),
        (
            "pod grace raised but Sluice's termination-grace left at its 30 s default",
            "sluice-grace.yaml",
            _pod(grace="      terminationGracePeriodSeconds: 60", args="[--drain-delay, 15s, --drain-timeout, 20s]"),
            ["+ Sluice's own margin 1s = 36s does not fit in its termination-grace 30s"],
        ),
        (
            "budget exactly equal to the grace period leaves no margin",
            "no-margin.yaml",
            _pod(grace="      terminationGracePeriodSeconds: 25"),
            ["= 25s + margin 1s = 26s does not fit in terminationGracePeriodSeconds 25s"],
        ),
        (
            "budget too big from the environment (500ms units)",
            "env.yaml",
            _pod(
                args="[]",
                env="          env:\n"
                "            - {name: SLUICE_DRAIN_DELAY, value: 9500ms}\n"
                "            - {name: SLUICE_DRAIN_TIMEOUT, value: '21'}",
            ),
            ["drain-delay 9.5s + drain-timeout 21s = 30.5s"],
        ),
        (
            "budget too big from the mounted ConfigMap",
            "configmap.yaml",
            _CONFIGMAP.format(delay="15s", timeout="30s")
            + _pod(args="[--config, /etc/sluice/sluice.yaml]", extra=_MOUNT, volumes=_VOLUME),
            ["drain-delay 15s + drain-timeout 30s = 45s", "config /etc/sluice/sluice.yaml"],
        ),
        (
            "budget that fits, from the mounted ConfigMap",
            "configmap-ok.yaml",
            _CONFIGMAP.format(delay="5s", timeout="20s")
            + _pod(args="[--config=/etc/sluice/sluice.yaml]", extra=_MOUNT, volumes=_VOLUME),
            [],
        ),
        (
            "config file that is not mounted",
            "unmounted.yaml",
            _pod(args="[--config, /etc/sluice/sluice.yaml]"),
            ["config file /etc/sluice/sluice.yaml is not mounted from a ConfigMap"],
        ),
        (
            "same setting with different values in args and env",
            "conflict.yaml",
            _pod(env="          env:\n            - {name: SLUICE_DRAIN_DELAY, value: 7s}"),
            ["drain-delay is set to different values"],
        ),
        (
            "unparseable duration",
            "bad-duration.yaml",
            _pod(args="[--drain-delay, five]"),
            ["not a duration: 'five'"],
        ),
        (
            "preStop hook on the Sluice container",
            "prestop.yaml",
            _pod(extra="          lifecycle:\n            preStop:\n"
                 "              exec: {command: [sleep, '5']}"),
            ["has a lifecycle.preStop exec hook"],
        ),
        (
            "readiness probe on the wrong path",
            "probe-path.yaml",
            _pod(probe=_PROBE.format(path="/healthz", port="admin")),
            ["readinessProbe path is '/healthz', not '/readyz'"],
        ),
        (
            "readiness probe on the proxied port instead of the admin port",
            "probe-port.yaml",
            _pod(probe=_PROBE.format(path="/readyz", port="http")),
            ["readinessProbe port is 8080, not the admin port 9901"],
        ),
        (
            "no readiness probe",
            "no-probe.yaml",
            _pod(probe=""),
            ["no readinessProbe"],
        ),
        (
            "Sluice found by container name, in initContainers",
            "init.yaml",
            _pod(image="registry.example/proxy:1").replace("containers:", "initContainers:")
            .replace("image: registry.example/proxy:1", "image: registry.example/proxy:1\n"
                     "          restartPolicy: Always\n          lifecycle: {preStop: {sleep: {seconds: 5}}}"),
            ["sluice (initContainers): has a lifecycle.preStop sleep hook"],
        ),
        (
            "other containers are not checked",
            "other.yaml",
            _pod(name="app", image="nginx:1.27", probe=""),
            [],
        ),
        ("compose file with enough grace passes", "compose-ok.yaml", compose_ok, []),
        (
            "compose file with Docker's default 10 s stop timeout",
            "compose-default.yaml",
            compose_ok.replace("    stop_grace_period: 30s\n", ""),
            ["service/sluice: container sluice: drain-delay 5s + drain-timeout 20s = 25s"
             " + margin 1s = 26s does not fit in stop_grace_period (default) 10s"],
        ),
        (
            "compose file stopping Sluice with SIGQUIT",
            "compose-quit.yaml",
            compose_ok + "    stop_signal: SIGQUIT\n",
            ["stop_signal is SIGQUIT"],
        ),
    ]


def self_test() -> int:
    passed = failed = 0

    def verdict(ok: bool, what: str, detail: str = "") -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   {what}")
        else:
            failed += 1
            print(f"FAIL {what}{': ' + detail if detail else ''}")

    for text, expected in (("500ms", 0.5), ("5s", 5.0), ("1m30s", 90.0), ("20", 20.0), (7, 7.0),
                           ("1h", 3600.0), ("1.5s", 1.5)):
        verdict(parse_duration(text) == expected, f"duration {text!r} = {expected}")
    for text in ("5x", "s", "", "5s3", "-1s", "1m 30s"):
        try:
            parse_duration(text)
            verdict(False, f"duration {text!r} is rejected", "it was accepted")
        except ValueError:
            verdict(True, f"duration {text!r} is rejected")

    with tempfile.TemporaryDirectory() as directory:
        for description, name, text, expected in _self_test_cases():
            path = os.path.join(directory, name)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            try:
                findings, count = check_files([path])
            except Exception as error:  # a crash is a failed case, not a passed check
                verdict(False, description, f"raised {error!r}")
                continue
            lines = [str(f) for f in findings]
            if not expected:
                verdict(not lines, description, "; ".join(lines))
                continue
            missing = [e for e in expected if not any(e in line for line in lines)]
            named = all(line.startswith(path + ": ") for line in lines)
            verdict(
                count >= 1 and not missing and named,
                description,
                f"missing {missing} in {lines}" if missing else f"checked {count}: {lines}",
            )
    print(f"self-test: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="manifests and compose files (default: docker/)")
    parser.add_argument(
        "--min-margin",
        type=parse_duration,
        default=DEFAULT_MIN_MARGIN,
        help=f"seconds that must be left between the drain budget and the kill (default {DEFAULT_MIN_MARGIN:g})",
    )
    parser.add_argument("--self-test", action="store_true", help="check that bad manifests are caught")
    options = parser.parse_args(argv)
    if options.self_test:
        return self_test()
    files = options.files or default_files()
    if not files:
        print("check_drain_budget: no files to check", file=sys.stderr)
        return 2
    try:
        findings, count = check_files(files, options.min_margin)
    except (OSError, yaml.YAMLError) as error:
        print(f"check_drain_budget: {error}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    print(
        f"check_drain_budget: {count} Sluice container(s) in {len(files)} file(s),"
        f" {len(findings)} finding(s)"
    )
    if count == 0:
        print("check_drain_budget: no Sluice container found: nothing was verified", file=sys.stderr)
        return 1
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
