/// Decides which endpoint of a group a request (or a retry) goes to: the one home of that decision
/// (DESIGN.md §3). One per (group, event loop), a value mutated only on its loop.
///
/// 1. **Policy** (``BalancePolicy``): `round-robin` in turn; `random` uniformly; `least-request`
///    by the power of two choices (two distinct endpoints at random, the one with fewer requests
///    in flight on this loop wins, the first drawn on a tie, which is itself random); `hash`
///    by Maglev consistent hashing (``MaglevTable``) of the request's key, walking forward in the
///    table past endpoints that may not be picked, so a key keeps its endpoint while it is
///    available and comes back to it when it is again. A hash policy without a key in the request
///    (no such header or cookie) picks at random, as Envoy does.
/// 2. **Availability.** Only endpoints that are healthy and not ejected are picked
///    (``setAvailable(endpoint:_:)``, published by the health and outlier machines).
/// 3. **Retries go elsewhere.** ``pick(hash:excluding:using:)`` takes the endpoints the request
///    already tried and avoids them; it picks a tried, available endpoint again only when every
///    available endpoint was tried (a group of one).
/// 4. **Panic.** When no endpoint is available, a health check or ejection gone wrong must not
///    take the whole group down: it picks among all endpoints (untried ones first) and says so in
///    ``Pick/panic``, for the caller to log and count (as Envoy's panic threshold, at 0 %).
/// 5. **Endpoints change** (DNS, reload) with ``setEndpoints(_:maglev:)``: endpoints are
///    identified by a stable key (`10.0.0.7:3000`), and in-flight counts and availability stay
///    with their key.
///
/// Pure: randomness is injected, so tests are deterministic with a seeded generator. Nothing
/// here allocates on ``pick(hash:excluding:using:)``, ``requestStarted(endpoint:)`` or
/// ``requestFinished(endpoint:key:)``.
///
/// ```swift
/// var tried = EndpointSet()
/// guard let pick = balancer.pick(hash: key.map { StableHash.hash($0.utf8) }, excluding: tried, using: &rng) else {
///     return .answer(503)                      // the group has no endpoints at all
/// }
/// if pick.panic { stats.panicPicks += 1 }     // and log it
/// tried.insert(pick.endpoint)
/// balancer.requestStarted(endpoint: pick.endpoint)
/// // ... when the exchange ends, however it ends:
/// balancer.requestFinished(endpoint: pick.endpoint, key: balancer.endpoints[pick.endpoint])
/// ```
public struct Balancer: Sendable {
    /// The endpoint chosen for one try.
    public struct Pick: Sendable, Equatable, CustomStringConvertible {
        /// An index into ``Balancer/endpoints``.
        public var endpoint: Int
        /// True when no endpoint was available and this one was picked among all of them anyway:
        /// the caller logs and counts it (`sluice_upstream_panic_picks_total`).
        public var panic: Bool

        public init(endpoint: Int, panic: Bool) {
            self.endpoint = endpoint
            self.panic = panic
        }

        public var description: String { self.panic ? "\(self.endpoint) (panic)" : "\(self.endpoint)" }
    }

    /// How endpoints are picked; fixed for the balancer's life (a reload that changes it builds a
    /// new balancer).
    public let policy: BalancePolicy
    /// The endpoints' stable keys, in the order the indices of ``Pick/endpoint`` refer to.
    public private(set) var endpoints: [String]
    /// The consistent-hash table of ``endpoints`` with a hash policy; `nil` with any other.
    public private(set) var maglev: MaglevTable?

    /// Requests in flight per endpoint, on this loop (``requestStarted(endpoint:)``).
    private var inFlight: [Int]
    /// The endpoints that may be picked (healthy and not ejected).
    private var available: EndpointSet
    /// `available.count`, kept so a pick need not count.
    public private(set) var availableCount: Int
    /// Round-robin: the index to try first on the next pick.
    private var cursor = 0

    /// - Parameters:
    ///   - policy: the group's `balance:`.
    ///   - endpoints: the endpoints' stable keys; all start available.
    ///   - maglev: with a hash policy, the table built for exactly `endpoints` (shared by every
    ///     loop's balancer); `nil` builds one here. Ignored with other policies.
    public init(policy: BalancePolicy, endpoints: [String], maglev: MaglevTable? = nil) {
        self.policy = policy
        self.endpoints = []
        self.maglev = nil
        self.inFlight = []
        self.available = EndpointSet()
        self.availableCount = 0
        self.setEndpoints(endpoints, maglev: maglev)
    }

    // MARK: - Endpoints, availability, load

    /// Replaces the endpoint list (a DNS answer changed, or a reload kept the group). In-flight
    /// counts and availability stay with their key; a new key starts available (the health machine
    /// says otherwise when it knows otherwise) with nothing in flight. The round-robin turn keeps
    /// its position. Indices from earlier picks may now name another endpoint, which is why
    /// ``requestFinished(endpoint:key:)`` takes the key as well.
    ///
    /// - Parameter maglev: as in ``init(policy:endpoints:maglev:)``; when given, its ``MaglevTable/keys``
    ///   must be `endpoints`.
    public mutating func setEndpoints(_ endpoints: [String], maglev: MaglevTable? = nil) {
        var oldIndex: [String: Int] = [:]
        for (index, key) in self.endpoints.enumerated() where oldIndex[key] == nil { oldIndex[key] = index }
        var inFlight = [Int](repeating: 0, count: endpoints.count)
        var available = EndpointSet()
        for (index, key) in endpoints.enumerated() {
            if let old = oldIndex[key] {
                inFlight[index] = self.inFlight[old]
                if self.available.contains(old) { available.insert(index) }
            } else {
                available.insert(index)
            }
        }
        self.endpoints = endpoints
        self.inFlight = inFlight
        self.available = available
        self.availableCount = available.count
        self.cursor = endpoints.isEmpty ? 0 : self.cursor % endpoints.count
        switch self.policy {
        case .hash:
            if let maglev {
                precondition(maglev.keys == endpoints, "the Maglev table was built for other endpoints")
                self.maglev = maglev
            } else {
                self.maglev = MaglevTable(keys: endpoints)
            }
        case .roundRobin, .leastRequest, .random:
            self.maglev = nil
        }
    }

    /// Marks one endpoint available (healthy and not ejected) or not.
    public mutating func setAvailable(endpoint: Int, _ isAvailable: Bool) {
        precondition(self.endpoints.indices.contains(endpoint), "endpoint index in range")
        guard self.available.contains(endpoint) != isAvailable else { return }
        if isAvailable {
            self.available.insert(endpoint)
            self.availableCount += 1
        } else {
            self.available.remove(endpoint)
            self.availableCount -= 1
        }
    }

    /// Sets every endpoint's availability at once: those in `available` are, the others are not
    /// (indices beyond the endpoints are ignored).
    public mutating func setAvailable(_ available: EndpointSet) {
        var set = EndpointSet()
        for index in available where index < self.endpoints.count { set.insert(index) }
        self.available = set
        self.availableCount = set.count
    }

    /// Whether `endpoint` may be picked outside a panic.
    public func isAvailable(endpoint: Int) -> Bool { self.available.contains(endpoint) }

    /// Requests in flight to `endpoint` from this loop.
    public func inFlight(endpoint: Int) -> Int { self.inFlight[endpoint] }

    /// The executor calls this when a try is sent to the picked endpoint (once per try, retries
    /// included), so least-request knows the load.
    public mutating func requestStarted(endpoint: Int) {
        self.inFlight[endpoint] += 1
    }

    /// The executor calls this when a try started with ``requestStarted(endpoint:)`` ends, however
    /// it ends (response complete, error, abort). `key` is the endpoint's key at the time of the
    /// pick: if ``setEndpoints(_:maglev:)`` moved the endpoint since, the count follows the key; if
    /// it removed it, there is nothing left to count. Never goes below zero (a key removed and
    /// added back while its requests ran starts again from zero).
    public mutating func requestFinished(endpoint: Int, key: String) {
        let index: Int
        if endpoint < self.endpoints.count, self.endpoints[endpoint] == key {
            index = endpoint
        } else if let moved = self.endpoints.firstIndex(of: key) {
            index = moved
        } else {
            return
        }
        if self.inFlight[index] > 0 { self.inFlight[index] -= 1 }
    }

    // MARK: - Picking

    /// The endpoint for the next try, or `nil` when the group has no endpoints at all (answer 503).
    ///
    /// - Parameters:
    ///   - hash: with a hash policy, ``StableHash/hash(_:seed:)`` of the request's key; `nil` when
    ///     the request has none (then the pick is random). Ignored by other policies.
    ///   - tried: the endpoints this request already tried; avoided unless every available one was.
    ///   - rng: drawn from once for `random`, `least-request` and a hash pick without a key; not at
    ///     all otherwise.
    @inlinable
    public mutating func pick(
        hash: UInt64? = nil, excluding tried: EndpointSet = EndpointSet(), using rng: inout some RandomNumberGenerator
    ) -> Pick? {
        let random: UInt64 = self.drawsRandom(hash: hash) ? rng.next() : 0
        return self.pick(hash: hash, excluding: tried, random: random)
    }

    @usableFromInline
    func drawsRandom(hash: UInt64?) -> Bool {
        switch self.policy {
        case .roundRobin: false
        case .random, .leastRequest: true
        case .hash: hash == nil
        }
    }

    /// The pick, with its one random draw made: the non-generic body of
    /// ``pick(hash:excluding:using:)``.
    @usableFromInline
    mutating func pick(hash: UInt64?, excluding tried: EndpointSet, random: UInt64) -> Pick? {
        let count = self.endpoints.count
        guard count > 0 else { return nil }
        let candidates = self.candidates(excluding: tried)
        let endpoint: Int
        switch self.policy {
        case .roundRobin:
            endpoint = self.nextInTurn(candidates)
        case .random:
            endpoint = self.nth(Balancer.reduce(UInt32(truncatingIfNeeded: random >> 32), candidates.count), candidates)
        case .leastRequest:
            endpoint = self.lessLoadedOfTwo(candidates, random: random)
        case .hash:
            if let hash, let maglev = self.maglev {
                endpoint = self.walk(maglev, from: maglev.slot(forHash: hash), candidates)
            } else {
                endpoint = self.nth(Balancer.reduce(UInt32(truncatingIfNeeded: random >> 32), candidates.count), candidates)
            }
        }
        return Pick(endpoint: endpoint, panic: candidates.panic)
    }

    /// Which endpoints one pick chooses among: the first non-empty of (1) available and untried,
    /// (2) available, (3) untried (panic), (4) all (panic).
    private struct Candidates {
        /// Only available endpoints.
        var requireAvailable: Bool
        /// Only untried endpoints.
        var excludeTried: Bool
        var tried: EndpointSet
        /// How many endpoints qualify (never zero).
        var count: Int
        /// No endpoint was available.
        var panic: Bool
        /// Every endpoint qualifies: the common case, where index `k` is the `k`-th candidate.
        var all: Bool { !self.requireAvailable && !self.excludeTried }
    }

    private func candidates(excluding tried: EndpointSet) -> Candidates {
        let count = self.endpoints.count
        var triedAvailable = 0
        var triedAny = 0
        if !tried.isEmpty {
            for index in tried where index < count {
                triedAny += 1
                if self.available.contains(index) { triedAvailable += 1 }
            }
        }
        let everyEndpointAvailable = self.availableCount == count
        if self.availableCount > 0 {
            if self.availableCount > triedAvailable {
                return Candidates(
                    requireAvailable: !everyEndpointAvailable, excludeTried: triedAny > 0, tried: tried,
                    count: self.availableCount - triedAvailable, panic: false)
            }
            return Candidates(
                requireAvailable: !everyEndpointAvailable, excludeTried: false, tried: tried, count: self.availableCount,
                panic: false)
        }
        if count > triedAny {
            return Candidates(requireAvailable: false, excludeTried: triedAny > 0, tried: tried, count: count - triedAny, panic: true)
        }
        return Candidates(requireAvailable: false, excludeTried: false, tried: tried, count: count, panic: true)
    }

    private func isCandidate(_ endpoint: Int, _ candidates: Candidates) -> Bool {
        (!candidates.requireAvailable || self.available.contains(endpoint))
            && (!candidates.excludeTried || !candidates.tried.contains(endpoint))
    }

    /// The `k`-th candidate in index order.
    private func nth(_ k: Int, _ candidates: Candidates) -> Int {
        if candidates.all { return k }
        var remaining = k
        for endpoint in self.endpoints.indices where self.isCandidate(endpoint, candidates) {
            if remaining == 0 { return endpoint }
            remaining -= 1
        }
        preconditionFailure("candidate \(k) of \(candidates.count) not found")
    }

    /// Round-robin: the first candidate at or after the cursor; the cursor moves past it, so
    /// skipping an unavailable endpoint does not give its turn to its neighbour twice.
    private mutating func nextInTurn(_ candidates: Candidates) -> Int {
        let count = self.endpoints.count
        var endpoint = self.cursor
        for _ in 0..<count {
            if self.isCandidate(endpoint, candidates) {
                self.cursor = endpoint + 1 == count ? 0 : endpoint + 1
                return endpoint
            }
            endpoint = endpoint + 1 == count ? 0 : endpoint + 1
        }
        preconditionFailure("no candidate although \(candidates.count) were counted")
    }

    /// Least-request: two distinct candidates drawn from the two halves of `random`; fewer requests
    /// in flight wins, the first drawn on a tie.
    private func lessLoadedOfTwo(_ candidates: Candidates, random: UInt64) -> Int {
        let first = Balancer.reduce(UInt32(truncatingIfNeeded: random >> 32), candidates.count)
        guard candidates.count > 1 else { return self.nth(first, candidates) }
        var second = Balancer.reduce(UInt32(truncatingIfNeeded: random), candidates.count - 1)
        if second >= first { second += 1 }
        let a = self.nth(first, candidates)
        let b = self.nth(second, candidates)
        return self.inFlight[b] < self.inFlight[a] ? b : a
    }

    /// Hash: the endpoint of `slot`, or of the first slot after it whose endpoint is a candidate.
    /// Every endpoint holds at least one slot, so the walk ends; neighbouring slots belong to
    /// endpoints in proportion to their shares, so the keys of an unavailable endpoint spread over
    /// the others evenly, and every other key stays where it is.
    private func walk(_ maglev: MaglevTable, from slot: Int, _ candidates: Candidates) -> Int {
        if candidates.all { return maglev.endpoint(inSlot: slot) }
        var slot = slot
        for _ in 0..<maglev.size {
            let endpoint = maglev.endpoint(inSlot: slot)
            if self.isCandidate(endpoint, candidates) { return endpoint }
            slot = slot + 1 == maglev.size ? 0 : slot + 1
        }
        preconditionFailure("a Maglev table without a slot for a candidate")
    }

    /// A uniform index below `bound` from 32 random bits (Lemire's multiply-shift; its bias is
    /// below `bound / 2^32`, nothing at a group's size).
    private static func reduce(_ random: UInt32, _ bound: Int) -> Int {
        Int((UInt64(random) &* UInt64(bound)) >> 32)
    }
}
