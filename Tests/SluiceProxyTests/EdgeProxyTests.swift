import Foundation
import NIOCore
import SluiceCore
import Testing

@testable import SluiceProxy

/// Routes, groups and the one retry policy (issue 10), over loopback with scripted upstreams that
/// say who answered: each test names the endpoint that must have served each request.
@Suite("Edge proxy: routing and retries over loopback")
struct EdgeProxyTests {
    /// Answers every request with `name target host` (and the body it got, after a `|`).
    static func echo(_ name: String) async throws -> ScriptedUpstream {
        try await ScriptedUpstream.start { head in
            let host = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("host:") }.map { $0.dropFirst(5).trimmingCharacters(in: .whitespaces) } ?? "-"
            return .init(ScriptedUpstream.ok("\(name) \(ScriptedUpstream.target(head)) \(host)"))
        }
    }

    static func group(_ name: String, _ upstreams: [ScriptedUpstream], _ configure: (inout UpstreamGroup) -> Void = { _ in }) -> UpstreamGroup {
        var group = UpstreamGroup(name: name, endpoints: upstreams.map { UpstreamURL(parsing: $0.url)! })
        configure(&group)
        return group
    }

    static func get(_ url: String, host: String? = nil) async throws -> String {
        try await Curl.run(["-s", "-w", " %{http_code}"] + (host.map { ["-H", "Host: \($0)"] } ?? []) + [url]).stdout
    }

    /// Host (exact and wildcard) and path (prefix on segment boundaries, with strip-prefix and
    /// host-rewrite; exact) pick the group; the first match wins; no match is a 404 with one line.
    @Test func requestsGoToTheGroupTheirRouteNames() async throws {
        let (api, web, assets) = (try await Self.echo("api"), try await Self.echo("web"), try await Self.echo("assets"))
        let proxy = try await ProxyHarness.start(upstreams: []) { config in
            config.groups = [Self.group("api", [api]), Self.group("web", [web]), Self.group("assets", [assets])]
            var v1 = Route(host: .exact("api.example.com"), path: .prefix("/v1/"), upstream: "api")
            v1.stripPrefix = true
            v1.hostRewrite = "api.internal"
            config.routes = [
                v1,
                Route(host: .wildcard(suffix: ".example.com"), path: .exact("/favicon.ico"), upstream: "assets"),
                Route(host: .wildcard(suffix: ".example.com"), upstream: "web"),
            ]
        }
        defer { Task { await proxy.stop(); await api.stop(); await web.stop(); await assets.stop() } }

        #expect(try await Self.get(proxy.url + "/v1/users?x=1", host: "API.example.com:8443") == "api /users?x=1 api.internal 200")
        #expect(try await Self.get(proxy.url + "/v1", host: "api.example.com") == "api / api.internal 200")
        #expect(try await Self.get(proxy.url + "/v10", host: "api.example.com") == "web /v10 api.example.com 200")
        #expect(try await Self.get(proxy.url + "/favicon.ico", host: "www.example.com") == "assets /favicon.ico www.example.com 200")
        #expect(try await Self.get(proxy.url + "/favicon.ico/x", host: "www.example.com") == "web /favicon.ico/x www.example.com 200")
        #expect(try await Self.get(proxy.url + "/", host: "example.com") == "no route for host example.com path /\n 404")
        #expect(try await Self.get(proxy.url + "/", host: "example.org") == "no route for host example.org path /\n 404")
    }

    /// A route's `max-body-size` overrides `--max-body-size` both ways.
    @Test func aRoutesBodyLimitOverridesTheGlobalOne() async throws {
        let up = try await Self.echo("up")
        let proxy = try await ProxyHarness.start(upstreams: []) { config in
            config.http.maxBodyBytes = 4
            config.groups = [Self.group("g", [up])]
            var uploads = Route(path: .prefix("/upload"), upstream: "g")
            uploads.maxBodyBytes = 10
            config.routes = [uploads, Route(upstream: "g")]
        }
        defer { Task { await proxy.stop(); await up.stop() } }
        let post = { (path: String, body: String) in
            try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", body, proxy.url + path]).stdout
        }
        #expect(try await post("/upload", "0123456789") == "200")
        #expect(try await post("/upload", "0123456789a") == "413")
        #expect(try await post("/other", "01234") == "413")
        #expect(try await post("/other", "0123") == "200")
    }

    /// A reset before the response is retried on the other endpoint for an idempotent PUT, its
    /// body replayed whole from the retry buffer; a POST is not (it may have reached the app).
    @Test func anIdempotentRequestResetBeforeItsResponseIsReplayedOnAnotherEndpoint() async throws {
        let broken = try await ScriptedUpstream.start { _ in .hangUp }
        let good = try await ScriptedUpstream.start { head in .init(ScriptedUpstream.ok("good \(ScriptedUpstream.target(head))")) }
        let proxy = try await ProxyHarness.start(upstreams: []) { config in
            config.groups = [Self.group("g", [broken, good]) { $0.outlier = nil }]
            config.routes = [Route(upstream: "g")]
        }
        defer { Task { await proxy.stop(); await broken.stop(); await good.stop() } }

        for index in 0..<4 {
            let put = try await Curl.run(["-s", "-w", " %{http_code}", "-X", "PUT", "--data-binary", "payload-\(index)", proxy.url + "/p\(index)"]).stdout
            #expect(put == "good /p\(index) 200")
        }
        // Round-robin: each PUT goes to `broken` first (the retry on `good` moves the turn back to
        // it), and the retry carries its body to `good`.
        #expect(broken.snapshot.received.joined().contains("payload-0"))
        #expect(good.snapshot.received.joined().contains("PUT /p0 HTTP/1.1") && good.snapshot.received.joined().contains("payload-0"))
        var codes: [String] = []
        for index in 0..<2 {
            codes.append(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "post-\(index)", proxy.url + "/post"]).stdout)
        }
        #expect(codes.sorted() == ["200", "502"], "one POST met the reset endpoint and was not retried: \(codes)")
        #expect(try await proxy.server.snapshot().get().stats.retries == 4, "the four PUTs, not the POST")
        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("sluice_upstream_retries_total{group=\"g\"} 4\n"), "\(metrics)")
        #expect(metrics.contains("sluice_upstream_retry_budget_exhausted_total{group=\"g\"} 0\n"))
        // Four PUTs and two POSTs: each PUT's reset attempt and its retry, one reset POST, one served.
        #expect(metrics.contains("sluice_upstream_attempt_duration_seconds_count{group=\"g\"} 10\n"), "\(metrics)")
    }

    /// `retry-on-5xx`: a 503 from one endpoint is retried on another for that route only.
    @Test func fiveHundredsAreRetriedOnlyWhereTheRouteOptsIn() async throws {
        let overloaded = try await ScriptedUpstream.start { _ in .init("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy") }
        let good = try await ScriptedUpstream.start { _ in .init(ScriptedUpstream.ok("good")) }
        let proxy = try await ProxyHarness.start(upstreams: []) { config in
            config.groups = [Self.group("g", [overloaded, good]) { $0.outlier = nil }]
            var retrying = Route(path: .prefix("/retry"), upstream: "g")
            retrying.retryOn5xx = true
            config.routes = [retrying, Route(upstream: "g")]
        }
        defer { Task { await proxy.stop(); await overloaded.stop(); await good.stop() } }

        for _ in 0..<4 { #expect(try await Self.get(proxy.url + "/retry") == "good 200") }
        var plain: [String] = []
        for _ in 0..<4 { plain.append(try await Self.get(proxy.url + "/plain")) }
        #expect(plain.sorted() == ["busy 503", "busy 503", "good 200", "good 200"])
    }

    /// An endpoint nobody listens on: the connect failure is retried on another endpoint for any
    /// method (nothing was sent), and passive outlier detection ejects it, so it stops being tried.
    @Test func aDeadEndpointIsRetriedAroundAndEjected() async throws {
        let good = try await ScriptedUpstream.start { _ in .init(ScriptedUpstream.ok("good")) }
        let dead = try await ScriptedUpstream.start { _ in nil }
        let deadURL = dead.url
        await dead.stop()
        let proxy = try await ProxyHarness.start(upstreams: []) { config in
            config.groups = [
                Self.group("g", []) { group in
                    group.endpoints = [UpstreamURL(parsing: deadURL)!, UpstreamURL(parsing: good.url)!]
                    group.outlier?.consecutiveFailures = 2
                }
            ]
            config.routes = [Route(upstream: "g")]
        }
        defer { Task { await proxy.stop(); await good.stop() } }

        for index in 0..<8 {
            let code = try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "x\(index)", proxy.url + "/"]).stdout
            #expect(code == "200")
        }
        let snapshot = try await proxy.server.snapshot().get()
        #expect(snapshot.stats.upstreamConnectErrors == 2, "two failures eject it; no more connects after that")
        #expect(snapshot.stats.retries == 2)
    }
}
