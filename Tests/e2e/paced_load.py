#!/usr/bin/env python3
"""A paced load process: loadgen.py's requests, checks and records, at a fixed total rate.

`--rate R` requests per second spread over `--keepalive N` pooled keep-alive connections (each on its
own schedule of R/N per second, never bursting to catch up), plus loadgen.py's slow-request loops
(`--slow`), which keep requests in flight across whatever happens meanwhile. Same arguments, result
file and failure kinds as loadgen.py; used by test_reload.py. With `--tls-ca` (and `--sni`) over TLS,
as loadgen.py (test_tls_reload.py). SIGUSR1 ends the load early (every loop stops before its next
request; the result file is written as usual).
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import time

from loadgen import Worker, add_tls_arguments
from records import add_common_arguments, parse


class PacedWorker(Worker):
    async def loop_paced(self, idx: int, per_connection: float) -> None:
        """One keep-alive connection at `per_connection` requests per second."""
        interval = 1.0 / per_connection
        due = self.t_start + idx * interval / max(1, self.args.keepalive)
        conn = None
        for _ in range(100_000_000):
            now = time.monotonic()
            if now >= self.t_stop:
                break
            if due > now:
                await asyncio.sleep(due - now)
            conn = await self.one(conn, "keepalive", self.req_get, b"GET", self.args.timeout, True)
            due = max(due + interval, time.monotonic() - interval)
        if conn is not None:
            conn.close()

    async def loop_newconn_paced(self, rate: float) -> None:
        """A new connection per request, `rate` per second (alternately announcing Connection: close)."""
        interval = 1.0 / rate
        due = self.t_start
        for i in range(100_000_000):
            now = time.monotonic()
            if now >= self.t_stop:
                break
            if due > now:
                await asyncio.sleep(due - now)
            payload = self.req_get_close if i % 2 else self.req_get
            await self.one(None, "newconn", payload, b"GET", self.args.timeout, False)
            due = max(due + interval, time.monotonic() - interval)

    def stop_now(self) -> None:
        self.t_stop = min(self.t_stop, time.monotonic())

    async def run(self) -> None:
        a = self.args
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.stop_now)
        await self.wait_for_start()
        prog = asyncio.get_running_loop().create_task(self.progress())
        tasks = [self.loop_paced(i, a.rate / a.keepalive) for i in range(a.keepalive)]
        tasks += [self.loop_slow(i) for i in range(a.slow)]
        if a.newconn_rate > 0:
            tasks.append(self.loop_newconn_paced(a.newconn_rate))
        await asyncio.gather(*tasks)
        prog.cancel()
        print(self.progress_line(in_progress=0), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(ap)
    ap.add_argument("--rate", type=float, default=1000.0, help="keep-alive requests per second, in total")
    ap.add_argument("--keepalive", type=int, default=16, help="pooled keep-alive connections")
    ap.add_argument("--slow", type=int, default=4, help="slow-request loops")
    ap.add_argument("--newconn-rate", type=float, default=50.0, help="new-connection requests per second")
    add_tls_arguments(ap)
    w = PacedWorker(parse(ap))
    asyncio.run(w.run())
    w.write_result(w.args.out, connections_opened=w.connections_opened, pool_discards=w.pool_discards,
                   connection_close_seen=w.connection_close_seen)


if __name__ == "__main__":
    main()
