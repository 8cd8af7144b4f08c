#!/usr/bin/env python3
"""A minimal reference implementation of Sluice's drain contract (DESIGN.md §2), in Python.

It is NOT Sluice. It exists to check the end-to-end harness itself: run against a proxy that does
the right thing, the harness must report zero failures (`rolling_update.py --target reference`), so
a failure seen against Sluice is Sluice's, not the harness's. HTTP/1.1 only, one upstream.

Same flags as sluice (subset): --listen --upstream --admin --drain-delay --drain-timeout
--log-format json. SIGTERM/SIGINT: `propagating` (readiness 503, still accepting; every response
carries `Connection: close`), after drain-delay `draining` (listener closed, idle connections closed,
busy ones close after their response), exit 0 when no connection is left, 3 at drain-timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time

HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}


def parse_duration(s: str) -> float:
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m)", s):
        if m.start() != pos:
            raise ValueError(s)
        pos = m.end()
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]
    if pos != len(s) or pos == 0:
        raise ValueError(s)
    return total


def hostport(s: str) -> tuple[str, int]:
    s = s.split("://", 1)[-1].rstrip("/")
    h, p = s.rsplit(":", 1)
    return h, int(p)


def log(msg: str, **kw) -> None:
    print(json.dumps({"ts": time.time(), "level": "info", "message": msg, **kw}), file=sys.stderr, flush=True)


def parse_head(head: bytes):
    lines = head.split(b"\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers.append((k.strip(), v.strip()))
    return first, headers


def get(headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def copy_body(reader, writer, headers, until_eof: bool = False) -> None:
    """Copies a message body raw, framing included."""
    te = (get(headers, b"transfer-encoding") or b"").lower()
    cl = get(headers, b"content-length")
    if b"chunked" in te:
        for _ in range(10_000_000):
            line = await reader.readuntil(b"\r\n")
            writer.write(line)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                for _ in range(1000):
                    t = await reader.readuntil(b"\r\n")
                    writer.write(t)
                    if t == b"\r\n":
                        return
                return
            writer.write(await reader.readexactly(size + 2))
            await writer.drain()
    elif cl is not None:
        n = int(cl)
        while n > 0:
            d = await reader.read(min(n, 65536))
            if not d:
                raise asyncio.IncompleteReadError(b"", n)
            writer.write(d)
            n -= len(d)
            await writer.drain()
    elif until_eof:
        for _ in range(10_000_000):
            d = await reader.read(65536)
            if not d:
                return
            writer.write(d)
            await writer.drain()


class Ref:
    def __init__(self, a) -> None:
        self.a = a
        self.up = hostport(a.upstream)
        self.phase = "starting"
        self.conns: dict[asyncio.StreamWriter, bool] = {}  # writer -> busy
        self.pool: list[tuple] = []
        self.changed = asyncio.Event()

    def set_phase(self, p: str) -> None:
        self.phase = p
        log("phase", phase=p, connections=len(self.conns))
        self.changed.set()

    async def upstream(self):
        while self.pool:
            r, w = self.pool.pop()
            if not r.at_eof() and not w.transport.is_closing():
                return r, w
            w.close()
        return await asyncio.open_connection(*self.up)

    async def handle(self, reader, writer) -> None:
        self.conns[writer] = False
        try:
            for _ in range(10_000_000):
                self.conns[writer] = False
                if self.phase == "draining":
                    break
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self.conns[writer] = True
                first, headers = parse_head(head)
                ch = (get(headers, b"connection") or b"").lower()
                close = b"close" in ch or first.endswith(b"HTTP/1.0")
                ur, uw = await self.upstream()
                out = [first] + [k + b": " + v for k, v in headers if k.lower() not in HOP]
                uw.write(b"\r\n".join(out) + b"\r\n\r\n")
                await copy_body(reader, uw, headers)
                await uw.drain()
                rhead = await ur.readuntil(b"\r\n\r\n")
                rfirst, rheaders = parse_head(rhead)
                up_close = b"close" in (get(rheaders, b"connection") or b"").lower()
                framed = (get(rheaders, b"content-length") is not None
                          or b"chunked" in (get(rheaders, b"transfer-encoding") or b"").lower())
                close = close or self.phase != "serving" or not framed
                out = [rfirst] + [k + b": " + v for k, v in rheaders if k.lower() not in HOP]
                if close:
                    out.append(b"Connection: close")
                writer.write(b"\r\n".join(out) + b"\r\n\r\n")
                await copy_body(ur, writer, rheaders, until_eof=not framed)
                await writer.drain()
                if up_close or not framed:
                    uw.close()
                else:
                    self.pool.append((ur, uw))
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.conns.pop(writer, None)
            writer.close()
            self.changed.set()

    async def admin(self, reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path == b"/readyz":
                st, body = (200, b"ready") if self.phase == "serving" else (503, b"not ready")
            elif path == b"/livez":
                st, body = 200, b"ok"
            elif path == b"/status":
                st, body = 200, json.dumps({"phase": self.phase, "connections": len(self.conns)}).encode()
            else:
                st, body = 404, b""
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (st, len(body), body))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            pass
        finally:
            writer.close()

    async def run(self) -> int:
        a = self.a
        lh, lp = hostport(a.listen)
        ah, ap_ = hostport(a.admin)
        server = await asyncio.start_server(self.handle, lh, lp, backlog=4096, reuse_address=True)
        admin = await asyncio.start_server(self.admin, ah, ap_, reuse_address=True)
        loop = asyncio.get_running_loop()
        sig = asyncio.Event()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, sig.set)
        self.set_phase("serving")
        log("started", listen=a.listen, admin=a.admin)
        await sig.wait()
        self.set_phase("propagating")
        await asyncio.sleep(parse_duration(a.drain_delay))
        server.close()
        self.set_phase("draining")
        for w, busy in list(self.conns.items()):
            if not busy:
                w.close()
        deadline = time.monotonic() + parse_duration(a.drain_timeout)
        for _ in range(1_000_000):
            if not self.conns:
                self.set_phase("stopped")
                admin.close()
                return 0
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass
        self.set_phase("forced")
        for w in list(self.conns):
            w.transport.abort()
        return 3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--drain-delay", default="5s")
    ap.add_argument("--drain-timeout", default="20s")
    ap.add_argument("--termination-grace", default="30s")
    ap.add_argument("--threads", default=None)
    ap.add_argument("--log-format", default="json")
    ap.add_argument("--log-level", default="info")
    a = ap.parse_args()
    return asyncio.run(Ref(a).run())


if __name__ == "__main__":
    sys.exit(main())
