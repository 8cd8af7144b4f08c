#!/usr/bin/env python3
"""h2client.py over TLS: the same HTTP/2 load process (multiplexed streams, two-phase GOAWAY aware, the
same records), its connections opened with TLS and ALPN h2, verified against `--tls-ca` for `--sni`.

    tls_h2client.py --tls-ca ca.pem --sni a.test [h2client.py's arguments]

h2client.py itself is untouched: this process gives it an `asyncio` whose `open_connection` speaks TLS
(a connection whose ALPN is not h2 is the failure `tls_alpn`; a failed handshake `tls_handshake`).
Used by rolling_update.py with `tls=True` and `h2 > 0`.
"""
from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import types

import h2client
from records import Failure


def install(ca: str, sni: str) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])

    async def open_connection(host, port, **kw):
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=sni, **kw)
        except ssl.SSLError as e:
            raise Failure("tls_handshake", f"{e.__class__.__name__}: {e}")
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn != "h2":
            writer.close()
            raise Failure("tls_alpn", f"ALPN selected {alpn!r}")
        return reader, writer

    class TLSAsyncio(types.ModuleType):
        def __getattr__(self, name):
            return getattr(asyncio, name)

    shim = TLSAsyncio("asyncio")
    shim.open_connection = open_connection
    h2client.asyncio = shim


def main() -> None:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--tls-ca", required=True)
    ap.add_argument("--sni", required=True)
    ours, rest = ap.parse_known_args()
    install(ours.tls_ca, ours.sni)
    sys.argv = [sys.argv[0], *rest]
    h2client.main()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(1)
