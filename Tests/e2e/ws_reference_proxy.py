#!/usr/bin/env python3
"""A Python model of the WebSocket drain contract (issue 11), to check that test_websocket_drain.py
passes a proxy that keeps it (`WS_PROXY=reference`), as reference_proxy.py does for the HTTP drain.

Only what that test needs: HTTP/1.1, one request per client connection (`Connection: close` unless
upgraded), `/raw/` to --raw-upstream and the rest to --ws-upstream. After a 101 the tunnel forwards
whole WebSocket frames in both directions, so a Close can be put between two frames. On SIGTERM:
/readyz answers 503; after --drain-delay the listener closes and each tunnel gets, at a random moment
in the first half of --drain-timeout, Close 1001 "going away" to the client and a masked Close 1001 to
the app; data frames after that are dropped; both sockets close when both Close replies arrived, after
5 s, or at the deadline. Exit 0 once every tunnel is closed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import struct
import sys

GOING_AWAY = struct.pack(">H", 1001) + b"going away"


def close_frame(masked: bool) -> bytes:
    if not masked:
        return bytes([0x88, len(GOING_AWAY)]) + GOING_AWAY
    mask = os.urandom(4)
    return bytes([0x88, 0x80 | len(GOING_AWAY)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(GOING_AWAY))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(opcode, the whole frame's bytes) of the next frame."""
    head = await reader.readexactly(2)
    n = head[1] & 0x7F
    ext = b""
    if n == 126:
        ext = await reader.readexactly(2)
        n = struct.unpack(">H", ext)[0]
    elif n == 127:
        ext = await reader.readexactly(8)
        n = struct.unpack(">Q", ext)[0]
    rest = await reader.readexactly(n + (4 if head[1] & 0x80 else 0))
    return head[0] & 0x0F, head + ext + rest


class Tunnel:
    def __init__(self, proxy: "Proxy", c_reader, c_writer, u_reader, u_writer) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer, self.u_reader, self.u_writer = c_reader, c_writer, u_reader, u_writer
        self.closing = False
        self.replies = {"client": False, "app": False}
        self.done = asyncio.Event()

    async def pump(self, reader, writer, side: str) -> None:
        try:
            while True:
                opcode, frame = await read_frame(reader)
                if self.closing:
                    if opcode == 0x8:
                        self.replies[side] = True
                        if all(self.replies.values()):
                            self.done.set()
                    continue  # nothing after our Close
                writer.write(frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        # After our Close, an app that replied and hung up (as the websockets server does) must not
        # cut the client before its reply: wait for it, or the 5 s.
        if not self.closing:
            self.done.set()

    def begin_close(self) -> None:
        """Close 1001 to both sides; both sockets close when both replied, or 5 s later."""
        if self.closing or self.done.is_set():
            return
        self.closing = True
        self.c_writer.write(close_frame(masked=False))
        self.u_writer.write(close_frame(masked=True))
        asyncio.get_running_loop().call_later(5.0, self.done.set)

    async def run(self) -> None:
        tasks = [asyncio.create_task(self.pump(self.c_reader, self.u_writer, "client")),
                 asyncio.create_task(self.pump(self.u_reader, self.c_writer, "app"))]
        await self.done.wait()
        for w in (self.c_writer, self.u_writer):
            w.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Proxy:
    def __init__(self, args) -> None:
        self.args = args
        self.ready = True
        self.tunnels: set[Tunnel] = set()
        self.draining = False

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            head = await c_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            c_writer.close()
            return
        target = head.split(b" ", 2)[1]
        port = self.args.raw_upstream if target.startswith(b"/raw/") else self.args.ws_upstream
        upgrade = b"\r\nupgrade:" in head.lower()
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            c_writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            c_writer.close()
            return
        if not upgrade:
            head = head[:-2] + b"Connection: close\r\n\r\n"
        u_writer.write(head)
        try:
            resp = await u_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            c_writer.close()
            u_writer.close()
            return
        c_writer.write(resp)
        if resp.startswith(b"HTTP/1.1 101") and not self.draining:
            tunnel = Tunnel(self, c_reader, c_writer, u_reader, u_writer)
            self.tunnels.add(tunnel)
            try:
                await tunnel.run()
            finally:
                self.tunnels.discard(tunnel)
            return
        c_writer.write(await u_reader.read())  # the body until the app closes (Connection: close)
        await c_writer.drain()
        c_writer.close()
        u_writer.close()

    async def admin(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        status, body = (b"200 OK", b"ready") if self.ready else (b"503 Service Unavailable", b"draining")
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        term = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, term.set)
        server = await asyncio.start_server(self.handle, "127.0.0.1", self.args.listen)
        admin = await asyncio.start_server(self.admin, "127.0.0.1", self.args.admin)
        await term.wait()
        self.ready = False
        await asyncio.sleep(self.args.drain_delay)
        server.close()
        self.draining = True
        deadline = loop.time() + self.args.drain_timeout
        for t in list(self.tunnels):
            loop.call_later(random.uniform(0, self.args.drain_timeout / 2), t.begin_close)
        while self.tunnels and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for t in list(self.tunnels):
            t.done.set()
        await asyncio.sleep(0.1)
        admin.close()
        return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--admin", type=int, required=True)
    ap.add_argument("--ws-upstream", type=int, required=True)
    ap.add_argument("--raw-upstream", type=int, required=True)
    ap.add_argument("--drain-delay", type=float, default=0.0)
    ap.add_argument("--drain-timeout", type=float, default=10.0)
    return asyncio.run(Proxy(ap.parse_args()).main())


if __name__ == "__main__":
    sys.exit(main())
