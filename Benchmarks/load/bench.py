#!/usr/bin/env python3
"""Load benchmark: Sluice vs nginx vs HAProxy on one machine.

Usage:
    python3 Benchmarks/load/bench.py [--quick] [--sluice-bin PATH] [--out DIR]
                                     [--scaling] [--idle-conns [N]]

Every proxy runs with one worker/thread pinned to core 1 and proxies to the
same C origin (origin.c) pinned to core 0, where the load generator (wrk, or
h2load for HTTP/2) also runs. Targets are alternated within every round and the
medians across rounds are reported. See README.md next to this file.

Only 127.0.0.1 is ever contacted; every load run is bounded in time.
"""
from __future__ import annotations

import argparse
import atexit
import ctypes
import datetime as _dt
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROXIES = ["nginx", "haproxy", "sluice"]

# name -> description of one benchmark cell
SCENARIOS = {
    "small": {"tool": "wrk", "path": "/small", "desc": "GET, 13-byte body, keep-alive"},
    "4k": {"tool": "wrk", "path": "/4k", "desc": "GET, 4 KiB body, keep-alive"},
    "64k": {"tool": "wrk", "path": "/64k", "desc": "GET, 64 KiB body, keep-alive"},
    "post4k": {"tool": "wrk", "path": "/echo", "lua": "post4k.lua", "desc": "POST 4 KiB, echoed, keep-alive"},
    "close": {"tool": "wrk", "path": "/small", "headers": ["Connection: close"],
              "desc": "GET small, Connection: close on every request"},
    "h2": {"tool": "h2load", "path": "/small", "desc": "h2c prior knowledge, GET small"},
    # Its own proxy instances (the `edge` variant): 20 routes, groups of 3 origins, least-request;
    # the benchmarked requests match only the last route. Compared with each proxy's own `small`.
    "edge": {"tool": "wrk", "path": "/small", "headers": ["Host: www.edge.bench"], "variant": "edge", "base": "small",
             "desc": "GET small through 20 routes (host and path-prefix; the last one matches) to a group "
                     "of 3 endpoints, least-request"},
    # Its own proxy instances (the `ws` variant) in front of the WebSocket echo origin of ws.c, and
    # `direct` (the load generator straight to that origin) for reference. "req/s" is messages/s here:
    # echo round trips of 64-byte binary messages on --ws-connections sessions.
    "ws": {"tool": "wsload", "path": "/ws", "variant": "ws",
           "desc": "WebSocket sessions echoing 64-byte binary messages (ws.c client and origin); "
                   "req/s = messages/s, CPU per 10k messages"},
    # Its own proxy instances (the `tls` variant): each proxy terminates TLS on one port with the same
    # ECDSA P-256 certificate (tls_material()) and proxies plaintext HTTP/1.1 to the same origin as the
    # other scenarios. Clients: TLS 1.3, TLS_AES_128_GCM_SHA256, X25519 only (client_openssl_conf()),
    # counted by tlsstat.c. `base`: the plaintext scenario the "CPU/own base" column divides by.
    "tls-small": {"tool": "wrk", "path": "/small", "variant": "tls", "base": "small",
                  "desc": "GET small over TLS 1.3, keep-alive (wrk over https)"},
    # tls-close: full handshakes (tlsstat.c stops wrk from offering its last session again); tls-resume:
    # the same with wrk's own behaviour, which resumes nearly every time (tickets; on in all three proxies).
    "tls-close": {"tool": "wrk", "path": "/small", "headers": ["Connection: close"], "variant": "tls", "base": "close",
                  "no_resume": True,
                  "desc": "GET small over TLS 1.3, Connection: close: a new TLS connection and full handshake per request"},
    "tls-resume": {"tool": "wrk", "path": "/small", "headers": ["Connection: close"], "variant": "tls", "base": "close",
                   "desc": "as tls-close, but wrk resumes the previous session (TLS 1.3 ticket, PSK with X25519)"},
    "tls-h2": {"tool": "h2load", "path": "/small", "variant": "tls", "base": "h2",
               "desc": "HTTP/2 over TLS 1.3 (h2 by ALPN), GET small"},
}
# Pseudo-proxy measured only in the `ws` scenario: no proxy, the reference for what the origin and
# load generator can do.
DIRECT = "direct"

# --------------------------------------------------------------------------------------
# the edge variant: one routing table, written for each proxy
#
# Routes, in order (first match wins; nginx's server_name/location and HAProxy's use_backend rules are
# written to mean the same):
#   0-9    host svc<i>.edge.bench and path-prefix /svc<i>/   -> group g<i % 4>
#   10-18  path-prefix /api<i>/ (any host)                    -> group g<i % 4>
#   19     host *.edge.bench (any path)                       -> group g3
# Every group has the same 3 origins (in a rotated order) and balances least-request. The benchmark
# sends Host www.edge.bench, GET /small: 19 routes are tried and fail, the 20th matches.
EDGE_GROUPS = 4
EDGE_HOST = "www.edge.bench"


def edge_routes() -> list[dict]:
    routes = [{"host": f"svc{i}.edge.bench", "prefix": f"/svc{i}/", "group": f"g{i % EDGE_GROUPS}"} for i in range(10)]
    routes += [{"host": None, "prefix": f"/api{i}/", "group": f"g{i % EDGE_GROUPS}"} for i in range(10, 19)]
    routes.append({"host": "*.edge.bench", "prefix": "/", "group": f"g{EDGE_GROUPS - 1}"})
    return routes


def edge_group_ports(origin_ports: list[int], g: int) -> list[int]:
    k = g % len(origin_ports)
    return origin_ports[k:] + origin_ports[:k]


def sluice_edge_yaml(origin_ports: list[int]) -> str:
    """`edge_routes()` as Sluice's YAML (`upstreams:` groups and `routes:`, DESIGN.md §5); listen,
    admin and the rest come as flags, as in the default variant. instructions.py uses it too."""
    lines = ["# generated by bench.py: the edge scenario's routes (see edge_routes())", "upstreams:"]
    for g in range(EDGE_GROUPS):
        endpoints = ", ".join(f"http://127.0.0.1:{p}" for p in edge_group_ports(origin_ports, g))
        lines += [f"  g{g}:", f"    endpoints: [{endpoints}]", "    balance: least-request"]
    lines.append("routes:")
    for r in edge_routes():
        lines.append(f"  - host: \"{r['host']}\"" if r["host"] else f"  - path-prefix: {r['prefix']}")
        if r["host"]:
            lines.append(f"    path-prefix: {r['prefix']}")
        lines.append(f"    upstream: {r['group']}")
    return "\n".join(lines) + "\n"

# --------------------------------------------------------------------------------------
# the tls variant: one certificate for all three proxies, one client configuration for all loads
#
# tls_material() makes, with the openssl CLI, into <out>/work/tls/ (fresh every run, never committed):
# a CA (ECDSA P-256) and a leaf for DNS:localhost and IP:127.0.0.1 (ECDSA P-256, signed by the CA).
# Every proxy serves the leaf alone (no chain: the same bytes on the wire for all three), nginx and Sluice
# from server.pem + server.key, HAProxy from server-haproxy.pem (the two concatenated, as it wants).
# The probes trust the CA and check the name; wrk and h2load do not verify (neither can), the same for
# every proxy. The loads connect to https://localhost:PORT (localhost is 127.0.0.1 here), so the
# ClientHello carries SNI "localhost", as a real client's would.
TLS: dict[str, Path] = {}  # ca, cert, key, pem, client_conf, shim; filled by tls_material() in main()
TLS_HOST = "localhost"
TLS_CIPHERSUITE = "TLS_AES_128_GCM_SHA256"
TLS_GROUP = "X25519"


def tls_material(work: Path) -> dict[str, Path]:
    d = work / "tls"
    d.mkdir(parents=True, exist_ok=True)
    ossl = shutil.which("openssl")
    if not ossl:
        raise Unavailable("the openssl CLI is not installed (apt-get install openssl)")

    def run(*cmd: str) -> None:
        r = subprocess.run([ossl, *cmd], capture_output=True, text=True, timeout=60, cwd=d)
        if r.returncode != 0:
            raise Unavailable(f"openssl {' '.join(cmd[:2])} failed: {(r.stderr or r.stdout).strip()[-300:]}")

    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    run("genpkey", *ec, "-out", "ca.key")
    run("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "30", "-subj", "/CN=bench.py test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.pem")
    run("genpkey", *ec, "-out", "server.key")
    run("req", "-new", "-key", "server.key", "-subj", f"/CN={TLS_HOST}", "-out", "server.csr")
    (d / "server.ext").write_text(f"subjectAltName=DNS:{TLS_HOST},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
        str(int.from_bytes(os.urandom(8), "big")), "-days", "30", "-sha256", "-extfile", "server.ext",
        "-out", "server.pem")
    (d / "server-haproxy.pem").write_text((d / "server.pem").read_text() + (d / "server.key").read_text())
    for f in ("ca.key", "server.key", "server-haproxy.pem"):
        os.chmod(d / f, 0o600)
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key", "pem": d / "server-haproxy.pem",
            "client_conf": client_openssl_conf(d)}


def client_openssl_conf(d: Path) -> Path:
    """OPENSSL_CONF for wrk and h2load (OpenSSL applies `system_default` to every SSL_CTX they make): they
    offer only TLS 1.3, TLS_AES_128_GCM_SHA256 and X25519, so every proxy negotiates the same version,
    suite and group (h2load overrides suites and groups with its own defaults: H2LOAD_TLS_FLAGS). With
    a wider offer the choice differs by server: nginx takes the client's order, HAProxy its own."""
    path = d / "openssl-client.cnf"
    path.write_text(f"""# generated by bench.py: the load generators' TLS offer in the tls-* scenarios
openssl_conf = bench_init
[bench_init]
ssl_conf = bench_ssl
[bench_ssl]
system_default = bench_client
[bench_client]
MinProtocol = TLSv1.3
Ciphersuites = {TLS_CIPHERSUITE}
Groups = {TLS_GROUP}
""")
    return path


# h2load sets its own TLS 1.3 suites and groups (over OPENSSL_CONF's): the same offer, by its flags.
H2LOAD_TLS_FLAGS = [f"--tls13-ciphers={TLS_CIPHERSUITE}", f"--groups={TLS_GROUP}"]


def tls_client_env(no_resume: bool = False) -> dict[str, str]:
    """The environment of a load generator in a tls-* cell: the client OpenSSL config, and the
    handshake counter (tlsstat.c) if it was built; with `no_resume`, full handshakes only."""
    env = dict(os.environ, OPENSSL_CONF=str(TLS["client_conf"]))
    if TLS.get("shim"):
        env["LD_PRELOAD"] = str(TLS["shim"])
        env["TLSSTAT_NO_RESUME"] = "1" if no_resume else "0"
    return env


def parse_tlsstat(out: str) -> dict:
    """tlsstat.c's line: handshakes the client completed, how many resumed a session, and the version,
    cipher suite and ALPN protocol of the last one."""
    m = re.search(r"tlsstat: handshakes=(\d+) resumed=(\d+) version=(\S+) cipher=(\S+) alpn=(\S+)", out)
    if not m:
        return {}
    return {"handshakes": int(m.group(1)), "resumed": int(m.group(2)), "tls_version": m.group(3),
            "cipher": m.group(4), "alpn": m.group(5)}


_TLS_CTX: dict = {}


def tls_client_context(alpn: tuple[str, ...] = ()):
    """The probes' client: trusts the run's CA, checks the name, TLS 1.2 or 1.3; one context per ALPN
    offer (a session resumes only within its own context)."""
    import ssl
    if alpn not in _TLS_CTX:
        ctx = ssl.create_default_context(cafile=str(TLS["ca"]))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        _TLS_CTX[alpn] = ctx
    return _TLS_CTX[alpn]


def tls_facts(port: int) -> dict:
    """What a proxy's TLS listener does with a default Python (OpenSSL) client that trusts the CA:
    the certificate verifies for `localhost`; the version and suite the server picks from a default offer;
    ALPN h2 and http/1.1; and whether a second connection resumes the first one's session (ticket). Recorded
    in results.json per proxy; `error` if any of it failed."""
    import ssl
    facts: dict = {}
    req = f"GET /small HTTP/1.1\r\nHost: {TLS_HOST}\r\nConnection: close\r\n\r\n".encode()

    def get(session=None, alpn=("http/1.1",)):
        raw = socket.create_connection(("127.0.0.1", port), timeout=3)
        s = tls_client_context(alpn).wrap_socket(raw, server_hostname=TLS_HOST, session=session)
        try:
            if alpn == ("http/1.1",):
                s.sendall(req)
                buf = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                facts.setdefault("status_line", buf.split(b"\r\n", 1)[0].decode("latin-1"))
            return s.version(), s.cipher()[0], s.selected_alpn_protocol(), s.session, s.session_reused
        finally:
            s.close()
    try:
        _, _, h2, _, _ = get(alpn=("h2", "http/1.1"))
        version, cipher, alpn, session, _ = get()
        _, _, _, _, reused = get(session=session)
        facts.update(version_default_client=version, cipher_default_client=cipher, alpn_h2_offer=h2,
                     alpn_http11_offer=alpn, resumes_session=reused)
    except (OSError, ssl.SSLError, ValueError) as e:
        facts["error"] = repr(e)
    return facts


# --------------------------------------------------------------------------------------
# small helpers


def log(msg: str = "") -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_two_cores() -> bool:
    try:
        return len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)
    except AttributeError:
        return (os.cpu_count() or 1) >= 2


PIN_OK = False  # set in main()
NOFILE = 20000  # RLIMIT_NOFILE the proxies inherit; set in main()


def pinned(core: str | None, cmd: list[str]) -> list[str]:
    if core is None or not PIN_OK or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", core] + cmd


_libc = None


def _pdeathsig() -> None:
    """preexec_fn: children get SIGTERM if this script dies, so nothing is left behind."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ProcRegistry:
    """Every long-running process this script starts; stopped by PID at exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, cmd: list[str], log_path: Path, **kw) -> subprocess.Popen:
        f = open(log_path, "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_pdeathsig, **kw)
        f.close()
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        return p.returncode

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            self.stop(p, timeout=5)
        self.procs.clear()


REG = ProcRegistry()
atexit.register(REG.cleanup)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------
# /proc accounting


def proc_tree(root: int) -> list[int]:
    """root and all its descendants (alive)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(rest[1]), []).append(int(d))
    out, i = [root], 0
    while i < len(out):
        out.extend(children.get(out[i], []))
        i += 1
    return [p for p in out if os.path.exists(f"/proc/{p}")]


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime (+ reaped children's) of the given processes, all threads, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # rest[0] is field 3 (state); utime=14, stime=15, cutime=16, cstime=17
        total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return total / CLK_TCK


def status_kib(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, '5' > clear_refs)."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


# --------------------------------------------------------------------------------------
# HTTP probes (stdlib, loopback only)


def http_get(port: int, path: str, timeout: float = 2.0, method: str = "GET",
             body: bytes | None = None, host: str | None = None, tls: bool = False) -> tuple[int, bytes]:
    """One request on a new connection; with `tls`, over TLS to `localhost` (the run's CA trusted)."""
    if tls:
        c = http.client.HTTPSConnection(TLS_HOST, port, timeout=timeout, context=tls_client_context())
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Host": host or (TLS_HOST if tls else "127.0.0.1")})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_http(port: int, path: str, deadline: float, proc: subprocess.Popen | None = None,
              host: str | None = None, tls: bool = False) -> bool:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            st, _ = http_get(port, path, timeout=1.0, host=host, tls=tls)
            if st == 200:
                return True
        except OSError:
            pass
        except http.client.HTTPException:
            pass
        time.sleep(0.1)
    return False


def probe(port: int, scenario: str, h2_port: int | None = None, tls: bool = False) -> str | None:
    """Functional check through a proxy before measuring. Returns an error or None. With `tls` (the
    tls-* scenarios), over TLS, the certificate verified against the run's CA for `localhost`."""
    try:
        if scenario == "post4k":
            body = b"0123456789abcdef" * 256
            st, got = http_get(port, "/echo", method="POST", body=body)
            if st != 200 or got != body:
                return f"POST /echo: status {st}, {len(got)} bytes echoed (want 4096)"
        elif scenario in ("small", "4k", "64k", "close", "h2", "tls-small", "tls-close", "tls-resume", "tls-h2"):
            path = SCENARIOS[scenario]["path"]
            want = {"/small": 13, "/4k": 4096, "/64k": 65536}[path]
            st, got = http_get(port, path, tls=tls)
            if st != 200 or len(got) != want:
                return f"GET {path}: status {st}, {len(got)} bytes (want {want})"
        elif scenario == "edge":
            # The benchmarked route, then one earlier route of each kind (host + path, path only) and a
            # request no route takes: the table must mean what it says in every proxy.
            st, got = http_get(port, "/small", host=EDGE_HOST)
            if st != 200 or len(got) != 13:
                return f"GET /small Host {EDGE_HOST}: status {st}, {len(got)} bytes (want 13)"
            for host, path in (("svc3.edge.bench", "/svc3/small"), ("elsewhere.test", "/api12/small")):
                st, got = http_get(port, path, host=host)
                if st != 404 or got != b"not found\n":  # the origin has no such path: its own 404
                    return f"GET {path} Host {host}: status {st}, {got[:60]!r} (want the origin's 404: the route exists)"
            st, _ = http_get(port, "/small", host="elsewhere.test")
            if st not in (404, 503):
                return f"GET /small Host elsewhere.test: status {st} (want 404/503: no route)"
    except (OSError, http.client.HTTPException) as e:
        return f"probe failed: {e!r}"
    if scenario in ("h2", "tls-h2"):
        return probe_h2(h2_port or port, tls=tls)
    if scenario == "ws":
        return probe_ws(port)
    return None


def probe_ws(port: int, size: int = 64) -> str | None:
    """A WebSocket handshake (Accept checked) and one masked binary message echoed back, by hand."""
    import base64
    import hashlib
    key = base64.b64encode(os.urandom(16)).decode()
    want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    payload = os.urandom(size)
    mask = os.urandom(4)
    frame = bytes([0x82, 0x80 | size]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sk:
            sk.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sk.recv(4096)
                if not chunk:
                    return f"WebSocket handshake: EOF after {buf[:80]!r}"
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            accept = re.search(rb"(?im)^sec-websocket-accept:\s*(\S+)", head)
            if " 101 " not in status + " " or not accept or accept.group(1).decode() != want:
                return f"WebSocket handshake not accepted: {status!r}, accept {accept.group(1) if accept else None!r}"
            sk.sendall(frame)
            buf = rest
            while len(buf) < 2 + size:
                chunk = sk.recv(4096)
                if not chunk:
                    return f"WebSocket echo: EOF after {len(buf)} bytes"
                buf += chunk
            if buf[:2 + size] != bytes([0x82, size]) + payload:
                return f"WebSocket echo differs: {buf[:16]!r}..."
    except OSError as e:
        return f"WebSocket probe failed: {e!r}"
    return None


def probe_h2(port: int, tls: bool = False) -> str | None:
    """A few h2c prior-knowledge requests (with `tls`, h2 chosen by ALPN); fails fast where it is not spoken."""
    url = f"https://{TLS_HOST}:{port}/small" if tls else f"http://127.0.0.1:{port}/small"
    cmd = ["h2load", "-n", "4", "-c", "1", "-m", "1", "-N", "3s", *(H2LOAD_TLS_FLAGS if tls else []), url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=15, env=tls_client_env() if tls else None)
        out = r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"h2load probe failed: {e!r}"
    st = re.search(r"status codes: (\d+) 2xx", out)
    if not st or int(st.group(1)) == 0:
        m = re.search(r"requests: .*", out)
        what = "h2 over TLS (ALPN)" if tls else "h2c (prior knowledge)"
        return f"{what} not supported? probe got no 2xx response" + (f" ({m.group(0)})" if m else "")
    if tls and not re.search(r"Application protocol: h2\b", out):
        m = re.search(r"Application protocol: (\S+)", out)
        return f"h2 over TLS: ALPN chose {m.group(1) if m else 'nothing'}, not h2"
    return None


# --------------------------------------------------------------------------------------
# proxies


class Unavailable(Exception):
    pass


class Proxy:
    name = "?"
    exe = "?"

    def __init__(self, work: Path, origin_port: int, threads: int = 1, core: str | None = "1",
                 max_conns: int = 4096, tag: str = "", variant: str = "default",
                 origin_ports: list[int] | None = None) -> None:
        self.origin_port = origin_port
        # `edge`: the 20-route table of `edge_routes()` over groups of these origins (SCENARIOS["edge"]).
        self.variant = variant
        # `tls`: the listener terminates TLS (tls_material()'s certificate); probes and loads use https.
        self.tls = variant == "tls"
        self.origin_ports = origin_ports or [origin_port]
        self.threads = threads
        self.core = core
        self.max_conns = max_conns
        self.tag = tag or (f"{self.name}-t{threads}" if variant == "default" else f"{self.name}-{variant}-t{threads}")
        self.dir = work / self.tag
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.h2_port = self.port  # same port unless the proxy needs another one
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "proxy.log"
        self.exit_code: int | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def probe_host(self) -> str:
        return EDGE_HOST if self.variant == "edge" else TLS_HOST if self.tls else "127.0.0.1"

    @property
    def warm_scenario(self) -> str:
        return "edge" if self.variant == "edge" else "tls-small" if self.tls else "small"

    def ready(self, deadline: float) -> bool:
        return wait_http(self.port, "/small", deadline, self.proc, host=self.probe_host, tls=self.tls)

    def start(self, timeout: float = 20.0) -> None:
        cmd = pinned(self.core, self.command())
        (self.dir / "cmd.txt").write_text(" ".join(cmd) + "\n")
        self.proc = REG.spawn(cmd, self.log_path, cwd=self.dir)
        if not self.ready(time.monotonic() + timeout):
            tail = self.log_tail()
            self.stop()
            raise Unavailable(f"{self.name} did not become ready: {tail}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        return proc_tree(self.proc.pid) if self.alive() else []

    def stop(self) -> int | None:
        if self.proc is not None:
            self.exit_code = REG.stop(self.proc)
        return self.exit_code

    def log_tail(self, n: int = 400) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:].strip().replace("\n", " | ") or "(no output)"
        except OSError:
            return "(no log)"

    def version(self) -> str:
        return "?"


class Nginx(Proxy):
    name = "nginx"
    exe = "nginx"

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        if not self.tls:  # h2c prior knowledge needs its own `listen ... http2` (over TLS, ALPN decides)
            self.h2_port = free_port()

    def command(self) -> list[str]:
        d = self.dir
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
            (d / sub).mkdir(exist_ok=True)
        conns = self.max_conns
        conf = f"""# generated by bench.py
worker_processes {self.threads};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
worker_rlimit_nofile {min(conns * 2 + 1024, NOFILE)};
events {{
    worker_connections {conns + 512};
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    tcp_nodelay on;
{self.edge_block() if self.variant == "edge" else self.ws_block() if self.variant == "ws" else self.tls_block() if self.tls else self.default_block()}
}}
"""
        (d / "nginx.conf").write_text(conf)
        return [shutil.which("nginx") or "nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "logs/error.log")]

    def default_block(self) -> str:
        return f"""    upstream origin {{
        server 127.0.0.1:{self.origin_port};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        listen 127.0.0.1:{self.h2_port} http2 backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_busy_buffers_size 32k;
        }}
    }}"""

    def tls_block(self) -> str:
        """The default block, its one listener terminating TLS: h2 and http/1.1 by ALPN on the same port
        (nginx < 1.25.1 writes that `listen ... ssl http2`, later versions `http2 on;`), TLS 1.2 and 1.3,
        session tickets on (nginx's default, as in HAProxy and Sluice; see README, "The tls scenarios")."""
        new_syntax = nginx_version() >= (1, 25, 1)
        return f"""    upstream origin {{
        server 127.0.0.1:{self.origin_port};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{self.port} ssl{"" if new_syntax else " http2"} backlog=4096;
{"        http2 on;" + chr(10) if new_syntax else ""}        server_name {TLS_HOST};
        ssl_certificate {TLS["cert"]};
        ssl_certificate_key {TLS["key"]};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets on;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_busy_buffers_size 32k;
        }}
    }}"""

    def ws_block(self) -> str:
        """nginx's WebSocket proxying: HTTP/1.1 upstream, the Upgrade/Connection pair passed on (a
        plain request keeps its pooled upstream connection), no read timeout within a run."""
        return f"""    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream origin {{
        server 127.0.0.1:{self.origin_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}"""

    def edge_block(self) -> str:
        """`edge_routes()` as server_name + location: a host's server holds its own prefix, the
        any-host prefixes (routes 10-18) and, when *.edge.bench covers it, `/` (route 19)."""
        out = ["    proxy_http_version 1.1;", '    proxy_set_header Connection "";', "    proxy_set_header Host $host;",
               "    proxy_buffer_size 16k;", "    proxy_buffers 8 16k;", "    proxy_busy_buffers_size 32k;"]
        for g in range(EDGE_GROUPS):
            servers = "".join(f"        server 127.0.0.1:{p};\n" for p in edge_group_ports(self.origin_ports, g))
            out.append(f"    upstream g{g} {{\n        least_conn;\n{servers}        keepalive 128;\n"
                       "        keepalive_requests 1000000;\n        keepalive_timeout 60s;\n    }")
        routes = edge_routes()
        any_host = "".join(f"        location {r['prefix']} {{ proxy_pass http://{r['group']}; }}\n"
                           for r in routes if r["host"] is None)
        last = routes[-1]
        catch = f"        location / {{ proxy_pass http://{last['group']}; }}\n"
        listen = f"        listen 127.0.0.1:{self.port}{{}};\n        listen 127.0.0.1:{self.h2_port} http2{{}};\n"
        first = " default_server backlog=4096"
        out.append("    server {\n" + listen.format(first, first) + "        server_name _;\n" + any_host + "    }")
        for r in routes:
            if r["host"] and not r["host"].startswith("*"):
                own = f"        location {r['prefix']} {{ proxy_pass http://{r['group']}; }}\n"
                out.append("    server {\n" + listen.format("", "") + f"        server_name {r['host']};\n"
                           + own + any_host + catch + "    }")
        out.append("    server {\n" + listen.format("", "") + f"        server_name {last['host']};\n"
                   + any_host + catch + "    }")
        return "\n".join(out)

    def log_tail(self, n: int = 400) -> str:
        t = super().log_tail(n)
        try:
            t += " | " + (self.dir / "logs/error.log").read_text(errors="replace")[-n:].strip().replace("\n", " | ")
        except OSError:
            pass
        return t

    def version(self) -> str:
        r = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
        return (r.stderr or r.stdout).strip().replace("nginx version: ", "")


def nginx_version() -> tuple[int, ...]:
    """The installed nginx's version, e.g. (1, 22, 1); (0,) if unknown."""
    try:
        r = subprocess.run([shutil.which("nginx") or "nginx", "-v"], capture_output=True, text=True, timeout=10)
        m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", r.stderr + r.stdout)
        return tuple(int(x) for x in m.groups()) if m else (0,)
    except (OSError, subprocess.TimeoutExpired):
        return (0,)


class HAProxy(Proxy):
    name = "haproxy"
    exe = "haproxy"

    def command(self) -> list[str]:
        d = self.dir
        conf = f"""# generated by bench.py
global
    nbthread {self.threads}
    # HAProxy reserves ~2 fds per connection and cannot exceed the hard RLIMIT_NOFILE
    maxconn {min(self.max_conns + 512, (NOFILE - 256) // 2)}

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 10s
    option http-keep-alive
    http-reuse always

frontend fe
{self.bind_line()}
{self.edge_sections() if self.variant == "edge" else self.default_sections()}
{"    timeout tunnel 3600s" if self.variant == "ws" else ""}
"""
        (d / "haproxy.cfg").write_text(conf)
        return [shutil.which("haproxy") or "haproxy", "-db", "-f", str(d / "haproxy.cfg")]

    def bind_line(self) -> str:
        if self.tls:
            # TLS with the leaf and its key in one PEM; h2 or http/1.1 by ALPN; TLS 1.2 and 1.3; session
            # tickets and cache at their defaults (on), as in nginx and Sluice.
            return (f"    bind 127.0.0.1:{self.port} ssl crt {TLS['pem']} alpn h2,http/1.1 "
                    "ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3")
        # HTTP/1.1; HAProxy also detects the h2c prior-knowledge preface on this port
        return f"    bind 127.0.0.1:{self.port}"

    def default_sections(self) -> str:
        return f"""    default_backend be

backend be
    server origin 127.0.0.1:{self.origin_port}"""

    def edge_sections(self) -> str:
        """`edge_routes()` as use_backend rules in order (the host without its port, once per request,
        as Sluice does); no default backend, so no match is HAProxy's 503."""
        out = ["    http-request set-var(txn.host) req.hdr(host),field(1,:),lower"]
        for r in edge_routes():
            conds = []
            if r["host"] and r["host"].startswith("*"):
                conds.append(f"{{ var(txn.host) -m end {r['host'][1:]} }}")
            elif r["host"]:
                conds.append(f"{{ var(txn.host) -m str {r['host']} }}")
            if r["prefix"] != "/":
                conds.append(f"{{ path_beg {r['prefix']} }}")
            out.append(f"    use_backend {r['group']} if " + " ".join(conds))
        for g in range(EDGE_GROUPS):
            out.append(f"\nbackend g{g}\n    balance leastconn")
            out += [f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(edge_group_ports(self.origin_ports, g))]
        return "\n".join(out)

    def version(self) -> str:
        r = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, timeout=10)
        first = (r.stdout or "").splitlines()[:1]
        return first[0].replace("HAProxy version ", "").split(" - ")[0] if first else "?"


class Sluice(Proxy):
    name = "sluice"
    exe = "sluice"
    binary: str = ""
    drain_flags = True

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.admin_port = free_port()
        # `tls`: `self.port` is the TLS listener (`--listen-tls`); the plaintext `--listen` stays (on a
        # port nothing loads), so no default listen address is ever taken.
        self.plain_port = free_port() if self.tls else self.port

    def command(self) -> list[str]:
        if self.variant == "edge":
            upstream = ["--config", str(self.write_edge_config())]
        else:
            upstream = ["--upstream", f"http://127.0.0.1:{self.origin_port}"]
        listen_tls = []
        if self.tls:  # ALPN h2, http/1.1 and TLS 1.2 minimum are Sluice's defaults for a TLS listener
            listen_tls = ["--listen-tls", f"127.0.0.1:{self.port}", "--tls-cert", str(TLS["cert"]),
                          "--tls-key", str(TLS["key"])]
        cmd = [self.binary, "--listen", f"127.0.0.1:{self.plain_port}", *listen_tls, *upstream,
               "--admin", f"127.0.0.1:{self.admin_port}",
               "--threads", str(self.threads), "--log-level", "warning"]
        if Sluice.drain_flags:
            cmd += ["--drain-delay", "0s", "--drain-timeout", "2s"]
        return cmd

    def write_edge_config(self) -> Path:
        path = self.dir / "edge.yaml"
        path.write_text(sluice_edge_yaml(self.origin_ports))
        return path

    def ready(self, deadline: float) -> bool:
        if not wait_http(self.admin_port, "/readyz", deadline, self.proc):
            return False
        return wait_http(self.port, "/small", deadline, self.proc, host=self.probe_host, tls=self.tls)

    def start(self, timeout: float = 30.0) -> None:
        try:
            super().start(timeout)
        except Unavailable:
            # an older binary may not know the drain flags: retry once without them
            if Sluice.drain_flags and self.proc is not None and self.proc.returncode not in (None, 0, -15, 143):
                Sluice.drain_flags = False
                self.admin_port = free_port()
                self.port = self.h2_port = free_port()
                self.plain_port = free_port() if self.tls else self.port
                super().start(timeout)
            else:
                raise

    def version(self) -> str:
        try:
            r = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"


class SluiceB(Sluice):
    """A second Sluice binary (`--sluice-bin-b`), measured in the same run: an A/B of two builds,
    each with its own ratios to nginx and HAProxy."""
    name = "sluice-b"
    binary: str = ""  # `self.binary` in Sluice's methods reads this one


class Direct(Proxy):
    """No proxy: the `ws` load generator straight to the WebSocket origin (CPU and RSS: n/a)."""
    name = DIRECT
    exe = "-"

    def start(self, timeout: float = 20.0) -> None:
        self.port = self.h2_port = self.origin_port

    def alive(self) -> bool:
        return True

    def pids(self) -> list[int]:
        return []

    def stop(self) -> int | None:
        return None

    def version(self) -> str:
        return "no proxy"


PROXY_CLASSES = {"nginx": Nginx, "haproxy": HAProxy, "sluice": Sluice, "sluice-b": SluiceB, DIRECT: Direct}
SLUICES = ("sluice", "sluice-b")


# --------------------------------------------------------------------------------------
# load generators

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(val: str, unit: str) -> float:
    return float(val) * _UNIT[unit]


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if m:
        res["requests"] = int(m.group(1))
        res["elapsed_s"] = _ms(m.group(2), m.group(3)) / 1000.0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if m:
            res[key] = _ms(m.group(1), m.group(2))
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups())}
        errors += sum(res["socket_errors"].values())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    errors += res["non2xx"]
    res["errors"] = errors
    return res


def run_wrk(port: int, sc: dict, duration: int, conns: int, threads: int = 1,
            core: str | None = "0", raw: Path | None = None) -> dict:
    tls = sc.get("variant") == "tls"
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for h in sc.get("headers", []):
        cmd += ["-H", h]
    if sc.get("lua"):
        cmd += ["-s", str(HERE / sc["lua"])]
    cmd.append(f"https://{TLS_HOST}:{port}{sc['path']}" if tls else f"http://127.0.0.1:{port}{sc['path']}")
    cmd = pinned(core, cmd)
    if sc.get("no_resume") and not TLS.get("shim"):
        return {"failure": "full handshakes need tlsstat.so (it did not build): without it wrk resumes sessions"}
    out = run_load_tool(cmd, duration, raw, env=tls_client_env(sc.get("no_resume", False)) if tls else None)
    res = parse_wrk(out)
    res.update(parse_tlsstat(out))
    if sc.get("no_resume") and res.get("resumed"):
        res["failure"] = f"{res['resumed']} of {res['handshakes']} handshakes resumed a session (want none)"
    if "requests" not in res:
        res["failure"] = "wrk produced no result: " + out.strip()[-200:].replace("\n", " | ")
    return res


def run_load_tool(cmd: list[str], duration: int, raw: Path | None, env: dict | None = None) -> str:
    """Runs a load generator for `duration` seconds (plus a margin); its output, kept in `raw` if given."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, env=env)
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        out = f"TIMEOUT {e}"
    if raw:
        raw.write_text(" ".join(cmd) + "\n\n" + out)
    return out


WS_BIN: Path | None = None  # ws.c, built in main() when the `ws` scenario runs


def run_wsload(port: int, sc: dict, duration: int, conns: int, size: int, depth: int,
               core: str | None = "0", raw: Path | None = None) -> dict:
    """ws.c's client: `conns` sessions, each with `depth` messages of `size` bytes in flight."""
    cmd = pinned(core, [str(WS_BIN), "client", str(port), sc["path"], str(conns), str(duration), str(size), str(depth)])
    out = run_load_tool(cmd, duration, raw)
    kv = dict(re.findall(r"(\w+)=([\d.]+)", out))
    if "messages" not in kv:
        return {"failure": "ws client produced no result: " + out.strip()[-200:].replace("\n", " | ")}
    res = {"requests": int(kv["messages"]), "elapsed_s": float(kv["elapsed_s"]), "rps": float(kv["rate"]),
           "p50_ms": int(kv["p50_us"]) / 1000.0, "p99_ms": int(kv["p99_us"]) / 1000.0,
           "errors": int(kv["errors"]), "non2xx": 0, "sessions_opened": int(kv["opened"]),
           "sessions_closed_clean": int(kv["closed_clean"])}
    if res["sessions_opened"] < conns:
        res["failure"] = f"only {res['sessions_opened']} of {conns} WebSocket sessions opened: " + out.strip()[-200:]
    return res


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q / 100.0 * len(sorted_vals)) - 1))  # nearest rank
    return sorted_vals[k]


def run_h2load(port: int, sc: dict, duration: int, clients: int, streams: int,
               core: str | None = "0", raw: Path | None = None) -> dict:
    logf = (raw.with_suffix(".reqlog") if raw else Path(os.devnull))
    tls = sc.get("variant") == "tls"
    url = f"https://{TLS_HOST}:{port}{sc['path']}" if tls else f"http://127.0.0.1:{port}{sc['path']}"
    cmd = ["h2load", "-c", str(clients), "-m", str(streams), "-t", "1", "-D", str(duration),
           "-N", "5s", "--log-file", str(logf), *(H2LOAD_TLS_FLAGS if tls else []), url]
    cmd = pinned(core, cmd)
    out = run_load_tool(cmd, duration, raw, env=tls_client_env() if tls else None)
    res: dict = parse_tlsstat(out)
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", out)
    if m:
        res["elapsed_s"] = _ms(m.group(1), m.group(2)) / 1000.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    proto = re.search(r"Application protocol: (\S+)", out)
    res["protocol"] = proto.group(1) if proto else None
    if not m or not st:
        res["failure"] = "h2load produced no result: " + out.strip()[-200:].replace("\n", " | ")
        return res
    total, started, done, ok, failed, errored, tmo = map(int, m.groups())
    n2xx, n3xx, n4xx, n5xx = map(int, st.groups())
    res["requests"] = done
    res["non2xx"] = n3xx + n4xx + n5xx
    res["errors"] = failed + errored + tmo + res["non2xx"]
    if n2xx == 0 or (res["protocol"] not in ((None, "h2") if tls else (None, "h2c", "h2"))):
        what = "h2 over TLS (ALPN)" if tls else "h2c (prior knowledge)"
        res["failure"] = (f"{what} not supported? no 2xx responses: {started} started, {done} done, "
                          f"{failed} failed, {errored} errored, protocol {res['protocol']}")
        if raw:
            try:
                logf.unlink()
            except OSError:
                pass
        return res
    elapsed = res.get("elapsed_s") or duration
    res["rps"] = done / elapsed
    lat: list[float] = []
    try:
        with open(logf) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[1].startswith("2"):
                    lat.append(int(parts[2]) / 1000.0)
    except OSError:
        pass
    if lat:
        lat.sort()
        res["p50_ms"] = percentile(lat, 50)
        res["p99_ms"] = percentile(lat, 99)
    if raw:
        try:
            logf.unlink()  # big; the percentiles are kept
        except OSError:
            pass
    return res


# --------------------------------------------------------------------------------------
# measurement of one cell


def measure(proxy: Proxy, scenario: str, args, raw_dir: Path, rnd: int,
            core: str | None = "0", wrk_threads: int = 1) -> dict:
    sc = SCENARIOS[scenario]
    cell = {"proxy": proxy.name, "scenario": scenario, "round": rnd, "threads": proxy.threads}
    if not proxy.alive():
        cell.update(status="n/a", reason=f"{proxy.name} is not running (exit {proxy.proc.returncode if proxy.proc else None}): {proxy.log_tail(200)}")
        return cell
    port = proxy.h2_port if sc["tool"] == "h2load" else proxy.port
    err = probe(proxy.port, scenario, proxy.h2_port, tls=proxy.tls)
    if err:
        cell.update(status="n/a", reason=err)
        return cell
    pids = proxy.pids()
    reset_peak_rss(pids)
    cpu0 = cpu_seconds(pids)
    t0 = time.monotonic()
    raw = raw_dir / f"r{rnd}-{scenario}-{proxy.tag}.txt"
    if sc["tool"] == "wrk":
        res = run_wrk(port, sc, args.duration, args.connections, threads=wrk_threads, core=core, raw=raw)
    elif sc["tool"] == "wsload":
        res = run_wsload(port, sc, args.duration, args.ws_connections, args.ws_size, args.ws_depth,
                         core=core, raw=raw)
    else:
        res = run_h2load(port, sc, args.duration, args.h2_clients, args.h2_streams, core=core, raw=raw)
    wall = time.monotonic() - t0
    pids_after = proxy.pids() or pids
    cpu1 = cpu_seconds(sorted(set(pids) | set(pids_after)))
    peak_kib = status_kib(pids_after, "VmHWM")
    cell.update({k: v for k, v in res.items() if k != "failure"})
    if not proxy.alive():
        cell.update(status="n/a", reason=f"{proxy.name} died during the run (exit {proxy.proc.returncode}): {proxy.log_tail(200)}")
        return cell
    if res.get("failure") or not res.get("requests"):
        cell.update(status="n/a", reason=res.get("failure", "no requests completed"))
        return cell
    cpu = max(0.0, cpu1 - cpu0)
    cell.update(status="ok", wall_s=round(wall, 3), cpu_s=round(cpu, 3),
                cpu_util=round(cpu / max(wall, 1e-9), 3),
                cpu_per_10k=cpu / res["requests"] * 10000.0,
                peak_rss_mib=peak_kib / 1024.0)
    if res["errors"] > 0.01 * res["requests"]:
        cell["warning"] = f"{res['errors']} errors in {res['requests']} requests"
    if proxy.tls and res.get("handshakes") is not None:
        # From the client (tlsstat.c): tls-close should be ~1 handshake per request; `resumed` says
        # whether the proxy accepted the session wrk offered again.
        cell["handshakes_per_request"] = res["handshakes"] / res["requests"]
        cell["resumed_share"] = res["resumed"] / res["handshakes"] if res["handshakes"] else None
    if proxy.name == DIRECT:  # no proxy process: nothing to account
        cell.update(cpu_s=None, cpu_util=None, cpu_per_10k=None, peak_rss_mib=None)
    return cell


def fmt(v, spec: str = ".2f", na: str = "n/a") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return na
    return format(v, spec)


def cell_line(c: dict) -> str:
    head = f"  {c['scenario']:<10} {c['proxy'] + ('' if c.get('threads', 1) == 1 else ' t' + str(c['threads'])):<10}"
    if c["status"] != "ok":
        return f"{head} n/a  ({c.get('reason', '')[:120]})"
    if c["proxy"] == DIRECT:
        return (f"{head} {c['rps']:>9.0f} msg/s  p50 {fmt(c.get('p50_ms')):>6} ms  p99 {fmt(c.get('p99_ms')):>7} ms  "
                f"(no proxy)  err {c['errors']}")
    unit = "msg/s" if SCENARIOS.get(c["scenario"], {}).get("tool") == "wsload" else "req/s"
    return (f"{head} {c['rps']:>9.0f} {unit}  p50 {fmt(c.get('p50_ms')):>6} ms  p99 {fmt(c.get('p99_ms')):>7} ms  "
            f"cpu {c['cpu_per_10k']:.3f} s/10k ({c['cpu_util'] * 100:.0f}%)  rss {c['peak_rss_mib']:.1f} MiB  "
            f"err {c['errors']}" + (f"  !! {c['warning']}" if c.get("warning") else "")
            + (f"  tls {c['handshakes_per_request']:.3f} hs/req, {fmt(c.get('resumed_share'), '.0%')} resumed"
               if c.get("handshakes_per_request") is not None else ""))


METRICS = ["rps", "p50_ms", "p99_ms", "cpu_per_10k", "peak_rss_mib", "errors", "cpu_util",
           "handshakes_per_request", "resumed_share"]


def summarise(cells: list[dict], scenarios: list[str], proxies: list[str]) -> dict:
    summary: dict = {}
    for s in scenarios:
        summary[s] = {}
        for p in proxies:
            mine = [c for c in cells if c["scenario"] == s and c["proxy"] == p]
            ok = [c for c in mine if c["status"] == "ok"]
            if not ok:
                reasons = sorted({c.get("reason", "") for c in mine}) or ["not run"]
                summary[s][p] = {"status": "n/a", "reason": "; ".join(reasons)[:500]}
                continue
            entry = {"status": "ok", "rounds": len(ok), "rounds_failed": len(mine) - len(ok)}
            for m in METRICS:
                vals = [c[m] for c in ok if c.get(m) is not None]
                entry[m] = statistics.median(vals) if vals else None
                if m in ("rps", "cpu_per_10k", "p99_ms") and len(vals) > 1:
                    entry[m + "_min"] = min(vals)
                    entry[m + "_max"] = max(vals)
            summary[s][p] = entry
    return summary


def ratios(summary: dict) -> dict:
    """Per scenario, Sluice's CPU and p99 against nginx and HAProxy (`cpu_vs_nginx`, ...); with an
    A/B run, the second build's under `sluice-b` (same keys)."""
    out: dict = {}
    for s, row in summary.items():
        r: dict = {}
        for name in SLUICES:
            sl = row.get(name)
            if sl is None:
                continue
            target = r if name == "sluice" else r.setdefault(name, {})
            for ref in ("nginx", "haproxy"):
                rf = row.get(ref, {})
                for m, key in (("cpu_per_10k", "cpu"), ("p99_ms", "p99")):
                    a, b = sl.get(m), rf.get(m)
                    target[f"{key}_vs_{ref}"] = (a / b) if (sl.get("status") == "ok" and rf.get("status") == "ok"
                                                           and a is not None and b) else None
        base = SCENARIOS.get(s, {}).get("base")
        if base and base in summary:
            # Each proxy's CPU per request here over its own in the plaintext `base` scenario, same run:
            # what the variant costs it (for `edge`, routing and balancing over `small`, issue 10: Sluice
            # within 5%; for tls-small/tls-close/tls-h2, TLS over small/close/h2).
            own: dict = {}
            for p, e in row.items():
                a, b = e.get("cpu_per_10k"), summary[base].get(p, {}).get("cpu_per_10k")
                ok = e.get("status") == "ok" and summary[base].get(p, {}).get("status") == "ok"
                own[p] = (a / b) if (ok and a is not None and b) else None
            r["cpu_vs_own_base"] = own
        out[s] = r
    return out


def table(summary: dict, rat: dict, proxies: list[str]) -> str:
    own_small = any("cpu_vs_own_base" in r for r in rat.values())
    hdr = ["scenario", "proxy", "req/s", "p50 ms", "p99 ms", "CPU s/10k", "RSS MiB", "errors",
           "CPU/nginx", "CPU/haproxy", "p99/nginx", "p99/haproxy"] + (["CPU/own base"] if own_small else [])
    rows = []
    for s, row in summary.items():
        for p in proxies:
            e = row.get(p, {"status": "n/a"})
            own = []
            if own_small:
                v = rat.get(s, {}).get("cpu_vs_own_base", {}).get(p)
                own = [fmt(v, ".3f") + "x" if v is not None else ("n/a" if "cpu_vs_own_base" in rat.get(s, {}) else "")]
            if e.get("status") != "ok":
                if e.get("reason") == "not run":  # e.g. `direct` outside the ws scenario
                    continue
                rows.append([s, p, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "", "", "", ""] + own)
                continue
            extra = ["", "", "", ""]
            if p in SLUICES:
                rr = rat.get(s, {}) if p == "sluice" else rat.get(s, {}).get(p, {})
                extra = [fmt(rr.get("cpu_vs_nginx"), ".2f") + ("x" if rr.get("cpu_vs_nginx") else ""),
                         fmt(rr.get("cpu_vs_haproxy"), ".2f") + ("x" if rr.get("cpu_vs_haproxy") else ""),
                         fmt(rr.get("p99_vs_nginx"), ".2f") + ("x" if rr.get("p99_vs_nginx") else ""),
                         fmt(rr.get("p99_vs_haproxy"), ".2f") + ("x" if rr.get("p99_vs_haproxy") else "")]
            rows.append([s, p, fmt(e["rps"], ".0f"), fmt(e.get("p50_ms")), fmt(e.get("p99_ms")),
                         fmt(e["cpu_per_10k"], ".3f"), fmt(e["peak_rss_mib"], ".1f"),
                         fmt(e["errors"], ".0f")] + extra + own)
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    line = lambda cols: "| " + " | ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)
                                          for i, (c, w) in enumerate(zip(cols, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(hdr), sep] + [line(r) for r in rows])


COLORS = {"nginx": "#2b8a3e", "haproxy": "#1971c2", "sluice": "#e8590c", "sluice-b": "#ae3ec9", DIRECT: "#868e96"}


def ws_table(entry: dict, rat: dict, proxies: list[str]) -> str:
    """The `ws` scenario alone, in its own units: messages/s and proxy CPU per 10k messages."""
    hdr = ["proxy", "msg/s", "p50 ms", "p99 ms", "CPU s/10k msgs", "CPU % of a core", "RSS MiB", "errors",
           "CPU/nginx", "CPU/haproxy", "note"]
    rows = []
    for p in proxies:
        e = entry.get(p, {"status": "n/a"})
        if e.get("status") != "ok":
            rows.append([p, "n/a", "", "", "", "", "", "", "", "", e.get("reason", "")[:90]])
            continue
        rr = (rat if p == "sluice" else rat.get(p, {})) if p in SLUICES else {}
        util = e.get("cpu_util")
        rows.append([p, fmt(e["rps"], ".0f"), fmt(e.get("p50_ms")), fmt(e.get("p99_ms")),
                     fmt(e.get("cpu_per_10k"), ".3f", "-"), fmt(util * 100 if util is not None else None, ".0f", "-"),
                     fmt(e.get("peak_rss_mib"), ".1f", "-"), fmt(e["errors"], ".0f"),
                     (fmt(rr.get("cpu_vs_nginx"), ".2f") + "x") if rr.get("cpu_vs_nginx") else "",
                     (fmt(rr.get("cpu_vs_haproxy"), ".2f") + "x") if rr.get("cpu_vs_haproxy") else "",
                     "no proxy: the origin's and load generator's own rate" if p == DIRECT else ""])
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *rows)]
    line = lambda cols: "| " + " | ".join(str(c).rjust(w) if 0 < i < len(cols) - 1 else str(c).ljust(w)
                                          for i, (c, w) in enumerate(zip(cols, widths))) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(hdr), sep] + [line(r) for r in rows])


def ws_chart(entry: dict, proxies: list[str], path: Path, title: str) -> str | None:
    """`ws`: messages/s (left) and proxy CPU seconds per 10k messages (right), per proxy."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001
        return f"matplotlib unavailable: {e}"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, metric, label in ((axes[0], "rps", "messages/s (higher is better)"),
                              (axes[1], "cpu_per_10k", "proxy CPU s per 10k messages (lower is better)")):
        names = [p for p in proxies if not (p == DIRECT and metric == "cpu_per_10k")]
        vals = [entry.get(p, {}).get(metric) if entry.get(p, {}).get("status") == "ok" else None for p in names]
        bars = ax.bar(range(len(names)), [v or 0 for v in vals], color=[COLORS.get(p, "k") for p in names])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v or 0, "n/a" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.0f}"),
                    ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_title(label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def chart(summary: dict, proxies: list[str], path: Path, title: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except Exception as e:  # noqa: BLE001
        return f"matplotlib unavailable: {e}"
    scen = list(summary.keys())
    colors = COLORS
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.6 * len(scen) + 2), 8.5))
    width = 0.8 / max(1, len(proxies))
    for ax, metric, ylabel in ((axes[0], "cpu_per_10k", "proxy CPU seconds per 10k requests"),
                               (axes[1], "p99_ms", "p99 latency (ms)")):
        for j, p in enumerate(proxies):
            xs, ys = [], []
            for i, s in enumerate(scen):
                e = summary[s].get(p, {})
                x = i - 0.4 + width * (j + 0.5)
                if e.get("status") == "ok" and e.get(metric) is not None:
                    xs.append(x)
                    ys.append(e[metric])
                elif e.get("reason") == "not run" or p == DIRECT and metric == "cpu_per_10k":
                    continue
                else:
                    ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color=colors.get(p, "k"))
            bars = ax.bar(xs, ys, width * 0.95, color=colors.get(p))
            for b, y in zip(bars, ys):
                ax.text(b.get_x() + b.get_width() / 2, y, f"{y:.2f}" if y < 10 else f"{y:.0f}",
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(scen)))
        ax.set_xticklabels(scen)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(handles=[Patch(color=colors.get(p), label=p if any(summary[s].get(p, {}).get("status") == "ok"
                                                                        for s in scen) else f"{p} (n/a)")
                           for p in proxies])
    axes[0].set_title(title, fontsize=10)
    axes[1].set_xlabel("scenario (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------
# setup


def run_quiet(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except (OSError, subprocess.TimeoutExpired) as e:
        warn(f"{' '.join(cmd)}: {e}")
        return None


def ensure_tools(args) -> None:
    need = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client",
            "taskset": "util-linux", "openssl": "openssl"}
    if not (shutil.which("cc") or shutil.which("gcc")):
        need["cc"] = "gcc"
    missing = sorted({pkg for exe, pkg in need.items() if not shutil.which(exe)})
    if missing:
        if args.no_install:
            warn(f"missing packages (not installing, --no-install): {' '.join(missing)}")
        elif os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"installing: {' '.join(missing)} (apt-get)")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run_quiet(["apt-get", "update"], 600, env=env)
            r = run_quiet(["apt-get", "install", "-y", "--no-install-recommends"] + missing, 900, env=env)
            if r is None or r.returncode != 0:
                warn("apt-get install failed: " + (r.stderr[-300:] if r else "timeout"))
        else:
            warn(f"missing packages and not root/apt: {' '.join(missing)}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if not args.no_install:
            log("installing matplotlib (pip)")
            r = run_quiet([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], 900)
            if r is None or r.returncode != 0:
                warn("pip install matplotlib failed; no chart will be drawn")


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard < want:
        try:
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        except OSError:
            nr_open = want
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, nr_open), min(want, nr_open)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_c_tool(work: Path, name: str) -> Path:
    """`name`.c next to this script, compiled into `work` once (again when the source is newer)."""
    out = work / name
    src = HERE / f"{name}.c"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc") or "cc"
    r = subprocess.run([cc, "-O2", "-o", str(out), str(src)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"building {name}.c failed:\n{r.stderr}")
    return out


def build_tlsstat(work: Path) -> Path | None:
    """tlsstat.c as an LD_PRELOAD shim (the tls-* loads' handshake counter); None if it does not build,
    and the cells then go without the count."""
    out = work / "tlsstat.so"
    src = HERE / "tlsstat.c"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc") or "cc"
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(src), "-ldl"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        warn(f"building tlsstat.c failed (no handshake counts): {r.stderr.strip()[-300:]}")
        return None
    return out


def build_ws_tool(work: Path) -> Path:
    """ws.c: the `ws` scenario's origin and load generator."""
    return build_c_tool(work, "ws")


def build_origin(work: Path) -> Path:
    return build_c_tool(work, "origin")


def resolve_sluice(args) -> tuple[str | None, str]:
    path = args.sluice_bin or os.environ.get("SLUICE_BIN") or str(REPO / ".build-static/release/sluice")
    p = Path(path)
    if not p.is_absolute():
        p = (Path.cwd() / p) if (Path.cwd() / p).exists() else (REPO / p)
    if not (p.is_file() and os.access(p, os.X_OK)) and args.build_sluice:
        log("building sluice: make release (a few minutes)")
        r = run_quiet(["make", "--no-print-directory", "release"], 1800, cwd=REPO)
        if r is None or r.returncode != 0:
            return None, "swift build failed: " + ((r.stderr or r.stdout)[-300:] if r else "timeout")
        p = REPO / ".build-static/release/sluice"
    if p.is_file() and os.access(p, os.X_OK):
        return str(p), ""
    return None, f"sluice binary not found at {p}"


def start_proxy(name: str, work: Path, origin_port: int, threads: int, core: str | None,
                max_conns: int, tag: str = "", variant: str = "default",
                origin_ports: list[int] | None = None) -> tuple[Proxy | None, str]:
    cls = PROXY_CLASSES[name]
    if name not in SLUICES and name != DIRECT and not shutil.which(cls.exe):
        return None, f"{cls.exe} not installed"
    if name == "sluice" and not Sluice.binary:
        return None, SLUICE_REASON
    if name == "sluice-b" and not SluiceB.binary:
        return None, "no --sluice-bin-b given"
    px = cls(work, origin_port, threads=threads, core=core, max_conns=max_conns, tag=tag, variant=variant,
             origin_ports=origin_ports)
    try:
        px.start()
    except Unavailable as e:
        return None, str(e)[:500]
    return px, ""


def warm_up(px: Proxy, seconds: int, core: str | None, conns: int) -> None:
    run_wrk(px.port, SCENARIOS[px.warm_scenario], seconds, conns, core=core)  # (https for the tls variant)


SLUICE_REASON = ""


# --------------------------------------------------------------------------------------
# extra modes


def _h2_request() -> bytes:
    """h2c prior knowledge: preface, empty SETTINGS, then GET /small on stream 1 (HPACK literals)."""
    def literal(name: bytes, value: bytes) -> bytes:  # literal without indexing, new name, no Huffman
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    block = b"".join(literal(k, v) for k, v in
                     ((b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"127.0.0.1"), (b":path", b"/small")))
    settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    headers = len(block).to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01" + block  # END_STREAM|END_HEADERS
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings + headers


def _h2_response_complete(buf: bytes) -> bool:
    """Whether `buf` holds a frame with END_STREAM on stream 1 (the whole response)."""
    offset = 0
    while offset + 9 <= len(buf):
        length = int.from_bytes(buf[offset:offset + 3], "big")
        ftype, flags = buf[offset + 3], buf[offset + 4]
        stream = int.from_bytes(buf[offset + 5:offset + 9], "big") & 0x7FFFFFFF
        if offset + 9 + length > len(buf):
            return False
        if stream == 1 and ftype in (0x0, 0x1) and flags & 0x1:
            return True
        offset += 9 + length
    return False


def idle_conns_test(px: Proxy, n: int, budget_s: float = 120.0, h2: bool = False) -> dict:
    """Open n idle keep-alive connections (one GET each, then idle); RSS before/after. With `h2`, the
    connections are h2c (prior knowledge) and the GET is one stream."""
    res: dict = {"proxy": px.name, "requested": n, "protocol": "h2c" if h2 else "http/1.1"}
    raise_nofile(n + 4096)
    time.sleep(1.0)
    pids = px.pids()
    before = status_kib(pids, "VmRSS")
    req = _h2_request() if h2 else b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    port = px.h2_port if h2 else px.port
    done = _h2_response_complete if h2 else (lambda b: b"\r\n\r\n" in b and b.endswith(b"Hello, world\n"))
    socks: list[socket.socket] = []
    deadline = time.monotonic() + budget_s
    error = None
    try:
        while len(socks) < n and time.monotonic() < deadline:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.settimeout(5.0)
            s.connect(("127.0.0.1", port))
            s.sendall(req)
            buf = b""
            while not done(buf):
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError("closed by proxy")
                buf += chunk
                if len(buf) > 65536:
                    raise ConnectionError("unexpected response")
        if len(socks) < n:
            error = f"time budget ({budget_s:.0f}s) exhausted"
    except OSError as e:
        error = f"after {len(socks) - 1} connections: {e!r}"
        socks[-1].close()
        socks.pop()
    opened = len(socks)
    time.sleep(2.0)
    # check the connections are still open (a proxy may have an idle timeout)
    still_open = 0
    for s in socks:
        try:
            s.setblocking(False)
            data = s.recv(1)
            if data != b"":
                still_open += 1  # unexpected data, but open
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
    pids = px.pids()
    during = status_kib(pids, "VmRSS")
    for s in socks:
        s.close()
    time.sleep(2.0)
    after_close = status_kib(px.pids(), "VmRSS")
    res.update(opened=opened, still_open=still_open, rss_before_kib=before, rss_open_kib=during,
               rss_after_close_kib=after_close,
               kib_per_conn=((during - before) / opened) if opened else None, error=error)
    return res


# --------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round of ~5 s per cell (about 2 minutes)")
    ap.add_argument("--sluice-bin", help="sluice binary (default: $SLUICE_BIN or .build-static/release/sluice, what `make release` builds)")
    ap.add_argument("--build-sluice", action="store_true",
                    help="if the binary is missing, run `make release` first")
    ap.add_argument("--out", default=str(HERE / "results"), help="output directory (default: %(default)s)")
    ap.add_argument("--rounds", type=int, help="rounds (default 1 quick, 3 full)")
    ap.add_argument("--duration", type=int, help="seconds per cell (default 5 quick, 12 full)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default %(default)s)")
    ap.add_argument("--h2-clients", type=int, default=8, help="h2load connections (default %(default)s)")
    ap.add_argument("--h2-streams", type=int, default=8, help="h2load streams per connection (default %(default)s)")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="comma list (default %(default)s)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list (default %(default)s)")
    ap.add_argument("--scaling", action="store_true",
                    help="also: 2 threads vs 1 thread, unpinned, small responses (Sluice; nginx/HAProxy for reference)")
    ap.add_argument("--idle-conns", type=int, nargs="?", const=10000, default=None, metavar="N",
                    help="also: RSS cost of N idle keep-alive connections (default N=10000)")
    ap.add_argument("--no-matrix", action="store_true", help="skip the main scenario x proxy matrix")
    ap.add_argument("--ws-connections", type=int, default=50, help="ws: WebSocket sessions (default %(default)s)")
    ap.add_argument("--ws-size", type=int, default=64, help="ws: message size in bytes (default %(default)s)")
    ap.add_argument("--ws-depth", type=int, default=1,
                    help="ws: messages in flight per session (default %(default)s: the next is sent when the echo arrives)")
    ap.add_argument("--no-install", action="store_true", help="never apt-get/pip install anything")
    ap.add_argument("--sluice-bin-b", metavar="PATH",
                    help="A/B: a second sluice binary, measured as proxy `sluice-b` in the same rounds "
                         "(added to --proxies), with its own ratios")
    a = ap.parse_args(argv)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (5 if a.quick else 12)
    a.proxies = [p for p in a.proxies.split(",") if p]
    if a.sluice_bin_b and "sluice-b" not in a.proxies:
        a.proxies.append("sluice-b")
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    for p in a.proxies:
        if p not in PROXY_CLASSES:
            ap.error(f"unknown proxy {p!r}")
    for s in a.scenarios:
        if s not in SCENARIOS:
            ap.error(f"unknown scenario {s!r}")
    if "ws" in a.scenarios and DIRECT not in a.proxies:
        a.proxies.append(DIRECT)  # the reference: the load generator straight to the WebSocket origin
    return a


def main(argv=None) -> int:
    global PIN_OK, SLUICE_REASON, NOFILE, WS_BIN
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    out = Path(args.out).resolve()
    work = out / "work"
    raw_dir = work / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()

    ensure_tools(args)
    PIN_OK = have_two_cores() and bool(shutil.which("taskset"))
    if not PIN_OK:
        warn("fewer than 2 usable cores or no taskset: running unpinned, numbers are less meaningful")
    idle_n = args.idle_conns or 0
    nofile = NOFILE = raise_nofile(max(65536, 2 * idle_n + 8192))
    max_conns = max(4096, idle_n + 1024)

    sbin, SLUICE_REASON = resolve_sluice(args)
    Sluice.binary = sbin or ""
    if args.sluice_bin_b:
        b = Path(args.sluice_bin_b).resolve()
        SluiceB.binary = str(b) if b.is_file() and os.access(b, os.X_OK) else ""
        if not SluiceB.binary:
            warn(f"--sluice-bin-b {b}: not an executable; sluice-b cells will be n/a")
    if not sbin and "sluice" in args.proxies:
        warn(SLUICE_REASON + " (build it with `make release`, pass --sluice-bin "
             "or SLUICE_BIN, or add --build-sluice); Sluice cells will be n/a")

    origin_bin = build_origin(work)
    origin_port = free_port()
    origin = REG.spawn(pinned("0", [str(origin_bin), str(origin_port)]), work / "origin.log")
    if not wait_http(origin_port, "/healthz", time.monotonic() + 10, origin):
        raise SystemExit("origin did not start: " + (work / "origin.log").read_text()[-300:])
    # The edge variant's groups have 3 endpoints: the origin and two more like it (also on core 0).
    variants = sorted({SCENARIOS[s].get("variant", "default") for s in args.scenarios})
    origin_ports = [origin_port]
    extra_origins = []
    if "edge" in variants and not args.no_matrix:
        for i in (2, 3):
            port = free_port()
            extra = REG.spawn(pinned("0", [str(origin_bin), str(port)]), work / f"origin{i}.log")
            if not wait_http(port, "/healthz", time.monotonic() + 10, extra):
                raise SystemExit(f"origin {i} did not start: " + (work / f"origin{i}.log").read_text()[-300:])
            origin_ports.append(port)
            extra_origins.append(extra)

    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "kernel": platform.release(),
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
        "cores": os.cpu_count(), "pinned": PIN_OK, "nofile": nofile,
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds, "duration_s": args.duration, "wrk_connections": args.connections,
        "h2load": f"{args.h2_clients} connections x {args.h2_streams} streams",
        "layout": "origin + load generator on core 0, proxy (1 worker/thread) on core 1" if PIN_OK else "unpinned",
        "sluice_bin": sbin, "git_rev": (run_quiet(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], 10)
                                        or subprocess.CompletedProcess([], 1, "", "")).stdout.strip() or None,
        "tools": {},
    }
    for exe, cmd in (("wrk", ["wrk", "-v"]), ("h2load", ["h2load", "--version"])):
        r = run_quiet(cmd, 10) if shutil.which(exe) else None
        meta["tools"][exe] = ((r.stdout + r.stderr).strip().splitlines() or ["?"])[0] if r else None

    # The ws variant's origin: ws.c's echo server (it also answers plain GETs, for readiness and warm-up).
    ws_port = None
    if "ws" in variants and not args.no_matrix:
        WS_BIN = build_ws_tool(work)
        ws_port = free_port()
        ws_origin = REG.spawn(pinned("0", [str(WS_BIN), "server", str(ws_port)]), work / "ws-origin.log")
        if not wait_http(ws_port, "/small", time.monotonic() + 10, ws_origin):
            raise SystemExit("ws origin did not start: " + (work / "ws-origin.log").read_text()[-300:])
        extra_origins.append(ws_origin)
        meta["ws"] = {"sessions": args.ws_connections, "message_bytes": args.ws_size, "depth": args.ws_depth}

    # The tls variant: one certificate for the three proxies, the clients' OpenSSL config and handshake counter.
    if "tls" in variants and not args.no_matrix:
        try:
            TLS.update(tls_material(work))
        except Unavailable as e:
            raise SystemExit(f"tls scenarios: {e}")
        shim = build_tlsstat(work)
        if shim:
            TLS["shim"] = shim
        subj = run_quiet(["openssl", "x509", "-in", str(TLS["cert"]), "-noout", "-subject", "-ext", "subjectAltName"], 10)
        meta["tls"] = {
            "certificate": "ECDSA P-256 leaf for localhost/127.0.0.1 signed by an ECDSA P-256 CA, made by the "
                           "openssl CLI in " + str(TLS["cert"].parent) + "; the leaf alone is served",
            "certificate_text": subj.stdout.strip() if subj else None,
            "client": f"wrk/h2load via OPENSSL_CONF: TLS 1.3 only, {TLS_CIPHERSUITE}, {TLS_GROUP}; no verification",
            "url_host": TLS_HOST, "session_resumption": "server defaults, on in all three (tickets)",
            "handshake_counter": bool(TLS.get("shim")),
            "openssl": (run_quiet(["openssl", "version"], 10) or subprocess.CompletedProcess([], 1, "", "")).stdout.strip(),
        }

    results: dict = {"meta": meta, "scenarios": {s: SCENARIOS[s]["desc"] for s in args.scenarios},
                     "proxies": {}}
    log(f"Sluice load benchmark: {meta['mode']}, {args.rounds} round(s) x {args.duration}s per cell, "
        f"{meta['layout']}; out: {out}")

    # ---------------------------------------------------------------- main matrix
    if not args.no_matrix:
        # One instance per proxy and configuration variant (`default`: one upstream, the flags'
        # short form; `edge`: the 20-route table); each scenario runs on its variant's instance.
        running: dict[tuple[str, str], Proxy] = {}
        reasons: dict[tuple[str, str], str] = {}
        for name in args.proxies:
            for variant in variants:
                if name == DIRECT and variant != "ws":
                    continue  # `direct` exists for the ws scenario only
                px, why = start_proxy(name, work, ws_port if variant == "ws" else origin_port, 1, "1", max_conns,
                                      variant=variant, origin_ports=origin_ports)
                info = {"available": px is not None}
                if px:
                    running[(name, variant)] = px
                    info["version"] = px.version()
                    if name != DIRECT:
                        info["command"] = (px.dir / "cmd.txt").read_text().strip()
                        if px.tls:
                            info["tls"] = tls_facts(px.port)
                        warm_up(px, 1 if args.quick else 2, "0", args.connections)
                else:
                    info["reason"] = reasons[(name, variant)] = why
                    warn(f"{name} ({variant}): n/a: {why}")
                if variant == "default":
                    results["proxies"].setdefault(name, {}).update(info)
                else:
                    results["proxies"].setdefault(name, {}).setdefault("variants", {})[variant] = info
                label = name if variant == "default" else f"{name} ({variant})"
                tls_note = ""
                if info.get("tls"):
                    t = info["tls"]
                    tls_note = (f"; TLS: {t['error']}" if "error" in t else
                                f"; TLS to a default client: {t['version_default_client']} {t['cipher_default_client']}, "
                                f"ALPN {t['alpn_h2_offer']}/{t['alpn_http11_offer']}, "
                                f"resumes a session: {'yes' if t['resumes_session'] else 'no'}")
                log(f"  {label:<16} {'ready ' + info.get('version', '') if px else 'n/a'}{tls_note}")
        cells: list[dict] = []
        order = [p for p in args.proxies]
        try:
            for rnd in range(1, args.rounds + 1):
                k = (rnd - 1) % len(order)
                rorder = order[k:] + order[:k]  # rotate so no proxy is always first
                log(f"round {rnd}/{args.rounds}: order {', '.join(rorder)}")
                for s in args.scenarios:
                    variant = SCENARIOS[s].get("variant", "default")
                    for name in rorder:
                        if name == DIRECT and variant != "ws":
                            continue
                        px = running.get((name, variant))
                        if px is None:
                            c = {"proxy": name, "scenario": s, "round": rnd, "status": "n/a",
                                 "reason": reasons.get((name, variant), "unavailable")}
                        else:
                            if not px.alive():  # crashed earlier: one restart attempt per cell
                                try:
                                    px.start()
                                except Unavailable:
                                    pass
                            c = measure(px, s, args, raw_dir, rnd)
                        cells.append(c)
                        if px is not None or rnd == 1:
                            log(cell_line(c))
        finally:
            for (name, variant), px in running.items():
                code = px.stop()
                info = results["proxies"][name] if variant == "default" else results["proxies"][name]["variants"][variant]
                info["exit_code"] = code
                if name in SLUICES:
                    log(f"  {name}{'' if variant == 'default' else ' (' + variant + ')'} stopped on SIGTERM, exit code {code}")
        summ = summarise(cells, args.scenarios, args.proxies)
        rat = ratios(summ)
        results.update(cells=cells, summary=summ, ratios=rat)
        tbl = table(summ, rat, args.proxies)
        log("")
        log(f"Medians over {args.rounds} round(s), {args.duration}s per cell; CPU = proxy process tree "
            f"utime+stime per 10k requests; RSS = peak (VmHWM) of all proxy processes")
        log(tbl)
        notes = []
        for s in args.scenarios:
            own = rat.get(s, {}).get("cpu_vs_own_base")
            if own is not None:
                parts = [f"{p} {fmt(own.get(p), '.3f')}x" for p in args.proxies if p != DIRECT]
                notes.append(f"{s}: CPU per request over the same proxy's `{SCENARIOS[s]['base']}`: {', '.join(parts)}"
                             + (" (issue 10: Sluice within 1.05x)" if s == "edge" else ""))
        for s in args.scenarios:
            if SCENARIOS[s].get("variant") != "tls":
                continue
            parts = []
            for p in args.proxies:
                e = summ[s].get(p, {})
                if e.get("status") == "ok" and e.get("handshakes_per_request") is not None:
                    parts.append(f"{p} {e['handshakes_per_request']:.3f} handshakes/request, "
                                 f"{fmt(e.get('resumed_share'), '.0%')} resumed")
            if parts:
                notes.append(f"{s} (counted in the client, tlsstat.c): {'; '.join(parts)}")
        for n in notes:
            log(n)
        title = (f"{meta['mode']}: {args.rounds} round(s) x {args.duration}s, proxy pinned to 1 core, "
                 f"{args.connections} conns (h2: {meta['h2load']})")
        err = chart(summ, args.proxies, out / "results.png", title)
        if err:
            warn(err)
        else:
            log(f"chart: {out / 'results.png'}")
        md = f"# Sluice load benchmark ({meta['date']})\n\n{title}\n\n{tbl}\n"
        if notes:
            md += "\n" + "".join(f"* {n}\n" for n in notes)
        if "ws" in args.scenarios:
            ws_proxies = [p for p in args.proxies if p in summ["ws"]]
            wtbl = ws_table(summ["ws"], rat.get("ws", {}), ws_proxies)
            wtitle = (f"ws: {args.ws_connections} WebSocket sessions, {args.ws_size}-byte binary messages echoed, "
                      f"{args.ws_depth} in flight per session; {args.rounds} round(s) x {args.duration}s; "
                      f"proxy pinned to 1 core")
            log("")
            log(wtitle)
            log(wtbl)
            md += f"\n{wtitle}\n\n{wtbl}\n"
            err = ws_chart(summ["ws"], ws_proxies, out / "results-ws.png", wtitle)
            if err:
                warn(err)
            else:
                log(f"chart: {out / 'results-ws.png'}")
        (out / "results.md").write_text(md)

    # ---------------------------------------------------------------- scaling
    if args.scaling:
        log("")
        log("scaling: small responses, 2 threads vs 1, proxy and load generator unpinned")
        sc_res: dict = {}
        insts: dict[tuple[str, int], Proxy] = {}
        for name in [p for p in args.proxies if p != DIRECT]:
            for th in (1, 2):
                px, why = start_proxy(name, work, origin_port, th, None, max_conns, tag=f"{name}-scale-t{th}")
                if px:
                    insts[(name, th)] = px
                    warm_up(px, 1, None, args.connections)
                else:
                    sc_res.setdefault(name, {})[f"t{th}"] = {"status": "n/a", "reason": why}
        cells = []
        try:
            for rnd in range(1, args.rounds + 1):
                for name in [p for p in args.proxies if p != DIRECT]:
                    ths = (1, 2) if rnd % 2 else (2, 1)
                    for th in ths:
                        px = insts.get((name, th))
                        if not px:
                            continue
                        c = measure(px, "small", args, raw_dir, rnd, core=None, wrk_threads=2)
                        c["proxy"] = name
                        cells.append(c)
                        log(cell_line(c))
        finally:
            for px in insts.values():
                px.stop()
        for name in [p for p in args.proxies if p != DIRECT]:
            for th in (1, 2):
                ok = [c for c in cells if c["proxy"] == name and c["threads"] == th and c["status"] == "ok"]
                if ok:
                    sc_res.setdefault(name, {})[f"t{th}"] = {
                        "status": "ok", "rps": statistics.median(c["rps"] for c in ok),
                        "p99_ms": statistics.median(c["p99_ms"] for c in ok if c.get("p99_ms") is not None),
                        "cpu_util": statistics.median(c["cpu_util"] for c in ok)}
                elif f"t{th}" not in sc_res.get(name, {}):
                    bad = [c for c in cells if c["proxy"] == name and c["threads"] == th]
                    sc_res.setdefault(name, {})[f"t{th}"] = {
                        "status": "n/a", "reason": (bad[0].get("reason") if bad else "not run")}
            e = sc_res.get(name, {})
            if e.get("t1", {}).get("status") == "ok" and e.get("t2", {}).get("status") == "ok":
                e["speedup"] = e["t2"]["rps"] / e["t1"]["rps"]
        results["scaling"] = {"cells": cells, "summary": sc_res}
        log("scaling (median req/s):")
        for name, e in sc_res.items():
            t1, t2 = e.get("t1", {}), e.get("t2", {})
            log(f"  {name:<8} 1 thread: {fmt(t1.get('rps'), '.0f'):>8}   2 threads: {fmt(t2.get('rps'), '.0f'):>8}"
                f"   speedup: {fmt(e.get('speedup'), '.2f')}x"
                + ("" if t1.get("status") == "ok" else f"   ({t1.get('reason', '')[:120]})"))

    # ---------------------------------------------------------------- idle connections
    if args.idle_conns:
        log("")
        log(f"idle connections: {args.idle_conns} keep-alive connections (HTTP/1.1, then h2c), one GET each, then idle")
        idle_res: dict = {}
        for name in [p for p in args.proxies if p != DIRECT]:
            px, why = start_proxy(name, work, origin_port, 1, "1", max_conns, tag=f"{name}-idle")
            if not px:
                idle_res[name] = {"status": "n/a", "reason": why}
                log(f"  {name:<8} n/a ({why[:120]})")
                continue
            try:
                warm_up(px, 1, "0", args.connections)
                for h2 in (False, True):
                    key = name + ("-h2c" if h2 else "")
                    r = idle_conns_test(px, args.idle_conns, h2=h2)
                    r["status"] = "ok" if r["opened"] else "n/a"
                    idle_res[key] = r
                    log(f"  {key:<12} opened {r['opened']}/{r['requested']} (still open {r['still_open']}), "
                        f"RSS {r['rss_before_kib'] / 1024:.1f} -> {r['rss_open_kib'] / 1024:.1f} MiB "
                        f"(after close {r['rss_after_close_kib'] / 1024:.1f}): "
                        f"{fmt(r['kib_per_conn'], '.2f')} KiB/conn" + (f"  [{r['error']}]" if r.get("error") else ""))
            finally:
                px.stop()
        results["idle_conns"] = idle_res

    for extra in extra_origins:
        REG.stop(extra)
    REG.stop(origin)
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"\nresults: {out / 'results.json'} (total {meta['elapsed_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
