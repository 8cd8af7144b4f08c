import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

/// HTTP/1.1 upgrades through the proxy, on real loopback sockets: what goes upstream, the `101`, the
/// tunnel both ways with its half-closes, and the answers that keep the connection HTTP.
@Suite struct UpgradeTests {
    /// An upstream that answers a request head by what its target asks for, then (after a 101)
    /// echoes tunnel bytes prefixed with `echo:`; after the client's half-close it sends `bye` and
    /// half-closes too. It records the heads it received.
    final class UpgradeUpstream: Sendable {
        let server: TestServer
        let heads: NIOLockedValueBox<[String]>
        var url: String { self.server.url }

        static func start() async throws -> UpgradeUpstream {
            let heads = NIOLockedValueBox<[String]>([])
            let server = try await TestServer.start { channel in
                try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                try channel.pipeline.syncOperations.addHandler(Handler(heads: heads))
            }
            return UpgradeUpstream(server: server, heads: heads)
        }

        private init(server: TestServer, heads: NIOLockedValueBox<[String]>) {
            self.server = server
            self.heads = heads
        }

        func stop() async { await self.server.stop() }

        final class Handler: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            typealias OutboundOut = ByteBuffer
            let heads: NIOLockedValueBox<[String]>
            var buffered = ""
            var tunnel = false

            init(heads: NIOLockedValueBox<[String]>) { self.heads = heads }

            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                let text = String(buffer: self.unwrapInboundIn(data))
                if self.tunnel {
                    context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "echo:" + text)), promise: nil)
                    return
                }
                self.buffered += text
                while let end = self.buffered.range(of: "\r\n\r\n") {
                    let head = String(self.buffered[..<end.upperBound])
                    self.buffered = String(self.buffered[end.upperBound...])
                    self.heads.withLockedValue { $0.append(head) }
                    let target = head.split(separator: " ")[1]
                    switch target {
                    case "/switch":
                        self.tunnel = true
                        context.write(self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo/1\r\nX-App: yes\r\n\r\n")), promise: nil)
                        if !self.buffered.isEmpty {
                            context.write(self.wrapOutboundOut(ByteBuffer(string: "echo:" + self.buffered)), promise: nil)
                            self.buffered = ""
                        }
                        context.flush()
                        return
                    case "/decline":
                        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")), promise: nil)
                    default:
                        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: \(target.utf8.count)\r\n\r\n\(target)")), promise: nil)
                    }
                }
            }

            func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
                if let event = event as? ChannelEvent, case .inputClosed = event {
                    // The client's half-close, passed on: answer, then end our side too.
                    context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "bye")), promise: nil)
                    context.close(mode: .output, promise: nil)
                }
            }
        }
    }

    static let upgrade = "Connection: Upgrade\r\nUpgrade: foo/1\r\n"

    @Test func aSwitchedConnectionCarriesBytesBothWaysAndPassesTheHalfCloseOn() async throws {
        let upstream = try await UpgradeUpstream.start()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }
        let client = try await RawClient.connect(port: proxy.port, halfClosable: true)
        defer { Task { await client.close() } }

        let (head, _) = try await client.exchange("GET /switch HTTP/1.1\r\nHost: app\r\n\(Self.upgrade)X-Tag: 1\r\n\r\n") { $0.contains("\r\n\r\n") }
        #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"), "\(head)")
        let lower = head.lowercased()
        #expect(lower.contains("connection: upgrade\r\n") && lower.contains("upgrade: foo/1\r\n") && lower.contains("x-app: yes\r\n"), "\(head)")
        // The upgrade pair went upstream, the rest of the hop-by-hop rules still applied.
        let sent = try #require(upstream.heads.withLockedValue { $0.first }).lowercased()
        #expect(sent.contains("connection: upgrade\r\n") && sent.contains("upgrade: foo/1\r\n") && sent.contains("x-forwarded-for: 127.0.0.1"), "\(sent)")

        let (echo, _) = try await client.exchange("hello") { $0 == "echo:hello" }
        #expect(echo == "echo:hello")
        let (more, _) = try await client.exchange("GET / HTTP/1.1\r\n\r\n") { $0.hasSuffix("\r\n\r\n") }
        #expect(more == "echo:GET / HTTP/1.1\r\n\r\n", "bytes in a tunnel are never parsed as HTTP")
        let snapshot = try await proxy.server.snapshot().get()
        #expect(snapshot.connections.tunnelsByProtocol[.http1] == 1)

        // Our half-close reaches the app, which can still answer before ending its side.
        try await client.closeOutput()
        let rest = try await client.waitForClose()
        #expect(rest == "bye")
        #expect(await ProxyHarness.eventually { (try? await proxy.server.snapshot().get().connections.total) == 0 })
    }

    @Test(arguments: ["/decline", "/plain"])
    func anUpgradeAnsweredWithoutA101StaysHTTP(path: String) async throws {
        let upstream = try await UpgradeUpstream.start()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }
        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }

        // A second request pipelined behind the upgrade waits for the upgrade's answer, then is HTTP.
        let (text, _) = try await client.exchange("GET \(path) HTTP/1.1\r\nHost: app\r\n\(Self.upgrade)\r\nGET /next HTTP/1.1\r\nHost: app\r\n\r\n") {
            $0.hasCompleteResponses(2)
        }
        let expected = path == "/decline" ? "HTTP/1.1 404 Not Found\r\n" : "HTTP/1.1 200 OK\r\n"
        #expect(text.hasPrefix(expected), "\(text)")
        #expect(text.hasSuffix("\r\n\r\n/next"), "\(text)")
        #expect(upstream.heads.withLockedValue { $0.count } == 2)
    }

    @Test func anUpgradeRequestWithABodyIsRefused() async throws {
        let upstream = try await UpgradeUpstream.start()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }
        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }

        let (text, _) = try await client.exchange("POST /switch HTTP/1.1\r\nHost: app\r\n\(Self.upgrade)Content-Length: 5\r\n\r\nhello") { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(text)")
        #expect(text.hasSuffix("an upgrade request must not carry a body\n"), "\(text)")
        #expect(upstream.heads.withLockedValue { $0.isEmpty })
    }

    /// `Upgrade` without `Connection: upgrade` (or from HTTP/1.0) is only a hop-by-hop field: dropped.
    @Test(arguments: ["GET /plain HTTP/1.1\r\nHost: app\r\nUpgrade: foo/1\r\n\r\n", "GET /plain HTTP/1.0\r\nHost: app\r\n\(Self.upgrade)\r\n"])
    func anUpgradeNotAskedForIsDropped(request: String) async throws {
        let upstream = try await UpgradeUpstream.start()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }
        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }

        let (text, _) = try await client.exchange(request) { $0.hasCompleteResponses(1) }
        #expect(text.contains(" 200 OK\r\n"), "\(text)")
        let sent = try #require(upstream.heads.withLockedValue { $0.first }).lowercased()
        #expect(!sent.contains("upgrade"), "\(sent)")
    }

    /// A 101 the client did not ask for is an invalid response: 502, never a tunnel.
    @Test func anUnaskedFor101IsABadGateway() async throws {
        let upstream = try await ScriptedUpstream.start { _ in .init("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n") }
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }
        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }

        let (text, _) = try await client.exchange("GET /x HTTP/1.1\r\nHost: app\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"), "\(text)")
    }

    /// A quiet tunnel is closed after `tunnel-idle-timeout`, and not before.
    @Test func aQuietTunnelIsClosedAfterTheTunnelIdleTimeout() async throws {
        let upstream = try await UpgradeUpstream.start()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.http.tunnelIdleTimeout = .milliseconds(600) }
        defer { Task { await proxy.stop(); await upstream.stop() } }
        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }

        _ = try await client.exchange("GET /switch HTTP/1.1\r\nHost: app\r\n\(Self.upgrade)\r\n") { $0.contains("\r\n\r\n") }
        let start = ContinuousClock.now
        let (echo, closed) = try await client.exchange("a") { $0 == "echo:a" }
        #expect(echo == "echo:a" && !closed)
        _ = try await client.waitForClose(timeout: .seconds(5))
        #expect(ContinuousClock.now - start >= .milliseconds(550))
    }
}
