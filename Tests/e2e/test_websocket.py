"""WebSocket and other HTTP/1.1 Upgrade tunnels through the real binary (issue 11).

The `websockets` library is both the client and the app (ws_origin.py); a raw-socket app takes the
upgrades that are not WebSocket and the upgrade requests it answers without 101. Every case asserts
exact codes, messages and bytes, and what the app on the other side saw.

    python3 -m pytest -q -p no:cacheprovider Tests/e2e/test_websocket.py                 # Sluice
    WS_PROXY=nginx python3 -m pytest -q -p no:cacheprovider Tests/e2e/test_websocket.py  # the tests' check

With WS_PROXY=nginx the generic cases run through nginx's WebSocket proxying; the cases that test
Sluice's own behaviour (its 400 for an upgrade request with a body, RFC 8441 over h2c, /status and
/metrics) are skipped there.
"""
from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time

import pytest

websockets = pytest.importorskip("websockets", minversion="13.0",
                                 reason="needs the websockets library >= 13 (scripts/install-deps.sh)")
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from ws_harness import (PROXY, WS_UPGRADE_HEADERS, ProxyUnderTest, RawConn, RssSampler,  # noqa: E402
                        request_bytes, sluice_only)
from ws_origin import Apps, flood_message  # noqa: E402

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def apps():
    a = Apps()
    try:
        yield a
    finally:
        a.stop()


@pytest.fixture(scope="module")
def proxy(apps, tmp_path_factory):
    if PROXY == "reference":
        pytest.skip("ws_reference_proxy.py models the drain only (test_websocket_drain.py)")
    px = ProxyUnderTest(tmp_path_factory.mktemp("ws"), apps.ws_port, apps.raw_port, drain_delay=0.0,
                        drain_timeout=5.0)
    try:
        yield px
    finally:
        code = px.stop()
        if px.kind == "sluice":
            assert code == 0, px.log_tail()


def run(coro, timeout: float = TIMEOUT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_connect(proxy: ProxyUnderTest, path: str, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("max_size", 8 << 20)
    kw.setdefault("open_timeout", 10)
    return connect(proxy.url + path, proxy=None, **kw)


_ids = iter(range(1_000_000))


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


# --------------------------------------------------------------------------------------------------
# messages

def test_echo_text_and_binary(proxy, apps):
    key = new_id("echo")

    async def go():
        async with ws_connect(proxy, f"/ws/echo?id={key}") as ws:
            await ws.send("hello through the tunnel ✓")
            assert await ws.recv() == "hello through the tunnel ✓"
            await ws.send(bytes(range(256)))
            assert await ws.recv() == bytes(range(256))
            await ws.send(b"")
            assert await ws.recv() == b""
            await ws.send("")
            assert await ws.recv() == ""
    run(go())
    entry = apps.journal.wait_for(key, lambda e: "closed_at" in e)
    assert entry["received"] == ["hello through the tunnel ✓", bytes(range(256)), b"", ""]
    assert entry["close_rcvd"] == (1000, "")


def test_one_mebibyte_message_each_way(proxy, apps):
    key = new_id("big")
    payload = flood_message(7, 1 << 20)

    async def go():
        async with ws_connect(proxy, f"/ws/echo?id={key}", compression=None) as ws:
            await ws.send(payload)
            got = await ws.recv()
            assert len(got) == len(payload) and got == payload
    run(go())
    entry = apps.journal.wait_for(key, lambda e: "closed_at" in e)
    assert len(entry["received"]) == 1 and entry["received"][0] == payload


def test_fragmented_messages_keep_their_fragments(proxy, apps):
    key = new_id("frag")
    fragments = ["first fragment, ", "then a second, ", "é and a third"]

    async def gen():
        for f in fragments:
            yield f

    async def go():
        async with ws_connect(proxy, f"/ws/fragments?id={key}", compression=None) as ws:
            await ws.send(gen())
            report = json.loads(await ws.recv())
            # The library sends each fragment as it comes and ends with an empty final frame.
            assert report == {"fragments": [16, 15, 13, 0], "text": "".join(fragments)}
            # The app answers "x,yy,zzz" in fragments: the client sees each one.
            await ws.send("x,yy,zzz")
            got = [f async for f in ws.recv_streaming()]
            assert got == ["x", "yy", "zzz", ""]
    run(go())
    assert apps.journal.wait_for(key, lambda e: "closed_at" in e)["fragments"] == [16, 15, 13, 0]


def test_ping_pong_both_ways(proxy, apps):
    key = new_id("ping")

    async def go():
        async with ws_connect(proxy, f"/ws/ping?id={key}") as ws:
            # The app pings first and says so once our library has answered the pong.
            assert await ws.recv() == "pong received"
            pong = await ws.ping(b"client-ping")
            latency = await asyncio.wait_for(pong, 10)
            assert latency >= 0
            await ws.send("after ping")
            assert await ws.recv() == "after ping"
    run(go())
    entry = apps.journal.wait_for(key, lambda e: "closed_at" in e)
    assert entry["pong"] is True and entry["received"] == ["after ping"]


def test_permessage_deflate_is_negotiated_end_to_end(proxy, apps):
    key = new_id("deflate")
    text = "compress me " * 10_000

    async def go():
        async with ws_connect(proxy, f"/ws/info?id={key}", compression="deflate") as ws:
            assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            info = json.loads(await ws.recv())
            await ws.send(text)
            assert await ws.recv() == text
            return info
    info = run(go())
    assert info["extensions"] == ["permessage-deflate"]
    assert info["headers"]["sec-websocket-extensions"].startswith("permessage-deflate")
    assert info["headers"]["upgrade"].lower() == "websocket"
    assert "upgrade" in info["headers"]["connection"].lower()
    assert info["path"] == f"/ws/info?id={key}"


# --------------------------------------------------------------------------------------------------
# close codes

def test_client_close_code_and_reason_reach_the_app(proxy, apps):
    key = new_id("cclose")

    async def go():
        async with ws_connect(proxy, f"/ws/echo?id={key}") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            await ws.close(1000, "client says bye")
            assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (1000, "client says bye")
    run(go())
    entry = apps.journal.wait_for(key, lambda e: "closed_at" in e)
    assert entry["close_rcvd"] == (1000, "client says bye")


def test_app_close_code_and_reason_reach_the_client(proxy, apps):
    key = new_id("aclose")

    async def go():
        async with ws_connect(proxy, f"/ws/close?id={key}&code=4001&reason=app%20goes%20away") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 4001 and info.value.rcvd.reason == "app goes away"
            assert ws.protocol.close_sent.code == 4001  # our library echoed it
    run(go())
    entry = apps.journal.wait_for(key, lambda e: "closed_at" in e)
    assert entry["close_sent"] == (4001, "app goes away")
    assert entry["close_rcvd"] == (4001, "app goes away")


# --------------------------------------------------------------------------------------------------
# a slow reader

FLOOD = 64 << 20
RSS_BOUND_KIB = 16 << 10


def test_slow_reader_is_backpressured_not_buffered(proxy, apps):
    """The app sends 64 MiB as fast as it can; the client reads nothing for 3 s, then slowly. The
    proxy's RSS stays within 16 MiB of its start, the app is held back (it cannot have sent it all
    while nobody reads), and every byte arrives in order."""
    key = new_id("flood")
    chunk = 1 << 20
    sampler = RssSampler(proxy)
    baseline = proxy.rss_kib()
    sampler.start()

    async def go():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 10)  # no 32 MiB autotuned window
        sock.connect(("127.0.0.1", proxy.port))
        async with ws_connect(proxy, f"/ws/flood?id={key}&bytes={FLOOD}&chunk={chunk}", sock=sock,
                              compression=None, max_queue=1, max_size=2 << 20) as ws:
            await asyncio.sleep(3.0)
            sent_while_paused = apps.journal.get(key).get("sent_bytes", 0)
            received = 0
            i = 0
            while received < FLOOD:
                message = await ws.recv()
                assert isinstance(message, bytes) and len(message) == chunk, (i, len(message))
                assert message == flood_message(i, chunk), f"message {i} differs"
                received += len(message)
                i += 1
                if i % 4 == 0:
                    await asyncio.sleep(0.05)
            assert await ws.recv() == "done"
            return sent_while_paused, received
    try:
        sent_while_paused, received = run(go(), timeout=120)
    finally:
        peak = sampler.stop()
    growth = peak - baseline
    print(f"\nslow reader via {proxy.kind}: app sent {sent_while_paused >> 20} MiB while the client paused; "
          f"proxy RSS {baseline >> 10} MiB -> peak {peak >> 10} MiB (+{growth} KiB, {sampler.samples} samples)")
    assert received == FLOOD
    assert sent_while_paused < FLOOD - (16 << 20), f"the app was not held back: {sent_while_paused} bytes sent"
    assert growth < RSS_BOUND_KIB, f"proxy RSS grew by {growth} KiB (bound {RSS_BOUND_KIB} KiB)"


# --------------------------------------------------------------------------------------------------
# upgrades not answered with 101, bodies, other protocols (raw sockets)

@pytest.mark.parametrize("status", [200, 404])
def test_upgrade_answered_without_101_leaves_an_http_connection(proxy, apps, status):
    conn = RawConn(proxy.port)
    try:
        conn.send(request_bytes("GET", f"/raw/reject/{status}", proxy.port, WS_UPGRADE_HEADERS))
        got, headers, body = conn.read_response()
        assert (got, body) == (status, f"rejected {status}\n".encode()), (got, headers, body)
        assert headers.get("upgrade") is None, headers
        # The same client connection then serves an ordinary request.
        conn.send(request_bytes("GET", f"/raw/plain-after-{status}", proxy.port))
        got, _, body = conn.read_response()
        assert (got, body) == (200, f"plain GET /raw/plain-after-{status} body=0\n".encode())
    finally:
        conn.close()
    seen = apps.journal.get(f"raw:/raw/reject/{status}")["headers"]
    assert seen["upgrade"] == "websocket" and "upgrade" in seen["connection"].lower(), seen


@sluice_only
def test_upgrade_request_with_a_body_is_refused_with_400(proxy, apps):
    conn = RawConn(proxy.port)
    try:
        conn.send(request_bytes("GET", "/ws/echo?id=with-body", proxy.port,
                                {**WS_UPGRADE_HEADERS, "Content-Length": "5"}, b"hello"))
        status, _, body = conn.read_response()
        assert status == 400, (status, body)
    finally:
        conn.close()
    assert "with-body" not in apps.journal.keys(), "the upgrade request with a body reached the app"


def _open_foo_tunnel(proxy, target: str) -> RawConn:
    conn = RawConn(proxy.port)
    conn.send(request_bytes("GET", target, proxy.port, {"Connection": "Upgrade", "Upgrade": "foo/1"}))
    status, headers, _ = conn.read_response()
    assert status == 101, (status, headers)
    assert headers["upgrade"] == "foo/1" and headers["connection"].lower() == "upgrade", headers
    assert conn.read_exactly(15) == b"hello from app\n"  # sent by the app with the 101, in one write
    return conn


def test_non_websocket_upgrade_is_a_byte_tunnel(proxy, apps):
    target = f"/raw/tunnel?n={new_id('t')}"
    conn = _open_foo_tunnel(proxy, target)
    try:
        data = flood_message(3, 200_000)
        for i in range(0, len(data), 50_000):
            conn.send(data[i:i + 50_000])
        assert conn.read_exactly(len(data)) == data
        conn.send(b"x")
        assert conn.read_exactly(1) == b"x"
    finally:
        conn.close()
    entry = apps.journal.wait_for(f"raw:{target}", lambda e: "eof_after" in e)
    assert entry["eof_after"] == len(data) + 1
    assert entry["headers"]["upgrade"] == "foo/1" and "upgrade" in entry["headers"]["connection"].lower()


@pytest.mark.xfail(PROXY == "nginx", strict=True,
                   reason="nginx ends an upgraded connection at the first EOF from either side")
def test_non_websocket_upgrade_passes_half_close_on(proxy, apps):
    """The client shuts down its sending side: the app sees EOF, and can still answer before it
    closes (then the client sees EOF)."""
    target = f"/raw/tunnel?n={new_id('hc')}"
    conn = _open_foo_tunnel(proxy, target)
    try:
        conn.send(b"12345")
        assert conn.read_exactly(5) == b"12345"
        conn.sock.shutdown(socket.SHUT_WR)
        assert conn.read_until_eof() == b"bye after eof: 5 bytes\n"
    finally:
        conn.close()
    assert apps.journal.get(f"raw:{target}")["eof_after"] == 5


# --------------------------------------------------------------------------------------------------
# RFC 8441: WebSocket over HTTP/2 (h2c prior knowledge)

def _ws_frame(opcode: int, payload: bytes, mask: bytes = b"\x11\x22\x33\x44", fin: bool = True) -> bytes:
    """A client frame (masked, RFC 6455 §5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _parse_ws_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete unmasked server frames in `buf` as (opcode, payload), and the rest."""
    frames = []
    while len(buf) >= 2:
        opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        assert not buf[1] & 0x80, "a server frame must not be masked"
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            break
        frames.append((opcode, buf[at:at + n]))
        buf = buf[at + n:]
    return frames, buf


@sluice_only
def test_extended_connect_over_h2c_carries_websocket_frames(proxy, apps):
    h2 = pytest.importorskip("h2.connection")
    import h2.config
    import h2.events
    import h2.settings

    key = new_id("h2ws")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    events: list = []

    def pump(until, what: str):
        deadline = time.monotonic() + 10
        while not until():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; events: {events}"
            data = sock.recv(65536)
            assert data, f"connection closed while waiting for {what}; events: {events}"
            for ev in conn.receive_data(data):
                events.append(ev)
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            sock.sendall(conn.data_to_send())

    try:
        pump(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events), "SETTINGS")
        settings = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)).changed_settings
        assert settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1, settings
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
                                (":path", f"/ws/echo?id={key}"), (":authority", f"127.0.0.1:{proxy.port}"),
                                ("sec-websocket-version", "13")])
        sock.sendall(conn.data_to_send())
        pump(lambda: any(isinstance(e, h2.events.ResponseReceived) for e in events), "the response")
        response = dict(next(e for e in events if isinstance(e, h2.events.ResponseReceived)).headers)
        assert response[":status"] == "200", response

        buf = b""
        got: list[tuple[int, bytes]] = []

        def send_all(data: bytes) -> None:
            """DATA frames within the peer's flow-control window and frame size (a WebSocket frame
            larger than either arrives in several DATA frames)."""
            while data:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window == 0:
                    before = len(events)
                    pump(lambda: len(events) > before, "a WINDOW_UPDATE")
                    continue
                conn.send_data(sid, data[:window])
                sock.sendall(conn.data_to_send())
                data = data[window:]

        def exchange(frame: bytes, want: int):
            nonlocal buf
            send_all(frame)
            while len(got) < want:
                before = len(events)
                pump(lambda: len(events) > before, "an echoed frame")
                for ev in events[before:]:
                    if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        frames, buf = _parse_ws_frames(buf + ev.data)
                        got.extend(frames)
                    assert not isinstance(ev, h2.events.StreamReset), ev

        exchange(_ws_frame(0x1, "over h2 ✓".encode()), 1)
        exchange(_ws_frame(0x2, bytes(range(256)) * 300), 2)
        exchange(_ws_frame(0x8, struct.pack(">H", 1000) + b"done"), 3)
        assert got == [(0x1, "over h2 ✓".encode()), (0x2, bytes(range(256)) * 300),
                       (0x8, struct.pack(">H", 1000) + b"done")]
    finally:
        sock.close()
    entry = apps.journal.wait_for(key, lambda e: "closed_at" in e)
    assert entry["received"] == ["over h2 ✓", bytes(range(256)) * 300]
    assert entry["close_rcvd"] == (1000, "done")
    assert entry["headers"]["upgrade"].lower() == "websocket"


# --------------------------------------------------------------------------------------------------
# /status and /metrics

def _tunnels_active(metrics: str) -> float:
    values = [float(m.group(1)) for m in re.finditer(r"^sluice_tunnels_active(?:\{[^}]*\})? (\S+)$", metrics, re.M)]
    assert values, "sluice_tunnels_active is not in /metrics"
    return sum(values)


@sluice_only
def test_status_and_metrics_count_open_tunnels(proxy, apps):
    def http1_tunnels() -> int:
        return proxy.status()["connections"]["tunnels"]["http1"]

    async def wait_count(n: int) -> None:
        deadline = time.monotonic() + 5
        while http1_tunnels() != n:
            assert time.monotonic() < deadline, f"/status tunnels.http1 {http1_tunnels()} != {n}"
            await asyncio.sleep(0.05)

    async def go():
        await wait_count(0)  # the earlier cases' tunnels are gone
        sessions = [await ws_connect(proxy, f"/ws/echo?id={new_id('st')}") for _ in range(3)]
        try:
            for ws in sessions:
                await ws.send("x")
                assert await ws.recv() == "x"
            await wait_count(3)
            assert _tunnels_active(proxy.metrics()) == 3
            await sessions.pop().close()
            await wait_count(2)
            assert _tunnels_active(proxy.metrics()) == 2
        finally:
            for ws in sessions:
                await ws.close()
        await wait_count(0)
        assert _tunnels_active(proxy.metrics()) == 0
    run(go())


def test_plain_requests_still_work_beside_tunnels(proxy, apps):
    """An open tunnel does not disturb an ordinary request on another connection, and an app's 403 to
    a handshake reaches the client as a 403."""
    async def go():
        async with ws_connect(proxy, f"/ws/echo?id={new_id('beside')}") as ws:
            conn = RawConn(proxy.port)
            try:
                conn.send(request_bytes("GET", "/raw/beside", proxy.port))
                assert conn.read_response()[2] == b"plain GET /raw/beside body=0\n"
            finally:
                conn.close()
            await ws.send("still here")
            assert await ws.recv() == "still here"
        with pytest.raises(InvalidStatus) as info:
            async with ws_connect(proxy, "/raw/reject/403"):
                pass
        assert info.value.response.status_code == 403
    run(go())
