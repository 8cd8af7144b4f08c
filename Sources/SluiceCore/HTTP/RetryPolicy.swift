/// Whether a failed attempt of a request is tried again: the one retry rule for HTTP/1 and HTTP/2.
///
/// Pure and small: the HTTP/1 handler and the HTTP/2 stream forwarder's machine each call
/// ``decide(_:attempts:request:budget:)`` with what they know when an attempt fails before any
/// response byte went downstream; the balancer then picks an endpoint not tried before (when the
/// group has another). The rules, in the order they are checked (the first that says no is the
/// reason given):
///
/// 1. **What failed** (``GiveUpReason/notRetryable``): the error's ``ProxyError/retry``. A connect
///    failure is always retryable; an HTTP/2 `REFUSED_STREAM` too, the request was not processed;
///    a reset or close before any response byte may be; a response-head timeout, an invalid
///    response or a client error never. A 502 or 503 response is retryable only when the route
///    opts in (`retry-on-5xx`) and is treated like a reset: the app may have acted.
/// 2. **The method** (``GiveUpReason/methodNotIdempotent``): when the request may have reached the
///    app, only idempotent methods (GET HEAD OPTIONS TRACE PUT DELETE, RFC 9110 §9.2.2) go again;
///    any method does when nothing reached the upstream or it refused the stream.
/// 3. **The body** (``GiveUpReason/bodyNotReplayable``): a request body up to `retry-buffer` bytes is
///    kept (``keepsForReplay(bodyBytes:)``) and replayed; once more of it arrived than that, the
///    kept copy is dropped and a request whose bytes were sent cannot go again (a body still
///    streaming counts what arrived so far: under the buffer, the replay sends what was kept and
///    then streams on). A connect failure needs no replay: nothing was sent.
/// 4. **Attempts** (``GiveUpReason/attemptsExhausted``): at most `retries` attempts after the first.
/// 5. **The budget** (``GiveUpReason/budgetExhausted``): at most 20% of the requests in flight on
///    the loop may be retries, with at least 3 allowed (``RetryBudget``), so a sick upstream does
///    not meet a retry storm. Checked last, so it is only spent on retries that would happen.
///
/// ```swift
/// let policy = RetryPolicy(group: group, route: route)
/// var attempts = budget.requestStarted()                       // when the request starts
/// switch policy.decide(.error(error), attempts: &attempts, request: facts, budget: &budget) {
/// case .retry: leaseAnotherEndpoint()
/// case .giveUp(let reason): count(reason); respond(error)
/// }
/// budget.requestFinished(attempts)                             // when the request ends, however
/// ```
public struct RetryPolicy: Sendable, Equatable {
    /// What went wrong with an attempt, before any response byte went downstream.
    public enum Failure: Equatable, Sendable {
        /// The attempt failed with this error.
        case error(ProxyError)
        /// The upstream answered with this status, and its head has not been passed on: a 502 or
        /// 503 may be discarded and retried when the route opts in.
        case status(Int)
    }

    /// Why a request is not tried again, for the log and the metrics.
    public enum GiveUpReason: String, Equatable, Sendable {
        /// The failure is not one a retry may fix (``ProxyError/Retryability/never``, a status
        /// other than 502 and 503, or a 5xx on a route without `retry-on-5xx`).
        case notRetryable
        /// The request may have reached the app, and its method is not idempotent.
        case methodNotIdempotent
        /// The request's bytes were sent and its body outgrew the replay buffer.
        case bodyNotReplayable
        /// The group's `retries` are used up.
        case attemptsExhausted
        /// The loop's retry budget is spent (``RetryBudget``).
        case budgetExhausted
    }

    public enum Decision: Equatable, Sendable {
        /// Try again, on an endpoint not tried before when the group has another. A retry slot of
        /// the budget is held until the next decision or ``RetryBudget/requestFinished(_:)``.
        case retry
        /// Answer with the failure (or abort, per the error).
        case giveUp(GiveUpReason)
    }

    /// The attempts of one request and the retry slot it holds: made by
    /// ``RetryBudget/requestStarted()``, passed to every ``RetryPolicy/decide(_:attempts:request:budget:)``
    /// for the request, and handed back to ``RetryBudget/requestFinished(_:)`` at its end.
    public struct Attempts: Sendable, Equatable {
        /// Attempts made so far, the one in progress included: 1 until the first retry.
        public internal(set) var made: Int = 1
        /// Whether the attempt in progress is a retry counted in the budget.
        public internal(set) var holdsRetrySlot = false

        /// Retries made so far (for the access log's `retries`).
        public var retries: Int { self.made - 1 }

        init() {}
    }

    /// What the policy needs to know of the request.
    public struct RequestFacts: Sendable, Equatable {
        /// The method is idempotent (RFC 9110 §9.2.2).
        public var isIdempotent: Bool
        /// Body bytes received from the client so far (0 without a body).
        public var bodyBytes: Int

        public init(isIdempotent: Bool, bodyBytes: Int) {
            self.isIdempotent = isIdempotent
            self.bodyBytes = bodyBytes
        }

        /// From the method's name (`GET`, `:method`).
        public init(method: String, bodyBytes: Int) {
            self.init(isIdempotent: RequestRules.isIdempotent(method), bodyBytes: bodyBytes)
        }
    }

    /// Further attempts after the first (the group's `retries`).
    public var retries: Int
    /// Request body bytes kept for a replay (the group's `retry-buffer`).
    public var retryBuffer: Int
    /// A 502 or 503 may be retried (the route's `retry-on-5xx`).
    public var retryOn5xx: Bool

    public init(retries: Int, retryBuffer: Int, retryOn5xx: Bool) {
        self.retries = retries
        self.retryBuffer = retryBuffer
        self.retryOn5xx = retryOn5xx
    }

    /// The policy for a request that `route` sends to `group`.
    public init(group: UpstreamGroup, route: Route) {
        self.init(retries: group.retries, retryBuffer: group.retryBuffer, retryOn5xx: route.retryOn5xx)
    }

    /// Whether the handler keeps (or goes on keeping) the body for a replay once `bodyBytes`
    /// arrived; once this is false the kept copy can be dropped, and a sent request is no longer
    /// retryable.
    @inlinable
    public func keepsForReplay(bodyBytes: Int) -> Bool { bodyBytes <= self.retryBuffer }

    /// Decides after the attempt in progress failed, before any response byte went downstream.
    ///
    /// Gives the retry slot the failed attempt held back to the budget and, on ``Decision/retry``,
    /// takes one for the next attempt and counts it in `attempts`.
    public func decide(
        _ failure: Failure,
        attempts: inout Attempts,
        request: RequestFacts,
        budget: inout RetryBudget
    ) -> Decision {
        if attempts.holdsRetrySlot {
            // The retry that failed is no longer in flight, whatever comes next.
            budget.retryEnded()
            attempts.holdsRetrySlot = false
        }
        if let reason = self.reasonToGiveUp(failure, attempts: attempts, request: request) {
            return .giveUp(reason)
        }
        if case .error(let error) = failure, error.retry == .always {
            // Nothing reached the upstream (a failed connect): the retry replaces the attempt and
            // adds no work anywhere, so it takes no budget slot. An endpoint that refuses at once
            // draws many requests in the moment before it is ejected; the budget must not turn
            // them into 502s.
            attempts.made += 1
            return .retry
        }
        guard budget.retryStarted() else { return .giveUp(.budgetExhausted) }
        attempts.made += 1
        attempts.holdsRetrySlot = true
        return .retry
    }

    /// The rules before the budget, in order.
    private func reasonToGiveUp(_ failure: Failure, attempts: Attempts, request: RequestFacts) -> GiveUpReason? {
        let retry: ProxyError.Retryability
        switch failure {
        case .error(let error):
            retry = error.retry
        case .status(let status):
            // The app answered: a 502 or 503 (a gateway in front of it, or the app overloaded) may
            // have come after the app acted, so it is retried as a reset is.
            retry = self.retryOn5xx && (status == 502 || status == 503) ? .ifIdempotent : .never
        }
        switch retry {
        case .never:
            return .notRetryable
        case .always:
            break
        case .ifReplayable:
            if !self.keepsForReplay(bodyBytes: request.bodyBytes) { return .bodyNotReplayable }
        case .ifIdempotent:
            if !request.isIdempotent { return .methodNotIdempotent }
            if !self.keepsForReplay(bodyBytes: request.bodyBytes) { return .bodyNotReplayable }
        }
        if attempts.retries >= self.retries { return .attemptsExhausted }
        return nil
    }
}
