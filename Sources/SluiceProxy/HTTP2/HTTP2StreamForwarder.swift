import NIOCore
import NIOHTTP1
import SluiceCore
import SluiceHTTP2

/// One HTTP/2 stream forwarded to one leased HTTP/1.1 upstream connection on the same event loop.
///
/// It translates; ``StateMachine`` decides. Back-pressure, both ways:
/// 1. Request body: bytes are consumed (the client's window reopens) only once written to the
///    upstream connection and while it is writable; what was written while it was not is consumed
///    when it becomes writable again. While leasing, the body queues, bounded by the stream window.
/// 2. Response body: the upstream handler holds its `read()` while ``downstreamIsWritable`` is false
///    (the stream's send queue is over its high watermark) and reads again on ``resumeUpstreamReading()``.
///
/// The response head is held until the first body bytes, the end or the end of the upstream read
/// batch, so a response without a body goes out as one HEADERS frame with END_STREAM.
///
/// A WebSocket (RFC 8441 extended CONNECT, translated into an HTTP/1.1 upgrade carrying
/// ``webSocketKey``) is the same exchange until the upstream's `101`: a valid one (``HTTP2RequestTranslation/webSocketAnswer(_:key:)``)
/// is answered `200` without END_STREAM, and the stream becomes a tunnel with the same back-pressure
/// both ways: client DATA is consumed once the upstream connection takes it, upstream reads pause while
/// the stream's queue is over its watermark. END_STREAM from the client half-closes the upstream
/// connection (`sendEnd`), the upstream's EOF ends the stream; a client reset or an upstream failure
/// (reset `CANCEL`) closes the other side. The upstream connection is never reused after a `101`.
///
/// Drain: ``closeTunnel(after:)`` (the connection's final GOAWAY went out) starts the WebSocket close
/// handshake at that moment: ``WebSocketDrainStateMachine`` has tracked the frame boundaries both ways
/// since the tunnel opened, and at the next boundary of each direction Sluice sends the client an
/// unmasked `Close 1001 "going away"` (as DATA) and the upstream a masked one; what follows a Close in
/// its direction is dropped. Once both replies came, or ``closeReplyTimeout`` after the start, the
/// client gets END_STREAM and the upstream connection is closed.
final class HTTP2StreamForwarder {
    /// How long the drain's close handshake waits for the Close replies before ending the tunnel anyway.
    static let closeReplyTimeout: Duration = .seconds(5)

    let streamID: HTTP2StreamID
    private unowned let connection: HTTP2ProxyConnection
    private var machine: StateMachine
    private let upstreamHead: HTTPRequestHead
    private let startedAt: MonotonicInstant
    /// The group the stream was routed to and the endpoints it tried.
    private var attempt: UpstreamAttempt

    /// Request body sent upstream, kept for a replay on a retry while the body stays within the
    /// group's `retry-buffer` (sent again first, its window already given back).
    private var replay: [ByteBuffer] = []
    private var keepsReplay: Bool
    /// Request body bytes received so far.
    private var bodyBytes = 0
    /// Request body that arrived while leasing.
    private var queued: [ByteBuffer] = []
    private var queuedBytes = 0
    /// Request body written upstream but not yet consumed (the upstream was not writable).
    private var unconsumed = 0
    private var upstream: (any UpstreamExchange)?
    private var heldHead: (status: Int, fields: [HTTP2HeaderField])?
    private var responseStatus = 0
    private var requestTrailers: HTTPHeaders?
    /// A WebSocket: the `Sec-WebSocket-Key` sent upstream.
    private let webSocketKey: String?
    /// When the tunnel opened, and the bytes it carried each way (client to upstream, upstream to client).
    private(set) var tunnelOpenedAt: MonotonicInstant?
    private(set) var tunnelBytesFromClient = 0
    private(set) var tunnelBytesToClient = 0
    /// The tunnel's frame boundaries both ways, and the drain's close handshake.
    private var webSocket = WebSocketDrainStateMachine()
    /// The drain's moment to start the close handshake, then its reply timeout.
    private var drainTimer: Scheduled<Void>?
    /// The drain's handshake began: its end is counted as clean or timed out.
    private var drainCloseStarted = false

    init(
        streamID: HTTP2StreamID, connection: HTTP2ProxyConnection, head: HTTPRequestHead, attempt: UpstreamAttempt, machine: StateMachine,
        startedAt: MonotonicInstant, webSocketKey: String? = nil
    ) {
        precondition(machine.opensTunnel == (webSocketKey != nil), "a WebSocket stream carries the key of its upgrade")
        self.streamID = streamID
        self.connection = connection
        self.upstreamHead = head
        self.attempt = attempt
        // Tunnel bytes are never replayed: a retry happens only before the `101`, and nothing of the
        // client's went upstream then.
        self.keepsReplay = attempt.policy.retries > 0 && webSocketKey == nil
        self.machine = machine
        self.startedAt = startedAt
        self.webSocketKey = webSocketKey
    }

    /// Whether the stream is an open WebSocket tunnel.
    var isTunnel: Bool { self.machine.isTunnel }

    private var loop: LoopContext { self.connection.loop }

    func start() {
        self.lease()
    }

    /// Leases a connection (or stream) for the next attempt, on the endpoint the group's balancer picks.
    private func lease() {
        let pool = self.attempt.begin()
        switch pool.lease(for: self, now: .now()) {
        case .ready(let connection):
            if !self.upstreamConnected(connection) {
                connection.release(reusable: true, now: .now())
            }
        case .connecting:
            break
        }
    }

    // MARK: Request in

    func dataReceived(_ data: ByteBuffer) {
        let bytes = data.readableBytes
        self.bodyBytes += bytes
        switch self.machine.dataReceived(bytes: bytes) {
        case .queue:
            self.queued.append(data)
            self.queuedBytes += bytes
        case .forward where self.machine.isTunnel:
            guard let upstream = self.upstream else { preconditionFailure("a tunnel without its upstream connection") }
            self.tunnelReceived(data, to: upstream)
        case .forward:
            guard let upstream = self.upstream else { preconditionFailure("forwarding without an upstream connection") }
            upstream.sendBody(data)
            self.keepForReplay(data)
            self.connection.upstreamNeedsFlush(upstream)
            self.written(bytes, to: upstream)
        case .discard:
            self.connection.handler?.consumed(streamID: self.streamID, bytes: bytes)
        case .fail(let failure, let limit):
            self.connection.handler?.consumed(streamID: self.streamID, bytes: bytes)
            self.run(failure, error: .bodyTooLarge(limit: limit))
        }
    }

    /// The request ended, with `trailers` if the client sent any (gRPC does not, but HTTP allows
    /// them; an HTTP/1.1 upstream gets them in the chunked encoding).
    func requestEnded(trailers: [HTTP2HeaderField]?) {
        if let trailers, !trailers.isEmpty { self.requestTrailers = HTTP2RequestTranslation.trailerHeaders(trailers) }
        switch self.machine.endReceived() {
        case .sendEnd:
            guard let upstream = self.upstream else { preconditionFailure("forwarding without an upstream connection") }
            // In a tunnel: the upstream connection's write side is half-closed.
            upstream.sendEnd(trailers: self.machine.isTunnel ? nil : self.requestTrailers)
            self.connection.upstreamNeedsFlush(upstream)
        case .queueEnd, .none:
            break
        }
    }

    func streamClosed(errorCode: HTTP2ErrorCode) {
        switch self.machine.streamClosed() {
        case .releaseUpstream:
            self.releaseUpstream()
            self.loop.stats.clientAborts += 1
        case .closeTunnel:
            self.releaseUpstream()
            self.tunnelEnded(clientReset: errorCode != .noError)
        case .none:
            break
        }
        self.drainTimer?.cancel()
        self.drainTimer = nil
        // Whatever was in progress says nothing about the endpoint.
        self.attempt.end(.abandoned)
        self.attempt.finish()
        self.replay.removeAll()
        self.queued.removeAll()
    }

    /// The stream's send queue went back under its watermark.
    func resumeUpstreamReading() {
        self.upstream?.resumeReading()
    }

    // MARK: Helpers

    /// Keeps a body buffer sent upstream for a replay, while the body fits the group's `retry-buffer`.
    private func keepForReplay(_ buffer: ByteBuffer) {
        guard self.keepsReplay else { return }
        if self.attempt.policy.keepsForReplay(bodyBytes: self.bodyBytes) {
            self.replay.append(buffer)
        } else {
            self.keepsReplay = false
            self.replay.removeAll()
        }
    }

    /// Whether the retry policy allows another attempt after `failure`. A WebSocket's queued bytes
    /// never went upstream before its `101`: they are no body to replay.
    private func shouldRetry(after failure: RetryPolicy.Failure) -> Bool {
        let bodyBytes = self.machine.opensTunnel ? 0 : self.bodyBytes
        return self.attempt.shouldRetry(after: failure, method: self.upstreamHead.method.rawValue, bodyBytes: bodyBytes)
    }

    /// `bytes` of request body were written to `upstream`: consume them if it can take more.
    private func written(_ bytes: Int, to upstream: any UpstreamExchange) {
        self.unconsumed += bytes
        if upstream.isWritable { self.consumeWritten() }
    }

    private func consumeWritten() {
        guard self.unconsumed > 0 else { return }
        let bytes = self.unconsumed
        self.unconsumed = 0
        self.connection.handler?.consumed(streamID: self.streamID, bytes: bytes)
    }

    /// Nothing more goes upstream: give the client its window back so it can finish sending.
    private func giveBackWindow() {
        let bytes = self.unconsumed + self.queuedBytes
        self.unconsumed = 0
        self.queuedBytes = 0
        self.queued.removeAll()
        if bytes > 0 { self.connection.handler?.consumed(streamID: self.streamID, bytes: bytes) }
    }

    private func releaseUpstream() {
        guard let upstream = self.upstream else { return }
        upstream.delegate = nil
        self.upstream = nil
        upstream.release(reusable: false, now: .now())
    }

    private func run(_ failure: StateMachine.Failure, error: ProxyError) {
        switch failure {
        case .respond(let release):
            if release { self.releaseUpstream() }
            self.heldHead = nil
            self.connection.respond(streamID: self.streamID, with: error, uri: self.upstreamHead.uri, startedAt: self.startedAt)
        case .reset(let release):
            if release { self.releaseUpstream() }
            self.loop.stats.recordError(error)
            self.loop.logger.warning("resetting stream", metadata: ["reason": "\(error.detail)", "uri": "\(self.upstreamHead.uri)"])
            self.connection.handler?.resetStream(streamID: self.streamID, errorCode: .internalError)
        case .resetTunnel:
            self.releaseUpstream()
            self.loop.logger.info("WebSocket tunnel lost its upstream", metadata: ["reason": "\(error.detail)", "uri": "\(self.upstreamHead.uri)"])
            self.connection.handler?.resetStream(streamID: self.streamID, errorCode: .cancel)
            self.tunnelEnded(clientReset: false)
        case .dropTunnelUpstream:
            self.releaseUpstream()
            self.tunnelEnded(clientReset: false)
        }
        // A failure of ours or the client's (an upstream failure ended its attempt already).
        self.attempt.end(.abandoned)
        self.attempt.finish()
        self.replay.removeAll()
        self.giveBackWindow()
    }

    /// The tunnel is over (its upstream connection closed): counted once. A drain close handshake
    /// under way ended with the tunnel: clean if the peers ended it, not if the stream was reset (by the
    /// client, or by the drain deadline's forced close).
    private func tunnelEnded(clientReset: Bool) {
        guard let openedAt = self.tunnelOpenedAt else { return }
        self.tunnelOpenedAt = nil
        if self.drainTimer != nil, self.drainCloseStarted { self.loop.stats.recordTunnelDrainClose(clientReset ? .timedOut : .clean) }
        self.drainTimer?.cancel()
        self.drainTimer = nil
        let now = MonotonicInstant.now()
        self.loop.table.tunnelEnded(self.connection.id, now: now)
        self.loop.stats.recordTunnelClosed(
            protocol: .http2, duration: openedAt.duration(to: now), bytesFromClient: self.tunnelBytesFromClient, bytesToClient: self.tunnelBytesToClient
        )
        self.loop.logger.debug(
            "WebSocket tunnel closed",
            metadata: ["uri": "\(self.upstreamHead.uri)", "stream": "\(self.streamID)", "clientReset": "\(clientReset)"]
        )
    }

    /// The upstream's valid `101`: the client gets `200` (no END_STREAM), the upstream what queued.
    private func openTunnel(fields: [HTTP2HeaderField], sendEnd: Bool) {
        guard let upstream = self.upstream else { preconditionFailure("a tunnel opens on its upstream connection") }
        let now = MonotonicInstant.now()
        self.tunnelOpenedAt = now
        // The connection table counts it (a drain waits for it as for a response); its close is this
        // connection's to schedule (the table's sweep drives HTTP/1 tunnels only).
        var random = SystemRandomNumberGenerator()
        self.loop.table.tunnelStarted(self.connection.id, kind: .webSocket, now: now, using: &random)
        // The attempt is over (the endpoint answered), and so is the request as the access counters see it.
        self.attempt.end(.response(status: 101))
        self.attempt.finish()
        self.connection.handler?.sendResponseHead(streamID: self.streamID, status: 200, headers: fields, endStream: false)
        self.loop.stats.recordResponse(status: 200, duration: self.startedAt.duration(to: now))
        let bytes = self.queuedBytes
        for buffer in self.queued {
            // The frame tracker sees every byte from the first (nothing is closing yet: all pass).
            _ = buffer.withUnsafeReadableBytes { self.webSocket.received($0, from: .clientToUpstream) }
            upstream.sendBody(buffer)
        }
        self.queued.removeAll()
        self.queuedBytes = 0
        self.tunnelBytesFromClient += bytes
        if sendEnd { upstream.sendEnd(trailers: nil) }
        self.connection.upstreamNeedsFlush(upstream)
        if bytes > 0 { self.written(bytes, to: upstream) }
        self.connection.tunnelOpened(self)
    }

    // MARK: Tunnel bytes and the drain's close handshake

    /// Client bytes in the tunnel: passed upstream up to where the drain's Close goes in, the rest
    /// dropped (their window given back at once).
    private func tunnelReceived(_ data: ByteBuffer, to upstream: any UpstreamExchange) {
        let bytes = data.readableBytes
        let plan = data.withUnsafeReadableBytes { self.webSocket.received($0, from: .clientToUpstream) }
        if plan.forward > 0 {
            upstream.sendBody(plan.forward == bytes ? data : data.getSlice(at: data.readerIndex, length: plan.forward) ?? data)
            self.tunnelBytesFromClient += plan.forward
        }
        if plan.injectClose { self.sendClose(toUpstream: true) }
        if plan.forward < bytes { self.connection.handler?.consumed(streamID: self.streamID, bytes: bytes - plan.forward) }
        self.connection.upstreamNeedsFlush(upstream)
        if plan.forward > 0 { self.written(plan.forward, to: upstream) }
        if self.webSocket.isFinished { self.endTunnelForDrain(timedOut: false) }
    }

    /// Upstream bytes in the tunnel: passed to the client up to where the drain's Close goes in.
    private func tunnelSent(_ body: ByteBuffer) {
        let bytes = body.readableBytes
        let plan = body.withUnsafeReadableBytes { self.webSocket.received($0, from: .upstreamToClient) }
        if plan.forward > 0 {
            self.tunnelBytesToClient += plan.forward
            let part = plan.forward == bytes ? body : body.getSlice(at: body.readerIndex, length: plan.forward) ?? body
            self.connection.handler?.sendData(streamID: self.streamID, part, endStream: false)
        }
        if plan.injectClose { self.sendClose(toUpstream: false) }
        if self.webSocket.isFinished { self.endTunnelForDrain(timedOut: false) }
    }

    /// Sluice's `Close 1001 "going away"` (RFC 6455 §7.4.1): masked towards the upstream (Sluice speaks
    /// as its client, §5.3), unmasked towards the client.
    private func sendClose(toUpstream: Bool) {
        if toUpstream {
            guard let upstream = self.upstream else { return }
            var random = SystemRandomNumberGenerator()
            let frame = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: UInt32.random(in: .min ... .max, using: &random))
            upstream.sendBody(ByteBuffer(bytes: frame))
            self.connection.upstreamNeedsFlush(upstream)
        } else {
            let frame = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: nil)
            self.connection.handler?.sendData(streamID: self.streamID, ByteBuffer(bytes: frame), endStream: false)
        }
    }

    /// Draining: the tunnel's close handshake starts `delay` from now (the connection spreads the
    /// tunnels over its window), or at once for a tunnel opening while draining.
    func closeTunnel(after delay: Duration) {
        guard self.machine.isTunnel, !self.drainCloseStarted else { return }
        self.drainTimer?.cancel()
        self.drainTimer = self.loop.eventLoop.assumeIsolated().scheduleTask(in: delay.timeAmount) { [weak self] in
            self?.beginDrainClose()
        }
    }

    private func beginDrainClose() {
        self.drainTimer = nil
        guard self.machine.isTunnel, !self.drainCloseStarted else { return }
        self.drainCloseStarted = true
        // A side that ended its half can take no Close (the client's stream or the upstream's write side
        // is shut): that session is ending by itself, and the timeout bounds it.
        if !self.machine.requestEnded && !self.machine.upstreamEnded {
            switch self.webSocket.beginClose() {
            case .closing(let injectToUpstream, let injectToClient):
                if injectToUpstream { self.sendClose(toUpstream: true) }
                if injectToClient { self.sendClose(toUpstream: false) }
            case .notInjecting:
                // A Close passed already (the session is closing by itself), or the framing is lost.
                break
            }
        }
        self.drainTimer = self.loop.eventLoop.assumeIsolated().scheduleTask(in: Self.closeReplyTimeout.timeAmount) { [weak self] in
            self?.drainTimer = nil
            self?.endTunnelForDrain(timedOut: true)
        }
    }

    /// The drain's handshake is over (both Close replies came) or timed out: END_STREAM to the
    /// client, the upstream connection closed.
    private func endTunnelForDrain(timedOut: Bool) {
        switch self.machine.closeTunnel() {
        case .closeBothSides(let sendEndStream):
            self.drainTimer?.cancel()
            self.drainTimer = nil
            self.loop.stats.recordTunnelDrainClose(timedOut ? .timedOut : .clean)
            if sendEndStream { self.connection.handler?.sendData(streamID: self.streamID, ByteBuffer(), endStream: true) }
            self.releaseUpstream()
            self.giveBackWindow()
            self.tunnelEnded(clientReset: false)
        case .none:
            break
        }
    }

    private func sendHeldHead(endStream: Bool) {
        guard let head = self.heldHead else { return }
        self.heldHead = nil
        self.connection.handler?.sendResponseHead(streamID: self.streamID, status: head.status, headers: head.fields, endStream: endStream)
    }
}

// MARK: - Upstream events

extension HTTP2StreamForwarder: UpstreamLeaseRequester {
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool {
        switch self.machine.upstreamConnected() {
        case .decline:
            return false
        case .sendUpgrade:
            // What the client sent waits for the `101` (it is tunnel bytes, not a body).
            self.upstream = connection
            connection.delegate = self
            connection.sendHead(self.upstreamHead, scheme: self.connection.scheme, now: .now(), upgrade: true)
            connection.flush()
            return true
        case .startForwarding(let sendContinue):
            self.upstream = connection
            connection.delegate = self
            connection.sendHead(self.upstreamHead, scheme: self.connection.scheme, now: .now())
            if sendContinue {
                // The client waits for this before sending its body; the upstream never sees `expect`.
                self.connection.handler?.sendInformationalHead(streamID: self.streamID, status: 100)
            }
            // A retry sends again what the last attempt sent (its window was given back then).
            for buffer in self.replay { connection.sendBody(buffer) }
            for buffer in self.queued {
                connection.sendBody(buffer)
                self.keepForReplay(buffer)
            }
            self.queued.removeAll()
            let bytes = self.queuedBytes
            self.queuedBytes = 0
            if self.machine.requestEnded { connection.sendEnd(trailers: self.requestTrailers) }
            connection.flush()
            if bytes > 0 { self.written(bytes, to: connection) }
            return true
        }
    }

    func upstreamConnectFailed(_ error: ProxyError) {
        self.attempt.end(.failed(error))
        switch self.machine.upstreamConnectFailed(retry: self.shouldRetry(after: .error(error))) {
        case .retry:
            self.loop.stats.retries += 1
            self.lease()
        case .fail(let failure): self.run(failure, error: error)
        case .none: break
        }
    }
}

extension HTTP2StreamForwarder: UpstreamResponseDelegate {
    /// RFC 9110 §15.2: a proxy forwards 1xx responses (101 never reaches here, and has no meaning in
    /// HTTP/2); the upstream side caps them (``UpstreamLimits/maxInterimResponses``, then a 502). A `100` is
    /// not forwarded, as on HTTP/1: Sluice answers `Expect` itself and does not pass it on, so the
    /// upstream's `100` answers nothing the client asked.
    func upstreamInterimResponse(_ head: HTTPResponseHead) {
        guard head.status.code != 101, head.status != .continue else { return }
        switch self.machine.interimResponse() {
        case .forward:
            self.connection.handler?.sendInformationalHead(
                streamID: self.streamID, status: Int(head.status.code), headers: HTTP2RequestTranslation.responseFields(head)
            )
        case .none:
            break
        }
    }

    var downstreamIsWritable: Bool { self.connection.handler?.isWritable(streamID: self.streamID) ?? false }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        let status = Int(head.status.code)
        if let key = self.webSocketKey, self.upstream != nil, !self.machine.responseStarted {
            switch HTTP2RequestTranslation.webSocketAnswer(head, key: key) {
            case .accepted(let fields):
                switch self.machine.responseHead(opensTunnel: true) {
                case .openTunnel(let sendEnd): self.openTunnel(fields: fields, sendEnd: sendEnd)
                case .send, .sendDroppingQueued, .none: break
                }
                return
            case .invalid(let reason):
                return self.upstreamFailed(.upstreamBadResponse(reason))
            case .refused:
                break
            }
        } else if status == 101 {
            // Only a WebSocket upgrade asks for one (the upstream codec passes no other).
            return self.upstreamFailed(.upstreamBadResponse("101 Switching Protocols to a request that asked for no upgrade"))
        }
        if self.upstream != nil, !self.machine.responseStarted, self.attempt.mayRetry(status: status), self.shouldRetry(after: .status(status)),
            self.machine.upstreamFailed(retry: true) == .retry
        {
            // The route retries a 502/503 (`retry-on-5xx`): this response is dropped with its connection.
            self.attempt.end(.response(status: status))
            self.releaseUpstream()
            self.loop.stats.retries += 1
            return self.lease()
        }
        switch self.machine.responseHead() {
        case .send:
            self.responseStatus = Int(head.status.code)
            self.heldHead = (self.responseStatus, HTTP2RequestTranslation.responseFields(head))
        case .sendDroppingQueued:
            // The upgrade was refused (a 404, a 401…): an ordinary response; what the client sent is dropped.
            self.responseStatus = Int(head.status.code)
            self.heldHead = (self.responseStatus, HTTP2RequestTranslation.responseFields(head))
            self.giveBackWindow()
        case .openTunnel, .none:
            break
        }
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        guard self.upstream != nil, self.machine.responseStarted else { return }
        if self.machine.isTunnel { return self.tunnelSent(body) }
        self.sendHeldHead(endStream: false)
        self.connection.handler?.sendData(streamID: self.streamID, body, endStream: false)
    }

    func upstreamReadComplete() {
        // A head without its body yet (a long poll, a slow stream): the client sees it now.
        self.sendHeldHead(endStream: false)
    }

    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {
        let reusable: Bool
        switch self.machine.responseEnd() {
        case .finish(let value): reusable = value
        case .endTunnel:
            // The upstream's EOF: END_STREAM. Its connection stays until the stream closes, as the client may still send.
            self.connection.handler?.sendData(streamID: self.streamID, ByteBuffer(), endStream: true)
            return
        case .none: return
        }
        guard let upstream = self.upstream else { return }
        self.upstream = nil
        upstream.delegate = nil
        upstream.release(reusable: reusable, now: .now())
        self.attempt.end(.response(status: self.responseStatus))
        self.attempt.finish()
        self.replay.removeAll()
        let trailerFields = trailers.map(HTTP2RequestTranslation.trailerFields) ?? []
        if self.heldHead != nil {
            self.sendHeldHead(endStream: trailerFields.isEmpty)
        } else if trailerFields.isEmpty {
            self.connection.handler?.sendData(streamID: self.streamID, ByteBuffer(), endStream: true)
        }
        if !trailerFields.isEmpty { self.connection.handler?.sendTrailers(streamID: self.streamID, headers: trailerFields) }
        if !reusable { self.giveBackWindow() }
        self.loop.stats.recordResponse(status: self.responseStatus, duration: self.startedAt.duration(to: .now()))
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { self.consumeWritten() }
    }

    func upstreamFailed(_ error: ProxyError) {
        guard self.upstream != nil else { return }
        self.attempt.end(.failed(error))
        let action = self.machine.upstreamFailed(retry: !self.machine.responseStarted && self.shouldRetry(after: .error(error)))
        switch action {
        case .retry:
            self.releaseUpstream()
            self.loop.stats.retries += 1
            self.lease()
        case .fail(let failure):
            self.run(failure, error: self.machine.responseStarted ? .upstreamFailedMidResponse(error.detail) : error)
        case .none:
            break
        }
    }
}
