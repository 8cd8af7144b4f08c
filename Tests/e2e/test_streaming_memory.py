"""A 1 GiB upload and a 1 GiB download stream through the real sluice binary without raising its memory.

Sluice must stream bodies with back-pressure, never buffer them whole: its peak RSS (VmHWM) may grow by
no more than a few MiB while a gigabyte crosses it in each direction.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GIB = 1 << 30
ALLOWED_GROWTH_KIB = 16 * 1024


def _sluice_bin() -> Path:
    p = Path(os.environ.get("SLUICE_BIN", ROOT / ".build/debug/sluice"))
    if not p.is_absolute():
        p = ROOT / p
    if not p.exists():
        pytest.skip(f"sluice binary not found at {p}: build it (`swift build`) or set SLUICE_BIN")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True)
        if r.stdout == "200":
            return
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered 200")


@pytest.fixture
def proxy(tmp_path):
    origin = subprocess.Popen([sys.executable, str(HERE / "origin.py"), "--port", "0", "--name", "A"],
                              stdout=subprocess.PIPE, text=True)
    line = origin.stdout.readline()
    origin_port = int(line.split()[-1])
    port, admin = _free_port(), _free_port()
    log = open(tmp_path / "sluice.log", "w")
    sluice = subprocess.Popen([str(_sluice_bin()), "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                               "--upstream", f"http://127.0.0.1:{origin_port}", "--threads", "1",
                               "--drain-delay", "0s", "--drain-timeout", "5s", "--log-level", "warning"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{admin}/readyz", time.monotonic() + 20)
        yield sluice, port
    finally:
        sluice.send_signal(signal.SIGTERM)
        try:
            sluice.wait(timeout=15)
        finally:
            if sluice.poll() is None:
                sluice.kill()
            origin.kill()
            origin.wait()
            log.close()


def test_one_gib_upload_streams_in_bounded_memory(proxy):
    sluice, port = proxy
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"], check=True, timeout=10)
    before = _status_kib(sluice.pid, "VmRSS")
    expected = hashlib.sha256()
    zero_block = b"\0" * (1 << 20)
    for _ in range(GIB >> 20):
        expected.update(zero_block)
    # curl -T - streams stdin with chunked encoding; nothing here holds the gigabyte either.
    feeder = subprocess.Popen(["head", "-c", str(GIB), "/dev/zero"], stdout=subprocess.PIPE)
    result = subprocess.run(["curl", "-sS", "-X", "POST", "-T", "-", f"http://127.0.0.1:{port}/upload"],
                            stdin=feeder.stdout, capture_output=True, text=True, timeout=300)
    feeder.wait()
    peak = _status_kib(sluice.pid, "VmHWM")
    assert result.returncode == 0, result.stderr
    assert f"len={GIB}" in result.stdout and f"sha256={expected.hexdigest()}" in result.stdout, result.stdout
    growth = peak - before
    print(f"\nupload 1 GiB: RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB")
    assert growth < ALLOWED_GROWTH_KIB, f"sluice's peak RSS grew by {growth} KiB during a 1 GiB upload"


def test_one_gib_download_streams_in_bounded_memory(proxy):
    sluice, port = proxy
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/"], check=True, timeout=10)
    before = _status_kib(sluice.pid, "VmRSS")
    result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                             f"http://127.0.0.1:{port}/bytes?n={GIB}"],
                            capture_output=True, text=True, timeout=300)
    peak = _status_kib(sluice.pid, "VmHWM")
    assert result.returncode == 0, result.stderr
    status, size = result.stdout.split()
    assert status == "200"
    growth = peak - before
    print(f"\ndownload {int(size) >> 20} MiB: RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB")
    assert int(size) == GIB
    assert growth < ALLOWED_GROWTH_KIB, f"sluice's peak RSS grew by {growth} KiB during a 1 GiB download"
