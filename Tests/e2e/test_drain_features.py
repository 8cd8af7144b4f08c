"""The drain features of issue 13, end to end on the real binary (loopback only).

    SLUICE_BIN=/path/to/sluice python3 -m pytest -s -p no:cacheprovider Tests/e2e/test_drain_features.py

- a. GET /drain/wait: a long poll sent before SIGTERM answers `drained\\n` no earlier than Sluice's
     `phase=stopped` log record and within 100 ms of it, before the process is gone; a drain forced by
     --drain-timeout answers `deadline\\n` and Sluice exits 3.
- b. --drain-quiet 1s --drain-delay 15s: in the rolling update (balancer lag 1.5 s) `propagating` ends
     about 1 s after the last new connection instead of at 15 s, with no failed request (prints
     ADAPTIVE-TIMINGS); with a lag of 5 s the delay stretches to cover the late connections.
- c. POST /drain/rehearse?for=5s under load, the balancer following /readyz (balancer.py --watch): Sluice's
     last_new_connection_seconds matches the moment the balancer removed the pod within 200 ms, no request
     fails, no keep-alive connection is told to close, readiness and the balancer come back, new connections
     reach the pod again (prints REHEARSAL-FIGURES).
- d. SIGTERM during a rehearsal: the rehearsal answers at once (`outcome: drain`) and `propagating` ends at
     rehearsal start + drain-delay, not signal + drain-delay; exit 0.
- e. --drain-report: the JSON timeline agrees with what the clients and the balancer saw (phase marks, one
     bucket per 100 ms, requests and new connections after the signal, the last new connection, exit code);
     scripts/drain-timeline.py draws it (when matplotlib is installed).
- f. drain-delay 1 s with a lag of 2 s: `drain-delay looks too short` in the log; during the drain /metrics
     has sluice_drain_last_new_connection_seconds and /status has the `drain` object (kind drain).

About 2 minutes on 2 cores.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import rolling_update as ru  # noqa: E402

TIMELINE = ru.REPO_ROOT / "scripts" / "drain-timeline.py"
LOG_TS_RESOLUTION = 0.001   # the JSON log's "ts" has millisecond resolution


def _sluice_bin() -> Path:
    p = ru.default_sluice_bin()
    if not p.exists():
        pytest.skip(f"sluice binary not found at {p}: build it (`swift build`) or set SLUICE_BIN")
    return p


def _wall(ts: str) -> float:
    """'2026-12-04T01:03:04.890Z' -> seconds since the epoch."""
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _records(child: ru.Child) -> list[tuple[float, dict]]:
    """Sluice's JSON log records (stderr) with their arrival times."""
    out = []
    for t, line in list(child.stderr_lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append((t, rec))
    return out


def _log_records(log_path: str) -> list[tuple[float, dict]]:
    """The same, from a rolling_update.Child log file ("<monotonic> err <line>")."""
    out = []
    for line in Path(log_path).read_text().splitlines():
        t, _, rest = line.partition(" ")
        tag, _, text = rest.partition(" ")
        if tag != "err":
            continue
        try:
            rec = json.loads(text)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append((float(t), rec))
    return out


def _phase(records, phase: str):
    return next(((t, r) for t, r in records if r.get("message") == "phase" and r.get("phase") == phase), None)


def _run(tmp_path: Path, name: str, **kw) -> tuple[dict, str]:
    kw.setdefault("workers", 2)
    cfg = ru.Config(target="sluice", sluice_bin=_sluice_bin(), workdir=str(tmp_path / name),
                    json_path=str(tmp_path / f"{name}.json"), keep_records=True, **kw)
    r = ru.run(cfg)
    out = os.environ.get("E2E_RESULTS_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"drain_features_{name}.json").write_text(
            json.dumps({k: v for k, v in r.items() if k != "records"}, indent=2, default=str))
    return r, ru.format_table(r)


# ==================================================================================================
# a standalone sluice before one origin (no load)


class Standalone:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.work = tmp_path
        self.children: list[ru.Child] = []
        origin = ru.Child("origin", [ru.PY, str(HERE / "origin.py"), "--port", "0", "--name", "A"], tmp_path)
        self.children.append(origin)
        m = origin.wait_for_line(r"^listening (\d+)", 10)
        assert m, f"origin did not start:\n{origin.tail()}"
        self.listen = ru.free_port()
        self.admin = ru.free_port()
        self.argv = [str(_sluice_bin()), "--listen", f"127.0.0.1:{self.listen}",
                     "--upstream", f"http://127.0.0.1:{m.group(1)}", "--admin", f"127.0.0.1:{self.admin}",
                     "--log-format", "json", *args]
        self.sluice = ru.Child("sluice", self.argv, tmp_path)
        self.children.append(self.sluice)
        self.exit_time: float | None = None
        self.exit_code: int | None = None
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()
        for _ in range(200):
            if self.exit_code is not None:
                raise AssertionError(f"sluice exited {self.exit_code} at start-up:\n{self.sluice.tail()}")
            if ru.http_get(self.admin, "/readyz", 0.3)[0] == 200 and ru.http_get(self.listen, "/", 1.0)[0] == 200:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"sluice not ready:\n{self.sluice.tail()}")

    def _wait(self) -> None:
        rc = self.sluice.proc.wait()
        self.exit_time = time.monotonic()
        self.exit_code = rc

    def wait_exit(self, timeout: float) -> int | None:
        self._waiter.join(timeout)
        return self.exit_code

    def records(self):
        return _records(self.sluice)

    def close(self) -> None:
        for c in reversed(self.children):
            c.stop()


class Request(threading.Thread):
    """One blocking request in a thread; keeps when the answer arrived (monotonic and wall clock)."""

    def __init__(self, port: int, method: str, path: str, timeout: float) -> None:
        super().__init__(daemon=True)
        self.args = (port, method, path, timeout)
        self.status = None
        self.headers: dict = {}
        self.body = b""
        self.t_sent: float | None = None
        self.t_done: float | None = None
        self.wall_done: float | None = None
        self.start()

    def run(self) -> None:
        port, method, path, timeout = self.args
        self.t_sent = time.monotonic()
        self.status, self.headers, self.body = ru.http_request(port, method, path, timeout=timeout)
        self.t_done = time.monotonic()
        self.wall_done = time.time()


@pytest.fixture
def standalone(tmp_path):
    made = []

    def make(*args):
        s = Standalone(tmp_path, *args)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


# ==================================================================================================
# a. /drain/wait


def test_drain_wait_answers_drained_when_the_drain_ends(standalone):
    s = standalone("--drain-delay", "1s", "--drain-timeout", "5s")
    wait = Request(s.admin, "GET", "/drain/wait", timeout=20)
    slow = Request(s.listen, "GET", "/slow?ms=2000", timeout=10)   # keeps the drain busy to about +2 s
    time.sleep(0.4)
    assert wait.t_done is None, f"/drain/wait answered before any signal: {wait.status} {wait.body!r}"
    t_sig = time.monotonic()
    os.kill(s.sluice.pid, signal.SIGTERM)
    assert s.wait_exit(15) == 0, f"exit code {s.exit_code}\n{s.sluice.tail()}"
    wait.join(2)
    slow.join(5)
    recs = s.records()
    stopped = _phase(recs, "stopped")
    assert stopped, f"no phase=stopped record:\n{s.sluice.tail()}"
    stopped_wall = _wall(stopped[1]["ts"])

    assert slow.status == 200, f"the slow request: {slow.status}"
    assert wait.status == 200, f"/drain/wait: {wait.status} {wait.body!r}"
    assert wait.body == b"drained\n", wait.body
    assert wait.headers.get("content-type", "").startswith("text/plain"), wait.headers
    # not before the drain finished: the slow request (done at about +1.6 s) held it past the 1 s delay ...
    assert wait.t_done >= slow.t_done - 0.01, f"answered {slow.t_done - wait.t_done:.3f}s before the slow request"
    assert wait.t_done - t_sig >= 1.5, f"answered {wait.t_done - t_sig:.3f}s after SIGTERM"
    assert wait.wall_done >= stopped_wall - LOG_TS_RESOLUTION, \
        f"answered {stopped_wall - wait.wall_done:.3f}s before the phase=stopped record"
    # ... and within 100 ms of it, before the process was gone
    assert wait.wall_done <= stopped_wall + 0.1, f"answered {wait.wall_done - stopped_wall:.3f}s after stopped"
    assert wait.t_done <= s.exit_time + 0.05, f"answered {wait.t_done - s.exit_time:.3f}s after the exit"
    print(f"DRAIN-WAIT drained: answer - stopped record = {wait.wall_done - stopped_wall:+.3f}s, "
          f"exit - answer = {s.exit_time - wait.t_done:+.3f}s, signal -> answer = {wait.t_done - t_sig:.3f}s")


def test_drain_wait_answers_deadline_when_forced(standalone):
    s = standalone("--drain-delay", "500ms", "--drain-timeout", "1s")
    wait = Request(s.admin, "GET", "/drain/wait", timeout=20)
    slow = Request(s.listen, "GET", "/slow?ms=8000", timeout=15)   # outlives the drain timeout
    time.sleep(0.4)
    assert wait.t_done is None, f"/drain/wait answered before any signal: {wait.status} {wait.body!r}"
    t_sig = time.monotonic()
    os.kill(s.sluice.pid, signal.SIGTERM)
    assert s.wait_exit(15) == 3, f"exit code {s.exit_code} (want 3: forced)\n{s.sluice.tail()}"
    wait.join(2)
    recs = s.records()
    phases = [(t, r) for t, r in recs if r.get("message") == "phase"]
    assert phases, s.sluice.tail()
    last_wall = _wall(phases[-1][1]["ts"])   # the forced (or stopped) record that ends the drain
    assert wait.status == 200 and wait.body == b"deadline\n", f"/drain/wait: {wait.status} {wait.body!r}"
    assert wait.headers.get("content-type", "").startswith("text/plain"), wait.headers
    assert 1.4 <= wait.t_done - t_sig <= 3.0, f"answered {wait.t_done - t_sig:.3f}s after SIGTERM (delay 0.5 + timeout 1)"
    assert last_wall - LOG_TS_RESOLUTION <= wait.wall_done <= last_wall + 0.1, \
        f"answer - last phase record ({phases[-1][1].get('phase')}) = {wait.wall_done - last_wall:+.3f}s"
    assert wait.t_done <= s.exit_time + 0.05
    assert slow.status != 200, "the slow request should have been cut"
    print(f"DRAIN-WAIT deadline: last phase {phases[-1][1].get('phase')}, answer - record = "
          f"{wait.wall_done - last_wall:+.3f}s, signal -> answer = {wait.t_done - t_sig:.3f}s")


# ==================================================================================================
# b. adaptive delay


def _drain_end(r: dict) -> float | None:
    return next((p["t_rel_signal"] for p in r["proxy"]["phases"] if p["phase"] == "draining"), None)


def _exit_record(r: dict) -> dict | None:
    return next((rec for _, rec in _log_records(r["proxy"]["log_path"]) if rec.get("message") == "exit"), None)


QUIET_ARGS = ["--drain-quiet", "1s"]


def test_adaptive_delay_ends_propagating_after_the_quiet_period(tmp_path):
    lag = 1.5
    r, summary = _run(tmp_path, "adaptive", drain_delay="15s", drain_timeout="10s", termination_grace="40s",
                      removal_lag=lag, signal_at=2.0, duration=7.0, extra_args=QUIET_ARGS)
    px = r["proxy"]
    assert r["requests"]["failed"] == 0, f"failures {r['failures']['by_kind']}\n{summary}"
    assert px["exit_code"] == 0, summary
    end = _drain_end(r)
    assert end is not None, summary
    # the last new connection comes at the removal (+1.5 s); 1 s of quiet later propagating ends
    assert lag + 1.0 - 0.15 <= end <= lag + 1.0 + 0.8, f"propagating ended at +{end}s\n{summary}"
    exit_after = px["exit_after_signal_s"]
    assert exit_after is not None and exit_after < 8.0, f"exit {exit_after}s after the signal\n{summary}"
    ex = _exit_record(r)
    assert ex is not None and ex.get("code") == 0, ex
    lnc = ex.get("last_new_connection_seconds")
    assert isinstance(lnc, (int, float)) and abs(lnc - lag) <= 0.3, f"exit record {ex}"
    fixed_exit = 15.0 + (exit_after - end)
    print(f"ADAPTIVE-TIMINGS quiet_exit={exit_after:.2f}s propagating={end:.2f}s last_new_connection={lnc}s "
          f"fixed_delay=15 (a fixed --drain-delay 15s would exit at about {fixed_exit:.1f}s: 15 s + the same "
          f"{exit_after - end:.2f}s of draining)")


def test_adaptive_delay_stretches_while_new_connections_keep_coming(tmp_path):
    lag = 5.0
    r, summary = _run(tmp_path, "adaptive-late", drain_delay="15s", drain_timeout="10s", termination_grace="40s",
                      removal_lag=lag, signal_at=2.0, duration=10.0, extra_args=QUIET_ARGS)
    px = r["proxy"]
    assert r["requests"]["failed"] == 0, f"failures {r['failures']['by_kind']}\n{summary}"
    assert px["exit_code"] == 0, summary
    end = _drain_end(r)
    assert end is not None and lag <= end <= lag + 1.0 + 0.8, f"propagating ended at +{end}s\n{summary}"
    ex = _exit_record(r)
    lnc = ex.get("last_new_connection_seconds") if ex else None
    assert isinstance(lnc, (int, float)) and abs(lnc - lag) <= 0.3, f"exit record {ex}"
    print(f"ADAPTIVE-TIMINGS lag=5 quiet_exit={px['exit_after_signal_s']:.2f}s propagating={end:.2f}s "
          f"last_new_connection={lnc}s fixed_delay=15")


# ==================================================================================================
# c. rehearsal under load


def test_rehearsal_under_load_measures_the_balancer(tmp_path):
    lag = 1.5
    r, summary = _run(tmp_path, "rehearsal", drain_delay="3s", drain_timeout="10s", removal_lag=lag,
                      ready_watch=True, rehearse_at=1.0, rehearse_for="5s", signal_at=8.0, duration=10.0)
    rh = r["rehearsal"]
    resp = rh["response"]
    assert rh["status"] == 200 and isinstance(resp, dict), f"rehearsal: {rh}\n{summary}"
    assert resp.get("outcome") == "completed", resp
    assert resp.get("for_seconds") == 5.0, resp
    assert abs(resp.get("elapsed_seconds", 0) - 5.0) <= 0.3, resp
    assert 4.95 <= rh["answered_after_s"] <= 5.6, f"answered after {rh['answered_after_s']}s"
    assert rh["balancer_removal_reason"] == "not-ready", rh
    measured, removal = resp.get("last_new_connection_seconds"), rh["balancer_removal_s"]
    print(f"REHEARSAL-FIGURES measured={measured} balancer_removal={removal} "
          f"not_ready_seen={rh['balancer_not_ready_seen_s']} new_connections={resp.get('new_connections')} "
          f"suggested={resp.get('suggested_drain_delay')} last_old_request={resp.get('last_old_connection_request_seconds')}")
    assert isinstance(measured, (int, float)) and removal is not None, f"{rh}\n{summary}"
    assert abs(measured - removal) <= 0.2, f"Sluice measured {measured}s, the balancer removed the pod at {removal}s"
    per = resp.get("new_connections_per_100ms")
    assert isinstance(per, list) and 49 <= len(per) <= 51, per
    assert sum(per) == resp.get("new_connections") > 0, resp
    after = per[int((removal + 0.3) / 0.1) + 1:]
    assert sum(after) == 0, f"new connections after the removal: {per}"
    # the keep-alive pools were left alone: still used to the end of the window, never told to close
    old = resp.get("last_old_connection_request_seconds")
    assert isinstance(old, (int, float)) and old >= 4.5, resp
    t_sig = r["t_signal_monotonic"]
    pooled = ("keepalive", "slow", "upload", "stream")   # (newconn clients ask for Connection: close themselves)
    closes = [x for x in r["records"]
              if x[2] in pooled and x[4] == "A" and x[6] and rh["t_sent_monotonic"] <= x[1] < t_sig]
    assert not closes, f"{len(closes)} responses carried Connection: close during the rehearsal"
    assert rh["failures_since_rehearsal"] == 0 and r["requests"]["failed"] == 0, summary
    # readiness: 503 for the window, then 200 again
    seq = [(x["t_rel_rehearsal"], x["status"]) for x in rh["readiness"]]
    first_503 = next((t for t, st in seq if st == 503), None)
    back = next((t for t, st in seq if st == 200 and first_503 is not None and t > first_503), None)
    assert first_503 is not None and first_503 <= 0.3, seq
    assert back is not None and 4.9 <= back <= 5.6, seq
    # the balancer put the pod back and new connections reach it again
    assert rh["balancer_readded_s"] is not None and 4.9 <= rh["balancer_readded_s"] <= 5.6, rh
    assert rh.get("newconn_to_proxy_after_readd", 0) > 0, rh
    assert r["proxy"]["exit_code"] == 0, summary


# ==================================================================================================
# d. SIGTERM during a rehearsal


def test_sigterm_during_rehearsal_keeps_the_elapsed_time(standalone, tmp_path):
    report = tmp_path / "rehearsal-drain.json"
    s = standalone("--drain-delay", "3s", "--drain-timeout", "5s", "--drain-report", str(report))
    st, _, body = ru.http_request(s.admin, "GET", "/status", timeout=1)
    assert st == 200 and json.loads(body).get("drain") is None, body[:300]
    reh = Request(s.admin, "POST", "/drain/rehearse?for=20s", timeout=30)
    time.sleep(0.3)
    st, _, body = ru.http_request(s.admin, "GET", "/status", timeout=1)
    doc = json.loads(body)
    assert doc.get("phase") == "rehearsing", doc.get("phase")
    assert (doc.get("drain") or {}).get("kind") == "rehearsal", doc.get("drain")
    assert ru.http_get(s.admin, "/readyz")[0] == 503
    time.sleep(1.2)
    assert reh.t_done is None, f"the rehearsal answered early: {reh.status} {reh.body!r}"
    t_sig = time.monotonic()
    os.kill(s.sluice.pid, signal.SIGTERM)
    reh.join(3)
    assert reh.t_done is not None and reh.t_done - t_sig <= 0.3, "the rehearsal did not answer at the signal"
    assert reh.status == 200, (reh.status, reh.body)
    resp = json.loads(reh.body)
    assert resp.get("outcome") == "drain", resp
    assert abs(resp.get("elapsed_seconds", 0) - (t_sig - reh.t_sent)) <= 0.2, resp
    assert s.wait_exit(15) == 0, f"exit {s.exit_code}\n{s.sluice.tail()}"
    recs = s.records()
    draining = _phase(recs, "draining")
    assert draining, s.sluice.tail()
    since_rehearsal = draining[0] - reh.t_sent
    print(f"REHEARSAL-THEN-SIGTERM signal at +{t_sig - reh.t_sent:.2f}s, draining at +{since_rehearsal:.2f}s "
          f"from the rehearsal start (drain-delay 3s), exit {s.exit_time - t_sig:.2f}s after the signal")
    assert 2.85 <= since_rehearsal <= 3.25, f"propagating ended {since_rehearsal:.3f}s after the rehearsal start"
    # the report's t=0 (whatever it is) and its draining mark name the same moment as the log
    rep = json.loads(report.read_text())
    mark = next(m["t"] for m in rep["marks"] if m["phase"] == "draining")
    assert abs(_wall(rep["start_wall_time"]) + mark - _wall(draining[1]["ts"])) <= 0.05, rep["marks"]
    assert rep["exit_code"] == 0 and rep["outcome"] == "drained", rep


# ==================================================================================================
# e. the drain report


def test_drain_report_buckets_start_at_t0(standalone, tmp_path):
    """Bucket i covers [0.1 i, 0.1 (i+1)) s after the signal: new connections made at known moments land in
    the bucket whose t is the start of their 100 ms, and the connections open at the signal (two idle
    keep-alive ones) are in bucket 0's sample."""
    report = tmp_path / "aligned.json"
    s = standalone("--drain-delay", "3s", "--drain-timeout", "3s", "--drain-report", str(report))
    idle = []
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", s.listen), timeout=2)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.recv(4096).startswith(b"HTTP/1.1 200")
        idle.append(c)
    time.sleep(0.2)
    t_sig = time.monotonic()
    os.kill(s.sluice.pid, signal.SIGTERM)
    plan = [(0.03, 5), (0.55, 3), (2.05, 2), (2.94, 4)]    # (seconds after the signal, new connections)
    for at, n in plan:
        time.sleep(max(0.0, t_sig + at - time.monotonic()))
        for _ in range(n):
            assert ru.http_get(s.listen, "/", 1.0)[0] == 200
    assert s.wait_exit(10) == 0, s.sluice.tail()
    for c in idle:
        c.close()
    rep = json.loads(report.read_text())
    buckets = rep["buckets"]
    got = {round(b["t"], 1): b["new_connections"] for b in buckets if b["new_connections"]}
    want = {round(int(at * 10) / 10, 1): n for at, n in plan}
    print(f"REPORT-ALIGNMENT new connections by bucket t: report={got} expected={want}")
    assert got == want, f"new connections by bucket: report {got}, made at {plan} -> expected {want}"
    assert buckets[0]["connections"].get("idle", 0) + buckets[0]["connections"].get("active", 0) >= 2, \
        f"bucket 0 misses the two connections open at the signal: {buckets[0]}"
    assert abs(rep["last_new_connection_seconds"] - 2.94) <= 0.05, rep["last_new_connection_seconds"]


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    lag = 2.0
    r, summary = _run(tmp, "report", drain_delay="3s", drain_timeout="10s", removal_lag=lag, signal_at=2.0,
                      duration=7.0, drain_report=str(tmp / "drain-report.json"))
    wall_offset = time.time() - time.monotonic()   # both clocks, read together
    return r, summary, tmp / "drain-report.json", lag, wall_offset


def test_drain_report_matches_what_the_clients_saw(report_run):
    r, summary, path, lag, wall_offset = report_run
    rep = r.get("drain_report")
    assert rep, f"no report: {r.get('drain_report_error')}\n{summary}"
    assert r["requests"]["failed"] == 0 and r["proxy"]["exit_code"] == 0, summary
    assert rep["version"] == 1 and rep["trigger"] == "signal", rep.get("trigger")
    assert rep["exit_code"] == 0 and rep["outcome"] == "drained" and rep["forced_closes"] == 0, \
        {k: rep.get(k) for k in ("exit_code", "outcome", "forced_closes")}
    assert rep["drain_delay_seconds"] == 3.0 and rep["drain_timeout_seconds"] == 10.0, rep
    assert rep["drain_quiet_seconds"] is None, rep["drain_quiet_seconds"]
    t_sig = r["t_signal_monotonic"]
    assert abs(_wall(rep["start_wall_time"]) - (t_sig + wall_offset)) <= 0.1, \
        f"start_wall_time {rep['start_wall_time']} vs the signal"
    # marks: propagating at 0, draining at the delay, stopped at the exit
    marks = rep["marks"]
    assert [m["phase"] for m in marks] == ["propagating", "draining", "stopped"], marks
    ts = [m["t"] for m in marks]
    assert ts == sorted(ts) and ts[0] <= 0.05 and abs(ts[1] - 3.0) <= 0.1, marks
    log_draining = _drain_end(r)
    assert abs(ts[1] - log_draining) <= 0.1, (marks, r["proxy"]["phases"])
    assert abs(ts[2] - r["proxy"]["exit_after_signal_s"]) <= 0.2, (marks, r["proxy"]["exit_after_signal_s"])
    # one bucket every 100 ms from t=0 until the exit
    buckets = rep["buckets"]
    assert buckets and all(abs(b["t"] - 0.1 * i) < 1e-6 for i, b in enumerate(buckets)), \
        [b["t"] for b in buckets[:20]]
    assert ts[2] - 0.1 <= buckets[-1]["t"] <= ts[2] + 0.2, (buckets[-1]["t"], ts[2])
    for b in buckets:
        assert set(b["connections"]) >= {"active", "idle", "tunnel", "closing"}, b
    assert buckets[-1]["in_flight"] == 0, buckets[-1]
    # requests: Sluice counts those whose head it got after its t=0 (start_wall_time: when it handled the
    # signal, a few ms after the kill on a busy machine; the log's resolution is 1 ms, hence +-2 ms). Every
    # request the clients started after that and that reached the old pod (origin A) is one of them; so may
    # be those in flight at t=0 whose head was still on its way (started before, ended after). Nothing else.
    t0s = _wall(rep["start_wall_time"]) - wall_offset
    recs = [x for x in r["records"] if x[4] == "A"]
    lower = sum(1 for x in recs if x[0] >= t0s + 0.002)
    upper = sum(1 for x in recs if x[1] > t0s - 0.002)
    got = sum(b["requests"] for b in buckets)
    print(f"REPORT-REQUESTS report={got} clients_started_after_t0={lower} plus_in_flight_at_t0={upper} "
          f"(sluice t=0 is {1000 * (t0s - t_sig):.1f} ms after the kill; "
          f"started after the kill: {sum(1 for x in recs if x[0] >= t_sig)})")
    assert lower <= got <= upper, f"report counts {got} requests, the clients {lower}..{upper}"
    # new connections the same way: each request on a fresh connection (not reused) opened one
    fresh = [x for x in recs if not x[5]]
    nlower = sum(1 for x in fresh if x[0] >= t0s + 0.002)
    nupper = sum(1 for x in fresh if x[1] > t0s - 0.002)
    ngot = sum(b["new_connections"] for b in buckets)
    print(f"REPORT-NEW-CONNECTIONS report={ngot} clients={nlower}..{nupper}")
    assert nlower <= ngot <= nupper, f"report counts {ngot} new connections, the clients {nlower}..{nupper}"
    # the last new connection: when the balancer removed the pod
    removed = next((e["t_rel_signal"] for e in r["balancer"]["events"]
                    if e["event"] == "removed" and e["endpoint"] == r["balancer"]["proxy_endpoint"]), None)
    lnc = rep["last_new_connection_seconds"]
    print(f"REPORT-LAST-NEW-CONNECTION report={lnc} balancer_removal={removed}")
    assert removed is not None and isinstance(lnc, (int, float)) and abs(lnc - removed) <= 0.3, (lnc, removed)
    late = sum(b["new_connections"] for b in buckets if b["t"] >= removed + 0.3)
    assert late == 0, f"{late} new connections after the removal"
    # ... which is in the bucket [t, t + 0.1) that holds it, the last one with a new connection
    last_bucket = max(i for i, b in enumerate(buckets) if b["new_connections"])
    assert last_bucket == int(lnc * 10), \
        f"last new connection at {lnc}s, but the last bucket with new connections is t={buckets[last_bucket]['t']}"
    # the pooled keep-alive connections open at the signal are in bucket 0's sample
    assert sum(buckets[0]["connections"].values()) > 0, buckets[0]


def test_drain_timeline_draws_the_report(report_run, tmp_path):
    pytest.importorskip("matplotlib", reason="scripts/drain-timeline.py needs matplotlib")
    _, _, path, _, _ = report_run
    out = tmp_path / "drain.png"
    p = subprocess.run([ru.PY, str(TIMELINE), str(path), "-o", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, len(data)
    results = os.environ.get("E2E_RESULTS_DIR")
    if results:
        Path(results, "drain-timeline.png").write_bytes(data)


def test_drain_timeline_rejects_a_bad_file(tmp_path):
    missing = subprocess.run([ru.PY, str(TIMELINE), str(tmp_path / "nope.json"), "-o", str(tmp_path / "x.png")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope.json" in missing.stderr, (missing.returncode, missing.stderr)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "marks": ')
    p = subprocess.run([ru.PY, str(TIMELINE), str(bad), "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "bad.json" in p.stderr, (p.returncode, p.stderr)
    notreport = tmp_path / "other.json"
    notreport.write_text('{"hello": 1}')
    p = subprocess.run([ru.PY, str(TIMELINE), str(notreport), "-o", str(tmp_path / "x.png")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "buckets" in p.stderr, (p.returncode, p.stderr)
    assert not (tmp_path / "x.png").exists()


# ==================================================================================================
# f. a drain-delay too short for the balancer


def test_too_short_drain_delay_is_reported(tmp_path):
    r, summary = _run(tmp_path, "too-short", drain_delay="1s", drain_timeout="5s", removal_lag=2.0,
                      signal_at=2.0, duration=5.0, poll_drain=True)
    recs = _log_records(r["proxy"]["log_path"])
    warn = [rec for _, rec in recs if "drain-delay looks too short" in str(rec.get("message", ""))]
    assert warn, "no `drain-delay looks too short` in the log:\n" + "\n".join(json.dumps(x) for _, x in recs[-15:])
    w = warn[0]
    print(f"TOO-SHORT warning: {json.dumps(w)}")
    assert 0.75 <= float(w.get("last_new_connection_seconds", -1)) <= 1.1, w
    polls = [p for p in r.get("drain_polls", []) if p["status_code"] == 200]
    assert polls, f"no /status answer during the drain: {r.get('drain_polls')}"
    during = [p for p in polls if p["phase"] in ("propagating", "draining")]
    assert during, polls
    # (from +0.3 s: by then new connections have come in, whether or not the gauge exists before the first)
    # Only samples whose /metrics was answered: the proxy can exit between the /status and the /metrics
    # request of the last sample.
    settled = [p for p in during if p["t_rel_signal"] >= 0.3 and p.get("metrics_status") == 200]
    assert settled and all(p["metric_present"] for p in settled), \
        f"sluice_drain_last_new_connection_seconds missing from /metrics during the drain: {during}"
    vals = [p["metric"] for p in during if p["metric"] is not None]
    assert vals and all(0.0 <= v <= 1.2 for v in vals), vals
    drains = [p["drain"] for p in during]
    assert all(isinstance(d, dict) and d.get("kind") == "drain" for d in drains), drains[:3]
    secs = [d["seconds_since_start"] for d in drains]
    assert secs == sorted(secs) and secs[0] < 0.5, secs
    for d in drains:
        assert set(d) >= {"last_new_connection_seconds", "new_connections", "new_connections_per_100ms",
                          "last_old_connection_request_seconds"}, d
    # new connections kept coming until the listener closed at +1 s, and the counts agree
    assert drains[-1]["new_connections"] == sum(drains[-1]["new_connections_per_100ms"]) > 0, drains[-1]
