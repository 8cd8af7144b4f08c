import NIOCore

/// Serves one HTTP/2 (h2c prior knowledge, or h2 after ALPN) connection: drives an ``NGHTTP2Session``
/// from the channel and hands the streams to an ``HTTP2StreamDelegate``.
///
/// 1. Bytes read go to the session; the events they cause go to the delegate (or to the drain and
///    abuse machines); the session's output is written once per read batch and flushed in
///    `channelReadComplete`.
/// 2. The delegate answers through ``sendResponseHead(streamID:status:headers:endStream:)``,
///    ``sendData(streamID:_:endStream:)``, ``sendTrailers(streamID:headers:)`` and
///    ``resetStream(streamID:errorCode:)``. Output produced outside a read batch (an upstream answering)
///    is flushed once per event-loop tick.
/// 3. Back-pressure, both ways: request bodies hold the client's window until ``consumed(streamID:bytes:)``;
///    response bodies wait in a per-stream queue that is serialised only while the channel is writable,
///    and the delegate hears ``HTTP2StreamDelegate/streamWritabilityChanged(_:isWritable:on:)``.
/// 4. ``beginGracefulShutdown(deadline:)`` (or NIO's `ChannelShouldQuiesceEvent`) runs the two-phase
///    GOAWAY of ``HTTP2GracefulShutdownStateMachine`` and closes once no stream is left; past the
///    deadline, or on ``forceClose()``, open streams are reset (`CANCEL`) and the connection closed.
///    ``sendShutdownNotice()`` sends phase one alone, for the `propagating` phase. From another thread,
///    fire a ``Command`` as a user inbound event.
/// 5. Floods (``HTTP2AbuseLimits``) end the connection with GOAWAY `ENHANCE_YOUR_CALM`, an
///    unacknowledged SETTINGS with `SETTINGS_TIMEOUT`; the frame rules libnghttp2 leaves unchecked
///    (``HTTP2FrameRulesStateMachine``) with GOAWAY `PROTOCOL_ERROR` (`ENHANCE_YOUR_CALM` for a
///    CONTINUATION flood).
/// 6. A stream whose response waits behind the client's closed flow-control window without progress
///    for ``Configuration/streamStallTimeout`` is reset (`CANCEL`; ``HTTP2StreamStallStateMachine``),
///    and its delegate hears ``HTTP2StreamDelegate/streamStalled(_:on:)`` before the close. Its queued
///    bytes are dropped at once.
///
/// Every method must be called on the channel's event loop.
///
/// ```swift
/// let handler = try HTTP2ServerConnectionHandler(delegate: myDelegate)
/// try channel.pipeline.syncOperations.addHandler(handler)
/// // in the delegate:
/// connection.sendResponseHead(streamID: id, status: 200, headers: [], endStream: false)
/// connection.sendData(streamID: id, body, endStream: true)
/// ```
public final class HTTP2ServerConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = Never
    /// Nothing may be written through this handler: every byte it sends comes from the nghttp2 session.
    public typealias OutboundIn = Never
    public typealias OutboundOut = ByteBuffer

    /// Settings of the connection.
    public struct Configuration: Sendable {
        /// The nghttp2 session's settings.
        public var session: HTTP2SessionConfiguration
        /// The two-phase GOAWAY's PING timeout (default 1 s).
        public var shutdown: HTTP2GracefulShutdownStateMachine<ContinuousClock>.Configuration
        /// Flood limits.
        public var abuseLimits: HTTP2AbuseLimits
        /// How long the last bytes (a GOAWAY) may take to be written before the socket is closed anyway.
        /// Default 2 s.
        public var closeTimeout: Duration
        /// How long a stream's response may wait behind the client's closed flow-control window without
        /// any byte going out before the stream is reset; nil: never. Default 30 s.
        public var streamStallTimeout: Duration?

        public init(
            session: HTTP2SessionConfiguration = .init(),
            shutdown: HTTP2GracefulShutdownStateMachine<ContinuousClock>.Configuration = .init(),
            abuseLimits: HTTP2AbuseLimits = .init(),
            closeTimeout: Duration = .seconds(2),
            streamStallTimeout: Duration? = .seconds(30)
        ) {
            self.session = session
            self.shutdown = shutdown
            self.abuseLimits = abuseLimits
            self.closeTimeout = closeTimeout
            self.streamStallTimeout = streamStallTimeout
        }
    }

    private let configuration: Configuration
    private let session: NGHTTP2Session
    private var delegate: (any HTTP2StreamDelegate)?
    private var shutdown: HTTP2GracefulShutdownStateMachine<ContinuousClock>
    private var limits: HTTP2AbuseLimitsStateMachine<ContinuousClock>
    private var frameRules = HTTP2FrameRulesStateMachine()
    private var stalls: HTTP2StreamStallStateMachine<ContinuousClock>?
    private var context: ChannelHandlerContext?

    /// Inside `channelRead`…`channelReadComplete`: output waits for `channelReadComplete`.
    private var inReadBatch = false
    /// A flush is scheduled for the end of this event-loop tick.
    private var flushScheduled = false
    /// Inside `flushOutput`: submissions are picked up by its loop.
    private var isFlushing = false
    /// The connection is closing (after its output is written); nothing more is read or delivered.
    private var isClosing = false
    /// The final write and close are issued.
    private var closeIssued = false
    /// The channel went inactive.
    private var didClose = false

    private var pingTimer: Scheduled<Void>?
    private var deadlineTimer: Scheduled<Void>?
    private var settingsAckTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    private var stallTimer: Scheduled<Void>?

    /// Creates the handler; `delegate` is held until the connection closes.
    public init(configuration: Configuration = Configuration(), delegate: any HTTP2StreamDelegate) throws {
        self.configuration = configuration
        self.session = try NGHTTP2Session(role: .server, configuration: configuration.session)
        self.delegate = delegate
        self.shutdown = HTTP2GracefulShutdownStateMachine(configuration: configuration.shutdown)
        self.limits = HTTP2AbuseLimitsStateMachine(limits: configuration.abuseLimits, now: .now)
        self.stalls = configuration.streamStallTimeout.map { HTTP2StreamStallStateMachine(timeout: $0) }
    }

    // MARK: - Queries

    /// How many streams are open.
    public var openStreamCount: Int { self.shutdown.openStreamCount }

    /// Whether the connection is draining (or closing).
    public var isShuttingDown: Bool { self.shutdown.isShuttingDown || self.isClosing }

    /// The round trip measured by the shutdown PING, once it came back.
    public var measuredRoundTripTime: Duration? { self.shutdown.measuredRoundTripTime }

    /// Whether `streamID`'s send queue is under the high watermark.
    public func isWritable(streamID: HTTP2StreamID) -> Bool { self.session.isWritable(streamID: streamID) }

    /// Response bytes queued on `streamID` and not yet written.
    public func queuedBytes(streamID: HTTP2StreamID) -> Int { self.session.queuedBytes(streamID: streamID) }

    /// Response bytes queued on all streams and not yet written: what the connection holds for clients
    /// that read slowly (bounded by the session's watermarks plus one upstream read per stream).
    public var queuedBytes: Int { self.session.totalQueuedBytes }

    // MARK: - Answering streams

    /// Sends the response head. With `endStream: false`, the body follows with ``sendData(streamID:_:endStream:)``
    /// or ``sendTrailers(streamID:headers:)``. Header names are lowercased and hop-by-hop fields dropped.
    ///
    /// - Returns: false if the stream is gone (closed or reset). A misuse (a second head, data after the
    ///   end) resets the stream with `INTERNAL_ERROR` and returns false too.
    @discardableResult
    public func sendResponseHead(streamID: HTTP2StreamID, status: Int, headers: [HTTP2HeaderField], endStream: Bool) -> Bool {
        self.submit(streamID) { try $0.submitResponse(streamID: streamID, status: status, headers: headers, endStream: endStream) }
    }

    /// Sends an informational head (1xx), e.g. 100 Continue or 103 Early Hints: a HEADERS frame without
    /// END_STREAM, before the final head.
    @discardableResult
    public func sendInformationalHead(streamID: HTTP2StreamID, status: Int, headers: [HTTP2HeaderField] = []) -> Bool {
        self.submit(streamID) { try $0.submitInformationalResponse(streamID: streamID, status: status, headers: headers) }
    }

    /// Queues response body bytes. Check ``isWritable(streamID:)`` (or wait for
    /// ``HTTP2StreamDelegate/streamWritabilityChanged(_:isWritable:on:)``) before reading more from the upstream.
    ///
    /// - Returns: false if the stream is gone; the bytes are dropped.
    @discardableResult
    public func sendData(streamID: HTTP2StreamID, _ data: ByteBuffer, endStream: Bool) -> Bool {
        self.submit(streamID) { try $0.submitData(streamID: streamID, data, endStream: endStream) }
    }

    /// Ends the response with trailers after the queued body.
    ///
    /// - Returns: false if the stream is gone.
    @discardableResult
    public func sendTrailers(streamID: HTTP2StreamID, headers: [HTTP2HeaderField]) -> Bool {
        self.submit(streamID) { try $0.submitTrailers(streamID: streamID, headers) }
    }

    /// Resets a stream (e.g. `internalError` when the upstream failed after the response began, `cancel`).
    public func resetStream(streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {
        self.context?.eventLoop.preconditionInEventLoop()
        guard !self.didClose, self.shutdown.isOpen(streamID) else { return }
        self.session.submitReset(streamID: streamID, errorCode: errorCode)
        self.outputPending()
    }

    /// Reports `bytes` of the stream's request body as passed on, so the client may send that much more.
    public func consumed(streamID: HTTP2StreamID, bytes: Int) {
        self.context?.eventLoop.preconditionInEventLoop()
        do {
            try self.session.consume(streamID: streamID, bytes: bytes)
        } catch {
            self.closeConnection()
            return
        }
        self.outputPending()
    }

    private func submit(_ streamID: HTTP2StreamID, _ body: (NGHTTP2Session) throws -> Bool) -> Bool {
        self.context?.eventLoop.preconditionInEventLoop()
        // A stream the delegate was told is closed (or never saw) is gone: libnghttp2 would drop the
        // frames, and its send queue would never be freed.
        guard !self.didClose, self.shutdown.isOpen(streamID) else { return false }
        let accepted: Bool
        do {
            accepted = try body(self.session)
        } catch let error as HTTP2SessionError where error.code == .invalidStreamState || error.code == .submissionFailed {
            // A misuse or a stream libnghttp2 no longer knows: this stream cannot go on, the others can.
            self.session.submitReset(streamID: streamID, errorCode: .internalError)
            accepted = false
        } catch {
            self.closeConnection()
            return false
        }
        self.outputPending()
        return accepted
    }

    private func submit(_ streamID: HTTP2StreamID, _ body: (NGHTTP2Session) throws -> Void) -> Bool {
        self.submit(streamID) { session -> Bool in
            try body(session)
            return true
        }
    }

    // MARK: - Drain

    /// What another thread (or the pipeline) can ask of the handler, as a user inbound event:
    /// `channel.pipeline.fireUserInboundEventTriggered(HTTP2ServerConnectionHandler.Command.forceClose)`.
    /// NIO's `ChannelShouldQuiesceEvent` means ``beginGracefulShutdown``.
    public enum Command: Sendable, Equatable {
        /// ``sendShutdownNotice()``.
        case sendShutdownNotice
        /// ``beginGracefulShutdown(deadline:)``.
        case beginGracefulShutdown(deadline: Duration?)
        /// ``forceClose()``.
        case forceClose
    }

    /// Phase one alone (the process is `propagating`): the shutdown notice GOAWAY (last-stream-id
    /// 2^31-1) and a PING to time its round trip. Streams keep being served; a later
    /// ``beginGracefulShutdown(deadline:)`` then sends the final GOAWAY without waiting again.
    public func sendShutdownNotice() {
        self.context?.eventLoop.preconditionInEventLoop()
        switch self.shutdown.sendShutdownNotice(now: .now) {
        case .sendShutdownNoticeAndPing(let payload, let pingTimeout):
            self.submitShutdownNoticeAndPing(payload: payload, pingTimeout: pingTimeout)
        case .none:
            break
        }
    }

    /// Starts the two-phase GOAWAY: shutdown notice and PING now (unless ``sendShutdownNotice()`` sent
    /// them already), the final GOAWAY after the PING's round trip (at most
    /// ``HTTP2GracefulShutdownStateMachine/Configuration/pingTimeout``), close when no stream is left.
    /// After `deadline`, if given, open streams are reset and the connection closed.
    public func beginGracefulShutdown(deadline: Duration? = nil) {
        self.context?.eventLoop.preconditionInEventLoop()
        if let deadline, self.deadlineTimer == nil, !self.isClosing {
            self.deadlineTimer = self.schedule(after: deadline) { $0.forceClose() }
        }
        switch self.shutdown.beginShutdown(now: .now) {
        case .sendShutdownNoticeAndPing(let payload, let pingTimeout):
            self.submitShutdownNoticeAndPing(payload: payload, pingTimeout: pingTimeout)
        case .sendFinalGoAway(let lastStreamID, let closeConnection):
            self.sendFinalGoAway(lastStreamID: lastStreamID, closeConnection: closeConnection)
        case .none:
            break
        }
    }

    private func submitShutdownNoticeAndPing(payload: UInt64, pingTimeout: Duration) {
        do {
            try self.session.submitShutdownNotice(followedByPing: payload)
        } catch {
            self.closeConnection()
            return
        }
        self.pingTimer = self.schedule(after: pingTimeout) { $0.pingTimedOut() }
        self.outputPending()
    }

    /// Cuts the connection now: open streams are reset (`CANCEL`), a GOAWAY with the last stream ID goes
    /// out, and the socket closes once it is written (or after ``Configuration/closeTimeout``).
    public func forceClose() {
        self.context?.eventLoop.preconditionInEventLoop()
        let action = self.shutdown.deadlineReached()
        switch action {
        case .resetStreamsAndClose(let streams, let finalGoAway):
            for id in streams { self.session.submitReset(streamID: id, errorCode: .cancel) }
            if let finalGoAway { try? self.session.submitGoAway(lastStreamID: finalGoAway, errorCode: .noError) }
            for id in streams { self.delegate?.streamClosed(id, errorCode: .cancel, on: self) }
            self.closeConnection()
        case .none:
            self.closeConnection()
        }
    }

    /// Resets the streams stalled on flow control for the timeout; their bytes are dropped at once, and
    /// `streamClosed` follows when the RST_STREAM is sent.
    private func stallTimerFired() {
        self.stallTimer = nil
        guard let action = self.stalls?.timerFired(now: .now), !self.isClosing else { return }
        switch action {
        case .resetStreams(let streams, let rescheduleAfter):
            for id in streams where self.shutdown.isOpen(id) {
                self.delegate?.streamStalled(id, on: self)
                self.session.submitReset(streamID: id, errorCode: .cancel)
            }
            if let rescheduleAfter {
                self.stallTimer = self.schedule(after: rescheduleAfter) { $0.stallTimerFired() }
            }
        }
    }

    private func pingTimedOut() {
        let action = self.shutdown.pingTimedOut()
        switch action {
        case .sendFinalGoAway(let lastStreamID, let closeConnection):
            self.sendFinalGoAway(lastStreamID: lastStreamID, closeConnection: closeConnection)
        case .none:
            break
        }
    }

    private func sendFinalGoAway(lastStreamID: HTTP2StreamID, closeConnection: Bool) {
        self.pingTimer?.cancel()
        self.pingTimer = nil
        do {
            try self.session.submitGoAway(lastStreamID: lastStreamID, errorCode: .noError)
        } catch {
            self.closeConnection()
            return
        }
        if closeConnection {
            self.closeConnection()
        } else {
            self.outputPending()
        }
    }

    // MARK: - Channel events

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { self.outputPending() }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        self.cancelTimers()
        self.context = nil
    }

    public func channelActive(context: ChannelHandlerContext) {
        // Our SETTINGS go out at once.
        self.outputPending()
        context.fireChannelActive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.isClosing else { return }
        self.inReadBatch = true
        var bytes = Self.unwrapInboundIn(data)
        let rules = self.frameRules.bytesReceived(bytes)
        switch rules {
        case .forward:
            break
        case .violation(let validBytes, _):
            // The frames before the offending one are processed as usual.
            bytes = bytes.getSlice(at: bytes.readerIndex, length: validBytes) ?? ByteBuffer()
        }
        do {
            try self.session.receive(bytes)
        } catch {
            // Not HTTP/2, or fatal to the session: send whatever GOAWAY libnghttp2 queued, then close.
            self.processEvents()
            self.closeConnection()
            return
        }
        self.processEvents()
        if case .violation(_, let errorCode) = rules, !self.isClosing {
            self.run(.sendGoAwayAndClose(errorCode: errorCode))
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        self.inReadBatch = false
        self.flushOutput()
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.flushOutput() }
        context.fireChannelWritabilityChanged()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            self.beginGracefulShutdown()
        } else if let command = event as? Command {
            switch command {
            case .sendShutdownNotice: self.sendShutdownNotice()
            case .beginGracefulShutdown(let deadline): self.beginGracefulShutdown(deadline: deadline)
            case .forceClose: self.forceClose()
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        self.didClose = true
        self.isClosing = true
        self.cancelTimers()
        let action = self.shutdown.connectionClosed()
        switch action {
        case .streamsLost(let streams):
            for id in streams { self.delegate?.streamClosed(id, errorCode: .cancel, on: self) }
        }
        self.delegate?.connectionClosed(self)
        self.delegate = nil
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
        case .requestHead(let id, let head, let endStream):
            switch self.shutdown.streamOpened(id) {
            case .accept:
                self.delegate?.streamOpened(id, head: head, endStream: endStream, on: self)
            case .refuse:
                self.session.submitReset(streamID: id, errorCode: .refusedStream)
            }
        case .data(let id, let data):
            guard self.shutdown.isOpen(id) else { return }
            self.delegate?.streamDataReceived(id, data: data, on: self)
        case .endStream(let id):
            guard self.shutdown.isOpen(id) else { return }
            self.delegate?.streamEnded(id, trailers: nil, on: self)
        case .trailers(let id, let trailers):
            guard self.shutdown.isOpen(id) else { return }
            self.delegate?.streamEnded(id, trailers: trailers, on: self)
        case .streamClosed(let id, let errorCode):
            guard self.shutdown.isOpen(id) else { return }
            self.stalls?.streamClosed(id)
            self.delegate?.streamClosed(id, errorCode: errorCode, on: self)
            switch self.shutdown.streamClosed(id) {
            case .closeConnection: self.closeConnection()
            case .none: break
            }
        case .streamWritabilityChanged(let id, let isWritable):
            guard self.shutdown.isOpen(id) else { return }
            self.delegate?.streamWritabilityChanged(id, isWritable: isWritable, on: self)
        case .streamFlowControlChanged(let id, let isBlocked):
            guard self.shutdown.isOpen(id) else { return }
            if !isBlocked {
                self.stalls?.streamUnblocked(id)
            } else if case .scheduleTimer(let delay)? = self.stalls?.streamBlocked(id, now: .now) {
                self.stallTimer = self.schedule(after: delay) { $0.stallTimerFired() }
            }
        case .goAwayReceived(let lastStreamID, let errorCode):
            self.delegate?.goAwayReceived(lastStreamID: lastStreamID, errorCode: errorCode, on: self)
        case .resetReceived:
            self.run(self.limits.resetReceived(now: .now))
        case .pingReceived:
            self.run(self.limits.pingReceived(now: .now))
        case .settingsReceived:
            self.run(self.limits.settingsReceived(now: .now))
        case .settingsAckReceived:
            self.limits.settingsAckReceived()
            self.settingsAckTimer?.cancel()
            self.settingsAckTimer = nil
        case .settingsSent:
            switch self.limits.settingsSent(now: .now) {
            case .scheduleAckTimer(let timeout):
                self.settingsAckTimer = self.schedule(after: timeout) { handler in
                    handler.run(handler.limits.settingsAckTimerFired())
                }
            case .none:
                break
            }
        case .pingAckReceived(let payload):
            switch self.shutdown.pingAckReceived(payload: payload, now: .now) {
            case .sendFinalGoAway(let lastStreamID, let closeConnection):
                self.sendFinalGoAway(lastStreamID: lastStreamID, closeConnection: closeConnection)
            case .none:
                break
            }
        case .goAwaySent(let lastStreamID, let errorCode):
            self.delegate?.goAwaySent(lastStreamID: lastStreamID, errorCode: errorCode, on: self)
        case .responseHead, .interimResponseHead:
            // A server session receives no responses.
            break
        }
    }

    private func run(_ action: HTTP2AbuseLimitsStateMachine<ContinuousClock>.FrameReceivedAction) {
        switch action {
        case .none:
            break
        case .sendGoAwayAndClose(let errorCode):
            try? self.session.submitGoAway(lastStreamID: self.session.lastProcessedStreamID, errorCode: errorCode)
            // Streams are cut: tell their owners before the socket goes.
            if case .resetStreamsAndClose(let streams, _) = self.shutdown.deadlineReached() {
                for id in streams { self.delegate?.streamClosed(id, errorCode: .cancel, on: self) }
            }
            self.closeConnection()
        }
    }

    // MARK: - Output

    /// Output is waiting: flush now if outside a read batch at the end of this tick, else at
    /// `channelReadComplete`.
    private func outputPending() {
        guard !self.inReadBatch, !self.isFlushing, !self.flushScheduled, let context = self.context else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutput()
        }
    }

    /// Writes the session's output while the channel is writable (or the connection is closing), at most
    /// 64 batches per call; then, if the connection is closing, closes it once the output is written.
    private func flushOutput() {
        guard let context = self.context, !self.isFlushing, !self.didClose, !self.closeIssued else { return }
        self.isFlushing = true
        // Submissions queue events too (a stream going over its watermark): deliver them even when
        // nothing can be written.
        self.processEvents()
        // Sending closes streams and drains queues; their owners may submit more (or close).
        switch self.session.writeOutput(to: context, evenIfUnwritable: self.isClosing, afterBatch: self.processEvents) {
        case .failed:
            self.isFlushing = false
            context.close(promise: nil)
            return
        case .written(let wrote):
            if wrote { context.flush() }
        }
        self.isFlushing = false

        if !self.session.wantsRead && !self.session.wantsWrite {
            // libnghttp2 is done: GOAWAY exchanged and no stream left, or a fatal error.
            self.isClosing = true
        }
        if self.isClosing {
            self.finishClose(context)
        } else if self.session.wantsWrite && context.channel.isWritable {
            // The batch limit stopped us; continue on the next tick.
            self.outputPending()
        }
    }

    /// Closes once the output is written. Called from inside `flushOutput`, which then finishes the close.
    private func closeConnection() {
        guard !self.isClosing else { return }
        self.isClosing = true
        if !self.isFlushing { self.flushOutput() }
    }

    private func finishClose(_ context: ChannelHandlerContext) {
        guard !self.closeIssued else { return }
        self.closeIssued = true
        // An empty write completes after everything written before it. Then a lingering close: send FIN
        // but keep reading (and dropping) what the peer still sends, so that our GOAWAY is not lost to the
        // RST a close with unread input causes; the channel closes when the peer closes.
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(Self.wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                let halfClosed = context.eventLoop.makePromise(of: Void.self)
                context.close(mode: .output, promise: halfClosed)
                halfClosed.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }
            case .failure:
                context.close(promise: nil)
            }
        }
        // A peer that neither reads nor closes must not keep the socket forever.
        self.closeTimer = self.schedule(after: self.configuration.closeTimeout) { _ in
            context.close(promise: nil)
        }
    }

    // MARK: - Timers

    private func schedule(after delay: Duration, _ body: @escaping (HTTP2ServerConnectionHandler) -> Void) -> Scheduled<Void>? {
        guard let context = self.context else { return nil }
        let (seconds, attoseconds) = delay.components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        return context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds)) {
            body(self)
            self.flushOutput()
        }
    }

    private func cancelTimers() {
        self.pingTimer?.cancel()
        self.deadlineTimer?.cancel()
        self.settingsAckTimer?.cancel()
        self.closeTimer?.cancel()
        self.stallTimer?.cancel()
        self.stallTimer = nil
        self.pingTimer = nil
        self.deadlineTimer = nil
        self.settingsAckTimer = nil
        self.closeTimer = nil
    }
}
