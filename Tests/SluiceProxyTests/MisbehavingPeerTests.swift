import Foundation
import NIOCore
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

/// What an attacker or a broken peer can do to the HTTP/1 data path, on loopback with hand-written
/// clients and upstreams (issue 14): each test failed before its fix.
@Suite("Misbehaving clients and upstreams over loopback")
struct MisbehavingPeerTests {
    static let smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: 1\r\n\r\nSMUGGLED"

    /// Answers `/a` with `hello` and, in the same write, a second response nobody asked for; any
    /// other path with its own name.
    static func desyncingUpstream() async throws -> ScriptedUpstream {
        try await ScriptedUpstream.start { head in
            let target = ScriptedUpstream.target(head)
            if target == "/a" { return .init(ScriptedUpstream.ok("hello") + Self.smuggled) }
            return .init(ScriptedUpstream.ok(target))
        }
    }

    static func upstreamCounts(_ proxy: ProxyHarness) async throws -> LoopSnapshot {
        try await proxy.server.snapshot().get()
    }

    // MARK: - 1. Response desync

    /// Bytes behind a complete upstream response never answer the next request: not the client's
    /// own pipelined `/b`, and not another client's request on the pooled connection. The
    /// connection is closed and counted.
    @Test func extraBytesAfterAResponseNeverAnswerTheNextRequest() async throws {
        let upstream = try await Self.desyncingUpstream()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n") { $0.hasCompleteResponses(2) }
        #expect(!text.contains("SMUGGLED") && !text.contains("x-smuggled") && !text.contains("X-Smuggled"), "\(text)")
        #expect(text.hasSuffix("\r\n\r\n/b"), "\(text)")
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n") && text.contains("\r\n\r\nhelloHTTP/1.1 200 OK\r\n"), "\(text)")

        // A second client after the first: the poisoned connection was not pooled.
        let other = try await RawClient.connect(port: proxy.port)
        defer { Task { await other.close() } }
        try await client.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        _ = try await client.exchange(nil) { $0.hasCompleteResponses(1) }
        let (second, _) = try await other.exchange("GET /c HTTP/1.1\r\nHost: x\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(second.hasSuffix("\r\n\r\n/c") && !second.contains("SMUGGLED"), "\(second)")

        let stats = try await Self.upstreamCounts(proxy).stats
        #expect(stats.upstreamUnsolicitedBytes == 2)
        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("sluice_upstream_unsolicited_bytes_total 2\n"))
    }

    /// Bytes that arrive on a pooled connection while no request is outstanding close it at once,
    /// even when they are only the start of a head (completed by the next request's answer, they
    /// would have been taken for it).
    @Test func bytesOnAnIdlePooledConnectionCloseIt() async throws {
        let upstream = try await ScriptedUpstream.start { head in
            let target = ScriptedUpstream.target(head)
            if target == "/late" { return .init(ScriptedUpstream.ok("late"), later: (.milliseconds(50), "HTTP/1.1 200 OK\r\nX-Smug")) }
            return .init(ScriptedUpstream.ok(target))
        }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (first, _) = try await client.exchange("GET /late HTTP/1.1\r\nHost: x\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(first.hasSuffix("\r\n\r\nlate"))
        #expect(await ProxyHarness.eventually { (try? await Self.upstreamCounts(proxy).stats.upstreamUnsolicitedBytes) == 1 })
        #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })
        let (next, _) = try await client.exchange("GET /next HTTP/1.1\r\nHost: x\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(next.hasPrefix("HTTP/1.1 200 OK\r\n") && next.hasSuffix("\r\n\r\n/next") && !next.contains("X-Smug"), "\(next)")
        #expect(upstream.snapshot.opened == 2)
    }

    // MARK: - 2. Repeated Content-Length

    /// Equal repeated lengths go on as exactly one `Content-Length`, to the upstream and to the client.
    @Test func repeatedEqualContentLengthsAreForwardedAsOne() async throws {
        let upstream = try await ScriptedUpstream.start { _ in
            .init("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello")
        }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc") { $0.hasCompleteResponses(1) }
        #expect(text.lowercased().components(separatedBy: "content-length").count == 2, "\(text)")
        #expect(text.contains("Content-Length: 5\r\n") && text.hasSuffix("\r\n\r\nhello"), "\(text)")
        let received = upstream.snapshot.received.joined()
        #expect(received.lowercased().components(separatedBy: "content-length").count == 2, "\(received)")
        #expect(received.contains("Content-Length: 3\r\n") && received.hasSuffix("\r\n\r\nabc"), "\(received)")
    }

    // MARK: - 4. Abandoned and stalled request bodies

    /// A client that sends part of a body and goes away (half-close, or a full close) frees the
    /// upstream connection at once: it is closed, and the pool shows nothing busy.
    @Test(arguments: [true, false])
    func clientLeavingMidBodyClosesTheUpstreamConnection(halfClose: Bool) async throws {
        let upstream = try await ScriptedUpstream.start { _ in nil }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        try await client.send("POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        #expect(await ProxyHarness.eventually { upstream.snapshot.received.first?.hasSuffix("abc") == true })
        #expect(try await Self.upstreamCounts(proxy).upstreams[0].busy == 1)
        if halfClose { try await client.closeOutput() } else { await client.close() }
        #expect(await ProxyHarness.eventually(timeout: .seconds(5)) { upstream.snapshot.closed == 1 })
        #expect(try await Self.upstreamCounts(proxy).upstreams[0].busy == 0)
        #expect(try await Self.upstreamCounts(proxy).connections.total == 0)
        await client.close()
    }

    /// A body that stops arriving is answered with 408 once the body timeout passes (nothing of
    /// the response had gone out), and its upstream connection is closed; a body that keeps
    /// coming, however slowly, is not cut.
    @Test func stalledRequestBodyGets408AndFreesTheUpstream() async throws {
        let upstream = try await ScriptedUpstream.start { _ in .init(ScriptedUpstream.ok("done")) }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.http.requestBodyTimeout = .milliseconds(700) }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let slow = try await RawClient.connect(port: proxy.port)
        defer { Task { await slow.close() } }
        try await slow.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        for byte in ["a", "b", "c"] {
            try await Task.sleep(for: .milliseconds(300))  // a client trickling its body, below the timeout
            try await slow.send(byte)
        }
        let (served, _) = try await slow.exchange("d") { $0.hasCompleteResponses(1) }
        #expect(served.hasPrefix("HTTP/1.1 200 OK\r\n") && served.hasSuffix("done"), "\(served)")

        let stalled = try await RawClient.connect(port: proxy.port)
        let start = ContinuousClock.now
        try await stalled.send("POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        let text = try await stalled.waitForClose(timeout: .seconds(5))
        let body = "no request body bytes for 700ms\n"
        #expect(text == "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)")
        #expect(ContinuousClock.now - start >= .milliseconds(650))
        #expect(await ProxyHarness.eventually { upstream.snapshot.closed >= 1 })
        #expect(try await Self.upstreamCounts(proxy).upstreams[0].busy == 0)
    }

    // MARK: - 6. Interim responses

    /// 1xx responses are forwarded to HTTP/1.1 clients in order before the final one (but a `100`,
    /// which Sluice answers itself); an HTTP/1.0 client gets only the final response.
    @Test func interimResponsesAreForwarded() async throws {
        let upstream = try await ScriptedUpstream.start { _ in
            .init("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + ScriptedUpstream.ok("ok"))
        }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n") { $0.hasSuffix("\r\n\r\nok") }
        #expect(text.hasPrefix("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n"), "\(text)")

        let old = try await RawClient.connect(port: proxy.port)
        defer { Task { await old.close() } }
        let (oldText, _) = try await old.exchange("GET / HTTP/1.0\r\nHost: x\r\n\r\n") { $0.hasSuffix("\r\n\r\nok") }
        #expect(oldText.hasPrefix("HTTP/1.0 200 OK\r\n"), "\(oldText)")

        let curl = try await Curl.run(["-s", "-i", proxy.url + "/"])
        #expect(curl.stdout.hasPrefix("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n"), "\(curl.stdout)")
    }

    /// More than 32 interim responses: the 32 are forwarded, then a 502; the upstream connection is closed.
    @Test func endlessInterimResponsesEndInA502() async throws {
        let upstream = try await ScriptedUpstream.start { _ in
            .init(String(repeating: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", count: 33) + ScriptedUpstream.ok("ok"))
        }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange("GET / HTTP/1.1\r\nHost: x\r\n\r\n") { $0.contains("\r\n\r\nupstream sent an invalid response") && $0.hasSuffix("\n") }
        #expect(text.components(separatedBy: "HTTP/1.1 103 Early Hints\r\n").count == 33, "\(text.suffix(300))")
        #expect(text.contains("HTTP/1.1 502 Bad Gateway\r\n"))
        #expect(text.hasSuffix("upstream sent an invalid response: more than 32 interim (1xx) responses\n"), "\(text.suffix(200))")
        #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })
    }

    // MARK: - 9. Lingering close

    /// An upload refused mid-way (413 past the body limit, 431 for a head too large) ends in a
    /// clean close, not a reset: Sluice reads and drops what the client still sends, so a client
    /// that is still writing its body (as most HTTP libraries do before they read) is not failed
    /// with ECONNRESET before it gets to the response.
    @Test(arguments: [
        ("POST /u HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "h", count: 40000) + "\r\nContent-Length: 1000000\r\n\r\n", "431 Request Header Fields Too Large"),
        ("POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + String(repeating: "a", count: 2048), "413 Payload Too Large"),
    ])
    func refusedUploadIsAnsweredNotReset(request: String, status: String) async throws {
        let upstream = try await ScriptedUpstream.start { _ in .init(ScriptedUpstream.ok("never")) }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.http.maxBodyBytes = 1024 }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port, halfClosable: true)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange(request) { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 \(status)\r\n") && text.contains("connection: close\r\n"), "\(text.prefix(120))")
        // The rest of the body, as the client would go on sending it: never refused with a reset.
        let chunk = String(repeating: "b", count: 16384)
        for _ in 0..<32 { try await client.send(chunk) }
        #expect(try await client.waitForClose(timeout: .seconds(5)) == "")
        // Sluice closes for good once the client has been quiet for a while.
        #expect(await ProxyHarness.eventually(timeout: .seconds(5)) { (try? await Self.upstreamCounts(proxy).connections.total) == 0 })
        #expect(upstream.snapshot.opened == 0)
    }

    // MARK: - 11. Durations of requests refused before routing

    /// A request refused before it was routed (431, 400) records its own duration, not the time
    /// since the host booted.
    @Test func requestRefusedBeforeRoutingRecordsItsRealDuration() async throws {
        let upstream = try await ScriptedUpstream.start { _ in .init(ScriptedUpstream.ok("ok")) }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        for request in ["GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: 40000))\r\n\r\n", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"] {
            let client = try await RawClient.connect(port: proxy.port)
            try await client.send(request)
            let text = try await client.waitForClose(timeout: .seconds(5))
            #expect(text.hasPrefix("HTTP/1.1 4"), "\(text)")
        }
        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        let sum = metrics.split(separator: "\n").first { $0.hasPrefix("sluice_request_duration_seconds_sum ") }
        let seconds = sum.flatMap { Double($0.split(separator: " ")[1]) } ?? -1
        #expect(seconds >= 0 && seconds < 5, "\(sum ?? "no sum")")
        #expect(metrics.contains("sluice_requests_total{class=\"4xx\"} 2\n"))
    }

    // MARK: - 12. Slowloris during a drain

    /// Connections that sent only part of a request head do not hold the drain to its deadline:
    /// once draining, they get a 408 after the grace period and close, and the drain ends clean.
    @Test func partialHeadsDoNotHoldTheDrainToItsDeadline() async throws {
        let upstream = try await ScriptedUpstream.start { _ in .init(ScriptedUpstream.ok("ok")) }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) {
            $0.drain.delay = .milliseconds(200)
            $0.drain.timeout = .seconds(15)
        }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        var clients: [RawClient] = []
        for _ in 0..<20 {
            let client = try await RawClient.connect(port: proxy.port)
            try await client.send("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            clients.append(client)
        }
        #expect(await ProxyHarness.eventually { (try? await Self.upstreamCounts(proxy).connections.byState[.active]) == 20 })
        let start = ContinuousClock.now
        proxy.signal(.terminate)
        let outcome = await proxy.outcome.value
        #expect(outcome == .clean)
        #expect(ContinuousClock.now - start < .seconds(5))
        for client in clients {
            let text = try await client.waitForClose(timeout: .seconds(5))
            #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n") && text.hasSuffix("request head not complete when the drain began\n"), "\(text)")
        }
    }
}
