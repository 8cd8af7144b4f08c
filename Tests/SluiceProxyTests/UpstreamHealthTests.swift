import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

/// Active health checks, `ready-requires` and DNS re-resolution, against real loopback upstreams.
@Suite("Upstream health and resolution")
struct UpstreamHealthTests {
    /// An endpoint whose health path starts failing becomes unhealthy and gets no requests; when it
    /// passes again it is healthy and used again. `/status` and `/metrics` show each step.
    @Test func failingHealthPathTakesAnEndpointOutAndBringsItBack() async throws {
        let a = try await HealthUpstream.start(name: "A")
        let b = try await HealthUpstream.start(name: "B")
        let proxy = try await ProxyHarness.start(groups: [Self.checkedGroup("api", [a.url, b.url])], threads: 2)
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }

        #expect(await proxy.eventually { $0.contains(Self.endpoint(a, "healthy")) && $0.contains(Self.endpoint(b, "healthy")) })
        var seen = try await proxy.who(count: 10)
        #expect(seen["A", default: 0] > 0 && seen["B", default: 0] > 0, "both endpoints serve: \(seen)")

        a.state.setHealthStatus(503)
        #expect(await proxy.eventually { $0.contains(Self.endpoint(a, "unhealthy")) })
        let servedByA = a.state.requests
        seen = try await proxy.who(count: 20)
        #expect(seen == ["B": 20], "only the healthy endpoint serves: \(seen)")
        #expect(a.state.requests == servedByA, "the unhealthy endpoint got no request")
        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("sluice_upstream_endpoint_healthy{group=\"api\",endpoint=\"127.0.0.1:\(a.port)\"} 0\n"))
        #expect(metrics.contains("sluice_upstream_endpoint_healthy{group=\"api\",endpoint=\"127.0.0.1:\(b.port)\"} 1\n"))
        #expect(metrics.contains("sluice_upstream_health_changes_total{group=\"api\"} 3\n"), "two became healthy, one unhealthy")
        #expect(metrics.contains("sluice_upstream_requests_total{group=\"api\",class=\"2xx\"} 30\n"))
        #expect(metrics.contains("sluice_upstream_panic_picks_total{group=\"api\"} 0\n"))

        a.state.setHealthStatus(200)
        #expect(await proxy.eventually { $0.contains(Self.endpoint(a, "healthy")) })
        seen = try await proxy.who(count: 10)
        #expect(seen["A", default: 0] > 0, "the endpoint is used again: \(seen)")
        #expect(a.state.userAgents.contains("sluice-health-check"))
    }

    /// `ready-requires: [api]`: `/readyz` is 503 while serving until an endpoint of `api` passes its
    /// check; a required group without `health:` counts as ready.
    @Test func readyRequiresHoldsReadinessUntilACheckPasses() async throws {
        let a = try await HealthUpstream.start(name: "A")
        let plain = try await HealthUpstream.start(name: "P")
        a.state.setHealthStatus(500)
        let checked = Self.checkedGroup("api", [a.url])
        let unchecked = UpstreamGroup(name: "plain", endpoints: [UpstreamURL(parsing: plain.url)!])
        let proxy = try await ProxyHarness.start(groups: [checked, unchecked], readyRequires: ["plain", "api"])
        defer { Task { await proxy.stop(); await a.stop(); await plain.stop() } }

        #expect(proxy.server.phase.withLockedValue { $0.phase } == .serving)
        #expect(await proxy.eventually { $0.contains(Self.endpoint(a, "unhealthy")) })
        let waiting = try await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/readyz"]).stdout
        #expect(waiting == "not ready: waiting for a healthy endpoint in api\n 503")
        #expect(try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout.contains("\"ready\":false"))

        a.state.setHealthStatus(204)
        var ready = false
        for _ in 0..<100 where !ready {
            ready = (try? await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/readyz"]).stdout) == "ready\n 200"
            if !ready { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ready)
    }

    /// A name whose answer changes: the new address is used, the removed one takes no new request,
    /// its in-flight slow request finishes, and its pooled connection closes after it.
    @Test func changedDNSAnswerDrainsTheRemovedEndpoint() async throws {
        let a = try await HealthUpstream.start(name: "A", host: "127.0.0.1")
        let b = try await HealthUpstream.start(name: "B", host: "127.0.0.2", port: a.port)
        let resolver = FakeResolver(["127.0.0.1"])
        var group = UpstreamGroup(name: "api", endpoints: [UpstreamURL(parsing: "http://svc.test:\(a.port)")!])
        group.dnsRefresh = .milliseconds(100)
        group.outlier = nil
        let proxy = try await ProxyHarness.start(groups: [group], resolver: resolver)
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }

        #expect(try await proxy.who(count: 3) == ["A": 3], "resolved at start-up")
        // A raw client, not curl: curl's pipe readers block cooperative threads for the request's length.
        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        try await client.send("GET /slow?ms=1500 HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n")
        #expect(await ProxyHarness.eventually { a.state.inFlight == 1 })

        resolver.set(["127.0.0.2"])
        #expect(await proxy.eventually { $0.contains("{\"url\":\"http://127.0.0.2:\(a.port)\"") && $0.contains("\"draining\":true") })
        let servedByA = a.state.requests
        #expect(try await proxy.who(count: 5) == ["B": 5], "the new endpoint serves")
        #expect(a.state.requests == servedByA, "the removed endpoint takes no new request")
        #expect(a.state.openConnections >= 1, "the slow request's connection is still open")

        let response = try await client.waitForClose(timeout: .seconds(10))
        #expect(response.hasPrefix("HTTP/1.1 200") && response.hasSuffix("slow from A"), "the in-flight request finished: \(response)")
        #expect(await ProxyHarness.eventually { a.state.openConnections == 0 }, "the removed endpoint's connection closed")
        #expect(await proxy.eventually { !$0.contains("\"draining\":true") }, "the drained endpoint left /status")
    }

    /// A resolution failure keeps the last good answer.
    @Test func failedResolutionKeepsTheLastAnswer() async throws {
        let a = try await HealthUpstream.start(name: "A")
        let resolver = FakeResolver(["127.0.0.1"])
        var group = UpstreamGroup(name: "api", endpoints: [UpstreamURL(parsing: "http://svc.test:\(a.port)")!])
        group.dnsRefresh = .milliseconds(50)
        let proxy = try await ProxyHarness.start(groups: [group], resolver: resolver)
        defer { Task { await proxy.stop(); await a.stop() } }

        #expect(try await proxy.who(count: 2) == ["A": 2])
        resolver.set([])
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await proxy.who(count: 2) == ["A": 2])
        #expect(try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout.contains("\"url\":\"http://127.0.0.1:\(a.port)\""))
    }

    // MARK: Helpers

    static func checkedGroup(_ name: String, _ urls: [String]) -> UpstreamGroup {
        var group = UpstreamGroup(name: name, endpoints: urls.map { UpstreamURL(parsing: $0)! })
        var health = HealthCheck()
        health.path = "/healthz"
        // Two failures in a row, and a timeout as long as validation allows (the interval): a check
        // slowed by a loaded machine must not take the healthy endpoint out too (the balancer's
        // panic would then pick the failing one).
        health.interval = .milliseconds(300)
        health.timeout = .milliseconds(300)
        health.healthyAfter = 1
        health.unhealthyAfter = 2
        group.health = health
        group.outlier = nil
        return group
    }

    static func endpoint(_ upstream: HealthUpstream, _ health: String) -> String {
        "{\"url\":\"\(upstream.url)\",\"health\":\"\(health)\""
    }
}

/// Answers a test's choice of addresses for `svc.test`; an empty answer is a failure.
final class FakeResolver: EndpointResolving {
    private let answer: NIOLockedValueBox<[String]>

    init(_ answer: [String]) { self.answer = NIOLockedValueBox(answer) }

    func set(_ answer: [String]) { self.answer.withLockedValue { $0 = answer } }

    func resolve(host: String, port: Int) async throws -> [String] {
        struct NoAnswer: Error {}
        let answer = self.answer.withLockedValue { $0 }
        guard host == "svc.test", !answer.isEmpty else { throw NoAnswer() }
        return answer
    }
}

/// A proxy with chosen groups (one route `/` to the first) and resolver, with its drain coordinator.
extension ProxyHarness {
    static func start(
        groups: [UpstreamGroup], readyRequires: [String] = [], threads: Int = 1, resolver: any EndpointResolving = SystemEndpointResolver()
    ) async throws -> ProxyHarness {
        try await ProxyHarness.start(threads: threads, resolver: resolver) { config in
            config.upstreams = groups[0].endpoints
            config.groups = groups
            config.routes = [Route(upstream: groups[0].name)]
            config.readyRequires = readyRequires
        }
    }

    /// Waits, bounded, until `/status` satisfies `condition`.
    /// Polls every 100 ms, not on every scheduler turn: each curl holds cooperative threads while it
    /// runs, which would slow the timing-sensitive tests running alongside.
    func eventually(_ condition: @escaping (String) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while ContinuousClock.now < deadline {
            if let status = try? await Curl.run(["-s", self.adminURL + "/status"]).stdout, condition(status) { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// `count` requests to `/who`, by the upstream's name that answered (`5xx` for a failure).
    func who(count: Int) async throws -> [String: Int] {
        var seen: [String: Int] = [:]
        for _ in 0..<count {
            let result = try await Curl.run(["-s", "-w", "%{http_code}", self.url + "/who"]).stdout
            seen[result.hasSuffix("200") ? String(result.dropLast(3)) : "status " + String(result.suffix(3)), default: 0] += 1
        }
        return seen
    }
}

/// What a ``HealthUpstream`` saw and how its health path answers.
final class HealthUpstreamState: Sendable {
    private struct Values {
        var healthStatus = 200
        var requests = 0
        var inFlight = 0
        var openConnections = 0
        var userAgents: Set<String> = []
    }

    private let values = NIOLockedValueBox(Values())

    func setHealthStatus(_ status: Int) { self.values.withLockedValue { $0.healthStatus = status } }
    var healthStatus: Int { self.values.withLockedValue { $0.healthStatus } }
    /// Requests other than health checks.
    var requests: Int { self.values.withLockedValue { $0.requests } }
    var inFlight: Int { self.values.withLockedValue { $0.inFlight } }
    var openConnections: Int { self.values.withLockedValue { $0.openConnections } }
    var userAgents: Set<String> { self.values.withLockedValue { $0.userAgents } }

    func connection(_ delta: Int) { self.values.withLockedValue { $0.openConnections += delta } }
    func request(started: Bool, userAgent: String?) {
        self.values.withLockedValue {
            if started { $0.requests += 1 }
            $0.inFlight += started ? 1 : -1
            if let userAgent { $0.userAgents.insert(userAgent) }
        }
    }
    func healthCheck(userAgent: String?) {
        self.values.withLockedValue { if let userAgent { $0.userAgents.insert(userAgent) } }
    }
}

/// A loopback HTTP/1.1 upstream: `GET /healthz` answers ``HealthUpstreamState/healthStatus``,
/// `GET /who` its name, `GET /slow?ms=N` `slow from NAME` after N ms.
final class HealthUpstream: Sendable {
    let name: String
    let host: String
    let port: Int
    let state: HealthUpstreamState
    private let channel: any Channel

    private init(name: String, host: String, port: Int, state: HealthUpstreamState, channel: any Channel) {
        self.name = name
        self.host = host
        self.port = port
        self.state = state
        self.channel = channel
    }

    static func start(name: String, host: String = "127.0.0.1", port: Int = 0) async throws -> HealthUpstream {
        let state = HealthUpstreamState()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HealthUpstreamHandler(name: name, state: state))
                }
            }
            .bind(host: host, port: port)
            .get()
        return HealthUpstream(name: name, host: host, port: channel.localAddress!.port!, state: state, channel: channel)
    }

    var url: String { "http://\(self.host):\(self.port)" }

    func stop() async { try? await self.channel.close() }
}

final class HealthUpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let name: String
    private let state: HealthUpstreamState
    private var head: HTTPRequestHead?

    init(name: String, state: HealthUpstreamState) {
        self.name = name
        self.state = state
    }

    func channelActive(context: ChannelHandlerContext) {
        self.state.connection(1)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.state.connection(-1)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head = self.head else { return }
            let state = self.state
            self.head = nil
            let userAgent = head.headers.first(name: "user-agent")
            let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
            if path == "/healthz" {
                state.healthCheck(userAgent: userAgent)
                self.send(context, "health", status: HTTPResponseStatus(statusCode: state.healthStatus), keepAlive: head.isKeepAlive)
                return
            }
            state.request(started: true, userAgent: userAgent)
            if path == "/slow" {
                let ms = head.uri.split(separator: "=").last.flatMap { Int64($0) } ?? 0
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(ms)) {
                    state.request(started: false, userAgent: nil)
                    self.send(context, "slow from \(self.name)", keepAlive: head.isKeepAlive)
                }
            } else {
                state.request(started: false, userAgent: nil)
                self.send(context, path == "/who" ? self.name : "no such path", status: path == "/who" ? .ok : .notFound, keepAlive: head.isKeepAlive)
            }
        }
    }

    private func send(_ context: ChannelHandlerContext, _ body: String, status: HTTPResponseStatus = .ok, keepAlive: Bool) {
        var headers = HTTPHeaders([("content-length", String(body.utf8.count)), ("content-type", "text/plain")])
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
