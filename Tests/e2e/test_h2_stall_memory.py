"""Issue 14 item 5: HTTP/2 streams stalled on flow control do not amplify memory.

10 connections x 100 streams fetch 64 KiB bodies with SETTINGS_INITIAL_WINDOW_SIZE 0 and never open the
window. Sluice must hold only what one upstream read brought per stream (its upstream reads stop while
a stream's window is closed), reset every stalled stream with RST_STREAM after --stream-stall-timeout,
close the upstream connections behind them, and give the memory back once the clients are gone.
Before the fix RSS rose from 21 to 93 MB (about 72 KB per stalled stream) and stayed there.
"""
from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import h2conformance as h2
from h2conformance import E, T

CONNECTIONS = 10
STREAMS = 100
BODY = 64 * 1024
STALL_TIMEOUT_S = 3
# Per stalled stream: its upstream connection (socket, pipeline), the nghttp2 stream, the forwarder
# and one upstream read (2 KiB on a fresh connection); 1000 of them. Before the fix: 72 MB.
ALLOWED_PEAK_GROWTH_KIB = 32 * 1024
# Once the clients are gone: what is left is freed heap memory, which Sluice gives back to the
# system within 5 s (MemoryRelease: malloc_trim); measured +1 MB, +7 MB without the trim.
ALLOWED_AFTER_GROWTH_KIB = 4 * 1024


def _rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1))


def _status(sluice) -> dict:
    code, body = h2.ru.http_get(sluice.admin_port, "/status", timeout=5)
    assert code == 200
    return json.loads(body)


def _stalled_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(h2.PREFACE + h2.settings((h2.S.INITIAL_WINDOW_SIZE, 0)))
    s.sendall(b"".join(h2.H2Client.headers_frame(1 + 2 * i, h2.request(path=f"/bytes?n={BODY}"))
                       for i in range(STREAMS)))
    return s


class _Frames:
    """Frame reader for one raw socket: counts HEADERS and RST_STREAM per stream, acks SETTINGS."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.pending = sock, b""
        self.heads: set[int] = set()
        self.resets: dict[int, int] = {}
        self.data_bytes = 0
        self.closed = False

    def pump(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self.pending += chunk
        while len(self.pending) >= 9:
            length = int.from_bytes(self.pending[:3], "big")
            if len(self.pending) < 9 + length:
                break
            ftype, flags = self.pending[3], self.pending[4]
            stream_id = int.from_bytes(self.pending[5:9], "big") & 0x7FFF_FFFF
            payload = self.pending[9:9 + length]
            self.pending = self.pending[9 + length:]
            if ftype == T.SETTINGS and not flags & 0x1:
                self.sock.sendall(h2.settings(flags=0x1))
            elif ftype == T.HEADERS:
                self.heads.add(stream_id)
            elif ftype == T.RST_STREAM:
                self.resets[stream_id] = int.from_bytes(payload[:4], "big")
            elif ftype == T.DATA:
                self.data_bytes += length


def _pump_until(readers: list[_Frames], done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        for r in readers:
            if not r.closed:
                r.pump(deadline)
    return done()


def test_stalled_streams_hold_bounded_memory_are_reset_and_give_it_back(tmp_path):
    with h2.running_sluice(tmp_path, h2.sluice_bin(),
                           ("--stream-stall-timeout", f"{STALL_TIMEOUT_S}s", "--upstream-idle-timeout", "1s")) as sluice:
        pid = sluice.child.pid
        # Warm up: the code paths a stalled stream takes, so the baseline includes them.
        with sluice.client() as warm:
            warm.headers(1, h2.request(path=f"/bytes?n={BODY}"))
            assert warm.expect_response(1).status == 200
        # The upstream idle timeout (1 s) retires the warm-up's upstream connection.
        deadline = time.monotonic() + 10
        while _status(sluice)["upstreams"][0]["idle"] != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        baseline = _rss_kib(pid)

        socks = [_stalled_client(sluice.port) for _ in range(CONNECTIONS)]
        readers = [_Frames(s) for s in socks]
        try:
            # Every stream's response has begun (its HEADERS arrived): its first upstream read is in.
            assert _pump_until(readers, lambda: all(len(r.heads) == STREAMS for r in readers), 30), \
                [len(r.heads) for r in readers]
            status = _status(sluice)
            assert status["requests_in_flight"] == CONNECTIONS * STREAMS
            # Give any read that was not held back time to land before measuring (bounded).
            _pump_until(readers, lambda: False, 0.5)
            peak = _rss_kib(pid)
            # Then the stall timeout resets every stream with CANCEL; no DATA ever went out.
            assert _pump_until(readers, lambda: all(len(r.resets) == STREAMS for r in readers), STALL_TIMEOUT_S + 20), \
                [len(r.resets) for r in readers]
            assert all(code == E.CANCEL for r in readers for code in r.resets.values())
            assert sum(r.data_bytes for r in readers) == 0
        finally:
            for s in socks:
                s.close()

        # The clients are gone: nothing in flight, no upstream connection left (the stalled ones were
        # closed, not pooled with half-read responses), and the memory is given back.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = _status(sluice)
            pools = status["upstreams"][0]
            if status["connections"]["total"] == 0 and pools["idle"] == 0 and pools["busy"] == 0:
                break
            time.sleep(0.1)
        assert status["connections"]["total"] == 0 and status["requests_in_flight"] == 0, status
        assert pools == {**pools, "idle": 0, "busy": 0}, status
        assert status["http2_stream_stall_resets"] == CONNECTIONS * STREAMS, status
        metrics = h2.ru.http_get(sluice.admin_port, "/metrics", timeout=5)[1].decode()
        assert f"sluice_http2_stream_stall_resets_total {CONNECTIONS * STREAMS}\n" in metrics, metrics[-800:]
        deadline = time.monotonic() + 15
        after = _rss_kib(pid)
        while after - baseline > ALLOWED_AFTER_GROWTH_KIB and time.monotonic() < deadline:
            time.sleep(0.25)
            after = _rss_kib(pid)
        print(f"\nRSS: baseline {baseline} KiB, {CONNECTIONS * STREAMS} stalled streams {peak} KiB "
              f"(+{peak - baseline}), after {after} KiB (+{after - baseline})")
        assert peak - baseline <= ALLOWED_PEAK_GROWTH_KIB, (baseline, peak)
        assert after - baseline <= ALLOWED_AFTER_GROWTH_KIB, (baseline, peak, after)
