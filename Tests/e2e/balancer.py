#!/usr/bin/env python3
"""A TCP "Service" balancer that models kube-proxy for the end-to-end drain tests.

It accepts connections on 127.0.0.1 and splices each one (both directions, half-close aware) to one
of its endpoints, round-robin among the endpoints it currently believes ready. Like kube-proxy:

- it only steers *new* connections: an endpoint's removal never cuts connections already spliced;
- it learns of a pod's termination late: `terminate HOST:PORT` (sent by the harness at the moment the
  pod is signalled) removes the endpoint `--removal-lag` seconds later, whatever the pod's readiness;
- a connection steered to an endpoint that refuses it is reset (as a DNAT'd SYN meeting a closed
  port would be), so the client sees a reset with no response, never a silent retry elsewhere.

Control: one command per line on stdin, answers and events one per line on stdout.

  terminate HOST:PORT   remove the endpoint after --removal-lag seconds
  remove HOST:PORT      remove the endpoint now
  add HOST:PORT         add (or re-add) an endpoint
  stats                 prints "stats <json>"
  quit                  exits

On start-up it prints "listening <port>".

Readiness mode (`--watch HOST:PORT=ADMIN_HOST:ADMIN_PORT`, repeatable): the balancer also polls the
endpoint's `GET /readyz` on its admin address every --ready-interval seconds (default 0.05), as an
endpoints controller following readiness would. Once it answers anything but 200 (503, refused, a
timeout) the balancer emits `not_ready` and removes the endpoint after --removal-lag seconds if it has
not answered 200 in between (the `removed` event then carries `reason: "not-ready"` and
`since_not_ready`, the seconds from the first non-200 answer seen to the removal); when it answers 200
again the endpoint is re-added at once (`added` with `reason: "ready"`). An endpoint told `terminate`
is never re-added by readiness. Every event carries `t`, the balancer's CLOCK_MONOTONIC time (shared
by every process on the host), so a harness can relate it to its own clock.

With --tls-cert/--tls-key it terminates TLS on its listening side (ALPN http/1.1) and splices the
plaintext to the endpoints: a TLS front for a plaintext endpoint (the TLS drain test's new pod).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import struct
import sys
import time

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


def _reset(transport: asyncio.BaseTransport | None) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class Stats:
    def __init__(self) -> None:
        self.accepted = 0
        self.active = 0
        self.by_endpoint: dict[str, int] = {}
        self.refused_by_endpoint: dict[str, int] = {}
        self.active_by_endpoint: dict[str, int] = {}
        self.no_endpoint = 0
        self.client_resets = 0
        self.upstream_resets = 0


class Half(asyncio.Protocol):
    """One side of a spliced pair. `peer` is the other side's Half."""

    def __init__(self, pair: "Pair", name: str) -> None:
        self.pair = pair
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.eof = False          # this side sent us EOF
        self.closed = False
        self.pending: list[bytes] = []   # data from this side before the peer is connected

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.pair.side_connected(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
            return
        if peer.closed:
            return
        peer.transport.write(data)

    def eof_received(self):
        self.eof = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
        self.pair.maybe_finish()
        return True  # keep the transport open for the other direction

    # Flow control: when our *writes* back up, stop reading from the peer.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            try:
                self.peer.transport.resume_reading()
            except RuntimeError:
                pass

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pair.side_lost(self, exc)


class Pair:
    def __init__(self, bal: "Balancer", endpoint: str) -> None:
        self.bal = bal
        self.endpoint = endpoint
        self.client = Half(self, "client")
        self.upstream = Half(self, "upstream")
        self.client.peer = self.upstream
        self.upstream.peer = self.client
        self.done = False

    def side_connected(self, half: Half) -> None:
        if half is self.upstream:
            if self.client.closed:
                half.transport.close()
                return
            # flush what the client sent while we were connecting
            for data in self.client.pending:
                half.transport.write(data)
            self.client.pending.clear()
            if self.client.eof and half.transport.can_write_eof():
                half.transport.write_eof()
            if self.client.transport is not None and not self.client.closed:
                self.client.transport.resume_reading()

    def maybe_finish(self) -> None:
        if self.client.eof and self.upstream.eof:
            self.finish()

    def side_lost(self, half: Half, exc) -> None:
        peer = half.peer
        if exc is not None:
            # an abortive close (reset) travels on as a reset
            if half is self.client:
                self.bal.stats.client_resets += 1
            else:
                self.bal.stats.upstream_resets += 1
            if peer is not None and not peer.closed:
                peer.closed = True
                _reset(peer.transport)
        else:
            if peer is not None and not peer.closed and peer.transport is not None:
                if not half.eof:
                    # closed without an EOF seen: pass a FIN, then close once flushed
                    half.eof = True
                    if peer.transport.can_write_eof():
                        try:
                            peer.transport.write_eof()
                        except (OSError, RuntimeError):
                            pass
                if peer.eof:
                    peer.transport.close()
        if self.client.closed and self.upstream.closed:
            self.finish()

    def finish(self) -> None:
        for h in (self.client, self.upstream):
            if h.transport is not None and not h.closed:
                h.transport.close()
        if not self.done:
            self.done = True
            self.bal.stats.active -= 1
            self.bal.stats.active_by_endpoint[self.endpoint] -= 1


class Balancer:
    def __init__(self, endpoints: list[str], lag: float) -> None:
        self.endpoints = list(endpoints)   # ready endpoints, in order
        self.known = list(endpoints)
        self.lag = lag
        self.terminating: set[str] = set()
        self.last_connection: dict[str, float] = {}   # endpoint -> monotonic time of its last new connection
        self.rr = 0
        self.stats = Stats()
        self.events: list[dict] = []
        self.t0 = time.monotonic()
        for ep in endpoints:
            self.stats.by_endpoint[ep] = 0
            self.stats.refused_by_endpoint[ep] = 0
            self.stats.active_by_endpoint[ep] = 0

    def emit(self, kind: str, **kw) -> None:
        ev = {"event": kind, "t": time.monotonic(), **kw}
        self.events.append(ev)
        print("event " + json.dumps(ev), flush=True)

    def pick(self) -> str | None:
        if not self.endpoints:
            return None
        ep = self.endpoints[self.rr % len(self.endpoints)]
        self.rr += 1
        return ep

    def new_client(self) -> Half:
        ep = self.pick()
        self.stats.accepted += 1
        if ep is None:
            self.stats.no_endpoint += 1
            pair = Pair(self, "none")
            pair.done = True
            h = pair.client
            orig = h.connection_made

            def made(transport, _orig=orig):
                _orig(transport)
                _reset(transport)
            h.connection_made = made
            return h
        self.stats.active += 1
        self.last_connection[ep] = time.monotonic()
        self.stats.by_endpoint[ep] = self.stats.by_endpoint.get(ep, 0) + 1
        self.stats.active_by_endpoint[ep] = self.stats.active_by_endpoint.get(ep, 0) + 1
        pair = Pair(self, ep)
        client = pair.client
        orig = client.connection_made

        def made(transport, _orig=orig, _pair=pair, _ep=ep):
            _orig(transport)
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self.connect_upstream(_pair, _ep))
        client.connection_made = made
        return client

    async def connect_upstream(self, pair: Pair, ep: str) -> None:
        host, port = ep.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: pair.upstream, host, int(port)), timeout=5.0)
        except (OSError, asyncio.TimeoutError):
            self.stats.refused_by_endpoint[ep] = self.stats.refused_by_endpoint.get(ep, 0) + 1
            pair.client.closed = True
            _reset(pair.client.transport)
            pair.upstream.closed = True
            pair.finish()

    def remove(self, ep: str, reason: str, **extra) -> None:
        if ep in self.endpoints:
            self.endpoints.remove(ep)
            self.emit("removed", endpoint=ep, reason=reason,
                      active_connections=self.stats.active_by_endpoint.get(ep, 0), **extra)

    def add(self, ep: str, reason: str = "added") -> None:
        if ep not in self.endpoints:
            self.endpoints.append(ep)
            for d in (self.stats.by_endpoint, self.stats.refused_by_endpoint,
                      self.stats.active_by_endpoint):
                d.setdefault(ep, 0)
            self.emit("added", endpoint=ep, reason=reason)

    async def watch(self, ep: str, admin: str, interval: float) -> None:
        """Readiness mode: poll ADMIN/readyz; remove `ep` after `lag` s of non-200, re-add on 200."""
        host, port = admin.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        ready = True
        not_ready_since: float | None = None
        pending: asyncio.TimerHandle | None = None
        for _ in range(100_000_000):
            status = await probe_readyz(host, int(port), timeout=max(0.5, interval))
            now = time.monotonic()
            if status == 200:
                if not ready:
                    ready = True
                    self.emit("ready", endpoint=ep, not_ready_for=round(now - not_ready_since, 3))
                    not_ready_since = None
                    if pending is not None:
                        pending.cancel()
                        pending = None
                    if ep not in self.terminating:
                        self.add(ep, reason="ready")
            elif ready:
                ready = False
                not_ready_since = now
                self.emit("not_ready", endpoint=ep, status=status, removal_in=self.lag)

                def remove_now(_since=not_ready_since):
                    self.remove(ep, "not-ready", since_not_ready=round(time.monotonic() - _since, 3))
                pending = loop.call_later(self.lag, remove_now)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - now)))

    def snapshot(self) -> dict:
        s = self.stats
        return {
            "ready_endpoints": list(self.endpoints),
            "accepted": s.accepted,
            "active": s.active,
            "connections_by_endpoint": dict(s.by_endpoint),
            "refused_by_endpoint": dict(s.refused_by_endpoint),
            "active_by_endpoint": dict(s.active_by_endpoint),
            "no_endpoint": s.no_endpoint,
            "client_resets": s.client_resets,
            "upstream_resets": s.upstream_resets,
            "last_connection_by_endpoint": dict(self.last_connection),
            "events": self.events,
        }

    async def control(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        for _ in range(1_000_000):
            line = await reader.readline()
            if not line:
                break
            parts = line.decode().split()
            if not parts:
                continue
            cmd, args = parts[0], parts[1:]
            if cmd == "terminate" and args:
                ep = args[0]
                self.terminating.add(ep)
                self.emit("terminating", endpoint=ep, removal_in=self.lag)
                loop.call_later(self.lag, self.remove, ep, "terminated")
            elif cmd == "remove" and args:
                self.remove(args[0], "removed")
            elif cmd == "add" and args:
                self.add(args[0])
            elif cmd == "stats":
                print("stats " + json.dumps(self.snapshot()), flush=True)
            elif cmd == "quit":
                break
            else:
                print("error unknown command " + json.dumps(line.decode().strip()), flush=True)
        stop.set()


async def probe_readyz(host: str, port: int, timeout: float) -> int | str:
    """GET /readyz; the status code, or "refused" / "timeout" / "error"."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split(b" ", 2)
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else "error"
    except ConnectionRefusedError:
        return "refused"
    except asyncio.TimeoutError:
        return "timeout"
    except OSError:
        return "error"
    finally:
        if writer is not None:
            writer.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--endpoint", action="append", default=[], help="HOST:PORT, repeatable")
    ap.add_argument("--removal-lag", type=float, default=3.0,
                    help="seconds from 'terminate' to removal (kube-proxy propagation)")
    ap.add_argument("--tls-cert", default=None, help="terminate TLS with this certificate (PEM)")
    ap.add_argument("--tls-key", default=None, help="and this key (PEM)")
    ap.add_argument("--watch", action="append", default=[], metavar="HOST:PORT=ADMIN_HOST:ADMIN_PORT",
                    help="readiness mode for this endpoint: poll ADMIN/readyz, remove it --removal-lag s "
                         "after it stops answering 200, re-add it when it answers 200 again")
    ap.add_argument("--ready-interval", type=float, default=0.05, help="readiness poll interval (s)")
    args = ap.parse_args()
    watches = []
    for w in args.watch:
        ep, sep, admin = w.partition("=")
        if not sep or ":" not in ep or ":" not in admin:
            ap.error(f"--watch {w!r}: expected HOST:PORT=ADMIN_HOST:ADMIN_PORT")
        watches.append((ep, admin))

    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        tls.set_alpn_protocols(["http/1.1"])
    bal = Balancer(args.endpoint, args.removal_lag)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(bal.new_client, args.host, args.port,
                                      backlog=4096, reuse_address=True, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    stop = asyncio.Event()
    ctl = loop.create_task(bal.control(stop))
    watchers = [loop.create_task(bal.watch(ep, admin, args.ready_interval)) for ep, admin in watches]
    await stop.wait()
    server.close()
    ctl.cancel()
    for w in watchers:
        w.cancel()
    print("stats " + json.dumps(bal.snapshot()), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
