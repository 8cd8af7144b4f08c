"""Routing by Host and path to several groups of different schemes, with the real binary (issue 10).

Three groups behind one sluice, each endpoint an edge_origin.py that echoes its name, the target and
the Host it received:

- `web`: two HTTP/1.1 origins, round-robin; the catch-all route and a 1 KiB `max-body-size` route;
- `api`: two HTTP/1.1 origins, `balance: hash` on `header:x-user-id`; a Host + path-prefix route
  with `strip-prefix` and `host-rewrite`, and an exact-path route;
- `grpc`: one h2c origin (HTTP/2 with prior knowledge upstream), reached by a wildcard Host.

Each request is checked for exactly which origin answered and what it received, from HTTP/1.1 and
h2c (prior knowledge) clients alike. A second config without a catch-all answers 404 with the
router's one-line body. `sluice check-config` judges the same file (exit 0) and a broken one (exit 1,
every error with its path).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from edge import Client, Origin, Sluice, check_config, curl_h2c, echo, free_port, sluice_binary

CONFIG = """\
listen: [127.0.0.1:{port}]
admin: 127.0.0.1:{admin}
threads: 1
drain-delay: 0s
drain-timeout: 5s
upstreams:
  web:
    endpoints: [{web1}, {web2}]
    balance: round-robin
  api:
    endpoints: [{api1}, {api2}]
    balance: hash
    hash-on: header:x-user-id
  grpc:
    endpoints: [{grpc}]
routes:
  - host: api.example.com
    path-prefix: /v1/
    upstream: api
    strip-prefix: true
    host-rewrite: api.internal
  - host: "*.grpc.example.com"
    upstream: grpc
  - path: /exact
    upstream: api
  - path-prefix: /upload
    upstream: web
    max-body-size: 1KiB
  - host: web.example.com
    upstream: web
{catch_all}"""

CATCH_ALL = """\
  - path-prefix: /
    upstream: web
"""

WEB = {"web-1", "web-2"}
API = {"api-1", "api-2"}


@pytest.fixture(scope="module")
def origins(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("origins")
    started = [Origin("web-1", log_dir), Origin("web-2", log_dir), Origin("api-1", log_dir),
               Origin("api-2", log_dir), Origin("grpc-1", log_dir, h2c=True)]
    try:
        yield {o.name: o for o in started}
    finally:
        for o in started:
            o.stop()


def config_text(origins, port: int, admin: int, catch_all: bool = True) -> str:
    return CONFIG.format(port=port, admin=admin, web1=origins["web-1"].url, web2=origins["web-2"].url,
                         api1=origins["api-1"].url, api2=origins["api-2"].url, grpc=origins["grpc-1"].url,
                         catch_all=CATCH_ALL if catch_all else "")


@pytest.fixture(scope="module")
def proxied(origins, tmp_path_factory):
    sluice_binary()
    work = tmp_path_factory.mktemp("sluice")
    port, admin = free_port(), free_port()
    config = work / "edge.yaml"
    config.write_text(config_text(origins, port, admin))
    sluice = Sluice(config, port, admin, work / "sluice.log")
    try:
        yield sluice, config
    finally:
        assert sluice.stop() == 0, sluice.log_path.read_text()[-2000:]


# (Host, request target) -> (group's origins, path the origin must see, Host the origin must see;
# None: the client's Host unchanged). Client Host values carry ports and odd case on purpose.
CASES = [
    # Host exact + path-prefix /v1/: prefix stripped, Host rewritten.
    ("api.example.com", "/v1/users?page=2", API, "/users?page=2", "api.internal"),
    ("API.Example.com:8443", "/v1/users", API, "/users", "api.internal"),   # port ignored, case ignored
    ("api.example.com", "/v1", API, "/", "api.internal"),                    # the prefix itself
    ("api.example.com", "/v10/users", WEB, "/v10/users", None),             # not a segment boundary
    ("other.example.com", "/v1/users", WEB, "/v1/users", None),             # another host: catch-all
    # Host wildcard -> the h2c group.
    ("a.grpc.example.com", "/pkg.Svc/Method", {"grpc-1"}, "/pkg.Svc/Method", None),
    ("x.y.grpc.example.com:80", "/deep", {"grpc-1"}, "/deep", None),
    ("grpc.example.com", "/pkg.Svc/Method", WEB, "/pkg.Svc/Method", None),  # the suffix alone is not *.
    # Exact path.
    ("anything.test", "/exact", API, "/exact", None),
    ("anything.test", "/exact?q=1", API, "/exact?q=1", None),                # the query is not the path
    ("anything.test", "/exact/more", WEB, "/exact/more", None),
    # Host exact without path.
    ("web.example.com", "/any/thing", WEB, "/any/thing", None),
    # Catch-all.
    ("unknown.test", "/", WEB, "/", None),
]


@pytest.mark.parametrize("host,target,group,path,seen_host", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_http1_request_reaches_the_routed_group_with_its_rewrites(proxied, host, target, group, path, seen_host):
    sluice, _ = proxied
    client = Client(sluice.port)
    try:
        status, headers, body = client.request("GET", target, host=host)
    finally:
        client.close()
    assert status == 200, body
    got = echo(body)
    assert got["name"] in group, got
    assert got["path"] == path, got
    assert got["host"] == (seen_host or host), got
    assert got["protocol"] == ("h2c" if group == {"grpc-1"} else "http/1.1"), got
    assert headers["x-origin"] == got["name"]


@pytest.mark.parametrize("host,target,group,path,seen_host", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_h2c_request_reaches_the_routed_group_with_its_rewrites(proxied, host, target, group, path, seen_host):
    sluice, _ = proxied
    status, body = curl_h2c(sluice.port, target, host)
    assert status == 200, body
    got = echo(body)
    assert got["name"] in group, got
    assert got["path"] == path, got
    assert got["host"] == (seen_host or host), got


def test_every_group_answers_and_each_scheme_is_spoken_upstream(proxied):
    sluice, _ = proxied
    client = Client(sluice.port)
    seen = {}
    try:
        for host in ("api.example.com", "a.grpc.example.com", "web.example.com"):
            status, _, body = client.request("POST", "/v1/x", host=host, body=b"x" * 300)
            assert status == 200, body
            got = echo(body)
            seen[got["name"].split("-")[0]] = (got["protocol"], got["body_len"], got["method"])
    finally:
        client.close()
    assert seen == {"api": ("http/1.1", 300, "POST"), "grpc": ("h2c", 300, "POST"), "web": ("http/1.1", 300, "POST")}


def test_route_max_body_size_answers_413_only_on_its_route(proxied):
    sluice, _ = proxied
    client = Client(sluice.port)
    try:
        status, _, body = client.request("POST", "/upload/file", host="x.test", body=b"a" * 1024)
        assert status == 200 and echo(body)["name"] in WEB and echo(body)["body_len"] == 1024, body
        status, _, body = client.request("POST", "/upload/file", host="x.test", body=b"a" * 1025)
        assert status == 413, body
        client.close()
        # Another route has no limit.
        status, _, body = client.request("POST", "/elsewhere", host="x.test", body=b"a" * 64 * 1024)
        assert status == 200 and echo(body)["body_len"] == 64 * 1024, body
    finally:
        client.close()


def test_route_max_body_size_413_for_h2c_client(proxied, tmp_path):
    sluice, _ = proxied
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * 4096)
    status, body = curl_h2c(sluice.port, "/upload/big", "x.test", "--data-binary", f"@{big}")
    assert status == 413, body
    small = tmp_path / "small.bin"
    small.write_bytes(b"s" * 1000)
    status, body = curl_h2c(sluice.port, "/upload/small", "x.test", "--data-binary", f"@{small}")
    assert status == 200 and echo(body)["body_len"] == 1000, body


def test_hash_on_header_keeps_each_user_on_one_endpoint(proxied):
    sluice, _ = proxied
    client = Client(sluice.port)
    by_user: dict[str, collections.Counter] = {}
    try:
        for user in [f"user-{i}" for i in range(20)]:
            counts = collections.Counter()
            for _ in range(50 if user == "user-0" else 5):
                status, _, body = client.request("GET", "/v1/me", host="api.example.com", headers={"x-user-id": user})
                assert status == 200, body
                counts[echo(body)["name"]] += 1
            by_user[user] = counts
    finally:
        client.close()
    assert sum(by_user["user-0"].values()) == 50
    for user, counts in by_user.items():
        assert len(counts) == 1, f"{user} moved between endpoints: {dict(counts)}"
    endpoints_used = {name for counts in by_user.values() for name in counts}
    assert endpoints_used == API, f"20 users all hashed to {endpoints_used}"


def test_round_robin_spreads_evenly_over_two_endpoints(proxied):
    sluice, _ = proxied
    client = Client(sluice.port)
    counts = collections.Counter()
    try:
        for _ in range(100):
            status, _, body = client.request("GET", "/rr", host="web.example.com")
            assert status == 200, body
            counts[echo(body)["name"]] += 1
    finally:
        client.close()
    assert set(counts) == WEB, counts
    assert abs(counts["web-1"] - counts["web-2"]) <= 2, counts


def test_no_catch_all_unmatched_request_is_404_with_the_router_body(origins, tmp_path):
    port, admin = free_port(), free_port()
    config = tmp_path / "no-catch-all.yaml"
    config.write_text(config_text(origins, port, admin, catch_all=False))
    sluice = Sluice(config, port, admin, tmp_path / "sluice.log")
    try:
        client = Client(sluice.port)
        try:
            status, _, body = client.request("GET", "/nowhere?x=1", host="nothing.test")
            assert status == 404
            assert body == b"no route for host nothing.test path /nowhere?x=1\n" or \
                body == b"no route for host nothing.test path /nowhere\n", body
            # Routes still route.
            status, _, body = client.request("GET", "/v1/ok", host="api.example.com")
            assert status == 200 and echo(body)["name"] in API, body
            status, _, body = client.request("GET", "/v10/users", host="api.example.com")
            assert status == 404 and body.startswith(b"no route for host api.example.com path /v10/users"), body
        finally:
            client.close()
        status, body = curl_h2c(sluice.port, "/nowhere", "nothing.test")
        assert status == 404 and body == b"no route for host nothing.test path /nowhere\n", body
    finally:
        assert sluice.stop() == 0


def test_check_config_accepts_the_test_config(proxied):
    _, config = proxied
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    assert "sluice: configuration is valid" in result.stderr
    for line in ("  web:", "  api:", "  grpc:", "    balance: hash", "    hash-on: header:x-user-id",
                 "    strip-prefix: true", "    host-rewrite: api.internal", "    max-body-size: 1KiB"):
        assert line in result.stdout.splitlines(), (line, result.stdout)
    result = check_config(config, "--format", "json")
    assert result.returncode == 0, result.stdout
    checked = json.loads(result.stdout)
    assert checked["valid"] is True and checked["errors"] == []
    assert [(g["name"], g["scheme"], len(g["endpoints"])) for g in checked["config"]["groups"]] == \
        [("web", "http", 2), ("api", "http", 2), ("grpc", "h2c", 1)]
    assert [r["upstream"] for r in checked["config"]["routes"]] == ["api", "grpc", "api", "web", "web", "web"]


def test_check_config_rejects_a_broken_variant_with_path_qualified_messages(proxied, tmp_path):
    _, config = proxied
    broken = config.read_text()
    broken = broken.replace("    balance: round-robin\n", "    balance: round-robin\n    health: {interval: 2x}\n", 1)
    broken = broken.replace("  - path: /exact\n    upstream: api\n", "  - path: /exact\n    upstream: apii\n")
    broken = broken.replace("    strip-prefix: true\n", "    strip-prefix: maybe\n")
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    result = check_config(path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert 'sluice: upstreams.web.health.interval: "2x" is not a duration (500ms, 5s, 1m30s)' in lines, lines
    assert any(line.startswith('sluice: routes[2].upstream: "apii"') for line in lines), lines
    assert any(line.startswith("sluice: routes[0].strip-prefix:") for line in lines), lines
    assert lines[-1] == "sluice: configuration is invalid (3 errors)", lines


def test_readme_edge_example_passes_check_config(tmp_path):
    """The README's complete edge-proxy example is a valid configuration."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```yaml\n# edge.yaml\n") + len("```yaml\n")
    example = tmp_path / "edge.yaml"
    example.write_text(readme[start:readme.index("```", start)])
    result = check_config(example, "--grace-period", "50s")
    assert result.returncode == 0, result.stderr
    assert "sluice: configuration is valid" in result.stderr
