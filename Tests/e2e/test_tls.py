"""TLS termination on the real binary (issue 12): SNI, ALPN, the clients, X-Forwarded-Proto, the minimum
version, every certificate error at start-up and in `check-config`, and the TLS metrics.

    python3 -m pytest -q -p no:cacheprovider Tests/e2e/test_tls.py                  # SLUICE_BIN, else .build/debug/sluice
    TLS_PROXY=nginx python3 -m pytest -q -rs -p no:cacheprovider Tests/e2e/test_tls.py  # the tests' check

Certificates are made at test time (tls_certs.py: a CA; a.test, b.test, *.w.test; expired, not yet
valid, a mismatched key; ECDSA P-256). One proxy serves most cases: a plaintext listener and a TLS
listener with the certificates [a.test, b.test, *.w.test] (a.test the default), in front of an echo
origin that answers with the request headers it received. Clients: Python `ssl`, `openssl s_client`,
curl, nghttp, h2load and httpx (HTTP/2 and HTTP/1.1).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rolling_update as ru  # noqa: E402
import tls_certs  # noqa: E402
from tls_harness import PROXY, EchoOrigin, TLSListener, TLSProxy, curl, s_client, sluice_only  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return tls_certs.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def echo():
    origin = EchoOrigin("echo")
    yield origin
    origin.stop()


@pytest.fixture(scope="module")
def proxy(pki, echo, tmp_path_factory):
    listener = TLSListener([(pki.a.cert, pki.a.key), (pki.b.cert, pki.b.key), (pki.wildcard.cert, pki.wildcard.key)])
    p = TLSProxy(tmp_path_factory.mktemp("proxy"), [listener], echo.port, pki.ca)
    yield p
    rc = p.stop()
    if PROXY == "sluice":
        assert rc == 0, f"sluice exit code {rc}:\n{p.child.tail(30)}"


@pytest.fixture(scope="module")
def proxy13(pki, echo, tmp_path_factory):
    """A TLS listener with min-version 1.3, and a second TLS listener with `alpn: [http/1.1]`."""
    p = TLSProxy(tmp_path_factory.mktemp("proxy13"), [TLSListener([(pki.a.cert, pki.a.key)], min_version="1.3"),
                                                      TLSListener([(pki.b.cert, pki.b.key)], alpn=["http/1.1"])],
                 echo.port, pki.ca, plain=False)
    yield p
    p.stop()


# ==================================================================================================
# SNI


SNI_CASES = [("a.test", "a"), ("b.test", "b"), ("x.w.test", "wildcard"), ("deep.x.w.test", "a"),
             ("unknown.test", "a"), (None, "a")]


@pytest.mark.parametrize("sni,which", SNI_CASES, ids=[str(s) for s, _ in SNI_CASES])
def test_sni_selects_the_certificate(proxy, pki, sni, which):
    """SNI picks a certificate by its SAN names (a wildcard covers one label only); an unknown name or no
    SNI gets the first certificate. Checked twice: Python's ssl (serial and SANs, chain verified against the
    CA) and `openssl s_client` (the subject it prints)."""
    want = getattr(pki, which)
    got = tls_certs.handshake(proxy.port, sni, pki.ca)
    assert (got.serial, got.sans) == (want.serial, want.sans), f"SNI {sni!r}: got {got}, expected {want.name}"
    r = s_client(proxy.port, "-CAfile", str(pki.ca), "-verify_return_error", servername=sni)
    assert r.returncode == 0, r.stderr
    assert f"subject=CN = {want.sans[0]}" in r.stdout, r.stdout[:2000]
    assert "Verify return code: 0 (ok)" in r.stdout, r.stdout[-1500:]


@pytest.mark.parametrize("host", ["a.test", "b.test", "x.w.test"])
def test_curl_verifies_each_name(proxy, pki, host):
    """curl checks the chain and the name: every name it asks for is served a certificate for that name."""
    status, _, body, _ = curl(proxy.port, host, pki.ca)
    assert status == 200
    assert json.loads(body)["headers"]["host"] == f"{host}:{proxy.port}"


def test_curl_rejects_the_default_certificate_for_an_unknown_name(proxy, pki):
    """unknown.test gets a.test's certificate, which curl refuses (exit 60: name mismatch)."""
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", f"unknown.test:{proxy.port}:127.0.0.1",
                        "--cacert", str(pki.ca), f"https://unknown.test:{proxy.port}/"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 60, (r.returncode, r.stderr)
    assert "unknown.test" in r.stderr, r.stderr


# ==================================================================================================
# ALPN and the clients


@pytest.mark.parametrize("flag,version", [("--http2", "2"), ("--http1.1", "1.1")])
def test_curl_alpn(proxy, pki, flag, version):
    status, got, body, _ = curl(proxy.port, "a.test", pki.ca, flag)
    assert (status, got) == (200, version)
    assert json.loads(body)["path"] == "/"


@pytest.mark.parametrize("offer,expected", [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["h2"], "h2"),
                                            (None, None)])
def test_alpn_selection(proxy, pki, offer, expected):
    """The server picks h2 when offered, else http/1.1; without ALPN it selects nothing (HTTP/1.1)."""
    assert tls_certs.handshake(proxy.port, "a.test", pki.ca, alpn=offer).alpn == expected


def test_alpn_http1_only_listener(proxy13, pki):
    """A listener configured with `alpn: [http/1.1]` never selects h2, even when the client prefers it."""
    port = proxy13.listeners[1].port
    assert tls_certs.handshake(port, "b.test", pki.ca, alpn=["h2", "http/1.1"]).alpn == "http/1.1"
    status, version, body, _ = curl(port, "b.test", pki.ca, "--http2")
    assert (status, version) == (200, "1.1")
    assert json.loads(body)["headers"]["x-forwarded-proto"] == "https"


def test_no_alpn_is_http1(proxy, pki):
    """A client without ALPN speaks HTTP/1.1 over TLS and is served."""
    import socket
    ctx = tls_certs.client_context(pki.ca)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="a.test") as s:
        assert s.selected_alpn_protocol() is None
        s.sendall(b"GET /no-alpn HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["path"] == "/no-alpn"


def test_nghttp(proxy, pki):
    """nghttp (libnghttp2's client) negotiates h2 and gets the answer."""
    r = subprocess.run(["nghttp", "-nv", "-H", ":authority: a.test", f"https://127.0.0.1:{proxy.port}/nghttp"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert re.search(r"[Nn]egotiated protocol: h2\n", r.stdout), r.stdout[:2000]
    assert re.search(r"recv \(stream_id=\d+\) :status: 200", r.stdout), r.stdout[-2000:]


@pytest.mark.parametrize("http2,version", [(True, "HTTP/2"), (False, "HTTP/1.1")])
def test_httpx(proxy, pki, http2, version):
    """httpx (with h2) over TLS, SNI a.test, the chain and the name verified against the CA."""
    httpx = pytest.importorskip("httpx", reason="needs httpx[http2] (scripts/install-deps.sh)")
    if http2:
        pytest.importorskip("h2")
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with httpx.Client(http2=http2, verify=ctx, timeout=10) as client:
        for i in range(3):  # several requests on one connection
            r = client.get(f"https://127.0.0.1:{proxy.port}/httpx/{i}", headers={"Host": "a.test"},
                           extensions={"sni_hostname": "a.test"})
            assert r.status_code == 200
            assert r.http_version == version
            assert r.json()["path"] == f"/httpx/{i}"
            assert r.json()["headers"]["x-forwarded-proto"] == "https"


def test_h2load(proxy, pki):
    """h2load: 200 requests on 4 HTTP/2 connections over TLS, none failed."""
    r = subprocess.run(["h2load", "-n", "200", "-c", "4", "-m", "10", "--connect-to", f"127.0.0.1:{proxy.port}",
                        f"https://a.test:{proxy.port}/h2load"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Application protocol: h2" in r.stdout, r.stdout
    assert re.search(r"requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored", r.stdout), r.stdout
    assert "status codes: 200 2xx" in r.stdout, r.stdout


# ==================================================================================================
# X-Forwarded-Proto


def test_x_forwarded_proto_https_on_tls_and_http_on_plaintext(proxy, pki):
    """The scheme comes from the listener: https behind TLS (HTTP/1.1 and HTTP/2), http behind the
    plaintext listener of the same process."""
    for flag in ("--http1.1", "--http2"):
        status, _, body, _ = curl(proxy.port, "a.test", pki.ca, flag, path="/xfp")
        assert status == 200
        assert json.loads(body)["headers"].get("x-forwarded-proto") == "https", (flag, body)
    code, body = ru.http_get(proxy.plain_port, "/xfp", timeout=5)
    assert code == 200
    assert json.loads(body)["headers"].get("x-forwarded-proto") == "http", body


# ==================================================================================================
# minimum version


def test_min_version_1_2_accepts_both(proxy, pki):
    for flag, proto in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        r = s_client(proxy.port, flag, "-CAfile", str(pki.ca), servername="a.test")
        assert r.returncode == 0, (flag, r.stdout[-800:], r.stderr)
        assert f"Protocol  : {proto}" in r.stdout or f", {proto}, Cipher is" in r.stdout, r.stdout[-1500:]


def test_min_version_1_3_refuses_a_tls_1_2_client(proxy13, pki):
    r = s_client(proxy13.port, "-tls1_2", "-CAfile", str(pki.ca), servername="a.test")
    assert r.returncode != 0, r.stdout[-1500:]
    assert "Cipher is (NONE)" in r.stdout or "alert protocol version" in r.stderr, r.stdout[-800:] + r.stderr
    with pytest.raises(ssl.SSLError):
        tls_certs.handshake(proxy13.port, "a.test", pki.ca, maximum=ssl.TLSVersion.TLSv1_2)

    r = s_client(proxy13.port, "-tls1_3", "-CAfile", str(pki.ca), servername="a.test")
    assert r.returncode == 0, r.stdout[-800:] + r.stderr
    assert ", TLSv1.3, Cipher is" in r.stdout, r.stdout[-1500:]
    assert tls_certs.handshake(proxy13.port, "a.test", pki.ca).version == "TLSv1.3"
    status, version, _, _ = curl(proxy13.port, "a.test", pki.ca, "--http2")
    assert (status, version) == (200, "2")


# ==================================================================================================
# metrics and status


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for m in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
        out.append((labels, float(m.group(2))))
    return out


@sluice_only
def test_metrics_count_handshakes_by_version_and_alpn(proxy, pki):
    listener = proxy.listeners[0].address

    def count(version: str, alpn: str) -> float:
        return sum(v for labels, v in _samples(proxy.metrics(), "sluice_tls_handshakes_total")
                   if labels == {"listener": listener, "version": version, "alpn": alpn})

    before_h2, before_h1 = count("1.3", "h2"), count("1.2", "http/1.1")
    curl(proxy.port, "a.test", pki.ca, "--http2", "--tlsv1.3")
    curl(proxy.port, "a.test", pki.ca, "--http1.1", "--tlsv1.2", "--tls-max", "1.2")
    assert count("1.3", "h2") == before_h2 + 1, proxy.metrics()
    assert count("1.2", "http/1.1") == before_h1 + 1, proxy.metrics()


@sluice_only
def test_metrics_count_handshake_failures(proxy13, pki):
    listener = proxy13.listeners[0].address

    def failures() -> float:
        return sum(v for labels, v in _samples(proxy13.metrics(), "sluice_tls_handshake_failures_total")
                   if labels.get("listener") == listener)

    before = failures()
    s_client(proxy13.port, "-tls1_2", servername="a.test")
    deadline = time.monotonic() + 5
    while failures() < before + 1:
        assert time.monotonic() < deadline, proxy13.metrics()
        time.sleep(0.05)


@sluice_only
def test_metrics_certificate_expiry(proxy, pki):
    """One series per certificate, labelled with its first SAN name; the value is notAfter (Unix s)."""
    listener = proxy.listeners[0].address
    got = {labels["name"]: v for labels, v in _samples(proxy.metrics(), "sluice_tls_certificate_expiry_timestamp_seconds")
           if labels.get("listener") == listener}
    want = {c.name: float(int(c.not_after.timestamp())) for c in (pki.a, pki.b, pki.wildcard)}
    assert got == want, (got, want)


@sluice_only
def test_status_lists_the_tls_listener(proxy, pki):
    """/status `listeners`: each with its address, the bound address, the scheme, and (TLS) its certificates'
    names, files and notAfter."""
    listeners = {entry["address"]: entry for entry in proxy.status()["listeners"]}
    tls_addr, plain_addr = proxy.listeners[0].address, f"127.0.0.1:{proxy.plain_port}"
    assert set(listeners) == {tls_addr, plain_addr}, listeners
    tls, plain = listeners[tls_addr], listeners[plain_addr]
    assert (tls["scheme"], tls["bound"]) == ("https", tls_addr), tls
    assert (plain["scheme"], plain["bound"], plain["certificates"]) == ("http", plain_addr, []), plain
    assert [(c["names"], c["file"], c["not_after"]) for c in tls["certificates"]] == [
        (list(c.sans), str(c.cert), int(c.not_after.timestamp())) for c in (pki.a, pki.b, pki.wildcard)], tls


# ==================================================================================================
# bad certificates: start-up and check-config, one by one, then two at once


class BadStart:
    """Sluice started on a TLS listener whose files are wrong: it must exit non-zero, quickly, naming
    every problem; `check-config` must report the same."""

    def __init__(self, tmp: Path, origin_port: int) -> None:
        self.tmp = tmp
        self.origin_port = origin_port
        self.tls_port = ru.free_port()
        self.addr = f"127.0.0.1:{self.tls_port}"

    def config(self, certificates: list[tuple[Path, Path]]) -> Path:
        from tls_harness import sluice_yaml
        path = self.tmp / f"bad-{len(list(self.tmp.glob('bad-*.yaml')))}.yaml"
        lst = TLSListener(certificates, port=self.tls_port)
        path.write_text(sluice_yaml(ru.free_port(), ru.free_port(), [lst], self.origin_port))
        os.chmod(path, 0o644)
        return path

    def start(self, argv: list[str], as_user: int | None = None, timeout: float = 15.0) -> tuple[int, str, float]:
        t0 = time.monotonic()
        preexec = None
        if as_user is not None:
            def preexec() -> None:
                os.setgid(as_user)
                os.setuid(as_user)
        try:
            r = subprocess.run([str(ru.default_sluice_bin()), *argv], capture_output=True, text=True, timeout=timeout,
                               preexec_fn=preexec)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"sluice still running {timeout}s after start with bad certificates: {e.stdout}{e.stderr}")
        return r.returncode, r.stdout + r.stderr, time.monotonic() - t0

    def expect(self, certificates: list[tuple[Path, Path]], messages: list[str], as_user: int | None = None,
               flags_form: bool = True) -> None:
        config = self.config(certificates)
        runs = [("--config", ["--config", str(config)]), ("check-config", ["check-config", "--config", str(config)])]
        if flags_form and len(certificates) == 1:
            cert, key = certificates[0]
            runs.append(("flags", ["--listen", f"127.0.0.1:{ru.free_port()}", "--admin", f"127.0.0.1:{ru.free_port()}",
                                   "--upstream", f"http://127.0.0.1:{self.origin_port}", "--listen-tls", self.addr,
                                   "--tls-cert", str(cert), "--tls-key", str(key)]))
        for form, argv in runs:
            rc, output, took = self.start(argv, as_user)
            assert rc != 0, f"{form}: exit 0 with bad certificates:\n{output}"
            if form != "check-config":
                assert took < 10, f"{form}: took {took:.1f}s to fail"
            for message in messages:
                # Case aside (strerror says "No such file..."), the text of common.md, path and address included.
                assert message.lower() in output.lower(), f"{form}: expected\n  {message}\nin:\n{output}"


@pytest.fixture
def bad(tmp_path, echo):
    from tls_harness import require_proxy
    require_proxy()
    return BadStart(tmp_path, echo.port)


@sluice_only
def test_missing_certificate_file(bad, pki, tmp_path):
    missing = tmp_path / "no-such.crt"
    bad.expect([(missing, pki.a.key)],
               [f"TLS certificate {missing} (listen {bad.addr}): cannot read: no such file or directory"])


@sluice_only
def test_missing_key_file(bad, pki, tmp_path):
    missing = tmp_path / "no-such.key"
    bad.expect([(pki.a.cert, missing)],
               [f"TLS key {missing} (listen {bad.addr}): cannot read: no such file or directory"])


@sluice_only
def test_unreadable_key(bad, pki):
    """chmod 000: permission denied. As root every file is readable, so then sluice runs as `nobody`
    (uid 65534) on copies in a world-readable directory; skipped if it cannot."""
    as_user = None
    directory = Path(tempfile.mkdtemp(prefix="sluice-tls-perm-"))
    try:
        os.chmod(directory, 0o755)
        cert, key = directory / "a.crt", directory / "a.key"
        shutil.copyfile(pki.a.cert, cert)
        shutil.copyfile(pki.a.key, key)
        os.chmod(cert, 0o644)
        os.chmod(key, 0o000)
        bad.tmp = directory
        if os.geteuid() == 0:
            # The same files with a readable key must pass check-config as nobody, or the test cannot run.
            as_user = 65534
            readable = directory / "readable.key"
            shutil.copyfile(pki.a.key, readable)
            os.chmod(readable, 0o644)
            probe = subprocess.run([str(ru.default_sluice_bin()), "check-config", "--config", str(bad.config([(cert, readable)]))],
                                   capture_output=True, text=True, timeout=30,
                                   preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
            if probe.returncode != 0:
                pytest.skip(f"running as root, and sluice cannot run as nobody here: {(probe.stdout + probe.stderr)[-300:]}")
        bad.expect([(cert, key)], [f"TLS key {key} (listen {bad.addr}): cannot read: permission denied"], as_user=as_user)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@sluice_only
def test_certificate_not_pem(bad, pki):
    bad.expect([(pki.not_pem, pki.a.key)], [f"TLS certificate {pki.not_pem} (listen {bad.addr}): not a PEM certificate"])


@sluice_only
def test_key_not_pem(bad, pki):
    bad.expect([(pki.a.cert, pki.not_pem)], [f"TLS key {pki.not_pem} (listen {bad.addr}): not a PEM private key"])


@sluice_only
def test_expired_certificate(bad, pki):
    bad.expect([(pki.expired.cert, pki.expired.key)],
               [f"TLS certificate {pki.expired.cert} (listen {bad.addr}): expired on {tls_certs.iso(pki.expired.not_after)}"])


@sluice_only
def test_not_yet_valid_certificate(bad, pki):
    bad.expect([(pki.not_yet_valid.cert, pki.not_yet_valid.key)],
               [f"TLS certificate {pki.not_yet_valid.cert} (listen {bad.addr}): not valid before "
                f"{tls_certs.iso(pki.not_yet_valid.not_before)}"])


@sluice_only
def test_mismatched_key(bad, pki):
    bad.expect([(pki.mismatched.cert, pki.mismatched.key)],
               [f"TLS key {pki.mismatched.key} (listen {bad.addr}): does not match certificate {pki.mismatched.cert}"])


@sluice_only
def test_every_error_at_once(bad, pki, tmp_path):
    """Two certificates of one listener, both wrong (and a third that is fine): both errors reported."""
    missing = tmp_path / "gone.crt"
    bad.expect([(pki.a.cert, pki.a.key), (missing, pki.b.key), (pki.mismatched.cert, pki.mismatched.key)],
               [f"TLS certificate {missing} (listen {bad.addr}): cannot read: no such file or directory",
                f"TLS key {pki.mismatched.key} (listen {bad.addr}): does not match certificate {pki.mismatched.cert}"])


@sluice_only
def test_check_config_accepts_good_certificates(bad, pki):
    config = bad.config([(pki.a.cert, pki.a.key), (pki.wildcard.cert, pki.wildcard.key)])
    r = subprocess.run([str(ru.default_sluice_bin()), "check-config", "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
