"""Active health checks end to end (pytest): one of three origins is killed under load.

    SLUICE_BIN=.build/debug/sluice python3 -m pytest -q -p no:cacheprovider Tests/e2e/test_health_e2e.py

Three origin.py processes behind one sluice group with `health: {path: /, interval: 200ms, ...}`.
A bounded load (a few client threads, keep-alive GETs) runs while one origin is SIGKILLed. The
health checks must mark it unhealthy in /status within a few seconds, after which every request is
served by the two others. Requests that failed around the kill are counted and reported; GETs are
idempotent and retried on another endpoint, so none may fail with a 5xx.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rolling_update as ru  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_origin(name: str, log: Path) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, str(HERE / "origin.py"), "--port", "0", "--name", name],
                         stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    line = p.stdout.readline()
    m = re.match(r"^listening (\d+)", line)
    assert m, f"origin {name} did not start: {line!r}"
    return p, int(m.group(1))


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _status(admin: int) -> dict:
    return json.loads(_get(f"http://127.0.0.1:{admin}/status")[1])


def _endpoint_health(admin: int) -> dict[str, str]:
    groups = _status(admin).get("groups", [])
    return {e["url"]: e["health"] for g in groups for e in g["endpoints"]}


class Load:
    """A few threads sending keep-alive GETs until stopped; counts results by time and origin."""

    def __init__(self, port: int, threads: int = 4):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[float, int | str, str]] = []  # (time, status or error, origin)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def _run(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                result = (time.monotonic(), r.status, r.getheader("X-Origin") or "")
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is counted, by kind
                result = (time.monotonic(), type(e).__name__, "")
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.results.append(result)
            time.sleep(0.002)  # bounded: at most ~500 req/s per thread

    def since(self, t: float) -> list[tuple[float, int | str, str]]:
        with self.lock:
            return [r for r in self.results if r[0] >= t]


def test_killed_origin_is_taken_out_by_health_checks(tmp_path):
    binary = ru.default_sluice_bin()
    if not binary.exists():
        pytest.skip(f"sluice binary not found at {binary}: build it (`swift build`) or set SLUICE_BIN")
    origins = [_start_origin(n, tmp_path / f"origin-{n}.log") for n in ("A", "B", "C")]
    port, admin = _free_port(), _free_port()
    config = tmp_path / "sluice.yaml"
    config.write_text(
        f"listen: [127.0.0.1:{port}]\n"
        f"admin: 127.0.0.1:{admin}\n"
        "drain-delay: 0s\n"
        "drain-timeout: 5s\n"
        "upstreams:\n"
        "  api:\n"
        f"    endpoints: [{', '.join(f'http://127.0.0.1:{p}' for _, p in origins)}]\n"
        "    balance: round-robin\n"
        "    retries: 1\n"
        "    health: {path: /, interval: 200ms, timeout: 200ms, healthy-after: 1, unhealthy-after: 2}\n"
        "routes:\n"
        "  - path-prefix: /\n"
        "    upstream: api\n"
        "ready-requires: [api]\n"
    )
    log = open(tmp_path / "sluice.log", "wb")
    sluice = subprocess.Popen([str(binary), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert sluice.poll() is None, f"sluice exited with {sluice.returncode}: {(tmp_path / 'sluice.log').read_text()}"
            try:
                if _get(f"http://127.0.0.1:{admin}/readyz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "sluice never became ready (ready-requires: [api])"
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while set(_endpoint_health(admin).values()) != {"healthy"}:
            assert time.monotonic() < deadline, f"not all healthy: {_endpoint_health(admin)}"
            time.sleep(0.05)

        victim, victim_port = origins[0]
        victim_url = f"http://127.0.0.1:{victim_port}"
        with Load(port) as load:
            time.sleep(1.0)
            before = load.since(0)
            assert {r[2] for r in before if r[1] == 200} == {"A", "B", "C"}, "all three serve before the kill"
            killed_at = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=5)
            deadline = killed_at + 5
            while _endpoint_health(admin).get(victim_url) != "unhealthy":
                assert time.monotonic() < deadline, f"killed origin not unhealthy after 5 s: {_endpoint_health(admin)}"
                time.sleep(0.05)
            out_after = time.monotonic() - killed_at
            settled = time.monotonic()
            time.sleep(1.5)
        around = [r for r in load.since(killed_at) if r[0] < settled]
        after = load.since(settled)
        failed_around = [r for r in around if r[1] != 200]
        by_kind: dict[str, int] = {}
        for r in failed_around:
            by_kind[str(r[1])] = by_kind.get(str(r[1]), 0) + 1
        print(f"\nkilled origin unhealthy after {out_after:.2f}s; around the kill {len(around)} requests, "
              f"{len(failed_around)} failed {by_kind}; after it {len(after)} requests")

        status = _status(admin)
        group = status["groups"][0]
        assert group["name"] == "api" and group["scheme"] == "http" and group["balance"] == "round-robin"
        health = {e["url"]: e["health"] for e in group["endpoints"]}
        assert health[victim_url] == "unhealthy"
        assert [h for u, h in health.items() if u != victim_url] == ["healthy", "healthy"], health
        assert len(after) >= 50, f"too few requests after the endpoint was taken out: {len(after)}"
        assert all(r[1] == 200 for r in after), f"failures after it was taken out: {[r for r in after if r[1] != 200][:5]}"
        assert {r[2] for r in after} == {"B", "C"}, "the two live origins serve, the dead one does not"
        assert not [r for r in failed_around if isinstance(r[1], int) and r[1] >= 500], \
            f"idempotent GETs saw 5xx around the kill: {by_kind}"

        metrics = _get(f"http://127.0.0.1:{admin}/metrics")[1].decode()
        assert f'sluice_upstream_endpoint_healthy{{group="api",endpoint="127.0.0.1:{victim_port}"}} 0' in metrics
        assert re.search(r'sluice_upstream_health_changes_total\{group="api"\} [4-9]', metrics), metrics
    finally:
        if sluice.poll() is None:
            sluice.send_signal(signal.SIGTERM)
            try:
                sluice.wait(timeout=15)
            except subprocess.TimeoutExpired:
                sluice.kill()
        for p, _ in origins:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
        log.close()
    assert sluice.returncode == 0, f"sluice exit code {sluice.returncode}"
