#!/usr/bin/env python3
"""A small HTTP/1.1 keep-alive origin for the end-to-end drain tests.

Hand-rolled on asyncio streams (stdlib only). Endpoints:

  Every response carries "X-Origin: <name>".

  GET  /                                   -> 200 "hello from <name>\n"
  GET  /slow?ms=3000                       -> waits, then 200 "slow <ms> from <name>\n"
  GET  /bytes?n=N                           -> N zero bytes, chunked (bulk download)
  POST /upload                             -> reads the body (Content-Length or chunked),
                                              200 "len=<bytes> sha256=<hex>\n"
  GET  /stream?chunks=20&interval_ms=100   -> chunked response, one line per chunk:
                                              "chunk <i>/<n> from <name>\n", then the last chunk
  anything else                            -> 404

Prints "listening <port>" on stdout once bound (use --port 0 for an ephemeral port).
Only ever binds to the host given by --host (default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from urllib.parse import parse_qs

MAX_HEADER = 64 * 1024
MAX_BODY = 8 << 30  # bodies are hashed as they stream, never held
MAX_SLOW_MS = 60_000
MAX_CHUNKS = 10_000


class BadRequest(Exception):
    pass


def _response(status: int, reason: str, body: bytes, close: bool, name: bytes = b"",
              ctype: bytes = b"text/plain") -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nX-Origin: %s\r\n" % (
        status, reason.encode(), ctype, len(body), name)
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


async def _read_chunked(reader: asyncio.StreamReader, sink) -> int:
    total = 0
    for _ in range(10_000_000):
        line = await reader.readuntil(b"\r\n")
        size_s = line.split(b";", 1)[0].strip()
        try:
            size = int(size_s, 16)
        except ValueError:
            raise BadRequest("bad chunk size")
        if size == 0:
            # trailers, up to the empty line
            for _ in range(1000):
                t = await reader.readuntil(b"\r\n")
                if t == b"\r\n":
                    return total
            raise BadRequest("too many trailers")
        total += size
        if total > MAX_BODY:
            raise BadRequest("body too large")
        data = await reader.readexactly(size)
        sink(data)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("bad chunk terminator")
    raise BadRequest("too many chunks")


class Origin:
    def __init__(self, name: str):
        self.name = name
        self.name_b = name.encode()
        self.hello = b"hello from " + self.name_b + b"\n"
        self.hello_resp = _response(200, "OK", self.hello, False, self.name_b)
        self.hello_resp_close = _response(200, "OK", self.hello, True, self.name_b)
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(100_000_000):
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # peer closed between requests (or mid-head)
                except asyncio.LimitOverrunError:
                    writer.write(_response(431, "Request Header Fields Too Large", b"", True))
                    return
                keep = await self.one_request(head, reader, writer)
                if not keep:
                    return
        except (ConnectionError, BadRequest, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def one_request(self, head: bytes, reader, writer) -> bool:
        self.requests += 1
        lines = head.split(b"\r\n")
        try:
            method, target, version = lines[0].split(b" ", 2)
        except ValueError:
            writer.write(_response(400, "Bad Request", b"bad request line\n", True))
            return False
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            k, sep, v = line.partition(b":")
            if not sep:
                writer.write(_response(400, "Bad Request", b"bad header\n", True))
                return False
            headers[k.strip().lower()] = v.strip()
        conn_hdr = headers.get(b"connection", b"").lower()
        if version == b"HTTP/1.0":
            close = b"keep-alive" not in conn_hdr
        else:
            close = b"close" in conn_hdr
        path = target
        query = b""
        if b"?" in target:
            path, query = target.split(b"?", 1)

        te = headers.get(b"transfer-encoding", b"").lower()
        cl = headers.get(b"content-length")
        if headers.get(b"expect", b"").lower() == b"100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        # Read (and, for /upload, hash) the request body.
        h = hashlib.sha256()
        body_len = 0
        if b"chunked" in te:
            body_len = await _read_chunked(reader, h.update)
        elif cl is not None:
            try:
                n = int(cl)
            except ValueError:
                writer.write(_response(400, "Bad Request", b"bad content-length\n", True))
                return False
            if n < 0 or n > MAX_BODY:
                writer.write(_response(413, "Payload Too Large", b"", True))
                return False
            remaining = n
            while remaining > 0:
                data = await reader.read(min(remaining, 256 * 1024))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                h.update(data)
                remaining -= len(data)
            body_len = n

        if method == b"GET" and path == b"/":
            writer.write(self.hello_resp_close if close else self.hello_resp)
        elif method == b"GET" and path == b"/slow":
            q = parse_qs(query.decode("latin-1"))
            ms = max(0, min(MAX_SLOW_MS, int(q.get("ms", ["1000"])[0])))
            await asyncio.sleep(ms / 1000.0)
            body = b"slow %d from %s\n" % (ms, self.name_b)
            writer.write(_response(200, "OK", body, close, self.name_b))
        elif method == b"POST" and path == b"/upload":
            body = b"len=%d sha256=%s\n" % (body_len, h.hexdigest().encode())
            writer.write(_response(200, "OK", body, close, self.name_b))
        elif method == b"GET" and path == b"/stream":
            q = parse_qs(query.decode("latin-1"))
            n = max(0, min(MAX_CHUNKS, int(q.get("chunks", ["20"])[0])))
            interval = max(0, min(MAX_SLOW_MS, int(q.get("interval_ms", ["100"])[0]))) / 1000.0
            hdr = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                   b"X-Origin: " + self.name_b + b"\r\n")
            if close:
                hdr += b"Connection: close\r\n"
            writer.write(hdr + b"\r\n")
            await writer.drain()
            for i in range(n):
                line = b"chunk %d/%d from %s\n" % (i, n, self.name_b)
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()
                if i + 1 < n:
                    await asyncio.sleep(interval)
            writer.write(b"0\r\n\r\n")
        elif method == b"GET" and path == b"/bytes":
            # n zero bytes, chunked in 64 KiB pieces, written as fast as the reader takes them.
            q = parse_qs(query.decode("latin-1"))
            n = max(0, min(1 << 32, int(q.get("n", ["0"])[0])))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"\0" * 65536
            framed = b"%x\r\n%s\r\n" % (len(piece), piece)
            while n >= len(piece):
                writer.write(framed)
                n -= len(piece)
                if writer.transport.get_write_buffer_size() > 256 * 1024:
                    await writer.drain()
            if n:
                writer.write(b"%x\r\n%s\r\n" % (n, piece[:n]))
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(_response(404, "Not Found", b"not found\n", close, self.name_b))
        # Only wait for the socket when the kernel buffer is full.
        transport = writer.transport
        if transport.get_write_buffer_size() > 64 * 1024:
            await writer.drain()
        return not close


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="origin")
    args = ap.parse_args()

    origin = Origin(args.name)
    server = await asyncio.start_server(origin.handle, args.host, args.port,
                                        limit=MAX_HEADER, backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"stopped requests={origin.requests} connections={origin.connections}", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
