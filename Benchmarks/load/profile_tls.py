#!/usr/bin/env python3
"""Where a proxy's CPU goes in one TLS scenario: `perf record` (cpu-clock sampling, user space) of the
proxy while bench.py's load runs against it, then the samples grouped by component.

    python3 Benchmarks/load/profile_tls.py --sluice-bin .build-static/release/sluice --scenario tls-close
    python3 Benchmarks/load/profile_tls.py --proxy nginx --scenario tls-small --seconds 10

The proxy runs as in bench.py's `tls` variant (same certificate, same client offer, pinned to core 1,
load generator and origin on core 0). Components, by symbol: BoringSSL inside Sluice (`CNIOBoringSSL_*`,
swift-nio-ssl's copy), swift-nio-ssl's Swift code (NIOSSL), NIO, the Swift runtime (retain/release,
allocation, metadata), Sluice itself, libc, and the rest; for nginx/HAProxy, by shared object
(libcrypto, libssl, the binary, libc); the kernel (TCP, syscalls) is its own group. Shares are of the
samples of the proxy process (cpu-clock, user and kernel).

Writes `<out>/profile-<proxy>-<scenario>.txt` (the grouped table and the top 40 symbols).
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

GROUPS = [  # (name, regex on the symbol), first match wins
    ("BoringSSL (in Sluice)", r"CNIOBoringSSL|^bssl::"),
    ("NIOSSL (Swift)", r"6NIOSSL|NIOSSL"),
    ("NIO HTTP/2 / nghttp2", r"nghttp2|NIOHTTP2|HTTP2"),
    ("NIO", r"NIOCore|NIOPosix|7NIOCore|8NIOPosix|NIOHTTP1|NIOConcurrencyHelpers"),
    ("Swift runtime and stdlib", r"^swift_|^_swift|^\$ss|^\$sS|swift::|objc_|__swift"),
    ("Sluice", r"Sluice"),
]


BORING_SYMS: set[str] = set()  # every symbol (static ones too) of swift-nio-ssl's BoringSSL objects


def load_boringssl_symbols(binary: Path) -> int:
    """BoringSSL's own function names are mostly unprefixed statics (fiat_*, fe4_*, ...): take them from
    the CNIOBoringSSL object files SwiftPM left next to the binary, when they are there."""
    objs = list((binary.resolve().parent / "CNIOBoringSSL.build").rglob("*.o"))
    for i in range(0, len(objs), 200):
        r = subprocess.run(["nm", "-C", "--defined-only", *map(str, objs[i:i + 200])], capture_output=True,
                           text=True, timeout=120)
        for line in r.stdout.splitlines():  # "ADDR t name(args)": C++ names demangled, as perf shows them
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1].lower() == "t":
                BORING_SYMS.add(parts[2].split("(")[0])
    return len(objs)


def group_of(sym: str, dso: str) -> str:
    if sym in BORING_SYMS or sym.split(".")[0] in BORING_SYMS:
        return "BoringSSL (in Sluice)"
    for name, rx in GROUPS:
        if re.search(rx, sym):
            return name
    d = Path(dso).name
    if d.startswith("[kernel"):
        return "kernel"
    if d.startswith("libcrypto"):
        return "libcrypto (OpenSSL)"
    if d.startswith("libssl"):
        return "libssl (OpenSSL)"
    if d.startswith("libc.") or d.startswith("libc-"):
        return "libc"
    return f"other ({d})" if d else "other"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy", default="sluice", choices=["nginx", "haproxy", "sluice"])
    ap.add_argument("--sluice-bin")
    ap.add_argument("--scenario", default="tls-close", choices=[s for s, v in bench.SCENARIOS.items()
                                                                if v.get("variant") == "tls"])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (apt-get install linux-perf)")
    out = Path(args.out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    bench.PIN_OK = bench.have_two_cores() and bool(shutil.which("taskset"))
    bench.TLS.update(bench.tls_material(work))
    shim = bench.build_tlsstat(work)
    if shim:
        bench.TLS["shim"] = shim
    if args.proxy == "sluice":
        bench.Sluice.binary = str(Path(args.sluice_bin or bench.REPO / ".build-static/release/sluice").resolve())
        if not load_boringssl_symbols(Path(args.sluice_bin or bench.REPO / ".build-static/release/sluice")):
            print("note: no CNIOBoringSSL.build/ next to the binary: BoringSSL's unprefixed functions "
                  "count as `other (sluice)`", file=sys.stderr)
    origin_bin = bench.build_origin(work)
    origin_port = bench.free_port()
    origin = bench.REG.spawn(bench.pinned("0", [str(origin_bin), str(origin_port)]), work / "origin-profile.log")
    if not bench.wait_http(origin_port, "/healthz", time.monotonic() + 10, origin):
        raise SystemExit("origin did not start")
    px, why = bench.start_proxy(args.proxy, work, origin_port, 1, "1", 4096, tag=f"{args.proxy}-tls-profile",
                                variant="tls")
    if not px:
        raise SystemExit(f"{args.proxy}: {why}")
    try:
        bench.warm_up(px, 2, "0", 64)
        pid = px.pids()[-1] if args.proxy == "nginx" else px.proc.pid  # nginx: the worker
        data = out / f"perf-{args.proxy}-{args.scenario}.data"
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", str(data), "-p", str(pid), "--",
                                 "sleep", str(args.seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        sc = bench.SCENARIOS[args.scenario]
        raw = work / f"profile-{args.proxy}-{args.scenario}.txt"
        if sc["tool"] == "h2load":
            res = bench.run_h2load(px.port, sc, args.seconds - 1, 8, 8, raw=raw)
        else:
            res = bench.run_wrk(px.port, sc, args.seconds - 1, 64, raw=raw)
        perf.wait(timeout=args.seconds + 30)
    finally:
        px.stop()
        bench.REG.stop(origin)
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "dso,sym",
                          "-g", "none", "--percent-limit", "0"], capture_output=True, text=True, timeout=300)
    by_group: collections.Counter = collections.Counter()
    top = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        by_group[group_of(sym, dso)] += pct
        top.append((pct, dso, sym))
    lines = [f"{args.proxy} {args.scenario}: {res.get('requests')} requests in {args.seconds - 1}s "
             f"({res.get('rps', 0):.0f}/s), perf cpu-clock 999 Hz, proxy process (user and kernel)", "", "| component | share |", "|---|---|"]
    lines += [f"| {g} | {p:.1f}% |" for g, p in by_group.most_common()]
    lines += ["", "top symbols:"]
    lines += [f"{p:6.2f}%  {Path(d).name:<22} {s[:150]}" for p, d, s in top[:40]]
    text = "\n".join(lines) + "\n"
    (out / f"profile-{args.proxy}-{args.scenario}.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
