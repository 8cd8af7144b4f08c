"""What the e2e load processes (loadgen.py for HTTP/1.1, h2client.py for HTTP/2) share: the failure
type, the per-request record, the expected bodies of origin.py, progress lines and the result file.

A record is [t_start, t_end, kind, outcome, served_by, reused_connection, connection_close]; outcome
is "ok" or the failure's kind. rolling_update.py reads the result files.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time


class Failure(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.detail = detail


class Recorder:
    """Counts and records requests; base of each load process's Worker."""

    def __init__(self, args) -> None:
        self.args = args
        self.names = set(args.names.split(","))
        self.t_start = args.start
        self.t_stop = args.start + args.duration
        self.records: list[list] = []
        self.ok = 0
        self.fail = 0
        self.fail_kinds: dict[str, int] = {}
        self.fail_examples: list[dict] = []
        self.rnd = random.Random(args.seed)
        self.upload_body = self.rnd.randbytes(args.upload_kib * 1024)
        self.upload_expect = b"len=%d sha256=%s\n" % (
            len(self.upload_body), hashlib.sha256(self.upload_body).hexdigest().encode())

    def expected_body(self, kind: str, served: str) -> bytes:
        """What origin.py answers a request of `kind` (get, slow, upload, stream) with."""
        sb = served.encode()
        if kind == "get":
            return b"hello from " + sb + b"\n"
        if kind == "slow":
            return b"slow %d from %s\n" % (self.args.slow_ms, sb)
        if kind == "upload":
            return self.upload_expect
        if kind == "stream":
            n = self.args.stream_chunks
            return b"".join(b"chunk %d/%d from %s\n" % (i, n, sb) for i in range(n))
        raise AssertionError(kind)

    def check(self, kind: str, status: int, served: str, body: bytes) -> str:
        """Returns the origin name that served the response, or raises Failure."""
        if status != 200:
            raise Failure(f"status_{status}", body[:200].decode("latin-1"))
        if served not in self.names:
            raise Failure("bad_body", f"unknown or missing X-Origin {served!r}")
        if body != self.expected_body(kind, served):
            raise Failure("bad_body", f"got {body[:120]!r}")
        return served

    def record(self, ts: float, kind: str, outcome: str, served: str, reused: bool,
               detail: str = "", close: bool = False) -> None:
        te = time.monotonic()
        self.records.append([round(ts, 6), round(te, 6), kind, outcome, served, reused, close])
        if outcome == "ok":
            self.ok += 1
        else:
            self.fail += 1
            self.fail_kinds[outcome] = self.fail_kinds.get(outcome, 0) + 1
            if self.fail_kinds[outcome] <= 5:  # the first few of each kind
                self.fail_examples.append({"t": te, "t_start": ts, "client": kind, "kind": outcome,
                                           "detail": detail[:300], "reused_connection": reused})

    def progress_line(self, **extra) -> str:
        return "progress " + json.dumps({"t": time.monotonic(), "ok": self.ok, "fail": self.fail, **extra})

    async def progress(self) -> None:
        for _ in range(100_000):
            print(self.progress_line(**self.progress_extra()), flush=True)
            await asyncio.sleep(0.5)

    def progress_extra(self) -> dict:
        return {}

    async def wait_for_start(self) -> None:
        delay = self.t_start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def write_result(self, out: str, **extra) -> None:
        result = {"pid": os.getpid(), "ok": self.ok, "fail": self.fail, "fail_kinds": self.fail_kinds,
                  "fail_examples": self.fail_examples, "records": self.records, **extra}
        tmp = out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.replace(tmp, out)
        print("done", flush=True)


def add_common_arguments(ap) -> None:
    """The options both load processes take."""
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--names", default="A,B", help="origin names a response may come from")
    ap.add_argument("--start", type=float, default=None, help="CLOCK_MONOTONIC time to start at")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--slow-ms", type=int, default=3000)
    ap.add_argument("--stream-chunks", type=int, default=20)
    ap.add_argument("--stream-interval-ms", type=int, default=100)
    ap.add_argument("--upload-kib", type=int, default=256)
    ap.add_argument("--upload-interval-ms", type=int, default=100, help="pause between uploads")
    ap.add_argument("--think-ms", type=float, default=20.0, help="max random pause between GETs")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout (s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="where to write the JSON records")


def parse(ap):
    args = ap.parse_args()
    if args.start is None:
        args.start = time.monotonic()
    return args
