import Logging
import NIOCore
import SluiceCore

/// One upstream group as one event loop sees it: a pool per endpoint (``EndpointPool``, of the
/// group's scheme) and the group's balancer, which picks the endpoint of each attempt. Confined to
/// the loop; a request keeps the group it started with across a reload.
final class LoopUpstreamGroup {
    let config: UpstreamGroup
    /// A pool per endpoint, in the order of ``UpstreamGroup/endpoints``.
    private(set) var pools: [any EndpointPool]
    /// `Host` for a request that has none (HTTP/1.0) and no `host-rewrite`: the group's first
    /// endpoint's authority, formatted once.
    let fallbackHost: String
    private var nextEndpoint = 0

    init(_ config: UpstreamGroup, eventLoop: any EventLoop, loopIndex: Int, logger: Logger) {
        precondition(!config.endpoints.isEmpty, "validation gives every group an endpoint")
        self.config = config
        self.fallbackHost = config.endpoints[0].authority
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

    /// The endpoint for the next attempt, not one of `tried` while the group has another.
    func pick(excluding tried: EndpointSet) -> Int {
        let count = self.pools.count
        for _ in 0..<count {
            let candidate = self.nextEndpoint
            self.nextEndpoint = (self.nextEndpoint + 1) % count
            if !tried.contains(candidate) { return candidate }
        }
        let candidate = self.nextEndpoint
        self.nextEndpoint = (self.nextEndpoint + 1) % count
        return candidate
    }

    /// An attempt on `endpoint` ended.
    func finished(endpoint: Int, outcome: AttemptOutcome) {}

    func sweep(now: MonotonicInstant) {
        for pool in self.pools { pool.sweep(now: now) }
    }

    /// Drains every endpoint on the upstream side (``EndpointPool/shutdown()``).
    func shutdown() {
        for pool in self.pools { pool.shutdown() }
    }

    var stats: EndpointPoolStats { self.pools.reduce(EndpointPoolStats()) { $0 + $1.stats } }
}

/// How an attempt on an endpoint ended, for the balancer's in-flight counts and outlier detection.
enum AttemptOutcome {
    /// A response came (of any status but those below).
    case success
    /// A connect error, a reset, a timeout, or a 5xx from the upstream.
    case failure
    /// The client went away or the request was refused by Sluice: says nothing about the endpoint.
    case abandoned
}

/// Endpoints of a group already tried by one request (at most 64 are told apart; more is a
/// group too large to retry across usefully).
struct EndpointSet: Equatable {
    private var bits: UInt64 = 0
    static let empty = EndpointSet()

    func contains(_ endpoint: Int) -> Bool { endpoint < 64 && self.bits & (1 << UInt64(endpoint)) != 0 }
    mutating func insert(_ endpoint: Int) { if endpoint < 64 { self.bits |= 1 << UInt64(endpoint) } }
}

/// One request's use of a group: which endpoint its attempt is on, which it tried, how many times.
/// The handler holds it from the routing decision to the end of the exchange; ``begin()`` and
/// ``end(_:)`` pair every pick with its outcome, so in-flight counts cannot drift.
struct UpstreamAttempt {
    let group: LoopUpstreamGroup
    private(set) var endpoint: Int?
    private(set) var tried = EndpointSet.empty
    /// Attempts made so far (1 for the first).
    private(set) var count = 0

    init(group: LoopUpstreamGroup) { self.group = group }

    /// Picks the endpoint of the next attempt and returns its pool.
    mutating func begin() -> any EndpointPool {
        if let endpoint = self.endpoint { self.group.finished(endpoint: endpoint, outcome: .abandoned) }
        let endpoint = self.group.pick(excluding: self.tried)
        self.endpoint = endpoint
        self.tried.insert(endpoint)
        self.count += 1
        return self.group.pools[endpoint]
    }

    /// The attempt in progress ended; nothing if none is.
    mutating func end(_ outcome: AttemptOutcome) {
        guard let endpoint = self.endpoint else { return }
        self.endpoint = nil
        self.group.finished(endpoint: endpoint, outcome: outcome)
    }
}

/// One loop's view of one configuration generation: the routes and a ``LoopUpstreamGroup`` per
/// group. Replaced whole on reload; requests in flight keep the groups they started with.
final class LoopRouting {
    let groups: [LoopUpstreamGroup]
    /// For each route, in order, what a request it matches gets.
    private let targets: [RouteTarget]
    /// Whether any route looks at the host (else the handlers need not find the `Host` field).
    let matchesHosts: Bool

    init(config: SluiceConfig, eventLoop: any EventLoop, loopIndex: Int, logger: Logger) {
        self.groups = config.groups.map { LoopUpstreamGroup($0, eventLoop: eventLoop, loopIndex: loopIndex, logger: logger) }
        var byName: [String: LoopUpstreamGroup] = [:]
        for group in self.groups { byName[group.name] = group }
        self.targets = config.routes.map { route in
            guard let group = byName[route.upstream] else { preconditionFailure("validation makes every route name a group: \(route.upstream)") }
            return RouteTarget(route: route, group: group, maxBodyBytes: route.maxBodyBytes ?? config.http.maxBodyBytes)
        }
        self.matchesHosts = config.routes.contains { $0.host != nil }
    }

    /// The first route that matches, with its group; `nil`: no route (404).
    func route(host: String?, path: String) -> RouteTarget? {
        self.targets.first
    }

    func sweep(now: MonotonicInstant) {
        for group in self.groups { group.sweep(now: now) }
    }

    func shutdown() {
        for group in self.groups { group.shutdown() }
    }

    var stats: EndpointPoolStats { self.groups.reduce(EndpointPoolStats()) { $0 + $1.stats } }
}

/// A route with what serving it needs: its group on this loop and its body limit.
struct RouteTarget {
    let route: Route
    let group: LoopUpstreamGroup
    /// `max-body-size` of the route, else `--max-body-size`; `nil`: unlimited.
    let maxBodyBytes: Int?

    /// The request target the upstream gets for `target` (the route's `strip-prefix`).
    func upstreamTarget(_ target: String) -> String { target }
}
