"""gRPC through sluice to an h2c upstream (`--upstream h2c://...`), with real grpcio clients and server.

Unary, server-streaming, client-streaming and bidirectional calls must pass end to end with their
messages, status codes, status messages and trailing metadata (HTTP/2 trailers) intact; many concurrent
calls must share a few multiplexed upstream connections; a streaming call in flight at SIGTERM must
finish whole while sluice drains, and sluice must then exit 0; an upstream that is down must show as
UNAVAILABLE (HTTP 502), not as a hang.
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc", reason="needs grpcio (scripts/install-deps.sh installs it)")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rolling_update as ru  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sluice:
    """The real binary in front of one upstream URL; stopped with SIGTERM, its exit status kept."""

    def __init__(self, upstream: str, log_path: Path, *extra: str):
        binary = ru.default_sluice_bin()
        if not binary.exists():
            pytest.skip(f"sluice binary not found at {binary}: build it (`swift build`) or set SLUICE_BIN")
        self.port, self.admin = _free_port(), _free_port()
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [str(binary), "--listen", f"127.0.0.1:{self.port}", "--admin", f"127.0.0.1:{self.admin}",
             "--upstream", upstream, "--threads", "1", "--log-level", "info", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert self.process.poll() is None, f"sluice exited with {self.process.returncode}"
            assert time.monotonic() < deadline, "sluice never became ready"
            time.sleep(0.05)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/status", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.log.close()


@pytest.fixture
def origin():
    process = subprocess.Popen([sys.executable, str(HERE / "grpc_origin.py"), "--seconds", "120"],
                               stdout=subprocess.PIPE, text=True)
    try:
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def proxied(origin, tmp_path):
    sluice = Sluice(f"h2c://127.0.0.1:{origin}", tmp_path / "sluice.log", "--drain-delay", "0s", "--drain-timeout", "5s")
    channel = grpc.insecure_channel(f"127.0.0.1:{sluice.port}")
    try:
        yield sluice, channel
    finally:
        channel.close()
        assert sluice.stop() == 0


def test_unary_call_passes_message_status_and_trailers(proxied):
    _, channel = proxied
    response, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hello", timeout=10)
    assert response == b"echo:hello"
    assert call.code() == grpc.StatusCode.OK
    assert ("x-origin", "grpc") in [(m.key, m.value) for m in call.trailing_metadata()]


def test_unary_error_status_message_and_trailers_pass(proxied):
    _, channel = proxied
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/test.Echo/Unary")(b"fail", timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "no such thing"
    assert ("x-detail", "nope") in [(m.key, m.value) for m in error.trailing_metadata()]


def test_server_streaming_call_delivers_every_message_in_order(proxied):
    _, channel = proxied
    call = channel.unary_stream("/test.Echo/Stream")(b"200", timeout=10)
    assert list(call) == [f"msg {i}".encode() for i in range(200)]
    assert call.code() == grpc.StatusCode.OK


def test_client_streaming_and_bidirectional_calls(proxied):
    _, channel = proxied
    messages = [f"part {i}".encode() * (i + 1) for i in range(50)]
    assert channel.stream_unary("/test.Echo/Collect")(iter(messages), timeout=10) == b"|".join(messages)
    replies = list(channel.stream_stream("/test.Echo/Chat")(iter(messages), timeout=10))
    assert replies == [b"re:" + m for m in messages]


def test_concurrent_calls_share_few_upstream_connections(proxied):
    sluice, channel = proxied
    unary = channel.unary_unary("/test.Echo/Unary")
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda i: unary(f"n{i}".encode(), timeout=20), range(500)))
    assert results == [f"echo:n{i}".encode() for i in range(500)]
    pools = sluice.status()["upstreams"]
    assert len(pools) == 1
    # Multiplexed: at most the pool's 4 connections per upstream, never one per call.
    assert 1 <= pools[0]["idle"] + pools[0]["busy"] <= 4, pools


def test_streaming_call_in_flight_at_sigterm_finishes_and_sluice_exits_0(origin, tmp_path):
    sluice = Sluice(f"h2c://127.0.0.1:{origin}", tmp_path / "sluice.log", "--drain-delay", "500ms", "--drain-timeout", "10s")
    channel = grpc.insecure_channel(f"127.0.0.1:{sluice.port}")
    try:
        call = channel.unary_stream("/test.Echo/Stream")(b"40,50", timeout=20)  # about 2 s of messages
        first = next(call)
        started = time.monotonic()
        sluice.process.send_signal(signal.SIGTERM)
        rest = list(call)
        assert [first, *rest] == [f"msg {i}".encode() for i in range(40)]
        assert call.code() == grpc.StatusCode.OK
        assert sluice.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        channel.close()
        sluice.stop()


def test_upstream_down_is_unavailable_not_a_hang(tmp_path):
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        sluice = Sluice(f"h2c://127.0.0.1:{held.getsockname()[1]}", tmp_path / "sluice.log")
        channel = grpc.insecure_channel(f"127.0.0.1:{sluice.port}")
        try:
            with pytest.raises(grpc.RpcError) as raised:
                channel.unary_unary("/test.Echo/Unary")(b"x", timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "502" in raised.value.details()
        finally:
            channel.close()
            assert sluice.stop() == 0


def test_upstream_dying_mid_stream_fails_the_call_promptly(tmp_path):
    process = subprocess.Popen([sys.executable, str(HERE / "grpc_origin.py"), "--seconds", "60"],
                               stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        sluice = Sluice(f"h2c://127.0.0.1:{port}", tmp_path / "sluice.log", "--drain-delay", "0s")
        channel = grpc.insecure_channel(f"127.0.0.1:{sluice.port}")
        try:
            call = channel.unary_stream("/test.Echo/Stream")(b"100,50", timeout=30)  # about 5 s of messages
            assert next(call) == b"msg 0"
            started = time.monotonic()
            process.kill()
            with pytest.raises(grpc.RpcError) as raised:
                list(call)
            # The response had begun: the stream is reset (never a clean end that looks complete).
            assert raised.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
            assert time.monotonic() - started < 5
        finally:
            channel.close()
            assert sluice.stop() == 0
    finally:
        process.kill()
        process.wait()
