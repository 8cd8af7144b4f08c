import Foundation
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

/// Issue 13 through the real ``ProxyServer`` and its coordinator, with curl on loopback: rehearsals,
/// `/drain/wait`, the `/status` drain member and the late-arrival gauge.
@Suite("Drain features", .serialized)
struct DrainFeaturesTests {
    static func code(_ arguments: [String]) async throws -> String {
        try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}"] + arguments).stdout
    }

    /// During a rehearsal readiness fails while nothing else changes (no `Connection: close`); the
    /// answer reports the connection that arrived, and readiness comes back.
    @Test func aRehearsalFailsReadinessOnlyAndReportsArrivals() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        async let answer = Curl.run(["-s", "-X", "POST", proxy.adminURL + "/drain/rehearse?for=800ms"])
        #expect(await ProxyHarness.eventually { proxy.phase == .rehearsing })
        let ready = try await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/readyz"]).stdout
        #expect(ready == "not ready: rehearsing\n 503")
        let served = try await Curl.run(["-s", "-D", "-", proxy.url + "/hello"]).stdout
        #expect(served.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(!served.lowercased().contains("connection: close"))
        #expect(served.hasSuffix("\r\n\r\nhello"))
        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.hasPrefix("{\"phase\":\"rehearsing\",\"ready\":false,"))
        #expect(status.contains("\"drain\":{\"kind\": \"rehearsal\", \"seconds_since_start\": "))

        let report = try await answer.stdout
        #expect(report.hasPrefix("{\"outcome\": \"completed\", \"for_seconds\": 0.8, \"elapsed_seconds\": "), "\(report)")
        #expect(report.contains("\"new_connections\": 1,"), "\(report)")
        #expect(report.contains("\"last_old_connection_request_seconds\": null"))
        #expect(try await Curl.run(["-s", proxy.adminURL + "/readyz"]).stdout == "ready\n")
        #expect(proxy.phase == .serving)
        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("# TYPE sluice_drain_last_new_connection_seconds gauge\n"))
    }

    /// Bad requests for a rehearsal: wrong method, bad window, or not serving.
    @Test func rehearsalRequestsAreChecked() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.drain.delay = .seconds(5) }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        #expect(try await Self.code([proxy.adminURL + "/drain/rehearse"]) == "405")
        #expect(
            try await Curl.run(["-s", "-X", "POST", proxy.adminURL + "/drain/rehearse?for=50ms"]).stdout
                == "bad rehearsal window for=50ms: expected a duration from 100ms to 5m, e.g. for=10s\n")
        #expect(try await Self.code(["-X", "POST", proxy.adminURL + "/drain/rehearse?for=soon"]) == "400")
        proxy.signal(.terminate)
        #expect(await proxy.reached(.propagating))
        let refused = try await Curl.run(["-s", "-w", " %{http_code}", "-X", "POST", proxy.adminURL + "/drain/rehearse?for=1s"]).stdout
        #expect(refused == "{\"error\": \"cannot rehearse while propagating: a rehearsal runs only while serving\"}\n 409")
    }

    /// A SIGTERM during a rehearsal answers it at once as a drain; the delay counts from the
    /// rehearsal's start, and `/drain/wait`, asked before, answers `drained` when the drain is done.
    @Test func aSignalTurnsARehearsalIntoTheDrainAndDrainWaitAnswers() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.drain.delay = .milliseconds(1500) }
        defer { Task { await upstream.stop() } }

        async let waited = Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/drain/wait"])
        async let rehearsal = Curl.run(["-s", "-X", "POST", proxy.adminURL + "/drain/rehearse?for=30s"])
        #expect(await ProxyHarness.eventually { proxy.phase == .rehearsing })
        let rehearsalStart = ContinuousClock.now
        try await Task.sleep(for: .milliseconds(500))
        proxy.signal(.terminate)
        let answer = try await rehearsal.stdout
        #expect(answer.hasPrefix("{\"outcome\": \"drain\", \"for_seconds\": 30.0, "), "\(answer)")
        #expect(proxy.phase == .propagating)
        #expect(await ProxyHarness.eventually { proxy.phase >= .draining })
        // The delay ran from the rehearsal's start (1.5 s), not from the signal (which came 0.5 s later).
        let propagated = ContinuousClock.now - rehearsalStart
        #expect(propagated < .milliseconds(1900), "\(propagated)")
        #expect(try await waited.stdout == "drained\n 200")
        #expect(await proxy.outcome.value == .clean)
        await proxy.server.shutdown()
    }

    /// `/drain/wait` asked after the drain has ended answers at once.
    @Test func drainWaitAfterTheEndAnswersAtOnce() async throws {
        let waiters = DrainWaiters()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let written = loop.makePromise(of: Void.self)
        let early = waiters.wait(on: loop, written: written)
        early.whenSuccess { _ in written.succeed() }
        await waiters.finish("deadline")
        #expect(try await early.get() == "deadline")
        let late = loop.makePromise(of: Void.self)
        #expect(try await waiters.wait(on: loop, written: late).get() == "deadline")
        late.succeed()
        // The drain ends once: a second finish changes nothing.
        await waiters.finish("drained")
        let later = loop.makePromise(of: Void.self)
        #expect(try await waiters.wait(on: loop, written: later).get() == "deadline")
        later.succeed()
    }
}
