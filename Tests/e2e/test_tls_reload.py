"""Certificate reload without a restart (issue 12), on the real binary.

    python3 -m pytest -s -p no:cacheprovider Tests/e2e/test_tls_reload.py              # prints the swap table
    TLS_PROXY=nginx python3 -m pytest -s -p no:cacheprovider Tests/e2e/test_tls_reload.py   # the tests' check

The listener's certificate and key are files in a directory laid out the way a Kubernetes Secret volume
is: `dir/..data -> ..TIMESTAMP/`, `dir/tls.crt -> ..data/tls.crt`, `dir/tls.key -> ..data/tls.key`. A swap
(`SecretDir.swap`) writes a new `..TIMESTAMP` directory, points a temporary symlink at it, renames that
over `..data` (atomic) and removes the old directory, as the kubelet does.

- 10 swaps between two certificates for a.test (told apart by serial) under about 1000 req/s
  (paced_load.py over TLS: keep-alive connections and new TLS connections, plus slow requests that
  straddle the swaps): no request fails, and after each swap a new handshake gets the new certificate
  within 5 s (the delays are printed in a table).
- A bad new certificate (a key that does not match) keeps the old certificate served, and is counted as
  `sluice_tls_certificate_reloads_total{result="error"}`; a good one after it is served again.
- SIGHUP reloads certificates: the configuration pointed at other files is in force at once.

With TLS_PROXY=nginx (which does not watch files), the driver sends SIGHUP after each swap; Sluice gets
nothing but the file swap.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rolling_update as ru  # noqa: E402
import tls_certs  # noqa: E402
from tls_harness import PROXY, TLSListener, TLSProxy, sluice_only, start_origin_py, sluice_yaml  # noqa: E402

SWAPS = 10
MAX_DELAY = 5.0          # the new certificate on a new connection within this, after each swap
TARGET_RATE = 1000       # requests per second, in total
LOAD_PROCESSES = 2


class SecretDir:
    """A directory laid out as a Kubernetes Secret volume, holding tls.crt and tls.key."""

    def __init__(self, path: Path, cert: tls_certs.Cert) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.generation = 0
        first = self._write(cert)
        os.symlink(first, path / "..data")
        for name in ("tls.crt", "tls.key"):
            os.symlink(f"..data/{name}", path / name)

    @property
    def cert(self) -> Path:
        return self.path / "tls.crt"

    @property
    def key(self) -> Path:
        return self.path / "tls.key"

    def _write(self, cert: tls_certs.Cert, key: Path | None = None) -> str:
        self.generation += 1
        stamp = dt.datetime.now(dt.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.") + f"{os.getpid()}{self.generation:04d}"
        d = self.path / stamp
        d.mkdir()
        shutil.copyfile(cert.cert, d / "tls.crt")
        shutil.copyfile(key or cert.key, d / "tls.key")
        os.chmod(d / "tls.key", 0o600)
        return stamp

    def swap(self, cert: tls_certs.Cert, key: Path | None = None) -> None:
        """The kubelet's atomic update: new ..TIMESTAMP dir, a temporary symlink, rename over ..data,
        remove the old dir."""
        old = os.readlink(self.path / "..data")
        new = self._write(cert, key)
        tmp = self.path / "..data_tmp"
        os.symlink(new, tmp)
        os.rename(tmp, self.path / "..data")
        shutil.rmtree(self.path / old)


def _reloads(proxy: TLSProxy) -> dict[str, float]:
    listener = proxy.listeners[0].address
    out: dict[str, float] = {}
    for m in re.finditer(r"^sluice_tls_certificate_reloads_total\{([^}]*)\} (\S+)$", proxy.metrics(), re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("listener") == listener:
            out[labels.get("result", "?")] = out.get(labels.get("result", "?"), 0) + float(m.group(2))
    return out


def _log_texts(proxy: TLSProxy) -> list[str]:
    """Each log line as text: a JSON line's values joined (so that escaping does not hide a path)."""
    out = []
    for line in proxy.lines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        out.append(" ".join(str(v) for v in record.values()) if isinstance(record, dict) else line)
    return out


def _served_serial(port: int, ca: Path) -> int | None:
    try:
        return tls_certs.handshake(port, "a.test", ca, timeout=2.0).serial
    except OSError:
        return None


def _wait_served(proxy: TLSProxy, ca: Path, serial: int, timeout: float) -> float | None:
    """Seconds until a new handshake gets `serial` (polled every 20 ms), or None after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 <= timeout:
        if _served_serial(proxy.port, ca) == serial:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


@pytest.fixture()
def setup(tmp_path):
    pki = tls_certs.make_pki(tmp_path / "pki")
    origin, origin_port = start_origin_py(tmp_path, "A")
    proxy = None
    try:
        secret = SecretDir(tmp_path / "secret", pki.a)
        proxy = TLSProxy(tmp_path, [TLSListener([(secret.cert, secret.key)])], origin_port, pki.ca,
                         drain_delay="0s", drain_timeout="5s", threads=2)
        assert _served_serial(proxy.port, pki.ca) == pki.a.serial
        yield pki, secret, proxy
    finally:
        if proxy is not None:
            rc = proxy.stop()
            if PROXY == "sluice":
                assert rc == 0, f"sluice exit code {rc}:\n{proxy.child.tail(30)}"
        origin.stop()


@pytest.mark.xfail(PROXY == "nginx", strict=False,
                   reason="nginx reloads certificates only by SIGHUP, which replaces its workers; the old workers "
                          "close their idle keep-alive connections, and requests racing that close fail "
                          "(eof_before_response)")
def test_ten_swaps_under_load_lose_no_request(setup, tmp_path):
    pki, secret, proxy = setup
    start = time.monotonic() + 1.5
    max_duration = 2.0 + SWAPS * (MAX_DELAY + 1.0) + 3.0  # the bound; the load is ended early (SIGUSR1)
    loads = []
    for i in range(LOAD_PROCESSES):
        out = tmp_path / f"load{i}.json"
        rate = TARGET_RATE / LOAD_PROCESSES
        child = ru.Child(f"load{i}", [
            ru.PY, str(ru.HERE / "paced_load.py"), "--port", str(proxy.port), "--names", "A",
            "--start", repr(start), "--duration", str(max_duration), "--rate", str(rate - 25),
            "--keepalive", "8", "--newconn-rate", "25", "--slow", "2", "--slow-ms", "1500", "--timeout", "10",
            "--tls-ca", str(pki.ca), "--sni", "a.test", "--seed", str(i + 1), "--out", str(out)], tmp_path)
        loads.append((child, out))
    rows = []
    swap_times = []
    try:
        time.sleep(max(0.0, start - time.monotonic()) + 2.0)
        current = pki.a
        for i in range(SWAPS):
            new = pki.a2 if current is pki.a else pki.a
            progress_before = _progress(loads)
            t_swap = time.monotonic()
            secret.swap(new)
            swap_times.append(t_swap)
            if PROXY == "nginx":
                proxy.reload()
            delay = _wait_served(proxy, pki.ca, new.serial, MAX_DELAY + 5.0)
            rows.append({"swap": i + 1, "serial": f"{new.serial:#x}", "delay_s": delay,
                         "ok_before": progress_before[0], "fail_before": progress_before[1]})
            assert proxy.child.poll() is None, proxy.child.tail(30)
            if delay is None:
                break
            current = new
            time.sleep(0.5)  # new certificate's traffic, before the next swap
        time.sleep(2.0)  # slow requests begun around the last swap finish under load
    finally:
        for child, _ in loads:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGUSR1)
        for child, _ in loads:
            try:
                child.proc.wait(timeout=20)
            except Exception:
                pass
            child.stop(timeout=5.0)
    results = [json.loads(out.read_text()) for _, out in loads]
    records = [r for res in results for r in res["records"]]
    t_end = max(r[1] for r in records)
    duration = t_end - start
    fail = sum(res["fail"] for res in results)
    kinds: dict[str, int] = {}
    for res in results:
        for k, v in res["fail_kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    by_kind = {k: sum(1 for r in records if r[2] == k) for k in ("keepalive", "newconn", "slow")}
    across = sum(1 for r in records if r[2] == "slow" and any(r[0] < t < r[1] for t in swap_times))
    connections = sum(res["connections_opened"] for res in results)

    print(f"\n{PROXY}: {len(rows)} certificate swaps (Kubernetes Secret layout{', SIGHUP after each' if PROXY == 'nginx' else ''})"
          f" under load: {len(records)} requests in {duration:.1f} s ({len(records) / duration:.0f} req/s), "
          f"{by_kind}, {connections} TLS connections opened, {fail} failed {kinds}, "
          f"{across} slow requests across a swap")
    print(f"  {'swap':>4}  {'serial':>7}  {'new cert served after':>22}  {'requests ok/failed before it':>29}")
    for row in rows:
        d = f"{row['delay_s']:.3f} s" if row["delay_s"] is not None else f"> {MAX_DELAY + 5:.0f} s"
        print(f"  {row['swap']:>4}  {row['serial']:>7}  {d:>22}  {row['ok_before']:>20}/{row['fail_before']}")
    delays = [r["delay_s"] for r in rows if r["delay_s"] is not None]
    if delays:
        print(f"  delay: min {min(delays):.3f} s, median {sorted(delays)[len(delays) // 2]:.3f} s, max {max(delays):.3f} s")
    for res in results:
        for e in res["fail_examples"][:5]:
            print(f"  failure: {e}")

    assert len(rows) == SWAPS and all(r["delay_s"] is not None for r in rows), rows
    assert max(delays) <= MAX_DELAY, f"the new certificate took {max(delays):.2f} s (> {MAX_DELAY} s)"
    assert fail == 0, (kinds, [e for res in results for e in res["fail_examples"]])
    assert sum(res["ok"] for res in results) == len(records)
    assert by_kind["newconn"] > 0 and by_kind["keepalive"] > 0
    assert across > 0, "no slow request straddled a swap"
    # About 1000 req/s asked for; the floor leaves room for a busy 2-core CI box and a debug build (which
    # serves about 350 req/s over TLS there; nginx about 800, the Python clients being the limit).
    assert len(records) / duration > TARGET_RATE * 0.25, f"load too light to mean anything: {len(records) / duration:.0f} req/s"
    assert min(r[0] for r in records) < swap_times[0] and t_end > swap_times[-1], "the load did not cover every swap"
    if PROXY == "sluice":
        counts = _reloads(proxy)
        assert counts.get("ok", 0) >= SWAPS and counts.get("error", 0) == 0, counts


def _progress(loads) -> tuple[int, int]:
    ok = fail = 0
    for child, _ in loads:
        for _, line in reversed(child.stdout_lines):
            if line.startswith("progress "):
                p = json.loads(line[9:])
                ok, fail = ok + p["ok"], fail + p["fail"]
                break
    return ok, fail


def test_a_bad_new_certificate_keeps_the_old_one(setup):
    pki, secret, proxy = setup
    before = _reloads(proxy) if PROXY == "sluice" else {}
    # a2's certificate with a key that is not its own
    secret.swap(pki.a2, key=pki.mismatched.key)
    if PROXY == "nginx":
        proxy.reload()
    if PROXY == "sluice":
        deadline = time.monotonic() + MAX_DELAY + 1.0
        while _reloads(proxy).get("error", 0) < before.get("error", 0) + 1:
            assert time.monotonic() < deadline, f"no reload error counted: {_reloads(proxy)}"
            time.sleep(0.05)
        want = f"TLS key {secret.key} (listen {proxy.listeners[0].address}): does not match certificate {secret.cert}"
        deadline = time.monotonic() + 2.0
        while not any(want.lower() in text.lower() for text in _log_texts(proxy)):
            assert time.monotonic() < deadline, f"no log line with {want!r}:\n" + "\n".join(proxy.lines()[-20:])
            time.sleep(0.05)
    else:
        time.sleep(2.0)
    # old certificate still served, for a while, on new connections
    for _ in range(20):
        assert _served_serial(proxy.port, pki.ca) == pki.a.serial
        time.sleep(0.1)
    assert proxy.child.poll() is None
    # a good one again: served
    secret.swap(pki.a2)
    if PROXY == "nginx":
        proxy.reload()
    delay = _wait_served(proxy, pki.ca, pki.a2.serial, MAX_DELAY)
    assert delay is not None, "the good certificate after the bad one was not served"
    if PROXY == "sluice":
        assert _reloads(proxy).get("ok", 0) >= before.get("ok", 0) + 1, _reloads(proxy)


def test_sighup_reloads_certificates(setup, tmp_path):
    """SIGHUP re-reads the certificate files, the configuration unchanged (a swap followed at once by SIGHUP
    is served within 0.5 s, sooner than a poll every few seconds would), and applies a configuration that
    names other files (b.test's certificate first, then a2 for a.test): in force at once."""
    pki, secret, proxy = setup
    # Four rounds, each within 0.5 s: a file watcher polling every 2 s would catch all four by chance
    # about once in 250 runs.
    delays = []
    for cert in (pki.a2, pki.a, pki.a2, pki.a):
        secret.swap(cert)
        proxy.reload()
        delay = _wait_served(proxy, pki.ca, cert.serial, 0.5)
        assert delay is not None, \
            f"a.test still gets {_served_serial(proxy.port, pki.ca)} 0.5 s after a swap and SIGHUP (rounds so far: {delays})"
        delays.append(round(delay, 3))
        time.sleep(0.2)

    lst = proxy.listeners[0]
    lst.certificates = [(pki.b.cert, pki.b.key), (pki.a2.cert, pki.a2.key)]  # a.test served a until now
    if PROXY == "sluice":
        text = proxy.config_path.read_text()
        text = re.sub(r"      certificates:\n(        - .*\n)+",
                      "      certificates:\n" + "".join(f"        - {{cert: {json.dumps(str(c))}, key: {json.dumps(str(k))}}}\n"
                                                     for c, k in lst.certificates), text)
        proxy.config_path.write_text(text)
    else:
        from tls_harness import nginx_conf
        proxy.config_path.write_text(nginx_conf(proxy.config_path.parent.parent, proxy.plain_port, proxy.admin,
                                                proxy.listeners, proxy.upstream_port))
    t1 = time.monotonic()
    proxy.reload()
    deadline = t1 + 3.0
    while True:
        got_a = tls_certs.handshake(proxy.port, "a.test", pki.ca).serial
        got_default = tls_certs.handshake(proxy.port, None, pki.ca).serial
        if (got_a, got_default) == (pki.a2.serial, pki.b.serial):
            break
        assert time.monotonic() < deadline, f"after SIGHUP: a.test got {got_a:#x}, no SNI got {got_default:#x}"
        time.sleep(0.02)
    print(f"\nSIGHUP: swapped files served after {delays} s; the new configuration's files after "
          f"{time.monotonic() - t1:.3f} s")
    assert proxy.child.poll() is None
