"""End-to-end rolling-update drain tests (pytest).

    python3 -m pytest -s Tests/e2e            # -s shows live progress and the result tables

Needs the sluice binary: SLUICE_BIN, else .build/debug/sluice under the repo root (`swift build`).
Each case runs a ~10 s load through a kube-proxy-like balancer in front of sluice and a replacement
backend, signals sluice at +3 s and lets the balancer remove it `lag` seconds later.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rolling_update as ru  # noqa: E402


def _sluice_bin() -> Path:
    p = ru.default_sluice_bin()
    if not p.exists():
        pytest.skip(f"sluice binary not found at {p}: build it (`swift build`) or set SLUICE_BIN")
    return p


def _run(tmp_path: Path, **kw) -> tuple[dict, str]:
    cfg = ru.Config(workdir=str(tmp_path / "work"), json_path=str(tmp_path / "result.json"), **kw)
    r = ru.run(cfg)
    summary = ru.format_table(r)
    out = os.environ.get("E2E_RESULTS_DIR")
    if out:  # keep the results of every case, e.g. for CI artifacts
        Path(out).mkdir(parents=True, exist_ok=True)
        name = os.environ.get("PYTEST_CURRENT_TEST", "case").split(":")[-1].split(" ")[0]
        Path(out, f"{name}.json").write_text(json.dumps(r, indent=2, default=str))
    return r, summary


def test_rolling_update_loses_nothing(tmp_path):
    """drain-delay 5 s > kube-proxy lag 3 s: not one request may be lost."""
    r, summary = _run(tmp_path, target="sluice", sluice_bin=_sluice_bin(),
                      drain_delay="5s", drain_timeout="10s", removal_lag=3.0)
    req, inf, px, rd = r["requests"], r["in_flight_at_signal"], r["proxy"], r["readiness"]

    assert req["failed"] == 0, f"requests failed: {r['failures']['by_kind']}\n{summary}"
    assert inf["total"] > 0, f"nothing was in flight at the signal\n{summary}"
    assert inf["completed"] == inf["total"], f"in-flight requests lost\n{summary}"
    assert px["exit_code"] == 0, f"sluice exit code {px['exit_code']}\n{summary}"
    assert rd["ok"], f"readiness: {rd['problems']}\n{summary}"
    assert req["ok"] >= 10_000, f"only {req['ok']} requests completed\n{summary}"
    # the in-flight set must include the long requests, or the test proves little
    by = inf["by_client"]
    assert by.get("slow", {}).get("completed", 0) > 0, f"no slow request across the signal\n{summary}"
    assert by.get("stream", {}).get("completed", 0) > 0, f"no stream across the signal\n{summary}"
    # sluice exited after its drain-delay, and well before its drain-timeout
    assert px["exit_after_signal_s"] is not None and 5.0 <= px["exit_after_signal_s"] < 15.0, summary


def test_too_short_drain_delay_is_detected(tmp_path):
    """drain-delay 500 ms < lag 3 s: new connections meet a closed listener, and the test sees it."""
    r, summary = _run(tmp_path, target="sluice", sluice_bin=_sluice_bin(),
                      drain_delay="500ms", drain_timeout="10s", removal_lag=3.0)
    assert r["requests"]["failed"] > 0, f"expected failures with a too-short drain delay\n{summary}"
    refused = r["balancer"].get("refused_by_endpoint", {}).get(r["balancer"]["proxy_endpoint"], 0)
    assert refused > 0, f"expected connections refused by sluice's closed listener\n{summary}"


def test_rolling_update_with_http2_clients_loses_nothing(tmp_path):
    """HTTP/2 clients (multiplexed streams on pooled h2c connections) across SIGTERM, beside HTTP/1
    load: the shutdown-notice GOAWAY moves them to the new pod, streams in flight finish under the
    final GOAWAY, and not one request or stream may be lost."""
    pytest.importorskip("hpack", reason="needs the h2 package (pip install h2)")
    pytest.importorskip("hyperframe", reason="needs the h2 package (pip install h2)")
    r, summary = _run(tmp_path, target="sluice", sluice_bin=_sluice_bin(), drain_delay="5s", drain_timeout="10s",
                      removal_lag=3.0, workers=2, h2=2)
    req, inf, px, h2 = r["requests"], r["in_flight_at_signal"], r["proxy"], r["h2"]

    assert req["failed"] == 0, f"requests failed: {r['failures']['by_kind']}\n{summary}"
    assert inf["completed"] == inf["total"] > 0, f"in-flight requests lost\n{summary}"
    assert px["exit_code"] == 0, f"sluice exit code {px['exit_code']}\n{summary}"
    assert r["readiness"]["ok"], f"readiness: {r['readiness']['problems']}\n{summary}"
    by_client = req["by_client"]
    for kind in ("h2get", "h2slow", "h2stream", "h2upload"):
        assert by_client.get(kind, {}).get("ok", 0) > 0, f"no {kind} request completed\n{summary}"
    by = inf["by_client"]
    assert by.get("h2slow", {}).get("completed", 0) > 0, f"no HTTP/2 slow stream across the signal\n{summary}"
    assert by.get("h2stream", {}).get("completed", 0) > 0, f"no HTTP/2 streaming response across the signal\n{summary}"
    # the clients saw the drain: shutdown notices, and they moved to the new pod
    assert h2.get("goaway_notice", 0) > 0, f"no GOAWAY shutdown notice seen\n{summary}"
    assert req["served_by"].get("B", 0) > 0, summary
    assert px["exit_after_signal_s"] is not None and 5.0 <= px["exit_after_signal_s"] < 15.0, summary


@pytest.mark.skipif(not Path(ru.NGINX).exists(), reason=f"{ru.NGINX} not installed")
def test_nginx_graceful_quit_is_detected(tmp_path):
    """Harness self-check without sluice: nginx's graceful quit closes its listener at once."""
    r, summary = _run(tmp_path, target="nginx", removal_lag=3.0)
    assert r["requests"]["failed"] > 0, summary
    assert r["proxy"]["exit_code"] == 0, summary
    refused = r["balancer"].get("refused_by_endpoint", {}).get(r["balancer"]["proxy_endpoint"], 0)
    assert refused > 0, summary


def test_reference_proxy_loses_nothing(tmp_path):
    """Harness self-check without sluice: a Python model of the drain contract passes the same bar."""
    r, summary = _run(tmp_path, target="reference", drain_delay="5s", drain_timeout="10s", removal_lag=3.0)
    assert r["requests"]["failed"] == 0, summary
    assert r["in_flight_at_signal"]["completed"] == r["in_flight_at_signal"]["total"] > 0, summary
    assert r["proxy"]["exit_code"] == 0, summary
    assert r["readiness"]["ok"], summary
    assert r["requests"]["ok"] >= 10_000, summary
