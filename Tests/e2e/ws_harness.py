"""What the WebSocket e2e tests share: the proxy under test in front of the apps of ws_origin.py, and a
raw HTTP/1.1 client.

The proxy under test is Sluice (SLUICE_BIN, else .build/debug/sluice), or nginx with `WS_PROXY=nginx`:
the same tests through nginx's WebSocket proxying (`proxy_http_version 1.1` and the Upgrade/Connection
pair), to check the tests themselves; or `WS_PROXY=reference` (ws_reference_proxy.py, a Python model of
the drain contract: the drain test only) to check that the drain test passes a proxy that keeps it. Both proxies route `/raw/` to the raw app and everything else to
the WebSocket app. Drain: Sluice gets SIGTERM; nginx gets SIGQUIT (graceful quit) after a preStop-like
sleep of the drain delay and cuts what is left at `worker_shutdown_timeout` = the drain timeout.

Loopback only; every wait is bounded; processes are stopped by the PID this module started.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rolling_update as ru  # noqa: E402

PROXY = os.environ.get("WS_PROXY", "sluice")
if PROXY not in ("sluice", "nginx", "reference"):
    raise RuntimeError(f"WS_PROXY must be sluice, nginx or reference, not {PROXY!r}")

# Cases of Sluice's own behaviour are skipped for nginx, unless WS_RUN_ALL=1 (to see them fail there).
sluice_only = pytest.mark.skipif(PROXY != "sluice" and os.environ.get("WS_RUN_ALL") != "1",
                                 reason="Sluice's own behaviour (WS_PROXY=%s)" % PROXY)


def require_proxy() -> None:
    if PROXY == "reference":
        return
    if PROXY == "sluice":
        binary = ru.default_sluice_bin()
        if not binary.exists():
            pytest.skip(f"sluice binary not found at {binary}: build it (`swift build --product sluice`) "
                        "or set SLUICE_BIN")
    elif not Path(ru.NGINX).exists():
        pytest.skip(f"{ru.NGINX} not installed")


SLUICE_CONFIG = """\
listen: [127.0.0.1:{port}]
admin: 127.0.0.1:{admin}
threads: {threads}
drain-delay: {drain_delay}
drain-timeout: {drain_timeout}
log-format: json
upstreams:
  ws:
    endpoints: [http://127.0.0.1:{ws_port}]
  raw:
    endpoints: [http://127.0.0.1:{raw_port}]
routes:
  - path-prefix: /raw/
    upstream: raw
  - path-prefix: /
    upstream: ws
"""

NGINX_CONFIG = """{user}daemon off;
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
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream ws {{ server 127.0.0.1:{ws_port}; keepalive 16; }}
    upstream raw {{ server 127.0.0.1:{raw_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location /raw/ {{
            proxy_pass http://raw;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
        location / {{
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


class ProxyUnderTest:
    """Sluice or nginx (by `WS_PROXY`) on a free port in front of the apps."""

    def __init__(self, work: Path, ws_port: int, raw_port: int, drain_delay: float = 0.0,
                 drain_timeout: float = 5.0, threads: int = 1, name: str = "proxy") -> None:
        require_proxy()
        self.kind = PROXY
        self.work = work
        self.name = name
        work.mkdir(parents=True, exist_ok=True)
        self.port = ru.free_port()
        self.admin = ru.free_port()
        self.drain_delay = drain_delay
        self.drain_timeout = drain_timeout
        self.signalled_at: float | None = None
        self._quit_timer: threading.Timer | None = None
        if self.kind == "sluice":
            config = work / f"{name}.yaml"
            config.write_text(SLUICE_CONFIG.format(port=self.port, admin=self.admin, threads=threads,
                                                   drain_delay=f"{int(drain_delay * 1000)}ms",
                                                   drain_timeout=f"{int(drain_timeout * 1000)}ms",
                                                   ws_port=ws_port, raw_port=raw_port))
            argv = [str(ru.default_sluice_bin()), "--config", str(config)]
        elif self.kind == "reference":
            argv = [sys.executable, str(HERE / "ws_reference_proxy.py"), "--listen", str(self.port),
                    "--admin", str(self.admin), "--ws-upstream", str(ws_port), "--raw-upstream", str(raw_port),
                    "--drain-delay", str(drain_delay), "--drain-timeout", str(drain_timeout)]
        else:
            prefix = work / f"{name}-nginx"
            for d in ("conf", "logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
                (prefix / d).mkdir(parents=True, exist_ok=True)
            (prefix / "conf" / "nginx.conf").write_text(NGINX_CONFIG.format(
                user="user root root;\n" if os.geteuid() == 0 else "", prefix=prefix, port=self.port,
                drain_timeout_s=max(1, round(drain_timeout)), ws_port=ws_port, raw_port=raw_port))
            argv = [ru.NGINX, "-p", f"{prefix}/", "-c", str(prefix / "conf" / "nginx.conf"), "-e", "stderr"]
        self.child = ru.Child(name, argv, work)
        self.pid = self.child.pid
        self._wait_ready(20.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.child.poll() is not None:
                raise AssertionError(f"{self.kind} exited with {self.child.proc.returncode}:\n{self.child.tail(30)}")
            if self.kind in ("sluice", "reference"):
                ready = ru.http_get(self.admin, "/readyz", timeout=0.5)[0] == 200
            else:
                ready = True
            if ready and ru.http_get(self.port, "/raw/ready", timeout=0.5)[0] == 200:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{self.kind} not ready after {timeout}s:\n{self.child.tail(30)}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return [self.pid] + ru._proc_children(self.pid)

    def rss_kib(self) -> int:
        """VmRSS of the proxy's processes (nginx: master and worker), KiB."""
        total = 0
        for pid in self.pids():
            v = ru._vm(pid)
            if v:
                total += v[0]
        return total

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            return r.read().decode()

    def begin_drain(self) -> float:
        """Signals the drain (the moment is returned, monotonic). nginx: SIGQUIT after the drain delay,
        as a preStop sleep would do."""
        self.signalled_at = time.monotonic()
        if self.kind in ("sluice", "reference"):
            self.child.proc.send_signal(signal.SIGTERM)
        else:
            self._quit_timer = threading.Timer(self.drain_delay, self._quit)
            self._quit_timer.start()
        return self.signalled_at

    def _quit(self) -> None:
        if self.child.proc.poll() is None:
            self.child.proc.send_signal(signal.SIGQUIT)

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.child.proc.wait(timeout)
        except Exception:
            return None

    def stop(self) -> int | None:
        """Ends the proxy if it still runs (SIGTERM, or SIGQUIT for nginx; SIGKILL after 20 s); its exit code."""
        if self._quit_timer is not None:
            self._quit_timer.cancel()
        self.child.stop(signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM, timeout=20.0)
        return self.child.proc.returncode

    def log_tail(self, n: int = 30) -> str:
        return self.child.tail(n)


# --------------------------------------------------------------------------------------------------
# raw HTTP/1.1 over a socket

class RawConn:
    """One client TCP connection; reads HTTP/1.1 responses (Content-Length bodies) exactly."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_until_eof(self, limit: int = 1 << 24) -> bytes:
        while len(self.buf) < limit and self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """(status, headers lower-cased, body) of one response with a Content-Length (or none, for 1xx
        and 204/304)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"EOF before a complete response head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3})", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 200 or status in (204, 304):
            return status, headers, b""
        assert "content-length" in headers, f"response without Content-Length: {headers}"
        return status, headers, self.read_exactly(int(headers["content-length"]))

    def close(self) -> None:
        self.sock.close()


def request_bytes(method: str, target: str, port: int, headers: dict[str, str] | None = None,
                  body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


WS_UPGRADE_HEADERS = {"Connection": "Upgrade", "Upgrade": "websocket",
                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


class RssSampler(threading.Thread):
    """VmRSS of the proxy every `interval` seconds until stopped; `peak_kib`."""

    def __init__(self, proxy: ProxyUnderTest, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.proxy = proxy
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop_ev = threading.Event()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            self.peak_kib = max(self.peak_kib, self.proxy.rss_kib())
            self.samples += 1
            self._stop_ev.wait(self.interval)

    def stop(self) -> int:
        self._stop_ev.set()
        self.join(5)
        return self.peak_kib
