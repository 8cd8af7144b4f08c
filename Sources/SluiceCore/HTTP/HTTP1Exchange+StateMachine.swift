/// The exchanges of one downstream HTTP/1 connection: pure, it decides; `DownstreamHTTP1Handler`
/// (SluiceProxy) carries the actions out, holds the bytes and asks the policies it names. The
/// handler does `let action = machine.event(…); run(action)`.
///
/// ```
///            head (accepted, routed)             upstreamConnected
///   idle ─────────────────────────────► leasing ───────────────────► forwarding ──101──► tunnel
///    ▲ │ head (rejected)                 │ ▲ retry                    │ │ ▲  retry          │
///    │ └────────────► respondedLocally ◄─┘ └────────────────────────────┘ │ └──(before the   │
///    │                     │         connect failed / error before       │     response)    │
///    │                     │         any response byte                   │                  │
///    └─────────────────────┴──── response complete, keep-alive ──────────┘                  │
///                          any state ──close / abort / response complete with close──► closed ◄┘
/// ```
///
/// What it decides, each in one place:
/// - **pipelining**: a request part that arrives while a response is still owed waits in the
///   handler's queue (``partReceived()``), served in order once that response is complete
///   (``takeQueuedPart()``); past ``maxQueuedParts`` reading pauses. Bytes that break the protocol
///   behind a request in progress are answered after it (``parseError(_:)``).
/// - **error versus abort**: a failure before any response byte went out is answered with its
///   status; after, the downstream connection is aborted, never a truncated response presented as
///   whole (``fail(_:)``).
/// - **retries**: whether one is *allowed* is the retry policy's (`RetryPolicy`, shared with
///   HTTP/2), asked only where the machine says a retry is possible (no response byte sent).
/// - **close after the response**: the client's keep-alive, an unread request body, an error that
///   closes, or the drain's mark (the connection table's, passed in when a response starts).
/// - **upgrades**: an upgrade request goes upstream with its upgrade pair; a `101` turns the
///   connection into a tunnel, any other status is an ordinary response.
public struct HTTP1ExchangeStateMachine: Sendable {
    private enum State: Equatable, Sendable {
        /// No request in progress. Valid transitions: `.leasing`, `.respondedLocally`, `.closed`.
        case idle
        /// Routed; waiting for an upstream connection (request parts queue in the handler).
        /// Valid transitions: `.forwarding`, `.respondedLocally`, `.closed`.
        case leasing
        /// The request streams upstream, the response streams back.
        /// Valid transitions: `.leasing` (retry), `.tunnel`, `.respondedLocally`, `.idle`, `.closed`.
        case forwarding
        /// Sluice answered the request itself; the rest of the request body is discarded.
        /// Valid transitions: `.idle`, `.closed`.
        case respondedLocally
        /// A `101` switched both connections to an opaque byte tunnel. Valid transitions: `.closed`.
        case tunnel
        /// The connection is closing or closed. Terminal.
        case closed
    }

    /// What the handler learned from a request head before routing it.
    public struct RequestHead: Sendable, Equatable {
        public var isHTTP10: Bool
        public var keepAlive: Bool
        /// The head announces a body (`Content-Length` above 0, or `Transfer-Encoding`).
        public var hasBody: Bool
        public var expectsContinue: Bool
        /// The request asks to switch protocols (`Connection: upgrade` with `Upgrade`) and its group
        /// can carry it (HTTP/1.1).
        public var upgrade: Bool

        public init(isHTTP10: Bool, keepAlive: Bool, hasBody: Bool, expectsContinue: Bool, upgrade: Bool) {
            self.isHTTP10 = isHTTP10
            self.keepAlive = keepAlive
            self.hasBody = hasBody
            self.expectsContinue = expectsContinue
            self.upgrade = upgrade
        }
    }

    /// The request rules' and the router's verdict on a head.
    public enum Verdict: Sendable, Equatable {
        case rejected(ProxyError)
        /// Routed: the route's body limit, the announced length, and the group's retry buffer
        /// (0 when the group makes no retries: nothing is kept for a replay).
        case routed(maxBodyBytes: Int?, contentLength: Int?, replayLimit: Int)
    }

    public enum PartAction: Equatable, Sendable {
        case handle
        /// A response is still owed: the part waits in the queue.
        case queue
    }

    public enum HeadAction: Equatable, Sendable {
        /// Lease an upstream connection; `upgrade`: send the head with its upgrade pair.
        case lease(upgrade: Bool)
        /// Answer it locally (``localResponse(for:drainSaysClose:)``).
        case respond(ProxyError)
        /// Not a state in which a head is taken (one already in progress): ignore.
        case none
    }

    /// Where a replay buffer stands for a part sent upstream.
    public enum Replay: Equatable, Sendable {
        /// Nothing is kept (no retries, or the body outgrew the buffer).
        case none
        /// Keep the part for a replay.
        case keep
        /// The body outgrew the buffer: drop what was kept.
        case drop
    }

    public enum BodyAction: Equatable, Sendable {
        case forward(Replay)
        /// Hold it until the upstream connection is ready.
        case queue
        case discard
        /// The body is over the route's limit (``fail(_:)`` with `bodyTooLarge`).
        case tooLarge(limit: Int)
    }

    public enum EndAction: Equatable, Sendable {
        case send(Replay)
        case queue
        /// A local response waited for the request's end: complete it now.
        case completeLocalResponse
        case none
    }

    public enum ConnectedAction: Equatable, Sendable {
        /// Send the head (with the upgrade pair when `upgrade`) and what queued; `sendContinue`:
        /// answer `100 Continue` first; `keepQueuedForReplay`: the queued parts go to the replay buffer.
        case startForwarding(sendContinue: Bool, upgrade: Bool, keepQueuedForReplay: Bool)
        /// The exchange no longer wants a connection: the pool parks it.
        case decline
    }

    public enum RetryOrFail: Equatable, Sendable {
        /// Lease again, on another endpoint, and send what was kept.
        case retry
        /// Answer with the error's status (no response byte went out).
        case respond
        /// The response had begun: abort the connection.
        case abort
        /// A tunnel's upstream failed: close the downstream connection.
        case closeTunnel
        case none
    }

    public enum ResponseHeadAction: Equatable, Sendable {
        /// Send the head; `close`: with `Connection: close` (mark the connection closing).
        case send(close: Bool)
        /// The route retries this 502/503: drop the response with its connection and lease again.
        case retry
        /// A `101` to the upgrade: send it with the upgrade pair, then tunnel.
        case startTunnel
        case none
    }

    public enum Completion: Equatable, Sendable {
        /// Close once the response's end is written; `linger`: the client may still be sending,
        /// drain its bytes for a while first so it reads the response rather than a reset.
        case close(linger: Bool)
        /// Wait for the next request: serve the queue first.
        case keepAlive
    }

    public enum AfterQueueAction: Equatable, Sendable {
        /// The queue is served, nothing is owed, and the client half-closed: close.
        case close
        /// Release a held read, if any.
        case resumeReading
    }

    public enum DeferredAction: Equatable, Sendable {
        case respond(ProxyError)
        case fail(ProxyError)
        case close
    }

    public enum TimeoutAction: Equatable, Sendable {
        /// 408, as nothing of a response went out.
        case respond
        /// Fail the request in progress (408, or an abort once its response began).
        case fail
        case close
    }

    public enum InputClosedAction: Equatable, Sendable {
        case close
        /// A tunnel: pass the half-close to the upstream.
        case halfCloseUpstream
        case none
    }

    public enum TunnelEndAction: Equatable, Sendable {
        /// Pass the upstream's half-close to the client (its output ends); `thenClose`: the client's
        /// side had ended already, so nothing more can flow.
        case halfCloseClient(thenClose: Bool)
        case none
    }

    /// Past this many queued parts, reading pauses until the queue drains.
    public static let maxQueuedParts = 64

    private var state: State = .idle
    /// Parts of pipelined requests waiting in the handler's queue.
    public private(set) var queuedParts = 0
    /// Bytes behind the request in progress broke the protocol: answered once it is served.
    private var deferredError: ProxyError?
    /// The client half-closed: close once the response in progress is done.
    public private(set) var hasInputClosed = false
    /// The upstream half-closed a tunnel.
    private var upstreamOutputEnded = false
    /// A `read()` is held.
    private var readHeld = false
    /// Bytes of the next request head arrived while idle (its header timeout runs).
    public private(set) var headBegan = false

    // The request in progress.
    public private(set) var requestEnded = false
    /// The request has a body to read (its body timeout runs).
    public private(set) var requestHasBody = false
    public private(set) var bodyBytes = 0
    private var maxBodyBytes: Int?
    private var expectsContinue = false
    public private(set) var responseStarted = false
    private var closeAfterResponse = false
    private var clientKeepAlive = true
    public private(set) var clientIsHTTP10 = false
    private var upgrade = false
    /// A retry was made: `100 Continue` went out already (or the body is on its way).
    private var retried = false
    private var replayLimit = 0
    private var keepsReplay = false

    public init() {}

    // MARK: Queries

    /// A request was read whole and its response is not complete yet: parts that arrive now are pipelined.
    public var awaitsResponseEnd: Bool {
        switch self.state {
        case .idle, .closed, .tunnel: false
        case .leasing, .forwarding, .respondedLocally: self.requestEnded
        }
    }

    /// No request in progress (queued parts may wait): a head may be taken.
    public var isBetweenRequests: Bool { self.state == .idle }
    public var isForwarding: Bool { self.state == .forwarding }
    public var isLeasing: Bool { self.state == .leasing }
    public var isTunnel: Bool { self.state == .tunnel }
    public var isClosed: Bool { self.state == .closed }
    /// Idle between requests with nothing queued: the client could be closed without losing anything.
    public var isIdle: Bool { self.state == .idle && self.queuedParts == 0 }

    // MARK: Requests in

    /// A request part arrived.
    public mutating func partReceived() -> PartAction {
        if self.queuedParts > 0 || self.awaitsResponseEnd {
            self.queuedParts += 1
            return .queue
        }
        return .handle
    }

    /// Whether the handler should take the next queued part now (and handle it).
    public mutating func takeQueuedPart() -> Bool {
        guard self.queuedParts > 0, !self.awaitsResponseEnd, self.state != .closed else { return false }
        self.queuedParts -= 1
        return true
    }

    /// The queue was served as far as it goes: an error deferred behind it, if any, is answered now.
    public mutating func queueServed() -> DeferredAction? {
        guard let error = self.deferredError, self.queuedParts == 0, !self.awaitsResponseEnd else { return nil }
        self.deferredError = nil
        switch self.state {
        case .idle:
            self.requestEnded = false
            return .respond(error)
        case .leasing, .forwarding:
            return .fail(error)
        case .respondedLocally, .closed, .tunnel:
            return .close
        }
    }

    /// A read brought bytes but no request part while idle: returns whether the next head has now
    /// begun (its header timeout starts).
    public mutating func bytesWithoutPart() -> Bool {
        guard !self.headBegan, self.state == .idle else { return false }
        self.headBegan = true
        return true
    }

    /// A request head. `head` is what the handler read of it, `verdict` the rules' and router's.
    public mutating func requestHead(_ head: RequestHead, verdict: Verdict) -> HeadAction {
        guard self.state == .idle else { return .none }
        self.resetRequest()
        self.clientIsHTTP10 = head.isHTTP10
        self.clientKeepAlive = !head.isHTTP10 && head.keepAlive
        self.requestHasBody = head.hasBody
        switch verdict {
        case .rejected(let error):
            return .respond(error)
        case .routed(let maxBodyBytes, let contentLength, let replayLimit):
            self.maxBodyBytes = maxBodyBytes
            self.replayLimit = replayLimit
            self.keepsReplay = replayLimit > 0
            if let contentLength, let maxBodyBytes, contentLength > maxBodyBytes {
                return .respond(.bodyTooLarge(limit: maxBodyBytes))
            }
            if head.upgrade && head.hasBody {
                // RFC 9110 §7.8: the switch happens after the request; a body would be read as what?
                return .respond(.badRequest("an upgrade request must not carry a body"))
            }
            self.expectsContinue = head.expectsContinue
            self.upgrade = head.upgrade
            self.state = .leasing
            return .lease(upgrade: head.upgrade)
        }
    }

    public mutating func requestBody(bytes: Int) -> BodyAction {
        self.bodyBytes += bytes
        if let limit = self.maxBodyBytes, self.bodyBytes > limit {
            switch self.state {
            case .respondedLocally, .closed, .tunnel: return .discard
            case .idle, .leasing, .forwarding: return .tooLarge(limit: limit)
            }
        }
        switch self.state {
        case .forwarding: return .forward(self.replayDecision())
        case .leasing: return .queue
        case .idle, .respondedLocally, .closed, .tunnel: return .discard
        }
    }

    public mutating func requestEnd() -> EndAction {
        self.requestEnded = true
        switch self.state {
        case .forwarding: return .send(self.keepsReplay ? .keep : .none)
        case .leasing: return .queue
        case .respondedLocally: return self.closeAfterResponse ? .none : .completeLocalResponse
        case .idle, .closed, .tunnel: return .none
        }
    }

    /// A part sent upstream: kept for a replay while the body fits the group's `retry-buffer`.
    private mutating func replayDecision() -> Replay {
        guard self.keepsReplay else { return .none }
        if self.bodyBytes <= self.replayLimit { return .keep }
        self.keepsReplay = false
        return .drop
    }

    // MARK: Upstream

    public mutating func upstreamConnected() -> ConnectedAction {
        guard self.state == .leasing else { return .decline }
        self.state = .forwarding
        return .startForwarding(
            sendContinue: self.expectsContinue && !self.requestEnded && !self.retried,
            upgrade: self.upgrade,
            keepQueuedForReplay: self.keepsReplay
        )
    }

    /// The connect failed. `retry` is the retry policy's answer, asked only when a retry is possible.
    public mutating func upstreamConnectFailed(retry: @autoclosure () -> Bool) -> RetryOrFail {
        guard self.state == .leasing else { return .none }
        if retry() {
            self.retried = true
            return .retry
        }
        return .respond
    }

    /// An interim (1xx) head: forwarded unless the client is HTTP/1.0 (it does not know them) or it
    /// is a `100` (Sluice answers `Expect` itself, so the upstream's answers nothing the client asked).
    public func interimResponse(isContinue: Bool) -> Bool {
        self.state == .forwarding && !self.clientIsHTTP10 && !isContinue
    }

    /// The final response head. `retry`: the route retries this status and the policy allows it
    /// (asked only for a 502/503 the route retries, before anything went out); `drainSaysClose`:
    /// the connection table's drain mark.
    public mutating func responseHead(
        status: Int,
        retry: @autoclosure () -> Bool,
        drainSaysClose: @autoclosure () -> Bool
    ) -> ResponseHeadAction {
        guard self.state == .forwarding else { return .none }
        if status == 101 {
            // The codec passes a 101 only to an upgrade request.
            guard self.upgrade else { return .none }
            self.state = .tunnel
            self.responseStarted = true
            return .startTunnel
        }
        if retry() {
            self.retried = true
            self.state = .leasing
            return .retry
        }
        self.responseStarted = true
        return .send(close: self.decideClose(drainSaysClose: drainSaysClose()))
    }

    /// The response ended: returns whether the upstream connection may be reused (the request was
    /// read whole), `nil` when not forwarding. A request not read whole closes the connection after it.
    public mutating func responseEnd() -> Bool? {
        switch self.state {
        case .forwarding:
            if !self.requestEnded { self.closeAfterResponse = true }
            return self.requestEnded
        case .idle, .leasing, .respondedLocally, .closed, .tunnel:
            return nil
        }
    }

    /// The upstream connection failed or timed out. `retry` is the policy's answer, asked only when
    /// nothing of the response went out.
    public mutating func upstreamFailed(retry: @autoclosure () -> Bool) -> RetryOrFail {
        switch self.state {
        case .forwarding:
            if self.responseStarted { return self.abort() }
            if retry() {
                self.retried = true
                self.state = .leasing
                return .retry
            }
            return .respond
        case .tunnel:
            self.state = .closed
            return .closeTunnel
        case .idle, .leasing, .respondedLocally, .closed:
            return .none
        }
    }

    // MARK: Tunnels

    /// The upstream ended its side of the tunnel.
    public mutating func tunnelUpstreamEnded() -> TunnelEndAction {
        guard self.state == .tunnel, !self.upstreamOutputEnded else { return .none }
        self.upstreamOutputEnded = true
        if self.hasInputClosed { self.state = .closed }
        return .halfCloseClient(thenClose: self.hasInputClosed)
    }

    // MARK: Failures and local answers

    /// A failure while the request is in progress (the handler abandons the upstream exchange first).
    public mutating func fail(_ error: ProxyError) -> RetryOrFail {
        self.responseStarted ? self.abort() : .respond
    }

    private mutating func abort() -> RetryOrFail {
        self.state = .closed
        return .abort
    }

    /// Sluice answers the request itself: whether the response carries `Connection: close`, and
    /// whether it is complete now (else it completes at the request's end, ``requestEnd()``).
    public mutating func localResponse(for error: ProxyError, drainSaysClose: @autoclosure () -> Bool) -> (close: Bool, completeNow: Bool) {
        if error.closesConnection { self.closeAfterResponse = true }
        let close = self.decideClose(drainSaysClose: drainSaysClose())
        self.responseStarted = true
        self.state = .respondedLocally
        return (close, close || self.requestEnded)
    }

    private mutating func decideClose(drainSaysClose: Bool) -> Bool {
        if self.closeAfterResponse || !self.clientKeepAlive || !self.requestEnded || drainSaysClose {
            self.closeAfterResponse = true
        }
        return self.closeAfterResponse
    }

    /// The response's end is being written.
    public mutating func responseComplete() -> Completion {
        if self.closeAfterResponse {
            let linger = !self.requestEnded && !self.hasInputClosed
            self.state = .closed
            self.queuedParts = 0
            return .close(linger: linger)
        }
        self.state = .idle
        self.headBegan = false
        return .keepAlive
    }

    /// After a keep-alive response, once the queue was served: close for a half-closed client with
    /// nothing owed, else release a held read.
    public mutating func afterQueue() -> AfterQueueAction {
        if self.state == .idle, self.queuedParts == 0, self.hasInputClosed { return .close }
        return .resumeReading
    }

    /// The codec found bytes that break the protocol.
    public mutating func parseError(_ error: ProxyError) -> DeferredAction? {
        if self.queuedParts > 0 || self.awaitsResponseEnd {
            // The bad bytes follow the request in progress: its response comes first.
            self.deferredError = error
            return nil
        }
        switch self.state {
        case .idle:
            self.requestEnded = false
            return .respond(error)
        case .leasing, .forwarding:
            return .fail(error)
        case .respondedLocally, .closed, .tunnel:
            return .close
        }
    }

    /// The request head did not complete in time (or the drain's grace for partial heads ran out).
    public mutating func headTimedOut() -> TimeoutAction {
        guard self.headBegan, self.state == .idle, self.queuedParts == 0 else { return .close }
        self.requestEnded = false
        return .respond
    }

    /// The request body stalled.
    public func bodyTimedOut() -> TimeoutAction {
        self.state == .leasing || self.state == .forwarding ? .fail : .close
    }

    public mutating func inputClosed() -> InputClosedAction {
        self.hasInputClosed = true
        switch self.state {
        case .tunnel:
            if self.upstreamOutputEnded { self.state = .closed }
            return .halfCloseUpstream
        case .idle:
            return self.queuedParts == 0 ? .close : .none
        case .leasing, .forwarding, .respondedLocally, .closed:
            return .none
        }
    }

    /// The connection closed (or is being closed). Returns whether an exchange was cut short that
    /// counts as the client's abort: one whose response had begun or whose body was being read.
    @discardableResult
    public mutating func closed() -> Bool {
        let clientAbort = self.state == .forwarding && (self.responseStarted || self.requestHasBody)
        self.state = .closed
        return clientAbort
    }

    // MARK: Reading

    /// The pipeline asks to read. `upstreamWritable`: the upstream connection can take more bytes.
    public mutating func readRequested(upstreamWritable: Bool) -> Bool {
        let hold: Bool
        if self.queuedParts >= Self.maxQueuedParts {
            hold = true
        } else {
            switch self.state {
            case .leasing: hold = true
            case .forwarding, .tunnel: hold = !upstreamWritable
            case .idle, .respondedLocally, .closed: hold = false
            }
        }
        if hold { self.readHeld = true }
        return !hold
    }

    /// Whether a held read should go out now (nothing waits any more, or the upstream drained).
    public mutating func releaseHeldRead() -> Bool {
        guard self.readHeld, self.queuedParts < Self.maxQueuedParts else { return false }
        self.readHeld = false
        return true
    }

    // MARK: Private

    private mutating func resetRequest() {
        self.requestEnded = false
        self.requestHasBody = false
        self.bodyBytes = 0
        self.maxBodyBytes = nil
        self.expectsContinue = false
        self.responseStarted = false
        self.closeAfterResponse = false
        self.upgrade = false
        self.retried = false
        self.keepsReplay = false
        self.replayLimit = 0
        self.headBegan = false
    }
}
