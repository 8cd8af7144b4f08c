import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

/// Live reload (issue 10, "Live reload") on a real ``ProxyServer``: routes and groups swapped on every
/// loop for requests that start later, requests in flight finishing on what they started with.
@Suite("Live reload")
struct ReloadTests {
    /// After a reload that moves `/` from group a to group b (and removes a), new requests go to b
    /// while a slow request already on a completes with a's answer.
    @Test func newRequestsTakeTheNewRoutesWhileAnInFlightRequestFinishesOnTheOldGroup() async throws {
        let a = try await NamedUpstream.start("A")
        let b = try await NamedUpstream.start("B")
        let proxy = try await ProxyHarness.start(upstreams: [a.url], threads: 2) { config in
            config.groups = [a.group("a"), b.group("b")]
            config.routes = [Route(upstream: "a")]
        }
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }

        #expect(try await Curl.run(["-s", "-w", " %{http_code}", proxy.url + "/"]).stdout == "A / 200")
        let slow = Task { try await Curl.run(["-s", "-w", " %{http_code}", proxy.url + "/slow?ms=1500"]) }
        #expect(await ProxyHarness.eventually { a.requestsStarted.withLockedValue { $0 } == 2 })

        var next = proxy.server.config
        next.groups = [b.group("b")]
        next.routes = [Route(upstream: "b")]
        #expect(await proxy.server.reload(to: next) == .applied(generation: 2))

        for _ in 0..<4 {
            #expect(try await Curl.run(["-s", "-w", " %{http_code}", proxy.url + "/x"]).stdout == "B /x 200")
        }
        let slowResult = try await slow.value
        #expect(slowResult.stdout == "A /slow 200")
        #expect(a.requestsStarted.withLockedValue { $0 } == 2)

        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.contains("\"config\":{\"generation\":2,"))
        #expect(status.contains("\"last_reload_error\":null}"))
        #expect(status.contains("\"routes\":[{\"host\":null,\"path\":\"/\",\"match\":\"prefix\",\"upstream\":\"b\"}]"))
    }

    /// A reload that only adds a route keeps every group object, so their pooled connections are
    /// reused: the upstream sees no new connection.
    @Test func aReloadThatOnlyAddsARouteKeepsTheGroupsAndTheirConnections() async throws {
        let a = try await NamedUpstream.start("A")
        let b = try await NamedUpstream.start("B")
        let proxy = try await ProxyHarness.start(upstreams: [a.url]) { config in
            config.groups = [a.group("a"), b.group("b")]
            config.routes = [Route(upstream: "a")]
        }
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }

        #expect(try await Curl.run(["-s", proxy.url + "/"]).stdout == "A /")
        let before = try await Self.groupIdentities(proxy.server)
        var next = proxy.server.config
        next.routes = [Route(path: .prefix("/b"), upstream: "b"), Route(upstream: "a")]
        #expect(await proxy.server.reload(to: next) == .applied(generation: 2))
        #expect(try await Self.groupIdentities(proxy.server) == before)

        #expect(try await Curl.run(["-s", proxy.url + "/"]).stdout == "A /")
        #expect(try await Curl.run(["-s", proxy.url + "/b/x"]).stdout == "B /b/x")
        #expect(a.connections.withLockedValue { $0 } == 1)

        // A changed group is a new object; the unchanged one stays.
        var changed = next
        changed.groups[1].retries = 0
        #expect(await proxy.server.reload(to: changed) == .applied(generation: 3))
        let after = try await Self.groupIdentities(proxy.server)
        #expect(after["a"] == before["a"])
        #expect(after["b"] != before["b"])
    }

    /// `POST /reload` reads the source again: a valid config answers 200 with the generation, an
    /// invalid one 422 with its errors and changes nothing; `/status` shows the last error and
    /// `/metrics` counts both; other methods get 405.
    @Test func postReloadAppliesAValidConfigAndRefusesAnInvalidOne() async throws {
        let a = try await NamedUpstream.start("A")
        let b = try await NamedUpstream.start("B")
        let next = NIOLockedValueBox<Result<SluiceConfig, ConfigErrors>>(.failure(ConfigErrors(errors: [ConfigError("not yet")])))
        let proxy = try await ProxyHarness.start(upstreams: [a.url], configSource: { () throws(ConfigErrors) -> SluiceConfig in try next.withLockedValue { $0 }.get() }) { config in
            config.groups = [a.group("a"), b.group("b")]
            config.routes = [Route(upstream: "a")]
        }
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }
        let post = ["-s", "-w", " %{http_code}", "-X", "POST", proxy.adminURL + "/reload"]

        var moved = proxy.server.config
        moved.routes = [Route(upstream: "b")]
        next.withLockedValue { $0 = .success(moved) }
        #expect(try await Curl.run(post).stdout == "{\"result\":\"ok\",\"generation\":2}\n 200")
        #expect(try await Curl.run(["-s", proxy.url + "/"]).stdout == "B /")

        let errors = [ConfigError("invalid drain-delay in sluice.yaml \"5x\": expected a duration"), ConfigError("routes[0].upstream: no group \"c\"")]
        next.withLockedValue { $0 = .failure(ConfigErrors(errors: errors)) }
        #expect(
            try await Curl.run(post).stdout
                == "{\"result\":\"error\",\"errors\":[\"invalid drain-delay in sluice.yaml \\\"5x\\\": expected a duration\",\"routes[0].upstream: no group \\\"c\\\"\"]}\n 422"
        )
        #expect(try await Curl.run(["-s", proxy.url + "/"]).stdout == "B /")
        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.contains("\"config\":{\"generation\":2,"))
        #expect(status.contains("\"last_reload_error\":\"invalid drain-delay in sluice.yaml \\\"5x\\\": expected a duration; routes[0].upstream: no group \\\"c\\\"\"}"))
        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("sluice_config_reloads_total{result=\"ok\"} 1\n"))
        #expect(metrics.contains("sluice_config_reloads_total{result=\"error\"} 1\n"))

        #expect(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", proxy.adminURL + "/reload"]).stdout == "405")
        #expect(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", proxy.adminURL + "/reload"]).stdout == "405")
    }

    /// Concurrent reloads run one after the other: each gets its own generation.
    @Test func concurrentReloadsAreSerialized() async throws {
        let a = try await NamedUpstream.start("A")
        let proxy = try await ProxyHarness.start(upstreams: [a.url], threads: 2)
        defer { Task { await proxy.stop(); await a.stop() } }
        let config = proxy.server.config
        let outcomes = await withTaskGroup(of: ReloadOutcome.self) { group in
            for _ in 0..<8 { group.addTask { await proxy.server.reload(to: config) } }
            return await group.reduce(into: [ReloadOutcome]()) { $0.append($1) }
        }
        #expect(Set(outcomes.map { "\($0)" }) == Set((2...9).map { "\(ReloadOutcome.applied(generation: $0))" }))
        #expect(proxy.server.currentConfig().generation == 9)
    }

    /// A new listen address opens on reload; a removed one stops accepting while a connection it
    /// accepted before is still served.
    @Test func listenersOpenAndCloseOnReload() async throws {
        let a = try await NamedUpstream.start("A")
        let proxy = try await ProxyHarness.start(upstreams: [a.url], threads: 2)
        defer { Task { await proxy.stop(); await a.stop() } }
        let original = proxy.server.config.listen[0]
        let extra = Listener(HostPort(host: "127.0.0.2", port: 0))

        var next = proxy.server.config
        next.listen = [original, extra]
        #expect(await proxy.server.reload(to: next) == .applied(generation: 2))
        let extraPort = try #require(proxy.server.boundListeners.withLockedValue { $0[extra.address] }?.port)
        #expect(try await Curl.run(["-s", "http://127.0.0.2:\(extraPort)/new"]).stdout == "A /new")

        let kept = try await RawClient.connect(port: proxy.port)
        defer { Task { await kept.close() } }
        let request = "GET /kept HTTP/1.1\r\nHost: x\r\n\r\n"
        #expect(try await kept.exchange(request) { $0.hasCompleteResponses(1) }.0.hasSuffix("A /kept"))

        next.listen = [extra]
        #expect(await proxy.server.reload(to: next) == .applied(generation: 3))
        #expect(
            await ProxyHarness.eventually {
                (try? await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", proxy.url + "/"]).stdout) == "000"
            })
        #expect(try await kept.exchange(request) { $0.hasCompleteResponses(1) }.0.hasSuffix("A /kept"))
        #expect(try await Curl.run(["-s", "http://127.0.0.2:\(extraPort)/still"]).stdout == "A /still")
    }

    /// An address that cannot be bound fails the reload, and nothing changes.
    @Test func aListenerThatCannotBeBoundFailsTheReloadAndChangesNothing() async throws {
        let a = try await NamedUpstream.start("A")
        let b = try await NamedUpstream.start("B")
        let proxy = try await ProxyHarness.start(upstreams: [a.url]) { config in
            config.groups = [a.group("a"), b.group("b")]
            config.routes = [Route(upstream: "a")]
        }
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }
        var next = proxy.server.config
        next.routes = [Route(upstream: "b")]
        // The upstream's port is taken (without SO_REUSEPORT).
        next.listen.append(Listener(HostPort(host: "127.0.0.1", port: a.port)))
        guard case .invalid(let errors) = await proxy.server.reload(to: next) else {
            Issue.record("the reload should have failed")
            return
        }
        #expect(errors.count == 1 && errors[0].hasPrefix("cannot listen on 127.0.0.1:\(a.port): address already in use"))
        #expect(proxy.server.currentConfig().generation == 1)
        #expect(try await Curl.run(["-s", proxy.url + "/"]).stdout == "A /")
    }

    /// Once the drain has begun, a reload is refused and changes nothing.
    @Test func aReloadDuringTheDrainIsRefused() async throws {
        let a = try await NamedUpstream.start("A")
        let proxy = try await ProxyHarness.start(upstreams: [a.url])
        defer { Task { await proxy.stop(); await a.stop() } }
        proxy.signal(.terminate)
        #expect(await proxy.reached(.propagating))
        guard case .refused(let reason) = await proxy.server.reload(to: proxy.server.config) else {
            Issue.record("the reload should have been refused")
            return
        }
        #expect(reason.contains("propagating"))
        #expect(proxy.server.currentConfig().generation == 1)
    }

    /// Only loopback peers may change state through the admin listener.
    @Test(arguments: [
        ("127.0.0.1", true), ("127.255.3.4", true), ("::1", true), ("::ffff:127.0.0.1", true),
        ("10.0.0.1", false), ("128.0.0.1", false), ("0.0.0.0", false), ("::", false), ("::2", false),
        ("::ffff:10.0.0.1", false), ("2001:db8::1", false), ("fe80::1", false),
    ])
    func onlyLoopbackPeersMayReload(address: String, loopback: Bool) throws {
        #expect(AdminAccess.isLoopback(try SocketAddress(ipAddress: address, port: 40000)) == loopback)
    }

    /// Which group object each group name has on loop 0.
    static func groupIdentities(_ server: ProxyServer) async throws -> [String: ObjectIdentifier] {
        let loop = server.loops[0]
        return try await loop.eventLoop.submit { loop.value.groupIdentities }.get()
    }
}

/// An upstream that answers `<name> <path>` to everything, after `ms` milliseconds when the query
/// has `ms=N`, and counts its connections and requests.
final class NamedUpstream: Sendable {
    let name: String
    let server: TestServer
    let connections: NIOLockedValueBox<Int>
    let requestsStarted: NIOLockedValueBox<Int>

    static func start(_ name: String) async throws -> NamedUpstream {
        let connections = NIOLockedValueBox(0)
        let requests = NIOLockedValueBox(0)
        let server = try await TestServer.start { channel in
            connections.withLockedValue { $0 += 1 }
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(NamedUpstreamHandler(name: name, requests: requests))
        }
        return NamedUpstream(name: name, server: server, connections: connections, requests: requests)
    }

    private init(name: String, server: TestServer, connections: NIOLockedValueBox<Int>, requests: NIOLockedValueBox<Int>) {
        self.name = name
        self.server = server
        self.connections = connections
        self.requestsStarted = requests
    }

    var url: String { self.server.url }
    var port: Int { self.server.port }

    /// A group `name` with this upstream as its one endpoint.
    func group(_ name: String) -> UpstreamGroup {
        UpstreamGroup(name: name, endpoints: [UpstreamURL(parsing: self.url)!])
    }

    func stop() async { await self.server.stop() }
}

final class NamedUpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let name: String
    let requests: NIOLockedValueBox<Int>
    private var head: HTTPRequestHead?

    init(name: String, requests: NIOLockedValueBox<Int>) {
        self.name = name
        self.requests = requests
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.requests.withLockedValue { $0 += 1 }
        case .body:
            break
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            let parts = head.uri.split(separator: "?", maxSplits: 1)
            let path = parts.first.map(String.init) ?? "/"
            var delay: Int64 = 0
            if parts.count > 1, let ms = parts[1].split(separator: "&").first(where: { $0.hasPrefix("ms=") }) { delay = Int64(ms.dropFirst(3)) ?? 0 }
            let body = "\(self.name) \(path)"
            let send = {
                let headers = HTTPHeaders([("content-length", String(body.utf8.count))])
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            }
            if delay > 0 {
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) { send() }
            } else {
                send()
            }
        }
    }
}
