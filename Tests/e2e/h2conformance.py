"""A raw HTTP/2 client for the RFC 9113 conformance tests (test_h2_conformance.py), and the sluice +
origin it talks to.

The client builds every frame by hand (`frame()`), so it can send what no well-behaved library would:
wrong lengths, frames on the wrong stream, broken HPACK. Header blocks are written as HPACK literals
without indexing (`block()`), so a field's bytes (uppercase, NUL, a leading space) reach the server
exactly as given; responses are decoded with the `hpack` package that comes with `h2`.

Outcomes are asserted with the `expect_*` methods, each bounded by a socket timeout of a few seconds:

- `expect_connection_error(code)`: a GOAWAY with that code, then the server closes the connection.
- `expect_stream_error(sid, code)`: an RST_STREAM with that code on that stream, and the connection
  still answers a PING.
- `expect_alive()`: a PING comes back acknowledged with its payload (so whatever was sent before it
  was processed without an error).
- `expect_response(sid)`: the response's status, fields and body.
"""
from __future__ import annotations

import contextlib
import enum
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import hpack
import rolling_update as ru

if TYPE_CHECKING:
    from typing import Self

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT = 3.0  # seconds any single expectation may wait


class T(enum.IntEnum):
    """Frame types (RFC 9113 §6)."""
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


# Flags (RFC 9113 §6).
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY = 0x20


class E(enum.IntEnum):
    """Error codes (RFC 9113 §7)."""
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class S(enum.IntEnum):
    """SETTINGS parameters (RFC 9113 §6.5.2)."""
    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


def _name(enum_type, value: int) -> str:
    try:
        return enum_type(value).name
    except ValueError:
        return hex(value)


# --------------------------------------------------------------------------------------------------
# frames and header blocks

def frame(ftype: int, flags: int = 0, stream_id: int = 0, payload: bytes = b"", length: int | None = None) -> bytes:
    """One frame as bytes. `stream_id` is written as given (so the reserved bit can be set); `length`
    overrides the length field (a lie about the payload)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", stream_id) + payload


def settings(*pairs: tuple[int, int], flags: int = 0, stream_id: int = 0) -> bytes:
    return frame(T.SETTINGS, flags, stream_id, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(payload: bytes = b"\0" * 8, flags: int = 0, stream_id: int = 0) -> bytes:
    return frame(T.PING, flags, stream_id, payload)


def rst_stream(stream_id: int, code: int = E.CANCEL) -> bytes:
    return frame(T.RST_STREAM, 0, stream_id, struct.pack(">I", code))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(T.WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def priority(stream_id: int, depends_on: int = 0, weight: int = 15, exclusive: bool = False) -> bytes:
    return frame(T.PRIORITY, 0, stream_id, struct.pack(">IB", depends_on | (exclusive << 31), weight))


def goaway(last_stream_id: int = 0, code: int = E.NO_ERROR, stream_id: int = 0) -> bytes:
    return frame(T.GOAWAY, 0, stream_id, struct.pack(">II", last_stream_id, code))


def hpack_int(value: int, prefix_bits: int, first_byte: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with an N-bit prefix; `first_byte` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = bytearray([first_byte | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes | str, value: bytes | str, indexed: bool = False) -> bytes:
    """A literal field with a new name (RFC 7541 §6.2): without indexing, or with incremental indexing."""
    name = name.encode("latin-1") if isinstance(name, str) else name
    value = value.encode("latin-1") if isinstance(value, str) else value
    return (b"\x40" if indexed else b"\x00") + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


Fields = list[tuple[str, str]]


def block(fields: Fields) -> bytes:
    return b"".join(literal(n, v) for n, v in fields)


def request(method: str = "GET", path: str = "/", authority: str = "127.0.0.1", scheme: str = "http",
            extra: Fields = ()) -> Fields:
    """A request's fields: the four pseudo-header fields, then `extra`."""
    return [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path), *extra]


@dataclass
class Frame:
    type: int
    flags: int
    stream_id: int
    payload: bytes
    # On the frame that ends a header block (END_HEADERS): the decoded fields, and whether the HEADERS
    # frame that began it carried END_STREAM.
    fields: list[tuple[str, str]] | None = None
    ends_stream: bool = False

    @property
    def error_code(self) -> int:
        if self.type == T.RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == T.GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        raise ValueError(f"{self} carries no error code")

    def __str__(self) -> str:
        kind = _name(T, self.type)
        extra = ""
        if self.type in (T.RST_STREAM, T.GOAWAY) and len(self.payload) >= (4 if self.type == T.RST_STREAM else 8):
            extra = f" {_name(E, self.error_code)}"
            if self.type == T.GOAWAY:
                extra += f" last={struct.unpack('>I', self.payload[:4])[0] & 0x7FFFFFFF}"
                if len(self.payload) > 8:
                    extra += f" debug={self.payload[8:]!r}"
        return f"{kind}(flags=0x{self.flags:x}, stream={self.stream_id}, len={len(self.payload)}){extra}"


@dataclass
class Response:
    status: int
    fields: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)


CLOSED = "closed"


# --------------------------------------------------------------------------------------------------
# the client

class H2Client:
    """One HTTP/2 connection over a blocking socket on 127.0.0.1: with prior knowledge (h2c), or over TLS
    with ALPN h2 when `tls` (a client context) is given."""

    def __init__(self, port: int, timeout: float = TIMEOUT, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            # HTTP/2 over TLS: ALPN must select h2 (RFC 9113 §3.2); the rest is the same byte stream.
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            assert self.sock.selected_alpn_protocol() == "h2", \
                f"ALPN selected {self.sock.selected_alpn_protocol()!r}, not h2"
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.decoder = hpack.Decoder()
        self.server_settings: dict[int, int] = {}
        # What we advertise; the server must not send frames over our SETTINGS_MAX_FRAME_SIZE.
        self.max_frame_size = 16384
        self.seen: list[Frame] = []  # every frame read, for failure messages
        self.stash: list[Frame] = []  # frames of other streams read by expect_response
        self.fragments = b""
        self.block_ends_stream = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- sending

    def send(self, *chunks: bytes) -> None:
        """Writes the bytes; a peer that already closed is not an error here (the expectation that
        follows decides)."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.sock.sendall(b"".join(chunks))

    def handshake(self, *client_settings: tuple[int, int]) -> None:
        """Preface and SETTINGS; waits for the server's SETTINGS, acknowledges it, and waits for the ack
        of ours, so the settings on both sides are in force."""
        self.send(PREFACE, settings(*client_settings))
        for k, v in client_settings:
            if k == S.MAX_FRAME_SIZE:
                self.max_frame_size = v
            elif k == S.HEADER_TABLE_SIZE:
                # Our table shrinks at once: an entry the server indexes beyond it is gone when referenced.
                self.decoder.max_allowed_table_size = v
                self.decoder.header_table_size = v
        got_settings = got_ack = False
        deadline = time.monotonic() + self.timeout
        while not (got_settings and got_ack):
            f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed during the handshake; frames: {self.history()}"
            if f.type == T.SETTINGS and f.flags & ACK:
                got_ack = True
            elif f.type == T.SETTINGS:
                for i in range(0, len(f.payload), 6):
                    k, v = struct.unpack(">HI", f.payload[i:i + 6])
                    self.server_settings[k] = v
                self.send(settings(flags=ACK))
                got_settings = True

    def headers(self, stream_id: int, fields: Fields, end_stream: bool = True, end_headers: bool = True,
                flags: int = 0) -> None:
        self.send(self.headers_frame(stream_id, fields, end_stream, end_headers, flags))

    @staticmethod
    def headers_frame(stream_id: int, fields: Fields, end_stream: bool = True, end_headers: bool = True,
                      flags: int = 0) -> bytes:
        flags |= (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(T.HEADERS, flags, stream_id, block(fields))

    def data(self, stream_id: int, payload: bytes, end_stream: bool = False) -> None:
        self.send(frame(T.DATA, END_STREAM if end_stream else 0, stream_id, payload))

    # --- receiving

    def _recv_into_buffer(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; frames so far: {self.history()}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"timed out after {self.timeout}s; frames so far: {self.history()}") from None
        except (ConnectionResetError, ssl.SSLError):
            data = b""  # a reset (or, over TLS, an alert) after the server's last bytes is a close too
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_frame(self, deadline: float | None = None) -> Frame | str:
        """The next frame, or CLOSED once the server closed the connection."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        while len(self.buf) < 9:
            if self.eof or not self._recv_into_buffer(deadline):
                return CLOSED
        length = int.from_bytes(self.buf[:3], "big")
        assert length <= self.max_frame_size, \
            f"the server sent a {length}-octet frame, over our SETTINGS_MAX_FRAME_SIZE {self.max_frame_size}"
        while len(self.buf) < 9 + length:
            if self.eof or not self._recv_into_buffer(deadline):
                return CLOSED
        f = Frame(self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                  bytes(self.buf[9:9 + length]))
        del self.buf[:9 + length]
        self.seen.append(f)
        if f.type in (T.HEADERS, T.CONTINUATION):
            self._header_block(f)
        return f

    def _header_block(self, f: Frame) -> None:
        """Decodes the server's header blocks in the order they arrive (HPACK state is per connection)."""
        payload = f.payload
        if f.type == T.HEADERS:
            if f.flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if f.flags & PRIORITY:
                payload = payload[5:]
            self.block_ends_stream = bool(f.flags & END_STREAM)
            self.fragments = b""
        self.fragments += payload
        if f.flags & END_HEADERS:
            f.fields = [(n.decode("latin-1") if isinstance(n, bytes) else n, v.decode("latin-1") if isinstance(v, bytes) else v)
                        for n, v in self.decoder.decode(self.fragments)]
            f.ends_stream = self.block_ends_stream
            self.fragments = b""

    def read_until_closed(self) -> bytes:
        """Every byte until the server closes the connection (raw: for answers that are not HTTP/2)."""
        deadline = time.monotonic() + self.timeout
        while not self.eof:
            self._recv_into_buffer(deadline)
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def history(self) -> str:
        return "[" + ", ".join(str(f) for f in self.seen[-12:]) + ("] (closed)" if self.eof else "]")

    # --- expectations

    def expect_closed(self, deadline: float | None = None) -> None:
        """The server closes the connection; frames before the close other than GOAWAY are not allowed
        (a connection error ends the connection, RFC 9113 §5.4.1)."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        while True:
            f = self.read_frame(deadline)
            if f == CLOSED:
                return
            assert f.type in (T.GOAWAY, T.WINDOW_UPDATE, T.SETTINGS), \
                f"expected the connection to close, got {f}; frames: {self.history()}"

    def expect_connection_error(self, *codes: int) -> Frame:
        """A GOAWAY carrying one of `codes`, then the connection closed (RFC 9113 §5.4.1: "After sending
        the GOAWAY frame for an error condition, the endpoint MUST close the TCP connection")."""
        want = " or ".join(_name(E, c) for c in codes)
        deadline = time.monotonic() + self.timeout
        while True:
            f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed without a GOAWAY (expected {want}); frames: {self.history()}"
            if f.type == T.GOAWAY:
                assert f.error_code in codes, f"expected GOAWAY {want}, got {f}; frames: {self.history()}"
                self.expect_closed(time.monotonic() + self.timeout)
                return f
            assert f.type != T.RST_STREAM, \
                f"expected a connection error {want}, got a stream error {f}; frames: {self.history()}"

    def expect_stream_error(self, stream_id: int, *codes: int, connection_error_ok: bool = False) -> Frame:
        """RST_STREAM with one of `codes` on `stream_id`, after which the connection still works. With
        `connection_error_ok`, a GOAWAY with one of `codes` (and a close) is accepted too."""
        want = " or ".join(_name(E, c) for c in codes)
        deadline = time.monotonic() + self.timeout
        while True:
            f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed; expected RST_STREAM {want} on stream {stream_id}; " \
                                f"frames: {self.history()}"
            if f.type == T.RST_STREAM and f.stream_id == stream_id:
                assert f.error_code in codes, f"expected RST_STREAM {want}, got {f}; frames: {self.history()}"
                self.expect_alive()
                return f
            if f.type == T.GOAWAY:
                assert connection_error_ok, f"expected a stream error {want} on stream {stream_id}, " \
                                            f"got a connection error {f}; frames: {self.history()}"
                assert f.error_code in codes, f"expected {want}, got {f}; frames: {self.history()}"
                self.expect_closed(time.monotonic() + self.timeout)
                return f
            assert not (f.type in (T.HEADERS, T.DATA) and f.stream_id == stream_id), \
                f"expected RST_STREAM {want} on stream {stream_id}, got {f}; frames: {self.history()}"

    def expect_malformed(self, stream_id: int) -> Frame | Response:
        """A malformed request (RFC 9113 §8.1.1): a stream error PROTOCOL_ERROR; "for malformed requests,
        a server MAY send an HTTP response prior to closing or resetting the stream", so a 4xx response is
        accepted too. Either way the connection goes on."""
        deadline = time.monotonic() + self.timeout
        while True:
            f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed; expected a stream error on {stream_id}; frames: {self.history()}"
            assert f.type != T.GOAWAY, f"a malformed request is a stream error, got {f}; frames: {self.history()}"
            if f.type == T.RST_STREAM and f.stream_id == stream_id:
                assert f.error_code == E.PROTOCOL_ERROR, \
                    f"expected RST_STREAM PROTOCOL_ERROR, got {f}; frames: {self.history()}"
                self.expect_alive()
                return f
            if f.type == T.HEADERS and f.stream_id == stream_id:
                response = self.expect_response(stream_id, allow_reset=True, first=f)
                assert 400 <= response.status < 500, \
                    f"a malformed request must not be served: got {response.status}; frames: {self.history()}"
                self.expect_alive()
                return response

    def expect_ignored_or_error(self, stream_id: int, rst_codes: tuple[int, ...] = (),
                                goaway_codes: tuple[int, ...] = ()) -> Frame | None:
        """For frames RFC 9113 lets the receiver either discard or answer with an error: the connection
        answers a PING (ignored), or RST_STREAM on `stream_id` with one of `rst_codes` (the connection
        going on), or GOAWAY with one of `goaway_codes` (and a close). Returns the error frame, if any."""
        payload = b"ignored?"
        self.send(ping(payload))
        deadline = time.monotonic() + self.timeout
        while True:
            f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed without a GOAWAY; frames: {self.history()}"
            if f.type == T.PING and f.flags & ACK and f.payload == payload:
                return None
            if f.type == T.RST_STREAM and f.stream_id == stream_id:
                assert f.error_code in rst_codes, f"unexpected {f}; frames: {self.history()}"
                self.expect_alive()
                return f
            if f.type == T.GOAWAY:
                assert f.error_code in goaway_codes, f"unexpected {f}; frames: {self.history()}"
                self.expect_closed(time.monotonic() + self.timeout)
                return f

    def expect_alive(self, payload: bytes = b"stillok!") -> None:
        """A PING is acknowledged with the same payload: the connection survived what came before."""
        self.send(ping(payload))
        deadline = time.monotonic() + self.timeout
        while True:
            f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed; expected it to survive; frames: {self.history()}"
            assert f.type != T.GOAWAY, f"expected no error, got {f}; frames: {self.history()}"
            if f.type == T.PING and f.flags & ACK:
                assert f.payload == payload, f"PING ACK payload {f.payload!r}, expected {payload!r}"
                return

    def expect_response(self, stream_id: int, allow_reset: bool = False, first: Frame | None = None) -> Response:
        """The response on `stream_id`, up to END_STREAM (or, with `allow_reset`, an RST_STREAM after
        the head). `first` is a frame of it already read. Frames of other streams are kept for their
        own `expect_response`."""
        response: Response | None = None
        deadline = time.monotonic() + self.timeout
        while True:
            if first is not None:
                f, first = first, None
            elif any(g.stream_id == stream_id for g in self.stash):
                f = next(g for g in self.stash if g.stream_id == stream_id)
                self.stash.remove(f)
            else:
                f = self.read_frame(deadline)
            assert f != CLOSED, f"connection closed before the response on {stream_id} ended; frames: {self.history()}"
            assert f.type != T.GOAWAY or f.error_code == E.NO_ERROR, f"unexpected {f}; frames: {self.history()}"
            if f.stream_id != stream_id:
                if f.stream_id != 0 and f.type in (T.HEADERS, T.CONTINUATION, T.DATA, T.RST_STREAM):
                    self.stash.append(f)
                continue
            if f.type == T.RST_STREAM:
                assert allow_reset and response is not None, f"stream reset: {f}; frames: {self.history()}"
                return response
            if f.type in (T.HEADERS, T.CONTINUATION):
                if f.fields is None:
                    continue  # the block goes on in a CONTINUATION
                if response is None:
                    status = dict(f.fields).get(":status")
                    assert status is not None, f"response head without :status: {f.fields}"
                    if int(status) < 200:
                        continue  # informational
                    response = Response(int(status), [(n, v) for n, v in f.fields if not n.startswith(":")])
                else:
                    response.trailers = f.fields
                if f.ends_stream:
                    return response
            elif f.type == T.DATA:
                assert response is not None, f"DATA before the response head; frames: {self.history()}"
                payload = f.payload
                if f.flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                response.body += payload
                if f.payload:
                    # Keep the server's windows open for long bodies.
                    self.send(window_update(0, len(f.payload)), window_update(stream_id, len(f.payload)))
                if f.flags & END_STREAM:
                    return response


# --------------------------------------------------------------------------------------------------
# sluice and its origin

@dataclass
class SluiceUnderTest:
    port: int              # the port the cases talk to: h2c, or TLS with ALPN h2
    admin_port: int
    child: ru.Child
    origin: ru.Child
    tls: ssl.SSLContext | None = None
    mode: str = "h2c"

    def client(self, *client_settings: tuple[int, int], handshake: bool = True) -> H2Client:
        """A connection; with `handshake` past the preface and the SETTINGS exchange."""
        c = H2Client(self.port, tls=self.tls, server_hostname="a.test" if self.tls else None)
        if handshake:
            c.handshake(*client_settings)
        return c


def _tls_ready(port: int, tls: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw, \
                tls.wrap_socket(raw, server_hostname="a.test") as s:
            return s.selected_alpn_protocol() == "h2"
    except OSError:
        return False


@contextlib.contextmanager
def running_sluice(workdir: Path, sluice_bin: Path, extra_args: tuple[str, ...] = (), mode: str = "h2c"):
    """Starts origin.py and sluice in front of it (one event loop, ports picked free), waits until both
    serve, and stops both (by their own PIDs) afterwards. Logs go to `workdir`.

    `mode="tls"` adds a TLS listener (`--listen-tls`, a.test's certificate from tls_certs.py made in
    `workdir`) and the cases talk to it, with ALPN h2; the plaintext listener stays beside it."""
    workdir.mkdir(parents=True, exist_ok=True)
    origin = ru.Child("origin", [ru.PY, str(ru.HERE / "origin.py"), "--port", "0", "--name", "A"], workdir)
    child = None
    try:
        m = origin.wait_for_line(r"listening (\d+)", timeout=10)
        assert m, f"origin did not start:\n{origin.tail()}"
        origin_port = int(m.group(1))
        port, admin = ru.free_port(), ru.free_port()
        tls_args: list[str] = []
        tls = None
        tls_port = None
        if mode == "tls":
            import tls_certs
            pki = tls_certs.make_pki(workdir / "pki")
            tls = tls_certs.client_context(pki.ca, alpn=["h2"])
            tls_port = ru.free_port()
            tls_args = ["--listen-tls", f"127.0.0.1:{tls_port}", "--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key)]
        elif mode != "h2c":
            raise ValueError(f"mode must be h2c or tls, not {mode!r}")
        child = ru.Child("sluice", [str(sluice_bin), "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                                    "--upstream", f"http://127.0.0.1:{origin_port}", "--threads", "1",
                                    "--drain-delay", "0s", "--drain-timeout", "2s", "--log-level", "warning",
                                    *tls_args, *extra_args], workdir)
        deadline = time.monotonic() + 20
        while True:
            rc = child.poll()
            assert rc is None, f"sluice exited with {rc} during start-up:\n{child.tail(30)}"
            if ru.http_get(admin, "/readyz", timeout=0.5)[0] == 200 and ru.http_get(port, "/", timeout=1.0)[0] == 200 \
                    and (tls is None or _tls_ready(tls_port, tls)):
                break
            assert time.monotonic() < deadline, f"sluice not ready after 20 s:\n{child.tail(30)}"
            time.sleep(0.05)
        yield SluiceUnderTest(tls_port if tls else port, admin, child, origin, tls, mode)
    finally:
        if child is not None:
            child.stop(timeout=5.0)
        origin.stop(timeout=3.0)


def sluice_bin() -> Path:
    """The binary the e2e tests use: SLUICE_BIN, else .build/debug/sluice under the repo root."""
    return ru.default_sluice_bin()

