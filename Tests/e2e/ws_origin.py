#!/usr/bin/env python3
"""The apps behind the proxy in the WebSocket tests: a WebSocket server (the `websockets` library) and a
raw HTTP/1.1 server for the upgrades that are not WebSocket, both recording what they saw in a journal
the test reads.

WebSocket app (`WsApp`), by path (every handler takes `?id=KEY`, the journal key):

  /ws/echo            echoes every message (text as text, binary as binary) until the peer closes
  /ws/info            first sends a JSON text message {"path", "headers", "extensions"} (what the app
                      received and negotiated), then echoes
  /ws/fragments       receives one message fragment by fragment and answers JSON {"fragments": [len...],
                      "text": <the whole>}; then sends its own message in the fragments the client asked
                      for: each later text message "a,b,c" is answered as fragments "a", "b", "c"
  /ws/ping            the app pings the client (payload b"app-ping"), awaits the pong, then sends
                      "pong received"; then echoes
  /ws/close?code=C&reason=R
                      the app closes at once with that code and reason
  /ws/flood?bytes=N&chunk=M
                      sends N bytes as binary messages of M bytes (`flood_message(i, M)`: incompressible,
                      numbered), then the text "done", then waits for the client to close
  /ws/drain           the drain test's session: acknowledges each client message "c N" with "ack c N",
                      sends its own "a N" every `interval` seconds (query `interval`, default 0.2),
                      records the client's "ack a N"

Journal entry per id: "received" (messages), "close_rcvd" (code, reason) or None, "closed_at"
(time.monotonic()), "headers", "extensions", and per handler: "sent_bytes" (flood), "recv_c" / "acked_a"
/ "sent_a" (drain).

Raw app (`RawApp`), HTTP/1.1 keep-alive, by path:

  any request with an Upgrade header to /raw/reject/<status>
                      -> <status> with the body "rejected <status>\\n"; the connection stays HTTP
  Upgrade to /raw/tunnel
                      -> 101 Switching Protocols (Upgrade as asked) and, in the same write, the greeting
                         b"hello from app\\n"; then echoes every byte; on EOF from the peer it sends
                         b"bye after eof: <n> bytes\\n" (n = bytes it received) and closes
  anything else       -> 200 "plain <method> <target> body=<n>\\n" (closed after it on `Connection: close`)

Journal entries by key "raw:<target>": the request headers it received.

Both apps run in one background thread with their own event loop (`Apps`); or alone as a process:
`python3 ws_origin.py` prints "listening WS_PORT RAW_PORT".
"""
from __future__ import annotations

import asyncio
import json
import random
import struct
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MAX_MESSAGE = 8 << 20
_BLOCK = random.Random(11).randbytes(1 << 20)


def flood_message(i: int, size: int) -> bytes:
    """The i-th message of /ws/flood: its number, then incompressible bytes (a compressing proxy or
    extension cannot shrink the test's load)."""
    assert size <= len(_BLOCK)
    return struct.pack(">Q", i) + _BLOCK[8:size]


class Journal:
    """What the apps saw, by key; the test thread waits on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entries: dict[str, dict] = {}

    def update(self, key: str, **values) -> None:
        with self._cond:
            self._entries.setdefault(key, {}).update(values)
            self._cond.notify_all()

    def append(self, key: str, field: str, value) -> None:
        with self._cond:
            self._entries.setdefault(key, {}).setdefault(field, []).append(value)
            self._cond.notify_all()

    def get(self, key: str) -> dict:
        with self._cond:
            return dict(self._entries.get(key, {}))

    def keys(self) -> list[str]:
        with self._cond:
            return list(self._entries)

    def wait_for(self, key: str, predicate, timeout: float = 10.0) -> dict:
        """The entry once `predicate(entry)` holds; AssertionError with the entry after `timeout`."""
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate(self._entries.get(key, {})), timeout)
            entry = dict(self._entries.get(key, {}))
        if not ok:
            raise AssertionError(f"journal {key!r}: condition not met within {timeout}s: {entry}")
        return entry


class WsApp:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.sessions_open = 0

    async def handler(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        key = query.get("id", parts.path)
        self.journal.update(key, path=ws.request.path,
                            headers={k.lower(): v for k, v in ws.request.headers.raw_items()},
                            extensions=[e.name for e in ws.protocol.extensions], close_rcvd=None,
                            opened_at=time.monotonic())
        self.sessions_open += 1
        try:
            route = {"/ws/echo": self.echo, "/ws/info": self.info, "/ws/fragments": self.fragments,
                     "/ws/ping": self.ping, "/ws/close": self.close, "/ws/flood": self.flood,
                     "/ws/drain": self.drain}.get(parts.path)
            if route is None:
                await ws.close(4404, f"no handler for {parts.path}")
                return
            try:
                await route(ws, key, query)
            except ConnectionClosed:
                pass
            # The library answers a peer's Close itself; wait for the TCP close before recording.
            await ws.wait_closed()
        finally:
            self.sessions_open -= 1
            rcvd = ws.protocol.close_rcvd
            sent = ws.protocol.close_sent
            self.journal.update(key, close_rcvd=(rcvd.code, rcvd.reason) if rcvd else None,
                                close_sent=(sent.code, sent.reason) if sent else None,
                                close_rcvd_then_sent=ws.protocol.close_rcvd_then_sent,
                                closed_at=time.monotonic())

    async def echo(self, ws: ServerConnection, key: str, query: dict) -> None:
        async for message in ws:
            self.journal.append(key, "received", message)
            await ws.send(message)

    async def info(self, ws: ServerConnection, key: str, query: dict) -> None:
        entry = self.journal.get(key)
        await ws.send(json.dumps({"path": entry["path"], "headers": entry["headers"],
                                  "extensions": entry["extensions"]}))
        await self.echo(ws, key, query)

    async def fragments(self, ws: ServerConnection, key: str, query: dict) -> None:
        lengths, pieces = [], []
        async for fragment in ws.recv_streaming():
            lengths.append(len(fragment))
            pieces.append(fragment)
        whole = "".join(pieces) if pieces and isinstance(pieces[0], str) else b"".join(pieces)
        self.journal.update(key, fragments=lengths)
        await ws.send(json.dumps({"fragments": lengths, "text": whole if isinstance(whole, str) else None}))
        async for message in ws:
            parts = message.split(",")

            async def gen(parts=parts):
                for p in parts:
                    yield p
            await ws.send(gen())

    async def ping(self, ws: ServerConnection, key: str, query: dict) -> None:
        waiter = await ws.ping(b"app-ping")
        await asyncio.wait_for(waiter, 10)
        self.journal.update(key, pong=True)
        await ws.send("pong received")
        await self.echo(ws, key, query)

    async def close(self, ws: ServerConnection, key: str, query: dict) -> None:
        await ws.close(int(query.get("code", "1000")), query.get("reason", ""))

    async def flood(self, ws: ServerConnection, key: str, query: dict) -> None:
        total, chunk = int(query["bytes"]), int(query.get("chunk", 1 << 20))
        sent = 0
        i = 0
        while sent < total:
            size = min(chunk, total - sent)
            await ws.send(flood_message(i, size))
            sent += size
            i += 1
            self.journal.update(key, sent_bytes=sent, sent_at=time.monotonic())
        await ws.send("done")
        async for _ in ws:
            pass

    async def drain(self, ws: ServerConnection, key: str, query: dict) -> None:
        interval = float(query.get("interval", "0.2"))
        self.journal.update(key, recv_c=[], acked_a=[], sent_a=[], bad=[])
        entry_lists = self.journal._entries[key]  # appended to in this loop only; read after close

        async def sender() -> None:
            n = 0
            while True:
                await ws.send(f"a {n}")
                entry_lists["sent_a"].append(n)
                n += 1
                await asyncio.sleep(interval)

        task = asyncio.create_task(sender())
        try:
            async for message in ws:
                kind, _, num = message.partition(" ")
                if kind == "c":
                    entry_lists["recv_c"].append(int(num))
                    await ws.send(f"ack c {num}")
                elif kind == "ack" and num.startswith("a "):
                    entry_lists["acked_a"].append(int(num[2:]))
                else:
                    entry_lists["bad"].append(message)
            # The loop ends when the peer's Close arrived (the library answers it).
            self.journal.update(key, close_frame_at=time.monotonic())
        finally:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, ConnectionClosed):
                pass


class RawApp:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                self.journal.update(f"raw:{target}", method=method, headers=headers)
                body_len = int(headers.get("content-length", "0"))
                if body_len:
                    await reader.readexactly(body_len)
                path = urlsplit(target).path
                upgrade = headers.get("upgrade")
                if upgrade and path.startswith("/raw/reject/"):
                    status = int(path.rsplit("/", 1)[1])
                    body = f"rejected {status}\n".encode()
                    writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(body)}\r\n"
                                 f"Content-Type: text/plain\r\n\r\n".encode() + body)
                    await writer.drain()
                    continue
                if upgrade and path == "/raw/tunnel":
                    writer.write(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                 f"Upgrade: {upgrade}\r\n\r\n".encode() + b"hello from app\n")
                    await writer.drain()
                    await self.tunnel(reader, writer, target)
                    return
                body = f"plain {method} {target} body={body_len}\n".encode()
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                             f"Content-Type: text/plain\r\n\r\n".encode() + body)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        finally:
            writer.close()

    async def tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str) -> None:
        received = 0
        while True:
            data = await reader.read(65536)
            if not data:
                break
            received += len(data)
            writer.write(data)
            await writer.drain()
        self.journal.update(f"raw:{target}", eof_after=received)
        writer.write(f"bye after eof: {received} bytes\n".encode())
        await writer.drain()


class Apps:
    """Both apps on 127.0.0.1 (ephemeral ports) in one background thread."""

    def __init__(self) -> None:
        self.journal = Journal()
        self.ws = WsApp(self.journal)
        self.raw = RawApp(self.journal)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.ws_port = self.raw_port = 0
        self.thread = threading.Thread(target=self._run, name="ws-apps", daemon=True)
        self.thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("ws apps did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.ws.handler, "127.0.0.1", 0, ping_interval=None, max_size=MAX_MESSAGE,
                         close_timeout=30, backlog=1024) as ws_server:
            raw_server = await asyncio.start_server(self.raw.handle, "127.0.0.1", 0)
            self.ws_port = ws_server.sockets[0].getsockname()[1]
            self.raw_port = raw_server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            raw_server.close()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(10)


def main() -> int:
    apps = Apps()
    print(f"listening {apps.ws_port} {apps.raw_port}", flush=True)
    try:
        apps.thread.join()
    except KeyboardInterrupt:
        apps.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
