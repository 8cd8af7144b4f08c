import Logging
import NIOCore
import NIOHTTP1
import SluiceCore

/// One downstream HTTP/1.1 connection: forwards each request to a leased upstream connection on the
/// same event loop and streams the response back; after an upstream `101`, a byte tunnel.
///
/// It sits behind ``HTTP1ServerCodec`` (no pipelining handler: NIO's holds `read()` while every
/// response is in flight, which costs two `epoll_ctl` calls per request). It translates; the
/// decisions are elsewhere:
/// 1. pipelining, error versus abort, close after the response, retry points, upgrades and
///    tunnels: ``HTTP1ExchangeStateMachine`` (`let action = machine.event(…); run(action)`); this
///    handler holds what the machine cannot (the queued parts, the replay buffer, the upstream);
/// 2. whether a request is acceptable: ``RequestRules``; how headers change: ``HeaderRules``;
/// 3. whether a response must carry `Connection: close` because of the drain, and when a tunnel's
///    time is up: the loop's ``ConnectionTable``;
/// 4. which group serves the request: the loop's routes (``LoopRouting``); which endpoint: the
///    group's balancer (``LoopUpstreamGroup``); whether to try again: the retry policy
///    (``UpstreamAttempt``); which connection and whether to keep it: the endpoint's pool.
///
/// Back-pressure: `read()` is held while the upstream connection cannot take more request bytes
/// (or is still connecting), and the upstream handler holds its `read()` while this connection
/// cannot take more response bytes. Nothing is buffered whole; a tunnel holds at most a read buffer
/// each way.
final class DownstreamHTTP1Handler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let loop: LoopContext
    private var machine = HTTP1ExchangeStateMachine()
    private var context: ChannelHandlerContext?
    let id: ConnectionID?
    private let peerAddress: String?
    /// The scheme of the listener this connection came in on.
    private let scheme: URIScheme
    /// The upstream exchange while forwarding or tunnelling.
    private var upstream: (any UpstreamExchange)?
    /// Request bytes were written upstream and not flushed yet (flushed once per read batch).
    private var needsUpstreamFlush = false
    /// Parts of pipelined requests that arrived while a response was still in progress.
    private var queuedParts: [HTTPServerRequestPart] = []
    /// A request part reached this handler in the current read batch: `channelReadComplete`
    /// follows, and flushes what the batch wrote upstream.
    private var partInThisReadBatch = false

    // The request in progress.
    private var upstreamHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
    /// Request parts that arrived while the upstream connection was not ready.
    private var pendingParts: [HTTPClientRequestPart] = []
    /// The protocols of an upgrade request, sent upstream with the upgrade pair.
    private var upgradeProtocols: String?
    private var responseStatus = 0
    /// The group the request was routed to, the endpoints it tried and its retry policy; `nil`
    /// until routed.
    private var attempt: UpstreamAttempt?
    /// Request parts already sent upstream, kept for a replay on a retry while the body stays
    /// within the group's `retry-buffer` (the buffers are the ones that arrived: no copy).
    private var replay: [HTTPClientRequestPart] = []
    private var requestStartedAt = MonotonicInstant(nanoseconds: 0)
    /// The tunnel after a `101`, with its counters; `nil` otherwise.
    private var tunnel: Tunnel?
    /// In a tunnel: the codecs that read and write its bytes directly (``HTTP1TunnelReceiver``).
    private var clientCodec: HTTP1ServerCodec?
    private var upstreamCodec: HTTP1ClientCodec?

    private struct Tunnel {
        let startedAt: MonotonicInstant
        var bytesFromClient = 0
        var bytesToClient = 0
        /// WebSocket sessions: their frame boundaries, for the drain's close handshake.
        var webSocket: WebSocketDrainStateMachine?
        /// The drain's close handshake began (and its timeout runs).
        var drainCloseTimer: Scheduled<Void>?
    }

    /// How long the drain's close handshake may take before both connections are closed anyway.
    static let webSocketCloseTimeout: TimeAmount = .seconds(5)

    /// - Parameter adopting: the connection-table entry the protocol detector made at accept, which
    ///   this handler takes over (one registration per connection, not two). The detector always has
    ///   one once bytes arrived; without it the connection stays out of the table.
    /// - Parameter scheme: the listener's (`X-Forwarded-Proto`, an HTTP/2 upstream's `:scheme`).
    init(loop: LoopContext, adopting entry: (id: ConnectionID, peerAddress: String?)?, scheme: URIScheme) {
        self.loop = loop
        self.scheme = scheme
        self.id = entry?.id
        self.peerAddress = entry?.peerAddress
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let id = self.id { self.loop.adopt(id, connection: self, protocol: .http1) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The context holds this handler: keeping it past removal would leak both.
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.abandonUpstream()
        if self.machine.closed() { self.loop.stats.clientAborts += 1 }
        self.attempt?.finish()
        self.tunnelEnded()
        if let id = self.id { self.loop.unregister(id) }
        context.fireChannelInactive()
    }

    /// Closes the connection now (drain of an idle connection, forced close, a client that went
    /// away or broke the protocol). An exchange in progress is abandoned first: its upstream
    /// connection is closed, not left busy until the response-header timeout.
    func close() {
        self.abandonUpstream()
        self.machine.closed()
        self.attempt?.finish()
        self.context?.close(promise: nil)
    }

    /// The exchange in progress is given up: the upstream connection, in an unknown state, is closed.
    private func abandonUpstream() {
        if let upstream = self.upstream {
            self.upstream = nil
            upstream.delegate = nil
            upstream.release(reusable: false, now: .now())
            self.attempt?.end(.abandoned)
        } else if self.machine.isLeasing {
            // The connect goes on; its connection is parked when it comes (we decline it).
            self.attempt?.end(.abandoned)
        }
    }

    /// The connection table's sweep says time is up.
    /// - A request head begun and not finished (its timeout, or the drain's grace for partial heads):
    ///   408, then a lingering close, as nothing of a response has gone out.
    /// - A request body that stalled: 408 if its response has not begun, else an abort.
    /// - A tunnel idle for `tunnel-idle-timeout`: closed.
    /// - Otherwise (idle, silent since accept, the drain's idle close): closed at once, no response,
    ///   as a browser's unused pre-connection would show a 408 as an error.
    func timedOut(_ reason: ConnectionTable<MonotonicInstant>.SweepReason) {
        guard let context = self.context else { return self.close() }
        switch reason {
        case .requestHeaderTimeout, .drainPartialHead:
            switch self.machine.headTimedOut() {
            case .respond:
                let detail =
                    reason == .drainPartialHead
                    ? "request head not complete when the drain began"
                    : "request head not received within \(DurationParser.format(self.loop.table.timeouts.requestHeader))"
                self.respondWithError(.requestTimeout(detail), context: context)
            case .fail, .close:
                self.close()
            }
        case .requestBodyTimeout:
            switch self.machine.bodyTimedOut() {
            case .fail:
                let detail = "no request body bytes for \(DurationParser.format(self.loop.table.timeouts.requestBody))"
                self.failRequest(.requestTimeout(detail), context: context)
            case .respond, .close:
                self.close()
            }
        case .idleTimeout, .drainIdle, .tunnelIdleTimeout:
            self.close()
        case .drainTunnelClose:
            self.beginWebSocketClose(context: context)
        }
    }

    // MARK: Requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = self.unwrapInboundIn(data)
        self.partInThisReadBatch = true
        if self.machine.isTunnel {
            if case .body(let bytes) = part { self.tunnelFromClient(bytes) }
            return
        }
        switch self.machine.partReceived() {
        case .queue:
            // A pipelined request: it waits until the response in progress has ended.
            self.queuedParts.append(part)
        case .handle:
            self.handle(part, context: context)
        }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            self.requestHead(head, context: context)
        case .body(let buffer):
            self.requestBody(buffer, context: context)
        case .end(let trailers):
            self.requestEnd(trailers: trailers, context: context)
        }
    }

    private func requestHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard let id = self.id, self.machine.isBetweenRequests else { return }
        let now = MonotonicInstant.now()
        self.loop.table.requestStarted(id, now: now)
        // The request's duration runs from its first byte when that came in an earlier read.
        let startedAt = self.machine.headBegan ? self.requestStartedAt : now
        self.resetRequest(startedAt: startedAt)
        // One pass over the fields gives the size and the names the rules act on.
        let (present, fieldBytes) = head.headers.presentNamesAndSize()
        let isHTTP10 = head.version.major == 1 && head.version.minor == 0
        var hasBody = present.contains(.contentLength) || present.contains(.transferEncoding)

        let headerBytes = head.uri.utf8.count + 16 + fieldBytes
        let check = RequestRules.check(
            RequestRules.Head(method: head.method.rawValue, uri: head.uri, versionMajor: head.version.major, versionMinor: head.version.minor),
            headers: head.headers,
            present: present,
            headerBytes: headerBytes,
            limits: self.loop.requestLimits
        )
        let verdict: HTTP1ExchangeStateMachine.Verdict
        var routed: RouteTarget?
        var target = head.uri
        var expectsContinue = false
        var upgrade: String?
        switch check {
        case .failure(let error):
            verdict = .rejected(error)
        case .success(let accepted):
            target = accepted.rewrittenURI ?? head.uri
            expectsContinue = accepted.expectsContinue
            if accepted.contentLength == 0 { hasBody = false }
            let routing = self.loop.routing
            if let route = routing.route(host: routing.matchesHosts ? head.headers.first(name: "host") : nil, path: target) {
                routed = route
                // Only an HTTP/1.1 upstream can switch protocols; for an h2c group the pair is dropped.
                if present.contains(.upgrade), !route.group.isHTTP2 {
                    upgrade = HeaderRules.upgradeRequested(head.headers, present: present, versionMinor: head.version.minor)
                }
                verdict = .routed(
                    maxBodyBytes: route.maxBodyBytes,
                    contentLength: accepted.contentLength,
                    replayLimit: route.retryPolicy.retries > 0 ? route.retryPolicy.retryBuffer : 0
                )
            } else {
                verdict = .rejected(.noRoute(host: head.headers.first(name: "host"), path: target))
            }
        }
        let info = HTTP1ExchangeStateMachine.RequestHead(
            isHTTP10: isHTTP10, keepAlive: head.isKeepAlive, hasBody: hasBody, expectsContinue: expectsContinue, upgrade: upgrade != nil)
        if let routed { self.attempt = UpstreamAttempt(target: routed, budget: self.loop.retryBudget) }
        switch self.machine.requestHead(info, verdict: verdict) {
        case .none:
            return
        case .respond(let error):
            return self.respondWithError(error, context: context)
        case .lease(let upgrading):
            let routed = routed!
            // A body to read: its timeout runs from now (reset by each piece, ended by its end).
            if hasBody { self.loop.table.requestBodyRead(id, now: now) }
            // The received head, edited: a new `HTTPRequestHead`, or setting a field its storage box
            // holds (version, URI), would allocate; the headers are stored apart from that box.
            var upstreamHead = head
            if expectsContinue { upstreamHead.headers.remove(name: "expect") }
            let route = routed.route
            HeaderRules.rewriteRequest(
                &upstreamHead.headers, present: present, clientAddress: self.peerAddress, scheme: self.scheme,
                upstreamAuthority: route.hostRewrite ?? routed.group.fallbackHost)
            if let host = route.hostRewrite { upstreamHead.headers.replaceOrAdd(name: "host", value: host) }
            if upgrading, let upgrade {
                HeaderRules.keepUpgrade(&upstreamHead.headers, protocols: upgrade)
                self.upgradeProtocols = upgrade
                // HTTP stops behind this request until its answer says whether it is a tunnel.
                context.triggerUserOutboundEvent(HTTP1ServerCodec.AwaitUpgrade(), promise: nil)
            }
            if route.stripPrefix {
                upstreamHead.uri = routed.upstreamTarget(target)
            } else if target != head.uri {
                upstreamHead.uri = target
            }
            if head.version != .http1_1 { upstreamHead.version = .http1_1 }
            self.attempt!.hash = routed.group.hashKey(headers: upstreamHead.headers, clientAddress: self.peerAddress)
            self.upstreamHead = upstreamHead
            self.lease(context: context)
        }
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        if let id = self.id { self.loop.table.requestBodyRead(id, now: .now()) }
        switch self.machine.requestBody(bytes: buffer.readableBytes) {
        case .forward(let replay):
            self.upstream?.sendBody(buffer)
            self.needsUpstreamFlush = true
            self.keepForReplay(.body(.byteBuffer(buffer)), replay)
        case .queue:
            self.pendingParts.append(.body(.byteBuffer(buffer)))
        case .discard:
            break
        case .tooLarge(let limit):
            self.failRequest(.bodyTooLarge(limit: limit), context: context)
        }
    }

    private func requestEnd(trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        if self.machine.requestHasBody, let id = self.id { self.loop.table.requestBodyEnded(id) }
        switch self.machine.requestEnd() {
        case .send(let replay):
            self.upstream?.sendEnd(trailers: trailers)
            self.needsUpstreamFlush = true
            self.keepForReplay(.end(trailers), replay)
        case .queue:
            self.pendingParts.append(.end(trailers))
        case .completeLocalResponse:
            self.completeResponse(context: context)
        case .none:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // NIO fires this only after a read that returned bytes.
        if !self.partInThisReadBatch, self.machine.bytesWithoutPart(), let id = self.id {
            // Bytes of the next head, but no part yet: its header timeout runs, and the drain does
            // not take the connection for an idle one. (Seen here, at the end of the batch, rather
            // than by a handler ahead of the decoder: one handler less on every connection and read.)
            let now = MonotonicInstant.now()
            self.requestStartedAt = now
            self.loop.table.requestHeadBegan(id, now: now)
        }
        self.partInThisReadBatch = false
        if self.needsUpstreamFlush, let upstream = self.upstream {
            self.needsUpstreamFlush = false
            upstream.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if self.machine.readRequested(upstreamWritable: self.upstream?.isWritable ?? false) {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.upstream?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // Half-close: the client sent its last request (or, in a tunnel, its last byte).
            switch self.machine.inputClosed() {
            case .close:
                self.close()
            case .halfCloseUpstream:
                self.upstream?.sendEnd(trailers: nil)
                self.upstream?.flush()
                if self.machine.isClosed { self.close() }
            case .none:
                break
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parseError = error as? HTTP1ParseError, parseError.kind != .truncated {
            let proxyError: ProxyError =
                parseError.kind == .headTooLarge
                ? .headersTooLarge(limit: self.loop.requestLimits.maxHeaderBytes)
                : .badRequest("malformed request: \(parseError.detail)")
            switch self.machine.parseError(proxyError) {
            case nil:
                // The bad bytes follow the request in progress: its response comes first.
                return
            case .respond(let error):
                return self.respondWithError(error, context: context)
            case .fail(let error):
                // A bad chunked body (or trailer section) after a good head: the upstream exchange is
                // abandoned; the client gets the error if its response has not begun.
                return self.failRequest(error, context: context)
            case .close:
                break
            }
        }
        self.loop.logger.debug("downstream connection error", metadata: ["error": "\(error)"])
        self.close()
    }

    // MARK: Upstream leasing

    /// Leases a connection for the next attempt, on the endpoint the group's balancer picks.
    private func lease(context: ChannelHandlerContext) {
        let pool = self.attempt!.begin()
        switch pool.lease(for: self, now: .now()) {
        case .ready(let connection):
            self.startForwarding(connection, context: context)
        case .connecting:
            break
        }
    }

    private func startForwarding(_ upstream: any UpstreamExchange, context: ChannelHandlerContext) {
        guard case .startForwarding(let sendContinue, let upgrade, let keepForReplay) = self.machine.upstreamConnected() else {
            preconditionFailure("a connection handed to an exchange that declined it")
        }
        upstream.delegate = self
        self.upstream = upstream
        upstream.sendHead(self.upstreamHead, scheme: self.scheme, now: .now(), upgrade: upgrade)
        if sendContinue {
            // The client waits for this before sending its body; the upstream never sees `Expect`.
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
            context.flush()
        }
        for part in self.pendingParts {
            switch part {
            case .head: preconditionFailure("the head is sent above")
            case .body(.byteBuffer(let body)): upstream.sendBody(body)
            case .body(.fileRegion): preconditionFailure("request bodies arrive as byte buffers")
            case .end(let trailers): upstream.sendEnd(trailers: trailers)
            }
        }
        if keepForReplay, !self.pendingParts.isEmpty { self.replay.append(contentsOf: self.pendingParts) }
        self.pendingParts.removeAll(keepingCapacity: true)
        if self.partInThisReadBatch {
            // The rest of the request may be in this batch too: one flush at its end.
            self.needsUpstreamFlush = true
        } else {
            upstream.flush()
        }
        if upstream.isWritable, self.machine.releaseHeldRead() { context.read() }
    }

    /// Keeps a part sent upstream for a replay, as the machine says.
    private func keepForReplay(_ part: HTTPClientRequestPart, _ decision: HTTP1ExchangeStateMachine.Replay) {
        switch decision {
        case .keep: self.replay.append(part)
        case .drop: self.replay.removeAll()
        case .none: break
        }
    }

    /// Tries again on another endpoint: what was sent goes again, what is still to come follows.
    private func retry(context: ChannelHandlerContext) {
        self.loop.stats.retries += 1
        self.pendingParts = self.replay + self.pendingParts
        self.replay.removeAll(keepingCapacity: true)
        self.lease(context: context)
    }

    // MARK: Finishing

    private func resetRequest(startedAt: MonotonicInstant) {
        self.pendingParts.removeAll(keepingCapacity: true)
        self.responseStatus = 0
        self.attempt?.end(.abandoned)
        self.attempt?.finish()
        self.attempt = nil
        self.replay.removeAll(keepingCapacity: true)
        self.upgradeProtocols = nil
        self.requestStartedAt = startedAt
    }

    /// Marks the connection closing in the table when its response carries `Connection: close`.
    private func drainSaysClose() -> Bool {
        guard let id = self.id else { return true }
        return self.loop.table.responseShouldClose(id, now: .now())
    }

    /// Answers the request ourselves; for errors found before or instead of an upstream response.
    private func respondWithError(_ error: ProxyError, context: ChannelHandlerContext) {
        let status = error.status ?? 502
        if self.machine.isBetweenRequests, !self.machine.headBegan {
            // No request was started in an earlier read (a bad or oversized head in one read): its
            // clock starts now, or the duration would run from the previous request, or process start.
            self.requestStartedAt = .now()
        }
        self.loop.stats.recordError(error)
        if error.source == .downstream {
            self.loop.logger.info("rejected request", metadata: ["status": "\(status)", "reason": "\(error.detail)", "peer": "\(self.peerAddress ?? "?")"])
        } else {
            self.loop.logger.warning("upstream error", metadata: ["status": "\(status)", "reason": "\(error.detail)", "uri": "\(self.upstreamHead.uri)"])
        }
        let (close, completeNow) = self.machine.localResponse(for: error, drainSaysClose: self.drainSaysClose())
        if close, let id = self.id { self.loop.table.markClosing(id) }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(error.responseBody.utf8.count))
        if close { headers.add(name: "connection", value: "close") }
        self.responseStatus = status
        if self.machine.releaseHeldRead() { context.read() }
        let version: HTTPVersion = self.machine.clientIsHTTP10 ? .http1_0 : .http1_1
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: .init(statusCode: status), headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: error.responseBody)))), promise: nil)
        if completeNow {
            self.completeResponse(context: context)
        } else {
            context.flush()
        }
    }

    /// A failure while the request is in progress: answer with an error if nothing was sent yet, else abort.
    private func failRequest(_ error: ProxyError, context: ChannelHandlerContext) {
        self.abandonUpstream()
        switch self.machine.fail(error) {
        case .abort: self.abort(error)
        default: self.respondWithError(error, context: context)
        }
    }

    /// The response had begun: never present a truncated response as complete.
    private func abort(_ error: ProxyError) {
        self.loop.stats.recordError(error)
        self.loop.logger.warning("aborting downstream connection", metadata: ["reason": "\(error.detail)", "uri": "\(self.upstreamHead.uri)"])
        self.close()
    }

    /// The response is complete (with the upstream's `trailers`, sent where the response is
    /// chunked): account for the request and either wait for the next one or close.
    private func completeResponse(trailers: HTTPHeaders? = nil, context: ChannelHandlerContext) {
        let now = MonotonicInstant.now()
        self.attempt?.finish()
        self.loop.stats.recordResponse(status: self.responseStatus, duration: self.requestStartedAt.duration(to: now))
        if let id = self.id { self.loop.table.requestFinished(id, now: now) }
        switch self.machine.responseComplete() {
        case .close(let linger):
            // The client may still be sending (a request not read whole, bytes behind a bad one):
            // closing now could reset the connection before it reads the response.
            self.queuedParts.removeAll()
            let promise = context.eventLoop.makePromise(of: Void.self)
            context.writeAndFlush(self.wrapOutboundOut(.end(trailers)), promise: promise)
            promise.futureResult.assumeIsolated().whenComplete { result in
                if linger, case .success = result {
                    LingeringCloseHandler.install(on: context)
                } else {
                    context.close(promise: nil)
                }
            }
        case .keepAlive:
            context.writeAndFlush(self.wrapOutboundOut(.end(trailers)), promise: nil)
            self.processQueuedParts(context: context)
            switch self.machine.afterQueue() {
            case .close:
                self.close()
            case .resumeReading:
                if self.machine.releaseHeldRead() { context.read() }
            }
        }
    }

    /// Serves pipelined requests that waited for the previous response, in order, until one of
    /// them is read whole and waits for its own response.
    private func processQueuedParts(context: ChannelHandlerContext) {
        while self.machine.takeQueuedPart() {
            self.handle(self.queuedParts.removeFirst(), context: context)
        }
        // Everything before bad bytes is served (or, for a request they cut short, in progress).
        switch self.machine.queueServed() {
        case nil: break
        case .respond(let error): self.respondWithError(error, context: context)
        case .fail(let error): self.failRequest(error, context: context)
        case .close: self.close()
        }
    }

    // MARK: Tunnels

    /// The upstream answered the upgrade with a `101`: it goes to the client with the upgrade pair,
    /// and from now on bytes flow as they are, both ways.
    private func startTunnel(_ head: HTTPResponseHead, context: ChannelHandlerContext) {
        var head = head
        let protocols = head.headers.tokens(name: "upgrade").joined(separator: ", ")
        _ = HeaderRules.rewriteResponse(&head.headers, via: HeaderRules.via(receivedMajorVersion: head.version.major))
        HeaderRules.keepUpgrade(&head.headers, protocols: protocols.isEmpty ? (self.upgradeProtocols ?? "") : protocols)
        if head.version != .http1_1 { head.version = .http1_1 }
        self.responseStatus = 101
        let now = MonotonicInstant.now()
        let webSocket = WebSocketHandshake.namesWebSocket(protocols)
        self.tunnel = Tunnel(startedAt: now, webSocket: webSocket ? WebSocketDrainStateMachine() : nil)
        if let id = self.id {
            var rng = SystemRandomNumberGenerator()
            self.loop.table.tunnelStarted(id, kind: webSocket ? .webSocket : .other, now: now, using: &rng)
        }
        self.attempt?.end(.response(status: 101))
        self.attempt?.finish()
        self.loop.stats.recordResponse(status: 101, duration: self.requestStartedAt.duration(to: now))
        context.writeAndFlush(self.wrapOutboundOut(.head(head)), promise: nil)
        // From now on the bytes go codec to codec, not as HTTP parts through the handlers.
        if let codec = try? context.pipeline.syncOperations.handler(type: HTTP1ServerCodec.self) {
            codec.attachTunnel(self)
            self.clientCodec = codec
        }
        self.upstreamCodec = (self.upstream as? UpstreamHTTP1Handler)?.attachTunnel(self)
    }

    private func tunnelFromClient(_ bytes: ByteBuffer) {
        guard let upstream = self.upstream else { return }
        self.tunnel!.bytesFromClient += bytes.readableBytes
        if let id = self.id { self.loop.table.tunnelActivity(id, now: .now()) }
        self.needsUpstreamFlush = true
        guard self.tunnel!.webSocket != nil else { return self.sendUpstream(bytes, upstream) }
        let plan = bytes.withUnsafeReadableBytes { self.tunnel!.webSocket!.received($0, from: .clientToUpstream) }
        if plan.forward == bytes.readableBytes {
            self.sendUpstream(bytes, upstream)
        } else if plan.forward > 0 {
            self.sendUpstream(bytes.getSlice(at: bytes.readerIndex, length: plan.forward)!, upstream)
        }
        if plan.injectClose { self.sendUpstream(Self.closeFrame(masked: true), upstream) }
        self.needsUpstreamFlush = true
        self.webSocketCloseProgressed()
    }

    private func tunnelToClient(_ bytes: ByteBuffer) {
        guard let context = self.context else { return }
        self.tunnel!.bytesToClient += bytes.readableBytes
        if let id = self.id { self.loop.table.tunnelActivity(id, now: .now()) }
        guard self.tunnel!.webSocket != nil else { return self.sendToClient(bytes, context) }
        let plan = bytes.withUnsafeReadableBytes { self.tunnel!.webSocket!.received($0, from: .upstreamToClient) }
        if plan.forward == bytes.readableBytes {
            self.sendToClient(bytes, context)
        } else if plan.forward > 0 {
            self.sendToClient(bytes.getSlice(at: bytes.readerIndex, length: plan.forward)!, context)
        }
        if plan.injectClose { self.sendToClient(Self.closeFrame(masked: false), context) }
        self.webSocketCloseProgressed()
    }

    private func sendUpstream(_ bytes: ByteBuffer, _ upstream: any UpstreamExchange) {
        if let codec = self.upstreamCodec { codec.writeTunnelBytes(bytes) } else { upstream.sendBody(bytes) }
    }

    private func sendToClient(_ bytes: ByteBuffer, _ context: ChannelHandlerContext) {
        if let codec = self.clientCodec {
            codec.writeTunnelBytes(bytes)
        } else {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
        }
    }

    /// `Close 1001 "going away"`: unmasked to the client (Sluice as the server), masked to the app
    /// (as the client, RFC 6455 §5.3).
    private static func closeFrame(masked: Bool) -> ByteBuffer {
        ByteBuffer(bytes: WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: masked ? UInt32.random(in: .min ... .max) : nil))
    }

    /// The drain's moment for this WebSocket session came (spread over the first half of
    /// `drain-timeout` by the connection table): Close frames go in at the next frame boundaries.
    private func beginWebSocketClose(context: ChannelHandlerContext) {
        guard self.tunnel?.webSocket != nil, self.tunnel!.drainCloseTimer == nil else { return }
        switch self.tunnel!.webSocket!.beginClose() {
        case .closing(let injectToUpstream, let injectToClient):
            if injectToUpstream, let upstream = self.upstream {
                self.sendUpstream(Self.closeFrame(masked: true), upstream)
                upstream.flush()
            }
            if injectToClient {
                self.sendToClient(Self.closeFrame(masked: false), context)
                context.flush()
            }
        case .notInjecting:
            // Closing by itself already, or framing lost: the timeout below ends it.
            break
        }
        self.tunnel!.drainCloseTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.webSocketCloseTimeout) {
            guard self.tunnel != nil, self.machine.isTunnel else { return }
            self.loop.stats.recordTunnelDrainClose(.timedOut)
            self.close()
        }
    }

    /// Both Close replies came back: the session is over, both connections close.
    private func webSocketCloseProgressed() {
        guard self.machine.isTunnel, self.tunnel?.webSocket?.isFinished == true else { return }
        self.tunnel!.drainCloseTimer?.cancel()
        self.loop.stats.recordTunnelDrainClose(.clean)
        self.context?.flush()
        self.close()
    }

    /// The connection is gone: the tunnel's figures go to the metrics.
    private func tunnelEnded() {
        guard let tunnel = self.tunnel else { return }
        self.tunnel = nil
        tunnel.drainCloseTimer?.cancel()
        self.loop.stats.recordTunnelClosed(
            protocol: .http1, duration: tunnel.startedAt.duration(to: .now()), bytesFromClient: tunnel.bytesFromClient,
            bytesToClient: tunnel.bytesToClient)
    }
}

// MARK: - Tunnel bytes

extension DownstreamHTTP1Handler: HTTP1TunnelReceiver {
    func tunnelBytes(_ bytes: ByteBuffer, fromUpstream: Bool) {
        guard self.machine.isTunnel else { return }
        if fromUpstream { self.tunnelToClient(bytes) } else { self.tunnelFromClient(bytes) }
    }
}

// MARK: - Upstream events

extension DownstreamHTTP1Handler: UpstreamLeaseRequester {
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool {
        guard self.machine.isLeasing, let context = self.context else { return false }
        self.startForwarding(connection, context: context)
        return true
    }

    func upstreamConnectFailed(_ error: ProxyError) {
        // Leasing means routed: `attempt` is set.
        guard self.machine.isLeasing, let context = self.context else { return }
        self.attempt!.end(.failed(error))
        // Nothing reached the upstream: the policy allows a retry on another endpoint for any method.
        let method = self.upstreamHead.method.rawValue
        let bodyBytes = self.machine.bodyBytes
        switch self.machine.upstreamConnectFailed(retry: self.attempt!.shouldRetry(after: .error(error), method: method, bodyBytes: bodyBytes)) {
        case .retry: self.retry(context: context)
        case .respond: self.respondWithError(error, context: context)
        case .abort, .closeTunnel, .none: break
        }
    }
}

extension DownstreamHTTP1Handler: UpstreamResponseDelegate {
    /// Forwarded as they come (RFC 9110 §15.2), with the hop-by-hop fields removed; they do not
    /// start the response (an error after them is still a whole error response).
    func upstreamInterimResponse(_ head: HTTPResponseHead) {
        guard let context = self.context, self.machine.interimResponse(isContinue: head.status == .continue) else { return }
        var head = head
        HeaderRules.removeHopByHop(&head.headers)
        if head.version != .http1_1 { head.version = .http1_1 }
        context.writeAndFlush(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    var downstreamIsWritable: Bool { self.context?.channel.isWritable ?? false }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        guard let upstream = self.upstream, let context = self.context else { return }
        let status = Int(head.status.code)
        let method = self.upstreamHead.method.rawValue
        let bodyBytes = self.machine.bodyBytes
        let action = self.machine.responseHead(
            status: status,
            retry: self.attempt?.mayRetry(status: status) == true
                && self.attempt!.shouldRetry(after: .status(status), method: method, bodyBytes: bodyBytes),
            drainSaysClose: self.drainSaysClose()
        )
        switch action {
        case .none:
            return
        case .retry:
            // The route retries a 502/503 (`retry-on-5xx`): this response is dropped with its connection.
            self.upstream = nil
            upstream.delegate = nil
            upstream.release(reusable: false, now: .now())
            self.attempt!.end(.response(status: status))
            self.retry(context: context)
        case .startTunnel:
            self.startTunnel(head, context: context)
        case .send(let close):
            var head = head
            _ = HeaderRules.rewriteResponse(&head.headers, via: HeaderRules.via(receivedMajorVersion: head.version.major))
            if close {
                head.headers.replaceOrAdd(name: "connection", value: "close")
                if let id = self.id { self.loop.table.markClosing(id) }
            }
            let version: HTTPVersion = self.machine.clientIsHTTP10 ? .http1_0 : .http1_1
            // Only when it differs: the setter copies the head's storage box (a malloc).
            if head.version != version { head.version = version }
            self.responseStatus = status
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        }
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        if self.machine.isTunnel { return self.tunnelToClient(body) }
        guard self.machine.isForwarding else { return }
        self.context?.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
    }

    func upstreamReadComplete() {
        self.context?.flush()
    }

    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {
        guard let upstream = self.upstream, let context = self.context else { return }
        if self.machine.isTunnel {
            switch self.machine.tunnelUpstreamEnded() {
            case .halfCloseClient(thenClose: false):
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            case .halfCloseClient(thenClose: true):
                // Both sides ended: close once the client's output is shut (its last bytes written).
                let promise = context.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: promise)
                promise.futureResult.assumeIsolated().whenComplete { _ in self.close() }
            case .none:
                break
            }
            return
        }
        guard let reusable = self.machine.responseEnd() else { return }
        self.upstream = nil
        upstream.release(reusable: reusable, now: .now())
        self.attempt?.end(.response(status: self.responseStatus))
        self.completeResponse(trailers: trailers, context: context)
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        guard isWritable, let context = self.context, self.machine.releaseHeldRead() else { return }
        context.read()
    }

    func upstreamFailed(_ error: ProxyError) {
        guard let upstream = self.upstream, let context = self.context else { return }
        self.upstream = nil
        upstream.release(reusable: false, now: .now())
        if self.machine.isTunnel {
            // The upstream closed (or broke) its end of the tunnel: nothing more can flow.
            _ = self.machine.upstreamFailed(retry: false)
            return self.close()
        }
        // Forwarding means routed: `attempt` is set.
        self.attempt!.end(.failed(error))
        let method = self.upstreamHead.method.rawValue
        let bodyBytes = self.machine.bodyBytes
        // Refused, or reset before any response byte (a keep-alive connection the upstream closed as
        // the request went out): the policy may allow another endpoint.
        switch self.machine.upstreamFailed(retry: self.attempt!.shouldRetry(after: .error(error), method: method, bodyBytes: bodyBytes)) {
        case .retry: self.retry(context: context)
        case .respond: self.respondWithError(error, context: context)
        case .abort: self.abort(.upstreamFailedMidResponse(error.detail))
        case .closeTunnel: self.close()
        case .none: break
        }
    }
}
