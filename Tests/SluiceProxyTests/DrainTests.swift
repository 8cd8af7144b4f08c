import AsyncHTTPClient
import NIOCore
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

@Suite("Drain lifecycle over loopback")
struct DrainTests {
    static func readyz(_ proxy: ProxyHarness) async throws -> (Int, String) {
        let result = try await Curl.run(["-s", "-w", "\n%{http_code}", proxy.adminURL + "/readyz"])
        let parts = result.stdout.split(separator: "\n")
        return (Int(parts.last ?? "") ?? 0, parts.dropLast().joined(separator: "\n"))
    }

    /// On the first signal readiness fails at once, while new connections and requests are still served.
    @Test func readinessFailsAtOnceWhileTrafficIsStillServed() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.drain.delay = .seconds(30) }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        #expect(try await Self.readyz(proxy) == (200, "ready"))
        proxy.signal(.terminate)
        #expect(await proxy.reached(.propagating))
        #expect(try await Self.readyz(proxy) == (503, "not ready: propagating"))
        let fresh = try await Curl.run(["-s", proxy.url + "/hello"])
        #expect(fresh.stdout == "hello")
        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.contains("\"phase\":\"propagating\""))
        #expect(status.contains("\"ready\":false"))
    }

    /// During propagation a keep-alive connection's responses start carrying `Connection: close`
    /// within the first 80% of the delay, and the connection closes after that response.
    @Test func keepAliveClientsAreMovedAwayDuringPropagation() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.drain.delay = .seconds(4) }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (first, _) = try await client.exchange("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(!first.contains("connection: close"))
        let signalledAt = ContinuousClock.now
        proxy.signal(.terminate)
        var closedAfter: Duration?
        for _ in 0..<200 {
            let (text, closed) = try await client.exchange("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            if text.contains("connection: close\r\n") {
                closedAfter = ContinuousClock.now - signalledAt
                // Moved during propagation, not by the listener closing at the end of it.
                #expect(proxy.phase == .propagating)
                let rest = try await client.waitForClose(timeout: .seconds(5))
                #expect(rest == "")
                break
            }
            #expect(!closed)
            try await Task.sleep(for: .milliseconds(20))  // a client pacing its requests, not synchronisation
        }
        // The close is seeded within the first 80% of the delay (3.2 s); the phase check above proves it
        // came during propagation. The bound measures from when the test sent the signal, which a loaded
        // CI machine delivers late (4.009 s was seen once), so it allows a second of slack.
        let after = try #require(closedAfter)
        #expect(after < .milliseconds(5000))
    }

    /// When draining begins, an idle keep-alive connection that has been quiet is closed, the
    /// listener stops accepting, and the drain ends cleanly.
    @Test func idleConnectionsAreClosedAndTheDrainEndsCleanly() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) {
            $0.drain.delay = .zero
            $0.drain.idleQuietPeriod = .zero
        }
        defer { Task { await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        _ = try await client.exchange("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
        proxy.signal(.terminate)
        #expect(try await client.waitForClose(timeout: .seconds(5)) == "")
        #expect(await proxy.outcome.value == .clean)
        await #expect(throws: (any Error).self) { try await RawClient.connect(port: proxy.port) }
        await proxy.server.shutdown()
    }

    /// A connection that was active a moment ago is not closed under a racing request: the next
    /// request on it is served, with `Connection: close`.
    @Test func recentlyActiveConnectionIsNotClosedUnderARacingRequest() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) {
            $0.drain.delay = .zero
            $0.drain.idleQuietPeriod = .seconds(8)
        }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        _ = try await client.exchange("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
        proxy.signal(.terminate)
        #expect(await proxy.reached(.draining))
        let (text, _) = try await client.exchange("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("connection: close\r\n"))
        #expect(try await client.waitForClose() == "")
        #expect(await proxy.outcome.value == .clean)
    }

    /// A request in flight when draining begins completes, with `Connection: close`.
    @Test func requestInFlightFinishesDuringTheDrain() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.drain.delay = .zero }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        try await client.send("GET /slow-head?ms=3000 HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(await ProxyHarness.eventually {
            (try? await proxy.server.snapshot().get().connections.requestsInFlight) == 1
        })
        proxy.signal(.terminate)
        let (text, _) = try await client.exchange(nil) { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("connection: close\r\n"))
        #expect(text.hasSuffix("slow"))
        #expect(await proxy.outcome.value == .clean)
    }

    /// At the drain deadline what is left is cut and counted.
    @Test func drainDeadlineCutsWhatIsLeft() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) {
            $0.drain.delay = .zero
            $0.drain.timeout = .milliseconds(300)
        }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        try await client.send("GET /slow-head?ms=10000 HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(await ProxyHarness.eventually {
            (try? await proxy.server.snapshot().get().connections.requestsInFlight) == 1
        })
        proxy.signal(.terminate)
        #expect(await proxy.outcome.value == .forced(cut: 1))
        #expect(try await client.waitForClose() == "")
    }

    /// A second signal skips the rest of the delay; a third forces.
    @Test func secondSignalSkipsTheDelayAndThirdForces() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) {
            $0.drain.delay = .seconds(60)
            $0.drain.timeout = .seconds(60)
        }
        defer { Task { await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        try await client.send("GET /slow-head?ms=10000 HTTP/1.1\r\nHost: a\r\n\r\n")
        proxy.signal(.terminate)
        #expect(await proxy.reached(.propagating))
        proxy.signal(.terminate)
        #expect(await proxy.reached(.draining))
        proxy.signal(.terminate)
        #expect(await proxy.outcome.value == .forced(cut: 1))
        await proxy.server.shutdown()
    }
}
