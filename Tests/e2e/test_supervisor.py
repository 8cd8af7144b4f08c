"""Supervisor mode end to end: `sluice [options] -- python3 supervisor_app.py ...` (issue 13).

    SLUICE_BIN=... python3 -m pytest -s -p no:cacheprovider Tests/e2e/test_supervisor.py

Sluice starts the app after its listeners are bound, in the app's own process group; /readyz waits for the
app; on SIGTERM it drains first and only then stops the app (--app-stop-signal, SIGKILL when
--termination-grace is used up); an app that exits on its own makes Sluice drain and exit with the app's
code; it reaps its children; it forwards only --app-forward-signals. The app (supervisor_app.py) records
every signal it gets, with the wall and monotonic time and its requests in flight, in a JSON-lines file.

Every wait polls an event with a deadline (a log line, an app record, a /proc state, the exit).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import supervisor_harness as sh  # noqa: E402

# The log's timestamps have millisecond resolution: an event logged at T carries a ts in [T - 1 ms, T].
TS_RESOLUTION = 0.001


def _need_binary() -> None:
    p = sh.sluice_bin()
    if not p.exists():
        pytest.skip(f"sluice binary not found at {p}: build it (`swift build`) or set SLUICE_BIN")


@pytest.fixture
def start(tmp_path):
    """start(sluice_args=[...], app_args=[...]) -> a running Supervised; all are stopped at teardown."""
    _need_binary()
    started: list[sh.Supervised] = []

    def _start(**kw) -> sh.Supervised:
        sup = sh.Supervised(tmp_path / f"s{len(started)}", **kw)
        started.append(sup)
        return sup

    yield _start
    for sup in started:
        sup.stop()


def _log_fields(sup: sh.Supervised, message: str) -> dict:
    found = sup.find_logs(message)
    assert found, f"no `{message}` log line\n{sup.tail()}"
    return found[0][1]


def _app_exited(sup: sh.Supervised) -> dict:
    return _log_fields(sup, "app exited")


def _assert_app_lifecycle_logged(sup: sh.Supervised, app_pid: int, status: str) -> None:
    started = _log_fields(sup, "app started")
    assert str(started.get("pid")) == str(app_pid), f"app started: {started}"
    exited = _app_exited(sup)
    assert str(exited.get("pid")) == str(app_pid), f"app exited: {exited}"
    assert exited.get("status") == status, f"app exited: {exited}"


# --------------------------------------------------------------------------------------------------
# a. a rolling update: the app is stopped only once the drain is over

def test_rolling_update_stops_the_app_after_the_drain(tmp_path):
    """Load through a kube-proxy-like balancer while the pod terminates: not one failed request; the app
    gets SIGTERM only after Sluice's last downstream connection closed (`phase stopped`); Sluice exits 0."""
    _need_binary()
    r = sh.rolling_update(tmp_path / "work", drain_delay="2s", drain_timeout="10s", termination_grace="20s",
                          removal_lag=1.0, signal_at=2.0, duration=6.0)
    (tmp_path / "result.json").write_text(json.dumps(r, indent=2, default=str))
    req, inf = r["requests"], r["in_flight_at_signal"]
    ctx = (f"failures={r['failures']} requests={req} in_flight={inf} exit={r['exit_code']}\n"
           f"other stderr: {r['other_stderr'][:10]}\nresult: {tmp_path / 'result.json'}")

    assert req["failed"] == 0, ctx
    assert req["served_by"].get("A", 0) > 0 and req["served_by"].get("B", 0) > 0, ctx
    assert inf["total"] > 0 and inf["completed"] == inf["total"], ctx
    assert r["readiness"]["ok"], f"readiness: {r['readiness']['problems']}\n{ctx}"
    assert r["exit_code"] == 0, ctx

    app_pid = r["app_pid"]
    logs = r["logs"]

    def log(message, **fields):
        return [l for l in logs if str(l.get("message", "")).startswith(message)
                and all(str(l.get(k)) == str(v) for k, v in fields.items())]

    stopped = log("phase", phase="stopped")
    assert len(stopped) == 1, f"phase stopped lines: {stopped}\n{ctx}"
    assert not log("phase", phase="forced"), ctx
    stopping = log("stopping app")
    assert len(stopping) == 1, f"stopping app lines: {stopping}\n{ctx}"
    assert stopping[0].get("signal") == "TERM" and str(stopping[0].get("pid")) == str(app_pid), stopping
    assert stopping[0]["t_mono"] >= stopped[0]["t_mono"], "`stopping app` logged before `phase stopped`"
    exited = log("app exited")
    assert len(exited) == 1 and exited[0].get("status") == "exit:0" and str(exited[0].get("pid")) == str(app_pid), \
        exited
    assert not log("app did not stop in time"), ctx

    app_sigs = [x for x in r["app_records"] if x["event"] == "signal" and x["pid"] == app_pid]
    assert [x["signal"] for x in app_sigs] == ["SIGTERM"], f"the app's signals: {app_sigs}"
    term = app_sigs[0]
    app_exit = [x for x in r["app_records"] if x["event"] == "exit" and x["pid"] == app_pid]
    assert len(app_exit) == 1 and app_exit[0]["code"] == 0, app_exit

    # The app was stopped after the drain: after `phase stopped` (by Sluice's clock; the log's ts is
    # truncated to the millisecond), with nothing in flight and its last response already written.
    stopped_ts = sh.parse_ts(stopped[0]["ts"])
    assert term["wall"] >= stopped_ts - TS_RESOLUTION, (term, stopped[0])
    assert term["in_flight"] == 0, term
    assert term["last_response_mono"] is not None and term["last_response_mono"] <= term["mono"], term
    # ... and after every client request it served had started: none began after the app's SIGTERM.
    last_a = r["last_a_response"]
    assert last_a["start_mono"] is not None and last_a["start_mono"] < term["mono"], (last_a, term)
    sig_wall, sig_mono = r["signal"]["wall"], r["signal"]["mono"]
    delay = 2.0
    # The drain itself: readiness failed at once, the listener stayed open for the drain delay.
    draining = log("phase", phase="draining")
    assert draining and sh.parse_ts(draining[0]["ts"]) - sig_wall >= delay - TS_RESOLUTION, draining
    # The test means something only if the app still had requests to finish once the listener closed.
    draining_mono = sig_mono + (sh.parse_ts(draining[0]["ts"]) - sig_wall)
    across = [x for x in r["served_by_a"] if x[0] < draining_mono < x[1]]
    assert across, "no request to the app was in flight when the drain began: the load proves little"

    rep = r["report"]
    marks = {m["phase"]: m["t"] for m in (rep or {}).get("marks", [])}
    timings = {
        "signal_to_draining_s": round(sh.parse_ts(draining[0]["ts"]) - sig_wall, 3),
        "signal_to_stopped_s": round(stopped_ts - sig_wall, 3),
        "stopped_to_app_sigterm_s": round(term["wall"] - stopped_ts, 3),
        "signal_to_app_sigterm_s": round(term["wall"] - sig_wall, 3),
        "app_sigterm_to_app_exit_s": round(app_exit[0]["wall"] - term["wall"], 3),
        "signal_to_exit_s": round(r["exit_mono"] - sig_mono, 3),
        "app_last_response_to_app_sigterm_s": round(term["mono"] - term["last_response_mono"], 3),
        "last_client_response_from_app_to_app_sigterm_s": round(term["mono"] - last_a["end_mono"], 3),
        "report_marks": marks,
        "requests_ok": req["ok"], "served_by": req["served_by"], "failed": req["failed"],
        "in_flight_at_signal": inf["total"], "app_requests_across_draining": len(across),
        "exit_code": r["exit_code"],
    }
    (tmp_path / "supervisor-timings.json").write_text(json.dumps(timings, indent=2))
    print("\nSUPERVISOR-TIMINGS " + json.dumps(timings), flush=True)

    assert rep is not None, "no --drain-report file"
    assert rep["trigger"] == "signal" and rep["exit_code"] == 0 and rep["outcome"] == "drained", rep
    assert list(marks) == ["propagating", "draining", "stopped"], rep["marks"]
    assert timings["signal_to_exit_s"] < 2.0 + 10.0, timings


# --------------------------------------------------------------------------------------------------
# b. readiness waits for the app

def test_readyz_waits_for_the_app(start):
    """/readyz is 503 until the app's /healthz answers 200 (1.5 s after it starts), then 200."""
    sup = start(sluice_args=["--app-ready-path", "/healthz"], app_args=["--ready-after", "1.5"])
    port = sup.wait_started()
    sampler = sh.ReadyzSampler(port)
    sampler.start()
    try:
        ready = sup.wait_record("ready", 10)
        assert ready is not None, f"the app never answered /healthz 200\n{sup.tail()}"
        assert sh.wait_until(lambda: any(s[2] == 200 for s in sampler.samples), 3.0), \
            f"/readyz not 200 within 3 s of the app's readiness: {sampler.samples[-5:]}\n{sup.tail()}"
    finally:
        sampler.stop()
    samples = sampler.samples
    before = [s for s in samples if s[1] < ready["mono"]]
    assert before and all(s[2] == 503 for s in before), f"/readyz before the app was ready: {before[:5]}"
    first_200 = next(s for s in samples if s[2] == 200)
    assert first_200[1] > ready["mono"], (first_200, ready)
    # The first success is seen within a probe interval or two (100 ms probes) plus our own polling.
    assert first_200[1] - ready["mono"] < 0.5, (first_200, ready)
    assert first_200[3] == b"ready" or first_200[3].startswith(b"ready"), first_200
    after = [s for s in samples if s[0] > first_200[1]]
    assert all(s[2] == 200 for s in after), f"/readyz went back to 503: {[s for s in after if s[2] != 200][:5]}"
    app_ready = sup.wait_log("app ready", 2)
    assert app_ready is not None, sup.tail()
    print(f"\n/readyz: {len(before)} x 503 before the app was ready (+{ready['after']}s after its start), "
          f"200 {first_200[1] - ready['mono']:.3f}s later; log: {app_ready[1]}")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(15) == 0, sup.tail()


# --------------------------------------------------------------------------------------------------
# c. exit codes

SMALL = ["--drain-delay", "500ms", "--drain-timeout", "2s", "--termination-grace", "4s"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_exit_code_clean(start, monkeypatch, sig):
    """SIGTERM or SIGINT: drain, then TERM to the app, exit 0. The app was found on the PATH, started
    once Sluice's listener accepted, with Sluice's environment and stdout."""
    monkeypatch.setenv("SUPERVISOR_TEST_ENV", "from-the-test")
    sup = start(sluice_args=SMALL, python="python3",
                app_args=["--check-port", "{listen}", "--record-env", "SUPERVISOR_TEST_ENV"])
    sup.wait_ready()
    app_pid = sup.app_pid()
    first = sup.records("start")[0]
    assert first["port_open"] is True, f"Sluice's listener was not accepting when the app started: {first}"
    assert first["env"] == {"SUPERVISOR_TEST_ENV": "from-the-test"}, first
    assert any(l.startswith(f"app listening {sup.app_port} pid {app_pid}") for _, l in sup.child.stdout_lines), \
        f"the app's stdout is not Sluice's: {sup.child.stdout_lines[:5]}"
    sup.signal(sig)
    assert sup.wait_exit(10) == 0, sup.tail()
    assert sup.app_signals() == ["SIGTERM"]
    _assert_app_lifecycle_logged(sup, app_pid, "exit:0")
    stopping = _log_fields(sup, "stopping app")
    assert stopping.get("signal") == "TERM" and str(stopping.get("pid")) == str(app_pid), stopping


@pytest.mark.parametrize("stop_signal,app_args,status,recorded", [
    ("INT", [], "exit:0", ["SIGINT"]),
    ("USR2", ["--die-on", "USR2"], "signal:USR2", []),
    ("TERM", ["--die-on", "TERM"], "signal:TERM", []),
], ids=["INT-handled", "USR2-dies", "TERM-dies"])
def test_app_stop_signal(start, stop_signal, app_args, status, recorded):
    """--app-stop-signal is what the app gets; an app that dies of it has stopped as asked: exit 0."""
    sup = start(sluice_args=[*SMALL, "--app-stop-signal", stop_signal], app_args=app_args)
    sup.wait_ready()
    app_pid = sup.app_pid()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 0, f"exit {sup.exit_code}\n{sup.tail()}"
    assert sup.app_signals() == recorded
    stopping = _log_fields(sup, "stopping app")
    assert stopping.get("signal") == stop_signal and str(stopping.get("pid")) == str(app_pid), stopping
    _assert_app_lifecycle_logged(sup, app_pid, status)


def _wait_app_busy(sup: sh.Supervised, n: int = 1, timeout: float = 5.0) -> None:
    assert sh.wait_until(lambda: sup.app_stats().get("in_flight", 0) >= n, timeout), \
        f"the app never had {n} request(s) in flight: {sup.app_stats()}"


def test_forced_drain_exits_3_and_drain_wait_says_deadline(start):
    """A request longer than --drain-timeout: the drain is forced (the request is cut), /drain/wait (asked
    before the signal) answers `deadline`, the app is stopped after that and exits 0, Sluice exits 3."""
    sup = start(sluice_args=SMALL)
    sup.wait_ready()
    app_pid = sup.app_pid()
    waiter = sh.Background(lambda: sh.http_request(sup.admin_port, "/drain/wait", timeout=15))
    slow = sh.Background(lambda: sh.http_request(sup.listen_port, "/slow?ms=8000", timeout=15))
    _wait_app_busy(sup)
    sig_wall, _ = sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 3, f"exit {sup.exit_code}\n{sup.tail()}"
    w = waiter.wait(5)
    assert w is not None and w["status"] == 200 and w["body"] == b"deadline\n", w
    assert w["headers"].get("content-type", "").startswith("text/plain"), w["headers"]
    cut = slow.wait(5)
    assert cut is not None and (cut["status"] is None or cut["error"]), f"the 8 s request was not cut: {cut}"
    forced = sup.phase_log("forced")
    assert forced is not None, sup.tail()
    assert 2.5 - TS_RESOLUTION <= sh.parse_ts(forced[1]["ts"]) - sig_wall < 3.0, forced
    term = sup.wait_record("signal", 2, signal="SIGTERM", pid=app_pid)
    assert term is not None and term["wall"] >= sh.parse_ts(forced[1]["ts"]) - TS_RESOLUTION, (term, forced)
    _assert_app_lifecycle_logged(sup, app_pid, "exit:0")


def test_drain_wait_in_supervisor_mode(start):
    """/drain/wait asked before the signal answers `drained` once the drain is over; a slow request
    in flight at the signal finishes; the app is stopped after that."""
    sup = start(sluice_args=SMALL)
    sup.wait_ready()
    app_pid = sup.app_pid()
    waiter = sh.Background(lambda: sh.http_request(sup.admin_port, "/drain/wait", timeout=15))
    slow = sh.Background(lambda: sh.http_request(sup.listen_port, "/slow?ms=1500", timeout=15))
    _wait_app_busy(sup)
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 0, sup.tail()
    w, done = waiter.wait(5), slow.wait(5)
    assert done["status"] == 200 and done["body"] == b"slow 1500 from A\n", done
    assert w["status"] == 200 and w["body"] == b"drained\n", w
    assert w["headers"].get("content-type", "").startswith("text/plain"), w["headers"]
    stopped = sup.phase_log("stopped")
    term = sup.wait_record("signal", 2, signal="SIGTERM", pid=app_pid)
    assert term["wall"] >= sh.parse_ts(stopped[1]["ts"]) - TS_RESOLUTION, (term, stopped)
    print(f"\n/drain/wait answered {w['t_done'] - term['mono']:+.4f}s from the app's SIGTERM "
          "(its answer is sent just before the app is stopped)")


def test_sidecar_app_waits_on_drain_wait(start):
    """The sidecar.yaml flow, with a plain Sluice and the app beside it: a "kubelet" holds the app's
    SIGTERM until GET /drain/wait answers (the app's preStop httpGet). The request in flight finishes,
    the app is signalled only after the drain, Sluice exits 0."""
    sup = start(sluice_args=["--drain-delay", "1s", "--drain-timeout", "5s", "--termination-grace", "10s"],
                supervise=False)
    sup.wait_ready()
    app_pid = sup.app_pid()
    assert sh.proc_stat(app_pid)["ppid"] != sup.pid  # not Sluice's: started by the test

    def kubelet():
        r = sh.http_request(sup.admin_port, "/drain/wait", timeout=20)
        r["t_term"] = time.monotonic()
        os.kill(app_pid, signal.SIGTERM)  # our own child, by its pid
        return r

    hook = sh.Background(kubelet)
    slow = sh.Background(lambda: sh.http_request(sup.listen_port, "/slow?ms=2000", timeout=15))
    _wait_app_busy(sup)
    sig_wall, sig_mono = sup.signal(signal.SIGTERM)
    assert sup.wait_exit(12) == 0, sup.tail()
    h, done = hook.wait(5), slow.wait(5)
    assert done["status"] == 200 and done["body"] == b"slow 2000 from A\n", done
    assert h["status"] == 200 and h["body"] == b"drained\n", h
    assert done["t_done"] <= h["t_done"] + TS_RESOLUTION, (done, h)
    stopped = sup.phase_log("stopped")
    assert stopped is not None
    term = sup.wait_record("signal", 5, signal="SIGTERM", pid=app_pid)
    assert term is not None and term["in_flight"] == 0, term
    assert term["wall"] >= sh.parse_ts(stopped[1]["ts"]) - TS_RESOLUTION, (term, stopped)
    assert sup.app_child.proc.wait(5) == 0
    print(f"\nsidecar: signal -> stopped {sh.parse_ts(stopped[1]['ts']) - sig_wall:.3f}s, -> /drain/wait "
          f"answered {h['t_done'] - sig_mono:.3f}s, -> app SIGTERM {term['wall'] - sig_wall:.3f}s, "
          f"Sluice exit {sup.exit_mono - sig_mono:.3f}s")


@pytest.mark.parametrize("app_code,sluice_code", [(7, 7), (0, 0)])
def test_app_exiting_on_its_own(start, tmp_path, app_code, sluice_code):
    """The app exits by itself: /readyz fails at once, Sluice drains (straight to `draining`: an idle
    keep-alive connection is closed cleanly) and exits with the app's code (its own 0 for an app's 0)."""
    report = tmp_path / "report.json"
    sup = start(sluice_args=[*SMALL, "--drain-report", str(report)],
                app_args=["--crash-after", "2.5", "--crash-code", str(app_code)])
    port = sup.wait_started()
    sup.wait_ready()
    app_pid = sup.app_pid()
    # An idle keep-alive connection: the drain has to close it (after --drain-idle-quiet).
    idle = socket.create_connection(("127.0.0.1", sup.listen_port), timeout=5)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = b""
    for _ in range(100):
        if resp.endswith(b"hello from A\n") or not (chunk := idle.recv(65536)):
            break
        resp += chunk
    assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"\r\n\r\nhello from A\n"), resp
    sampler = sh.ReadyzSampler(port)
    sampler.start()
    try:
        crash = sup.wait_record("crash", 10)
        assert crash is not None, f"the app did not exit on its own\n{sup.tail()}"
        rc = sup.wait_exit(10)
    finally:
        sampler.stop()
    assert rc == sluice_code, f"exit {rc}, expected {sluice_code}\n{sup.tail()}"
    # The idle connection was closed by Sluice (a FIN, not a reset), before it exited.
    idle.settimeout(2)
    try:
        rest = idle.recv(65536)
    except ConnectionResetError:
        rest = "reset"
    idle.close()
    assert rest == b"", f"idle keep-alive connection: {rest!r}"
    _assert_app_lifecycle_logged(sup, app_pid, f"exit:{app_code}")
    assert not sup.find_logs("stopping app"), "Sluice tried to stop an app that had already exited"
    phases = [r.get("phase") for _, r in sup.find_logs("phase") if r.get("phase") not in ("starting", "serving")]
    assert phases == ["draining", "stopped"], phases
    samples = sampler.samples
    assert any(s[2] == 200 for s in samples if s[1] < crash["mono"]), "not ready before the app exited"
    draining_at = sup.phase_log("draining")[0]
    late_200 = [s for s in samples if s[0] > draining_at and s[2] == 200]
    assert not late_200, f"/readyz 200 after the drain began: {late_200[:3]}"
    first_503 = next((s for s in samples if s[0] > crash["mono"] and s[2] == 503), None)
    assert first_503 is not None, f"/readyz never 503 after the app exited: {samples[-5:]}"
    assert first_503[1] - crash["mono"] < 0.5, (first_503, crash)
    rep = json.loads(report.read_text())
    assert rep["trigger"] == "app-exit" and rep["exit_code"] == sluice_code and rep["outcome"] == "drained", rep
    assert [m["phase"] for m in rep["marks"]][:1] == ["draining"], rep["marks"]


def test_app_killed_by_a_signal(start):
    """The app dies of SIGKILL (not Sluice's): Sluice drains and exits 128 + 9."""
    sup = start(sluice_args=SMALL)
    sup.wait_ready()
    app_pid = sup.app_pid()
    os.kill(app_pid, signal.SIGKILL)  # our own grandchild, by its pid
    assert sup.wait_exit(10) == 137, sup.tail()
    _assert_app_lifecycle_logged(sup, app_pid, "signal:KILL")


def test_app_dying_while_propagating(start):
    """The app dies (SIGKILL) during `propagating`: Sluice stops waiting out --drain-delay, drains at
    once, and exits 137; it does not try to stop an app that is gone."""
    sup = start(sluice_args=["--drain-delay", "3s", "--drain-timeout", "2s", "--termination-grace", "6s"])
    sup.wait_ready()
    app_pid = sup.app_pid()
    sig_wall, _ = sup.signal(signal.SIGTERM)
    assert sup.wait_log("phase", 5, phase="propagating") is not None, sup.tail()
    kill_wall = time.time()
    os.kill(app_pid, signal.SIGKILL)  # our own grandchild, by its pid
    assert sup.wait_exit(10) == 137, f"exit {sup.exit_code}\n{sup.tail()}"
    draining = sup.phase_log("draining")
    assert draining is not None, sup.tail()
    assert sh.parse_ts(draining[1]["ts"]) - kill_wall < 0.5, \
        f"draining {sh.parse_ts(draining[1]['ts']) - sig_wall:.3f}s after the signal, app killed at " \
        f"{kill_wall - sig_wall:.3f}s"
    assert not sup.find_logs("stopping app"), sup.tail()
    _assert_app_lifecycle_logged(sup, app_pid, "signal:KILL")


def test_app_exit_code_on_term(start):
    sup = start(sluice_args=SMALL, app_args=["--exit-code", "5"])
    sup.wait_ready()
    app_pid = sup.app_pid()
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 5, sup.tail()
    assert sup.app_signals() == ["SIGTERM"]
    _assert_app_lifecycle_logged(sup, app_pid, "exit:5")


def test_app_ignoring_term_is_killed_when_the_grace_is_used_up(start):
    """--drain-delay 500ms --drain-timeout 2s --termination-grace 4s, an app that ignores SIGTERM: it gets
    SIGTERM when the drain ends, SIGKILL 0.5 s before 4 s have passed since Sluice's signal (so that Sluice
    itself still exits, with its code, before the kubelet's SIGKILL at the grace's end); Sluice exits 137."""
    sup = start(sluice_args=SMALL, app_args=["--ignore-term"])
    sup.wait_ready()
    app_pid = sup.app_pid()
    sig_wall, sig_mono = sup.signal(signal.SIGTERM)
    rc = sup.wait_exit(12)
    assert rc == 137, f"exit {rc}\n{sup.tail()}"
    elapsed = sup.exit_mono - sig_mono
    term = sup.wait_record("signal", 1, signal="SIGTERM", pid=app_pid)
    assert term is not None, f"the app never got SIGTERM\n{sup.tail()}"
    stopped = sup.phase_log("stopped")
    assert stopped is not None, sup.tail()
    assert term["wall"] >= sh.parse_ts(stopped[1]["ts"]) - TS_RESOLUTION, (term, stopped)
    kill = _log_fields(sup, "app did not stop in time")
    assert str(kill.get("pid")) == str(app_pid), kill
    kill_ts = sh.parse_ts(kill["ts"])
    assert 3.5 - TS_RESOLUTION <= kill_ts - sig_wall < 4.0, \
        f"SIGKILL {kill_ts - sig_wall:.3f}s after the signal, not 0.5 s before termination-grace 4s was used up: {kill}"
    assert 3.5 <= elapsed < 4.0, elapsed
    _assert_app_lifecycle_logged(sup, app_pid, "signal:KILL")
    assert sh.wait_until(lambda: sh.proc_stat(app_pid) is None, 3), f"app {app_pid} still there"
    print(f"\nignore-TERM: signal -> stopped {sh.parse_ts(stopped[1]['ts']) - sig_wall:.3f}s, -> app SIGTERM "
          f"{term['wall'] - sig_wall:.3f}s, -> SIGKILL {kill_ts - sig_wall:.3f}s, -> exit {elapsed:.3f}s")


# --------------------------------------------------------------------------------------------------
# d. process group, and no zombies

def test_own_process_group_and_no_zombies(start):
    sup = start(sluice_args=SMALL, app_args=["--spawn-orphan", "--orphan-life-ms", "300"])
    sup.wait_ready()
    app_pid = sup.app_pid()
    st = sh.proc_stat(app_pid)
    assert st is not None and st["ppid"] == sup.pid, f"app {st}, sluice {sup.pid}"
    assert st["pgrp"] == app_pid, f"the app's process group is {st['pgrp']}, not its own ({app_pid})"
    assert os.getpgid(sup.pid) != app_pid
    assert sh.proc_stat(sup.pid)["pgrp"] != st["pgrp"]

    # The orphaned grandchild from start-up, and five more spawned through the proxy while it serves.
    orphans = [sup.wait_record("spawned", 10)["orphan"]]
    for _ in range(5):
        status, body = sup.get("/spawn?life_ms=50")
        assert status == 200, (status, body)
        orphans.append(int(body.strip()))
    assert sup.wait_record("orphan-exit", 10, count=len(orphans)) is not None, sup.records()
    adopted = {r["pid"]: r["adopted_by"] for r in sup.records("orphan")}
    for pid in orphans:
        if adopted.get(pid) == sup.pid:  # Sluice adopted it (a subreaper): it must reap it
            assert sh.wait_until(lambda: sh.proc_stat(pid) is None, 3), f"orphan {pid}: {sh.proc_stat(pid)}"
    assert sh.wait_until(lambda: not sh.zombies_of(sup.pid), 3), f"zombies of sluice: {sh.zombies_of(sup.pid)}"
    assert [c["pid"] for c in sh.children_of(sup.pid)] == [app_pid], sh.children_of(sup.pid)
    print(f"\norphans {orphans} adopted by {sorted(set(adopted.values()))} (sluice is {sup.pid})")

    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 0, sup.tail()
    _assert_app_lifecycle_logged(sup, app_pid, "exit:0")
    assert sh.wait_until(lambda: sh.proc_stat(app_pid) is None, 3), f"app {app_pid}: {sh.proc_stat(app_pid)}"


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/unshare").exists(), reason="needs root and unshare")
def test_pid_1_reaps_orphans(start):
    """Sluice as PID 1 (a new PID namespace, as in a container): orphans of the app are adopted by Sluice,
    and reaped; no zombie is left."""
    sup = start(sluice_args=SMALL, app_args=["--spawn-orphan", "--orphan-life-ms", "300"],
                wrapper=["/usr/bin/unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
    sup.wait_ready()
    kids = sh.wait_until(lambda: sh.children_of(sup.pid), 5)
    assert kids and len(kids) == 1, f"unshare's children: {kids}"
    sluice_pid = kids[0]["pid"]      # Sluice, as the host sees it (PID 1 inside)
    start_rec = sup.wait_record("start", 5)
    assert start_rec["ppid"] == 1, start_rec   # the app's parent, inside: Sluice is PID 1
    orphans = [sup.wait_record("spawned", 10)["orphan"]]
    for _ in range(5):
        status, body = sup.get("/spawn?life_ms=50")
        assert status == 200, (status, body)
        orphans.append(int(body.strip()))
    assert sup.wait_record("orphan-exit", 10, count=len(orphans)) is not None, sup.records()
    adopted = {r["pid"]: r["adopted_by"] for r in sup.records("orphan")}
    assert all(adopted.get(p) == 1 for p in orphans), adopted
    assert sh.wait_until(lambda: not sh.zombies_of(sluice_pid), 3), f"zombies: {sh.zombies_of(sluice_pid)}"
    assert sh.wait_until(lambda: len(sh.children_of(sluice_pid)) == 1, 3), sh.children_of(sluice_pid)
    os.kill(sluice_pid, signal.SIGTERM)
    assert sup.wait_exit(10) == 0, sup.tail()


# --------------------------------------------------------------------------------------------------
# e. forwarded signals

def test_forwarded_signals(start):
    """--app-forward-signals USR1: SIGUSR1 reaches the app; SIGHUP stays Sluice's (a reload)."""
    sup = start(sluice_args=[*SMALL, "--app-forward-signals", "USR1"])
    sup.wait_ready()
    app_pid = sup.app_pid()
    sup.signal(signal.SIGUSR1)
    assert sup.wait_record("signal", 5, signal="SIGUSR1", pid=app_pid) is not None, sup.tail()
    sup.signal(signal.SIGHUP)
    assert sup.wait_log("config reload", 5) is not None, f"no reload after SIGHUP\n{sup.tail()}"
    # A second SIGUSR1 after the SIGHUP: once the app has it, a forwarded SIGHUP would have come first.
    sup.signal(signal.SIGUSR1)
    assert sup.wait_record("signal", 5, count=2, signal="SIGUSR1", pid=app_pid) is not None, sup.tail()
    assert sup.app_signals() == ["SIGUSR1", "SIGUSR1"], sup.app_signals()
    assert sup.exit_mono is None, f"sluice exited {sup.exit_code}\n{sup.tail()}"
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(10) == 0, sup.tail()
    assert sup.app_signals() == ["SIGUSR1", "SIGUSR1", "SIGTERM"], sup.app_signals()


# --------------------------------------------------------------------------------------------------
# f. configuration errors

@pytest.mark.parametrize("args,with_app,setting", [
    (["--app-ready-path", "/x"], False, "app-ready-path"),
    (["--app-stop-signal", "INT"], False, "app-stop-signal"),
    (["--app-forward-signals", "USR1"], False, "app-forward-signals"),
    (["--app-stop-signal", "BOGUS"], True, "app-stop-signal"),
    (["--app-forward-signals", "TERM"], True, "app-forward-signals"),
    (["--app-forward-signals", "USR1,NOPE"], True, "app-forward-signals"),
], ids=["ready-path-without-app", "stop-signal-without-app", "forward-without-app", "bogus-stop-signal",
        "forward-term", "forward-unknown"])
def test_bad_config(tmp_path, args, with_app, setting):
    _need_binary()
    record = tmp_path / "app.jsonl"
    argv = ["--listen", f"127.0.0.1:{sh.free_port()}", "--admin", "127.0.0.1:0",
            "--upstream", f"http://127.0.0.1:{sh.free_port()}", *args]
    if with_app:
        argv += ["--", sh.PY, str(sh.APP), "--port", str(sh.free_port()), "--record", str(record)]
    try:
        rc, out, err = sh.run_sluice(argv, timeout=15)
    finally:
        for r in (json.loads(l) for l in (record.read_text().splitlines() if record.exists() else [])):
            if r.get("event") == "start" and sh.proc_stat(r["pid"]) is not None:
                os.kill(r["pid"], signal.SIGKILL)  # the app a wrongly started Sluice left behind
    assert rc == 1, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    assert setting in err, f"the message does not name {setting}: {err!r}"
    assert not record.exists(), "the app was started despite the configuration error"


def test_app_that_cannot_start(tmp_path):
    """An app command that is not found: a start-up error (exit 1) naming it."""
    _need_binary()
    missing = str(tmp_path / "no-such-app")
    rc, out, err = sh.run_sluice(["--listen", f"127.0.0.1:{sh.free_port()}", "--admin", "127.0.0.1:0",
                                  "--upstream", f"http://127.0.0.1:{sh.free_port()}", "--", missing], timeout=15)
    assert rc == 1, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    assert missing in err, err
