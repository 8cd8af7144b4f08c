#!/usr/bin/env python3
"""Check that every Sluice container in the deployment files can drain before it is killed.

Usage:
    scripts/check_drain_budget.py [--sluice-bin PATH] [--min-margin SECONDS] [FILE ...]
    scripts/check_drain_budget.py [--sluice-bin PATH] --self-test

With no FILE, checks docker/kubernetes/*.yaml and docker/compose.yaml (relative to the repository).

This script only does what the binary cannot: it walks Kubernetes manifests (multi-document YAML;
Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, PodTemplate
and List) and Compose files, and takes each Sluice container's settings as the container would get
them: its arguments (`command` and `args`, also inside `sh -c` strings, with Kubernetes' $(VAR)
expansion), its SLUICE_* environment (literal values, ConfigMap references and envFrom ConfigMaps),
and its `--config` / SLUICE_CONFIG file when it is mounted from a ConfigMap found in the checked files
(or, for Compose, bind-mounted from a file). In supervisor mode (`sluice [options] -- APP ARGS...`)
everything after the first `--` is the app's command line: it is passed on after `--` as it is (never
split into words, never searched for Sluice's flags), so `--app-*` settings are judged with their app.
A container (or compose service) is a Sluice one when its image contains "sluice", it is named
"sluice", or its command runs `sluice`.

The rules are the binary's: the settings are given to `sluice check-config --format json
--grace-period GRACE`, where GRACE is the pod's terminationGracePeriodSeconds (default 30) or the
Compose service's stop_grace_period (default 10s). Sluice reads, validates and judges them exactly as
it would at start-up (durations, defaults, precedence, the drain budget and its margin), and also
checks that the budget fits GRACE and that its termination-grace is not longer. The binary is
--sluice-bin, else $SLUICE_BIN, else .build/debug/sluice in the repository (`swift build --product
sluice` builds it).

Findings (one line each, naming file, object and container):
  - every error `sluice check-config` reports: a setting Sluice refuses (it would exit 1), a drain
    budget that does not fit its termination-grace or the grace period, a termination-grace longer
    than the grace period;
  - every warning it reports: a setting given in two places with different values;
  - a lifecycle.preStop hook on the Sluice container (it delays SIGTERM, so the drain starts late and
    the grace period is spent sleeping; in supervisor mode Sluice stops the app itself);
  - another container's preStop httpGet of /drain/wait (a sidecar's app waiting for Sluice's drain)
    on a port that is not the admin port of a Sluice container in the same pod;
  - no readiness probe, a readiness probe that is not an httpGet of /readyz, or one on another port
    than Sluice's admin port (as the binary reports it);
  - a Compose stop_signal other than SIGTERM;
  - settings that cannot be read (a config file not mounted from a checked ConfigMap, an environment
    variable from a Secret).

Exit status: 0 no finding, 1 findings, 2 usage or file error (or no binary).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable

try:
    import yaml
except ImportError:  # pragma: no cover - reported to the user
    sys.stderr.write("check_drain_budget.py needs PyYAML: pip install pyyaml\n")
    sys.exit(2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BINARY = os.path.join(ROOT, ".build", "debug", "sluice")
DEFAULT_POD_GRACE = "30"  # Kubernetes' terminationGracePeriodSeconds default, in seconds
DEFAULT_COMPOSE_GRACE = "10s"  # Docker's stop timeout default
READINESS_PATH = "/readyz"
# What this script must know of Sluice's interface to find a container's settings: where its config
# file is named, and which environment variables are Sluice's. Everything else is the binary's.
CONFIG_FLAG = "--config"
CONFIG_ENV = "SLUICE_CONFIG"
ENV_PREFIX = "SLUICE_"
APP_SEPARATOR = "--"  # supervisor mode: `sluice [options] -- APP ARGS...`
DRAIN_WAIT_PATH = "/drain/wait"
SHELL_OPERATORS = {";", "&&", "||", "|", "&"}

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


class BinaryMissing(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# Findings, a container's settings, and the binary's verdict
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
class Container:
    """A Sluice container's settings as it would get them."""

    args: list[str] = field(default_factory=list)
    # Supervisor mode: the app's command line (what follows `--`), else None.
    app: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Config file path inside the container -> its text, when it could be read.
    files: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def config_paths(self) -> set[str]:
        paths = set()
        for index, word in enumerate(self.args):
            if word == CONFIG_FLAG and index + 1 < len(self.args):
                paths.add(self.args[index + 1])
            elif word.startswith(CONFIG_FLAG + "="):
                paths.add(word[len(CONFIG_FLAG) + 1 :])
        if CONFIG_ENV in self.env:
            paths.add(self.env[CONFIG_ENV])
        return paths


@dataclass
class Checker:
    binary: str
    workdir: str
    min_margin: float | None = None

    def judge(self, container: Container, grace: str, grace_name: str) -> tuple[list[str], int | None]:
        """(findings, admin port) from `sluice check-config` on the container's settings."""
        args = list(container.args)
        env = dict(container.env)
        local_names: dict[str, str] = {}
        for index, (path, text) in enumerate(sorted(container.files.items())):
            local = os.path.join(self.workdir, f"config-{os.getpid()}-{id(container)}-{index}.yaml")
            with open(local, "w", encoding="utf-8") as handle:
                handle.write(text)
            args = [local if a == path else (f"{CONFIG_FLAG}={local}" if a == f"{CONFIG_FLAG}={path}" else a) for a in args]
            if env.get(CONFIG_ENV) == path:
                env[CONFIG_ENV] = local
            local_names[local] = path
        base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        command = [self.binary, "check-config", "--format", "json", "--grace-period", grace] + args
        if container.app is not None:
            # check-config reads the command line as the proxy does, app included (it never starts it).
            command += [APP_SEPARATOR, *container.app]
        try:
            result = subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=60)
        except FileNotFoundError as error:
            raise BinaryMissing(str(error)) from error
        except subprocess.TimeoutExpired:
            return ["sluice check-config did not answer within 60 s"], None
        try:
            report = json.loads(result.stdout)
        except ValueError:
            detail = (result.stderr or result.stdout).strip().splitlines()
            return [f"sluice check-config failed (exit {result.returncode}): {' '.join(detail[-3:])}"], None
        # The binary names the grace period neutrally; say which one it was. Its messages name the
        # config file by the copy it read: name the container's path instead.
        messages = [e.replace("the grace period", grace_name) for e in report.get("errors", [])]
        messages += [f"set twice: {w}" for w in report.get("warnings", [])]
        for local, name in local_names.items():
            messages = [m.replace(local, name) for m in messages]
        config = report.get("config") or {}
        drain = config.get("drain")
        grace_seconds = report.get("grace_period_seconds")
        if self.min_margin is not None and drain and grace_seconds is not None:
            needed = drain["budget_seconds"] - drain["margin_seconds"] + self.min_margin
            if needed > grace_seconds:
                messages.append(
                    f"drain-delay {drain['delay']} + drain-timeout {drain['timeout']} + margin {self.min_margin:g}s"
                    f" = {needed:g}s exceeds {grace_name} {grace_seconds:g}s (--min-margin)"
                )
        return messages, config.get("admin_port")


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
# Reading a container's settings
# ---------------------------------------------------------------------------------------------------

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand_k8s_vars(token: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args from the container's literal env."""
    return _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), token)


def sluice_arguments(tokens: list[str]) -> list[str]:
    """The arguments Sluice gets (Sluice's own, then `--` and the app's in supervisor mode); see
    ``split_sluice_arguments``."""
    flags, app = split_sluice_arguments(tokens)
    return flags if app is None else flags + [APP_SEPARATOR] + app


def split_sluice_arguments(tokens: list[str]) -> tuple[list[str], list[str] | None]:
    """(Sluice's arguments, the app's command line after `--` or None).

    Sluice's arguments come after a `sluice` word when there is one (`command: [sluice, ...]`,
    `sh -c "exec sluice ..."`, up to a shell operator), else they are all the tokens (the image's
    entrypoint is Sluice); tokens holding spaces (`sh -c` scripts) are split into words; a leading `run`
    is dropped. The first `--` after that ends Sluice's arguments: what follows is the app's command
    line, kept as given (a token of `args` is one argv word of the app, spaces and all; from a shell
    script, its words up to a shell operator), and never searched for `sluice` or Sluice's flags."""
    words: list[tuple[str, bool]] = []  # (word, came from a shell script)
    for token in tokens:
        if any(c.isspace() for c in token) and not any(w == APP_SEPARATOR for w, _ in words):
            lexer = shlex.shlex(token, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            try:
                words.extend((w, True) for w in lexer)
            except ValueError:
                words.append((token, False))
        else:
            words.append((token, False))
    separator = next((i for i, (w, _) in enumerate(words) if w == APP_SEPARATOR), len(words))
    start = next((i + 1 for i, (w, _) in enumerate(words[:separator]) if os.path.basename(w) == "sluice"), None)
    if start is not None:
        words = words[start:]
        separator -= start
        # A shell operator ends Sluice's command: anywhere in a script, and before `--` in any case
        # (after it, a word of `args` is the app's, whatever it says).
        end = next((i for i, (w, shell) in enumerate(words) if w in SHELL_OPERATORS and (shell or i < separator)),
                   len(words))
        words = words[:end]
    separator = next((i for i, (w, _) in enumerate(words) if w == APP_SEPARATOR), None)
    flags = [w for w, _ in (words if separator is None else words[:separator])]
    app = None if separator is None else [w for w, _ in words[separator + 1 :]]
    if flags and flags[0] == "run":
        flags = flags[1:]
    return flags, app


def runs_sluice(tokens: list[str]) -> bool:
    """Whether a container's command (`command`, else nothing: the image's entrypoint is unknown) runs
    Sluice: its first word, or the word a shell script starts with `exec`."""
    if not tokens:
        return False
    first = os.path.basename(str(tokens[0]))
    if first == "sluice":
        return True
    if first in ("sh", "bash", "dash", "ash") and len(tokens) >= 3 and tokens[1] == "-c":
        script = shlex.split(str(tokens[2])) if any(c.isspace() for c in str(tokens[2])) else [str(tokens[2])]
        script = script[1:] if script[:1] == ["exec"] else script
        return bool(script) and os.path.basename(script[0]) == "sluice"
    return False


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


def k8s_container(container: dict[str, Any], pod: dict[str, Any], namespace: str | None, maps: ConfigMaps) -> Container:
    settings = Container()
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
        elif name.startswith(ENV_PREFIX):
            ref = (entry.get("valueFrom") or {}).get("configMapKeyRef")
            data = maps.get(namespace, ref.get("name", "")) if ref else None
            if ref and data is not None and ref.get("key") in data:
                literal_env[name] = str(data[ref["key"]])
            else:
                settings.problems.append(f"env {name} comes from a source this check cannot read")
    settings.env = {k: v for k, v in literal_env.items() if k.startswith(ENV_PREFIX)}
    tokens = [expand_k8s_vars(str(t), literal_env) for t in (container.get("command") or [])]
    tokens += [expand_k8s_vars(str(t), literal_env) for t in (container.get("args") or [])]
    settings.args, settings.app = split_sluice_arguments(tokens)
    for config in sorted(settings.config_paths()):
        text = resolve_k8s_config_file(config, container, pod, namespace, maps)
        if text is None:
            settings.problems.append(
                f"config file {config} is not mounted from a ConfigMap in the checked files, "
                "so its settings cannot be verified"
            )
        else:
            settings.files[config] = text
    return settings


def compose_container(service: dict[str, Any], base_dir: str, top: dict[str, Any]) -> Container:
    settings = Container()
    env_block = service.get("environment") or {}
    env: dict[str, str] = {}
    if isinstance(env_block, dict):
        env = {k: "" if v is None else str(v) for k, v in env_block.items()}
    else:
        for entry in env_block:
            key, _, value = str(entry).partition("=")
            env[key] = value
    settings.env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    tokens: list[str] = []
    for key in ("entrypoint", "command"):
        part = service.get(key)
        if isinstance(part, str):
            tokens += shlex.split(part)
        elif isinstance(part, list):
            tokens += [str(t) for t in part]
    settings.args, settings.app = split_sluice_arguments(tokens)
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
    for config in sorted(settings.config_paths()):
        host = files.get(config)
        if host is None:
            settings.problems.append(f"config file {config} is not bind-mounted from a file")
            continue
        host_path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(host)))
        try:
            with open(host_path, encoding="utf-8") as handle:
                settings.files[config] = handle.read()
        except OSError as error:
            settings.problems.append(f"config file {config} ({host_path}) cannot be read: {error}")
    return settings


# ---------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------


def is_sluice(name: str, image: str, command: list[str] | None = None) -> bool:
    return name == "sluice" or "sluice" in (image or "").lower() or runs_sluice(list(command or []))


def settings_findings(checker: Checker, settings: Container, grace: str, grace_name: str) -> tuple[list[str], int | None]:
    """The container's own problems, or else the binary's verdict on its settings."""
    if settings.problems:
        # Without those settings the binary would judge something else than what runs.
        return list(settings.problems), None
    return checker.judge(settings, grace, grace_name)


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


def check_k8s_doc(file: str, doc: dict[str, Any], maps: ConfigMaps, checker: Checker) -> tuple[list[Finding], int]:
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
    grace = DEFAULT_POD_GRACE if grace_value is None else str(grace_value)
    grace_name = "terminationGracePeriodSeconds" + ("" if grace_value is not None else " (default)")
    admin_ports: list[int | None] = []  # of the pod's Sluice containers (None: not known)
    others: list[tuple[str, dict[str, Any]]] = []
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or []:
            name = container.get("name", "?")
            command = [str(t) for t in container.get("command") or []]
            label = name if group == "containers" else f"{name} (initContainers)"
            if not is_sluice(name, container.get("image", ""), command):
                others.append((label, container))
                continue
            count += 1
            settings = k8s_container(container, pod, namespace, maps)
            messages, port = settings_findings(checker, settings, grace, grace_name)
            admin_ports.append(port)
            pre_stop = (container.get("lifecycle") or {}).get("preStop")
            if pre_stop:
                action = next(iter(pre_stop), "hook")
                messages.append(
                    f"has a lifecycle.preStop {action} hook: it delays SIGTERM, so the drain starts"
                    " late and eats into the grace period; Sluice needs none"
                )
            messages += readiness_findings(container, port)
            findings += [Finding(file, obj, label, m) for m in messages]
    for label, container in others:
        findings += [Finding(file, obj, label, m) for m in drain_wait_findings(container, admin_ports)]
    return findings, count


def drain_wait_findings(container: dict[str, Any], admin_ports: list[int | None]) -> list[str]:
    """A sidecar's app that waits for Sluice's drain in its preStop hook (httpGet /drain/wait) must ask
    a Sluice container of the same pod, on its admin port."""
    http = ((container.get("lifecycle") or {}).get("preStop") or {}).get("httpGet")
    if not http or not str(http.get("path", "")).split("?", 1)[0] == DRAIN_WAIT_PATH:
        return []
    if not admin_ports:
        return [f"preStop httpGet {DRAIN_WAIT_PATH} but no Sluice container in the pod answers it"]
    if http.get("host"):
        return []  # another host: not this pod's Sluice, nothing to compare with
    port = http.get("port")
    if isinstance(port, str) and not port.isdigit():
        # The kubelet looks a named port up among this container's own ports, not the pod's.
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        if port not in named:
            return [f"preStop httpGet {DRAIN_WAIT_PATH} port {port!r} is not a named port of this container"
                    " (the kubelet looks it up here, not in Sluice's container): give the admin port's number"]
        port = named[port]
    known = sorted({p for p in admin_ports if p is not None})
    if known and (port is None or int(port) not in known):
        return [f"preStop httpGet {DRAIN_WAIT_PATH} port is {port}, not Sluice's admin port"
                f" {', '.join(str(p) for p in known)}"]
    return []


def check_compose(file: str, doc: dict[str, Any], checker: Checker) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    count = 0
    base_dir = os.path.dirname(os.path.abspath(file))
    for name, service in (doc.get("services") or {}).items():
        service = service or {}
        entrypoint = service.get("entrypoint")
        command = shlex.split(entrypoint) if isinstance(entrypoint, str) else [str(t) for t in entrypoint or []]
        if not is_sluice(name, str(service.get("image", "")), command):
            continue
        count += 1
        obj = f"service/{name}"
        settings = compose_container(service, base_dir, doc)
        grace_value = service.get("stop_grace_period")
        grace = DEFAULT_COMPOSE_GRACE if grace_value is None else str(grace_value)
        grace_name = "stop_grace_period" + ("" if grace_value is not None else " (default)")
        messages, _ = settings_findings(checker, settings, grace, grace_name)
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


def check_files(files: list[str], binary: str, min_margin: float | None = None) -> tuple[list[Finding], int]:
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
    with tempfile.TemporaryDirectory(prefix="check-drain-budget-") as workdir:
        checker = Checker(binary, workdir, min_margin)
        for file, docs in loaded:
            for doc in docs:
                if "kind" in doc:
                    more, n = check_k8s_doc(file, doc, maps, checker)
                elif "services" in doc:
                    more, n = check_compose(file, doc, checker)
                else:
                    continue
                findings += more
                count += n
    return findings, count


def default_files() -> list[str]:
    files = sorted(glob.glob(os.path.join(ROOT, "docker", "kubernetes", "*.y*ml")))
    compose = os.path.join(ROOT, "docker", "compose.yaml")
    if os.path.exists(compose):
        files.append(compose)
    return [os.path.relpath(f) for f in files]


# ---------------------------------------------------------------------------------------------------
# Self-test: bad manifests must be caught, good ones must pass (against the real binary).
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
{command}
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

_UPSTREAM = "--upstream, http://127.0.0.1:3000"


def _pod(
    *,
    grace: str = "      terminationGracePeriodSeconds: 30",
    name: str = "sluice",
    image: str = "sluice:dev",
    command: str = "",
    args: str = f"[{_UPSTREAM}, --drain-delay, 5s, --drain-timeout, 20s]",
    env: str = "",
    extra: str = "",
    probe: str | None = None,
    volumes: str = "",
) -> str:
    if probe is None:
        probe = _PROBE.format(path="/readyz", port="admin")
    return _POD.format(
        grace=grace, name=name, image=image, command=command, args=args, env=env, extra=extra, probe=probe, volumes=volumes
    )


_CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: demo-config}}
data:
  sluice.yaml: |
{body}
---
"""


def _configmap(body: str) -> str:
    return _CONFIGMAP.format(body="\n".join("    " + line for line in body.strip("\n").split("\n")))


_FLAT_CONFIG = """\
upstream: [http://127.0.0.1:3000]
drain-delay: {delay}
drain-timeout: {timeout}
"""

_MOUNT = """\
          volumeMounts:
            - {name: config, mountPath: /etc/sluice}"""

_VOLUME = """\
      volumes:
        - name: config
          configMap: {name: demo-config}"""

_CONFIG_ARGS = "[--config, /etc/sluice/sluice.yaml]"

_SIDECAR = """\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: demo}}
spec:
  selector: {{matchLabels: {{app: demo}}}}
  template:
    metadata: {{labels: {{app: demo}}}}
    spec:
      containers:
        - name: sluice
          image: sluice:dev
          args: [{upstream}, --admin, 0.0.0.0:9901]
          ports:
            - {{name: admin, containerPort: 9901}}
          readinessProbe:
            httpGet: {{path: /readyz, port: admin}}
        - name: app
          image: registry.example/echo:1
          ports:
            - {{name: web, containerPort: 3000}}
          lifecycle:
            preStop:
              httpGet: {{path: /drain/wait, port: {port}}}
"""


def _sidecar(port: str) -> str:
    return _SIDECAR.format(upstream=_UPSTREAM, port=port)


def _self_test_cases() -> list[tuple[str, str, str, list[str]]]:
    """(description, file name, text, substrings that must each appear in some finding; [] = pass)."""
    compose_ok = """\
services:
  sluice:
    image: sluice:dev
    command: [--upstream, http://app:3000, --drain-delay, 5s, --drain-timeout, 20s]
    stop_grace_period: 30s
"""
    groups = """\
upstreams:
  api: {endpoints: [http://127.0.0.1:3000], health: {path: /healthz}}
  grpc: {endpoints: [h2c://127.0.0.1:50051]}
routes:
  - {host: "*.example.com", upstream: grpc}
  - {path-prefix: /, upstream: %s}
admin: 0.0.0.0:9902
"""
    return [
        ("good manifest passes", "good.yaml", _pod(), []),
        (
            "budget too big for Sluice's own termination-grace (args): Sluice refuses to start",
            "big.yaml",
            _pod(args=f"[{_UPSTREAM}, --drain-delay, 10s, --drain-timeout, 25s, --termination-grace, 30s]"),
            ["drain budget does not fit: drain-delay 10s + drain-timeout 25s + margin 1s = 36s exceeds termination-grace 30s"],
        ),
        (
            "budget that fits Sluice's termination-grace but not the default grace period (--flag=value form)",
            "big-default.yaml",
            _pod(grace="", args=f"[{_UPSTREAM}, --drain-delay=20s, --drain-timeout=20s, --termination-grace=1m]"),
            ["= 41s exceeds terminationGracePeriodSeconds (default) 30s",
             "termination-grace 1m is longer than terminationGracePeriodSeconds (default) 30s"],
        ),
        (
            "pod grace raised but Sluice's termination-grace left at its 30 s default",
            "sluice-grace.yaml",
            _pod(grace="      terminationGracePeriodSeconds: 60",
                 args=f"[{_UPSTREAM}, --drain-delay, 15s, --drain-timeout, 20s]"),
            ["margin 1s = 36s exceeds termination-grace 30s"],
        ),
        (
            "budget exactly equal to the grace period leaves no margin",
            "no-margin.yaml",
            _pod(grace="      terminationGracePeriodSeconds: 25"),
            ["= 26s exceeds terminationGracePeriodSeconds 25s"],
        ),
        (
            "budget too big from the environment (500ms units)",
            "env.yaml",
            _pod(
                args=f"[{_UPSTREAM}]",
                env="          env:\n"
                "            - {name: SLUICE_DRAIN_DELAY, value: 9500ms}\n"
                "            - {name: SLUICE_DRAIN_TIMEOUT, value: '21'}",
            ),
            ["drain-delay 9500ms + drain-timeout 21s + margin 1s = 31500ms exceeds termination-grace 30s"],
        ),
        (
            "budget too big from the mounted ConfigMap",
            "configmap.yaml",
            _configmap(_FLAT_CONFIG.format(delay="15s", timeout="30s"))
            + _pod(args=_CONFIG_ARGS, extra=_MOUNT, volumes=_VOLUME),
            ["drain-delay 15s + drain-timeout 30s + margin 1s = 46s exceeds termination-grace 30s"],
        ),
        (
            "budget that fits, from the mounted ConfigMap",
            "configmap-ok.yaml",
            _configmap(_FLAT_CONFIG.format(delay="5s", timeout="20s"))
            + _pod(args="[--config=/etc/sluice/sluice.yaml]", extra=_MOUNT, volumes=_VOLUME),
            [],
        ),
        (
            "groups and routes in the ConfigMap, admin port from the file",
            "groups-ok.yaml",
            _configmap(groups % "api")
            + _pod(args=_CONFIG_ARGS, extra=_MOUNT, volumes=_VOLUME,
                   probe=_PROBE.format(path="/readyz", port="9902")),
            [],
        ),
        (
            "a route to a group that does not exist, in the ConfigMap",
            "groups-bad.yaml",
            _configmap(groups % "apii") + _pod(args=_CONFIG_ARGS, extra=_MOUNT, volumes=_VOLUME),
            ['routes[1].upstream: "apii" is not a group; groups: api, grpc'],
        ),
        (
            "config file that is not mounted",
            "unmounted.yaml",
            _pod(args=_CONFIG_ARGS),
            ["config file /etc/sluice/sluice.yaml is not mounted from a ConfigMap"],
        ),
        (
            "same setting with different values in args and env",
            "conflict.yaml",
            _pod(env="          env:\n            - {name: SLUICE_DRAIN_DELAY, value: 7s}"),
            ["set twice: drain-delay: --drain-delay 5s overrides SLUICE_DRAIN_DELAY 7s"],
        ),
        (
            "unparseable duration",
            "bad-duration.yaml",
            _pod(args=f"[{_UPSTREAM}, --drain-delay, five]"),
            ['invalid --drain-delay "five": expected a duration'],
        ),
        (
            "Sluice started by a shell: its arguments are the ones after `sluice`",
            "shell.yaml",
            _pod(command="          command: [/bin/sh, -c]",
                 args="['exec /usr/local/bin/sluice --upstream http://127.0.0.1:3000 --drain-delay 1m; echo done']"),
            ["drain-delay 1m + drain-timeout 20s + margin 1s = 1m21s exceeds termination-grace 30s"],
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
        (
            "supervisor mode: what follows -- is the app's command line, never Sluice's flags",
            "supervisor.yaml",
            _pod(args=f"[{_UPSTREAM}, --app-ready-path, /healthz, --app-forward-signals, 'USR1,USR2', --, /app/server,"
                 " --config, /app/app.yaml, --drain-delay, 1m, 'hello from sluice']"),
            [],
        ),
        (
            "supervisor mode from a shell script: the app's flags stay the app's",
            "supervisor-shell.yaml",
            _pod(command="          command: [/bin/sh, -c]",
                 args="['exec sluice --upstream http://127.0.0.1:3000 --app-stop-signal INT --drain-delay 7s"
                      " -- node server.js --drain-delay 1m; echo done']"),
            [],
        ),
        (
            "supervisor mode: an app setting without an app",
            "app-without-app.yaml",
            _pod(args=f"[{_UPSTREAM}, --app-ready-path, /healthz]"),
            ["--app-ready-path is a supervisor-mode setting, but no app is given"],
        ),
        (
            "supervisor mode: an unknown stop signal",
            "app-stop-signal.yaml",
            _pod(args=f"[{_UPSTREAM}, --app-stop-signal, BOGUS, --, /app/server]"),
            ['invalid --app-stop-signal "BOGUS"'],
        ),
        (
            "Sluice found by its command (single container, app image), budget too big",
            "single-container.yaml",
            _pod(name="app", image="registry.example/app:1", command="          command: [/usr/local/bin/sluice]",
                 args=f"[{_UPSTREAM}, --drain-delay, 10s, --drain-timeout, 25s, --, /app/server]"),
            ["drain-delay 10s + drain-timeout 25s + margin 1s = 36s exceeds termination-grace 30s"],
        ),
        (
            "the drain-quiet settings and a drain report",
            "drain-quiet.yaml",
            _pod(args=f"[{_UPSTREAM}, --drain-quiet, 1s, --drain-delay-min, 2s, --drain-report, /tmp/drain.json]"),
            [],
        ),
        ("sidecar app's preStop waits on Sluice's /drain/wait", "drain-wait.yaml", _sidecar("9901"), []),
        (
            "sidecar app's preStop /drain/wait on the app's own port",
            "drain-wait-port.yaml",
            _sidecar("3000"),
            ["app: preStop httpGet /drain/wait port is 3000, not Sluice's admin port 9901"],
        ),
        (
            "sidecar app's preStop /drain/wait on a port named in Sluice's container only",
            "drain-wait-named.yaml",
            _sidecar("admin"),
            ["preStop httpGet /drain/wait port 'admin' is not a named port of this container"],
        ),
        ("compose file with enough grace passes", "compose-ok.yaml", compose_ok, []),
        (
            "compose file in supervisor mode",
            "compose-supervisor.yaml",
            compose_ok.replace("--drain-timeout, 20s]", "--drain-timeout, 20s, --, node, server.js, --drain-delay, 1m]"),
            [],
        ),
        (
            "compose file with Docker's default 10 s stop timeout",
            "compose-default.yaml",
            compose_ok.replace("    stop_grace_period: 30s\n", ""),
            ["service/sluice: container sluice: drain budget does not fit stop_grace_period (default):"
             " drain-delay 5s + drain-timeout 20s + margin 1s = 26s exceeds stop_grace_period (default) 10s"],
        ),
        (
            "compose file stopping Sluice with SIGQUIT",
            "compose-quit.yaml",
            compose_ok + "    stop_signal: SIGQUIT\n",
            ["stop_signal is SIGQUIT"],
        ),
    ]


def self_test(binary: str) -> int:
    passed = failed = 0

    def verdict(ok: bool, what: str, detail: str = "") -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok   {what}")
        else:
            failed += 1
            print(f"FAIL {what}{': ' + detail if detail else ''}")

    with tempfile.TemporaryDirectory() as directory:
        for description, name, text, expected in _self_test_cases():
            path = os.path.join(directory, name)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            try:
                findings, count = check_files([path], binary)
            except BinaryMissing:
                raise
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
        "--sluice-bin",
        default=os.environ.get("SLUICE_BIN") or DEFAULT_BINARY,
        help="the sluice binary that judges the settings (default: $SLUICE_BIN, else .build/debug/sluice)",
    )
    parser.add_argument(
        "--min-margin",
        type=float,
        default=None,
        help="seconds that must be left between the drain budget and the kill, when more than Sluice's own margin",
    )
    parser.add_argument("--self-test", action="store_true", help="check that bad manifests are caught")
    options = parser.parse_args(argv)
    binary = options.sluice_bin
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(
            f"check_drain_budget: no sluice binary at {binary}: build it (swift build --product sluice)"
            " or give --sluice-bin / SLUICE_BIN",
            file=sys.stderr,
        )
        return 2
    try:
        if options.self_test:
            return self_test(binary)
        files = options.files or default_files()
        if not files:
            print("check_drain_budget: no files to check", file=sys.stderr)
            return 2
        try:
            findings, count = check_files(files, binary, options.min_margin)
        except (OSError, yaml.YAMLError) as error:
            print(f"check_drain_budget: {error}", file=sys.stderr)
            return 2
    except BinaryMissing as error:
        print(f"check_drain_budget: cannot run {binary}: {error}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    print(
        f"check_drain_budget: {count} Sluice container(s) in {len(files)} file(s),"
        f" {len(findings)} finding(s) (judged by {os.path.relpath(binary)} check-config)"
    )
    if count == 0:
        print("check_drain_budget: no Sluice container found: nothing was verified", file=sys.stderr)
        return 1
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
