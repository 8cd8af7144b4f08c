"""HTTP/2 abuse limits on the real binary: a rapid-reset flood (CVE-2023-44487), a SETTINGS flood and a
PING flood each end their connection with GOAWAY ENHANCE_YOUR_CALM, a broken frame with PROTOCOL_ERROR,
and every one is counted in /metrics (`sluice_http2_connection_errors_total{code=...}`) and /status,
while a well-behaved connection on the same sluice goes on being served.
"""
from __future__ import annotations

import json
import re

import pytest

import h2conformance as h2
from h2conformance import E, T


@pytest.fixture(scope="module")
def sluice(tmp_path_factory):
    with h2.running_sluice(tmp_path_factory.mktemp("h2limits"), h2.sluice_bin()) as s:
        yield s


def _metrics(sluice) -> dict[str, int]:
    status, body = h2.ru.http_get(sluice.admin_port, "/metrics", timeout=5)
    assert status == 200
    text = body.decode() if isinstance(body, bytes) else body
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'^sluice_http2_connection_errors_total\{code="(\w+)"\} (\d+)$', text, re.M)}


def test_floods_and_protocol_errors_close_the_connection_and_are_counted(sluice):
    survivor = sluice.client()
    survivor.headers(1, h2.request(path="/"))
    assert survivor.expect_response(1).status == 200

    with sluice.client() as rapid:
        # Open and cancel 200 streams at once (more than the 100/s burst). Frames for streams the server
        # took before the GOAWAY (their resets, REFUSED_STREAM) may still arrive; the GOAWAY must, then
        # the close.
        rapid.send(*(h2.frame(T.HEADERS, 0x5, sid, h2.block(h2.request(path="/slow?ms=2000"))) + h2.rst_stream(sid)
                     for sid in range(1, 401, 2)))
        goaways = []
        for _ in range(10_000):
            f = rapid.read_frame()
            if f == h2.CLOSED:
                break
            assert f != "timeout", f"no close after the flood; frames: {rapid.history()}"
            if f.type == T.GOAWAY:
                goaways.append(f.error_code)
        assert goaways == [E.ENHANCE_YOUR_CALM], rapid.history()
    with sluice.client() as settings_flood:
        settings_flood.send(*(h2.settings() for _ in range(200)))
        settings_flood.expect_connection_error(E.ENHANCE_YOUR_CALM)
    with sluice.client() as ping_flood:
        ping_flood.send(*(h2.ping() for _ in range(200)))
        ping_flood.expect_connection_error(E.ENHANCE_YOUR_CALM)
    with sluice.client() as broken:
        broken.send(h2.ping(stream_id=1))  # PING on a stream: PROTOCOL_ERROR (RFC 9113 §6.7)
        broken.expect_connection_error(E.PROTOCOL_ERROR)

    # The well-behaved connection is unaffected.
    survivor.headers(3, h2.request(path="/"))
    assert survivor.expect_response(3).status == 200
    survivor.close()

    assert _metrics(sluice) == {"ENHANCE_YOUR_CALM": 3, "PROTOCOL_ERROR": 1}
    status, body = h2.ru.http_get(sluice.admin_port, "/status", timeout=5)
    assert json.loads(body)["http2_connection_errors"] == {"ENHANCE_YOUR_CALM": 3, "PROTOCOL_ERROR": 1}


def test_continuation_flood_gets_goaway_enhance_your_calm_and_is_counted(sluice):
    """Issue 14 item 8: a header block split over more than 8 CONTINUATION frames ends the connection
    with GOAWAY ENHANCE_YOUR_CALM before the close (RFC 9113 §5.4.1), not a bare FIN, and is counted;
    a block of 8 CONTINUATIONs is served."""
    before = _metrics(sluice).get("ENHANCE_YOUR_CALM", 0)

    def split_block(stream_id: int, continuations: int) -> bytes:
        payload = h2.block(h2.request(path="/") + [("x-pad", "a" * 200)])
        size = -(-len(payload) // (continuations + 1))
        pieces = [payload[i * size:(i + 1) * size] for i in range(continuations + 1)]
        frames = [h2.frame(T.HEADERS, 0x1, stream_id, pieces[0])]
        frames += [h2.frame(T.CONTINUATION, 0x4 if i == continuations else 0, stream_id, pieces[i])
                   for i in range(1, continuations + 1)]
        return b"".join(frames)

    with sluice.client() as fine:
        fine.send(split_block(1, 8))
        assert fine.expect_response(1).status == 200
    with sluice.client() as flood:
        flood.send(split_block(1, 9))
        flood.expect_connection_error(E.ENHANCE_YOUR_CALM)

    assert _metrics(sluice).get("ENHANCE_YOUR_CALM", 0) == before + 1
