import NIOCore
import NIOHTTP1
import SluiceCore
import SluiceHTTP2

/// One downstream HTTP/2 connection as the proxy sees it: the ``HTTP2StreamDelegate`` of its
/// ``HTTP2ServerConnectionHandler``, and its entry in the loop's connection table.
///
/// 1. Each stream is one request: counted in the table (`requestStarted` when it opens,
///    `requestFinished` when it closes, so requests in flight = open streams), translated by
///    ``HTTP2RequestTranslation`` and forwarded by an ``HTTP2StreamForwarder`` over its own leased
///    upstream connection.
/// 2. The drain reaches it through ``DownstreamConnection``: the shutdown notice in `propagating`,
///    the final GOAWAY in `draining`, a forced close at the deadline.
/// 3. Request body writes to upstream connections are flushed once per event-loop tick.
/// 4. A connection without open streams for the idle timeout (`http.idleTimeout`) is closed
///    gracefully, by the two-phase GOAWAY, so a request racing the close is not lost. (The connection
///    table's sweep covers HTTP/1 only.)
/// 5. WebSocket streams (RFC 8441) would keep a draining connection open until the deadline: with the
///    final GOAWAY, each open tunnel is given a random moment within ``tunnelCloseWindow`` to start
///    its close handshake (``HTTP2StreamForwarder/closeTunnel(after:)``), so the clients reconnect
///    spread out rather than all at once; a tunnel that opens later in the drain gets one in what is
///    left of the window.
final class HTTP2ProxyConnection {
    let loop: LoopContext
    let id: ConnectionID
    let peerAddress: String?
    /// The scheme of the listener this connection came in on (`X-Forwarded-Proto`, `:scheme` upstream).
    let scheme: URIScheme
    /// The connection's handler; the pipeline owns it.
    private(set) weak var handler: HTTP2ServerConnectionHandler?
    private var streams: [HTTP2StreamID: HTTP2StreamForwarder] = [:]
    private var needFlush: [any UpstreamExchange] = []
    private var flushScheduled = false
    /// When the last stream closed (or the connection opened).
    private var idleSince: MonotonicInstant
    private var idleCheck: Scheduled<Void>?
    /// The end of the window the drain closes WebSocket tunnels within, once draining began.
    private var tunnelCloseBy: MonotonicInstant?
    private var random = SystemRandomNumberGenerator()

    init(loop: LoopContext, id: ConnectionID, peerAddress: String?, scheme: URIScheme) {
        self.scheme = scheme
        self.loop = loop
        self.id = id
        self.peerAddress = peerAddress
        self.idleSince = .now()
    }

    func attach(_ handler: HTTP2ServerConnectionHandler) {
        self.handler = handler
        self.scheduleIdleCheck(in: self.loop.table.timeouts.idle)
    }

    // MARK: Idle timeout

    /// One timer per connection and idle period, not per stream: it re-arms for the time left.
    private func scheduleIdleCheck(in delay: Duration) {
        self.idleCheck = self.loop.eventLoop.assumeIsolated().scheduleTask(in: delay.timeAmount) { [weak self] in
            self?.idleCheckFired()
        }
    }

    private func idleCheckFired() {
        self.idleCheck = nil
        guard let handler = self.handler, !handler.isShuttingDown else { return }
        let timeout = self.loop.table.timeouts.idle
        guard self.streams.isEmpty, handler.openStreamCount == 0 else {
            return self.scheduleIdleCheck(in: timeout)
        }
        let quiet = self.idleSince.duration(to: .now())
        if quiet >= timeout {
            self.loop.logger.debug("closing connection", metadata: ["connection": "\(self.id)", "reason": "idleTimeout"])
            handler.beginGracefulShutdown(deadline: nil)
        } else {
            self.scheduleIdleCheck(in: timeout - quiet)
        }
    }

    /// An upstream connection was written to outside its own flush: flush it at the end of this tick.
    func upstreamNeedsFlush(_ upstream: any UpstreamExchange) {
        self.needFlush.append(upstream)
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        self.loop.eventLoop.assumeIsolated().execute { [self] in
            self.flushScheduled = false
            let upstreams = self.needFlush
            self.needFlush.removeAll(keepingCapacity: true)
            for upstream in upstreams { upstream.flush() }
        }
    }

    /// Answers a stream ourselves (an error found before any upstream response).
    func respond(streamID: HTTP2StreamID, with error: ProxyError, uri: String, startedAt: MonotonicInstant) {
        let status = error.status ?? 502
        self.loop.stats.recordError(error)
        if error.source == .downstream {
            self.loop.logger.info("rejected request", metadata: ["status": "\(status)", "reason": "\(error.detail)", "peer": "\(self.peerAddress ?? "?")"])
        } else {
            self.loop.logger.warning("upstream error", metadata: ["status": "\(status)", "reason": "\(error.detail)", "uri": "\(uri)"])
        }
        self.respond(streamID: streamID, status: status, body: error.responseBody, startedAt: startedAt)
    }

    /// Answers a stream ourselves with a plain-text body.
    private func respond(streamID: HTTP2StreamID, status: Int, body: String, startedAt: MonotonicInstant) {
        let fields = [
            HTTP2HeaderField(name: "content-type", value: "text/plain; charset=utf-8"),
            HTTP2HeaderField(name: "content-length", value: String(body.utf8.count)),
        ]
        self.handler?.sendResponseHead(streamID: streamID, status: status, headers: fields, endStream: false)
        self.handler?.sendData(streamID: streamID, ByteBuffer(string: body), endStream: true)
        self.loop.stats.recordResponse(status: status, duration: startedAt.duration(to: .now()))
    }
}

// MARK: - Streams

extension HTTP2ProxyConnection: HTTP2StreamDelegate {
    func streamOpened(_ streamID: HTTP2StreamID, head: HTTP2RequestHead, endStream: Bool, on connection: HTTP2ServerConnectionHandler) {
        self.loop.eventLoop.assertInEventLoop()
        let now = MonotonicInstant.now()
        self.loop.table.requestStarted(self.id, now: now)
        let path = head.path ?? "/"
        let routing = self.loop.routing
        let host = routing.matchesHosts ? head.authority ?? head.headers.first(where: { $0.name == "host" })?.value : nil
        guard let routed = routing.route(host: host, path: path) else {
            return self.respond(streamID: streamID, with: .noRoute(host: host ?? head.authority, path: path), uri: path, startedAt: now)
        }
        let group = routed.group
        let translation: Result<HTTP2RequestTranslation.Translated, HTTP2RequestTranslation.Rejection>
        if head.extendedProtocol != nil {
            // RFC 8441: a WebSocket, tunnelled through an HTTP/1.1 upgrade.
            translation = HTTP2RequestTranslation.translateExtendedConnect(
                head,
                clientAddress: self.peerAddress,
                scheme: self.scheme,
                upstreamAuthority: routed.route.hostRewrite ?? group.fallbackHost,
                limits: self.loop.requestLimits,
                upstreamIsHTTP2: group.isHTTP2,
                makeKey: {
                    var random = SystemRandomNumberGenerator()
                    return WebSocketHandshake.makeKey(using: &random)
                }
            )
        } else {
            translation = HTTP2RequestTranslation.translate(
                head,
                endStream: endStream,
                clientAddress: self.peerAddress,
                scheme: self.scheme,
                upstreamAuthority: routed.route.hostRewrite ?? group.fallbackHost,
                limits: self.loop.requestLimits,
                upstreamIsHTTP2: group.isHTTP2
            )
        }
        switch translation {
        case .success(var translated):
            if let max = routed.maxBodyBytes, let length = translated.head.headers.first(name: "content-length").flatMap({ Int($0) }), length > max {
                return self.respond(streamID: streamID, with: .bodyTooLarge(limit: max), uri: path, startedAt: now)
            }
            if let host = routed.route.hostRewrite { translated.head.headers.replaceOrAdd(name: "host", value: host) }
            if routed.route.stripPrefix { translated.head.uri = routed.upstreamTarget(translated.head.uri) }
            var attempt = UpstreamAttempt(target: routed, budget: self.loop.retryBudget)
            attempt.hash = group.hashKey(headers: translated.head.headers, clientAddress: self.peerAddress)
            let machine = HTTP2StreamForwarder.StateMachine(
                requestEnded: endStream,
                expectsContinue: translated.expectsContinue,
                maxBodyBytes: routed.maxBodyBytes,
                opensTunnel: translated.webSocketKey != nil
            )
            let forwarder = HTTP2StreamForwarder(
                streamID: streamID, connection: self, head: translated.head, attempt: attempt, machine: machine, startedAt: now,
                webSocketKey: translated.webSocketKey
            )
            self.streams[streamID] = forwarder
            forwarder.start()
        case .failure(.malformed(let reason)):
            // RFC 9113 §8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR.
            self.loop.stats.recordError(.badRequest(reason))
            self.loop.logger.info("malformed HTTP/2 request", metadata: ["reason": "\(reason)", "peer": "\(self.peerAddress ?? "?")"])
            connection.resetStream(streamID: streamID, errorCode: .protocolError)
        case .failure(.refused(let error)):
            self.respond(streamID: streamID, with: error, uri: head.path ?? "", startedAt: now)
        case .failure(.notImplemented(let reason)):
            self.loop.logger.info("refused extended CONNECT", metadata: ["reason": "\(reason)", "peer": "\(self.peerAddress ?? "?")"])
            self.respond(streamID: streamID, status: 501, body: reason + "\n", startedAt: now)
        }
    }

    func streamDataReceived(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ServerConnectionHandler) {
        if let forwarder = self.streams[streamID] {
            forwarder.dataReceived(data)
        } else {
            // Answered or reset at its head: the body is dropped and its window given back.
            connection.consumed(streamID: streamID, bytes: data.readableBytes)
        }
    }

    func streamEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ServerConnectionHandler) {
        self.streams[streamID]?.requestEnded(trailers: trailers)
    }

    func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
        self.streams.removeValue(forKey: streamID)?.streamClosed(errorCode: errorCode)
        let now = MonotonicInstant.now()
        self.loop.table.requestFinished(self.id, now: now)
        self.idleSince = now
    }

    func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler) {
        if isWritable { self.streams[streamID]?.resumeUpstreamReading() }
    }

    func streamStalled(_ streamID: HTTP2StreamID, on connection: HTTP2ServerConnectionHandler) {
        self.loop.stats.http2StreamStallResets += 1
        self.loop.logger.info(
            "resetting HTTP/2 stream stalled on flow control",
            metadata: ["stream": "\(streamID)", "queued": "\(connection.queuedBytes(streamID: streamID))", "peer": "\(self.peerAddress ?? "?")"]
        )
    }

    func goAwaySent(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
        guard errorCode != .noError else { return }
        self.loop.stats.http2ConnectionErrors[errorCode.description, default: 0] += 1
        self.loop.logger.info("HTTP/2 connection error", metadata: ["code": "\(errorCode)", "peer": "\(self.peerAddress ?? "?")"])
    }

    func connectionClosed(_ connection: HTTP2ServerConnectionHandler) {
        // Every stream was closed before this call; anything left is a bug in the bookkeeping.
        for (streamID, forwarder) in self.streams {
            forwarder.streamClosed(errorCode: .cancel)
            self.loop.logger.debug("stream left at connection close", metadata: ["stream": "\(streamID)"])
        }
        self.streams.removeAll()
        self.idleCheck?.cancel()
        self.idleCheck = nil
        self.loop.unregister(self.id)
    }
}

// MARK: - Drain

extension HTTP2ProxyConnection: DownstreamConnection {
    var bufferedResponseBytes: Int { self.handler?.queuedBytes ?? 0 }

    /// Forced close (drain deadline, SIGQUIT): open streams are reset and the socket closed.
    func close() {
        self.handler?.forceClose()
    }

    /// `propagating`: the GOAWAY shutdown notice (last stream id 2^31-1) and a PING; streams go on.
    func sendShutdownNotice() {
        self.handler?.sendShutdownNotice()
    }

    /// `draining`: the final GOAWAY (after the notice's round trip); the connection closes when its
    /// last stream ends. The drain coordinator's deadline bounds it. WebSocket tunnels are closed over
    /// ``tunnelCloseWindow`` (item 5).
    func beginGracefulShutdown() {
        self.handler?.beginGracefulShutdown(deadline: nil)
        guard self.tunnelCloseBy == nil else { return }
        let now = MonotonicInstant.now()
        self.tunnelCloseBy = now.advanced(by: self.tunnelCloseWindow)
        for forwarder in self.streams.values where forwarder.isTunnel {
            forwarder.closeTunnel(after: self.randomDelay(until: now.advanced(by: self.tunnelCloseWindow), now: now))
        }
    }

    /// Over how long the drain spreads the close of WebSocket tunnels: half the drain timeout
    /// (``LoopContext/tunnelCloseWindow``, as for HTTP/1 tunnels), so the close handshakes (at most
    /// ``HTTP2StreamForwarder/closeReplyTimeout`` each) end before the deadline.
    var tunnelCloseWindow: Duration { self.loop.tunnelCloseWindow }

    /// A tunnel opened: if draining, it is closed within what is left of the window.
    func tunnelOpened(_ forwarder: HTTP2StreamForwarder) {
        guard let closeBy = self.tunnelCloseBy else { return }
        forwarder.closeTunnel(after: self.randomDelay(until: closeBy, now: .now()))
    }

    /// A uniformly random delay from `now` to `end` (zero once `end` has passed).
    private func randomDelay(until end: MonotonicInstant, now: MonotonicInstant) -> Duration {
        let span = now.duration(to: end).nanosecondsClamped
        guard span > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...span, using: &self.random))
    }
}
