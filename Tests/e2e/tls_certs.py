"""Test certificates for the TLS end-to-end tests, made at test time with the `openssl` CLI (never
committed: the private keys live in a temporary directory for one test run).

`make_pki(directory)` writes, ECDSA P-256 by default (`key_type="rsa"` for RSA 2048):

- a CA (`ca.pem`, `ca.key`), self-signed, the trust anchor every client is given;
- `a` and `b`: server certificates for `a.test` and `b.test` (SAN and CN);
- `wildcard`: `*.w.test`;
- `a2`: a second certificate for `a.test` with its own key and serial (the reload tests swap between `a` and
  `a2` and tell them apart by serial);
- `expired`: `expired.test`, not valid after `EXPIRED_NOT_AFTER` (in the past);
- `not_yet_valid`: `future.test`, not valid before `FUTURE_NOT_BEFORE` (a year ahead);
- `mismatched`: the certificate of `a.test` (copied) with a key that is not its own;
- `not_pem`: a file that is not PEM, for a certificate or a key.

Dates are computed when the module is imported and rounded to the second, so that a test can format the
date an error message must name (`iso(...)`, `2026-01-01T00:00:00Z` style). Every server certificate is
signed by the CA directly (`openssl ca`, which can set both validity bounds), with serverAuth and the SAN.
"""
from __future__ import annotations

import datetime as dt
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "openssl"
_NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
# The expired certificate ended at midnight 30+ days ago; the future one starts at midnight a year ahead.
EXPIRED_NOT_BEFORE = (_NOW - dt.timedelta(days=400)).replace(hour=0, minute=0, second=0)
EXPIRED_NOT_AFTER = (_NOW - dt.timedelta(days=30)).replace(hour=0, minute=0, second=0)
FUTURE_NOT_BEFORE = (_NOW + dt.timedelta(days=365)).replace(hour=0, minute=0, second=0)
VALID_NOT_BEFORE = _NOW - dt.timedelta(days=1)
VALID_NOT_AFTER = _NOW + dt.timedelta(days=30)


def iso(t: dt.datetime) -> str:
    """The form the error messages use: 2026-01-01T00:00:00Z."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _asn1(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%SZ")


@dataclass(frozen=True)
class Cert:
    """One certificate and its key, as files."""
    name: str            # the first SAN DNS name (what `sluice_tls_certificate_expiry_timestamp_seconds` labels)
    cert: Path
    key: Path
    serial: int
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True)
class PKI:
    directory: Path
    ca: Path             # CA certificate (PEM): give it to clients as the trust anchor
    ca_key: Path
    key_type: str
    a: Cert
    b: Cert
    wildcard: Cert
    a2: Cert
    expired: Cert
    not_yet_valid: Cert
    mismatched: Cert     # a.test's certificate with another key
    not_pem: Path

    def issue(self, stem: str, sans: tuple[str, ...], serial: int, not_before: dt.datetime = VALID_NOT_BEFORE,
              not_after: dt.datetime = VALID_NOT_AFTER, key: Path | None = None) -> Cert:
        """Another server certificate signed by this CA (a new key unless `key` is given)."""
        return _issue(self.directory, self.ca, self.ca_key, self.key_type, stem, sans, serial, not_before,
                      not_after, key)


def _run(*argv: str, cwd: Path) -> None:
    r = subprocess.run([OPENSSL, *argv], cwd=str(cwd), capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def _new_key(path: Path, key_type: str) -> None:
    if key_type == "ec":
        _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path),
             cwd=path.parent)
    elif key_type == "rsa":
        _run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path), cwd=path.parent)
    else:
        raise ValueError(f"key_type must be ec or rsa, not {key_type!r}")
    path.chmod(0o600)


_CA_CONFIG = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = {dir}/ca-db/index.txt
new_certs_dir = {dir}/ca-db/issued
serial = {dir}/ca-db/serial
certificate = {ca}
private_key = {ca_key}
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
email_in_dn = no
[ any ]
commonName = supplied
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
"""


def _issue(directory: Path, ca: Path, ca_key: Path, key_type: str, stem: str, sans: tuple[str, ...], serial: int,
           not_before: dt.datetime, not_after: dt.datetime, key: Path | None) -> Cert:
    cert_path = directory / f"{stem}.crt"
    key_path = key if key is not None else directory / f"{stem}.key"
    if key is None:
        _new_key(key_path, key_type)
    csr = directory / f"{stem}.csr"
    _run("req", "-new", "-key", str(key_path), "-subj", f"/CN={sans[0]}", "-out", str(csr), cwd=directory)
    ext = directory / f"{stem}.ext"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n"
                   f"subjectAltName = {', '.join('DNS:' + s for s in sans)}\n")
    (directory / "ca-db" / "serial").write_text(f"{serial:04X}\n")
    _run("ca", "-batch", "-notext", "-config", str(directory / "ca.cnf"), "-in", str(csr), "-out", str(cert_path),
         "-extfile", str(ext), "-startdate", _asn1(not_before), "-enddate", _asn1(not_after), cwd=directory)
    csr.unlink()
    ext.unlink()
    return Cert(sans[0], cert_path, key_path, serial, tuple(sans), not_before, not_after)


def make_pki(directory: Path, key_type: str = "ec") -> PKI:
    """Writes the CA and every certificate above into `directory` (created if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-db" / "issued").mkdir(parents=True, exist_ok=True)
    (directory / "ca-db" / "index.txt").write_text("")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _new_key(ca_key, key_type)
    _run("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "60", "-subj", "/CN=Sluice e2e test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-out", str(ca), cwd=directory)
    (directory / "ca.cnf").write_text(_CA_CONFIG.format(dir=directory, ca=ca, ca_key=ca_key))

    def issue(stem, sans, serial, nb=VALID_NOT_BEFORE, na=VALID_NOT_AFTER, key=None):
        return _issue(directory, ca, ca_key, key_type, stem, sans, serial, nb, na, key)

    a = issue("a", ("a.test",), 0x0A01)
    b = issue("b", ("b.test",), 0x0B01)
    wildcard = issue("wildcard", ("*.w.test",), 0x0C01)
    a2 = issue("a2", ("a.test",), 0x0A02)
    expired = issue("expired", ("expired.test",), 0x0E01, EXPIRED_NOT_BEFORE, EXPIRED_NOT_AFTER)
    future = issue("future", ("future.test",), 0x0F01, FUTURE_NOT_BEFORE, FUTURE_NOT_BEFORE + dt.timedelta(days=30))
    mismatch_cert = directory / "mismatch.crt"
    shutil.copyfile(a.cert, mismatch_cert)
    mismatch_key = directory / "mismatch.key"
    _new_key(mismatch_key, key_type)
    mismatched = Cert(a.name, mismatch_cert, mismatch_key, a.serial, a.sans, a.not_before, a.not_after)
    not_pem = directory / "not-pem.txt"
    not_pem.write_text("this is not a PEM file\n")
    return PKI(directory, ca, ca_key, key_type, a, b, wildcard, a2, expired, future, mismatched, not_pem)


# --------------------------------------------------------------------------------------------------
# reading what a server presented


def client_context(ca: Path | None, alpn: list[str] | None = None, minimum: ssl.TLSVersion | None = None,
                   maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that verifies the chain against `ca` but not the host name (so that the
    certificate an unknown name or no SNI gets can be looked at)."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    ctx.check_hostname = False
    if ca is None:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


@dataclass(frozen=True)
class Handshake:
    serial: int
    sans: tuple[str, ...]
    subject_cn: str
    version: str           # "TLSv1.3"
    alpn: str | None
    not_after: str


def handshake(port: int, sni: str | None, ca: Path, alpn: list[str] | None = None, timeout: float = 5.0,
              minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None) -> Handshake:
    """One TLS handshake to 127.0.0.1:port with `sni` (None: no SNI); what the server presented."""
    import socket

    ctx = client_context(ca, alpn, minimum, maximum)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            peer = s.getpeercert()
            info = Handshake(
                serial=int(peer["serialNumber"], 16),
                sans=tuple(v for k, v in peer.get("subjectAltName", ()) if k == "DNS"),
                subject_cn=next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), ""),
                version=s.version() or "",
                alpn=s.selected_alpn_protocol(),
                not_after=peer.get("notAfter", ""),
            )
            try:
                s.unwrap()
            except (OSError, ValueError):
                pass
            return info


if __name__ == "__main__":
    import sys
    import tempfile

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="sluice-tls-"))
    pki = make_pki(out)
    for field in ("a", "b", "wildcard", "a2", "expired", "not_yet_valid", "mismatched"):
        c = getattr(pki, field)
        print(f"{field:14s} {c.cert}  {c.key}  serial={c.serial:#x} sans={','.join(c.sans)} "
              f"{iso(c.not_before)}..{iso(c.not_after)}")
    print(f"{'ca':14s} {pki.ca}")
