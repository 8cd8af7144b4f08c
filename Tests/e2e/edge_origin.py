#!/usr/bin/env python3
"""An echo origin for the edge-proxy tests: every answer says who answered and what it received.

HTTP/1.1 keep-alive (default) or h2c with prior knowledge (`--h2c`, on the `h2` package). Any method,
any path:

  GET  /healthz                  -> 200 "ok\n" (counted apart: `health_checks` in /__stats)
  GET  /__stats                  -> 200 JSON {"requests": N, "health_checks": N}
  GET  /slow?ms=N (any path with `slow` as its first segment)
                                 -> waits N ms (at most 10 s), then the echo
  anything else                  -> 200 JSON echo:
       {"name": ..., "port": ..., "protocol": "http/1.1"|"h2c", "method": ..., "path": <target as received>,
        "host": <Host or :authority as received>, "body_len": N, "x_forwarded_for": ...}

Every response carries `X-Origin: <name>`. Bodies (Content-Length or chunked; DATA frames) are read
whole and counted, never stored. Prints "listening <port>" once bound (`--port 0` for an ephemeral
port; the same port again to bring a killed origin back). Binds only to --host (default 127.0.0.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from urllib.parse import parse_qs, urlsplit

MAX_HEADER = 64 * 1024
MAX_BODY = 64 << 20
MAX_SLOW_MS = 10_000


class Origin:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.requests = 0
        self.health_checks = 0

    def answer(self, protocol: str, method: str, target: str, host: str | None, body_len: int,
               headers: dict[str, str]) -> tuple[int, bytes, str]:
        """(status, body, content type) for one request."""
        path = urlsplit(target).path
        if method in ("GET", "HEAD") and path == "/healthz":
            self.health_checks += 1
            return 200, b"ok\n", "text/plain"
        self.requests += 1
        if path == "/__stats":
            body = json.dumps({"requests": self.requests, "health_checks": self.health_checks}).encode()
            return 200, body, "application/json"
        echo = {"name": self.name, "port": self.port, "protocol": protocol, "method": method, "path": target,
                "host": host, "body_len": body_len, "x_forwarded_for": headers.get("x-forwarded-for")}
        return 200, json.dumps(echo).encode() + b"\n", "application/json"

    @staticmethod
    def delay_ms(target: str) -> int:
        parts = urlsplit(target)
        if not parts.path.startswith("/slow"):
            return 0
        try:
            return max(0, min(MAX_SLOW_MS, int(parse_qs(parts.query).get("ms", ["0"])[0])))
        except ValueError:
            return 0


# ------------------------------------------------------------------------------------------ HTTP/1.1


class BadRequest(Exception):
    pass


async def read_chunked(reader: asyncio.StreamReader) -> int:
    total = 0
    for _ in range(1_000_000):
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest("bad chunk size")
        if size == 0:
            for _ in range(100):
                if await reader.readuntil(b"\r\n") == b"\r\n":
                    return total
            raise BadRequest("too many trailers")
        total += size
        if total > MAX_BODY:
            raise BadRequest("body too large")
        await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("bad chunk end")
    raise BadRequest("too many chunks")


async def serve_http1(origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(10_000_000):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            close = "close" in headers.get("connection", "").lower() or version == "HTTP/1.0"
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body_len = 0
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body_len = await read_chunked(reader)
            elif "content-length" in headers:
                body_len = int(headers["content-length"])
                if body_len > MAX_BODY:
                    return
                await reader.readexactly(body_len)
            delay = Origin.delay_ms(target)
            if delay:
                await asyncio.sleep(delay / 1000)
            status, body, ctype = origin.answer("http/1.1", method, target, headers.get("host"), body_len, headers)
            out = (f"HTTP/1.1 {status} OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                   f"X-Origin: {origin.name}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()
            writer.write(out + (b"" if method == "HEAD" else body))
            await writer.drain()
            if close:
                return
    except (ConnectionError, BadRequest, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------------ h2c


async def serve_h2c(origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    streams: dict[int, dict] = {}
    tasks: set[asyncio.Task] = set()

    async def respond(stream_id: int, st: dict) -> None:
        h = st["headers"]
        delay = Origin.delay_ms(h.get(":path", "/"))
        if delay:
            await asyncio.sleep(delay / 1000)
        status, body, ctype = origin.answer("h2c", h.get(":method", "?"), h.get(":path", "/"),
                                            h.get(":authority") or h.get("host"), st["body_len"], h)
        try:
            conn.send_headers(stream_id, [(":status", str(status)), ("content-type", ctype),
                                          ("content-length", str(len(body))), ("x-origin", origin.name)])
            conn.send_data(stream_id, body, end_stream=True)  # small: fits the initial window
            writer.write(conn.data_to_send())
        except Exception:
            pass

    try:
        for _ in range(10_000_000):
            data = await reader.read(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    streams[event.stream_id] = {"headers": dict(event.headers), "body_len": 0}
                    if event.stream_ended:
                        t = asyncio.ensure_future(respond(event.stream_id, streams.pop(event.stream_id)))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_id in streams:
                        streams[event.stream_id]["body_len"] += len(event.data)
                    if event.stream_ended and event.stream_id in streams:
                        t = asyncio.ensure_future(respond(event.stream_id, streams.pop(event.stream_id)))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                elif isinstance(event, h2.events.StreamEnded):
                    if event.stream_id in streams:
                        t = asyncio.ensure_future(respond(event.stream_id, streams.pop(event.stream_id)))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                elif isinstance(event, h2.events.StreamReset):
                    streams.pop(event.stream_id, None)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    writer.write(conn.data_to_send())
                    return
            writer.write(conn.data_to_send())
    except Exception:
        return
    finally:
        for t in tasks:
            t.cancel()
        try:
            writer.close()
        except Exception:
            pass


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="origin")
    ap.add_argument("--h2c", action="store_true", help="speak HTTP/2 with prior knowledge instead of HTTP/1.1")
    args = ap.parse_args()

    origin = Origin(args.name, args.port)
    handler = serve_h2c if args.h2c else serve_http1
    server = await asyncio.start_server(lambda r, w: handler(origin, r, w), args.host, args.port,
                                        limit=MAX_HEADER, backlog=1024, reuse_address=True)
    origin.port = server.sockets[0].getsockname()[1]
    print(f"listening {origin.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
