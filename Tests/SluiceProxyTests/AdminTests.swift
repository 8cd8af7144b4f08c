import Foundation
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

@Suite("Admin endpoints")
struct AdminTests {
    /// /livez, /readyz, /status and /metrics answer as documented; other methods and paths are refused.
    @Test func endpointsAnswerAsDocumented() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        #expect(try await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/livez"]).stdout == "ok\n 200")
        #expect(try await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/readyz"]).stdout == "ready\n 200")
        #expect(try await Curl.run(["-s", proxy.url + "/hello"]).stdout == "hello")
        #expect(try await Curl.run(["-s", proxy.url + "/nope"]).stdout == "no such path")

        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.hasPrefix("{\"phase\":\"serving\",\"ready\":true,\"phase_seconds_left\":null,"))
        #expect(status.contains("\"responses\":{\"other\":0,\"1xx\":0,\"2xx\":1,\"3xx\":0,\"4xx\":1,\"5xx\":0}"))
        #expect(status.contains("\"upstreams\":[{\"url\":\"\(upstream.url)\",\"group\":\"default\",\"idle\":1,\"busy\":0}]"))

        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("sluice_requests_total{class=\"2xx\"} 1\n"))
        #expect(metrics.contains("sluice_requests_total{class=\"4xx\"} 1\n"))
        #expect(metrics.contains("sluice_drain_phase 1"))
        #expect(metrics.contains("sluice_request_duration_seconds_count 2\n"))
        #expect(metrics.contains("# TYPE sluice_request_duration_seconds histogram\n"))
        // The tunnel series are there from the start, at zero.
        #expect(status.contains("\"by_protocol\":{\"http1\":"))
        #expect(status.contains(",\"tunnels\":{\"http1\":0,\"http2\":0}},"))
        for series in [
            "sluice_tunnels_active{protocol=\"http1\"} 0", "sluice_tunnels_active{protocol=\"http2\"} 0",
            "sluice_tunnels_total{protocol=\"http1\"} 0", "sluice_tunnels_total{protocol=\"http2\"} 0",
            "sluice_tunnel_duration_seconds_bucket{le=\"86400.0\"} 0", "sluice_tunnel_duration_seconds_count 0",
            "sluice_tunnel_bytes_total{direction=\"client_to_upstream\"} 0", "sluice_tunnel_bytes_total{direction=\"upstream_to_client\"} 0",
            "sluice_tunnel_drain_closes_total{result=\"clean\"} 0", "sluice_tunnel_drain_closes_total{result=\"timeout\"} 0",
        ] {
            #expect(metrics.contains(series + "\n"), "\(series)")
        }

        #expect(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", proxy.adminURL + "/readyz"]).stdout == "405")
        #expect(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", proxy.adminURL + "/other"]).stdout == "404")
    }

    // MARK: Tunnels (issue 11)

    /// Two loops' tunnel counters: one HTTP/1 tunnel of 2 s that carried 100 bytes up and 5000 down,
    /// two HTTP/2 ones (0.5 s and two days), a clean and a timed-out drain close, and open tunnels.
    static func tunnelSnapshot() -> LoopSnapshot {
        var a = RequestStats()
        a.recordTunnelClosed(protocol: .http1, duration: .seconds(2), bytesFromClient: 100, bytesToClient: 5000)
        a.recordTunnelDrainClose(.clean)
        var b = RequestStats()
        b.recordTunnelClosed(protocol: .http2, duration: .milliseconds(500), bytesFromClient: 1, bytesToClient: 2)
        b.recordTunnelClosed(protocol: .http2, duration: .seconds(2 * 86400), bytesFromClient: 0, bytesToClient: 0)
        b.recordTunnelDrainClose(.timedOut)
        var countsA = ConnectionTable<MonotonicInstant>.Counts()
        countsA.tunnelsByProtocol = [.http1: 3]
        var countsB = ConnectionTable<MonotonicInstant>.Counts()
        countsB.tunnelsByProtocol = [.http1: 1, .http2: 4]
        return LoopSnapshot(connections: countsA, stats: a, upstreams: []) + LoopSnapshot(connections: countsB, stats: b, upstreams: [])
    }

    /// /metrics sums the loops' tunnel counters: closed tunnels by protocol, the duration histogram
    /// (cumulative, with +Inf), bytes by direction, drain closes by result, open tunnels by protocol.
    @Test func tunnelMetricsSumTheLoops() {
        let text = ProxyMetrics().render(Self.tunnelSnapshot())
        for line in [
            "# TYPE sluice_tunnels_active gauge", "sluice_tunnels_active{protocol=\"http1\"} 4", "sluice_tunnels_active{protocol=\"http2\"} 4",
            "# TYPE sluice_tunnels_total counter", "sluice_tunnels_total{protocol=\"http1\"} 1", "sluice_tunnels_total{protocol=\"http2\"} 2",
            "# TYPE sluice_tunnel_duration_seconds histogram",
            "sluice_tunnel_duration_seconds_bucket{le=\"0.1\"} 0", "sluice_tunnel_duration_seconds_bucket{le=\"1.0\"} 1",
            "sluice_tunnel_duration_seconds_bucket{le=\"10.0\"} 2", "sluice_tunnel_duration_seconds_bucket{le=\"86400.0\"} 2",
            "sluice_tunnel_duration_seconds_bucket{le=\"+Inf\"} 3", "sluice_tunnel_duration_seconds_sum 172802.5",
            "sluice_tunnel_duration_seconds_count 3",
            "# TYPE sluice_tunnel_bytes_total counter",
            "sluice_tunnel_bytes_total{direction=\"client_to_upstream\"} 101", "sluice_tunnel_bytes_total{direction=\"upstream_to_client\"} 5002",
            "# TYPE sluice_tunnel_drain_closes_total counter",
            "sluice_tunnel_drain_closes_total{result=\"clean\"} 1", "sluice_tunnel_drain_closes_total{result=\"timeout\"} 1",
        ] {
            #expect(text.contains("\n" + line + "\n"), "\(line)")
        }
    }

    /// /status shows the open tunnels by protocol inside `connections`, next to `by_protocol`.
    @Test func statusShowsOpenTunnelsByProtocol() {
        let config = SluiceConfig()
        let status = StatusDocument.render(
            phase: ProxyServer.PhaseState(phase: .serving), snapshot: Self.tunnelSnapshot(), config: config,
            limits: .init(maxConnections: 10, pausedListeners: 0), configState: ConfigState(config: config, generation: 1, loadedAt: 0, lastError: nil))
        #expect(status.contains("\"by_state\":{\"idle\":0,\"active\":0,\"tunnel\":0,\"closing\":0}"))
        #expect(status.contains(",\"tunnels\":{\"http1\":4,\"http2\":4}},\"requests_in_flight\":0,"))
        let json = try? JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any]
        let connections = json?["connections"] as? [String: Any]
        #expect(connections?["tunnels"] as? [String: Int] == ["http1": 4, "http2": 4])
    }

    // MARK: Framing (issue 14, item 10)

    /// A request that does not parse gets a framed 400 with `Connection: close`, and the server closes.
    @Test func malformedRequestGetsFramed400AndTheConnectionCloses() async throws {
        try await Self.withAdmin { proxy in
            let client = try await RawClient.connect(port: proxy.adminPort)
            defer { Task { await client.close() } }
            try await client.send("GET /livez HTTP/1.1\r\nHost\r\n\r\n")
            let text = try await client.waitForClose(timeout: .seconds(5))
            let body = "bad request: missing colon in field line\n"
            #expect(
                text == "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\n"
                    + "cache-control: no-store\r\nconnection: close\r\n\r\n" + body
            )
        }
    }

    /// CONNECT gets a framed 405 with `Allow` and `Connection: close`, and the server closes; `curl -X
    /// CONNECT` returns at once with 405 instead of hanging.
    @Test func connectGetsFramed405AndTheConnectionCloses() async throws {
        try await Self.withAdmin { proxy in
            let client = try await RawClient.connect(port: proxy.adminPort)
            defer { Task { await client.close() } }
            try await client.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            let text = try await client.waitForClose(timeout: .seconds(5))
            let body = "only GET and HEAD are supported\n"
            #expect(
                text == "HTTP/1.1 405 Method Not Allowed\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\n"
                    + "cache-control: no-store\r\nallow: GET, HEAD\r\nconnection: close\r\n\r\n" + body
            )

            let started = ContinuousClock.now
            let curl = try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "CONNECT", proxy.adminURL + "/livez"], timeout: .seconds(5))
            #expect(curl.exitCode == 0)
            #expect(curl.stdout == "405")
            #expect(ContinuousClock.now - started < .seconds(3))
        }
    }

    /// A 100 KB request line gets a framed 431 with `Connection: close`, and the server closes.
    @Test func hugeRequestLineGetsFramed431AndTheConnectionCloses() async throws {
        try await Self.withAdmin { proxy in
            let client = try await RawClient.connect(port: proxy.adminPort)
            defer { Task { await client.close() } }
            // The server may answer and close before it has read everything: the send may then fail.
            try? await client.send("GET /" + String(repeating: "a", count: 100_000) + " HTTP/1.1\r\nHost: a\r\n\r\n")
            let text = try await client.waitForClose(timeout: .seconds(5))
            let body = "request head too large\n"
            #expect(
                text == "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    + "content-length: \(body.utf8.count)\r\ncache-control: no-store\r\nconnection: close\r\n\r\n" + body
            )
        }
    }

    /// Keep-alive and pipelining still work: two pipelined requests get two framed answers in order on
    /// one connection, which stays open; `Connection: close` is honoured, HEAD has no body.
    @Test func pipelinedRequestsAreAnsweredInOrderAndCloseIsHonoured() async throws {
        try await Self.withAdmin { proxy in
            let client = try await RawClient.connect(port: proxy.adminPort)
            defer { Task { await client.close() } }
            let (text, closed) = try await client.exchange("GET /status HTTP/1.1\r\nHost: a\r\n\r\nGET /livez HTTP/1.1\r\nHost: a\r\n\r\n") {
                $0.hasCompleteResponses(2)
            }
            #expect(!closed)
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"))
            #expect(text.hasSuffix("\r\n\r\nok\n"))
            let (head, _) = try await client.exchange("HEAD /livez HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasSuffix("\r\n\r\n") }
            #expect(head == "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\ncache-control: no-store\r\n\r\n")
            try await client.send("GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(
                try await client.waitForClose(timeout: .seconds(5))
                    == "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 3\r\ncache-control: no-store\r\nconnection: close\r\n\r\nok\n"
            )
        }
    }

    static func withAdmin(_ configure: @escaping (inout SluiceConfig) -> Void = { _ in }, _ body: (ProxyHarness) async throws -> Void) async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        try await ProxyHarness.withProxy(upstreams: [upstream.url], configure, cleanup: { await upstream.stop() }, body)
    }

    /// An admin connection that sends nothing, or half a head, is closed after the request-header
    /// timeout: slow clients cannot hold the probes' listener.
    @Test func silentAndSlowAdminConnectionsAreClosed() async throws {
        try await Self.withAdmin({ $0.http.requestHeaderTimeout = .milliseconds(400) }) { proxy in
            // Before the connects: the timeouts run from accept, so this bound holds however slowly
            // the test itself is scheduled.
            let start = ContinuousClock.now
            let silent = try await RawClient.connect(port: proxy.adminPort)
            let slow = try await RawClient.connect(port: proxy.adminPort)
            defer { Task { await silent.close(); await slow.close() } }
            try await slow.send("GET /status HTTP/1.1\r\nHo")
            #expect(try await silent.waitForClose(timeout: .seconds(5)) == "")
            #expect(try await slow.waitForClose(timeout: .seconds(5)) == "")
            #expect(ContinuousClock.now - start >= .milliseconds(300))
            // A prompt client is still served.
            let result = try await Curl.run(["-s", proxy.adminURL + "/livez"])
            #expect(result.stdout == "ok\n")
        }
    }
}
