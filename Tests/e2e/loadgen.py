#!/usr/bin/env python3
"""Load generator process for the rolling-update drain test (stdlib asyncio only).

Clients of several kinds hit one address (the balancer) in closed loops from --start until
--start + --duration (both on the system-wide CLOCK_MONOTONIC, so several processes share one
time base). A request is never retried: a connection error, a reset, an EOF before the response is
complete, a wrong status or a wrong body is a failure, recorded with its kind.

A pooled keep-alive client behaves like a well-behaved client pool: it honours `Connection: close`
(opens a fresh connection for its next request, which is not a retry), and it does not reuse a
connection it has already seen closed by the server (that is counted as `pool_discards`). A request
that has been written on a connection is never sent again.

With `--tls-ca CA.pem [--sni NAME]` every connection is TLS (ALPN http/1.1), verified against that CA;
a failed handshake is the failure `tls_handshake`.

Prints "progress <json>" lines about twice a second and writes every request's record to --out:
[t_start, t_end, kind, outcome, served_by, reused_connection, connection_close].
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time

from records import Failure, Recorder, add_common_arguments, parse

KINDS = ("keepalive", "newconn", "slow", "upload", "stream")
MAX_HEAD = 64 * 1024


class Response:
    __slots__ = ("status", "headers", "body", "close")

    def __init__(self, status: int, headers: dict, body: bytes, close: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.close = close


class Conn:
    """One client connection; remembers whether it has carried a request before."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = 0

    def usable(self) -> bool:
        r = self.reader
        return not (r.at_eof() or r.exception() is not None or self.writer.transport.is_closing())

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


def _buffered(reader: asyncio.StreamReader) -> int:
    return len(getattr(reader, "_buffer", b""))


def tls_context(ca: str | None) -> ssl.SSLContext | None:
    """With `--tls-ca`: a client context that verifies the chain against that CA and the name (`--sni`)."""
    if not ca:
        return None
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def add_tls_arguments(ap) -> None:
    """TLS to the target (default: plaintext)."""
    ap.add_argument("--tls-ca", default=None, help="speak TLS, verifying the server against this CA file (PEM)")
    ap.add_argument("--sni", default=None, help="with --tls-ca: the server name to send and verify")


async def open_conn(host: str, port: int, tls: ssl.SSLContext | None = None, sni: str | None = None) -> Conn:
    try:
        if tls is None:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD)
        else:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_HEAD, ssl=tls,
                                                           server_hostname=sni or host)
    except ConnectionRefusedError as e:
        raise Failure("connect_refused", str(e))
    except ConnectionResetError as e:
        raise Failure("reset_on_connect", str(e))
    except ssl.SSLError as e:
        raise Failure("tls_handshake", f"{e.__class__.__name__}: {e}")
    except OSError as e:
        raise Failure("connect_error", f"{e.__class__.__name__}: {e}")
    return Conn(reader, writer)


async def read_response(conn: Conn, method: bytes) -> Response:
    """Read one response. Raises Failure with a precise kind."""
    reader = conn.reader
    got_any = False
    try:
        for _ in range(10):  # skip 1xx
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                if e.partial or got_any:
                    raise Failure("eof_mid_response", "in head")
                raise Failure("eof_before_response")
            except asyncio.LimitOverrunError:
                raise Failure("protocol_error", "head too long")
            got_any = True
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise Failure("protocol_error", "bad status line %r" % lines[0][:80])
            try:
                status = int(parts[1])
            except ValueError:
                raise Failure("protocol_error", "bad status %r" % parts[1][:20])
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(b":")
                    k = k.strip().lower()
                    v = v.strip()
                    if k in headers:
                        headers[k] += b", " + v
                    else:
                        headers[k] = v
            if 100 <= status < 200:
                continue
            break
        else:
            raise Failure("protocol_error", "too many 1xx")
        conn_hdr = headers.get(b"connection", b"").lower()
        close = b"close" in conn_hdr or (parts[0] == b"HTTP/1.0" and b"keep-alive" not in conn_hdr)
        te = headers.get(b"transfer-encoding", b"").lower()
        if method == b"HEAD" or status in (204, 304):
            body = b""
        elif b"chunked" in te:
            chunks = []
            for _ in range(1_000_000):
                line = await reader.readuntil(b"\r\n")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise Failure("protocol_error", "bad chunk size %r" % line[:40])
                if size == 0:
                    for _ in range(100):
                        if await reader.readuntil(b"\r\n") == b"\r\n":
                            break
                    break
                chunks.append(await reader.readexactly(size))
                if await reader.readexactly(2) != b"\r\n":
                    raise Failure("protocol_error", "bad chunk end")
            body = b"".join(chunks)
        elif b"content-length" in headers:
            try:
                n = int(headers[b"content-length"])
            except ValueError:
                raise Failure("protocol_error", "bad content-length")
            body = await reader.readexactly(n)
        else:
            body = await reader.read(-1)  # close-delimited
            close = True
        return Response(status, headers, body, close)
    except asyncio.IncompleteReadError:
        raise Failure("eof_mid_response")
    except asyncio.LimitOverrunError:
        raise Failure("protocol_error", "line too long")
    except (ConnectionResetError, BrokenPipeError) as e:
        if got_any or _buffered(reader):
            raise Failure("reset_mid_response", str(e))
        raise Failure("reset_before_response", str(e))
    except OSError as e:
        raise Failure("io_error", str(e))


class Worker(Recorder):
    def __init__(self, args) -> None:
        super().__init__(args)
        self.host = args.host
        self.port = args.port
        self.tls = tls_context(getattr(args, "tls_ca", None))
        self.sni = getattr(args, "sni", None)
        self.connections_opened = 0
        self.pool_discards = 0
        self.connection_close_seen = 0
        self.in_progress = 0
        host_hdr = f"{self.host}:{self.port}".encode()
        self.req_get = b"GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: e2e-loadgen\r\n\r\n" % host_hdr
        self.req_get_close = (b"GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: e2e-loadgen\r\n"
                              b"Connection: close\r\n\r\n" % host_hdr)
        self.req_slow = (b"GET /slow?ms=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (args.slow_ms, host_hdr))
        self.req_stream = (b"GET /stream?chunks=%d&interval_ms=%d HTTP/1.1\r\nHost: %s\r\n\r\n"
                           % (args.stream_chunks, args.stream_interval_ms, host_hdr))
        self.req_upload_cl = (b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                              b"Content-Length: %d\r\n\r\n" % (host_hdr, len(self.upload_body))) + self.upload_body
        body = self.upload_body
        q = len(body) // 4
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c)
                           for c in (body[:q], body[q:2 * q], body[2 * q:3 * q], body[3 * q:]))
        self.req_upload_chunked = (b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n" % host_hdr) + chunked + b"0\r\n\r\n"

    def check_response(self, kind: str, resp: Response) -> str:
        """Returns the origin name that served the response, or raises Failure."""
        served = resp.headers.get(b"x-origin", b"").decode("latin-1")
        return self.check("get" if kind in ("keepalive", "newconn") else kind, resp.status, served, resp.body)

    # ---- one request ----------------------------------------------------------------------------

    async def exchange(self, conn: Conn, kind: str, payload: bytes, method: bytes) -> Response:
        conn.used += 1
        try:
            conn.writer.write(payload)
            if conn.writer.transport.get_write_buffer_size() > 0:
                await conn.writer.drain()
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Failure("reset_on_send", str(e))
        except OSError as e:
            raise Failure("io_error", str(e))
        return await read_response(conn, method)

    async def one(self, conn: Conn | None, kind: str, payload: bytes, method: bytes,
                  timeout: float, keep: bool) -> Conn | None:
        """Runs one request, on `conn` if usable, else on a new connection.

        Returns the connection to use next (None to open a new one)."""
        if conn is not None and not conn.usable():
            self.pool_discards += 1
            conn.close()
            conn = None
        ts = time.monotonic()
        reused = conn is not None
        self.in_progress += 1
        try:
            async def run() -> tuple[Conn, Response, str]:
                c = conn
                if c is None:
                    c = await open_conn(self.host, self.port, self.tls, self.sni)
                    self.connections_opened += 1
                try:
                    r = await self.exchange(c, kind, payload, method)
                    return c, r, self.check_response(kind, r)
                except BaseException:
                    c.close()
                    raise
            c, resp, served = await asyncio.wait_for(run(), timeout)
        except Failure as f:
            if conn is not None:
                conn.close()
            self.record(ts, kind, f.kind, "", reused, f.detail)
            return None
        except asyncio.TimeoutError:
            if conn is not None:
                conn.close()
            self.record(ts, kind, "timeout", "", reused)
            return None
        finally:
            self.in_progress -= 1
        self.record(ts, kind, "ok", served, reused, close=resp.close)
        if resp.close:
            self.connection_close_seen += 1
        if resp.close or not keep:
            c.close()
            return None
        return c

    # ---- client loops ---------------------------------------------------------------------------

    async def loop_keepalive(self, idx: int) -> None:
        think = self.args.think_ms / 1000.0 if idx % 2 == 1 else 0.0
        conn = None
        for _ in range(10_000_000):
            if time.monotonic() >= self.t_stop:
                break
            conn = await self.one(conn, "keepalive", self.req_get, b"GET", self.args.timeout, True)
            if think:
                await asyncio.sleep(self.rnd.uniform(0, think))
        if conn is not None:
            conn.close()

    async def loop_newconn(self, idx: int) -> None:
        for i in range(10_000_000):
            if time.monotonic() >= self.t_stop:
                break
            # alternate: announce Connection: close, or just close after the response (curl-like)
            payload = self.req_get_close if (i + idx) % 2 else self.req_get
            await self.one(None, "newconn", payload, b"GET", self.args.timeout, False)

    async def loop_slow(self, idx: int) -> None:
        # stagger so slow requests are always in flight
        await asyncio.sleep(idx * self.args.slow_ms / 1000.0 / max(1, self.args.slow))
        conn = None
        for _ in range(1_000_000):
            if time.monotonic() >= self.t_stop:
                break
            conn = await self.one(conn, "slow", self.req_slow, b"GET",
                                  self.args.timeout + self.args.slow_ms / 1000.0, True)
        if conn is not None:
            conn.close()

    async def loop_upload(self, idx: int) -> None:
        conn = None
        for i in range(1_000_000):
            if time.monotonic() >= self.t_stop:
                break
            payload = self.req_upload_chunked if (i + idx) % 2 else self.req_upload_cl
            conn = await self.one(conn, "upload", payload, b"POST", self.args.timeout, True)
            if self.args.upload_interval_ms:
                await asyncio.sleep(self.args.upload_interval_ms / 1000.0)
        if conn is not None:
            conn.close()

    async def loop_stream(self, idx: int) -> None:
        dur = self.args.stream_chunks * self.args.stream_interval_ms / 1000.0
        await asyncio.sleep(idx * dur / max(1, self.args.stream))
        conn = None
        for _ in range(1_000_000):
            if time.monotonic() >= self.t_stop:
                break
            conn = await self.one(conn, "stream", self.req_stream, b"GET",
                                  self.args.timeout + dur, True)
        if conn is not None:
            conn.close()

    def progress_extra(self) -> dict:
        return {"in_progress": self.in_progress}

    async def run(self) -> None:
        a = self.args
        await self.wait_for_start()
        prog = asyncio.get_running_loop().create_task(self.progress())
        tasks = []
        for i in range(a.keepalive):
            tasks.append(self.loop_keepalive(i))
        for i in range(a.newconn):
            tasks.append(self.loop_newconn(i))
        for i in range(a.slow):
            tasks.append(self.loop_slow(i))
        for i in range(a.upload):
            tasks.append(self.loop_upload(i))
        for i in range(a.stream):
            tasks.append(self.loop_stream(i))
        await asyncio.gather(*tasks)
        prog.cancel()
        print(self.progress_line(in_progress=0), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap)
    ap.add_argument("--keepalive", type=int, default=8, help="pooled keep-alive connections")
    ap.add_argument("--newconn", type=int, default=4, help="new-connection-per-request loops")
    ap.add_argument("--slow", type=int, default=3, help="slow-request loops")
    ap.add_argument("--upload", type=int, default=1, help="upload loops")
    ap.add_argument("--stream", type=int, default=1, help="streaming-response loops")
    add_tls_arguments(ap)
    w = Worker(parse(ap))
    asyncio.run(w.run())
    w.write_result(w.args.out, connections_opened=w.connections_opened, pool_discards=w.pool_discards,
                   connection_close_seen=w.connection_close_seen)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(1)
