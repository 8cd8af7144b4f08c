#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: a repeatable A/B of Sluice builds.

The load benchmark (bench.py) measures CPU seconds, which swing by 20% between rounds on a shared
2-core machine. An instruction count does not: the same binary, requests and environment give the
same count whatever else the machine does. For each binary and traffic shape this runs Sluice
under `valgrind --tool=callgrind` twice, with N1 and N2 requests (h2load, one connection at a time
so the work per request does not depend on timing), and reports (I(N2) - I(N1)) / (N2 - N1):
the instructions one request costs, start-up and shutdown cancelling out.

Usage:
  python3 Benchmarks/load/instructions.py --bin A=path/to/sluice --bin B=path/to/other \\
      [--scenarios small,4k,post4k,h2,edge] [--requests 2000,6000]

Needs valgrind, h2load (nghttp2-client) and a C compiler (the origin); loopback only; each run is
bounded in time. Prints progress, then a table (instructions per request, and B/A).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import EDGE_HOST, sluice_edge_yaml  # noqa: E402  (the edge scenario's routes, written once)
SCENARIOS = {
    # name: (h2load protocol flags, path, extra h2load args)
    "small": (["--h1"], "/small", []),
    "4k": (["--h1"], "/4k", []),
    "post4k": (["--h1"], "/echo", ["-d", "{body}"]),
    "h2": ([], "/small", []),
    # bench.py's edge scenario: 20 routes, the last one matches, a group of 3 origins, least-request.
    "edge": (["--h1"], "/small", ["-H", f":authority: {EDGE_HOST}"]),  # h2load: `host:` would add a second Host
}


def log(msg: str) -> None:
    print(msg, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def build_origin(work: Path) -> Path:
    out = work / "origin"
    subprocess.run(["cc", "-O2", "-o", str(out), str(HERE / "origin.c")], check=True, timeout=120)
    return out


def instructions(binary: str, scenario: str, requests: int, origin_ports: list[int], work: Path, body: Path) -> int:
    proto, path, extra = SCENARIOS[scenario]
    port, admin = free_port(), free_port()
    if scenario == "edge":
        config = work / "edge.yaml"
        config.write_text(sluice_edge_yaml(origin_ports))
        upstream = ["--config", str(config)]
    else:
        upstream = ["--upstream", f"http://127.0.0.1:{origin_ports[0]}"]
    out = work / f"callgrind.{os.getpid()}.{scenario}.{requests}.{Path(binary).parent.name}"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
           binary, "--listen", f"127.0.0.1:{port}", *upstream,
           "--admin", f"127.0.0.1:{admin}", "--threads", "1", "--log-level", "error",
           "--drain-delay", "0s", "--drain-timeout", "5s"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, time.monotonic() + 120):
            raise SystemExit(f"{binary} did not start under valgrind")
        args = ["h2load"] + proto + ["-n", str(requests), "-c", "1", "-m", "1", "-t", "1"]
        args += [a.replace("{body}", str(body)) for a in extra] + [f"http://127.0.0.1:{port}{path}"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=600)
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", r.stdout)
        ok = re.search(r"status codes: (\d+) 2xx", r.stdout)
        if not done or int(done.group(2)) != requests or not ok or int(ok.group(1)) != requests:
            raise SystemExit(f"h2load did not complete {requests} requests with 2xx:\n{r.stdout[-600:]}{r.stderr[-300:]}")
    finally:
        proc.send_signal(signal.SIGQUIT)  # stop at once: no drain to count
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = out.read_text(errors="replace")
    out.unlink(missing_ok=True)
    total = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if not total:
        raise SystemExit(f"no totals in callgrind output for {binary}")
    return int(total.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", action="append", required=True, metavar="NAME=PATH", help="a build to measure (repeat)")
    ap.add_argument("--scenarios", default="small,4k,post4k,h2")
    ap.add_argument("--requests", default="2000,6000", help="the two request counts (default %(default)s)")
    args = ap.parse_args()
    bins = [tuple(b.split("=", 1)) for b in args.bin]
    n1, n2 = (int(x) for x in args.requests.split(","))
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    with tempfile.TemporaryDirectory(prefix="sluice-instr-") as tmp:
        work = Path(tmp)
        body = work / "body"
        body.write_bytes(b"x" * 4096)
        origin_bin = build_origin(work)
        origin_ports = [free_port() for _ in range(3 if "edge" in scenarios else 1)]
        origins = [subprocess.Popen([str(origin_bin), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for port in origin_ports]
        try:
            for port in origin_ports:
                if not wait_port(port, time.monotonic() + 10):
                    raise SystemExit("origin did not start")
            rows = []
            for s in scenarios:
                per = {}
                for name, path in bins:
                    t0 = time.monotonic()
                    a = instructions(path, s, n1, origin_ports, work, body)
                    b = instructions(path, s, n2, origin_ports, work, body)
                    per[name] = (b - a) / (n2 - n1)
                    log(f"  {s:<7} {name:<10} {per[name]:>10.0f} instructions/request  ({time.monotonic() - t0:.0f} s)")
                rows.append((s, per))
        finally:
            for origin in origins:
                origin.terminate()
                origin.wait(timeout=10)
    names = [n for n, _ in bins]
    hdr = ["scenario"] + [f"{n} instr/req" for n in names] + [f"{n}/{names[0]}" for n in names[1:]]
    lines = []
    for s, per in rows:
        lines.append([s] + [f"{per[n]:.0f}" for n in names] + [f"{per[n] / per[names[0]]:.3f}" for n in names[1:]])
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *lines)]
    fmt = lambda cols: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cols, widths)) + " |"
    print()
    print(fmt(hdr))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(fmt(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
