import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore
import SluiceHTTP2
import Testing

@testable import SluiceProxy

/// RFC 8441 WebSockets over HTTP/2 through the real ``ProxyServer`` to an HTTP/1.1 WebSocket upstream
/// (``WebSocketUpstream``), driven by SluiceHTTP2's own client handler (``H2WebSocketClient``).
@Suite("HTTP/2 WebSockets (RFC 8441) over loopback", .serialized)
struct HTTP2WebSocketTests {
    static func withProxy(
        _ configure: (inout SluiceConfig) -> Void = { _ in },
        _ body: (ProxyHarness, WebSocketUpstream, H2WebSocketClient) async throws -> Void
    ) async throws {
        let upstream = try await WebSocketUpstream.start()
        try await ProxyHarness.withProxy(upstreams: [upstream.url], configure, cleanup: upstream.stop) { proxy in
            let client = try await H2WebSocketClient.connect(port: proxy.port)
            defer { client.close() }
            try await body(proxy, upstream, client)
        }
    }

    static func connect(_ path: String, port: Int, protocol extendedProtocol: String = "websocket", extra: [HTTP2HeaderField] = []) -> HTTP2RequestHead {
        HTTP2RequestHead(
            method: "CONNECT", scheme: "http", authority: "127.0.0.1:\(port)", path: path, extendedProtocol: extendedProtocol,
            headers: [HTTP2HeaderField(name: "sec-websocket-version", value: "13"), HTTP2HeaderField(name: "sec-websocket-protocol", value: "chat")] + extra
        )
    }

    /// The proxy advertises SETTINGS_ENABLE_CONNECT_PROTOCOL; an extended CONNECT gets `200` without
    /// END_STREAM and the upstream's subprotocol (no accept); the upstream saw an HTTP/1.1 upgrade with
    /// a valid key of Sluice's; bytes echo both ways, 300 KB of them across many flow-control windows;
    /// the client's END_STREAM half-closes the upstream, whose EOF ends the stream, and the upstream
    /// connection is closed, not reused.
    @Test func tunnelEchoesBothWaysAndEndsWithEndStreamBothWays() async throws {
        try await Self.withProxy { proxy, upstream, client in
            let settings = try await client.waitFor { $0.contains { if case .settings = $0 { true } else { false } } }
            #expect(settings.contains(.settings(enablesConnectProtocol: true)))

            let stream = try #require(await client.open(Self.connect("/ws/chat?room=1", port: proxy.port)))
            let head = try #require(try await client.head(of: stream))
            #expect(head.status == 200)
            #expect(!head.endStream)
            #expect(head.fields.contains(HTTP2HeaderField(name: "sec-websocket-protocol", value: "chat")))
            #expect(!head.fields.contains { $0.name == "sec-websocket-accept" || $0.name == "upgrade" || $0.name == "connection" })

            let sent = upstream.snapshot.heads.first ?? ""
            #expect(sent.hasPrefix("GET /ws/chat?room=1 HTTP/1.1\r\n"), "\(sent)")
            let fields = WebSocketUpstream.fields(sent)
            #expect(fields["host"] == "127.0.0.1:\(proxy.port)")
            #expect(fields["connection"]?.lowercased() == "upgrade")
            #expect(fields["upgrade"]?.lowercased() == "websocket")
            #expect(fields["sec-websocket-version"] == "13")
            #expect(fields["sec-websocket-protocol"] == "chat")
            #expect(fields["x-forwarded-for"] == "127.0.0.1")
            #expect(WebSocketHandshake.isValidKey(fields["sec-websocket-key"] ?? ""), "\(sent)")

            try await client.send(stream, Array("hello".utf8))
            _ = try await client.waitFor { $0.body(of: stream).count == 5 }
            let open = try await proxy.server.snapshot().get()
            #expect(open.connections.tunnelsByProtocol[.http2] == 1)
            let big = patternBytes(300_001)
            try await client.send(stream, big)
            let echoed = try await client.waitFor(timeout: .seconds(20)) { $0.body(of: stream).count >= 5 + big.count }
            let echoedExactly = echoed.body(of: stream) == Array("hello".utf8) + big
            #expect(echoedExactly)

            try await client.send(stream, [], endStream: true)
            let end = try await client.waitFor { $0.contains { if case .closed(stream, _) = $0 { true } else { false } } }
            #expect(end.streamEvents(stream) == [.ended(stream), .closed(stream, .noError)])
            #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })
            #expect(upstream.snapshot.halfClosesSeen == 1)
            #expect(upstream.snapshot.opened == 1)
            let snapshot = try await proxy.server.snapshot().get()
            #expect(snapshot.connections.requestsInFlight == 0)
            #expect(snapshot.connections.tunnelsByProtocol[.http2, default: 0] == 0)
            #expect(snapshot.stats.tunnelsClosed == [0, 1])
            #expect(snapshot.stats.tunnelBytesFromClient == 5 + big.count)
            #expect(snapshot.stats.tunnelBytesToClient == 5 + big.count)
        }
    }

    /// The upstream's EOF is END_STREAM at once; the client may still send, and its END_STREAM closes
    /// the stream cleanly.
    @Test func upstreamEndIsEndStream() async throws {
        try await Self.withProxy { proxy, upstream, client in
            let stream = try #require(await client.open(Self.connect("/ws-upstream-ends", port: proxy.port)))
            #expect(try await client.head(of: stream)?.status == 200)
            try await client.send(stream, Array("bye".utf8))
            let ended = try await client.waitFor { $0.contains(.ended(stream)) }
            #expect(ended.body(of: stream) == Array("bye".utf8))
            #expect(!ended.contains { if case .closed(stream, _) = $0 { true } else { false } })
            try await client.send(stream, Array("late".utf8), endStream: true)
            let closed = try await client.waitFor { $0.contains { if case .closed(stream, _) = $0 { true } else { false } } }
            #expect(closed.contains(.closed(stream, .noError)))
            #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })
        }
    }

    /// A `101` whose `Sec-WebSocket-Accept` does not answer Sluice's key is a 502, and so is a `200`
    /// (the upstream ignored the upgrade); their connections are closed. A refused upgrade (404) is
    /// passed on as an ordinary response.
    @Test func wrongAcceptOr200Is502AndARefusalIsPassedOn() async throws {
        try await Self.withProxy { proxy, upstream, client in
            let bad = try #require(await client.open(Self.connect("/ws-bad-accept", port: proxy.port)))
            let badHead = try #require(try await client.head(of: bad))
            #expect(badHead.status == 502)
            // The client has not ended its side: the stream stays half-closed until it does.
            _ = try await client.waitFor { $0.contains(.ended(bad)) }
            #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })

            let ignored = try #require(await client.open(Self.connect("/ws-200", port: proxy.port)))
            #expect(try await client.head(of: ignored)?.status == 502, "a 200 would tell the client its WebSocket is open")
            #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 2 })

            let refused = try #require(await client.open(Self.connect("/ws-404", port: proxy.port)))
            let refusedHead = try #require(try await client.head(of: refused))
            #expect(refusedHead.status == 404)
            let events = try await client.waitFor { $0.contains(.ended(refused)) }
            #expect(String(decoding: events.body(of: refused), as: UTF8.self) == "no socket here")
        }
    }

    /// A `:protocol` other than websocket is a 501; a plain CONNECT is still a 405; `:protocol` on a GET
    /// is still a stream PROTOCOL_ERROR.
    @Test func otherExtendedConnectsAreRefused() async throws {
        try await Self.withProxy { proxy, upstream, client in
            let udp = try #require(await client.open(Self.connect("/ws", port: proxy.port, protocol: "connect-udp")))
            #expect(try await client.head(of: udp)?.status == 501)

            let plain = try #require(await client.open(HTTP2RequestHead(method: "CONNECT", authority: "127.0.0.1:\(proxy.port)")))
            #expect(try await client.head(of: plain)?.status == 405)

            let get = try #require(
                await client.open(HTTP2RequestHead(method: "GET", scheme: "http", authority: "127.0.0.1", path: "/ws", extendedProtocol: "websocket"), endStream: true)
            )
            let events = try await client.waitFor { $0.contains { if case .closed(get, _) = $0 { true } else { false } } }
            #expect(events.contains(.closed(get, .protocolError)))
            #expect(upstream.snapshot.opened == 0)
        }
    }

    /// Drain: after the final GOAWAY, within the close window (half of `drain-timeout`), the tunnel
    /// gets the close handshake at frame boundaries: the client an unmasked `Close 1001 "going away"`,
    /// the upstream a masked one (its echo, the upstream's reply, is not passed on); the client's
    /// Close reply completes it: END_STREAM, the upstream connection closed, a clean close counted.
    @Test func drainClosesTheTunnelWithCloseFramesBothWays() async throws {
        try await Self.withProxy({
            $0.drain.delay = .milliseconds(100)
            $0.drain.timeout = .seconds(3)
        }) { proxy, upstream, client in
            let stream = try #require(await client.open(Self.connect("/ws", port: proxy.port)))
            #expect(try await client.head(of: stream)?.status == 200)
            // A masked text frame and its echo: both directions' trackers follow real frames.
            let hello = WebSocketUpstream.maskedFrame(opcode: 0x1, Array("hello".utf8))
            try await client.send(stream, hello)
            _ = try await client.waitFor { $0.body(of: stream).count == hello.count }

            proxy.signal(.terminate)
            let goingAway = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: nil)
            let closing = try await client.waitFor(timeout: .seconds(5)) { $0.body(of: stream).count >= hello.count + goingAway.count }
            #expect(Array(closing.body(of: stream).dropFirst(hello.count)) == goingAway)
            #expect(!closing.contains(.ended(stream)))

            try await client.send(stream, WebSocketFrame.close(code: 1001, reason: "", maskingKey: 0x1234_5678))
            let ended = try await client.waitFor { $0.contains(.ended(stream)) }
            #expect(ended.body(of: stream).count == hello.count + goingAway.count, "the upstream's echoed Close is not passed on")
            #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })
            // The upstream got the masked Close 1001 behind the frame it echoed, and nothing after it.
            let received = upstream.snapshot.tunnelBytes
            #expect(received.count == hello.count + goingAway.count + 4)
            #expect(Array(received.prefix(hello.count)) == hello)
            #expect(Array(received.dropFirst(hello.count).prefix(2)) == [0x88, 0x80 | UInt8(goingAway.count - 2)])
            try await client.send(stream, [], endStream: true)
            _ = try await client.waitFor { $0.contains(.connectionClosed) }
            let snapshot = try await proxy.server.snapshot().get()
            #expect(snapshot.stats.tunnelDrainClosesClean == 1)
            #expect(snapshot.stats.tunnelDrainClosesTimedOut == 0)
            #expect(snapshot.stats.tunnelsClosed == [0, 1])
        }
    }

    /// The client's RST_STREAM closes the upstream connection.
    @Test func clientResetClosesTheUpstream() async throws {
        try await Self.withProxy { proxy, upstream, client in
            let stream = try #require(await client.open(Self.connect("/ws", port: proxy.port)))
            #expect(try await client.head(of: stream)?.status == 200)
            await client.reset(stream)
            #expect(await ProxyHarness.eventually { upstream.snapshot.closed == 1 })
        }
    }
}

// MARK: - Support

/// An HTTP/1.1 WebSocket app on 127.0.0.1: it answers an upgrade by path, then echoes every byte.
/// - `/ws…`: `101` with the right `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol: chat`; the
///   proxy's half-close is answered with its own (the stream's END_STREAM both ways).
/// - `/ws-upstream-ends`: as `/ws`, but half-closes after echoing the first bytes.
/// - `/ws-bad-accept`: `101` with an accept for another key.
/// - `/ws-200`: `200 plain`, as an app that ignores `Upgrade` answers.
/// - `/ws-404`: `404` `no socket here`.
final class WebSocketUpstream: Sendable {
    struct Record: Sendable {
        var heads: [String] = []
        /// Every tunnel byte received (all connections).
        var tunnelBytes: [UInt8] = []
        var opened = 0
        var closed = 0
        /// Half-closes received from the proxy inside a tunnel.
        var halfClosesSeen = 0
    }

    let server: TestServer
    private let record: NIOLockedValueBox<Record>
    var url: String { self.server.url }
    var snapshot: Record { self.record.withLockedValue { $0 } }

    static func start() async throws -> WebSocketUpstream {
        let record = NIOLockedValueBox(Record())
        let server = try await TestServer.start { channel in
            try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            record.withLockedValue { $0.opened += 1 }
            try channel.pipeline.syncOperations.addHandler(Handler(record: record))
        }
        return WebSocketUpstream(server: server, record: record)
    }

    private init(server: TestServer, record: NIOLockedValueBox<Record>) {
        self.server = server
        self.record = record
    }

    func stop() async { await self.server.stop() }

    /// A small masked frame (as a client sends it, RFC 6455 §5.3).
    static func maskedFrame(opcode: UInt8, _ payload: [UInt8], mask: [UInt8] = [0x0A, 0x0B, 0x0C, 0x0D]) -> [UInt8] {
        precondition(payload.count < 126)
        return [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }

    /// A request head's fields, names lowercased (the last of each name).
    static func fields(_ head: String) -> [String: String] {
        var fields: [String: String] = [:]
        for line in head.components(separatedBy: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let record: NIOLockedValueBox<Record>
        private var buffer: [UInt8] = []
        private var tunnel = false
        private var endAfterEcho = false

        init(record: NIOLockedValueBox<Record>) { self.record = record }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: Self.unwrapInboundIn(data))
            if self.tunnel { return self.echo(bytes, context: context) }
            self.buffer += bytes
            guard let end = self.headEnd() else { return }
            let head = String(decoding: self.buffer[..<end], as: UTF8.self)
            let rest = Array(self.buffer[end...])
            self.buffer = []
            self.record.withLockedValue { $0.heads.append(head) }
            let path = head.split(separator: " ").dropFirst().first.map(String.init) ?? ""
            let key = WebSocketUpstream.fields(head)["sec-websocket-key"] ?? ""
            switch path {
            case "/ws-404":
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\nno socket here")), promise: nil)
                return
            case "/ws-200":
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")), promise: nil)
                return
            case "/ws-bad-accept":
                let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(WebSocketHandshake.accept(forKey: "AAAAAAAAAAAAAAAAAAAAAA=="))\r\n\r\n"
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: answer)), promise: nil)
                return
            default:
                break
            }
            self.endAfterEcho = path == "/ws-upstream-ends"
            self.tunnel = true
            let answer =
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(WebSocketHandshake.accept(forKey: key))\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: answer)), promise: nil)
            if !rest.isEmpty { self.echo(rest, context: context) }
        }

        private func echo(_ bytes: [UInt8], context: ChannelHandlerContext) {
            self.record.withLockedValue { $0.tunnelBytes += bytes }
            context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
            if self.endAfterEcho {
                self.endAfterEcho = false
                context.close(mode: .output, promise: nil)
            }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, case .inputClosed = event {
                if self.tunnel { self.record.withLockedValue { $0.halfClosesSeen += 1 } }
                context.close(mode: .output, promise: nil)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.record.withLockedValue { $0.closed += 1 }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        private func headEnd() -> Int? {
            guard self.buffer.count >= 4 else { return nil }
            for i in 0...(self.buffer.count - 4) where self.buffer[i] == 13 && self.buffer[i + 1] == 10 && self.buffer[i + 2] == 13 && self.buffer[i + 3] == 10 {
                return i + 4
            }
            return nil
        }
    }
}

/// An h2c (prior knowledge) client on SluiceHTTP2's ``HTTP2ClientConnectionHandler``, recording what
/// happens on its streams; its window is given back as data arrives.
final class H2WebSocketClient: Sendable {
    enum Event: Equatable, Sendable {
        case settings(enablesConnectProtocol: Bool)
        case head(HTTP2StreamID, status: Int, fields: [HTTP2HeaderField], endStream: Bool)
        case data(HTTP2StreamID, [UInt8])
        case ended(HTTP2StreamID)
        case closed(HTTP2StreamID, HTTP2ErrorCode)
        case connectionClosed
    }

    struct Timeout: Error, CustomStringConvertible {
        var events: [Event]
        var description: String {
            let short = self.events.map { event -> String in
                if case .data(let stream, let bytes) = event { return "data(\(stream), \(bytes.count) bytes)" }
                return "\(event)"
            }
            return "timed out; events so far: \(short)"
        }
    }

    private struct Log {
        var events: [Event] = []
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let channel: any Channel
    private let handler: NIOLoopBound<HTTP2ClientConnectionHandler>
    private let log: NIOLockedValueBox<Log>

    private init(channel: any Channel, handler: NIOLoopBound<HTTP2ClientConnectionHandler>, log: NIOLockedValueBox<Log>) {
        self.channel = channel
        self.handler = handler
        self.log = log
    }

    static func connect(port: Int) async throws -> H2WebSocketClient {
        let log = NIOLockedValueBox(Log())
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTP2ClientConnectionHandler(delegate: Delegate(log: log)))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: HTTP2ClientConnectionHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return H2WebSocketClient(channel: channel, handler: handler, log: log)
    }

    func open(_ head: HTTP2RequestHead, endStream: Bool = false) async -> HTTP2StreamID? {
        let handler = self.handler
        return try? await self.channel.eventLoop.submit { handler.value.openStream(head, endStream: endStream) }.get()
    }

    func send(_ stream: HTTP2StreamID, _ bytes: [UInt8], endStream: Bool = false) async throws {
        let handler = self.handler
        let sent = try await self.channel.eventLoop.submit { handler.value.sendData(streamID: stream, ByteBuffer(bytes: bytes), endStream: endStream) }.get()
        if !sent { Issue.record("stream \(stream) is gone") }
    }

    func reset(_ stream: HTTP2StreamID) async {
        let handler = self.handler
        try? await self.channel.eventLoop.submit { handler.value.resetStream(streamID: stream, errorCode: .cancel) }.get()
    }

    func close() { self.channel.close(promise: nil) }

    /// The stream's final head, once it arrives (nil if the stream closed without one).
    func head(of stream: HTTP2StreamID) async throws -> (status: Int, fields: [HTTP2HeaderField], endStream: Bool)? {
        let events = try await self.waitFor { events in
            events.contains { event in
                switch event {
                case .head(stream, _, _, _), .closed(stream, _): true
                default: false
                }
            }
        }
        for case .head(stream, let status, let fields, let endStream) in events { return (status, fields, endStream) }
        return nil
    }

    /// Waits until `done` accepts the events so far (all of them, oldest first), bounded by `timeout`.
    func waitFor(timeout: Duration = .seconds(10), _ done: @escaping @Sendable ([Event]) -> Bool) async throws -> [Event] {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let events = self.log.withLockedValue { $0.events }
            if done(events) { return events }
            if ContinuousClock.now >= deadline { throw Timeout(events: events) }
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let ready = self.log.withLockedValue { log -> Bool in
                            if log.events.count != events.count { return true }
                            log.waiters.append(continuation)
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                }
                group.addTask {
                    // Only so the deadline is checked; every event wakes the waiter.
                    try? await Task.sleep(for: .milliseconds(100))
                    Self.wake(self.log) { _ in }
                }
                await group.next()
                group.cancelAll()
            }
        }
    }

    private static func wake(_ log: NIOLockedValueBox<Log>, _ update: (inout Log) -> Void) {
        let waiters = log.withLockedValue { log in
            update(&log)
            defer { log.waiters = [] }
            return log.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private final class Delegate: HTTP2ClientConnectionDelegate {
        let log: NIOLockedValueBox<Log>
        init(log: NIOLockedValueBox<Log>) { self.log = log }

        private func record(_ event: Event) { H2WebSocketClient.wake(self.log) { $0.events.append(event) } }

        func interimResponseHead(_ streamID: HTTP2StreamID, head: HTTP2ResponseHead, on connection: HTTP2ClientConnectionHandler) {}
        func responseHead(_ streamID: HTTP2StreamID, head: HTTP2ResponseHead, endStream: Bool, on connection: HTTP2ClientConnectionHandler) {
            self.record(.head(streamID, status: head.status, fields: head.headers, endStream: endStream))
            if endStream { self.record(.ended(streamID)) }
        }
        func responseData(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ClientConnectionHandler) {
            connection.consumed(streamID: streamID, bytes: data.readableBytes)
            self.record(.data(streamID, Array(buffer: data)))
        }
        func responseEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ClientConnectionHandler) {
            self.record(.ended(streamID))
        }
        func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ClientConnectionHandler) {
            self.record(.closed(streamID, errorCode))
        }
        func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ClientConnectionHandler) {}
        func settingsReceived(maxConcurrentStreams: Int, on connection: HTTP2ClientConnectionHandler) {
            self.record(.settings(enablesConnectProtocol: connection.peerEnablesConnectProtocol))
        }
        func goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ClientConnectionHandler) {}
        func readComplete(on connection: HTTP2ClientConnectionHandler) {}
        func connectionClosed(_ connection: HTTP2ClientConnectionHandler) { self.record(.connectionClosed) }
    }
}

extension Array where Element == H2WebSocketClient.Event {
    /// The head, end and close events of `stream` (no data: failures print short).
    func streamEvents(_ stream: HTTP2StreamID) -> [H2WebSocketClient.Event] {
        self.filter { event in
            switch event {
            case .ended(stream), .closed(stream, _): true
            default: false
            }
        }
    }

    /// The DATA bytes of `stream`, joined.
    func body(of stream: HTTP2StreamID) -> [UInt8] {
        var bytes: [UInt8] = []
        for case .data(stream, let data) in self { bytes += data }
        return bytes
    }
}
