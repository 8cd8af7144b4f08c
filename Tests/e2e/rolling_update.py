#!/usr/bin/env python3
"""End-to-end Kubernetes rolling-update drain test for Sluice (stdlib only).

It plays a rolling update on 127.0.0.1:

    load generators ──► balancer ("Service", kube-proxy model) ──┬──► sluice ──► origin A   (old pod)
                                                                  └──► origin B               (new pod)

Load runs for --duration seconds (pooled keep-alive clients, new-connection-per-request clients,
slow requests, 256 KiB uploads checked by sha256, chunked streaming responses; never a retry). At
--signal-at seconds the proxy is signalled (SIGTERM for sluice, SIGQUIT = graceful quit for the nginx
stand-in) and the balancer is told the pod is terminating; it removes the proxy's endpoint
--removal-lag seconds later, whatever the readiness says, and never cuts spliced connections.

Recorded: requests, failures by kind, requests in flight at the signal and how many completed, the
proxy's exit code and time from signal to exit, its peak RSS, and the /readyz timeline.

    python3 Tests/e2e/rolling_update.py --drain-delay 5s --removal-lag 3 --json /tmp/e2e.json
    python3 Tests/e2e/rolling_update.py --target nginx

SLUICE_BIN (or --sluice-bin) names the binary; default .build/debug/sluice under the repo root.

Drain features (issue 13): --drain-report FILE passes Sluice's own timeline through and reads it back
(result "drain_report"); --ready-watch makes the balancer follow the pod's /readyz too (it removes the
endpoint --removal-lag s after /readyz stops answering 200 and re-adds it on 200, as an endpoints
controller following readiness); --rehearse-at S --rehearse-for 6s sends POST /drain/rehearse S seconds
into the load and relates Sluice's figures to the balancer's removal (result "rehearsal"); --poll-drain
samples /status and /metrics every 200 ms from the signal to the exit (result "drain_polls").

--h2 N adds N HTTP/2 load processes (h2client.py: h2c prior knowledge, multiplexed streams on pooled
connections; needs the `h2` package for hpack and hyperframe). The new pod then runs a second sluice in
front of origin B, since an HTTP/2 client needs an HTTP/2 endpoint after the move.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
PY = sys.executable or "python3"
NGINX = "/usr/sbin/nginx"
SLUICE_LIKE = ("sluice", "reference")


def default_sluice_bin() -> Path:
    env = os.environ.get("SLUICE_BIN")
    if env:
        p = Path(env)
        return p if p.is_absolute() else (REPO_ROOT / p)
    return REPO_ROOT / ".build" / "debug" / "sluice"


def parse_duration(s: str | float | int) -> float:
    """'500ms', '5s', '1m30s', '2' -> seconds."""
    if isinstance(s, (int, float)):
        return float(s)
    s = s.strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", s):
        if m.start() != pos:
            raise ValueError(f"bad duration {s!r}")
        pos = m.end()
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if pos != len(s) or pos == 0:
        raise ValueError(f"bad duration {s!r}")
    return total


# --------------------------------------------------------------------------------------------------
# child processes

_libc = None


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the harness dies, so nothing is left running."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Child:
    """A child process whose stdout/stderr lines are collected (with arrival times) by threads."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, on_stdout=None, on_stderr=None,
                 stdin: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.stdout_lines: list[tuple[float, str]] = []
        self.stderr_lines: list[tuple[float, str]] = []
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w", buffering=1)
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            preexec_fn=_die_with_parent, cwd=str(log_dir), text=True, encoding="utf-8",
            errors="replace", bufsize=1)
        self.pid = self.proc.pid
        self.exit_time: float | None = None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines, on_stdout, "out"),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines, on_stderr, "err"),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink, cb, tag) -> None:
        try:
            for line in stream:
                now = time.monotonic()
                line = line.rstrip("\n")
                sink.append((now, line))
                with self._lock:
                    try:
                        self._log.write(f"{now:.6f} {tag} {line}\n")
                    except ValueError:
                        pass
                if cb is not None:
                    try:
                        cb(now, line)
                    except Exception as e:  # never let a parser bug kill the pump
                        print(f"[{self.name}] callback error: {e!r}", file=sys.stderr)
        except (ValueError, OSError):
            pass

    def wait_for_line(self, pattern: str, timeout: float, stream: str = "stdout") -> re.Match | None:
        rx = re.compile(pattern)
        lines = self.stdout_lines if stream == "stdout" else self.stderr_lines
        deadline = time.monotonic() + timeout
        seen = 0
        for _ in range(int(timeout / 0.02) + 2):
            while seen < len(lines):
                m = rx.search(lines[seen][1])
                seen += 1
                if m:
                    return m
            if self.proc.poll() is not None and seen >= len(lines):
                time.sleep(0.05)
                if seen >= len(lines):
                    return None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)
        return None

    def send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError, AttributeError):
            pass

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and self.exit_time is None:
            self.exit_time = time.monotonic()
        return rc

    def stop(self, sig=signal.SIGTERM, timeout: float = 3.0) -> None:
        """Ends this child (by its own PID only)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    pass
            except ProcessLookupError:
                pass
        for t in self._threads:
            t.join(1.0)
        with self._lock:
            self._log.close()

    def tail(self, n: int = 20) -> str:
        lines = [l for _, l in sorted(self.stdout_lines + self.stderr_lines)]
        return "\n".join(lines[-n:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 0.5) -> tuple[int | str, bytes]:
    """Tiny blocking GET on 127.0.0.1; returns (status or error kind, body)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
            buf = b""
            for _ in range(1000):
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except ConnectionRefusedError:
        return "refused", b""
    except socket.timeout:
        return "timeout", b""
    except OSError as e:
        return f"error:{e.__class__.__name__}", b""
    head, _, body = buf.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return "bad_response", buf[:100]


def http_request(port: int, method: str, path: str, timeout: float = 0.5,
                 body: bytes = b"") -> tuple[int | str, dict, bytes]:
    """Blocking HTTP/1.1 request on 127.0.0.1 (Connection: close); returns (status or error kind,
    lower-case headers, body). Reads up to Content-Length, else until the server closes."""
    buf = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                      % (method.encode(), path.encode(), len(body), body))
            want = None
            for _ in range(100_000):
                if want is None and b"\r\n\r\n" in buf:
                    head = buf.partition(b"\r\n\r\n")[0]
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    if m:
                        want = len(head) + 4 + int(m.group(1))
                if want is not None and len(buf) >= want:
                    break
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except ConnectionRefusedError:
        return "refused", {}, b""
    except socket.timeout:
        return "timeout", {}, buf
    except OSError as e:
        return f"error:{e.__class__.__name__}", {}, b""
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    try:
        return int(lines[0].split(b" ", 2)[1]), headers, rest
    except (IndexError, ValueError):
        return "bad_response", headers, buf[:100]


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled Prometheus sample `name`, or None when absent."""
    m = re.search(r"(?m)^%s(?:\{\})?\s+(\S+)" % re.escape(name), text)
    if not m:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def _tls_handshake(port: int, ca: Path) -> int | str:
    """200 once a TLS handshake (SNI a.test, verified against `ca`) completes on 127.0.0.1:port."""
    import ssl
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw, \
                ctx.wrap_socket(raw, server_hostname="a.test"):
            return 200
    except OSError as e:
        return f"tls:{e.__class__.__name__}"


# --------------------------------------------------------------------------------------------------
# pollers

class ReadinessPoller(threading.Thread):
    def __init__(self, port: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.samples: list[tuple[float, float, int | str]] = []  # (t_sent, t_done, status)
        self.stop_ev = threading.Event()

    def run(self) -> None:
        for _ in range(100_000):
            if self.stop_ev.is_set():
                return
            t = time.monotonic()
            st, _ = http_get(self.port, "/readyz", timeout=0.5)
            self.samples.append((t, time.monotonic(), st))
            self.stop_ev.wait(self.interval)

    def current(self):
        return self.samples[-1][2] if self.samples else None


class Rehearsal(threading.Thread):
    """POST /drain/rehearse?for=... to the admin port at monotonic time `at`; keeps the answer."""

    def __init__(self, port: int, at: float, for_: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.at = at
        self.for_ = for_
        self.t_sent: float | None = None
        self.t_done: float | None = None
        self.status: int | str | None = None
        self.body: bytes = b""
        self.json: dict | None = None
        self.stop_ev = threading.Event()

    def run(self) -> None:
        if self.stop_ev.wait(max(0.0, self.at - time.monotonic())):
            return
        self.t_sent = time.monotonic()
        st, _, body = http_request(self.port, "POST", f"/drain/rehearse?for={self.for_}",
                                   timeout=parse_duration(self.for_) + 15.0)
        self.t_done = time.monotonic()
        self.status, self.body = st, body
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = None


class DrainPoller(threading.Thread):
    """From `start()` until stopped: GET /status and /metrics every `interval` s."""

    METRIC = "sluice_drain_last_new_connection_seconds"

    def __init__(self, port: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        # {"t", "status_code", "drain", "phase", "metrics_status", "metric", "metric_present"}
        self.samples: list[dict] = []
        self.stop_ev = threading.Event()

    def run(self) -> None:
        for _ in range(100_000):
            if self.stop_ev.is_set():
                return
            t = time.monotonic()
            st, _, body = http_request(self.port, "GET", "/status", timeout=0.5)
            sample = {"t": t, "status_code": st, "drain": None, "phase": None, "metric": None,
                      "metric_present": False}
            if st == 200:
                try:
                    doc = json.loads(body)
                    sample["drain"] = doc.get("drain")
                    sample["phase"] = doc.get("phase")
                except (ValueError, AttributeError):
                    sample["drain"] = "unparsable"
            mst, _, mbody = http_request(self.port, "GET", "/metrics", timeout=0.5)
            sample["metrics_status"] = mst   # the proxy may exit between the two requests
            if mst == 200:
                text = mbody.decode("utf-8", "replace")
                sample["metric_present"] = re.search(r"(?m)^%s\b" % self.METRIC, text) is not None
                sample["metric"] = metric_value(text, self.METRIC)
            self.samples.append(sample)
            if st != 200 and mst != 200:
                return   # the proxy is gone
            self.stop_ev.wait(max(0.0, self.interval - (time.monotonic() - t)))


def _proc_children(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    kids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _vm(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            txt = f.read()
    except OSError:
        return None
    rss = re.search(r"VmRSS:\s+(\d+)", txt)
    hwm = re.search(r"VmHWM:\s+(\d+)", txt)
    if not rss or not hwm:
        return None
    return int(rss.group(1)), int(hwm.group(1))


class RssPoller(threading.Thread):
    """Polls VmRSS/VmHWM (KiB) of a process and its children (nginx has workers)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_hwm_kib = 0       # max over time of the sum of VmHWM
        self.peak_rss_kib = 0       # max over time of the sum of VmRSS
        self.last_rss_kib = 0
        self.samples = 0
        self.cpu_s = 0.0            # user+system CPU seconds of the process tree, last seen
        self.threads = 0
        self.stop_ev = threading.Event()

    def run(self) -> None:
        for _ in range(1_000_000):
            if self.stop_ev.is_set():
                return
            pids = [self.pid] + _proc_children(self.pid)
            rss_sum = hwm_sum = 0
            alive = False
            for p in pids:
                v = _vm(p)
                if v:
                    alive = True
                    rss_sum += v[0]
                    hwm_sum += v[1]
            if not alive:
                return
            cpu = 0.0
            for p in pids:
                try:
                    with open(f"/proc/{p}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    cpu += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                    if p == self.pid:
                        self.threads = int(fields[17])
                except (OSError, IndexError, ValueError):
                    pass
            self.cpu_s = max(self.cpu_s, cpu)
            self.samples += 1
            self.last_rss_kib = rss_sum
            self.peak_rss_kib = max(self.peak_rss_kib, rss_sum)
            self.peak_hwm_kib = max(self.peak_hwm_kib, hwm_sum)
            self.stop_ev.wait(self.interval)


# --------------------------------------------------------------------------------------------------
# the proxy under test

class Proxy:
    def __init__(self, cfg, work: Path, upstream_port: int) -> None:
        self.cfg = cfg
        self.work = work
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.phases: list[dict] = []    # {"t":..., "phase":..., "line":...}
        self.started_at: float | None = None
        self.log_records = 0
        self.log_non_json = 0
        self.log_levels: Counter = Counter()
        self.notable: list[tuple[float, str]] = []  # warnings/errors
        self.child: Child | None = None
        self.upstream_port = upstream_port
        self.pki = None                 # tls_certs.PKI with cfg.tls
        self.tls_port = free_port() if cfg.tls else None

    @property
    def endpoint_port(self) -> int:
        """The port clients use: the TLS listener with cfg.tls, else the plaintext one."""
        return self.tls_port if self.tls_port is not None else self.listen_port

    def _on_stderr(self, now: float, line: str) -> None:
        if self.cfg.target not in SLUICE_LIKE:
            if "[warn]" in line or "[error]" in line or "[alert]" in line or "[crit]" in line:
                if len(self.notable) < 200:
                    self.notable.append((now, line))
            return
        try:
            rec = json.loads(line)
        except ValueError:
            self.log_non_json += 1
            if len(self.notable) < 200:
                self.notable.append((now, line))
            return
        if not isinstance(rec, dict):
            self.log_non_json += 1
            return
        self.log_records += 1
        level = str(rec.get("level", rec.get("severity", ""))).lower()
        self.log_levels[level] += 1
        msg = rec.get("message", rec.get("msg"))
        if msg == "started" and self.started_at is None:
            self.started_at = now
        if msg == "phase":
            self.phases.append({"t": now, "phase": rec.get("phase"), "record": rec})
        if level in ("warning", "warn", "error", "critical") and len(self.notable) < 200:
            self.notable.append((now, line))

    def start(self) -> None:
        cfg = self.cfg
        if cfg.target in SLUICE_LIKE:
            binary = [str(cfg.sluice_bin)] if cfg.target == "sluice" else [PY, str(HERE / "reference_proxy.py")]
            argv = binary + [
                    "--listen", f"127.0.0.1:{self.listen_port}",
                    "--upstream", f"http://127.0.0.1:{self.upstream_port}",
                    "--admin", f"127.0.0.1:{self.admin_port}",
                    "--drain-delay", cfg.drain_delay,
                    "--drain-timeout", cfg.drain_timeout,
                    "--log-format", "json"]
            if cfg.termination_grace:
                argv += ["--termination-grace", cfg.termination_grace]
            if cfg.threads:
                argv += ["--threads", str(cfg.threads)]
            if cfg.tls:
                argv += ["--listen-tls", f"127.0.0.1:{self.tls_port}", "--tls-cert", str(self.pki.a.cert),
                         "--tls-key", str(self.pki.a.key)]
            if cfg.drain_report:
                argv += ["--drain-report", str(cfg.drain_report)]
            argv += cfg.extra_args
        else:
            argv = self._nginx_argv()
        self.argv = argv
        self.child = Child(cfg.target, argv, self.work, on_stderr=self._on_stderr)

    def _nginx_argv(self) -> list[str]:
        prefix = self.work / "nginx"
        for d in ("conf", "logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        tls = ""
        if self.cfg.tls:
            tls = (f"\n        listen 127.0.0.1:{self.tls_port} ssl backlog=4096;"
                   f"\n        ssl_certificate {self.pki.a.cert};\n        ssl_certificate_key {self.pki.a.key};")
        conf = f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log stderr notice;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream origin {{ server 127.0.0.1:{self.upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{self.listen_port} backlog=4096;{tls}
        client_max_body_size 16m;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
    server {{
        listen 127.0.0.1:{self.admin_port};
        location = /readyz {{ return 200 "ready"; }}
        location = /livez {{ return 200 "ok"; }}
    }}
}}
"""
        (prefix / "conf" / "nginx.conf").write_text(conf)
        return [NGINX, "-p", str(prefix) + "/", "-c", str(prefix / "conf" / "nginx.conf"), "-e", "stderr"]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 2):
            rc = self.child.poll()
            if rc is not None:
                raise RuntimeError(f"{self.cfg.target} exited with {rc} during start-up "
                                   f"({' '.join(self.argv)}):\n{self.child.tail(30)}")
            st, _ = http_get(self.admin_port, "/readyz", timeout=0.3)
            lst, _ = http_get(self.listen_port, "/", timeout=1.0)
            if st == 200 and lst == 200 and self.tls_port is not None:
                lst = _tls_handshake(self.tls_port, self.pki.ca)
            if st == 200 and lst == 200:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.cfg.target} not ready after {timeout}s (readyz={st}, proxy={lst}):\n"
                                   f"{self.child.tail(30)}")
            time.sleep(0.05)

    @property
    def stop_signal(self) -> int:
        return signal.SIGTERM if self.cfg.target in SLUICE_LIKE else signal.SIGQUIT


# --------------------------------------------------------------------------------------------------
# analysis

def analyse(records: list[list], t0: float, t_sig: float, duration: float) -> dict:
    total = len(records)
    ok = sum(1 for r in records if r[3] == "ok")
    fails = Counter(r[3] for r in records if r[3] != "ok")
    by_client: dict[str, Counter] = defaultdict(Counter)
    served = Counter()
    for r in records:
        by_client[r[2]]["ok" if r[3] == "ok" else "failed"] += 1
        if r[3] == "ok":
            served[r[4]] += 1
    by_client_kind: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        if r[3] != "ok":
            by_client_kind[r[2]][r[3]] += 1

    # in flight across the signal: started before it, finished after it
    infl = [r for r in records if r[0] < t_sig < r[1]]
    infl_by_client: dict[str, Counter] = defaultdict(Counter)
    for r in infl:
        infl_by_client[r[2]]["completed" if r[3] == "ok" else "failed"] += 1
        if r[3] == "ok":
            infl_by_client[r[2]]["via_" + r[4]] += 1
    infl_fail = Counter(r[3] for r in infl if r[3] != "ok")

    # per-second timeline (by completion time)
    secs = int(duration + 8)
    tl = [{"second": i, "ok": 0, "failed": 0, "served": Counter(), "keepalive": Counter(), "conn_close": Counter(),
           "fail_kinds": Counter()} for i in range(secs)]
    for r in records:
        i = int(r[1] - t0)
        if 0 <= i < secs:
            if r[3] == "ok":
                tl[i]["ok"] += 1
                tl[i]["served"][r[4]] += 1
                if r[2] == "keepalive":
                    tl[i]["keepalive"][r[4]] += 1
                    if r[6]:
                        tl[i]["conn_close"][r[4]] += 1
            else:
                tl[i]["failed"] += 1
                tl[i]["fail_kinds"][r[3]] += 1
    while tl and tl[-1]["ok"] == 0 and tl[-1]["failed"] == 0:
        tl.pop()
    for row in tl:
        row["served"] = dict(sorted(row["served"].items()))
        row["conn_close"] = dict(sorted(row["conn_close"].items()))
        row["keepalive"] = dict(sorted(row["keepalive"].items()))
        row["fail_kinds"] = dict(row["fail_kinds"])

    fail_times = sorted(r[1] - t_sig for r in records if r[3] != "ok")
    in_window = sum(1 for r in records if t0 <= r[1] <= t0 + duration)
    return {
        "total": total,
        "ok": ok,
        "failed": total - ok,
        "rate_per_s": round(in_window / duration, 1) if duration > 0 else 0,
        "by_client": {k: dict(v) for k, v in sorted(by_client.items())},
        "served_by": dict(served),
        "failures_by_kind": dict(fails.most_common()),
        "failures_by_client": {k: dict(v) for k, v in sorted(by_client_kind.items())},
        "failure_window_after_signal_s": [round(fail_times[0], 3), round(fail_times[-1], 3)] if fail_times else None,
        "in_flight_at_signal": {
            "total": len(infl),
            "completed": sum(1 for r in infl if r[3] == "ok"),
            "failed": len(infl) - sum(1 for r in infl if r[3] == "ok"),
            "failures_by_kind": dict(infl_fail),
            "by_client": {k: dict(v) for k, v in sorted(infl_by_client.items())},
        },
        "per_second": tl,
    }


def readiness_verdict(samples, t_sig: float, max_delay: float = 0.5) -> dict:
    """200 before the signal; 503 within max_delay after it; never 200 again.

    samples are (t_sent, t_done, status). A poll that straddles the signal may answer either way;
    "before" means answered before the signal, "after" means sent after it."""
    before = [st for _, td, st in samples if td < t_sig]
    first_503 = next((td for _, td, st in samples if td >= t_sig and st == 503), None)
    back_to_200 = None
    if first_503 is not None:
        back_to_200 = next((ts for ts, _, st in samples if ts > first_503 and st == 200), None)
    late_200 = [ts for ts, _, st in samples
                if ts >= t_sig and st == 200 and (first_503 is None or ts < first_503)]
    problems = []
    if not before or before[-1] != 200:
        problems.append(f"not 200 just before the signal (last={before[-1] if before else None})")
    if first_503 is None:
        problems.append("never 503 after the signal")
    elif first_503 - t_sig > max_delay:
        problems.append(f"first 503 only {first_503 - t_sig:.3f}s after the signal")
    if back_to_200 is not None:
        problems.append(f"200 again {back_to_200 - t_sig:.3f}s after the signal")
    transitions = []
    last = object()
    for _, td, st in samples:
        if st != last:
            transitions.append({"t_rel_signal": round(td - t_sig, 3), "status": st})
            last = st
    return {
        "ok": not problems,
        "problems": problems,
        "first_503_after_signal_s": round(first_503 - t_sig, 3) if first_503 is not None else None,
        "200_after_signal_before_503": len(late_200),
        "polls": len(samples),
        "timeline": transitions,
    }


# --------------------------------------------------------------------------------------------------
# the run

class Config:
    target = "sluice"
    sluice_bin: Path = default_sluice_bin()
    drain_delay = "5s"
    drain_timeout = "10s"
    termination_grace: str | None = None
    threads: int | None = None
    removal_lag = 3.0
    signal_at = 3.0
    duration = 10.0
    workers = 3
    keepalive = 8
    newconn = 4
    slow = 3
    upload = 1
    stream = 1
    h2 = 0              # HTTP/2 load processes (h2client.py); the new pod then runs sluice too
    h2_conns = 2        # pooled HTTP/2 connections per h2 process
    tls = False         # clients speak TLS (to sluice's --listen-tls; the new pod is a TLS front for origin B)
    ready_watch = False             # the balancer also follows the proxy's /readyz (remove after lag, re-add on 200)
    rehearse_at: float | None = None   # seconds after the load starts: POST /drain/rehearse?for=rehearse_for
    rehearse_for = "6s"
    drain_report: str | None = None    # sluice --drain-report FILE; read back into result["drain_report"]
    poll_drain = False              # sample /status and /metrics every 200 ms from the signal to the exit
    keep_records = False            # result["records"]: every request (monotonic times), not written to --json
    think_ms = 20.0
    json_path: str | None = None
    workdir: str | None = None
    quiet = False
    extra_args: list[str] = []

    def __init__(self, **kw) -> None:
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError(f"unknown option {k}")
            setattr(self, k, v)
        self.extra_args = list(self.extra_args)

    def as_dict(self) -> dict:
        keys = [k for k in dir(Config) if not k.startswith("_") and not callable(getattr(Config, k))]
        return {k: (str(getattr(self, k)) if isinstance(getattr(self, k), Path) else getattr(self, k))
                for k in keys}


def run(cfg: Config) -> dict:
    say = (lambda *a: None) if cfg.quiet else (lambda *a: print(*a, flush=True))
    if cfg.target == "sluice" and not Path(cfg.sluice_bin).exists():
        raise FileNotFoundError(f"sluice binary not found: {cfg.sluice_bin}")
    if cfg.target.startswith("nginx") and not Path(NGINX).exists():
        raise FileNotFoundError(f"nginx not found: {NGINX}")
    if cfg.drain_report:  # sluice runs in the work directory: give it (and read back) an absolute path
        cfg.drain_report = str(Path(cfg.drain_report).resolve())
    work = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="sluice-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"[e2e] target={cfg.target} work={work}")

    children: list[Child] = []
    proxy: Proxy | None = None
    pollers: list[threading.Thread] = []
    result: dict = {"target": cfg.target, "config": cfg.as_dict(), "workdir": str(work)}
    try:
        # origins
        oa = Child("originA", [PY, str(HERE / "origin.py"), "--port", "0", "--name", "A"], work)
        children.append(oa)
        ob = Child("originB", [PY, str(HERE / "origin.py"), "--port", "0", "--name", "B"], work)
        children.append(ob)
        ma = oa.wait_for_line(r"^listening (\d+)", 10)
        mb = ob.wait_for_line(r"^listening (\d+)", 10)
        if not ma or not mb:
            raise RuntimeError(f"origins did not start:\n{oa.tail()}\n{ob.tail()}")
        port_a, port_b = int(ma.group(1)), int(mb.group(1))

        pki = None
        if cfg.tls:
            if cfg.target == "reference":
                raise ValueError("--tls needs --target sluice or nginx*")
            sys.path.insert(0, str(HERE))
            import tls_certs
            pki = tls_certs.make_pki(work / "pki")
        if cfg.tls and not cfg.h2:
            # The new pod: a TLS front (balancer.py terminating TLS) for origin B. (With --h2 it is a second
            # sluice with a TLS listener, below.)
            front = Child("tlsfrontB", [PY, str(HERE / "balancer.py"), "--port", "0", "--endpoint", f"127.0.0.1:{port_b}",
                                        "--removal-lag", "0", "--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key)],
                          work, stdin=True)
            children.append(front)
            mfront = front.wait_for_line(r"^listening (\d+)", 10)
            if not mfront:
                raise RuntimeError(f"TLS front for origin B did not start:\n{front.tail()}")
            port_b = int(mfront.group(1))

        new_pod = None
        if cfg.h2:
            # HTTP/2 clients need an HTTP/2 endpoint on the new pod too: a second sluice before origin B.
            if cfg.target != "sluice":
                raise ValueError("HTTP/2 clients (--h2) need --target sluice")
            new_listen, new_admin = free_port(), free_port()
            new_tls = free_port() if cfg.tls else None
            tls_args = (["--listen-tls", f"127.0.0.1:{new_tls}", "--tls-cert", str(pki.a.cert), "--tls-key", str(pki.a.key)]
                        if cfg.tls else [])
            new_pod = Child("sluiceB", [str(cfg.sluice_bin), "--listen", f"127.0.0.1:{new_listen}",
                                        "--upstream", f"http://127.0.0.1:{port_b}", "--admin", f"127.0.0.1:{new_admin}",
                                        "--drain-delay", "0s", "--drain-timeout", "5s", "--log-format", "json", *tls_args],
                            work)
            children.append(new_pod)
            for _ in range(600):
                if new_pod.poll() is not None:
                    raise RuntimeError(f"new-pod sluice exited during start-up:\n{new_pod.tail()}")
                if http_get(new_admin, "/readyz", timeout=0.3)[0] == 200 and (
                        new_tls is None or _tls_handshake(new_tls, pki.ca) == 200):
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"new-pod sluice not ready:\n{new_pod.tail()}")
            port_b = new_tls if cfg.tls else new_listen

        # proxy (the old pod)
        proxy = Proxy(cfg, work, port_a)
        proxy.pki = pki
        proxy.start()
        children.append(proxy.child)
        t_launch = time.monotonic()
        proxy.wait_ready(30)
        result["proxy_argv"] = proxy.argv
        say(f"[e2e] {cfg.target} pid={proxy.child.pid} listen={proxy.listen_port} admin={proxy.admin_port} "
            f"ready after {time.monotonic() - t_launch:.2f}s"
            + (f" (started log line: {'yes' if proxy.started_at else 'NO'})" if cfg.target in SLUICE_LIKE else ""))

        # the Service
        ep_proxy = f"127.0.0.1:{proxy.endpoint_port}"
        ep_b = f"127.0.0.1:{port_b}"
        bal_events: list[dict] = []
        bal_stats: list[dict] = []

        def on_bal(now, line):
            if line.startswith("event "):
                bal_events.append(json.loads(line[6:]))
            elif line.startswith("stats "):
                bal_stats.append(json.loads(line[6:]))

        bal_argv = [PY, str(HERE / "balancer.py"), "--port", "0", "--endpoint", ep_proxy,
                    "--endpoint", ep_b, "--removal-lag", str(cfg.removal_lag)]
        if cfg.ready_watch:
            bal_argv += ["--watch", f"{ep_proxy}=127.0.0.1:{proxy.admin_port}", "--ready-interval", "0.05"]
        bal = Child("balancer", bal_argv, work, on_stdout=on_bal, stdin=True)
        children.append(bal)
        mbal = bal.wait_for_line(r"^listening (\d+)", 10)
        if not mbal:
            raise RuntimeError(f"balancer did not start:\n{bal.tail()}")
        port_bal = int(mbal.group(1))

        # pollers
        rp = ReadinessPoller(proxy.admin_port)
        rp.start()
        rss = RssPoller(proxy.child.pid)
        rss.start()
        pollers += [rp, rss]

        # load
        t0 = time.monotonic() + 1.0
        rehearsal = None
        if cfg.rehearse_at is not None and cfg.target in SLUICE_LIKE:
            rehearsal = Rehearsal(proxy.admin_port, t0 + cfg.rehearse_at, cfg.rehearse_for)
            rehearsal.start()
            pollers.append(rehearsal)
        drain_poller = DrainPoller(proxy.admin_port) if cfg.poll_drain and cfg.target in SLUICE_LIKE else None
        progress: dict[int, dict] = {}

        def on_prog(i):
            def cb(now, line):
                if line.startswith("progress "):
                    progress[i] = json.loads(line[9:])
            return cb

        workers = []
        for i in range(cfg.workers):
            out = work / f"worker{i}.json"
            argv = [PY, str(HERE / "loadgen.py"), "--port", str(port_bal), "--names", "A,B",
                    "--start", repr(t0), "--duration", str(cfg.duration), "--out", str(out),
                    "--keepalive", str(cfg.keepalive), "--newconn", str(cfg.newconn),
                    "--slow", str(cfg.slow), "--upload", str(cfg.upload), "--stream", str(cfg.stream),
                    "--think-ms", str(cfg.think_ms), "--seed", str(i + 1)]
            if cfg.tls:
                # Both pods serve the Service's one name (a.test), verified against the test CA.
                argv += ["--tls-ca", str(pki.ca), "--sni", "a.test"]
            w = Child(f"worker{i}", argv, work, on_stdout=on_prog(i))
            children.append(w)
            workers.append((w, out))
        for j in range(cfg.h2):
            i = cfg.workers + j
            out = work / f"h2worker{j}.json"
            # Over TLS: h2client.py's process with TLS connections, ALPN h2 (tls_h2client.py).
            client = ["tls_h2client.py", "--tls-ca", str(pki.ca), "--sni", "a.test"] if cfg.tls else ["h2client.py"]
            argv = [PY, str(HERE / client[0]), *client[1:], "--port", str(port_bal), "--names", "A,B",
                    "--start", repr(t0), "--duration", str(cfg.duration), "--out", str(out),
                    "--conns", str(cfg.h2_conns), "--think-ms", str(cfg.think_ms), "--seed", str(100 + j)]
            w = Child(f"h2worker{j}", argv, work, on_stdout=on_prog(i))
            children.append(w)
            workers.append((w, out))
        say(f"[e2e] balancer :{port_bal} endpoints=[{cfg.target} {ep_proxy}, originB {ep_b}] "
            f"lag={cfg.removal_lag}s; {cfg.workers} load workers + {cfg.h2} HTTP/2 workers for {cfg.duration}s, "
            f"signal at +{cfg.signal_at}s")

        t_sig_planned = t0 + cfg.signal_at
        t_sig: float | None = None
        t_kill: float | None = None
        next_print = t0 + 1.0
        last_ok = 0
        hard_end = t0 + cfg.duration + 30.0
        proxy_exit_deadline = None
        for _ in range(100_000):
            now = time.monotonic()
            if t_sig is None and now >= t_sig_planned:
                # termination starts: the pod is signalled (unless a preStop sleep runs first) and
                # the endpoint removal starts on its way to the balancer
                if cfg.target != "nginx-prestop":
                    os.kill(proxy.child.pid, proxy.stop_signal)
                t_sig = time.monotonic()
                bal.send(f"terminate {ep_proxy}")
                if drain_poller is not None:
                    drain_poller.start()
                    pollers.append(drain_poller)
                if cfg.target == "nginx-prestop":
                    t_kill = t_sig + parse_duration(cfg.drain_delay)
                    say(f"[e2e] +{t_sig - t0:.2f}s termination starts: preStop sleep {cfg.drain_delay}, "
                        f"balancer removes nginx in {cfg.removal_lag}s")
                else:
                    say(f"[e2e] +{t_sig - t0:.2f}s sent {signal.Signals(proxy.stop_signal).name} to "
                        f"{cfg.target}; balancer removes it in {cfg.removal_lag}s")
                grace = parse_duration(cfg.drain_delay) + (parse_duration(cfg.drain_timeout)
                                                           if cfg.target in SLUICE_LIKE else 15.0)
                proxy_exit_deadline = t_sig + grace + 5.0
            if t_kill is not None and now >= t_kill:
                os.kill(proxy.child.pid, proxy.stop_signal)
                t_kill = None
                say(f"[e2e] +{time.monotonic() - t0:.2f}s preStop sleep over: sent "
                    f"{signal.Signals(proxy.stop_signal).name} to nginx")
            proxy.child.poll()
            if now >= next_print:
                ok = sum(p.get("ok", 0) for p in progress.values())
                fail = sum(p.get("fail", 0) for p in progress.values())
                ph = proxy.phases[-1]["phase"] if proxy.phases else ("-" if cfg.target not in SLUICE_LIKE else "serving?")
                rc = proxy.child.proc.returncode
                say(f"[e2e] +{now - t0:5.1f}s ok={ok:6d} fail={fail:4d} rate={ok - last_ok:5d}/s "
                    f"readyz={rp.current()} phase={ph} {cfg.target}="
                    f"{'running' if rc is None else f'exited({rc})'} rss={rss.last_rss_kib // 1024}MiB")
                last_ok = ok
                next_print += 1.0
            workers_done = all(w.proc.poll() is not None for w, _ in workers)
            proxy_done = proxy.child.proc.poll() is not None
            if workers_done and t_sig is not None and (proxy_done or now > proxy_exit_deadline):
                break
            if now > hard_end and (proxy_exit_deadline is None or now > proxy_exit_deadline):
                break
            time.sleep(0.05)

        # proxy's exit
        rc = proxy.child.poll()
        if rc is None:
            say(f"[e2e] {cfg.target} still running {time.monotonic() - t_sig:.1f}s after the signal: killing it")
            proxy.child.proc.kill()
            proxy.child.proc.wait(5)
            exit_code, exit_after = None, None
        else:
            exit_code = rc
            exit_after = proxy.child.exit_time - t_sig if t_sig else None
        for p in pollers:
            p.stop_ev.set()
        for p in pollers:
            p.join(2)

        # balancer stats
        bal.send("stats")
        for _ in range(100):
            if bal_stats:
                break
            time.sleep(0.02)
        bal.send("quit")

        # workers' records
        records: list[list] = []
        clients = Counter()
        h2_stats = Counter()
        examples = []
        for w, out in workers:
            if w.proc.poll() is None:
                w.stop()
            try:
                data = json.loads(out.read_text())
            except (OSError, ValueError) as e:
                raise RuntimeError(f"worker {w.name} left no results ({e}):\n{w.tail()}")
            records += data["records"]
            for k in ("connections_opened", "pool_discards", "connection_close_seen"):
                clients[k] += data[k]
            for k, v in data.get("h2", {}).items():
                h2_stats[k] += v
            examples += data["fail_examples"]

        res = analyse(records, t0, t_sig, cfg.duration)
        if cfg.keep_records:
            result["records"] = records
        result["t0_monotonic"] = t0
        result["t_signal_monotonic"] = t_sig
        if rehearsal is not None:
            result["rehearsal"] = rehearsal_summary(rehearsal, bal_events, ep_proxy, records, list(rp.samples))
        if drain_poller is not None:
            result["drain_polls"] = [{**{k: v for k, v in smp.items() if k != "t"},
                                      "t_rel_signal": round(smp["t"] - t_sig, 3)} for smp in drain_poller.samples]
        if cfg.drain_report:
            result["drain_report_path"] = str(cfg.drain_report)
            try:
                result["drain_report"] = json.loads(Path(cfg.drain_report).read_text())
            except (OSError, ValueError) as e:
                result["drain_report"] = None
                result["drain_report_error"] = f"{e.__class__.__name__}: {e}"
        ready = readiness_verdict(list(rp.samples), t_sig)
        if cfg.target not in SLUICE_LIKE:
            ready["problems"] = [f"(not meaningful for {cfg.target}: its /readyz is a static stand-in)"]\
                + ready["problems"]
        examples.sort(key=lambda e: e["t"])
        seen_kinds: Counter = Counter()
        picked = []
        for e in examples:  # up to 5 of each kind, earliest first
            seen_kinds[e["kind"]] += 1
            if seen_kinds[e["kind"]] <= 5:
                picked.append(e)
        examples = picked
        for e in examples:
            e["t_rel_signal"] = round(e.pop("t") - t_sig, 3)
            e["t_start_rel_signal"] = round(e.pop("t_start") - t_sig, 3)
        result.update({
            "requests": {k: res[k] for k in ("total", "ok", "failed", "rate_per_s", "by_client", "served_by")},
            "failures": {"by_kind": res["failures_by_kind"], "by_client": res["failures_by_client"],
                         "window_after_signal_s": res["failure_window_after_signal_s"],
                         "examples": examples},
            "in_flight_at_signal": res["in_flight_at_signal"],
            "proxy": {
                "pid": proxy.child.pid,
                "signal": signal.Signals(proxy.stop_signal).name,
                "exit_code": exit_code,
                "exit_after_signal_s": round(exit_after, 3) if exit_after is not None else None,
                "peak_rss_mib": round(rss.peak_hwm_kib / 1024, 1),
                "peak_rss_sampled_mib": round(rss.peak_rss_kib / 1024, 1),
                "cpu_seconds": round(rss.cpu_s, 2),
                "threads": rss.threads,
                "phases": [{"t_rel_signal": round(p["t"] - t_sig, 3), "phase": p["phase"]} for p in proxy.phases],
                "started_line_seen": proxy.started_at is not None,
                "log_records": proxy.log_records,
                "log_non_json_lines": proxy.log_non_json,
                "log_levels": dict(proxy.log_levels),
                "notable_log_lines": [{"t_rel_signal": round(t - t_sig, 3), "line": l[:400]}
                                      for t, l in proxy.notable[:30]],
                "log_path": str(proxy.child.log_path),
            },
            "readiness": ready,
            "balancer": {
                **({k: v for k, v in bal_stats[-1].items() if k != "events"} if bal_stats else {}),
                "events": [{**{k: v for k, v in e.items() if k != "t"}, "t_rel_signal": round(e["t"] - t_sig, 3),
                            "t_rel_t0": round(e["t"] - t0, 3)}
                           for e in bal_events],
                "proxy_endpoint": ep_proxy,
            },
            "clients": dict(clients),
            "h2": dict(h2_stats),
            "per_second": res["per_second"],
            "signal_at_s": round(t_sig - t0, 3),
        })
    finally:
        for p in pollers:
            p.stop_ev.set()
        for c in reversed(children):
            c.stop()
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps({k: v for k, v in result.items() if k != "records"},
                                                  indent=2, default=str))
    if not cfg.quiet:
        print(format_table(result), flush=True)
    return result


def rehearsal_summary(reh: "Rehearsal", bal_events: list[dict], ep_proxy: str, records: list[list],
                      ready_samples: list) -> dict:
    """The rehearsal's answer beside what the balancer and the clients saw, in seconds from the moment
    the POST was sent (Sluice's rehearsal start is within a millisecond or two of it on loopback)."""
    out: dict = {"for": reh.for_, "status": reh.status, "response": reh.json,
                 "raw_body": None if reh.json is not None else reh.body[:300].decode("latin-1")}
    if reh.t_sent is None:
        out["sent"] = False
        return out
    ts = reh.t_sent
    out["t_sent_monotonic"] = ts
    out["answered_after_s"] = round(reh.t_done - ts, 3) if reh.t_done else None
    mine = [e for e in bal_events if e.get("endpoint") == ep_proxy and e["t"] >= ts - 0.01]
    not_ready = next((e for e in mine if e["event"] == "not_ready"), None)
    removed = next((e for e in mine if e["event"] == "removed"), None)
    readded = next((e for e in mine if e["event"] == "added" and e.get("reason") == "ready"
                    and (removed is None or e["t"] >= removed["t"])), None)
    rel = lambda e: round(e["t"] - ts, 3) if e is not None else None
    out["balancer_not_ready_seen_s"] = rel(not_ready)
    out["balancer_removal_s"] = rel(removed)
    out["balancer_removal_reason"] = removed.get("reason") if removed else None
    out["balancer_readded_s"] = rel(readded)
    # the clients: new connections that reached the proxy (origin A) after the re-add
    if readded is not None:
        after = [r for r in records if r[2] == "newconn" and r[4] == "A" and r[0] >= readded["t"]]
        out["newconn_to_proxy_after_readd"] = len(after)
    out["failures_since_rehearsal"] = sum(1 for r in records if r[3] != "ok" and r[1] >= ts)
    # readiness seen by the harness's own poller: 503 during the window, 200 again after it
    near = [(td, st) for _, td, st in ready_samples if td >= ts - 0.2]
    out["readiness"] = [{"t_rel_rehearsal": round(td - ts, 3), "status": st}
                        for i, (td, st) in enumerate(near) if i == 0 or near[i - 1][1] != st]
    return out


def format_table(r: dict) -> str:
    req, fl, inf, px, rd = r["requests"], r["failures"], r["in_flight_at_signal"], r["proxy"], r["readiness"]
    c = r["config"]
    rows = []
    add = lambda k, v: rows.append((k, str(v)))
    add("target", r["target"] + (f"  (drain-delay {c['drain_delay']}, drain-timeout {c['drain_timeout']})"
                                  if r["target"] in SLUICE_LIKE else "  (graceful quit, SIGQUIT)"
                                  if r["target"] == "nginx"
                                  else f"  (preStop sleep {c['drain_delay']}, then SIGQUIT)"))
    if c.get("tls"):
        add("clients", "TLS (SNI a.test, verified against the test CA); new pod: "
            + ("a second sluice (TLS) before origin B" if c.get("h2") else "a TLS front for origin B"))
    add("removal lag / signal at", f"{c['removal_lag']}s / +{r['signal_at_s']}s")
    add("requests total", req["total"])
    add("requests ok", req["ok"])
    add("rate (in the load window)", f"{req['rate_per_s']}/s")
    add("served by origin", ", ".join(f"{k}={v}" for k, v in sorted(req["served_by"].items())))
    add("FAILURES", req["failed"])
    for k, v in fl["by_kind"].items():
        add(f"  {k}", v)
    if fl["window_after_signal_s"]:
        add("  failure window (s after signal)", fl["window_after_signal_s"])
    for k, v in fl["by_client"].items():
        add(f"  by client {k}", ", ".join(f"{a}={b}" for a, b in v.items()))
    add("in flight at signal", f"{inf['total']} (completed {inf['completed']}, failed {inf['failed']})")
    for k, v in inf["by_client"].items():
        add(f"  {k}", ", ".join(f"{a}={b}" for a, b in v.items()))
    add("proxy exit code", px["exit_code"])
    add("termination start -> exit", f"{px['exit_after_signal_s']}s")
    add("proxy peak RSS (VmHWM) / CPU", f"{px['peak_rss_mib']} MiB / {px.get('cpu_seconds')} s "
                                        f"({px.get('threads')} threads)")
    if px["phases"]:
        add("phases (s after signal)", ", ".join(f"{p['phase']}@{p['t_rel_signal']}" for p in px["phases"]))
    if r.get("rehearsal"):
        rh = r["rehearsal"]
        resp = rh.get("response") or {}
        add("rehearsal", f"POST /drain/rehearse?for={rh['for']}: {rh['status']} after {rh.get('answered_after_s')}s, "
                         f"outcome={resp.get('outcome')} last_new_connection={resp.get('last_new_connection_seconds')}s "
                         f"new_connections={resp.get('new_connections')} suggested={resp.get('suggested_drain_delay')}")
        add("  balancer (s from rehearsal start)", f"not ready seen {rh.get('balancer_not_ready_seen_s')}, removed "
                                                  f"{rh.get('balancer_removal_s')}, re-added {rh.get('balancer_readded_s')}")
    if r.get("drain_report"):
        dr = r["drain_report"]
        marks = ", ".join(f"{m.get('phase')}@{m.get('t')}" for m in dr.get("marks", []))
        add("drain report", f"trigger={dr.get('trigger')} exit_code={dr.get('exit_code')} outcome={dr.get('outcome')} "
                            f"marks={marks} last_new_connection={dr.get('last_new_connection_seconds')}s "
                            f"buckets={len(dr.get('buckets', []))}")
    elif r.get("drain_report_error"):
        add("drain report", f"NOT READ: {r['drain_report_error']}")
    add("readiness ok", f"{rd['ok']} {'; '.join(rd['problems'])}")
    add("readiness timeline", ", ".join(f"{t['status']}@{t['t_rel_signal']}" for t in rd["timeline"]))
    b = r["balancer"]
    if b:
        add("balancer conns by endpoint", b.get("connections_by_endpoint"))
        add("balancer refused by endpoint", b.get("refused_by_endpoint"))
        add("balancer resets client/upstream", f"{b.get('client_resets')}/{b.get('upstream_resets')}")
    if r.get("h2"):
        h = r["h2"]
        add("HTTP/2 conns opened / GOAWAY notices / final GOAWAYs",
            f"{h.get('connections_opened')} / {h.get('goaway_notice')} / {h.get('goaway_final')}")
    add("client conns opened / pool discards / Connection: close seen",
        f"{r['clients'].get('connections_opened')} / {r['clients'].get('pool_discards')} / "
        f"{r['clients'].get('connection_close_seen')}")
    w = max(len(k) for k, _ in rows)
    lines = ["", "=" * (w + 40)] + [f"{k.ljust(w)}  {v}" for k, v in rows]
    lines.append("per second (by completion): ok / failed  served by origin  [pooled keep-alive responses: "
                 "with Connection: close/all]  failures")
    for s in r["per_second"]:
        served = " ".join(f"{k}={v}" for k, v in s["served"].items())
        ka = " ".join(f"{k}:{s['conn_close'].get(k, 0)}/{v}" for k, v in s["keepalive"].items())
        lines.append(f"  {s['second']:3d}s  {s['ok']:6d} / {s['failed']:4d}  {served:16s} [{ka:18s}] "
                     f"{s['fail_kinds'] if s['fail_kinds'] else ''}")
    if fl["examples"]:
        lines.append("first failures:")
        for e in fl["examples"][:8]:
            lines.append(f"  +{e['t_rel_signal']}s {e['client']} {e['kind']} reused={e['reused_connection']} "
                         f"{e['detail'][:100]}")
    lines.append("=" * (w + 40))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["sluice", "reference", "nginx", "nginx-prestop"], default="sluice",
                    help="reference: reference_proxy.py, a Python model of the drain contract (checks the "
                         "harness); nginx: SIGQUIT at the signal time; nginx-prestop: SIGQUIT --drain-delay "
                         "later (the usual preStop-sleep workaround)")
    ap.add_argument("--sluice-bin", default=str(default_sluice_bin()))
    ap.add_argument("--drain-delay", default=Config.drain_delay)
    ap.add_argument("--drain-timeout", default=Config.drain_timeout)
    ap.add_argument("--termination-grace", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--removal-lag", type=float, default=Config.removal_lag)
    ap.add_argument("--signal-at", type=float, default=Config.signal_at)
    ap.add_argument("--duration", type=float, default=Config.duration)
    ap.add_argument("--workers", type=int, default=Config.workers, help="load generator processes")
    ap.add_argument("--keepalive", type=int, default=Config.keepalive, help="pooled connections per worker")
    ap.add_argument("--newconn", type=int, default=Config.newconn, help="new-connection loops per worker")
    ap.add_argument("--slow", type=int, default=Config.slow, help="slow-request loops per worker")
    ap.add_argument("--upload", type=int, default=Config.upload, help="upload loops per worker")
    ap.add_argument("--stream", type=int, default=Config.stream, help="streaming loops per worker")
    ap.add_argument("--h2", type=int, default=Config.h2, help="HTTP/2 load processes (needs the h2 package)")
    ap.add_argument("--h2-conns", type=int, default=Config.h2_conns, help="pooled HTTP/2 connections per h2 process")
    ap.add_argument("--think-ms", type=float, default=Config.think_ms)
    ap.add_argument("--tls", action="store_true",
                    help="clients speak TLS to the proxy's TLS listener (sluice --listen-tls; nginx listen ssl), "
                         "and the new pod is a TLS front for origin B")
    ap.add_argument("--json", dest="json_path", default=None, help="write the results here")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--ready-watch", action="store_true",
                    help="the balancer also follows the proxy's /readyz: removes it --removal-lag s after it "
                         "stops answering 200, re-adds it on 200")
    ap.add_argument("--rehearse-at", type=float, default=None,
                    help="seconds into the load: POST /drain/rehearse?for=--rehearse-for to the proxy")
    ap.add_argument("--rehearse-for", default=Config.rehearse_for)
    ap.add_argument("--drain-report", default=None, help="sluice --drain-report FILE (read back into the result)")
    ap.add_argument("--poll-drain", action="store_true",
                    help="sample /status and /metrics every 200 ms from the signal to the exit")
    ap.add_argument("extra_args", nargs="*", help="after --: extra sluice arguments")
    a = ap.parse_args(argv)
    cfg = Config(target=a.target, sluice_bin=Path(a.sluice_bin), drain_delay=a.drain_delay,
                 drain_timeout=a.drain_timeout, termination_grace=a.termination_grace, threads=a.threads,
                 removal_lag=a.removal_lag, signal_at=a.signal_at, duration=a.duration, workers=a.workers,
                 keepalive=a.keepalive, newconn=a.newconn, slow=a.slow, upload=a.upload, stream=a.stream,
                 h2=a.h2, h2_conns=a.h2_conns, tls=a.tls,
                 think_ms=a.think_ms, json_path=a.json_path, workdir=a.workdir, quiet=a.quiet,
                 extra_args=a.extra_args, ready_watch=a.ready_watch, rehearse_at=a.rehearse_at,
                 rehearse_for=a.rehearse_for, drain_report=a.drain_report, poll_drain=a.poll_drain)
    try:
        r = run(cfg)
    except FileNotFoundError as e:
        print(f"[e2e] {e}", file=sys.stderr)
        return 2
    return 0 if r["requests"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
