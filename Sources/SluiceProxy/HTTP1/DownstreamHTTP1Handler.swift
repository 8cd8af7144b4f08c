import Logging
import NIOCore
import NIOHTTP1
import SluiceCore

/// One downstream HTTP/1.1 connection: forwards each request to a leased upstream connection on the
/// same event loop and streams the response back.
///
/// It sits behind ``HTTP1ServerCodec`` (no pipelining handler: NIO's holds `read()` while every
/// response is in flight, which costs two `epoll_ctl` calls per request). Pipelined requests are
/// queued here instead and answered in order; reading pauses only when the queue grows past
/// ``maxQueuedParts``. It translates; the decisions are elsewhere:
/// 1. whether a request is acceptable: ``RequestRules``; how headers change: ``HeaderRules``;
/// 2. whether a response must carry `Connection: close` because of the drain: the loop's
///    ``ConnectionTable``;
/// 3. which group serves the request: the loop's routes (``LoopRouting``); which endpoint: the
///    group's balancer (``LoopUpstreamGroup``); which connection and whether to keep it: the
///    endpoint's pool (``EndpointPool``).
///
/// Back-pressure: `read()` is held while the upstream connection cannot take more request bytes
/// (or is still connecting), and the upstream handler holds its `read()` while this connection
/// cannot take more response bytes. Nothing is buffered whole.
final class DownstreamHTTP1Handler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// No request in progress.
        case idle
        /// A request head was accepted; waiting for an upstream connection. Request parts queue in
        /// `pendingParts` and reads are held.
        case connecting
        /// The request streams to `upstream`, and its response streams back.
        case forwarding(any UpstreamExchange)
        /// Sluice answered the request itself (an error); the rest of the request body is discarded.
        case respondedLocally
        /// The connection is closing or closed.
        case closed
    }

    private let loop: LoopContext
    private var state: State = .idle
    private var context: ChannelHandlerContext?
    let id: ConnectionID?
    private let peerAddress: String?
    private var pendingRead = false
    /// Request bytes were written upstream and not flushed yet (flushed once per read batch).
    private var needsUpstreamFlush = false
    /// Parts of pipelined requests that arrived while a response was still in progress.
    private var queuedParts: [HTTPServerRequestPart] = []
    /// The codec failed on bytes behind the request in progress (a pipelined request): answered once
    /// the parts queued before it have been served.
    private var deferredError: ProxyError?
    /// Past this many queued parts, reading pauses until the queue drains.
    static let maxQueuedParts = 64
    /// The client closed its sending side: close once the response in progress is done.
    private var inputClosed = false
    /// Bytes of the next request head arrived while idle (the header timeout runs from here).
    private var headBegan = false
    /// A request part reached this handler in the current read batch: `channelReadComplete`
    /// follows, and flushes what the batch wrote upstream.
    private var partInThisReadBatch = false

    // The request in progress.
    private var upstreamHead = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
    private var pendingParts: [HTTPClientRequestPart] = []
    private var clientKeepAlive = true
    private var clientIsHTTP10 = false
    private var requestEnded = false
    private var requestHasBody = false
    private var bodyBytes = 0
    private var expectsContinue = false
    private var responseStarted = false
    private var responseStatus = 0
    private var closeAfterResponse = false
    /// The group the request was routed to, the endpoints it tried and its retry policy; `nil`
    /// until routed.
    private var attempt: UpstreamAttempt?
    /// Request parts already sent upstream, kept for a replay on a retry while the body stays
    /// within the group's `retry-buffer` (the buffers are the ones that arrived: no copy).
    private var replay: [HTTPClientRequestPart] = []
    /// Whether ``replay`` still holds every part sent (no retries configured, or a body past the
    /// buffer, make it false).
    private var keepsReplay = false
    /// The group's `retry-buffer`: the most body bytes ``replay`` keeps.
    private var replayLimit = 0
    /// The body limit of the request's route (`max-body-size`, else `--max-body-size`).
    private var maxBodyBytes: Int?
    private var requestStartedAt = MonotonicInstant(nanoseconds: 0)

    /// - Parameter adopting: the connection-table entry the protocol detector made at accept, which
    ///   this handler takes over (one registration per connection, not two). The detector always has
    ///   one once bytes arrived; without it the connection stays out of the table.
    init(loop: LoopContext, adopting entry: (id: ConnectionID, peerAddress: String?)?) {
        self.loop = loop
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
        if case .forwarding = self.state, self.responseStarted || self.requestHasBody {
            self.loop.stats.clientAborts += 1
        }
        self.abandonUpstream()
        self.attempt?.finish()
        self.state = .closed
        if let id = self.id { self.loop.unregister(id) }
        context.fireChannelInactive()
    }

    /// Closes the connection now (drain of an idle connection, forced close, a client that went
    /// away or broke the protocol). An exchange in progress is abandoned first: its upstream
    /// connection is closed, not left busy until the response-header timeout.
    func close() {
        self.abandonUpstream()
        self.attempt?.finish()
        self.state = .closed
        self.context?.close(promise: nil)
    }

    /// The exchange in progress is given up: the upstream connection, in an unknown state, is closed.
    private func abandonUpstream() {
        switch self.state {
        case .forwarding(let upstream):
            upstream.delegate = nil
            upstream.release(reusable: false, now: .now())
            self.attempt?.end(.abandoned)
        case .connecting:
            // The connect goes on; its connection is parked when it comes (we decline it).
            self.attempt?.end(.abandoned)
        case .idle, .respondedLocally, .closed:
            break
        }
    }

    /// The connection table's sweep says time is up.
    /// - A request head begun and not finished (its timeout, or the drain's grace for partial heads):
    ///   408, then a lingering close, as nothing of a response has gone out.
    /// - A request body that stalled: 408 if its response has not begun, else an abort.
    /// - Otherwise (idle, silent since accept, the drain's idle close): closed at once, no response,
    ///   as a browser's unused pre-connection would show a 408 as an error.
    func timedOut(_ reason: ConnectionTable<MonotonicInstant>.SweepReason) {
        guard let context = self.context else { return self.close() }
        switch reason {
        case .requestHeaderTimeout, .drainPartialHead:
            guard self.headBegan, case .idle = self.state, self.queuedParts.isEmpty else { return self.close() }
            let detail =
                reason == .drainPartialHead
                ? "request head not complete when the drain began"
                : "request head not received within \(DurationParser.format(self.loop.table.timeouts.requestHeader))"
            self.requestEnded = false
            self.respondWithError(.requestTimeout(detail), context: context)
        case .requestBodyTimeout:
            switch self.state {
            case .connecting, .forwarding:
                let detail = "no request body bytes for \(DurationParser.format(self.loop.table.timeouts.requestBody))"
                self.failRequest(.requestTimeout(detail), context: context)
            case .idle, .respondedLocally, .closed:
                self.close()
            }
        case .idleTimeout, .drainIdle, .tunnelIdleTimeout, .drainTunnelClose:
            self.close()
        }
    }

    /// A read batch brought bytes but no request part while idle: the next request head is on
    /// its way, so the header timeout runs and the drain does not take the connection for an idle one.
    /// (Seen here, at the end of the batch, rather than by a handler ahead of the decoder: one
    /// handler less on every connection and every read.)
    private func bytesArrivedWithoutPart() {
        guard !self.headBegan, case .idle = self.state, let id = self.id else { return }
        let now = MonotonicInstant.now()
        self.headBegan = true
        self.requestStartedAt = now
        self.loop.table.requestHeadBegan(id, now: now)
    }

    // MARK: Requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = self.unwrapInboundIn(data)
        self.partInThisReadBatch = true
        if !self.queuedParts.isEmpty || self.awaitsResponseEnd {
            // A pipelined request: it waits until the response in progress has ended.
            self.queuedParts.append(part)
            return
        }
        self.handle(part, context: context)
    }

    /// The current request has been read whole and its response is not done yet.
    private var awaitsResponseEnd: Bool {
        switch self.state {
        case .idle, .closed: false
        case .connecting, .forwarding, .respondedLocally: self.requestEnded
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
        guard case .idle = self.state, let id = self.id else { return }
        let now = MonotonicInstant.now()
        self.loop.table.requestStarted(id, now: now)
        // The request's duration runs from its first byte when that came in an earlier read.
        self.resetRequest(startedAt: self.headBegan ? self.requestStartedAt : now)
        self.clientIsHTTP10 = head.version.major == 1 && head.version.minor == 0
        self.clientKeepAlive = !self.clientIsHTTP10 && head.isKeepAlive
        // One pass over the fields gives the size and the names the rules act on.
        let (present, fieldBytes) = head.headers.presentNamesAndSize()
        self.requestHasBody = present.contains(.contentLength) || present.contains(.transferEncoding)

        let headerBytes = head.uri.utf8.count + 16 + fieldBytes
        let check = RequestRules.check(
            RequestRules.Head(method: head.method.rawValue, uri: head.uri, versionMajor: head.version.major, versionMinor: head.version.minor),
            headers: head.headers,
            present: present,
            headerBytes: headerBytes,
            limits: self.loop.requestLimits
        )
        let accepted: RequestRules.Accepted
        switch check {
        case .success(let value): accepted = value
        case .failure(let error): return self.respondWithError(error, context: context)
        }
        let target = accepted.rewrittenURI ?? head.uri
        let routing = self.loop.routing
        guard let routed = routing.route(host: routing.matchesHosts ? head.headers.first(name: "host") : nil, path: target) else {
            return self.respondWithError(.noRoute(host: head.headers.first(name: "host"), path: target), context: context)
        }
        self.attempt = UpstreamAttempt(target: routed, budget: self.loop.retryBudget)
        self.keepsReplay = routed.retryPolicy.retries > 0
        self.replayLimit = routed.retryPolicy.retryBuffer
        self.maxBodyBytes = routed.maxBodyBytes
        if let length = accepted.contentLength, let max = routed.maxBodyBytes, length > max {
            return self.respondWithError(.bodyTooLarge(limit: max), context: context)
        }
        if accepted.contentLength == 0 { self.requestHasBody = false }
        // A body to read: its timeout runs from now (reset by each piece, ended by its end).
        if self.requestHasBody { self.loop.table.requestBodyRead(id, now: now) }

        // The received head, edited: a new `HTTPRequestHead`, or setting a field its storage box
        // holds (version, URI), would allocate; the headers are stored apart from that box.
        var upstreamHead = head
        if accepted.expectsContinue { upstreamHead.headers.remove(name: "expect") }
        let route = routed.route
        HeaderRules.rewriteRequest(
            &upstreamHead.headers, present: present, clientAddress: self.peerAddress, upstreamAuthority: route.hostRewrite ?? routed.group.fallbackHost)
        if let host = route.hostRewrite { upstreamHead.headers.replaceOrAdd(name: "host", value: host) }
        if route.stripPrefix {
            upstreamHead.uri = routed.upstreamTarget(target)
        } else if let uri = accepted.rewrittenURI {
            upstreamHead.uri = uri
        }
        if head.version != .http1_1 { upstreamHead.version = .http1_1 }
        self.attempt!.hash = routed.group.hashKey(headers: upstreamHead.headers, clientAddress: self.peerAddress)
        self.upstreamHead = upstreamHead
        self.expectsContinue = accepted.expectsContinue
        self.lease(context: context)
    }

    private func requestBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        self.bodyBytes += buffer.readableBytes
        if let id = self.id { self.loop.table.requestBodyRead(id, now: .now()) }
        if let max = self.maxBodyBytes, self.bodyBytes > max {
            switch self.state {
            case .respondedLocally, .closed: return
            case .idle, .connecting, .forwarding: return self.failRequest(.bodyTooLarge(limit: max), context: context)
            }
        }
        switch self.state {
        case .forwarding(let upstream):
            upstream.sendBody(buffer)
            self.needsUpstreamFlush = true
            self.keepForReplay(.body(.byteBuffer(buffer)))
        case .connecting:
            self.pendingParts.append(.body(.byteBuffer(buffer)))
        case .idle, .respondedLocally, .closed:
            break
        }
    }

    private func requestEnd(trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        self.requestEnded = true
        if self.requestHasBody, let id = self.id { self.loop.table.requestBodyEnded(id) }
        switch self.state {
        case .forwarding(let upstream):
            upstream.sendEnd(trailers: trailers)
            self.needsUpstreamFlush = true
            self.keepForReplay(.end(trailers))
        case .connecting:
            self.pendingParts.append(.end(trailers))
        case .respondedLocally:
            if !self.closeAfterResponse { self.finishRequest(context: context) }
        case .idle, .closed:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // NIO fires this only after a read that returned bytes.
        if !self.partInThisReadBatch { self.bytesArrivedWithoutPart() }
        self.partInThisReadBatch = false
        if self.needsUpstreamFlush, case .forwarding(let upstream) = self.state {
            self.needsUpstreamFlush = false
            upstream.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if self.queuedParts.count >= Self.maxQueuedParts {
            self.pendingRead = true
            return
        }
        switch self.state {
        case .connecting:
            self.pendingRead = true
        case .forwarding(let upstream) where !upstream.isWritable:
            self.pendingRead = true
        case .idle, .forwarding, .respondedLocally, .closed:
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, case .forwarding(let upstream) = self.state {
            upstream.resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // Half-close: the client sent its last request. Answer what was asked, then close.
            self.inputClosed = true
            if case .idle = self.state, self.queuedParts.isEmpty { self.close() }
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
            if !self.queuedParts.isEmpty || self.awaitsResponseEnd {
                // The bad bytes follow the request in progress: its response comes first.
                self.deferredError = proxyError
                return
            }
            switch self.state {
            case .idle:
                self.requestEnded = false
                return self.respondWithError(proxyError, context: context)
            case .connecting, .forwarding:
                // A bad chunked body (or trailer section) after a good head: the upstream exchange is
                // abandoned; the client gets the error if its response has not begun.
                return self.failRequest(proxyError, context: context)
            case .respondedLocally, .closed:
                break
            }
        }
        self.loop.logger.debug("downstream connection error", metadata: ["error": "\(error)"])
        self.close()
    }

    // MARK: Upstream leasing

    /// Leases a connection for the next attempt, on the endpoint the group's balancer picks.
    private func lease(context: ChannelHandlerContext) {
        // Set first: a connect that fails at once reports back before `lease` returns.
        self.state = .connecting
        let pool = self.attempt!.begin()
        switch pool.lease(for: self, now: .now()) {
        case .ready(let connection):
            self.startForwarding(connection, context: context)
        case .connecting:
            break
        }
    }

    private func startForwarding(_ upstream: any UpstreamExchange, context: ChannelHandlerContext) {
        upstream.delegate = self
        self.state = .forwarding(upstream)
        upstream.sendHead(self.upstreamHead, now: .now())
        if self.expectsContinue && !self.requestEnded {
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
        if self.keepsReplay { for part in self.pendingParts { self.replay.append(part) } }
        self.pendingParts.removeAll(keepingCapacity: true)
        if self.partInThisReadBatch {
            // The rest of the request may be in this batch too: one flush at its end.
            self.needsUpstreamFlush = true
        } else {
            upstream.flush()
        }
        if self.pendingRead, upstream.isWritable {
            self.pendingRead = false
            context.read()
        }
    }

    /// Keeps a part sent upstream for a replay, while the body fits the group's `retry-buffer`.
    private func keepForReplay(_ part: HTTPClientRequestPart) {
        guard self.keepsReplay else { return }
        if self.bodyBytes <= self.replayLimit {
            self.replay.append(part)
        } else {
            self.keepsReplay = false
            self.replay.removeAll()
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
        self.requestEnded = false
        self.requestHasBody = false
        self.bodyBytes = 0
        self.expectsContinue = false
        self.responseStarted = false
        self.responseStatus = 0
        self.closeAfterResponse = false
        self.attempt?.end(.abandoned)
        self.attempt?.finish()
        self.attempt = nil
        self.replay.removeAll(keepingCapacity: true)
        self.keepsReplay = false
        self.maxBodyBytes = nil
        self.requestStartedAt = startedAt
        self.headBegan = false
    }

    /// Decides `Connection: close` for the response about to start.
    private func decideClose(now: MonotonicInstant) -> Bool {
        guard let id = self.id else { return true }
        let close = !self.clientKeepAlive || !self.requestEnded || self.loop.table.responseShouldClose(id, now: now)
        if close {
            self.closeAfterResponse = true
            self.loop.table.markClosing(id)
        }
        return close
    }

    /// Answers the request ourselves; for errors found before or instead of an upstream response.
    private func respondWithError(_ error: ProxyError, context: ChannelHandlerContext) {
        let status = error.status ?? 502
        if case .idle = self.state, !self.headBegan {
            // No request was started (a bad or oversized head in one read): its clock starts now,
            // or the duration recorded would run from the previous request, or from process start.
            self.requestStartedAt = .now()
        }
        self.loop.stats.recordError(error)
        if error.source == .downstream {
            self.loop.logger.info("rejected request", metadata: ["status": "\(status)", "reason": "\(error.detail)", "peer": "\(self.peerAddress ?? "?")"])
        } else {
            self.loop.logger.warning("upstream error", metadata: ["status": "\(status)", "reason": "\(error.detail)", "uri": "\(self.upstreamHead.uri)"])
        }
        let now = MonotonicInstant.now()
        if error.closesConnection {
            self.closeAfterResponse = true
            if let id = self.id { self.loop.table.markClosing(id) }
        }
        let close = self.decideClose(now: now)
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "content-length", value: String(error.responseBody.utf8.count))
        if close { headers.add(name: "connection", value: "close") }
        self.responseStarted = true
        self.responseStatus = status
        self.state = .respondedLocally
        self.releaseHeldRead(context: context)
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: self.clientIsHTTP10 ? .http1_0 : .http1_1, status: .init(statusCode: status), headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: error.responseBody)))), promise: nil)
        if close || self.requestEnded {
            self.finishRequest(context: context)
        } else {
            context.flush()
        }
    }

    /// A failure while the request is in progress: answer with an error if nothing was sent yet, else abort.
    private func failRequest(_ error: ProxyError, context: ChannelHandlerContext) {
        self.abandonUpstream()
        if self.responseStarted {
            self.abort(error)
        } else {
            self.respondWithError(error, context: context)
        }
    }

    /// The response had begun: never present a truncated response as complete.
    private func abort(_ error: ProxyError) {
        self.loop.stats.recordError(error)
        self.loop.logger.warning("aborting downstream connection", metadata: ["reason": "\(error.detail)", "uri": "\(self.upstreamHead.uri)"])
        self.close()
    }

    /// The response's end is written: account for the request and either wait for the next one or close.
    /// The response is complete (with the upstream's `trailers`, sent where the response is chunked).
    private func finishRequest(trailers: HTTPHeaders? = nil, context: ChannelHandlerContext) {
        let now = MonotonicInstant.now()
        self.attempt?.finish()
        self.loop.stats.recordResponse(status: self.responseStatus, duration: self.requestStartedAt.duration(to: now))
        if let id = self.id { self.loop.table.requestFinished(id, now: now) }
        if self.closeAfterResponse {
            // The client may still be sending (a request not read whole, bytes behind a bad one):
            // closing now could reset the connection before it reads the response.
            let linger = !self.requestEnded && !self.inputClosed
            self.state = .closed
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
        } else {
            self.state = .idle
            self.headBegan = false
            context.writeAndFlush(self.wrapOutboundOut(.end(trailers)), promise: nil)
            self.processQueuedParts(context: context)
            if case .idle = self.state, self.queuedParts.isEmpty, self.inputClosed {
                self.close()
                return
            }
            self.releaseHeldRead(context: context)
        }
    }

    /// Serves pipelined requests that waited for the previous response, in order, until one of
    /// them is read whole and waits for its own response.
    private func processQueuedParts(context: ChannelHandlerContext) {
        while !self.queuedParts.isEmpty, !self.awaitsResponseEnd {
            if case .closed = self.state { return }
            let part = self.queuedParts.removeFirst()
            self.handle(part, context: context)
        }
        guard let error = self.deferredError, self.queuedParts.isEmpty, !self.awaitsResponseEnd else { return }
        // Everything before the bad bytes is served (or, for a request they cut short, in progress).
        self.deferredError = nil
        switch self.state {
        case .idle:
            self.requestEnded = false
            self.respondWithError(error, context: context)
        case .connecting, .forwarding:
            self.failRequest(error, context: context)
        case .respondedLocally, .closed:
            self.close()
        }
    }

    /// A `read()` held while waiting for the upstream must go out once nothing waits any more, or
    /// the connection would stop reading for good.
    private func releaseHeldRead(context: ChannelHandlerContext) {
        guard self.pendingRead, self.queuedParts.count < Self.maxQueuedParts else { return }
        self.pendingRead = false
        context.read()
    }
}

// MARK: - Upstream events

extension DownstreamHTTP1Handler: UpstreamLeaseRequester {
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool {
        guard case .connecting = self.state, let context = self.context else { return false }
        self.startForwarding(connection, context: context)
        return true
    }

    func upstreamConnectFailed(_ error: ProxyError) {
        // Connecting means routed: `attempt` is set.
        guard case .connecting = self.state, let context = self.context else { return }
        self.attempt!.end(.failed(error))
        // Nothing reached the upstream: the policy allows a retry on another endpoint for any method.
        if self.attempt!.shouldRetry(after: .error(error), method: self.upstreamHead.method.rawValue, bodyBytes: self.bodyBytes) {
            self.retry(context: context)
        } else {
            self.respondWithError(error, context: context)
        }
    }
}

extension DownstreamHTTP1Handler: UpstreamResponseDelegate {
    /// Forwarded as they come (RFC 9110 §15.2), with the hop-by-hop fields removed; they do not
    /// start the response (an error after them is still a whole error response). Not to an HTTP/1.0
    /// client, which does not know them, and never a `100`: Sluice answers `Expect` itself and does
    /// not forward it, so the upstream's `100` answers nothing the client asked.
    func upstreamInterimResponse(_ head: HTTPResponseHead) {
        guard case .forwarding = self.state, let context = self.context else { return }
        guard !self.clientIsHTTP10, head.status != .continue else { return }
        var head = head
        HeaderRules.removeHopByHop(&head.headers)
        if head.version != .http1_1 { head.version = .http1_1 }
        context.writeAndFlush(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    var downstreamIsWritable: Bool { self.context?.channel.isWritable ?? false }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        guard case .forwarding(let upstream) = self.state, let context = self.context else { return }
        let status = Int(head.status.code)
        if self.attempt?.mayRetry(status: status) == true,
            self.attempt!.shouldRetry(after: .status(status), method: self.upstreamHead.method.rawValue, bodyBytes: self.bodyBytes)
        {
            // The route retries a 502/503 (`retry-on-5xx`): this response is dropped with its connection.
            upstream.delegate = nil
            upstream.release(reusable: false, now: .now())
            self.attempt!.end(.response(status: status))
            return self.retry(context: context)
        }
        var head = head
        _ = HeaderRules.rewriteResponse(&head.headers, via: HeaderRules.via(receivedMajorVersion: head.version.major))
        if self.decideClose(now: .now()) { head.headers.replaceOrAdd(name: "connection", value: "close") }
        let version: HTTPVersion = self.clientIsHTTP10 ? .http1_0 : .http1_1
        // Only when it differs: the setter copies the head's storage box (a malloc).
        if head.version != version { head.version = version }
        self.responseStarted = true
        self.responseStatus = Int(head.status.code)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        guard case .forwarding = self.state else { return }
        self.context?.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
    }

    func upstreamReadComplete() {
        self.context?.flush()
    }

    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {
        guard case .forwarding(let upstream) = self.state, let context = self.context else { return }
        upstream.release(reusable: self.requestEnded, now: .now())
        self.attempt?.end(.response(status: self.responseStatus))
        if !self.requestEnded {
            // The upstream answered before the request body ended; the rest of it is discarded.
            self.closeAfterResponse = true
        }
        self.finishRequest(trailers: trailers, context: context)
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        guard isWritable, self.pendingRead, let context = self.context else { return }
        self.pendingRead = false
        context.read()
    }

    func upstreamFailed(_ error: ProxyError) {
        // Forwarding means routed: `attempt` is set.
        guard case .forwarding(let upstream) = self.state, let context = self.context else { return }
        upstream.release(reusable: false, now: .now())
        self.attempt!.end(.failed(error))
        if self.responseStarted {
            return self.abort(.upstreamFailedMidResponse(error.detail))
        }
        if self.attempt!.shouldRetry(after: .error(error), method: self.upstreamHead.method.rawValue, bodyBytes: self.bodyBytes) {
            // Refused, or reset before any response byte (a keep-alive connection the upstream
            // closed as the request went out): the policy allows another endpoint.
            return self.retry(context: context)
        }
        self.respondWithError(error, context: context)
    }
}
