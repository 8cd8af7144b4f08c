import NIOCore

/// Receives what happens on an ``HTTP2ClientConnectionHandler``'s streams, on its event loop.
///
/// A stream's response arrives in order: any ``interimResponseHead(_:head:on:)`` (1xx), then
/// ``responseHead(_:head:endStream:on:)``, then data, then
/// ``responseEnded(_:trailers:on:)`` (unless the head had `endStream`); every stream opened with
/// ``HTTP2ClientConnectionHandler/openStream(_:endStream:)`` ends with exactly one
/// ``streamClosed(_:errorCode:on:)`` (`noError` when both sides ended, else the reset's code), or
/// with ``connectionClosed(_:)`` for all streams still open.
public protocol HTTP2ClientConnectionDelegate: AnyObject {
    /// An informational (1xx) head, before the stream's final ``responseHead(_:head:endStream:on:)``.
    func interimResponseHead(_ streamID: HTTP2StreamID, head: HTTP2ResponseHead, on connection: HTTP2ClientConnectionHandler)
    func responseHead(_ streamID: HTTP2StreamID, head: HTTP2ResponseHead, endStream: Bool, on connection: HTTP2ClientConnectionHandler)
    /// Body bytes; they hold the stream's window until ``HTTP2ClientConnectionHandler/consumed(streamID:bytes:)``.
    func responseData(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ClientConnectionHandler)
    func responseEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ClientConnectionHandler)
    func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ClientConnectionHandler)
    func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ClientConnectionHandler)
    /// The peer's SETTINGS arrived (the first ones, or a change).
    func settingsReceived(maxConcurrentStreams: Int, on connection: HTTP2ClientConnectionHandler)
    /// The peer sent GOAWAY: streams above `lastStreamID` are closed with `REFUSED_STREAM` (never
    /// processed, safe to retry); no new stream may be opened.
    func goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ClientConnectionHandler)
    /// The end of a read batch: a good moment to flush what the responses produced downstream.
    func readComplete(on connection: HTTP2ClientConnectionHandler)
    func connectionClosed(_ connection: HTTP2ClientConnectionHandler)
}

/// Drives an ``NGHTTP2Session`` in the client role over one channel (h2c with prior knowledge: the
/// connection preface and SETTINGS go out as soon as the channel is active).
///
/// 1. Bytes read go to the session; the events they cause go to the ``HTTP2ClientConnectionDelegate``.
///    Output produced in a read batch is written in `channelReadComplete`; output produced outside
///    one (a request submitted by a downstream connection) once per event-loop tick.
/// 2. Back-pressure, both ways: response bodies hold the upstream's window until
///    ``consumed(streamID:bytes:)``; request bodies wait in a per-stream queue that is serialised only
///    while the channel is writable, and the delegate hears
///    ``HTTP2ClientConnectionDelegate/streamWritabilityChanged(_:isWritable:on:)``.
/// 3. libnghttp2 holds streams opened past the peer's `SETTINGS_MAX_CONCURRENT_STREAMS` until a
///    slot frees.
/// 4. ``close()`` sends GOAWAY and closes once it is written.
///
/// Every method must be called on the channel's event loop.
public final class HTTP2ClientConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let session: NGHTTP2Session
    private var delegate: (any HTTP2ClientConnectionDelegate)?
    private var context: ChannelHandlerContext?
    /// Streams opened and not yet reported closed.
    private var openStreams: Set<HTTP2StreamID> = []
    private var inReadBatch = false
    private var flushScheduled = false
    private var isFlushing = false
    private var isClosing = false
    private var didClose = false
    private var closeIssued = false
    private var goAwayReceived = false

    public init(configuration: HTTP2SessionConfiguration = .init(), delegate: any HTTP2ClientConnectionDelegate) throws {
        self.session = try NGHTTP2Session(role: .client, configuration: configuration)
        self.delegate = delegate
    }

    /// Streams opened and not yet closed.
    public var openStreamCount: Int { self.openStreams.count }

    /// Whether new streams may be opened (no GOAWAY received, not closing).
    public var acceptsStreams: Bool { !self.goAwayReceived && !self.isClosing && !self.didClose }

    /// Whether the peer allows extended CONNECT (RFC 8441 SETTINGS_ENABLE_CONNECT_PROTOCOL); false until
    /// its SETTINGS arrive (``HTTP2ClientConnectionDelegate/settingsReceived(maxConcurrentStreams:on:)``).
    public var peerEnablesConnectProtocol: Bool { self.session.remoteEnablesConnectProtocol }

    /// Whether `streamID`'s send queue is under the high watermark.
    public func isWritable(streamID: HTTP2StreamID) -> Bool { self.session.isWritable(streamID: streamID) }

    // MARK: - Streams

    /// Opens a stream with a request head. With `endStream: false` the body follows with
    /// ``sendData(streamID:_:endStream:)`` or ``sendTrailers(streamID:_:)``.
    ///
    /// - Returns: the stream's ID, or nil if no stream can be opened (GOAWAY received, closing, or
    ///   libnghttp2 refused the head).
    public func openStream(_ head: HTTP2RequestHead, endStream: Bool) -> HTTP2StreamID? {
        self.context?.eventLoop.preconditionInEventLoop()
        guard self.acceptsStreams else { return nil }
        guard let id = try? self.session.submitRequest(head, endStream: endStream) else { return nil }
        self.openStreams.insert(id)
        self.outputPending()
        return id
    }

    /// Queues request body bytes. Returns false if the stream is gone (the bytes are dropped).
    @discardableResult
    public func sendData(streamID: HTTP2StreamID, _ data: ByteBuffer, endStream: Bool) -> Bool {
        self.submit(streamID) { try $0.submitData(streamID: streamID, data, endStream: endStream) }
    }

    /// Ends the request with trailers after the queued body. Returns false if the stream is gone.
    @discardableResult
    public func sendTrailers(streamID: HTTP2StreamID, _ trailers: [HTTP2HeaderField]) -> Bool {
        self.submit(streamID) { try $0.submitTrailers(streamID: streamID, trailers) }
    }

    /// Resets a stream (`cancel` when the downstream went away). Its `streamClosed` follows.
    public func resetStream(streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {
        self.context?.eventLoop.preconditionInEventLoop()
        guard !self.didClose, self.openStreams.contains(streamID) else { return }
        self.session.submitReset(streamID: streamID, errorCode: errorCode)
        self.outputPending()
    }

    /// Reports `bytes` of the stream's response body as passed on, so the upstream may send that much more.
    public func consumed(streamID: HTTP2StreamID, bytes: Int) {
        self.context?.eventLoop.preconditionInEventLoop()
        guard !self.didClose else { return }
        do {
            try self.session.consume(streamID: streamID, bytes: bytes)
        } catch {
            self.close()
            return
        }
        self.outputPending()
    }

    /// Sends GOAWAY (`noError`) and closes the connection once it is written. Streams still open are
    /// cut: their delegate hears ``HTTP2ClientConnectionDelegate/connectionClosed(_:)``.
    public func close() {
        self.context?.eventLoop.preconditionInEventLoop()
        guard !self.isClosing, !self.didClose else { return }
        self.isClosing = true
        try? self.session.submitGoAway(lastStreamID: HTTP2StreamID(0), errorCode: .noError)
        if !self.isFlushing { self.flushOutput() }
    }

    private func submit(_ streamID: HTTP2StreamID, _ body: (NGHTTP2Session) throws -> Bool) -> Bool {
        self.context?.eventLoop.preconditionInEventLoop()
        guard !self.didClose, self.openStreams.contains(streamID) else { return false }
        let accepted: Bool
        do {
            accepted = try body(self.session)
        } catch let error as HTTP2SessionError where error.code == .invalidStreamState || error.code == .submissionFailed {
            self.session.submitReset(streamID: streamID, errorCode: .internalError)
            accepted = false
        } catch {
            self.close()
            return false
        }
        self.outputPending()
        return accepted
    }

    // MARK: - Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { self.outputPending() }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    public func channelActive(context: ChannelHandlerContext) {
        // The preface and our SETTINGS go out at once.
        self.outputPending()
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.didClose else { return }
        self.inReadBatch = true
        do {
            try self.session.receive(Self.unwrapInboundIn(data))
        } catch {
            // Fatal to the session: send the GOAWAY libnghttp2 queued, then close.
            self.processEvents()
            self.isClosing = true
            return
        }
        self.processEvents()
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        self.inReadBatch = false
        self.delegate?.readComplete(on: self)
        self.flushOutput()
        context.fireChannelReadComplete()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.flushOutput() }
        context.fireChannelWritabilityChanged()
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.didClose = true
        self.isClosing = true
        self.openStreams.removeAll()
        let delegate = self.delegate
        self.delegate = nil
        delegate?.connectionClosed(self)
        context.fireChannelInactive()
    }

    // MARK: - Session events

    private func processEvents() {
        while !self.didClose, let event = self.session.nextEvent() {
            self.handle(event)
        }
    }

    private func handle(_ event: HTTP2SessionEvent) {
        switch event {
        case .interimResponseHead(let id, let head):
            guard self.openStreams.contains(id) else { return }
            self.delegate?.interimResponseHead(id, head: head, on: self)
        case .responseHead(let id, let head, let endStream):
            guard self.openStreams.contains(id) else { return }
            self.delegate?.responseHead(id, head: head, endStream: endStream, on: self)
        case .data(let id, let data):
            guard self.openStreams.contains(id) else { return self.giveBack(id, data.readableBytes) }
            self.delegate?.responseData(id, data: data, on: self)
        case .endStream(let id):
            guard self.openStreams.contains(id) else { return }
            self.delegate?.responseEnded(id, trailers: nil, on: self)
        case .trailers(let id, let trailers):
            guard self.openStreams.contains(id) else { return }
            self.delegate?.responseEnded(id, trailers: trailers, on: self)
        case .streamClosed(let id, let errorCode):
            guard self.openStreams.remove(id) != nil else { return }
            self.delegate?.streamClosed(id, errorCode: errorCode, on: self)
        case .streamWritabilityChanged(let id, let isWritable):
            guard self.openStreams.contains(id) else { return }
            self.delegate?.streamWritabilityChanged(id, isWritable: isWritable, on: self)
        case .settingsReceived:
            self.delegate?.settingsReceived(maxConcurrentStreams: self.session.remoteMaxConcurrentStreams, on: self)
        case .goAwayReceived(let lastStreamID, let errorCode):
            self.goAwayReceived = true
            self.delegate?.goAwayReceived(lastStreamID: lastStreamID, errorCode: errorCode, on: self)
        case .requestHead, .resetReceived, .streamFlowControlChanged, .pingReceived, .pingAckReceived, .settingsAckReceived, .settingsSent, .goAwaySent:
            // libnghttp2 answers PINGs and SETTINGS itself; a reset shows up as `streamClosed`.
            break
        }
    }

    /// Data for a stream nobody reads any more: its window is given back at once.
    private func giveBack(_ id: HTTP2StreamID, _ bytes: Int) {
        try? self.session.consume(streamID: id, bytes: bytes)
    }

    // MARK: - Output

    private func outputPending() {
        guard !self.inReadBatch, !self.isFlushing, !self.flushScheduled, let context = self.context else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutput()
        }
    }

    /// Writes the session's output while the channel is writable (at most 64 batches per call);
    /// closes the channel once libnghttp2 is done or the connection is closing.
    private func flushOutput() {
        guard let context = self.context, !self.isFlushing, !self.didClose else { return }
        self.isFlushing = true
        self.processEvents()
        let result = self.session.writeOutput(to: context, evenIfUnwritable: self.isClosing, afterBatch: self.processEvents)
        self.isFlushing = false
        guard case .written(let wrote) = result else {
            context.close(promise: nil)
            return
        }
        if !self.session.wantsRead && !self.session.wantsWrite { self.isClosing = true }
        if self.isClosing {
            guard !self.closeIssued else { return }
            self.closeIssued = true
            // Close once what was written is out (the GOAWAY); an upstream needs no lingering close.
            context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated()
                .whenComplete { _ in context.close(promise: nil) }
            return
        }
        if wrote { context.flush() }
        if self.session.wantsWrite && context.channel.isWritable { self.outputPending() }
    }
}
