#!/usr/bin/env python3
"""The app Sluice supervises in the supervisor-mode tests (`sluice ... -- python3 supervisor_app.py ...`).

A stdlib HTTP/1.1 server (ThreadingHTTPServer, keep-alive) on 127.0.0.1 only. Endpoints (every response
carries "X-Origin: <--name>", and the bodies are origin.py's, so loadgen.py checks them the same way):

  GET  /                                  -> 200 "hello from <name>\\n"
  GET  /slow?ms=N                         -> after N ms, 200 "slow <N> from <name>\\n"
  POST /upload                            -> 200 "len=<bytes> sha256=<hex>\\n" (Content-Length or chunked)
  GET  /stream?chunks=N&interval_ms=M     -> chunked, "chunk <i>/<N> from <name>\\n" every M ms
  GET  /healthz                           -> 200 "ok\\n", or 503 "starting\\n" until --ready-after
  GET  /spawn?life_ms=N                   -> forks an orphan (see --spawn-orphan); 200 "<orphan pid>\\n"
  GET  /stats                             -> {"in_flight": N, "requests": N, ...} (not counted itself)
  anything else                           -> 404

Modes:
  (default)            on SIGTERM: record it, stop serving, exit 0
  --exit-code N        on SIGTERM: exit N instead
  --ignore-term        SIGTERM is recorded and otherwise ignored (only SIGKILL ends it)
  --crash-after S      exits on its own with --crash-code (default 7) S seconds after start
  --ready-after S      /healthz answers 503 for the first S seconds
  --spawn-orphan       at start, forks a child that forks a grandchild and exits at once: the grandchild
                       is orphaned (reparented to the nearest subreaper, or PID 1), records its parent,
                       lives --orphan-life-ms and exits; whoever adopted it must reap it
  --die-on SIG         leaves SIG (e.g. TERM, USR2) at its default action: the app dies of it, unrecorded
  --check-port P       at start, records whether 127.0.0.1:P accepts a connection (Sluice's listener)
  --record-env NAME    at start, records the value of the environment variable NAME
Every other catchable signal among HUP, INT, QUIT, USR1, USR2, WINCH, ALRM is recorded and ignored
(INT and QUIT are treated as TERM).

--record FILE gets one JSON object per line (appended with one write each, so readers never see half a
line): {"event": "start"|"ready"|"signal"|"crash"|"exit"|"orphan"|"orphan-exit", "pid", "ppid", "pgid",
"wall", "mono", ...}; "signal" lines name the signal and how many requests were in flight when it came,
and the wall/monotonic time the last response finished. `wall` is time.time(), `mono` CLOCK_MONOTONIC
(system-wide, so comparable with the test's time.monotonic()).

The port: --port, else $PORT, else $APP_PORT. Prints "app listening <port> pid <pid>" on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_SLOW_MS = 60_000
MAX_CHUNKS = 10_000
MAX_BODY = 64 << 20

RECORDED_SIGNALS = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGALRM")


class Recorder:
    """Appends JSON lines to the record file (no file: records go nowhere)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, event: str, **fields) -> None:
        if not self.path:
            return
        rec = {"event": event, "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
               "wall": time.time(), "mono": time.monotonic(), **fields}
        data = (json.dumps(rec) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


class State:
    def __init__(self, args) -> None:
        self.args = args
        self.name = args.name.encode()
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0
        self.last_response_wall: float | None = None
        self.last_response_mono: float | None = None
        self.rec = Recorder(args.record)
        self.ready_recorded = False

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.requests += 1

    def end(self) -> None:
        with self.lock:
            self.in_flight -= 1
            self.last_response_wall = time.time()
            self.last_response_mono = time.monotonic()

    def snapshot(self) -> dict:
        with self.lock:
            return {"in_flight": self.in_flight, "requests": self.requests,
                    "last_response_wall": self.last_response_wall, "last_response_mono": self.last_response_mono}


STATE: State | None = None


def spawn_orphan(life_ms: int) -> int:
    """Forks a child that forks a grandchild and exits at once; reaps the child; returns the grandchild's pid.

    The grandchild waits until its parent is gone (it is then an orphan, adopted by the nearest subreaper
    or PID 1), records who adopted it, lives `life_ms` and exits without anyone in this process waiting."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the child
        try:
            os.close(r)
            me = os.getpid()
            grandchild = os.fork()
            if grandchild == 0:
                try:
                    os.close(w)  # else the app's read below would wait for this process's end
                    for name in RECORDED_SIGNALS:  # the app's group signals are the app's business
                        signal.signal(getattr(signal, name), signal.SIG_IGN)
                    rec = Recorder(STATE.args.record)  # a fresh lock: another thread may hold the old one
                    deadline = time.monotonic() + 5.0
                    while os.getppid() == me and time.monotonic() < deadline:
                        time.sleep(0.005)
                    rec.write("orphan", adopted_by=os.getppid(), life_ms=life_ms)
                    time.sleep(life_ms / 1000.0)
                    rec.write("orphan-exit")
                finally:
                    os._exit(0)
            os.write(w, b"%d\n" % grandchild)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.readline()
    os.waitpid(child, 0)
    return int(data.strip() or b"0")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "supervisor-app"
    sys_version = ""

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass  # stderr is Sluice's: keep it for Sluice's own log lines

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Origin", STATE.name.decode())
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> tuple[int, str]:
        h = hashlib.sha256()
        total = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            for _ in range(10_000_000):
                line = self.rfile.readline(1024)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    for _ in range(1000):
                        if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                h.update(self.rfile.read(size))
                self.rfile.readline(8)
        else:
            n = int(self.headers.get("Content-Length", "0") or "0")
            if n < 0 or n > MAX_BODY:
                raise ValueError("bad content-length")
            remaining = n
            while remaining > 0:
                data = self.rfile.read(min(remaining, 256 * 1024))
                if not data:
                    raise ConnectionError("eof in body")
                h.update(data)
                remaining -= len(data)
            total = n
        return total, h.hexdigest()

    def _query(self) -> tuple[str, dict]:
        u = urlsplit(self.path)
        return u.path, parse_qs(u.query)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if self.path == "/stats":
            self._send(200, json.dumps(STATE.snapshot()).encode(), "application/json")
            return
        STATE.begin()
        try:
            self._get()
        finally:
            STATE.end()

    def do_POST(self) -> None:  # noqa: N802
        STATE.begin()
        try:
            path, _ = self._query()
            try:
                n, digest = self._read_body()
            except (ValueError, ConnectionError):
                self.close_connection = True
                self._send(400, b"bad body\n")
                return
            if path == "/upload":
                self._send(200, b"len=%d sha256=%s\n" % (n, digest.encode()))
            else:
                self._send(404, b"not found\n")
        finally:
            STATE.end()

    def _get(self) -> None:
        path, q = self._query()
        name = STATE.name
        if path == "/":
            self._send(200, b"hello from " + name + b"\n")
        elif path == "/slow":
            ms = max(0, min(MAX_SLOW_MS, int(q.get("ms", ["1000"])[0])))
            time.sleep(ms / 1000.0)
            self._send(200, b"slow %d from %s\n" % (ms, name))
        elif path == "/healthz":
            if time.monotonic() - STATE.started >= STATE.args.ready_after:
                if not STATE.ready_recorded:
                    STATE.ready_recorded = True
                    STATE.rec.write("ready", after=round(time.monotonic() - STATE.started, 3))
                self._send(200, b"ok\n")
            else:
                self._send(503, b"starting\n")
        elif path == "/spawn":
            life = max(0, min(MAX_SLOW_MS, int(q.get("life_ms", [str(STATE.args.orphan_life_ms)])[0])))
            self._send(200, b"%d\n" % spawn_orphan(life))
        elif path == "/stream":
            n = max(0, min(MAX_CHUNKS, int(q.get("chunks", ["20"])[0])))
            interval = max(0, min(MAX_SLOW_MS, int(q.get("interval_ms", ["100"])[0]))) / 1000.0
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Origin", name.decode())
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            for i in range(n):
                line = b"chunk %d/%d from %s\n" % (i, n, name)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                if i + 1 < n:
                    time.sleep(interval)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"not found\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main() -> int:
    global STATE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("PORT") or os.environ.get("APP_PORT") or 0))
    ap.add_argument("--name", default="A", help="X-Origin and the bodies' name")
    ap.add_argument("--record", default=os.environ.get("APP_RECORD"), help="JSON-lines event file")
    ap.add_argument("--exit-code", type=int, default=0, help="exit status after SIGTERM")
    ap.add_argument("--ignore-term", action="store_true", help="record SIGTERM and keep running")
    ap.add_argument("--crash-after", type=float, default=None, help="exit on its own after this many seconds")
    ap.add_argument("--crash-code", type=int, default=7)
    ap.add_argument("--ready-after", type=float, default=0.0, help="/healthz is 503 for this many seconds")
    ap.add_argument("--spawn-orphan", action="store_true", help="fork an orphaned grandchild at start")
    ap.add_argument("--orphan-life-ms", type=int, default=500)
    ap.add_argument("--die-on", action="append", default=[], help="a signal left at its default action")
    ap.add_argument("--check-port", type=int, default=None, help="record whether this port accepts at start")
    ap.add_argument("--record-env", action="append", default=[], help="record this environment variable")
    args = ap.parse_args()
    STATE = State(args)
    rec = STATE.rec

    stop = threading.Event()
    got = {"signal": None}

    def on_signal(signum, _frame) -> None:
        name = signal.Signals(signum).name
        snap = STATE.snapshot()
        rec.write("signal", signal=name, **snap)
        if name in ("SIGTERM", "SIGINT", "SIGQUIT") and not args.ignore_term:
            got["signal"] = name
            stop.set()

    die_on = {("SIG" + d.upper()).replace("SIGSIG", "SIG") for d in args.die_on}
    for name in RECORDED_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_DFL if name in die_on else on_signal)

    port_open = None
    if args.check_port is not None:
        try:
            socket.create_connection(("127.0.0.1", args.check_port), timeout=1).close()
            port_open = True
        except OSError:
            port_open = False

    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    rec.write("start", port=port, argv=sys.argv[1:], port_open=port_open,
              env={n: os.environ.get(n) for n in args.record_env}, mode={
        "exit_code": args.exit_code, "ignore_term": args.ignore_term, "crash_after": args.crash_after,
        "ready_after": args.ready_after, "spawn_orphan": args.spawn_orphan})
    print(f"app listening {port} pid {os.getpid()}", flush=True)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()

    if args.spawn_orphan:
        rec.write("spawned", orphan=spawn_orphan(args.orphan_life_ms))

    timeout = args.crash_after
    # The main thread only waits: signal handlers run here, never inside the server's threads.
    if timeout is not None:
        if not stop.wait(timeout):
            rec.write("crash", code=args.crash_code, **STATE.snapshot())
            os._exit(args.crash_code)
    else:
        for _ in range(10**9):
            if stop.wait(3600):
                break
    server.shutdown()
    server.server_close()
    code = args.exit_code
    rec.write("exit", code=code, on=got["signal"], **STATE.snapshot())
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
