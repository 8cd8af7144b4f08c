"""RFC 9113 conformance of Sluice's HTTP/2 front end (h2c with prior knowledge, and over TLS with ALPN h2),
frame by frame.

    python3 -m pytest -q Tests/e2e/test_h2_conformance.py      # SLUICE_BIN, else .build/debug/sluice

The cases follow h2spec's "http2" sections, renumbered for RFC 9113, plus what RFC 9113 added (field
validity, §8.2.1) and HPACK decoding errors (RFC 7541). One sluice (one event loop) and one origin.py
serve the whole module; each case opens its own connection, sends hand-built frames
(h2conformance.py) and accepts only what RFC 9113 allows:

- a connection error X: GOAWAY X, then the server closes the connection (§5.4.1);
- a stream error X: RST_STREAM X on that stream, and the connection still answers a PING (§5.4.2);
- "ignored": the connection answers a PING, nothing else happens;
- a malformed request (§8.1.1): RST_STREAM PROTOCOL_ERROR, or a 4xx response ("a server MAY send an
  HTTP response prior to closing or resetting the stream"), never the origin's answer.

§5.4.1 also lets an endpoint "choose to treat a stream error as a connection error". These tests
accept that escalation only where a comment says so (libnghttp2 escalates those cases); everywhere
else a stream error must stay a stream error, since a proxy's connection carries many clients'
streams. Every expectation waits at most a few seconds (h2conformance.TIMEOUT).
"""
from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

import pytest

pytest.importorskip("hpack", reason="needs the h2 package (pip install h2)")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import h2conformance as h2
from h2conformance import ACK, END_HEADERS, END_STREAM, PADDED, PRIORITY, E, S, T, frame

HELLO = b"hello from A\n"
MAX_WINDOW = 2**31 - 1


@pytest.fixture(scope="module", params=["h2c", "tls"])
def sluice(request, tmp_path_factory):
    """Every case runs twice: h2c with prior knowledge on the plaintext listener, and HTTP/2 over TLS
    (ALPN h2) on a TLS listener of the same kind of process."""
    binary = h2.sluice_bin()
    if not binary.exists():
        pytest.skip(f"sluice binary not found at {binary}: build it (`swift build`) or set SLUICE_BIN")
    with h2.running_sluice(tmp_path_factory.mktemp(f"h2conformance-{request.param}"), binary, mode=request.param) as s:
        yield s


@pytest.fixture
def conn(sluice):
    """A connection past the preface and the SETTINGS exchange."""
    c = sluice.client()
    yield c
    c.close()
    assert sluice.child.poll() is None, f"sluice exited:\n{sluice.child.tail(30)}"


def upload_answer(body: bytes) -> bytes:
    return b"len=%d sha256=%s\n" % (len(body), hashlib.sha256(body).hexdigest().encode())


def post(path: str = "/upload", length: int | None = None, extra: h2.Fields = ()) -> h2.Fields:
    cl = [("content-length", str(length))] if length is not None else []
    return h2.request("POST", path, extra=[*cl, *extra])


def slow(ms: int = 1500) -> h2.Fields:
    """A request the origin answers only after `ms`: its stream stays open meanwhile."""
    return h2.request("GET", f"/slow?ms={ms}")


# ==================================================================================================
# Positive controls

def test_get_is_served(conn):
    conn.headers(1, h2.request())
    r = conn.expect_response(1)
    assert (r.status, r.body) == (200, HELLO)
    assert ("x-origin", "A") in r.fields


def test_post_body_reaches_the_origin(conn):
    body = b"hello world, " * 1000
    conn.headers(1, post(length=len(body)), end_stream=False)
    conn.data(1, body[:8000])
    conn.data(1, body[8000:], end_stream=True)
    r = conn.expect_response(1)
    assert (r.status, r.body) == (200, upload_answer(body))


def test_post_without_content_length_and_with_trailers(conn):
    """Request trailers (a HEADERS frame with END_STREAM after the body) end the request."""
    body = b"abc" * 100
    conn.headers(1, post(), end_stream=False)
    conn.data(1, body)
    conn.headers(1, [("x-checksum", "1")], end_stream=True)
    r = conn.expect_response(1)
    assert (r.status, r.body) == (200, upload_answer(body))


def test_concurrent_streams_are_multiplexed(conn):
    conn.headers(1, slow(300))
    conn.headers(3, h2.request())
    conn.headers(5, h2.request("GET", "/nope"))
    assert conn.expect_response(3).body == HELLO
    assert conn.expect_response(5).status == 404
    assert conn.expect_response(1).body == b"slow 300 from A\n"


def test_server_settings_are_sane(conn):
    """SETTINGS_ENABLE_PUSH from a server can only be 0 (§6.5.2), and the limits are advertised."""
    assert conn.server_settings.get(S.ENABLE_PUSH, 0) == 0
    assert conn.server_settings.get(S.MAX_CONCURRENT_STREAMS, 0) >= 100
    assert conn.server_settings.get(S.MAX_FRAME_SIZE, 16384) >= 16384


def test_server_respects_max_frame_size_on_long_bodies(conn):
    """A 100 000-byte body arrives in frames of at most our SETTINGS_MAX_FRAME_SIZE (16 384, checked on
    every frame read), with WINDOW_UPDATEs from us keeping the windows open."""
    conn.headers(1, h2.request("GET", "/bytes?n=100000"))
    r = conn.expect_response(1)
    assert (r.status, len(r.body)) == (200, 100000)


def test_server_honours_header_table_size_zero(sluice):
    """With SETTINGS_HEADER_TABLE_SIZE 0 the server's HPACK encoder may not use its dynamic table (RFC
    7541 §4.2): the decoder here keeps no entry, so a reference to one fails, and it rejects a table
    size update above 0."""
    with sluice.client((S.HEADER_TABLE_SIZE, 0)) as c:
        for sid in (1, 3):
            c.headers(sid, h2.request())
            assert c.expect_response(sid).body == HELLO


CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


@pytest.mark.parametrize("path", ["/", "/stream?chunks=3&interval_ms=0", "/bytes?n=10", "/nope"])
def test_response_fields_are_valid_http2(conn, path):
    """What the server generates obeys the rules it enforces: lowercase field names (§8.2), no
    connection-specific fields ("An endpoint MUST NOT generate an HTTP/2 message containing
    connection-specific header fields", §8.2.2; the origin answers /stream and /bytes chunked), exactly
    one :status and no other pseudo-header field, before the regular fields (§8.3)."""
    conn.headers(1, h2.request("GET", path))
    while True:
        f = conn.read_frame()
        assert f != h2.CLOSED and f.type not in (T.GOAWAY, T.RST_STREAM), conn.history()
        if f.type in (T.HEADERS, T.CONTINUATION) and f.stream_id == 1 and f.fields is not None:
            break
    names = [n for n, _ in f.fields]
    assert names[0] == ":status" and names.count(":status") == 1, names
    assert not any(n.startswith(":") for n in names[1:]), names
    assert all(n == n.lower() for n in names), names
    assert not CONNECTION_SPECIFIC & set(names), names
    assert conn.expect_response(1, first=f).status in (200, 404)


# ==================================================================================================
# §3.4 HTTP/2 connection preface

@pytest.mark.parametrize("preface", [
    b"INVALID CONNECTION PREFACE\r\n\r\n",
    h2.PREFACE[:-1] + b"X",
], ids=["garbage", "last-octet-wrong"])
def test_invalid_preface_closes_the_connection(sluice, preface):
    """An invalid preface is a connection error PROTOCOL_ERROR; "a GOAWAY frame MAY be omitted". The
    plaintext port also serves HTTP/1.1, so bytes that are not the preface are read as HTTP/1: an
    HTTP/1 error response before the close is accepted there (not over TLS, where ALPN chose h2); of
    HTTP/2 frames, only the server's SETTINGS and a GOAWAY PROTOCOL_ERROR are."""
    with sluice.client(handshake=False) as c:
        c.send(preface, h2.settings())
        received = c.read_until_closed()
        if received.startswith(b"HTTP/1.1 "):
            # Not over TLS: ALPN chose h2 there, so the bytes are HTTP/2's or an error.
            assert sluice.mode == "h2c", f"an HTTP/1.1 answer after ALPN h2: {received[:100]!r}"
            status = int(received[9:12])
            assert 400 <= status < 600, received[:100]
        elif received:
            c.buf, c.eof = bytearray(received), True
            frames = []
            while (f := c.read_frame()) != h2.CLOSED:
                frames.append(f)
            # Over TLS the server speaks first (ALPN chose h2): its preface, SETTINGS, may be followed by a
            # WINDOW_UPDATE on stream 0 before it has read a byte (nginx and libnghttp2 do so).
            preface = (T.SETTINGS, T.WINDOW_UPDATE) if sluice.mode == "tls" else (T.SETTINGS,)
            assert [f.type for f in frames if not (f.type in preface and f.stream_id == 0)] in ([], [T.GOAWAY]), c.history()
            assert all(f.error_code == E.PROTOCOL_ERROR for f in frames if f.type == T.GOAWAY), c.history()


def test_preface_not_followed_by_settings(sluice):
    """"The client connection preface ... MUST be followed by a SETTINGS frame": a PING instead is an
    invalid preface, a connection error PROTOCOL_ERROR (GOAWAY optional, §3.4)."""
    with sluice.client(handshake=False) as c:
        c.send(h2.PREFACE, h2.ping())
        f = None
        while True:
            f = c.read_frame()
            if f == h2.CLOSED or f.type == T.GOAWAY:
                break
            assert f.type in (T.SETTINGS, T.WINDOW_UPDATE), c.history()
        if f != h2.CLOSED:
            assert f.error_code == E.PROTOCOL_ERROR, c.history()
            c.expect_closed()


# ==================================================================================================
# §4.1 Frame format; §5.5 extending HTTP/2

def test_unknown_frame_type_is_ignored(conn):
    """"Implementations MUST ignore and discard frames of unknown types" (§4.1, §5.5)."""
    conn.send(frame(0xFA, 0xFF, 0, b"hello"))
    conn.expect_alive()


def test_unknown_frame_type_on_an_open_stream_is_ignored(conn):
    conn.headers(1, post(length=5), end_stream=False)
    conn.send(frame(0xFA, 0, 1, b"extension payload"))
    conn.data(1, b"hello", end_stream=True)
    assert conn.expect_response(1).body == upload_answer(b"hello")


def test_undefined_flags_are_ignored(conn):
    """"Unused flags MUST be ignored on receipt" (§4.1): PING with every flag but ACK set."""
    conn.send(h2.ping(b"flagsok!", flags=0xFE))
    conn.expect_alive(b"flagsok!")  # our own PING


def test_undefined_flags_on_headers_and_data_are_ignored(conn):
    conn.send(frame(T.HEADERS, END_HEADERS | 0x02 | 0x10 | 0x40 | 0x80, 1, h2.block(post(length=3))))
    conn.send(frame(T.DATA, END_STREAM | 0x02 | 0x04 | 0x10 | 0x20 | 0x40 | 0x80, 1, b"abc"))
    assert conn.expect_response(1).body == upload_answer(b"abc")


def test_reserved_bit_is_ignored(conn):
    """"The semantics of this bit are undefined, and the bit MUST remain unset (0x0) when sending and
    MUST be ignored when receiving" (§4.1): PING on 0x80000000 is PING on stream 0, HEADERS on
    0x80000001 opens stream 1."""
    conn.send(h2.ping(b"reserved", stream_id=0x80000000))
    conn.headers(0x80000001, h2.request())
    r = conn.expect_response(1)
    assert r.body == HELLO
    conn.expect_alive()


# ==================================================================================================
# §4.2 Frame size

def test_data_of_max_frame_size_is_accepted(conn):
    body = bytes(range(256)) * 64  # 16 384 octets
    conn.headers(1, post(length=len(body)), end_stream=False)
    conn.data(1, body, end_stream=True)
    assert conn.expect_response(1).body == upload_answer(body)


def test_data_over_max_frame_size(conn):
    """"An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame exceeds the size defined in
    SETTINGS_MAX_FRAME_SIZE". A DATA frame cannot alter the connection's state, so a stream error is
    enough, and a connection error is allowed too (§4.2 requires one only for frames that can)."""
    conn.headers(1, post(length=16385), end_stream=False)
    conn.data(1, b"x" * 16385, end_stream=True)
    conn.expect_stream_error(1, E.FRAME_SIZE_ERROR, connection_error_ok=True)


def test_headers_over_max_frame_size(conn):
    """A frame carrying a field block that is too large MUST be a connection error FRAME_SIZE_ERROR."""
    fields = h2.request()
    size = len(h2.block(fields))
    filler = ("x-filler", "v" * (16385 - size - 2 - len("x-filler") - 3))
    payload = h2.block([*fields, filler])
    assert len(payload) == 16385, len(payload)
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 1, payload))
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


def test_settings_over_max_frame_size(conn):
    conn.send(frame(T.SETTINGS, 0, 0, b"\0\x99\0\0\0\0" * 2731))  # 16 386 octets
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


# ==================================================================================================
# §4.3 Field section compression and decompression (HPACK, RFC 7541)

HPACK_ERRORS = {
    "indexed-field-index-0": b"\x80",
    "index-past-the-dynamic-table": b"\xbe",  # 62: the dynamic table is empty
    "literal-name-index-past-the-table": b"\x0f\x30\x01a",  # literal without indexing, name index 63
    "table-size-update-over-the-limit": h2.hpack_int(4097, 5, 0x20),
    "table-size-update-after-a-field": h2.literal(":method", "GET") + b"\x20",
    "huffman-eos-in-string": b"\x00\x84\xff\xff\xff\xff\x01a",
    "huffman-padding-over-7-bits": b"\x00\x82\x1f\xff\x01a",  # 'a' then 11 bits of padding
    "huffman-padding-not-eos-prefix": b"\x00\x81\x18\x01a",  # 'a' (00011) padded with 000
    "string-longer-than-the-block": b"\x00\x05ab",
    "integer-overflow": b"\x7f" + b"\xff" * 10 + b"\x01",
    "truncated-integer": b"\x7f\xff",
}


@pytest.mark.parametrize("bad", HPACK_ERRORS.values(), ids=HPACK_ERRORS.keys())
def test_hpack_decoding_error(conn, bad):
    """"A decoding error in a field block MUST be treated as a connection error of type
    COMPRESSION_ERROR" (§4.3)."""
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 1, bad + h2.block(h2.request())))
    conn.expect_connection_error(E.COMPRESSION_ERROR)


def test_hpack_dynamic_table_is_shared_across_streams(conn):
    """A field indexed on one stream is referenced (index 62) on the next."""
    first = h2.block(h2.request()[:3]) + h2.literal(":path", "/", indexed=True)
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 1, first))
    assert conn.expect_response(1).body == HELLO
    again = h2.block(h2.request()[:3]) + b"\xbe"
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 3, again))
    assert conn.expect_response(3).body == HELLO


def test_header_block_split_over_continuations(conn):
    """HEADERS without END_HEADERS, then CONTINUATION frames, the last one with END_HEADERS."""
    payload = h2.block(h2.request(extra=[("x-a", "1" * 100), ("x-b", "2" * 100)]))
    conn.send(frame(T.HEADERS, END_STREAM, 1, payload[:20]),
              frame(T.CONTINUATION, 0, 1, payload[20:150]),
              frame(T.CONTINUATION, END_HEADERS, 1, payload[150:]))
    assert conn.expect_response(1).body == HELLO


INTERLEAVED = {
    "priority": h2.priority(1),
    "data-same-stream": frame(T.DATA, 0, 1, b"x"),
    "headers-other-stream": h2.H2Client.headers_frame(3, h2.request()),
    "continuation-other-stream": frame(T.CONTINUATION, END_HEADERS, 3, b""),
    "ping": h2.ping(),
    "settings": h2.settings(),
    "window-update": h2.window_update(0, 1),
    "rst-stream": h2.rst_stream(1),
    "unknown-extension-frame": frame(0xFA, 0, 1, b"ext"),
}


@pytest.mark.parametrize("interloper", INTERLEAVED.values(), ids=INTERLEAVED.keys())
def test_frame_inside_a_header_block(conn, interloper):
    """"Field blocks MUST be transmitted as a contiguous sequence of frames, with no interleaved frames
    of any other type or from any other stream" (§4.3); a CONTINUATION must follow, anything else "MUST
    be treated as a connection error of type PROTOCOL_ERROR" (§6.2, §6.10); extension frames too (§5.5)."""
    payload = h2.block(h2.request())
    conn.send(frame(T.HEADERS, END_STREAM, 1, payload[:10]), interloper,
              frame(T.CONTINUATION, END_HEADERS, 1, payload[10:]))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_frame_after_an_unfinished_continuation(conn):
    """The rule holds for every frame of the block: after a CONTINUATION without END_HEADERS, only a
    CONTINUATION on the same stream may come (§6.10)."""
    payload = h2.block(h2.request())
    conn.send(frame(T.HEADERS, END_STREAM, 1, payload[:10]), frame(T.CONTINUATION, 0, 1, payload[10:20]),
              frame(T.DATA, 0, 1, b"x"), frame(T.CONTINUATION, END_HEADERS, 1, payload[20:]))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


# ==================================================================================================
# §5.1 Stream states

IDLE_FRAMES = {
    "rst-stream": h2.rst_stream(1),
    "window-update": h2.window_update(1, 100),
    "continuation": frame(T.CONTINUATION, END_HEADERS, 1, h2.block(h2.request())),
}


@pytest.mark.parametrize("bad", IDLE_FRAMES.values(), ids=IDLE_FRAMES.keys())
def test_frame_on_an_idle_stream(conn, bad):
    """idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state MUST be
    treated as a connection error of type PROTOCOL_ERROR"."""
    conn.send(bad)
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_data_on_an_idle_stream(conn):
    """§5.1 makes DATA on an idle stream a connection error PROTOCOL_ERROR; §6.1 calls it a stream error
    STREAM_CLOSED (a DATA frame on a stream not "open" or "half-closed (local)"). Either is accepted."""
    conn.data(1, b"hello", end_stream=True)
    f = conn.expect_stream_error(1, E.PROTOCOL_ERROR, E.STREAM_CLOSED, connection_error_ok=True)
    if f.type == T.RST_STREAM:
        assert f.error_code == E.STREAM_CLOSED


def test_priority_on_an_idle_stream_is_allowed(conn):
    conn.send(h2.priority(3, depends_on=0))
    conn.expect_alive()
    conn.headers(3, h2.request())
    assert conn.expect_response(3).body == HELLO


def test_data_on_a_half_closed_remote_stream(conn):
    """half-closed (remote): "If an endpoint receives additional frames, other than WINDOW_UPDATE,
    PRIORITY, or RST_STREAM, for a stream that is in this state, it MUST respond with a stream error
    of type STREAM_CLOSED". libnghttp2 escalates it to a connection error (allowed by §5.4.1)."""
    conn.headers(1, slow())
    conn.data(1, b"late")
    conn.expect_stream_error(1, E.STREAM_CLOSED, connection_error_ok=True)


def test_headers_on_a_half_closed_remote_stream(conn):
    """As above, for a second HEADERS (END_STREAM already received). libnghttp2 escalates it to a
    connection error (allowed by §5.4.1)."""
    conn.headers(1, slow())
    conn.headers(1, [("x-trailer", "late")])
    conn.expect_stream_error(1, E.STREAM_CLOSED, connection_error_ok=True)


def test_continuation_on_a_half_closed_remote_stream(conn):
    """STREAM_CLOSED (§5.1) or, since no HEADERS precedes it, a connection error PROTOCOL_ERROR (§6.10)."""
    conn.headers(1, slow())
    conn.send(frame(T.CONTINUATION, END_HEADERS, 1, h2.block([("x-a", "1")])))
    f = conn.expect_stream_error(1, E.STREAM_CLOSED, E.PROTOCOL_ERROR, connection_error_ok=True)
    if f.type == T.RST_STREAM:
        assert f.error_code == E.STREAM_CLOSED


def test_window_update_priority_and_rst_on_a_half_closed_remote_stream_are_allowed(conn):
    conn.headers(1, slow(300))
    conn.send(h2.window_update(1, 1000), h2.priority(1, depends_on=0))
    conn.expect_alive()
    assert conn.expect_response(1).body == b"slow 300 from A\n"
    conn.headers(3, slow(1000))
    conn.send(h2.rst_stream(3, E.CANCEL))
    conn.expect_alive()
    conn.headers(5, h2.request())
    assert conn.expect_response(5).body == HELLO


CLOSED_STREAM_FRAMES = {
    "data": frame(T.DATA, END_STREAM, 1, b"late"),
    "headers": h2.H2Client.headers_frame(1, [("x-trailer", "late")]),
}


@pytest.mark.parametrize("late", CLOSED_STREAM_FRAMES.values(), ids=CLOSED_STREAM_FRAMES.keys())
@pytest.mark.parametrize("closed_by", ["rst-stream-received", "end-stream-both-ways"])
def test_frame_on_a_closed_stream(conn, late, closed_by):
    """closed: RFC 9113 lets the receiver discard frames on a closed stream ("An endpoint can perform
    this minimal processing for all streams that are in the "closed" state"), or treat them as a
    connection error STREAM_CLOSED ("An endpoint MAY treat receipt of any other type of frame on a
    closed stream as a connection error") or PROTOCOL_ERROR; RST_STREAM STREAM_CLOSED is accepted too
    (RFC 7540's answer, still allowed by §5.4.2)."""
    if closed_by == "rst-stream-received":
        conn.headers(1, post(length=10), end_stream=False)
        conn.send(h2.rst_stream(1, E.CANCEL))
        conn.expect_alive()
    else:
        conn.headers(1, h2.request())
        assert conn.expect_response(1).body == HELLO
    conn.send(late)
    conn.expect_ignored_or_error(1, rst_codes=(E.STREAM_CLOSED,), goaway_codes=(E.STREAM_CLOSED, E.PROTOCOL_ERROR))


@pytest.mark.parametrize("closed_by", ["rst-stream-received", "end-stream-both-ways"])
def test_continuation_on_a_closed_stream(conn, closed_by):
    """A CONTINUATION that follows no unfinished header block breaks §6.10 (a connection error
    PROTOCOL_ERROR); on a closed stream, a connection error STREAM_CLOSED is allowed too (§5.1)."""
    if closed_by == "rst-stream-received":
        conn.headers(1, post(length=10), end_stream=False)
        conn.send(h2.rst_stream(1, E.CANCEL))
        conn.expect_alive()
    else:
        conn.headers(1, h2.request())
        assert conn.expect_response(1).body == HELLO
    conn.send(frame(T.CONTINUATION, END_HEADERS, 1, h2.block([("x-a", "1")])))
    conn.expect_connection_error(E.PROTOCOL_ERROR, E.STREAM_CLOSED)


def test_headers_on_a_closed_stream_still_update_hpack_state(conn):
    """"An endpoint MUST minimally process and then discard any frames it receives in this state. This
    means updating header compression state for HEADERS" (§5.1, closed): a field indexed in a HEADERS
    frame on a closed stream is referenced by the next request."""
    conn.headers(1, h2.request())
    assert conn.expect_response(1).body == HELLO
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 1, h2.literal("x-indexed", "yes", indexed=True)))
    conn.expect_ignored_or_error(1, rst_codes=(E.STREAM_CLOSED,))
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 3, h2.block(h2.request()) + b"\xbe"))
    assert conn.expect_response(3).body == HELLO


def test_stream_error_leaves_other_streams_alone(conn):
    """"A stream error is an error related to a specific stream that does not affect processing of other
    streams" (§5.4.2)."""
    conn.headers(1, slow(300))
    conn.headers(3, h2.request(extra=[("connection", "close")]))
    conn.expect_stream_error(3, E.PROTOCOL_ERROR)
    assert conn.expect_response(1).body == b"slow 300 from A\n"


def test_data_after_a_stream_error_is_discarded_but_counted(conn):
    """After sending RST_STREAM, "an endpoint MUST minimally process and then discard any frames it
    receives" on that stream, and "the content of DATA frames counts toward the connection flow-control
    window" (§5.1, closed): a body the client had in flight is dropped, the window it used is given back
    (WINDOW_UPDATE on stream 0), and the next request's body gets through."""
    conn.headers(1, post(extra=[("connection", "close")]), end_stream=False)
    conn.expect_stream_error(1, E.PROTOCOL_ERROR)
    window = 65535 + sum(struct.unpack(">I", f.payload)[0] & 0x7FFFFFFF
                         for f in conn.seen if f.type == T.WINDOW_UPDATE and f.stream_id == 0)
    chunk = b"x" * 16384
    for _ in range(window // len(chunk)):
        conn.data(1, chunk)
    returned = 0
    while returned < window // 2:
        f = conn.read_frame()
        assert f != h2.CLOSED and f.type != T.GOAWAY, conn.history()
        if f.type == T.WINDOW_UPDATE and f.stream_id == 0:
            returned += struct.unpack(">I", f.payload)[0]
    conn.headers(3, post(length=5), end_stream=False)
    conn.data(3, b"hello", end_stream=True)
    assert conn.expect_response(3).body == upload_answer(b"hello")


# §5.1.1 Stream identifiers

def test_even_numbered_stream_id(conn):
    """Streams initiated by a client MUST use odd-numbered identifiers; "An endpoint that receives an
    unexpected stream identifier MUST respond with a connection error of type PROTOCOL_ERROR"."""
    conn.headers(2, h2.request())
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_decreasing_stream_id(conn):
    """"The identifier of a newly established stream MUST be numerically greater than all streams that
    the initiating endpoint has opened": stream 3 after stream 5 is a connection error PROTOCOL_ERROR.
    (libnghttp2 discards it, unable to tell it from a late frame on a closed stream; Sluice's
    HTTP2FrameRulesStateMachine remembers the IDs a client skipped.)"""
    conn.headers(5, h2.request())
    assert conn.expect_response(5).body == HELLO
    conn.headers(3, h2.request())
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_skipped_stream_id_cannot_be_opened_later(conn):
    """Stream 7 after stream 1 closes 3 and 5 for good ("an endpoint may skip a stream identifier, with
    the effect being that the skipped stream is immediately closed", §5.1.1): a HEADERS on 3 is not a
    newly established stream numerically greater than all the client opened, a connection error
    PROTOCOL_ERROR."""
    conn.headers(1, h2.request())
    conn.headers(7, h2.request())
    assert conn.expect_response(1).body == HELLO
    assert conn.expect_response(7).body == HELLO
    conn.headers(3, h2.request())
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_trailers_on_a_lower_stream_id_are_fine(conn):
    """A HEADERS frame on a lower stream ID that is open (trailers) is not a new stream."""
    conn.headers(1, post(), end_stream=False)
    conn.data(1, b"abc")
    conn.headers(3, h2.request())
    assert conn.expect_response(3).body == HELLO
    conn.headers(1, [("x-trailer", "1")], end_stream=True)
    assert conn.expect_response(1).body == upload_answer(b"abc")


# §5.1.2 Stream concurrency

def test_exceeding_max_concurrent_streams(conn):
    """"An endpoint that receives a HEADERS frame that causes its advertised concurrent stream limit to
    be exceeded MUST treat this as a stream error of type PROTOCOL_ERROR or REFUSED_STREAM".
    libnghttp2 escalates it to a connection error PROTOCOL_ERROR (allowed by §5.4.1)."""
    limit = conn.server_settings[S.MAX_CONCURRENT_STREAMS]
    for i in range(limit):
        conn.headers(1 + 2 * i, post(length=1), end_stream=False)  # open until their body comes
    conn.expect_alive()
    extra = 1 + 2 * limit
    conn.headers(extra, post(length=1), end_stream=False)
    conn.expect_stream_error(extra, E.PROTOCOL_ERROR, E.REFUSED_STREAM, connection_error_ok=True)


# §5.3 Prioritization: RFC 9113 deprecates RFC 7540's priority signals and drops its rule that "a
# stream cannot depend on itself" (a stream error PROTOCOL_ERROR in RFC 7540 §5.3.1). Sluice sends
# SETTINGS_NO_RFC7540_PRIORITIES. So a self-dependency may be ignored, or still be answered as RFC 7540
# did (as a stream error, or escalated to a connection error by §5.4.1): all three are accepted.

def test_headers_depending_on_itself(conn):
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM | PRIORITY, 1,
                    struct.pack(">IB", 1, 15) + h2.block(h2.request())))
    f = conn.read_frame()
    assert f != h2.CLOSED, conn.history()
    while f.type in (T.WINDOW_UPDATE, T.SETTINGS):
        f = conn.read_frame()
    if f.type == T.HEADERS:
        assert conn.expect_response(1, first=f).body == HELLO
    elif f.type == T.RST_STREAM:
        assert (f.stream_id, f.error_code) == (1, E.PROTOCOL_ERROR), conn.history()
        conn.expect_alive()
    else:
        assert f.type == T.GOAWAY and f.error_code == E.PROTOCOL_ERROR, conn.history()
        conn.expect_closed()


def test_priority_depending_on_itself(conn):
    conn.send(h2.priority(1, depends_on=1))
    conn.expect_ignored_or_error(1, rst_codes=(E.PROTOCOL_ERROR,), goaway_codes=(E.PROTOCOL_ERROR,))


# ==================================================================================================
# §6.1 DATA

def test_data_on_stream_0(conn):
    """"If a DATA frame is received whose Stream Identifier field is 0x00, the recipient MUST respond
    with a connection error of type PROTOCOL_ERROR"."""
    conn.data(0, b"hello")
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_padded_data_counts_only_the_data(conn):
    conn.headers(1, post(length=5), end_stream=False)
    conn.send(frame(T.DATA, PADDED | END_STREAM, 1, b"\x04hello\0\0\0\0"))
    assert conn.expect_response(1).body == upload_answer(b"hello")


@pytest.mark.parametrize("payload", [b"\x06abcd", b"\x05abcd", b"\x01"], ids=["longer", "equal", "pad-length-only"])
def test_data_padding_as_long_as_the_payload(conn, payload):
    """"If the length of the padding is the length of the frame payload or greater, the recipient MUST
    treat this as a connection error of type PROTOCOL_ERROR"."""
    conn.headers(1, post(), end_stream=False)
    conn.send(frame(T.DATA, PADDED, 1, payload))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_data_with_pad_length_field_missing(conn):
    """A PADDED DATA frame with an empty payload is "too small to contain mandatory frame data"
    (FRAME_SIZE_ERROR, §4.2); "a generic error code (such as PROTOCOL_ERROR ...) can always be used in
    place of more specific error codes" (§5.4), and libnghttp2 does, as a connection error (§5.4.1)."""
    conn.headers(1, post(), end_stream=False)
    conn.send(frame(T.DATA, PADDED, 1, b""))
    conn.expect_stream_error(1, E.FRAME_SIZE_ERROR, E.PROTOCOL_ERROR, connection_error_ok=True)


# §6.2 HEADERS

def test_headers_on_stream_0(conn):
    """"If a HEADERS frame is received whose Stream Identifier field is 0x00, the recipient MUST respond
    with a connection error of type PROTOCOL_ERROR"."""
    conn.headers(0, h2.request())
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_padded_headers_with_priority_are_served(conn):
    fields = h2.block(h2.request())
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM | PADDED | PRIORITY, 1,
                    b"\x03" + struct.pack(">IB", 0, 200) + fields + b"\0\0\0"))
    assert conn.expect_response(1).body == HELLO


def test_headers_padding_longer_than_the_payload(conn):
    """"Padding that exceeds the size remaining for the header block fragment MUST be treated as a
    PROTOCOL_ERROR" (a connection error: the frame carries a field block)."""
    fields = h2.block(h2.request())
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM | PADDED, 1, bytes([len(fields) + 1]) + fields))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_headers_end_headers_then_continuation(conn):
    """A CONTINUATION after a HEADERS with END_HEADERS: "A recipient that observes violation of this
    rule MUST respond with a connection error of type PROTOCOL_ERROR" (§6.10)."""
    conn.headers(1, post(), end_stream=False)
    conn.send(frame(T.CONTINUATION, END_HEADERS, 1, h2.block([("x-a", "1")])))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


# §6.3 PRIORITY

def test_priority_on_stream_0(conn):
    """"If a PRIORITY frame is received with a stream identifier of 0x00, the recipient MUST respond
    with a connection error of type PROTOCOL_ERROR". (libnghttp2 1.52 discards PRIORITY frames unread
    once SETTINGS_NO_RFC7540_PRIORITIES is sent; Sluice's HTTP2FrameRulesStateMachine checks this one.)"""
    conn.send(h2.priority(0, depends_on=1))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


@pytest.mark.parametrize("length", [4, 6])
def test_priority_of_wrong_length(conn, length):
    """"A PRIORITY frame with a length other than 5 octets MUST be treated as a stream error of type
    FRAME_SIZE_ERROR". libnghttp2 escalates it to a connection error (allowed by §5.4.1)."""
    conn.headers(1, slow(300))
    conn.send(frame(T.PRIORITY, 0, 1, b"\0" * length))
    conn.expect_stream_error(1, E.FRAME_SIZE_ERROR, connection_error_ok=True)


# §6.4 RST_STREAM

def test_rst_stream_on_stream_0(conn):
    conn.send(h2.rst_stream(0, E.CANCEL))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


@pytest.mark.parametrize("length", [3, 5])
def test_rst_stream_of_wrong_length(conn, length):
    """"A RST_STREAM frame with a length other than 4 octets MUST be treated as a connection error of
    type FRAME_SIZE_ERROR"."""
    conn.headers(1, slow(300))
    conn.send(frame(T.RST_STREAM, 0, 1, b"\0" * length))
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


def test_rst_stream_with_unknown_error_code_cancels_the_stream(conn):
    """"Unknown or unsupported error codes MUST NOT trigger any special behavior" (§7)."""
    conn.headers(1, slow(1000))
    conn.send(h2.rst_stream(1, 0xFFFF))
    conn.expect_alive()
    conn.headers(3, h2.request())
    assert conn.expect_response(3).body == HELLO


# §6.5 SETTINGS

def test_settings_ack_with_payload(conn):
    """"Receipt of a SETTINGS frame with the ACK flag set and a length field value other than 0 MUST be
    treated as a connection error of type FRAME_SIZE_ERROR"."""
    conn.send(h2.settings((S.ENABLE_PUSH, 0), flags=ACK))
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


def test_settings_on_a_stream(conn):
    """"If an endpoint receives a SETTINGS frame whose Stream Identifier field is anything other than
    0x00, the endpoint MUST respond with a connection error of type PROTOCOL_ERROR"."""
    conn.send(h2.settings((S.ENABLE_PUSH, 0), stream_id=1))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


@pytest.mark.parametrize("length", [3, 7, 11])
def test_settings_length_not_a_multiple_of_6(conn, length):
    """"A SETTINGS frame with a length other than a multiple of 6 octets MUST be treated as a connection
    error of type FRAME_SIZE_ERROR"."""
    conn.send(frame(T.SETTINGS, 0, 0, (struct.pack(">HI", S.ENABLE_PUSH, 0) * 2)[:length]))
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


@pytest.mark.parametrize("setting, value, code", [
    (S.ENABLE_PUSH, 2, E.PROTOCOL_ERROR),
    (S.INITIAL_WINDOW_SIZE, 2**31, E.FLOW_CONTROL_ERROR),
    (S.INITIAL_WINDOW_SIZE, 2**32 - 1, E.FLOW_CONTROL_ERROR),
    (S.MAX_FRAME_SIZE, 16383, E.PROTOCOL_ERROR),
    (S.MAX_FRAME_SIZE, 2**24, E.PROTOCOL_ERROR),
], ids=["enable-push-2", "initial-window-2^31", "initial-window-2^32-1", "max-frame-16383", "max-frame-2^24"])
def test_invalid_setting_value(conn, setting, value, code):
    """§6.5.2: ENABLE_PUSH other than 0 or 1 is PROTOCOL_ERROR; INITIAL_WINDOW_SIZE above 2^31-1
    FLOW_CONTROL_ERROR; MAX_FRAME_SIZE outside 2^14..2^24-1 PROTOCOL_ERROR: all connection errors."""
    conn.send(h2.settings((setting, value)))
    conn.expect_connection_error(code)


def test_extreme_but_valid_settings_are_accepted(conn):
    conn.send(h2.settings((S.INITIAL_WINDOW_SIZE, MAX_WINDOW), (S.MAX_FRAME_SIZE, 2**24 - 1),
                          (S.ENABLE_PUSH, 1), (S.HEADER_TABLE_SIZE, 0)))
    conn.expect_alive()
    conn.headers(1, h2.request())
    assert conn.expect_response(1).body == HELLO


def test_settings_values_apply_in_order(sluice):
    """"Settings are processed in the order in which they appear ... the value of a SETTINGS parameter
    is the last value that is seen by a receiver" (§6.5): INITIAL_WINDOW_SIZE 100 then 1 means 1."""
    with sluice.client((S.INITIAL_WINDOW_SIZE, 100), (S.INITIAL_WINDOW_SIZE, 1)) as c:
        c.headers(1, h2.request())
        while True:
            f = c.read_frame()
            assert f != h2.CLOSED and f.type not in (T.GOAWAY, T.RST_STREAM), c.history()
            if f.type == T.DATA:
                assert len(f.payload) == 1, c.history()
                break


def test_unknown_setting_is_ignored(conn):
    """"An endpoint that receives a SETTINGS frame with any unknown or unsupported identifier MUST ignore
    that setting" (§6.5.2); the frame is still acknowledged (§6.5.3)."""
    conn.send(h2.settings((0xFF, 1), (0x4242, 0xFFFFFFFF)))
    while True:
        f = conn.read_frame()
        assert f != h2.CLOSED and f.type != T.GOAWAY, conn.history()
        if f.type == T.SETTINGS and f.flags & ACK:
            assert f.payload == b""
            break
    conn.expect_alive()


# §6.7 PING

def test_ping_is_acknowledged_with_its_payload(conn):
    conn.send(h2.ping(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    while True:
        f = conn.read_frame()
        assert f != h2.CLOSED, conn.history()
        if f.type == T.PING:
            assert (f.flags & ACK, f.stream_id, f.payload) == (ACK, 0, b"\x01\x02\x03\x04\x05\x06\x07\x08")
            break


def test_ping_ack_is_not_answered(conn):
    """"An endpoint MUST NOT respond to PING frames containing this flag"."""
    conn.send(h2.ping(b"fromack!", flags=ACK), h2.ping(b"secondpg"))
    while True:
        f = conn.read_frame()
        assert f != h2.CLOSED, conn.history()
        if f.type == T.PING:
            assert f.payload == b"secondpg", f"a PING ACK was answered: {conn.history()}"
            break


def test_ping_on_a_stream(conn):
    """"If a PING frame is received with a Stream Identifier field value other than 0x00, the recipient
    MUST respond with a connection error of type PROTOCOL_ERROR"."""
    conn.send(h2.ping(stream_id=1))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


@pytest.mark.parametrize("length", [0, 7, 9])
def test_ping_of_wrong_length(conn, length):
    """"Receipt of a PING frame with a length field value other than 8 MUST be treated as a connection
    error of type FRAME_SIZE_ERROR"."""
    conn.send(frame(T.PING, 0, 0, b"\0" * length))
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


# §6.8 GOAWAY

def test_goaway_on_a_stream(conn):
    """"An endpoint MUST treat a GOAWAY frame with a stream identifier other than 0x00 as a connection
    error of type PROTOCOL_ERROR"."""
    conn.send(h2.goaway(0, E.NO_ERROR, stream_id=1))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_connection_error_goaway_covers_the_streams_processed(conn):
    """"If frames that are on a stream are passed to the application layer for any stream, ... a GOAWAY
    frame MUST include a stream identifier that is greater than or equal to the given stream identifier"
    (§8.7), so the client knows stream 3 (forwarded, still in flight) may have been processed."""
    conn.headers(1, h2.request())
    assert conn.expect_response(1).body == HELLO
    conn.headers(3, slow(1000))
    conn.expect_alive()
    conn.send(h2.ping(stream_id=1))
    f = conn.expect_connection_error(E.PROTOCOL_ERROR)
    assert struct.unpack(">I", f.payload[:4])[0] & 0x7FFFFFFF >= 3, conn.history()


def test_goaway_with_unknown_error_code_lets_streams_finish(conn):
    """A client's GOAWAY ends the connection gracefully: the stream it already sent is answered, and an
    unknown error code "MUST NOT trigger any special behavior" (§7)."""
    conn.headers(1, slow(300))
    conn.send(h2.goaway(0, 0xABCDEF))
    assert conn.expect_response(1).body == b"slow 300 from A\n"


# §6.9 WINDOW_UPDATE

def test_window_update_of_zero_on_the_connection(conn):
    """"Errors on the connection flow-control window MUST be treated as a connection error": a 0
    increment on stream 0 is a connection error PROTOCOL_ERROR."""
    conn.send(h2.window_update(0, 0))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_window_update_of_zero_on_a_stream(conn):
    """"A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a flow-control window increment
    of 0 as a stream error of type PROTOCOL_ERROR". libnghttp2 escalates it to a connection error
    (allowed by §5.4.1)."""
    conn.headers(1, slow(1000))
    conn.send(h2.window_update(1, 0))
    conn.expect_stream_error(1, E.PROTOCOL_ERROR, connection_error_ok=True)


@pytest.mark.parametrize("stream_id", [0, 1])
@pytest.mark.parametrize("length", [3, 5])
def test_window_update_of_wrong_length(conn, stream_id, length):
    """"A WINDOW_UPDATE frame with a length other than 4 octets MUST be treated as a connection error of
    type FRAME_SIZE_ERROR"."""
    conn.headers(1, slow(300))
    conn.send(frame(T.WINDOW_UPDATE, 0, stream_id, b"\0\0\0\x01\0"[:length]))
    conn.expect_connection_error(E.FRAME_SIZE_ERROR)


def test_connection_window_overflow(conn):
    """"If a sender receives a WINDOW_UPDATE that causes a flow-control window to exceed this maximum, it
    MUST terminate either the stream or the connection, as appropriate": for the connection window, a
    connection error FLOW_CONTROL_ERROR."""
    conn.send(h2.window_update(0, MAX_WINDOW - 65535), h2.window_update(0, 1))
    conn.expect_connection_error(E.FLOW_CONTROL_ERROR)


def test_stream_window_overflow(conn):
    """For a stream window: RST_STREAM FLOW_CONTROL_ERROR."""
    conn.headers(1, slow(1000))
    conn.send(h2.window_update(1, MAX_WINDOW - 65535), h2.window_update(1, 1))
    conn.expect_stream_error(1, E.FLOW_CONTROL_ERROR)


def test_server_respects_a_small_initial_window(sluice):
    """With SETTINGS_INITIAL_WINDOW_SIZE 1 the response body comes one octet at a time, each after a
    WINDOW_UPDATE (§6.9.1)."""
    with sluice.client((S.INITIAL_WINDOW_SIZE, 1)) as c:
        c.headers(1, h2.request())
        body = b""
        while len(body) < len(HELLO):
            f = c.read_frame()
            assert f != h2.CLOSED and f.type not in (T.GOAWAY, T.RST_STREAM), c.history()
            if f.type == T.DATA:
                assert len(f.payload) <= 1, f"{len(f.payload)} octets sent into a 1-octet window"
                body += f.payload
                if f.payload:
                    c.send(h2.window_update(1, 1))
        assert body == HELLO


def test_initial_window_change_reopens_a_stalled_stream(sluice):
    """§6.9.2: after SETTINGS_INITIAL_WINDOW_SIZE 0 the response head comes but no DATA; raising the
    setting adjusts the open stream's window and the body follows."""
    with sluice.client((S.INITIAL_WINDOW_SIZE, 0)) as c:
        c.headers(1, h2.request())
        while True:
            f = c.read_frame()
            assert f != h2.CLOSED, c.history()
            assert f.type != T.DATA or not f.payload, f"DATA sent into a 0 window: {c.history()}"
            if f.type == T.HEADERS:
                break
        c.send(h2.settings((S.INITIAL_WINDOW_SIZE, 65535)))
        body = b""
        while True:
            f = c.read_frame()
            assert f != h2.CLOSED and f.type not in (T.GOAWAY, T.RST_STREAM), c.history()
            if f.type == T.DATA:
                body += f.payload
                if f.flags & END_STREAM:
                    break
        assert body == HELLO


def test_initial_window_change_can_make_a_window_negative(sluice):
    """"A change to SETTINGS_INITIAL_WINDOW_SIZE can cause the available space in a flow-control window
    to become negative. A sender MUST track the negative flow-control window and MUST NOT send new
    flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to
    become positive" (§6.9.2): 5 octets sent into a 5-octet window, the setting drops to 2 (window -3),
    a WINDOW_UPDATE of 4 makes it 1, and exactly 1 octet follows."""
    with sluice.client((S.INITIAL_WINDOW_SIZE, 5)) as c:
        c.headers(1, h2.request())
        got = b""
        while len(got) < 5:
            f = c.read_frame()
            assert f != h2.CLOSED and f.type not in (T.GOAWAY, T.RST_STREAM), c.history()
            if f.type == T.DATA:
                got += f.payload
        assert got == HELLO[:5]
        c.send(h2.settings((S.INITIAL_WINDOW_SIZE, 2)))
        c.expect_alive()
        c.send(h2.window_update(1, 4))
        while True:
            f = c.read_frame()
            assert f != h2.CLOSED and f.type not in (T.GOAWAY, T.RST_STREAM), c.history()
            if f.type == T.DATA and f.payload:
                assert f.payload == HELLO[5:6], c.history()
                break
        c.expect_alive()  # reads what came meanwhile: no more DATA may be among it
        assert not any(g.type == T.DATA and g.payload for g in c.seen[c.seen.index(f) + 1:]), c.history()


@pytest.mark.xfail(strict=True, reason="libnghttp2 1.52 resets only the overflowing stream (RST_STREAM FLOW_CONTROL_ERROR) "
                                        "instead of the connection error RFC 9113 §6.9.2 requires")
def test_initial_window_change_that_overflows_a_stream_window(conn):
    """"An endpoint MUST treat a change to SETTINGS_INITIAL_WINDOW_SIZE that causes any flow-control
    window to exceed the maximum size as a connection error of type FLOW_CONTROL_ERROR"."""
    conn.headers(1, slow(1000))
    conn.send(h2.window_update(1, MAX_WINDOW - 65535))
    conn.expect_alive()
    conn.send(h2.settings((S.INITIAL_WINDOW_SIZE, 65536)))
    conn.expect_connection_error(E.FLOW_CONTROL_ERROR)


# §6.10 CONTINUATION

def test_continuation_on_stream_0(conn):
    payload = h2.block(h2.request())
    conn.send(frame(T.HEADERS, END_STREAM, 1, payload[:10]), frame(T.CONTINUATION, END_HEADERS, 0, payload[10:]))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_continuation_after_a_continuation_with_end_headers(conn):
    payload = h2.block(h2.request())
    conn.send(frame(T.HEADERS, 0, 1, payload[:10]), frame(T.CONTINUATION, END_HEADERS, 1, payload[10:]),
              frame(T.CONTINUATION, END_HEADERS, 1, h2.block([("x-a", "1")])))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


def test_continuation_after_data(conn):
    conn.headers(1, post(), end_stream=False)
    conn.data(1, b"abc")
    conn.send(frame(T.CONTINUATION, END_HEADERS, 1, h2.block([("x-a", "1")])))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


# ==================================================================================================
# §8.4 Server push

def test_push_promise_from_a_client(conn):
    """"A client cannot push. Thus, servers MUST treat the receipt of a PUSH_PROMISE frame as a
    connection error of type PROTOCOL_ERROR"."""
    conn.headers(1, slow(300))
    conn.send(frame(T.PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + h2.block(h2.request())))
    conn.expect_connection_error(E.PROTOCOL_ERROR)


# ==================================================================================================
# §8 HTTP semantics: malformed requests are stream errors PROTOCOL_ERROR (§8.1.1)

def base(method="POST", path="/upload") -> h2.Fields:
    return h2.request(method, path)


MALFORMED_HEADS = {
    # §8.2.1 field validity
    "uppercase-field-name": base() + [("X-Upper", "1")],
    "space-in-field-name": base() + [("x bad", "1")],
    "control-character-in-field-name": base() + [("\x01bad", "1")],
    "del-in-field-name": base() + [("\x7fbad", "1")],
    "non-ascii-field-name": base() + [("inv\xe1lid", "1")],
    "colon-in-field-name": base() + [("x:bad", "1")],
    "empty-field-name": base() + [("", "1")],
    "lf-in-field-value": base() + [("x-bad", "a\nb")],
    "cr-in-field-value": base() + [("x-bad", "a\rb")],
    "nul-in-field-value": base() + [("x-bad", "a\0b")],
    "leading-space-in-field-value": base() + [("x-bad", " a")],
    "trailing-tab-in-field-value": base() + [("x-bad", "a\t")],
    # §8.2.2 connection-specific fields
    "connection": base() + [("connection", "keep-alive")],
    "proxy-connection": base() + [("proxy-connection", "keep-alive")],
    "keep-alive": base() + [("keep-alive", "timeout=5")],
    "transfer-encoding": base() + [("transfer-encoding", "chunked")],
    "upgrade": base() + [("upgrade", "h2c")],
    "te-not-trailers": base() + [("te", "gzip")],
    "te-trailers-and-more": base() + [("te", "trailers, deflate")],
    # §8.3 control data
    "unknown-pseudo-header": base() + [(":foo", "bar")],
    "response-pseudo-header": base() + [(":status", "200")],
    "pseudo-header-after-regular": [(":method", "POST"), (":scheme", "http"), ("x-a", "1"), (":path", "/upload"),
                                    (":authority", "127.0.0.1")],
    "duplicate-method": [(":method", "POST")] + base(),
    "duplicate-scheme": base() + [(":scheme", "http")],
    "duplicate-path": base() + [(":path", "/upload")],
    "duplicate-authority": base() + [(":authority", "127.0.0.1")],
    "missing-method": [f for f in base() if f[0] != ":method"],
    "missing-scheme": [f for f in base() if f[0] != ":scheme"],
    "missing-path": [f for f in base() if f[0] != ":path"],
    "empty-path": h2.request("POST", ""),
    # "exactly one valid value for the :method, :scheme, and :path pseudo-header fields" (§8.3.1)
    "space-in-path": h2.request("POST", "/up load"),
    "control-character-in-path": h2.request("POST", "/up\x7fload"),
    "method-not-a-token": h2.request("PO ST", "/upload"),
    "empty-method": h2.request("", "/upload"),
    "empty-scheme": h2.request("POST", "/upload", scheme=""),
    "path-without-leading-slash": h2.request("POST", "upload"),
    "asterisk-path-on-get": h2.request("GET", "*"),
    "authority-with-userinfo": h2.request("POST", "/upload", authority="user:pass@127.0.0.1"),
    "host-differs-from-authority": base() + [("host", "example.com")],
    "connect-with-scheme": [(":method", "CONNECT"), (":scheme", "http"), (":authority", "127.0.0.1:1")],
    "connect-with-path": [(":method", "CONNECT"), (":path", "/"), (":authority", "127.0.0.1:1")],
    "connect-without-authority": [(":method", "CONNECT")],
    "protocol-pseudo-header-without-extended-connect": base() + [(":protocol", "websocket")],
}


@pytest.mark.parametrize("fields", MALFORMED_HEADS.values(), ids=MALFORMED_HEADS.keys())
def test_malformed_request_head(conn, fields):
    """RFC 9113 §8.1.1: "Malformed requests or responses that are detected MUST be treated as a stream
    error of type PROTOCOL_ERROR"; "intermediaries ... MUST NOT forward a malformed request". The body
    follows the head, so a server that forwarded it would answer 200 with the upload's digest."""
    conn.headers(1, fields, end_stream=False)
    conn.data(1, b"abc", end_stream=True)
    conn.expect_malformed(1)


def test_te_trailers_is_allowed(conn):
    """"The only exception to this is the TE header field, which MAY be present in an HTTP/2 request;
    when it is, it MUST NOT contain any value other than "trailers"" (§8.2.2)."""
    conn.headers(1, h2.request(extra=[("te", "trailers")]))
    assert conn.expect_response(1).body == HELLO


def test_host_equal_to_authority_is_allowed(conn):
    conn.headers(1, h2.request(extra=[("host", "127.0.0.1")]))
    assert conn.expect_response(1).body == HELLO


def test_split_cookies_are_allowed(conn):
    conn.headers(1, h2.request(extra=[("cookie", "a=1"), ("cookie", "b=2")]))
    assert conn.expect_response(1).body == HELLO


@pytest.mark.parametrize("lengths, declared", [
    ([3], 5), ([5], 3), ([2, 2], 5), ([3, 3], 5), ([], 5),
], ids=["single-data-short", "single-data-long", "two-data-short", "two-data-long", "no-data"])
def test_content_length_mismatch(conn, lengths, declared):
    """"A request or response is also malformed if the value of a content-length header field does not
    equal the sum of the DATA frame payload lengths that form the content" (§8.1.1)."""
    conn.headers(1, post(length=declared), end_stream=not lengths)
    for i, n in enumerate(lengths):
        conn.data(1, b"x" * n, end_stream=i == len(lengths) - 1)
    conn.expect_malformed(1)


@pytest.mark.parametrize("values", [["abc"], ["-3"], ["3, 4"], ["3", "4"]],
                         ids=["not-a-number", "negative", "list-of-two", "two-fields"])
def test_invalid_content_length(conn, values):
    """A content-length that is not one non-negative number cannot match the DATA that follows."""
    conn.headers(1, post(extra=[("content-length", v) for v in values]), end_stream=False)
    conn.data(1, b"abc", end_stream=True)
    conn.expect_malformed(1)


def test_trailers_without_end_stream(conn):
    """"An endpoint that receives a HEADERS frame without the END_STREAM flag set after receiving the
    HEADERS frame that opens a request or after receiving a final (non-informational) status code MUST
    treat the corresponding request or response as malformed" (§8.1)."""
    conn.headers(1, post(), end_stream=False)
    conn.data(1, b"abc")
    conn.headers(1, [("x-trailer", "1")], end_stream=False)
    conn.expect_stream_error(1, E.PROTOCOL_ERROR)


@pytest.mark.parametrize("trailer", [(":method", "POST"), (":path", "/"), ("X-Upper", "1"), ("connection", "close")],
                         ids=["method", "path", "uppercase", "connection"])
def test_malformed_trailers(conn, trailer):
    """"Pseudo-header fields MUST NOT appear in a trailer section" (§8.1); the field rules of §8.2 hold
    for trailers too. The response may already be under way, so only a reset is accepted."""
    conn.headers(1, post(), end_stream=False)
    conn.data(1, b"abc")
    conn.headers(1, [trailer], end_stream=True)
    conn.expect_stream_error(1, E.PROTOCOL_ERROR)


def test_oversized_field_section_keeps_the_connection_consistent(conn):
    """A field section over SETTINGS_MAX_HEADER_LIST_SIZE may be refused (431, or a reset), but "the
    field block MUST be processed to ensure a consistent connection state" (§10.5.1): a field it
    indexed is referenced by the next request."""
    limit = conn.server_settings.get(S.MAX_HEADER_LIST_SIZE, 1 << 16)
    big = [(f"x-big-{i}", "v" * 4000) for i in range(limit // 4000 + 2)]
    payload = h2.block(h2.request()) + h2.literal("x-indexed", "yes", indexed=True) + h2.block(big)
    chunks = [payload[i:i + 16384] for i in range(0, len(payload), 16384)]
    frames = [frame(T.HEADERS, END_STREAM | (END_HEADERS if len(chunks) == 1 else 0), 1, chunks[0])]
    for i, chunk in enumerate(chunks[1:], 1):
        frames.append(frame(T.CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, 1, chunk))
    conn.send(*frames)
    while True:
        f = conn.read_frame()
        assert f != h2.CLOSED and f.type != T.GOAWAY, conn.history()
        if f.stream_id == 1 and f.type == T.RST_STREAM:
            break
        if f.stream_id == 1 and f.type == T.HEADERS:
            r = conn.expect_response(1, allow_reset=True, first=f)
            assert r.status == 431, r
            break
    conn.send(frame(T.HEADERS, END_HEADERS | END_STREAM, 3, h2.block(h2.request()) + b"\xbe"))
    assert conn.expect_response(3).body == HELLO
