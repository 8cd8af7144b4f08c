import NIOCore
import NIOEmbedded
import SluiceHTTP2
import Testing

/// Records what the handler tells its delegate; answers nothing unless told to.
final class RecordingDelegate: HTTP2StreamDelegate {
    enum Call: Equatable {
        case opened(HTTP2StreamID, path: String?, endStream: Bool)
        case data(HTTP2StreamID, Int)
        case ended(HTTP2StreamID, trailers: [HTTP2HeaderField]?)
        case closed(HTTP2StreamID, HTTP2ErrorCode)
        case writability(HTTP2StreamID, Bool)
        case goAway(HTTP2StreamID, HTTP2ErrorCode)
        case connectionClosed
    }

    var calls: [Call] = []
    /// The error codes of the GOAWAYs the handler reported sending.
    var goAwaysSent: [HTTP2ErrorCode] = []

    func streamOpened(_ streamID: HTTP2StreamID, head: HTTP2RequestHead, endStream: Bool, on connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.opened(streamID, path: head.path, endStream: endStream))
    }
    func streamDataReceived(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.data(streamID, data.readableBytes))
    }
    func streamEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.ended(streamID, trailers: trailers))
    }
    func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.closed(streamID, errorCode))
    }
    func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.writability(streamID, isWritable))
    }
    func goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.goAway(lastStreamID, errorCode))
    }
    func goAwaySent(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
        self.goAwaysSent.append(errorCode)
    }
    func connectionClosed(_ connection: HTTP2ServerConnectionHandler) {
        self.calls.append(.connectionClosed)
    }
}

/// The handler on an `EmbeddedChannel`, with an ``NGHTTP2Session`` client as the peer.
final class EmbeddedConnection {
    let channel = EmbeddedChannel()
    let delegate = RecordingDelegate()
    let handler: HTTP2ServerConnectionHandler
    let client: NGHTTP2Session
    var clientEvents: [HTTP2SessionEvent] = []

    init(configuration: HTTP2ServerConnectionHandler.Configuration = .init()) throws {
        self.handler = try HTTP2ServerConnectionHandler(configuration: configuration, delegate: self.delegate)
        self.client = try NGHTTP2Session(role: .client)
        try self.channel.pipeline.syncOperations.addHandler(self.handler)
        try self.channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    }

    /// A frame the server wrote, as parsed by the test (independent of libnghttp2).
    struct Frame: Equatable {
        var type: UInt8
        var flags: UInt8
        var streamID: UInt32
        var payload: [UInt8]

        static let goAwayType: UInt8 = 7

        /// For a GOAWAY: (last-stream-id, error code).
        var goAway: (lastStreamID: UInt32, errorCode: UInt32)? {
            guard self.type == Self.goAwayType, self.payload.count >= 8 else { return nil }
            let bytes = self.payload
            let last = UInt32(bytes[0] & 0x7f) << 24 | UInt32(bytes[1]) << 16 | UInt32(bytes[2]) << 8 | UInt32(bytes[3])
            let code = UInt32(bytes[4]) << 24 | UInt32(bytes[5]) << 16 | UInt32(bytes[6]) << 8 | UInt32(bytes[7])
            return (last, code)
        }
    }

    /// Every frame the server wrote, in order.
    var serverFrames: [Frame] = []
    private var unparsed = ByteBuffer()

    /// Delivers what the server wrote to the client (and records its frames).
    func serverToClient() throws {
        self.channel.embeddedEventLoop.run()
        while let bytes = try self.channel.readOutbound(as: ByteBuffer.self) {
            self.unparsed.writeImmutableBuffer(bytes)
            try self.client.receive(bytes)
        }
        while self.unparsed.readableBytes >= 9,
            let length = self.unparsed.getInteger(at: self.unparsed.readerIndex, as: UInt32.self).map({ Int($0 >> 8) }),
            self.unparsed.readableBytes >= 9 + length
        {
            let header = self.unparsed.readBytes(length: 9)!
            let payload = self.unparsed.readBytes(length: length)!
            let streamID = (UInt32(header[5] & 0x7f) << 24) | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8])
            self.serverFrames.append(Frame(type: header[3], flags: header[4], streamID: streamID, payload: payload))
        }
        while let event = self.client.nextEvent() { self.clientEvents.append(event) }
    }

    /// The GOAWAYs the server wrote: (last-stream-id, error code).
    var goAwaysWritten: [[UInt32]] {
        self.serverFrames.compactMap { $0.goAway.map { [$0.lastStreamID, $0.errorCode] } }
    }

    /// Delivers what the client has to send to the server.
    func clientToServer() throws {
        let bytes = try SessionPair.output(of: self.client)
        if bytes.readableBytes > 0 && self.channel.isActive { try self.channel.writeInbound(bytes) }
        self.channel.embeddedEventLoop.run()
    }

    /// Both ways until quiet (at most 100 rounds).
    func exchange() throws {
        for _ in 0..<100 {
            try self.serverToClient()
            let bytes = try SessionPair.output(of: self.client)
            guard bytes.readableBytes > 0, self.channel.isActive else { return }
            try self.channel.writeInbound(bytes)
        }
    }

    func get(_ path: String) throws -> HTTP2StreamID {
        try self.client.submitRequest(HTTP2RequestHead(method: "GET", scheme: "http", authority: "t", path: path), endStream: true)
    }

    var goAways: [HTTP2SessionEvent] {
        self.clientEvents.filter { if case .goAwayReceived = $0 { true } else { false } }
    }
}

@Suite struct HTTP2ServerConnectionHandlerTests {
    /// Requests reach the delegate and its answers reach the client.
    @Test func requestsReachDelegateAndAnswersReachClient() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/a")
        try connection.exchange()
        #expect(connection.delegate.calls == [.opened(id, path: "/a", endStream: true)])
        #expect(connection.handler.openStreamCount == 1)
        connection.handler.sendResponseHead(streamID: id, status: 200, headers: [], endStream: false)
        connection.handler.sendData(streamID: id, ByteBuffer(string: "ok"), endStream: true)
        try connection.exchange()
        #expect(connection.clientEvents.contains(.data(id, ByteBuffer(string: "ok"))))
        #expect(connection.delegate.calls.last == .closed(id, .noError))
        #expect(connection.handler.openStreamCount == 0)
        #expect(connection.channel.isActive)
    }

    /// Without a PING ack the final GOAWAY goes out after 1 s, with the last stream opened; the connection
    /// closes when that stream is answered.
    @Test func drainWithoutPingAckSendsFinalGoAwayAfterOneSecond() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/slow")
        try connection.exchange()
        connection.handler.beginGracefulShutdown()
        try connection.serverToClient()  // The client's PING ack is never delivered.
        #expect(connection.goAways == [.goAwayReceived(lastStreamID: .maxID, errorCode: .noError)])
        #expect(connection.clientEvents.contains(.pingReceived(payload: HTTP2GracefulShutdownStateMachine<ContinuousClock>.Configuration().pingPayload)))

        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        try connection.serverToClient()
        #expect(connection.goAways.count == 1)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        try connection.serverToClient()
        #expect(connection.goAways == [.goAwayReceived(lastStreamID: .maxID, errorCode: .noError), .goAwayReceived(lastStreamID: id, errorCode: .noError)])
        #expect(connection.channel.isActive)

        connection.handler.sendResponseHead(streamID: id, status: 204, headers: [], endStream: true)
        try connection.serverToClient()
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls.suffix(2) == [.closed(id, .noError), .connectionClosed])
    }

    /// An idle drain (started by NIO's quiesce event): libnghttp2 clients neither ack a PING nor read
    /// further frames once they have a GOAWAY and no stream, so the final GOAWAY (last-stream-id 0) follows
    /// after the 1 s timeout, and the connection closes with it.
    @Test func idleDrainClosesAfterPingTimeout() throws {
        let connection = try EmbeddedConnection()
        try connection.exchange()
        connection.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(connection.handler.isShuttingDown)
        try connection.exchange()
        #expect(connection.goAwaysWritten == [[UInt32(Int32.max), 0]])
        #expect(connection.channel.isActive)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        try connection.serverToClient()
        #expect(connection.goAwaysWritten.count == 1)
        connection.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        try connection.serverToClient()
        #expect(connection.goAwaysWritten == [[UInt32(Int32.max), 0], [0, 0]])
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls == [.connectionClosed])
    }

    /// With a stream open the client acks the PING: the final GOAWAY follows at once with that stream's ID,
    /// the round trip is measured, and the close waits for the stream.
    @Test func drainWithPingAckSendsFinalGoAwayAtOnce() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/open")
        try connection.exchange()
        connection.handler.beginGracefulShutdown()
        try connection.exchange()
        #expect(connection.goAways == [.goAwayReceived(lastStreamID: .maxID, errorCode: .noError), .goAwayReceived(lastStreamID: id, errorCode: .noError)])
        #expect(connection.handler.measuredRoundTripTime != nil)
        #expect(connection.channel.isActive)
        connection.handler.sendResponseHead(streamID: id, status: 200, headers: [], endStream: true)
        try connection.exchange()
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls.suffix(2) == [.closed(id, .noError), .connectionClosed])
    }

    /// At the drain deadline the open streams are reset with CANCEL, their owners told, and the connection closed.
    @Test func deadlineResetsOpenStreamsAndCloses() throws {
        let connection = try EmbeddedConnection()
        let first = try connection.get("/1")
        let second = try connection.get("/2")
        try connection.exchange()
        connection.handler.beginGracefulShutdown(deadline: .seconds(5))
        try connection.exchange()
        #expect(connection.goAways.last == .goAwayReceived(lastStreamID: second, errorCode: .noError))
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        try connection.serverToClient()
        #expect(connection.clientEvents.contains(.streamClosed(first, .cancel)))
        #expect(connection.clientEvents.contains(.streamClosed(second, .cancel)))
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls.suffix(3) == [.closed(first, .cancel), .closed(second, .cancel), .connectionClosed])
    }

    /// Issue 14 item 12b: a drain that reaches its deadline after the final GOAWAY resets the streams
    /// but does not send the final GOAWAY a second time: the wire carries the notice and one final GOAWAY.
    @Test func deadlineAfterFinalGoAwaySendsItOnlyOnce() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/slow")
        try connection.exchange()
        connection.handler.beginGracefulShutdown(deadline: .seconds(5))
        try connection.exchange()
        #expect(connection.goAwaysWritten == [[UInt32(Int32.max), 0], [UInt32(id.rawValue), 0]])
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
        try connection.serverToClient()
        #expect(connection.clientEvents.contains(.streamClosed(id, .cancel)))
        #expect(connection.goAwaysWritten == [[UInt32(Int32.max), 0], [UInt32(id.rawValue), 0]])
        #expect(!connection.channel.isActive)
    }

    /// The peer going away closes every open stream with CANCEL, then the connection.
    @Test func peerCloseReportsStreamsThenConnection() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/x")
        try connection.exchange()
        try connection.channel.close().wait()
        #expect(connection.delegate.calls == [.opened(id, path: "/x", endStream: true), .closed(id, .cancel), .connectionClosed])
        #expect(!connection.handler.sendData(streamID: id, ByteBuffer(string: "late"), endStream: true))
    }

    /// SETTINGS never acknowledged: GOAWAY SETTINGS_TIMEOUT after 10 s, and the connection closes.
    @Test func unacknowledgedSettingsTimeOut() throws {
        let connection = try EmbeddedConnection()
        try connection.serverToClient()  // The client's SETTINGS ack is never delivered.
        connection.channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        try connection.serverToClient()
        #expect(connection.goAwaysWritten == [[0, HTTP2ErrorCode.settingsTimeout.rawValue]])
        #expect(!connection.channel.isActive)
    }

    /// While the channel is not writable the response stays in the stream's queue and the delegate is told
    /// to stop; when it becomes writable the bytes go out and the delegate is told to resume.
    @Test func unwritableChannelHoldsResponseInStreamQueue() throws {
        let connection = try EmbeddedConnection(configuration: .init(session: .init(streamHighWatermark: 16_384)))
        let id = try connection.get("/big")
        try connection.exchange()
        connection.channel.isWritable = false
        connection.channel.pipeline.fireChannelWritabilityChanged()
        connection.handler.sendResponseHead(streamID: id, status: 200, headers: [], endStream: false)
        connection.handler.sendData(streamID: id, ByteBuffer(repeating: 7, count: 40_000), endStream: true)
        try connection.serverToClient()
        #expect(connection.handler.queuedBytes(streamID: id) == 40_000)
        #expect(!connection.handler.isWritable(streamID: id))
        #expect(connection.delegate.calls.last == .writability(id, false))

        connection.channel.isWritable = true
        connection.channel.pipeline.fireChannelWritabilityChanged()
        for _ in 0..<10 {
            try connection.exchange()
            let received = connection.clientEvents.reduce(0) { if case .data(_, let b) = $1 { $0 + b.readableBytes } else { $0 } }
            try connection.client.consume(streamID: id, bytes: received)
        }
        let received = connection.clientEvents.reduce(0) { if case .data(_, let b) = $1 { $0 + b.readableBytes } else { $0 } }
        #expect(received == 40_000)
        #expect(connection.delegate.calls.contains(.writability(id, true)))
        #expect(connection.delegate.calls.last == .closed(id, .noError))
    }

    /// Request body bytes hold the window until the delegate reports them consumed.
    @Test func requestBodyWindowOpensOnConsumed() throws {
        let connection = try EmbeddedConnection()
        try connection.exchange()
        let id = try connection.client.submitRequest(HTTP2RequestHead(method: "POST", scheme: "http", authority: "t", path: "/up"), endStream: false)
        try connection.client.submitData(streamID: id, ByteBuffer(repeating: 1, count: 100_000), endStream: true)
        try connection.exchange()
        func delivered() -> Int { connection.delegate.calls.reduce(0) { if case .data(_, let n) = $1 { $0 + n } else { $0 } } }
        #expect(delivered() == 65_535)
        connection.handler.consumed(streamID: id, bytes: 65_535)
        try connection.exchange()
        #expect(delivered() == 100_000)
        #expect(connection.delegate.calls.last == .ended(id, trailers: nil))
    }

    /// forceClose without a drain cuts the streams and closes.
    @Test func forceCloseCutsStreams() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/x")
        try connection.exchange()
        connection.handler.forceClose()
        try connection.serverToClient()
        #expect(!connection.channel.isActive)
        #expect(connection.clientEvents.contains(.streamClosed(id, .cancel)))
        #expect(connection.delegate.calls.suffix(2) == [.closed(id, .cancel), .connectionClosed])
    }

    /// The notice alone (propagating) keeps the connection open as streams finish; the drain later sends
    /// the final GOAWAY at once, because the notice's round trip is already over. (Streams opened after the
    /// notice are covered by the Python client: libnghttp2 clients open none.)
    @Test func noticeThenDrainSendsFinalGoAwayWithoutWaiting() throws {
        let connection = try EmbeddedConnection()
        let first = try connection.get("/1")
        let second = try connection.get("/2")
        try connection.exchange()
        connection.handler.sendShutdownNotice()
        try connection.exchange()
        #expect(connection.goAwaysWritten == [[UInt32(Int32.max), 0]])
        #expect(connection.handler.measuredRoundTripTime != nil)
        connection.handler.sendResponseHead(streamID: first, status: 204, headers: [], endStream: true)
        try connection.exchange()
        #expect(connection.delegate.calls.last == .closed(first, .noError))
        #expect(connection.channel.isActive)
        #expect(connection.goAwaysWritten.count == 1)

        connection.channel.pipeline.fireUserInboundEventTriggered(HTTP2ServerConnectionHandler.Command.beginGracefulShutdown(deadline: nil))
        try connection.serverToClient()
        #expect(connection.goAwaysWritten == [[UInt32(Int32.max), 0], [UInt32(second.rawValue), 0]])
        connection.handler.sendResponseHead(streamID: second, status: 204, headers: [], endStream: true)
        try connection.serverToClient()
        #expect(!connection.channel.isActive)
    }

    /// A force-close command fired from the pipeline cuts the streams like forceClose().
    @Test func forceCloseCommandCutsStreams() throws {
        let connection = try EmbeddedConnection()
        let id = try connection.get("/x")
        try connection.exchange()
        connection.channel.pipeline.fireUserInboundEventTriggered(HTTP2ServerConnectionHandler.Command.forceClose)
        try connection.serverToClient()
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls.suffix(2) == [.closed(id, .cancel), .connectionClosed])
        #expect(!connection.handler.sendResponseHead(streamID: id, status: 200, headers: [], endStream: true))
    }

    /// Issue 14 item 8: a header block with more than 8 CONTINUATION frames ends the connection with
    /// GOAWAY ENHANCE_YOUR_CALM (reported to the delegate, which counts it), not a bare FIN; a block
    /// with 8 is served.
    @Test func continuationFloodGetsGoAwayEnhanceYourCalm() throws {
        let connection = try EmbeddedConnection()
        try connection.exchange()
        try connection.channel.writeInbound(ByteBuffer(bytes: RawFrame.headersWithContinuations(streamID: 1, continuations: 8)))
        connection.channel.embeddedEventLoop.run()
        #expect(connection.delegate.calls == [.opened(HTTP2StreamID(1), path: "/", endStream: true)])

        try connection.channel.writeInbound(ByteBuffer(bytes: RawFrame.headersWithContinuations(streamID: 3, continuations: 9)))
        connection.channel.embeddedEventLoop.run()
        try connection.serverToClient()
        #expect(connection.goAwaysWritten.map { $0[1] } == [HTTP2ErrorCode.enhanceYourCalm.rawValue])
        #expect(connection.delegate.goAwaysSent == [.enhanceYourCalm])
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls.last == .connectionClosed)
    }

    /// HTTP/1 bytes on the HTTP/2 port close the connection without telling the delegate anything but the close.
    @Test func http1BytesCloseTheConnection() throws {
        let connection = try EmbeddedConnection()
        try connection.channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        connection.channel.embeddedEventLoop.run()
        #expect(!connection.channel.isActive)
        #expect(connection.delegate.calls == [.connectionClosed])
    }
}
