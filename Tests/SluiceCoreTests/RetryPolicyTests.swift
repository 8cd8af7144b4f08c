import SluiceCore
import Testing

@Suite struct RetryPolicyTests {
    typealias Decision = RetryPolicy.Decision

    static let buffer = 64 << 10

    /// One failure and the decisions for, in order: GET without a body, GET with a body that fits
    /// the replay buffer exactly, GET with a body one byte past it, and the same three for POST.
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var failure: RetryPolicy.Failure
        var retryOn5xx = true
        var decisions: [Decision]
        var testDescription: String { self.name }
    }

    static let retry = Decision.retry
    static let notRetryable = Decision.giveUp(.notRetryable)
    static let notIdempotent = Decision.giveUp(.methodNotIdempotent)
    static let notReplayable = Decision.giveUp(.bodyNotReplayable)

    static let rows: [Row] = [
        // Nothing reached the upstream: any method, any body (it is still whole in the queue).
        Row(name: "connect failed", failure: .error(.upstreamConnectFailed("refused")),
            decisions: [retry, retry, retry, retry, retry, retry]),
        // Sent but not processed: any method, if the body can be replayed.
        Row(name: "REFUSED_STREAM", failure: .error(.upstreamRefusedStream("REFUSED_STREAM")),
            decisions: [retry, retry, notReplayable, retry, retry, notReplayable]),
        // May have reached the app: idempotent methods with a replayable body.
        Row(name: "reset before the response", failure: .error(.upstreamResetBeforeResponse("reset")),
            decisions: [retry, retry, notReplayable, notIdempotent, notIdempotent, notIdempotent]),
        Row(name: "502, route opts in", failure: .status(502),
            decisions: [retry, retry, notReplayable, notIdempotent, notIdempotent, notIdempotent]),
        Row(name: "503, route opts in", failure: .status(503),
            decisions: [retry, retry, notReplayable, notIdempotent, notIdempotent, notIdempotent]),
        // Never.
        Row(name: "502, route does not opt in", failure: .status(502), retryOn5xx: false,
            decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "503, route does not opt in", failure: .status(503), retryOn5xx: false,
            decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "500, route opts in", failure: .status(500), decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "504, route opts in", failure: .status(504), decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "response-head timeout", failure: .error(.upstreamTimeout), decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "invalid response", failure: .error(.upstreamBadResponse("bad chunk")), decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "failed mid-response", failure: .error(.upstreamFailedMidResponse("eof")), decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "client error", failure: .error(.badRequest("missing Host header")), decisions: Array(repeating: notRetryable, count: 6)),
        Row(name: "client timeout", failure: .error(.requestTimeout("stalled")), decisions: Array(repeating: notRetryable, count: 6)),
    ]

    static let requests: [RetryPolicy.RequestFacts] = [
        .init(method: "GET", bodyBytes: 0),
        .init(method: "GET", bodyBytes: buffer),
        .init(method: "GET", bodyBytes: buffer + 1),
        .init(method: "POST", bodyBytes: 0),
        .init(method: "POST", bodyBytes: buffer),
        .init(method: "POST", bodyBytes: buffer + 1),
    ]

    /// Every failure × method × body, on the first attempt (retries left) and with no retries left:
    /// what may go again goes again, or gives up for the first rule that says no; with no retries
    /// left, what would have gone again gives up as `attemptsExhausted`.
    @Test(arguments: rows, [1, 0])
    func theDecisionTable(row: Row, retries: Int) {
        let policy = RetryPolicy(retries: retries, retryBuffer: Self.buffer, retryOn5xx: row.retryOn5xx)
        for (request, expected) in zip(Self.requests, row.decisions) {
            var budget = RetryBudget()
            var attempts = budget.requestStarted()
            let decision = policy.decide(row.failure, attempts: &attempts, request: request, budget: &budget)
            let wanted = retries == 0 && expected == .retry ? .giveUp(.attemptsExhausted) : expected
            #expect(decision == wanted, "\(row.name), \(request.isIdempotent ? "idempotent" : "not idempotent"), \(request.bodyBytes) body bytes")
            #expect(attempts.made == (decision == .retry ? 2 : 1))
            // A failed connect's retry takes no budget slot (``aFailedConnectTakesNoBudgetSlot``).
            let takesSlot = decision == .retry && row.name != "connect failed"
            #expect(budget.retriesInFlight == (takesSlot ? 1 : 0))
        }
    }

    /// Exactly the methods of RFC 9110 §9.2.2 are idempotent; a reset retries them and nothing else.
    @Test(arguments: ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH", "CONNECT", "PROPFIND"])
    func onlyIdempotentMethodsRetryAfterAReset(method: String) {
        let idempotent = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"].contains(method)
        let facts = RetryPolicy.RequestFacts(method: method, bodyBytes: 0)
        #expect(facts.isIdempotent == idempotent)
        let policy = RetryPolicy(retries: 1, retryBuffer: Self.buffer, retryOn5xx: false)
        var budget = RetryBudget()
        var attempts = budget.requestStarted()
        let decision = policy.decide(.error(.upstreamResetBeforeResponse("reset")), attempts: &attempts, request: facts, budget: &budget)
        #expect(decision == (idempotent ? .retry : .giveUp(.methodNotIdempotent)))
    }

    /// `retries: 2` allows two retries, then gives up; `attempts` counts them for the access log.
    @Test func retriesAreCappedByTheGroupSetting() {
        let policy = RetryPolicy(retries: 2, retryBuffer: Self.buffer, retryOn5xx: false)
        var budget = RetryBudget()
        var attempts = budget.requestStarted()
        let facts = RetryPolicy.RequestFacts(method: "GET", bodyBytes: 0)
        let failure = RetryPolicy.Failure.error(.upstreamConnectFailed("refused"))
        #expect(policy.decide(failure, attempts: &attempts, request: facts, budget: &budget) == .retry)
        #expect(policy.decide(failure, attempts: &attempts, request: facts, budget: &budget) == .retry)
        #expect(attempts.made == 3 && attempts.retries == 2)
        #expect(policy.decide(failure, attempts: &attempts, request: facts, budget: &budget) == .giveUp(.attemptsExhausted))
        #expect(attempts.made == 3)
        #expect(budget.retriesInFlight == 0)
        budget.requestFinished(attempts)
        #expect(budget.requestsInFlight == 0)
    }

    /// The body is kept for a replay up to the buffer, byte for byte.
    @Test func theBodyIsKeptUpToTheRetryBuffer() {
        let policy = RetryPolicy(retries: 1, retryBuffer: 10, retryOn5xx: false)
        #expect(policy.keepsForReplay(bodyBytes: 0))
        #expect(policy.keepsForReplay(bodyBytes: 10))
        #expect(!policy.keepsForReplay(bodyBytes: 11))
    }

    /// A route's policy takes the group's retries and buffer and the route's `retry-on-5xx`.
    @Test func thePolicyOfARouteAndGroup() {
        var group = UpstreamGroup(name: "api", endpoints: [UpstreamURL(host: "10.0.0.7", port: 3000)])
        group.retries = 3
        group.retryBuffer = 1024
        var route = Route(upstream: "api")
        route.retryOn5xx = true
        #expect(RetryPolicy(group: group, route: route) == RetryPolicy(retries: 3, retryBuffer: 1024, retryOn5xx: true))
        #expect(RetryPolicy(group: UpstreamGroup(name: "d", endpoints: []), route: Route(upstream: "d"))
            == RetryPolicy(retries: 1, retryBuffer: 64 << 10, retryOn5xx: false))
    }
}

@Suite struct RetryBudgetTests {
    let policy = RetryPolicy(retries: 5, retryBuffer: 64 << 10, retryOn5xx: false)
    let facts = RetryPolicy.RequestFacts(method: "GET", bodyBytes: 0)
    let failure = RetryPolicy.Failure.error(.upstreamResetBeforeResponse("reset"))

    /// A failed connect is retried outside the budget: nothing reached the upstream, so the retry
    /// replaces the attempt rather than adding work (an endpoint that refuses at once, killed under
    /// load, must not turn into 502s while the others are fine).
    @Test func aFailedConnectTakesNoBudgetSlot() {
        var budget = RetryBudget()
        var requests = (0..<10).map { _ in budget.requestStarted() }
        let refused = RetryPolicy.Failure.error(.upstreamConnectFailed("refused"))
        for index in requests.indices {
            #expect(self.policy.decide(refused, attempts: &requests[index], request: self.facts, budget: &budget) == .retry)
        }
        #expect(budget.retriesInFlight == 0)
        for attempts in requests { budget.requestFinished(attempts) }
        #expect(budget.requestsInFlight == 0)
    }

    /// On a quiet loop, three retries may be in flight at once (the minimum concurrency), not a fourth.
    @Test func aQuietLoopMayStillRunThreeRetries() {
        var budget = RetryBudget()
        var requests = (0..<4).map { _ in budget.requestStarted() }
        #expect(budget.limit == 3)
        for index in 0..<3 {
            #expect(policy.decide(failure, attempts: &requests[index], request: facts, budget: &budget) == .retry)
        }
        #expect(policy.decide(failure, attempts: &requests[3], request: facts, budget: &budget) == .giveUp(.budgetExhausted))
        #expect(budget.retriesInFlight == 3)
        #expect(requests[3].made == 1)
    }

    /// With many requests in flight, retries in flight may be 20% of them.
    @Test func aBusyLoopMayRetryTwentyPercentOfItsRequests() {
        var budget = RetryBudget()
        var requests = (0..<50).map { _ in budget.requestStarted() }
        #expect(budget.limit == 10)
        var decisions: [RetryPolicy.Decision] = []
        for index in 0..<12 {
            decisions.append(policy.decide(failure, attempts: &requests[index], request: facts, budget: &budget))
        }
        #expect(decisions == Array(repeating: .retry, count: 10) + [.giveUp(.budgetExhausted), .giveUp(.budgetExhausted)])
        #expect(budget.retriesInFlight == 10)
    }

    /// The limit is max(3, 20% of requests in flight), rounded down.
    @Test(arguments: [(0, 3), (1, 3), (14, 3), (15, 3), (20, 4), (24, 4), (25, 5), (100, 20), (1000, 200)])
    func theLimitForALoad(requestsInFlight: Int, limit: Int) {
        var budget = RetryBudget()
        for _ in 0..<requestsInFlight { _ = budget.requestStarted() }
        #expect(budget.limit == limit)
    }

    /// Slots come back: when a retry fails in turn (and is decided again), when a request ends on a
    /// retry, and not twice; the counts return to zero once every request ended.
    @Test func retrySlotsAreReturned() {
        var budget = RetryBudget(percent: 20, minRetryConcurrency: 1)
        var first = budget.requestStarted()
        var second = budget.requestStarted()
        #expect(policy.decide(failure, attempts: &first, request: facts, budget: &budget) == .retry)
        #expect(first.holdsRetrySlot)
        #expect(policy.decide(failure, attempts: &second, request: facts, budget: &budget) == .giveUp(.budgetExhausted))
        // The retry fails too: its slot is given back before deciding, so it may take it again.
        #expect(policy.decide(failure, attempts: &first, request: facts, budget: &budget) == .retry)
        #expect(budget.retriesInFlight == 1)
        // A retry that fails with something not retryable gives the slot back.
        #expect(policy.decide(.error(.upstreamTimeout), attempts: &first, request: facts, budget: &budget) == .giveUp(.notRetryable))
        #expect(!first.holdsRetrySlot)
        #expect(budget.retriesInFlight == 0)
        budget.requestFinished(first)
        // The second request may retry now, and ends on that retry (it succeeded).
        #expect(policy.decide(failure, attempts: &second, request: facts, budget: &budget) == .retry)
        budget.requestFinished(second)
        #expect(budget.requestsInFlight == 0)
        #expect(budget.retriesInFlight == 0)
    }

    /// The budget is checked last: a failure that would not be retried anyway is not reported as budget exhaustion.
    @Test func theBudgetIsOnlySpentOnRetriesThatWouldHappen() {
        var budget = RetryBudget(percent: 0, minRetryConcurrency: 0)
        var attempts = budget.requestStarted()
        #expect(!budget.allowsRetry)
        #expect(policy.decide(.error(.upstreamTimeout), attempts: &attempts, request: facts, budget: &budget) == .giveUp(.notRetryable))
        let post = RetryPolicy.RequestFacts(method: "POST", bodyBytes: 0)
        #expect(policy.decide(.error(.upstreamResetBeforeResponse("reset")), attempts: &attempts, request: post, budget: &budget) == .giveUp(.methodNotIdempotent))
        #expect(policy.decide(failure, attempts: &attempts, request: facts, budget: &budget) == .giveUp(.budgetExhausted))
    }

    /// Requests are counted in and out whatever their attempts.
    @Test func requestsAreCountedInAndOut() {
        var budget = RetryBudget()
        let a = budget.requestStarted()
        let b = budget.requestStarted()
        #expect(budget.requestsInFlight == 2)
        budget.requestFinished(a)
        budget.requestFinished(b)
        #expect(budget.requestsInFlight == 0)
        #expect(budget.retriesInFlight == 0)
        #expect(budget == RetryBudget())
    }
}
