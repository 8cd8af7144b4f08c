"""What the edge-proxy tests share: echo origins (edge_origin.py) that can be killed and brought back
on the same port, the real sluice binary started on a YAML config, and small clients (HTTP/1.1 with
http.client, h2c prior knowledge with curl).

Loopback only; every wait is bounded; processes are stopped by the PID this module started.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rolling_update as ru  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sluice_binary() -> Path:
    binary = ru.default_sluice_bin()
    if not binary.exists():
        pytest.skip(f"sluice binary not found at {binary}: build it (`swift build --product sluice`) or set SLUICE_BIN")
    return binary


class Origin:
    """One edge_origin.py process. `kill()` is SIGKILL by PID (no goodbye: its connections are reset
    or closed by the kernel); `start()` again brings it back on the same port."""

    def __init__(self, name: str, log_dir: Path, h2c: bool = False, port: int = 0) -> None:
        self.name = name
        self.h2c = h2c
        self.port = port
        self.log_path = log_dir / f"origin-{name}.log"
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"{'h2c' if self.h2c else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        cmd = [sys.executable, str(HERE / "edge_origin.py"), "--name", self.name, "--port", str(self.port)]
        if self.h2c:
            cmd.append("--h2c")
        deadline = time.monotonic() + timeout
        for _ in range(100):
            log = open(self.log_path, "a")
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
            log.close()
            line = self.process.stdout.readline()  # "listening PORT", or "" if it died (port still held)
            if line.startswith("listening "):
                self.port = int(line.split()[1])
                return
            self.process.wait(timeout=5)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise RuntimeError(f"origin {self.name} did not start on port {self.port}; see {self.log_path}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.alive():
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def check_config(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(sluice_binary()), "check-config", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=30)


class Sluice:
    """The real binary on a YAML config file (which names its own listen and admin addresses)."""

    def __init__(self, config: Path, port: int, admin: int, log_path: Path, *extra: str,
                 ready_timeout: float = 20.0) -> None:
        self.port, self.admin = port, admin
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([str(sluice_binary()), "--config", str(config), *extra],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.process.poll() is not None:
                self.log.close()
                raise AssertionError(f"sluice exited with {self.process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"sluice never became ready: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if not self.log.closed:
                self.log.close()


class Client:
    """One HTTP/1.1 keep-alive connection to sluice (reopened when the server closed it)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, host: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        hdrs = dict(headers or {})
        if host is not None:
            hdrs["Host"] = host
        try:
            self.conn.request(method, path, body=body, headers=hdrs)
            response = self.conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        result = (response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        if response.will_close:
            self.close()
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def echo(body: bytes) -> dict:
    """The JSON an edge_origin.py answers with."""
    return json.loads(body)


def curl_h2c(port: int, path: str, host: str, *extra: str) -> tuple[int, bytes]:
    """One request with HTTP/2 prior knowledge (curl turns `Host:` into `:authority`): (status, body)."""
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "--max-time", "10", "-H", f"Host: {host}",
                        "-o", "-", "-w", "\n%{http_code} %{http_version}", *extra,
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    body, _, tail = r.stdout.rpartition(b"\n")
    status, version = tail.decode().split()
    assert version == "2", f"curl spoke HTTP/{version}, not h2c"
    return int(status), body
