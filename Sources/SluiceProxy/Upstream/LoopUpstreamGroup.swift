import Logging
import NIOCore
import NIOHTTP1
import SluiceCore

/// One upstream group as one event loop sees it: a pool per endpoint (``EndpointPool``, of the
/// group's scheme; an https group's TLS contexts are built here, once), the group's ``Balancer``, which picks the endpoint of each attempt, and its
/// passive ``OutlierDetector``. Confined to the loop; a request keeps the group it started with
/// across a reload.
///
/// 1. An endpoint may be picked when it is available (``EndpointAvailability``): not unhealthy by
///    the active checks (published to every loop by the health checker, ``setHealth(_:)``) and not
///    ejected by this loop's outlier detector. Each loop detects outliers from its own requests: no
///    lock, no hop, at the price of each loop needing its own run of failures.
/// 2. The endpoints change when a DNS answer changes (``setEndpoints(_:)``, published to every loop
///    by ``EndpointResolver``). An endpoint that stays keeps its pool, in-flight count, ejection and
///    health (all by key, `host:port`); a new one gets a pool; a removed one is **drained on the
///    upstream side**: its pool is shut down (no parked connection is reused, idle ones close now,
///    busy ones when their request ends) and kept aside, still swept (response-header timeouts),
///    until its last connection is gone.
/// 3. **Index stability.** ``pools``, ``keys`` and ``endpoints`` are indexed alike, and an index is
///    valid for one ``generation`` (bumped by every ``setEndpoints(_:)``). ``UpstreamAttempt``
///    remembers the key and generation of its pick, so an attempt that straddles a change is
///    finished against its key (``finished(endpoint:key:generation:outcome:)``): the balancer and
///    outlier detector count it for the endpoint it really went to, or not at all if that endpoint
///    left. The pool it leased from is held by the attempt's connection, not by index.
/// 4. Until a name's first answer arrives, the name itself is the endpoint (connections resolve it
///    as they are made); so a group is never empty and ``pick(hash:excluding:)`` always picks.
final class LoopUpstreamGroup {
    let config: UpstreamGroup
    /// The endpoints in force: the configured ones with each name replaced by its addresses.
    private(set) var endpoints: [UpstreamURL]
    /// A pool per endpoint, in the order of ``endpoints``; valid for one ``generation``.
    private(set) var pools: [any EndpointPool]
    /// Each endpoint's key (`host:port`), by which balancer, health and outlier state know it.
    private(set) var keys: [String]
    /// Bumped whenever ``endpoints`` change, so that indices held across the change are re-found by key.
    private(set) var generation = 0
    /// Pools of removed endpoints, drained on the upstream side and swept until their last
    /// connection is gone.
    private var drainingPools: [any EndpointPool] = []
    /// `Host` for a request that has none (HTTP/1.0) and no `host-rewrite`: the group's first
    /// configured endpoint's authority (a name stays the name after resolution), formatted once.
    let fallbackHost: String
    private var balancer: Balancer
    private var outliers: OutlierDetector<String, MonotonicInstant>?
    private var health: [String: EndpointHealth] = [:]
    private var random: SplitMix64
    private let eventLoop: any EventLoop
    private let ids: ConnectionID.Generator
    private let logger: Logger
    /// An https group's TLS contexts, built once per group and loop (or why they could not be).
    private let tlsClient: Result<UpstreamTLSClient, UpstreamTLSFailure>?
    /// The last pick was a panic pick (no endpoint available): the log line is written on the way in
    /// and out of panic, not per request.
    private var inPanic = false
    private(set) var counters = GroupCounters()

    /// Where the group's upstream TLS failures are counted (`nil`: not counted, in tests).
    private let metrics: ProxyMetrics?

    init(_ config: UpstreamGroup, eventLoop: any EventLoop, loopIndex: Int, logger: Logger, metrics: ProxyMetrics? = nil) {
        self.metrics = metrics
        precondition(!config.endpoints.isEmpty, "validation gives every group an endpoint")
        self.config = config
        self.endpoints = config.endpoints
        let keys = config.endpoints.map(\.authority)
        self.keys = keys
        self.fallbackHost = keys[0]
        self.eventLoop = eventLoop
        self.logger = logger
        var seed = SystemRandomNumberGenerator()
        self.random = SplitMix64(seed: seed.next())
        var maglev: MaglevTable?
        if case .hash = config.balance { maglev = MaglevTable(keys: keys) }
        self.balancer = Balancer(policy: config.balance, endpoints: keys, maglev: maglev)
        self.outliers = config.outlier.map { OutlierDetector(config: $0, endpoints: keys) }
        // Upstream connection IDs live in their own half of the ID space so they never equal a
        // downstream ID; they are keys within one pool.
        self.ids = ConnectionID.Generator(loopIndex: loopIndex | 0x8000)
        self.tlsClient = UpstreamTLSClient.make(for: config)
        if case .failure(let failure) = self.tlsClient {
            logger.error("upstream TLS settings unusable: connections to the group fail", metadata: ["group": "\(config.name)", "error": "\(failure.detail)"])
        }
        self.pools = []
        self.pools = config.endpoints.map { self.makePool($0) }
    }

    private func makePool(_ endpoint: UpstreamURL) -> any EndpointPool {
        switch endpoint.scheme {
        case .http:
            HTTP1EndpointPool(endpoint: endpoint, eventLoop: self.eventLoop, settings: self.config.connection, idGenerator: self.ids, logger: self.logger)
        case .h2c:
            HTTP2EndpointPool(endpoint: endpoint, eventLoop: self.eventLoop, settings: self.config.connection, idGenerator: self.ids, logger: self.logger)
        case .https:
            HTTPSEndpointPool(
                endpoint: endpoint, eventLoop: self.eventLoop, settings: self.config.connection, idGenerator: self.ids, logger: self.logger,
                group: self.config.name, client: self.tlsClient!, serverName: self.config.effectiveTLS!.serverName(for: endpoint),
                metrics: self.metrics)
        }
    }

    var name: String { self.config.name }
    /// Whether every request to the group goes over HTTP/2 (h2c://). An https group is false: its
    /// endpoints speak what ALPN chose, and a request that switches protocols gets HTTP/1.1 there
    /// (``HTTPSEndpointPool``), so the downstream side keeps the upgrade pair.
    var isHTTP2: Bool { self.config.scheme == .h2c }

    /// The key `balance: hash` hashes for a request (its upstream head's fields, and the client's
    /// address), or `nil`: not a hash group, or the request has no such key (the pick is random).
    func hashKey(headers: HTTPHeaders, clientAddress: String?) -> UInt64? {
        guard case .hash(let key) = self.config.balance else { return nil }
        switch key {
        case .header(let name):
            return headers.first(name: name).map { StableHash.hash($0.utf8) }
        case .cookie(let name):
            for field in headers[canonicalForm: "cookie"] {
                if let value = CookieHeader.value(named: name, in: String(field)) { return StableHash.hash(value.utf8) }
            }
            return nil
        case .clientIP:
            return clientAddress.map { StableHash.hash($0.utf8) }
        }
    }

    /// The endpoint for the next attempt (an index valid for this ``generation``), not one of
    /// `tried` while the group has another.
    func pick(hash: UInt64?, excluding tried: EndpointSet) -> Int {
        guard let pick = self.balancer.pick(hash: hash, excluding: tried, using: &self.random) else {
            preconditionFailure("a group has endpoints")
        }
        if pick.panic != self.inPanic {
            self.inPanic = pick.panic
            if pick.panic {
                self.logger.warning("no endpoint of the group is available: picking among all of them (panic)", metadata: ["group": "\(self.name)"])
            } else {
                self.logger.notice("an endpoint of the group is available again: panic over", metadata: ["group": "\(self.name)"])
            }
        }
        if pick.panic { self.counters.panicPicks += 1 }
        self.balancer.requestStarted(endpoint: pick.endpoint)
        return pick.endpoint
    }

    /// An attempt on `endpoint` (an index of this ``generation``) ended.
    func finished(endpoint: Int, outcome: AttemptOutcome) {
        self.finished(endpoint: endpoint, key: self.keys[endpoint], generation: self.generation, outcome: outcome)
    }

    /// An attempt ended on the endpoint picked as index `endpoint` with key `key` in `generation`:
    /// the balancer's in-flight count, and the outlier detector hears how. If the endpoints changed
    /// since the pick, the endpoint is found again by key; if it left, only the class is counted.
    func finished(endpoint: Int, key: String, generation: Int, outcome: AttemptOutcome, startedAt: MonotonicInstant? = nil) {
        self.counters.count(outcome)
        if let startedAt {
            switch outcome {
            case .response, .failed: self.counters.recordDuration(startedAt.duration(to: .now()))
            case .abandoned: break
            }
        }
        let index: Int
        if generation == self.generation {
            index = endpoint
        } else if let moved = self.keys.firstIndex(of: key) {
            index = moved
        } else {
            return
        }
        self.balancer.requestFinished(endpoint: index, key: key)
        guard self.outliers != nil else { return }
        let result: OutlierDetector<String, MonotonicInstant>.RequestOutcome
        switch outcome {
        case .response(let status): result = status >= 500 ? .serverError(status: status) : .success
        case .failed(let error): result = .init(error)
        case .abandoned: return
        }
        switch self.outliers!.requestFinished(key, outcome: result, now: .now()) {
        case .none:
            break
        case .eject(_, let until):
            self.counters.ejections += 1
            self.logger.warning(
                "endpoint ejected after consecutive failures", metadata: ["group": "\(self.name)", "endpoint": "\(key)", "seconds": "\(MonotonicInstant.now().duration(to: until).secondsDouble)"])
            self.updateAvailability(index)
        case .ejectionRefused(_, let ejected, let limit):
            self.counters.ejectionsRefused += 1
            self.logger.warning(
                "endpoint failing but not ejected: max-ejected reached", metadata: ["group": "\(self.name)", "endpoint": "\(key)", "ejected": "\(ejected)", "limit": "\(limit)"])
        }
    }

    /// The retry policy's answer for a request of this group: counted for `/metrics`.
    func countRetryDecision(retried: Bool, budgetExhausted: Bool) {
        if retried { self.counters.retries += 1 }
        if budgetExhausted { self.counters.retryBudgetExhausted += 1 }
    }

    /// The health checker's view of the group's endpoints, published to every loop.
    func setHealth(_ health: [String: EndpointHealth]) {
        self.health = health
        for endpoint in self.keys.indices { self.updateAvailability(endpoint) }
    }

    /// A new DNS answer: the group's endpoints become `endpoints` (see the type's documentation).
    /// An empty list changes nothing (the resolver never sends one: it keeps the last good answer).
    func setEndpoints(_ endpoints: [UpstreamURL]) {
        self.eventLoop.assertInEventLoop()
        var unique: [UpstreamURL] = []
        var seen = Set<String>()
        for endpoint in endpoints where seen.insert(endpoint.authority).inserted { unique.append(endpoint) }
        let keys = unique.map(\.authority)
        guard !keys.isEmpty, keys != self.keys else { return }
        var old: [String: any EndpointPool] = [:]
        for (key, pool) in zip(self.keys, self.pools) { old[key] = pool }
        var pools: [any EndpointPool] = []
        pools.reserveCapacity(unique.count)
        var added: [String] = []
        for endpoint in unique {
            if let pool = old.removeValue(forKey: endpoint.authority) {
                pools.append(pool)
            } else {
                pools.append(self.makePool(endpoint))
                added.append(endpoint.authority)
                self.outliers?.endpointAdded(endpoint.authority)
            }
        }
        // What is left of the old pools are the removed endpoints: drained on the upstream side.
        for (key, pool) in old.sorted(by: { $0.key < $1.key }) {
            pool.shutdown()
            self.drainingPools.append(pool)
            self.outliers?.endpointRemoved(key)
        }
        self.logger.notice(
            "upstream endpoints changed",
            metadata: ["group": "\(self.name)", "added": "\(added)", "removed": "\(old.keys.sorted())", "endpoints": "\(keys.count)"])
        self.endpoints = unique
        self.keys = keys
        self.pools = pools
        self.generation += 1
        self.balancer.setEndpoints(keys)
        for endpoint in keys.indices { self.updateAvailability(endpoint) }
    }

    /// Whether `endpoint` may be picked now.
    func isAvailable(_ endpoint: Int) -> Bool { self.balancer.isAvailable(endpoint: endpoint) }
    func isEjected(_ endpoint: Int) -> Bool { self.outliers?.isEjected(self.keys[endpoint]) ?? false }
    func health(of endpoint: Int) -> EndpointHealth? { self.health[self.keys[endpoint]] }

    private func updateAvailability(_ endpoint: Int) {
        let key = self.keys[endpoint]
        let available = EndpointAvailability.isAvailable(health: self.health[key], ejected: self.outliers?.isEjected(key) ?? false)
        self.balancer.setAvailable(endpoint: endpoint, available)
    }

    func sweep(now: MonotonicInstant) {
        for pool in self.pools { pool.sweep(now: now) }
        if !self.drainingPools.isEmpty {
            for pool in self.drainingPools { pool.sweep(now: now) }
            self.drainingPools.removeAll { pool in
                let counts = pool.counts()
                return counts.idle == 0 && counts.busy == 0
            }
        }
        guard let deadline = self.outliers?.nextDeadline, deadline <= now else { return }
        for action in self.outliers!.sweep(now: now) {
            switch action {
            case .uneject(let key):
                self.logger.notice("endpoint back from ejection", metadata: ["group": "\(self.name)", "endpoint": "\(key)"])
                if let endpoint = self.keys.firstIndex(of: key) { self.updateAvailability(endpoint) }
            }
        }
    }

    /// Drains every endpoint on the upstream side (``EndpointPool/shutdown()``).
    func shutdown() {
        for pool in self.pools { pool.shutdown() }
        for pool in self.drainingPools { pool.shutdown() }
    }

    var stats: EndpointPoolStats { (self.pools + self.drainingPools).reduce(EndpointPoolStats()) { $0 + $1.stats } }

    /// Pools of removed endpoints still draining (for `/status` and tests).
    var draining: [any EndpointPool] { self.drainingPools }

    /// This loop's view of the group for `/status` and `/metrics` (summed over loops by the caller).
    func snapshot() -> GroupSnapshot {
        var endpoints: [GroupSnapshot.Endpoint] = []
        for (index, pool) in self.pools.enumerated() {
            let counts = pool.counts()
            endpoints.append(
                GroupSnapshot.Endpoint(
                    url: self.endpoints[index], key: self.keys[index], health: self.health[self.keys[index]],
                    ejected: self.isEjected(index), draining: false, idle: counts.idle, busy: counts.busy))
        }
        for pool in self.drainingPools {
            let counts = pool.counts()
            endpoints.append(
                GroupSnapshot.Endpoint(
                    url: pool.endpoint, key: pool.endpoint.authority, health: nil, ejected: false, draining: true, idle: counts.idle, busy: counts.busy))
        }
        return GroupSnapshot(name: self.name, scheme: self.config.scheme, balance: self.config.balance, endpoints: endpoints, counters: self.counters)
    }
}

/// What a group counts on one loop.
struct GroupCounters: Sendable {
    /// Picks made with no endpoint available (the balancer's panic).
    var panicPicks = 0
    var ejections = 0
    /// Endpoints that reached their failure count but stayed in (`max-ejected`).
    var ejectionsRefused = 0
    /// Retries made (each on another endpoint where the group has one).
    var retries = 0
    /// Retries the policy allowed but the loop's retry budget refused.
    var retryBudgetExhausted = 0
    /// Attempts that ended with a response or an upstream failure, by how long they took (from the
    /// pick to the end of the response): one slot per ``RequestStats/durationBuckets`` bound, plus +Inf.
    var attemptDurationCounts = [Int](repeating: 0, count: RequestStats.durationBuckets.count + 1)
    var attemptDurationSumSeconds: Double = 0
    /// Attempts that ended, by ``classes``: the upstream's status class, or `error` (no response).
    /// A retry is an attempt of its own.
    var attemptsByClass = [Int](repeating: 0, count: GroupCounters.classes.count)

    static let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"]

    mutating func recordDuration(_ duration: Duration) {
        let seconds = duration.secondsDouble
        self.attemptDurationSumSeconds += seconds
        self.attemptDurationCounts[RequestStats.bucket(seconds)] += 1
    }

    mutating func count(_ outcome: AttemptOutcome) {
        switch outcome {
        case .response(let status): self.attemptsByClass[min(max(status / 100, 1), 5) - 1] += 1
        case .failed: self.attemptsByClass[5] += 1
        case .abandoned: break
        }
    }

    static func + (lhs: GroupCounters, rhs: GroupCounters) -> GroupCounters {
        var sum = GroupCounters()
        sum.panicPicks = lhs.panicPicks + rhs.panicPicks
        sum.ejections = lhs.ejections + rhs.ejections
        sum.ejectionsRefused = lhs.ejectionsRefused + rhs.ejectionsRefused
        sum.retries = lhs.retries + rhs.retries
        sum.retryBudgetExhausted = lhs.retryBudgetExhausted + rhs.retryBudgetExhausted
        sum.attemptDurationCounts = zip(lhs.attemptDurationCounts, rhs.attemptDurationCounts).map { $0 + $1 }
        sum.attemptDurationSumSeconds = lhs.attemptDurationSumSeconds + rhs.attemptDurationSumSeconds
        sum.attemptsByClass = zip(lhs.attemptsByClass, rhs.attemptsByClass).map { $0 + $1 }
        return sum
    }
}

/// How an attempt on an endpoint ended, for the balancer's in-flight counts and outlier detection.
enum AttemptOutcome {
    /// The response completed, with this status.
    case response(status: Int)
    /// The attempt failed on the upstream's side (connect, reset, timeout, invalid response).
    case failed(ProxyError)
    /// The client went away or Sluice ended the request: says nothing about the endpoint.
    case abandoned
}
