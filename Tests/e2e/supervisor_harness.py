"""Sluice in supervisor mode (`sluice [options] -- APP ...`) for the e2e tests, with supervisor_app.py as the app.

    sup = Supervised(tmp_path, sluice_args=["--drain-delay", "500ms"], app_args=["--ready-after", "1"])
    sup.wait_started()                  # the `started` log line; its admin=IP:PORT is sup.admin_port
    sup.wait_record("start")            # the app's own first record (its pid, pgid, parent)
    sup.signal(signal.SIGTERM)          # (wall, monotonic) of the signal
    rc = sup.wait_exit(15)

Sluice logs JSON (`--log-format json`), collected with each line's arrival time; the app appends JSON lines
to its record file (see supervisor_app.py). Every wait here polls an event with a deadline: no sleep
stands in for synchronization. Only processes this harness started are ever signalled, by their pid.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rolling_update as ru  # noqa: E402

HERE = Path(__file__).resolve().parent
APP = HERE / "supervisor_app.py"
PY = ru.PY
POLL = 0.02


def sluice_bin() -> Path:
    return ru.default_sluice_bin()


def parse_ts(value: str) -> float:
    """The log's `ts` ("2026-12-04T01:02:03.456Z", or with +0000) as epoch seconds."""
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    v = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", v)
    return datetime.datetime.fromisoformat(v).timestamp()


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = POLL) -> Any:
    """pred()'s first truthy value within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 2):
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
    return pred() or None


def proc_stat(pid: int) -> dict | None:
    """state, ppid, pgrp of a process from /proc/PID/stat (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(")", 1)[1].split()
    return {"pid": pid, "state": fields[0], "ppid": int(fields[1]), "pgrp": int(fields[2])}


def children_of(pid: int) -> list[dict]:
    """Every process whose parent is `pid` (zombies included), from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None and st["ppid"] == pid:
                out.append(st)
    return out


def zombies_of(pid: int) -> list[dict]:
    return [c for c in children_of(pid) if c["state"] == "Z"]


def free_port() -> int:
    return ru.free_port()


class Supervised:
    """One `sluice ... -- python3 supervisor_app.py ...` process and what it says."""

    def __init__(self, work: Path, *, sluice_args: list[str] = (), app_args: list[str] = (), name: str = "sluice",
                 app_name: str = "A", app_command: list[str] | None = None, wrapper: list[str] = (),
                 python: str = PY, supervise: bool = True) -> None:
        """`app_args` may hold "{listen}", replaced by Sluice's listen port. With supervise=False the app
        is started here, beside a plain Sluice (the sidecar case), with the same records."""
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.app_port = free_port()
        self.listen_port = free_port()
        self.record = self.work / f"{name}-app.jsonl"
        self.logs: list[tuple[float, dict]] = []    # (arrival monotonic time, JSON record)
        self.other: list[tuple[float, str]] = []    # non-JSON stderr lines (the app's, or a start-up error)
        self.exit_mono: float | None = None
        self.exit_code: int | None = None
        app_args = [a.replace("{listen}", str(self.listen_port)) for a in app_args]
        app = app_command if app_command is not None else [
            python, str(APP), "--port", str(self.app_port), "--record", str(self.record), "--name", app_name,
            *app_args]
        self.app_child: ru.Child | None = None
        if not supervise:
            self.app_child = ru.Child(f"{name}-app", app, self.work)
            if not self.app_child.wait_for_line(r"^app listening", 10):
                raise RuntimeError(f"the app did not start:\n{self.app_child.tail()}")
        self.argv = [*wrapper, str(sluice_bin()),
                     "--listen", f"127.0.0.1:{self.listen_port}",
                     "--admin", "127.0.0.1:0",
                     "--upstream", f"http://127.0.0.1:{self.app_port}",
                     "--log-format", "json",
                     *sluice_args, *(["--", *app] if supervise else [])]
        self.child = ru.Child(name, self.argv, self.work, on_stderr=self._on_stderr)
        self.pid = self.child.pid
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    # ---- the process -----------------------------------------------------------------------------

    def _wait(self) -> None:
        rc = self.child.proc.wait()
        self.exit_mono = time.monotonic()
        self.exit_code = rc

    def _on_stderr(self, now: float, line: str) -> None:
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and "message" in rec:
            self.logs.append((now, rec))
        else:
            self.other.append((now, line))

    def wait_exit(self, timeout: float) -> int | None:
        if wait_until(lambda: self.exit_mono is not None, timeout) is None:
            return None
        return self.exit_code

    def signal(self, sig: int) -> tuple[float, float]:
        """Sends `sig` to Sluice; returns (wall, monotonic) just before it was sent."""
        wall, mono = time.time(), time.monotonic()
        os.kill(self.pid, sig)
        return wall, mono

    def stop(self) -> None:
        """Ends Sluice and the app if they still run (each by its own pid); joins the log readers."""
        app = self.app_pid()
        if self.exit_mono is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait_exit(5)
        if app is not None and self._is_our_app(app):
            try:
                os.kill(app, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.child.stop()
        if self.app_child is not None:
            self.app_child.stop(signal.SIGKILL)

    def _is_our_app(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return str(self.record).encode() in f.read()
        except OSError:
            return False

    def tail(self, n: int = 40) -> str:
        lines = [(t, json.dumps(r)) for t, r in self.logs] + list(self.other)
        return "\n".join(l for _, l in sorted(lines)[-n:])

    # ---- Sluice's log ----------------------------------------------------------------------------

    def find_logs(self, message: str, **fields) -> list[tuple[float, dict]]:
        """Log records whose message starts with `message` and whose fields equal `fields` (as strings)."""
        out = []
        for t, r in list(self.logs):
            if str(r.get("message", "")).startswith(message) and all(
                    str(r.get(k)) == str(v) for k, v in fields.items()):
                out.append((t, r))
        return out

    def wait_log(self, message: str, timeout: float, **fields) -> tuple[float, dict] | None:
        found = wait_until(lambda: self.find_logs(message, **fields), timeout)
        return found[0] if found else None

    def phase_log(self, phase: str) -> tuple[float, dict] | None:
        found = self.find_logs("phase", phase=phase)
        return found[0] if found else None

    def wait_started(self, timeout: float = 20.0) -> int:
        """Waits for the `started` line; returns the admin port it names."""
        got = wait_until(lambda: self.find_logs("started") or self.exit_mono is not None, timeout)
        started = self.find_logs("started")
        if not started:
            raise RuntimeError(f"sluice did not start within {timeout}s (exit {self.exit_code}):\n{self.tail()}"
                               if got else f"no `started` line within {timeout}s:\n{self.tail()}")
        admin = str(started[0][1].get("admin", ""))
        m = re.search(r":(\d+)$", admin)
        if not m:
            raise RuntimeError(f"`started` line without admin=IP:PORT: {started[0][1]}")
        self.admin_port = int(m.group(1))
        return self.admin_port

    # ---- the app's records -----------------------------------------------------------------------

    def records(self, event: str | None = None, **fields) -> list[dict]:
        try:
            text = self.record.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if (event is None or r.get("event") == event) and all(r.get(k) == v for k, v in fields.items()):
                out.append(r)
        return out

    def wait_record(self, event: str, timeout: float, count: int = 1, **fields) -> dict | None:
        found = wait_until(lambda: len(self.records(event, **fields)) >= count and self.records(event, **fields),
                           timeout)
        return found[count - 1] if found else None

    def app_pid(self) -> int | None:
        start = self.records("start")
        return start[0]["pid"] if start else None

    def app_signals(self) -> list[str]:
        """The signals the app process itself recorded, in order."""
        pid = self.app_pid()
        return [r["signal"] for r in self.records("signal") if r["pid"] == pid]

    # ---- admin -----------------------------------------------------------------------------------

    def get_admin(self, path: str, timeout: float = 1.0) -> tuple[int | str, bytes]:
        return ru.http_get(self.admin_port, path, timeout=timeout)

    def get(self, path: str, timeout: float = 2.0) -> tuple[int | str, bytes]:
        return ru.http_get(self.listen_port, path, timeout=timeout)

    def app_stats(self) -> dict:
        """The app's own counters, asked directly (not through Sluice)."""
        st, body = ru.http_get(self.app_port, "/stats", timeout=1.0)
        return json.loads(body) if st == 200 else {}

    def wait_ready(self, timeout: float = 20.0) -> None:
        """/readyz 200 and a request through the proxy answered by the app."""
        if not hasattr(self, "admin_port"):
            self.wait_started(timeout)
        ok = wait_until(lambda: self.exit_mono is not None or (
            self.get_admin("/readyz")[0] == 200 and self.get("/")[0] == 200), timeout)
        if not ok or self.exit_mono is not None:
            raise RuntimeError(f"not ready within {timeout}s (exit {self.exit_code}):\n{self.tail()}")


class ReadyzSampler(threading.Thread):
    """Polls /readyz every `interval`: samples (t_sent, t_done, status, body)."""

    def __init__(self, port: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.samples: list[tuple[float, float, int | str, bytes]] = []
        self.stop_ev = threading.Event()

    def run(self) -> None:
        for _ in range(10_000_000):
            if self.stop_ev.is_set():
                return
            t = time.monotonic()
            st, body = ru.http_get(self.port, "/readyz", timeout=0.5)
            self.samples.append((t, time.monotonic(), st, body))
            self.stop_ev.wait(self.interval)

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(2)


def run_sluice(args: list[str], timeout: float = 30) -> tuple[int, str, str]:
    """`sluice ARGS` to its end (a start-up that must fail, or check-config): (exit code, stdout, stderr)."""
    import subprocess
    r = subprocess.run([str(sluice_bin()), *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, preexec_fn=ru._die_with_parent)
    return r.returncode, r.stdout, r.stderr


# --------------------------------------------------------------------------------------------------
# a rolling update of a supervised app

def rolling_update(work: Path, *, drain_delay: str = "2s", drain_timeout: str = "10s",
                   termination_grace: str = "20s", removal_lag: float = 1.0, signal_at: float = 2.0,
                   duration: float = 6.0, workers: int = 2, slow_ms: int = 2500, say=print) -> dict:
    """loadgen.py x `workers` -> balancer.py -> {sluice -- supervisor_app.py (A), origin.py B}.

    At t0 + `signal_at` Sluice gets SIGTERM and the balancer is told the pod is terminating (it drops
    Sluice `removal_lag` s later). Returns the clients' verdict (rolling_update.analyse), the readiness
    timeline, Sluice's phase lines and exit, the app's records and the drain report."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    children: list[ru.Child] = []
    sup: Supervised | None = None
    rp: ru.ReadinessPoller | None = None
    report = work / "drain-report.json"
    result: dict = {"work": str(work)}
    try:
        ob = ru.Child("originB", [PY, str(HERE / "origin.py"), "--port", "0", "--name", "B"], work)
        children.append(ob)
        mb = ob.wait_for_line(r"^listening (\d+)", 10)
        if not mb:
            raise RuntimeError(f"origin B did not start:\n{ob.tail()}")
        port_b = int(mb.group(1))

        sup = Supervised(work, sluice_args=[
            "--drain-delay", drain_delay, "--drain-timeout", drain_timeout,
            "--termination-grace", termination_grace, "--app-ready-path", "/healthz",
            "--drain-report", str(report)], app_args=[])
        sup.wait_ready(20)
        result["argv"] = sup.argv
        say(f"[sup] sluice pid={sup.pid} listen={sup.listen_port} admin={sup.admin_port} app pid={sup.app_pid()} "
            f"app port={sup.app_port}")

        ep_proxy, ep_b = f"127.0.0.1:{sup.listen_port}", f"127.0.0.1:{port_b}"
        bal = ru.Child("balancer", [PY, str(HERE / "balancer.py"), "--port", "0", "--endpoint", ep_proxy,
                                    "--endpoint", ep_b, "--removal-lag", str(removal_lag)], work, stdin=True)
        children.append(bal)
        mbal = bal.wait_for_line(r"^listening (\d+)", 10)
        if not mbal:
            raise RuntimeError(f"balancer did not start:\n{bal.tail()}")
        port_bal = int(mbal.group(1))

        rp = ru.ReadinessPoller(sup.admin_port, interval=0.05)
        rp.start()

        t0 = time.monotonic() + 1.0
        outs = []
        for i in range(workers):
            out = work / f"worker{i}.json"
            w = ru.Child(f"worker{i}", [PY, str(HERE / "loadgen.py"), "--port", str(port_bal), "--names", "A,B",
                                        "--start", repr(t0), "--duration", str(duration), "--out", str(out),
                                        "--keepalive", "6", "--newconn", "3", "--slow", "2", "--upload", "1",
                                        "--stream", "1", "--slow-ms", str(slow_ms), "--stream-chunks", "20",
                                        "--stream-interval-ms", "100", "--think-ms", "20", "--seed", str(i + 1)],
                         work)
            children.append(w)
            outs.append((w, out))

        wait_until(lambda: time.monotonic() >= t0 + signal_at, signal_at + 2.0, interval=0.005)
        sig_wall, sig_mono = sup.signal(signal.SIGTERM)
        bal.send(f"terminate {ep_proxy}")
        say(f"[sup] +{sig_mono - t0:.2f}s SIGTERM to sluice; the balancer drops it in {removal_lag}s")

        budget = ru.parse_duration(termination_grace) + 5.0
        rc = sup.wait_exit(max(budget, duration - signal_at + 5.0))
        wait_until(lambda: all(w.proc.poll() is not None for w, _ in outs), duration + 30.0, interval=0.05)
        rp.stop_ev.set()
        rp.join(2)

        records: list[list] = []
        for w, out in outs:
            if w.proc.poll() is None:
                raise RuntimeError(f"load worker {w.name} still running:\n{w.tail()}")
            records += json.loads(out.read_text())["records"]
        res = ru.analyse(records, t0, sig_mono, duration)
        served_a = [r for r in records if r[3] == "ok" and r[4] == "A"]
        result.update({
            "requests": {k: res[k] for k in ("total", "ok", "failed", "by_client", "served_by")},
            "failures": res["failures_by_kind"],
            "in_flight_at_signal": res["in_flight_at_signal"],
            "readiness": ru.readiness_verdict(list(rp.samples), sig_mono),
            "signal": {"wall": sig_wall, "mono": sig_mono},
            "exit_code": rc, "exit_mono": sup.exit_mono,
            "served_by_a": [[r[0], r[1], r[2]] for r in served_a],
            "last_a_response": {"start_mono": max((r[0] for r in served_a), default=None),
                                "end_mono": max((r[1] for r in served_a), default=None)},
            "app_pid": sup.app_pid(),
            "app_records": sup.records(),
            "logs": [{"t_mono": t, **r} for t, r in sup.logs],
            "other_stderr": [l for _, l in sup.other][:50],
            "report": json.loads(report.read_text()) if report.exists() else None,
        })
        return result
    finally:
        if rp is not None:
            rp.stop_ev.set()
        for c in reversed(children):
            c.stop()
        if sup is not None:
            sup.stop()


# --------------------------------------------------------------------------------------------------
# requests that take their time

def http_request(port: int, path: str, timeout: float, method: str = "GET") -> dict:
    """One request on its own connection (Connection: close) to 127.0.0.1:port: {"status", "headers",
    "body", "error", "t_done"} (status None and error set when no complete response came)."""
    import socket
    out: dict = {"status": None, "headers": {}, "body": b"", "error": None}
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                      % (method.encode(), path.encode()))
            buf = b""
            for _ in range(100_000):
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except OSError as e:
        out.update(error=f"{e.__class__.__name__}: {e}", t_done=time.monotonic())
        return out
    out["t_done"] = time.monotonic()
    head, sep, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    try:
        out["status"] = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        out["error"] = f"no status line: {buf[:80]!r}"
        return out
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        out["headers"][k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    n = out["headers"].get("content-length")
    if n is not None and len(body) < int(n):
        out["error"] = f"eof after {len(body)} of {n} body bytes"
    out["body"] = body
    return out


class Background(threading.Thread):
    """Runs fn() once on a thread; .result when done, .done() polls."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.finished = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        finally:
            self.finished.set()

    def wait(self, timeout: float) -> Any:
        self.finished.wait(timeout)
        return self.result
