import Logging
import NIOCore
import NIOHTTP1
import SluiceCore

/// One upstream group as one event loop sees it: a pool per endpoint (``EndpointPool``, of the
/// group's scheme), the group's ``Balancer``, which picks the endpoint of each attempt, and its
/// passive ``OutlierDetector``. Confined to the loop; a request keeps the group it started with
/// across a reload.
///
/// An endpoint may be picked when it is available (``EndpointAvailability``): not unhealthy by the
/// active checks (published to every loop by the health checker, ``setHealth(_:)``) and not ejected
/// by this loop's outlier detector. Each loop detects outliers from its own requests: no lock, no
/// hop, at the price of each loop needing its own run of failures.
final class LoopUpstreamGroup {
    let config: UpstreamGroup
    /// A pool per endpoint, in the order of ``UpstreamGroup/endpoints``.
    private(set) var pools: [any EndpointPool]
    /// Each endpoint's key (`host:port`), by which balancer, health and outlier state know it.
    let keys: [String]
    /// `Host` for a request that has none (HTTP/1.0) and no `host-rewrite`: the group's first
    /// endpoint's authority, formatted once.
    let fallbackHost: String
    private var balancer: Balancer
    private var outliers: OutlierDetector<String, MonotonicInstant>?
    private var health: [String: EndpointHealth] = [:]
    private var random: SplitMix64
    private let logger: Logger
    /// The last pick was a panic pick (no endpoint available): the log line is written on the way in
    /// and out of panic, not per request.
    private var inPanic = false
    private(set) var counters = GroupCounters()

    init(_ config: UpstreamGroup, eventLoop: any EventLoop, loopIndex: Int, logger: Logger) {
        precondition(!config.endpoints.isEmpty, "validation gives every group an endpoint")
        self.config = config
        let keys = config.endpoints.map(\.authority)
        self.keys = keys
        self.fallbackHost = keys[0]
        self.logger = logger
        var seed = SystemRandomNumberGenerator()
        self.random = SplitMix64(seed: seed.next())
        var maglev: MaglevTable?
        if case .hash = config.balance { maglev = MaglevTable(keys: keys) }
        self.balancer = Balancer(policy: config.balance, endpoints: keys, maglev: maglev)
        self.outliers = config.outlier.map { OutlierDetector(config: $0, endpoints: keys) }
        // Upstream connection IDs live in their own half of the ID space so they never equal a
        // downstream ID; they are keys within one pool.
        let ids = ConnectionID.Generator(loopIndex: loopIndex | 0x8000)
        self.pools = config.endpoints.map { endpoint -> any EndpointPool in
            switch endpoint.scheme {
            case .http:
                HTTP1EndpointPool(endpoint: endpoint, eventLoop: eventLoop, settings: config.connection, idGenerator: ids, logger: logger)
            case .h2c:
                HTTP2EndpointPool(endpoint: endpoint, eventLoop: eventLoop, settings: config.connection, idGenerator: ids, logger: logger)
            }
        }
    }

    var name: String { self.config.name }
    /// Whether the group's endpoints speak HTTP/2 (h2c://).
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

    /// The endpoint for the next attempt, not one of `tried` while the group has another.
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

    /// An attempt on `endpoint` ended: the balancer's in-flight count, and the outlier detector
    /// hears how.
    func finished(endpoint: Int, outcome: AttemptOutcome) {
        let key = self.keys[endpoint]
        self.balancer.requestFinished(endpoint: endpoint, key: key)
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
            self.updateAvailability(endpoint)
        case .ejectionRefused(_, let ejected, let limit):
            self.counters.ejectionsRefused += 1
            self.logger.warning(
                "endpoint failing but not ejected: max-ejected reached", metadata: ["group": "\(self.name)", "endpoint": "\(key)", "ejected": "\(ejected)", "limit": "\(limit)"])
        }
    }

    /// The health checker's view of the group's endpoints, published to every loop.
    func setHealth(_ health: [String: EndpointHealth]) {
        self.health = health
        for endpoint in self.keys.indices { self.updateAvailability(endpoint) }
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
    }

    var stats: EndpointPoolStats { self.pools.reduce(EndpointPoolStats()) { $0 + $1.stats } }
}

/// What a group counts on one loop.
struct GroupCounters: Sendable {
    /// Picks made with no endpoint available (the balancer's panic).
    var panicPicks = 0
    var ejections = 0
    /// Endpoints that reached their failure count but stayed in (`max-ejected`).
    var ejectionsRefused = 0
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
