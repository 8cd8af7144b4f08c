"""What the TLS end-to-end tests (test_tls*.py) share: the proxy under test with TLS listeners, an echo
origin that shows the request headers it received, and TLS client helpers.

The proxy is Sluice (SLUICE_BIN, else .build/debug/sluice) from a YAML file, or nginx with
`TLS_PROXY=nginx`: the same listeners, certificates (SNI by `server_name`), `ssl_protocols` and ALPN
(h2 by `http2`), and `X-Forwarded-Proto $scheme`, to check the tests themselves before the binary
exists. Sluice's own behaviour (its error messages, /metrics, reload by watching files) is skipped
there (`sluice_only`); nginx reloads certificates only on SIGHUP, so the reload driver sends one
after each swap when the proxy is nginx.

Sluice's side of the interface assumed here (issue 12, /tmp/tls/common.md): YAML `listen` entries
`{address, tls: {certificates: [{cert, key}], min-version, alpn}}`; ports are chosen free by the
harness (bind port 0, close, reuse); readiness is `/readyz` on the admin port and a completed TLS
handshake on every TLS port.

Loopback only; every wait is bounded; processes are stopped by the PID this module started.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rolling_update as ru  # noqa: E402
import tls_certs  # noqa: E402

PROXY = os.environ.get("TLS_PROXY", "sluice")
if PROXY not in ("sluice", "nginx"):
    raise RuntimeError(f"TLS_PROXY must be sluice or nginx, not {PROXY!r}")

sluice_only = pytest.mark.skipif(PROXY != "sluice", reason=f"Sluice's own behaviour (TLS_PROXY={PROXY})")


def require_proxy() -> None:
    if PROXY == "sluice":
        binary = ru.default_sluice_bin()
        if not binary.exists():
            pytest.skip(f"sluice binary not found at {binary}: build it (`swift build`) or set SLUICE_BIN")
    elif not Path(ru.NGINX).exists():
        pytest.skip(f"{ru.NGINX} not installed")


# --------------------------------------------------------------------------------------------------
# an origin that echoes the request


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo"

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", self.server.name)
        self.end_headers()
        self.wfile.write(body)
        self.server.requests += 1

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


class EchoOrigin:
    """HTTP/1.1 keep-alive origin in a thread of the test process; every answer is a JSON echo
    `{"method", "path", "headers": {lowercase name: value}}`."""

    def __init__(self, name: str = "echo") -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
        self.server.daemon_threads = True
        self.server.name = name
        self.server.requests = 0
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> int:
        return self.server.requests

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_origin_py(work: Path, name: str = "A") -> tuple[ru.Child, int]:
    """origin.py (the drain and reload tests' origin: "hello from NAME") as a child process."""
    child = ru.Child(f"origin-{name}", [ru.PY, str(HERE / "origin.py"), "--port", "0", "--name", name], work)
    m = child.wait_for_line(r"listening (\d+)", timeout=10)
    if not m:
        child.stop()
        raise AssertionError(f"origin {name} did not start:\n{child.tail()}")
    return child, int(m.group(1))


# --------------------------------------------------------------------------------------------------
# the proxy under test


@dataclass
class TLSListener:
    """A TLS listener: certificates (the first is the default), minimum version, ALPN list."""
    certificates: list[tuple[Path, Path]]
    min_version: str = "1.2"
    alpn: list[str] = field(default_factory=lambda: ["h2", "http/1.1"])
    names: list[list[str]] | None = None  # per certificate, its server names (nginx's server_name)
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def sluice_yaml(plain_port: int | None, admin: int, listeners: list[TLSListener], upstream_port: int,
                drain_delay: str = "0s", drain_timeout: str = "5s", threads: int = 2, extra: str = "") -> str:
    lines = ["listen:"]
    if plain_port is not None:
        lines.append(f"  - 127.0.0.1:{plain_port}")
    for lst in listeners:
        lines += [f"  - address: {lst.address}", "    tls:", "      certificates:"]
        lines += [f"        - {{cert: {json.dumps(str(c))}, key: {json.dumps(str(k))}}}" for c, k in lst.certificates]
        lines += [f'      min-version: "{lst.min_version}"', f"      alpn: [{', '.join(lst.alpn)}]"]
    lines += [f"admin: 127.0.0.1:{admin}", f"threads: {threads}", f"drain-delay: {drain_delay}",
              f"drain-timeout: {drain_timeout}", "log-format: json", "upstreams:", "  app:",
              f"    endpoints: [http://127.0.0.1:{upstream_port}]", "routes:", "  - path-prefix: /",
              "    upstream: app"]
    return "\n".join(lines) + "\n" + extra


_NGINX = """{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log stderr notice;
worker_shutdown_timeout {drain_timeout_s}s;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 16m;
    upstream app {{ server 127.0.0.1:{upstream_port}; keepalive 32; }}
{servers}
    server {{
        listen 127.0.0.1:{admin};
        location = /readyz {{ return 200 "ready"; }}
        location = /livez {{ return 200 "ok"; }}
    }}
}}
"""

_NGINX_LOCATION = """        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
        }}"""


def _cert_names(cert: Path) -> list[str]:
    """The SAN DNS names of a certificate file (for nginx's server_name)."""
    decoded = ssl._ssl._test_decode_cert(str(cert))  # stdlib's PEM decoder (no extra dependency)
    return [v for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]


def nginx_conf(prefix: Path, plain_port: int | None, admin: int, listeners: list[TLSListener], upstream_port: int,
               drain_timeout_s: int = 5) -> str:
    servers = []
    if plain_port is not None:
        servers.append(f"    server {{\n        listen 127.0.0.1:{plain_port} backlog=4096;\n{_NGINX_LOCATION.format()}\n    }}")
    for lst in listeners:
        protocols = "TLSv1.3" if lst.min_version == "1.3" else "TLSv1.2 TLSv1.3"
        http2 = " http2" if "h2" in lst.alpn else ""
        for i, (cert, key) in enumerate(lst.certificates):
            names = (lst.names[i] if lst.names else _cert_names(cert)) or ["_"]
            # A certificate's "*.w.test" covers one label (RFC 6125); nginx's "*.w.test" any number.
            names = ["~^[^.]+" + re.escape(n[1:]) + "$" if n.startswith("*.") else n for n in names]
            default = " default_server backlog=4096" if i == 0 else ""  # listen options: once per address
            servers.append(
                f"    server {{\n        listen {lst.address} ssl{http2}{default};\n"
                f"        server_name {' '.join(names)};\n"
                f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
                f"        ssl_protocols {protocols};\n        ssl_session_cache off;\n        ssl_session_tickets off;\n"
                f"{_NGINX_LOCATION.format()}\n    }}")
    return _NGINX.format(user="user root root;\n" if os.geteuid() == 0 else "", prefix=prefix,
                         upstream_port=upstream_port, admin=admin, servers="\n".join(servers),
                         drain_timeout_s=drain_timeout_s)


class TLSProxy:
    """Sluice or nginx (by TLS_PROXY) with a plaintext listener (unless `plain=False`) and the given TLS
    listeners (their ports are chosen here), in front of the origin on `upstream_port`."""

    def __init__(self, work: Path, listeners: list[TLSListener], upstream_port: int, ca: Path, plain: bool = True,
                 drain_delay: str = "0s", drain_timeout: str = "5s", threads: int = 2, name: str = "proxy",
                 extra_yaml: str = "", extra_args: tuple[str, ...] = (), ready_timeout: float = 30.0) -> None:
        require_proxy()
        self.kind = PROXY
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.listeners = listeners
        for lst in listeners:
            if not lst.port:
                lst.port = ru.free_port()
        self.plain_port = ru.free_port() if plain else None
        self.admin = ru.free_port()
        self.ca = ca
        self.upstream_port = upstream_port
        self.drain_timeout = drain_timeout
        if self.kind == "sluice":
            self.config_path = work / f"{name}.yaml"
            self.config_path.write_text(sluice_yaml(self.plain_port, self.admin, listeners, upstream_port, drain_delay,
                                                    drain_timeout, threads, extra_yaml))
            argv = [str(ru.default_sluice_bin()), "--config", str(self.config_path), *extra_args]
        else:
            prefix = work / f"{name}-nginx"
            for d in ("conf", "logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
                (prefix / d).mkdir(parents=True, exist_ok=True)
            self.config_path = prefix / "conf" / "nginx.conf"
            self.config_path.write_text(nginx_conf(prefix, self.plain_port, self.admin, listeners, upstream_port,
                                                   max(1, round(ru.parse_duration(drain_timeout)))))
            argv = [ru.NGINX, "-p", f"{prefix}/", "-c", str(self.config_path), "-e", "stderr"]
        self.argv = argv
        self.child = ru.Child(name, argv, work)
        self.pid = self.child.pid
        self.wait_ready(ready_timeout)

    @property
    def port(self) -> int:
        """The first TLS listener's port."""
        return self.listeners[0].port

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.child.poll()
            if rc is not None:
                raise AssertionError(f"{self.kind} exited with {rc} during start-up:\n{self.child.tail(40)}")
            ready = ru.http_get(self.admin, "/readyz", timeout=0.5)[0] == 200
            if ready and self.plain_port is not None:
                ready = ru.http_get(self.plain_port, "/", timeout=1.0)[0] == 200
            if ready:
                try:
                    for lst in self.listeners:
                        tls_certs.handshake(lst.port, None, self.ca, timeout=1.0,
                                            minimum=ssl.TLSVersion.TLSv1_3 if lst.min_version == "1.3" else None)
                    return
                except (OSError, ssl.SSLError):
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{self.kind} not ready after {timeout}s:\n{self.child.tail(40)}")
            time.sleep(0.05)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            return r.read().decode()

    def reload(self) -> None:
        """SIGHUP (both Sluice and nginx reload their configuration and certificates on it)."""
        os.kill(self.pid, signal.SIGHUP)

    def lines(self) -> list[str]:
        return [line for _, line in sorted(self.child.stdout_lines + self.child.stderr_lines)]

    def stop(self) -> int | None:
        self.child.stop(signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM, timeout=20.0)
        return self.child.proc.returncode


# --------------------------------------------------------------------------------------------------
# clients


def run(argv: list[str], timeout: float = 30.0) -> "subprocess.CompletedProcess":
    import subprocess
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def curl(port: int, host: str, ca: Path, *extra: str, path: str = "/") -> tuple[int, str, str, str]:
    """One request with curl to https://HOST:PORT (resolved to 127.0.0.1): (status, HTTP version, body,
    stderr). curl verifies the certificate against the CA and the name."""
    r = run(["curl", "-sS", "--max-time", "10", "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", str(ca),
             "-o", "-", "-w", "\n%{http_code} %{http_version}", *extra, f"https://{host}:{port}{path}"])
    assert r.returncode == 0, f"curl failed ({r.returncode}): {r.stderr}"
    body, _, tail = r.stdout.rpartition("\n")
    status, version = tail.split()
    return int(status), version, body, r.stderr


def s_client(port: int, *args: str, servername: str | None = None, timeout: float = 10.0) -> "subprocess.CompletedProcess":
    """`openssl s_client` to 127.0.0.1:port (stdin closed at once, so it ends after the handshake)."""
    import subprocess
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    if servername:
        argv += ["-servername", servername]
    else:
        argv += ["-noservername"]
    return subprocess.run(argv, input="", capture_output=True, text=True, timeout=timeout)


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
