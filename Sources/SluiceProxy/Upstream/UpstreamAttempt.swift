import SluiceCore

/// One loop's retry budget (``RetryBudget``), shared by its connections' requests. A class so that
/// every ``UpstreamAttempt`` reaches the same one; confined to the loop.
final class LoopRetryBudget {
    var budget = RetryBudget()
}

/// One request's use of a group, from its routing decision to the end of its exchange: which
/// endpoint its attempt is on, which it tried, and what the retry policy (``RetryPolicy``, the one
/// for HTTP/1 and HTTP/2 alike) says after a failure. ``begin()`` and ``end(_:)`` pair every pick
/// with its outcome, and ``finish()`` gives the request's place in the retry budget back, so
/// in-flight counts cannot drift.
///
/// Indices are the group's for one ``LoopUpstreamGroup/generation`` (its endpoints change with
/// DNS answers); the attempt keeps the key and generation of its pick, so an endpoint change
/// between ``begin()`` and ``end(_:)`` is finished against the right endpoint. After such a change,
/// `tried` keeps only the last endpoint tried (found again by key): a third attempt may go back to
/// the first one, which is harmless.
struct UpstreamAttempt {
    let group: LoopUpstreamGroup
    let policy: RetryPolicy
    private let budget: LoopRetryBudget
    private var attempts: RetryPolicy.Attempts
    private var finished = false
    private(set) var endpoint: Int?
    /// The key of ``endpoint`` when it was picked.
    private var endpointKey = ""
    /// The group's generation that ``endpoint`` and ``tried`` index into.
    private var generation: Int
    private(set) var tried = EndpointSet()
    /// When the attempt in progress picked its endpoint (`sluice_upstream_attempt_duration_seconds`).
    private var startedAt = MonotonicInstant(nanoseconds: 0)
    /// `balance: hash`: the request's key, hashed once when it is routed.
    var hash: UInt64?

    init(target: RouteTarget, budget: LoopRetryBudget) {
        self.group = target.group
        self.generation = target.group.generation
        self.policy = target.retryPolicy
        self.budget = budget
        self.attempts = budget.budget.requestStarted()
    }

    /// Retries made so far (for the access log and `/status`).
    var retries: Int { self.attempts.retries }

    /// Picks the endpoint of the next attempt and returns its pool.
    mutating func begin() -> any EndpointPool {
        self.end(.abandoned)
        if self.generation != self.group.generation {
            var tried = EndpointSet()
            if !self.endpointKey.isEmpty, let index = self.group.keys.firstIndex(of: self.endpointKey) { tried.insert(index) }
            self.tried = tried
            self.generation = self.group.generation
        }
        let endpoint = self.group.pick(hash: self.hash, excluding: self.tried)
        self.endpoint = endpoint
        self.startedAt = .now()
        self.endpointKey = self.group.keys[endpoint]
        self.tried.insert(endpoint)
        return self.group.pools[endpoint]
    }

    /// The attempt in progress ended; nothing if none is.
    mutating func end(_ outcome: AttemptOutcome) {
        guard let endpoint = self.endpoint else { return }
        self.endpoint = nil
        self.group.finished(endpoint: endpoint, key: self.endpointKey, generation: self.generation, outcome: outcome, startedAt: self.startedAt)
    }

    /// Whether to try again after `failure` (the caller knows nothing of the response went to the
    /// client). `bodyBytes`: request body bytes read so far; past the group's `retry-buffer` they
    /// were not kept, and a request that sent any is not replayed.
    mutating func shouldRetry(after failure: RetryPolicy.Failure, method: String, bodyBytes: Int) -> Bool {
        let request = RetryPolicy.RequestFacts(method: method, bodyBytes: bodyBytes)
        switch self.policy.decide(failure, attempts: &self.attempts, request: request, budget: &self.budget.budget) {
        case .retry:
            self.group.countRetryDecision(retried: true, budgetExhausted: false)
            return true
        case .giveUp(.budgetExhausted):
            self.group.countRetryDecision(retried: false, budgetExhausted: true)
            return false
        case .giveUp:
            return false
        }
    }

    /// Whether a 502/503 response may be retried at all (the route's `retry-on-5xx`): only then is
    /// its head held back for ``shouldRetry(after:method:bodyBytes:)``.
    func mayRetry(status: Int) -> Bool { self.policy.retryOn5xx && (status == 502 || status == 503) }

    /// The request is over (answered, failed or abandoned): its place in the budget is given back. Once.
    mutating func finish() {
        guard !self.finished else { return }
        self.finished = true
        self.budget.budget.requestFinished(self.attempts)
    }
}

