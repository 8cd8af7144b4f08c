/// How many retries one event loop may have in flight: at most ``percent``% of its requests in
/// flight, but always at least ``minRetryConcurrency`` (Envoy's `retry_budget`: `budget_percent`
/// 20, `min_retry_concurrency` 3).
///
/// A retry storm is what turns a sick upstream into a dead one: when every request fails and is
/// retried, the upstream sees twice the load just when it can take less. The budget caps the extra
/// load at a fraction of the real one. The minimum lets a quiet loop (a handful of requests) still
/// retry: 20% of 2 requests would be no retry at all.
///
/// 1. Every request (an HTTP/1 request, an HTTP/2 stream) is counted from ``requestStarted()`` to
///    ``requestFinished(_:)``, whatever its attempts.
/// 2. ``RetryPolicy/decide(_:attempts:request:budget:)`` takes a retry slot for each retry it allows
///    and gives it back when that retry fails in turn; ``requestFinished(_:)`` gives back the slot
///    of a request that ends on a retry. A request holds at most one slot.
/// 3. A retry may start while the retries in flight are fewer than
///    `max(minRetryConcurrency, requestsInFlight × percent / 100)`.
///
/// One per event loop, like the loop's pools: no lock, and a loop's budget reflects its own load.
///
/// ```swift
/// var attempts = loop.retryBudget.requestStarted()
/// … policy.decide(failure, attempts: &attempts, request: facts, budget: &loop.retryBudget) …
/// loop.retryBudget.requestFinished(attempts)
/// ```
public struct RetryBudget: Sendable, Equatable {
    /// Retries in flight may be this percentage of the requests in flight. Default 20.
    public let percent: Int
    /// Retries in flight that are always allowed, however few requests are in flight. Default 3.
    public let minRetryConcurrency: Int
    /// Requests in flight on the loop, retried or not.
    public private(set) var requestsInFlight = 0
    /// Requests in flight whose current attempt is a retry.
    public private(set) var retriesInFlight = 0

    public init(percent: Int = 20, minRetryConcurrency: Int = 3) {
        precondition(percent >= 0 && minRetryConcurrency >= 0, "a budget is not negative")
        self.percent = percent
        self.minRetryConcurrency = minRetryConcurrency
    }

    /// How many retries may be in flight now.
    public var limit: Int { max(self.minRetryConcurrency, self.requestsInFlight * self.percent / 100) }

    /// Whether a retry could start now.
    public var allowsRetry: Bool { self.retriesInFlight < self.limit }

    /// A request started; keep the value for its retry decisions and its end.
    public mutating func requestStarted() -> RetryPolicy.Attempts {
        self.requestsInFlight += 1
        return RetryPolicy.Attempts()
    }

    /// The request ended (answered, failed, or the client went away); gives back its retry slot, if any.
    public mutating func requestFinished(_ attempts: RetryPolicy.Attempts) {
        precondition(self.requestsInFlight > 0, "a request finished that was not started")
        self.requestsInFlight -= 1
        if attempts.holdsRetrySlot { self.retryEnded() }
    }

    /// Takes a retry slot if one is free.
    mutating func retryStarted() -> Bool {
        guard self.allowsRetry else { return false }
        self.retriesInFlight += 1
        return true
    }

    /// Gives a retry slot back.
    mutating func retryEnded() {
        precondition(self.retriesInFlight > 0, "a retry ended that was not started")
        self.retriesInFlight -= 1
    }
}
