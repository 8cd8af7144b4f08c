import Logging
import NIOConcurrencyHelpers
import NIOCore
import SluiceCore

/// How the upstream services (health checks, name resolution) reach every loop's current routing,
/// without holding it: each call looks the group up again on its loop, so a reload's new
/// ``LoopRouting`` is what it finds.
struct LoopRoutingAccess: Sendable {
    struct Loop: Sendable {
        let eventLoop: any EventLoop
        /// The loop's routing now; call it on `eventLoop` only.
        let routing: @Sendable () -> LoopRouting
    }

    let loops: [Loop]

    /// Runs `body` with the group named `name` on every loop that has it (`execute`: no lock, no wait).
    func forEachGroup(named name: String, _ body: @escaping @Sendable (LoopUpstreamGroup) -> Void) {
        for loop in self.loops {
            loop.eventLoop.execute {
                if let group = loop.routing().group(named: name) { body(group) }
            }
        }
    }

    /// The loop that runs the health checks of the `index`-th group.
    func eventLoop(forGroupIndex index: Int) -> any EventLoop { self.loops[index % self.loops.count].eventLoop }

    /// Every loop's groups, summed by group and endpoint (see ``GroupSnapshot``), on `eventLoop`.
    func snapshot(on eventLoop: any EventLoop) -> EventLoopFuture<[GroupSnapshot]> {
        let futures = self.loops.map { loop in loop.eventLoop.submit { loop.routing().groups.map { $0.snapshot() } } }
        return EventLoopFuture.whenAllSucceed(futures, on: eventLoop).map { GroupSnapshot.merge($0) }
    }
}

extension LoopRouting {
    /// The group of this configuration generation named `name`, if any.
    func group(named name: String) -> LoopUpstreamGroup? {
        self.groups.first { $0.name == name }
    }
}

/// One group as `/status` and `/metrics` show it: its endpoints with health, ejection and pool
/// counts, and its counters; one loop's, or summed over loops (``merge(_:)``).
struct GroupSnapshot: Sendable {
    struct Endpoint: Sendable {
        var url: UpstreamURL
        var key: String
        /// `nil`: the group has no checks, or they have not reported yet (shown as `unknown`).
        var health: EndpointHealth?
        /// Ejected by the outlier detector of some loop.
        var ejected: Bool
        /// Removed (DNS answer changed): drained on the upstream side, shown until its last connection closes.
        var draining: Bool
        var idle: Int
        var busy: Int
    }

    var name: String
    var scheme: UpstreamURL.Scheme
    var balance: BalancePolicy
    var endpoints: [Endpoint]
    var counters: GroupCounters

    /// Sums per-loop snapshots by group name and by endpoint (key and whether draining): loops may
    /// briefly differ in their endpoints while a DNS answer reaches them one after another.
    static func merge(_ perLoop: [[GroupSnapshot]]) -> [GroupSnapshot] {
        var order: [String] = []
        var byName: [String: GroupSnapshot] = [:]
        for groups in perLoop {
            for group in groups {
                guard var sum = byName[group.name] else {
                    order.append(group.name)
                    byName[group.name] = group
                    continue
                }
                sum.counters = sum.counters + group.counters
                for endpoint in group.endpoints {
                    if let index = sum.endpoints.firstIndex(where: { $0.key == endpoint.key && $0.draining == endpoint.draining }) {
                        sum.endpoints[index].idle += endpoint.idle
                        sum.endpoints[index].busy += endpoint.busy
                        sum.endpoints[index].ejected = sum.endpoints[index].ejected || endpoint.ejected
                        if sum.endpoints[index].health == nil { sum.endpoints[index].health = endpoint.health }
                    } else {
                        sum.endpoints.append(endpoint)
                    }
                }
                byName[group.name] = sum
            }
        }
        return order.map { byName[$0]! }
    }
}

/// The upstream side's background work for one server: name re-resolution (``EndpointResolver``)
/// and active health checks (``HealthCheckers``), wired together: a new DNS answer goes to every
/// loop's group and to the group's health checker.
///
/// 1. ``start(groups:)`` (from ``ProxyServer/start()``) resolves names (waiting, bounded, for the
///    first answers) and starts the checks.
/// 2. ``update(groups:)``: a reload's new groups, after every loop installed its new routing. Keeps
///    what is unchanged, stops what was removed, and republishes each group's endpoints and health
///    to every loop, so the new ``LoopUpstreamGroup``s start from what is known.
/// 3. ``stop()`` at shutdown or forced close.
final class UpstreamServices: Sendable {
    let loops: LoopRoutingAccess
    let resolver: EndpointResolver
    let health: HealthCheckers

    init(loops: LoopRoutingAccess, resolver: any EndpointResolving, logger: Logger) {
        self.loops = loops
        let health = HealthCheckers(loops: loops, logger: logger)
        self.health = health
        self.resolver = EndpointResolver(resolver: resolver, logger: logger) { group, endpoints in
            loops.forEachGroup(named: group) { $0.setEndpoints(endpoints) }
            health.setEndpoints(group: group, endpoints)
        }
    }

    func start(groups: [UpstreamGroup]) async {
        await self.resolver.start(groups: groups)
        self.health.update(groups: groups) { self.resolver.endpoints(of: $0) }
    }

    func update(groups: [UpstreamGroup]) {
        self.resolver.update(groups: groups)
        for group in groups where EndpointResolver.hasNames(group) {
            let endpoints = self.resolver.endpoints(of: group)
            self.loops.forEachGroup(named: group.name) { $0.setEndpoints(endpoints) }
        }
        self.health.update(groups: groups) { self.resolver.endpoints(of: $0) }
    }

    func stop() {
        self.resolver.stop()
        self.health.stop()
    }

    /// `ready-requires`: the first of `groups` that has health checks and no endpoint that passed
    /// them yet; `nil` when all are ready. A group without `health:` counts as ready.
    func groupWaitingForHealth(_ required: [String], groups: [UpstreamGroup]) -> String? {
        let status = self.health.status()
        for name in required {
            guard let group = groups.first(where: { $0.name == name }), group.health != nil else { continue }
            if status[name]?.hasHealthyEndpoint != true { return name }
        }
        return nil
    }
}

extension ProxyServer {
    /// What `/readyz` answers.
    enum Readiness: Equatable {
        case ready
        /// 503 with this reason (the phase, or the group `ready-requires` waits for).
        case notReady(String)
    }

    /// Ready while the phase is (`serving`) and, with `ready-requires`, once each named group that has
    /// health checks has an endpoint that passed them. The phase is asked first, so readiness never
    /// returns to 200 once draining began, whatever the upstreams do.
    func readiness(_ state: PhaseState) -> Readiness {
        guard state.phase.isReady else { return .notReady(state.phase.rawValue) }
        guard state.appReady else { return .notReady("waiting for the app to answer") }
        guard !self.config.readyRequires.isEmpty else { return .ready }
        if let group = self.upstreamServices.groupWaitingForHealth(self.config.readyRequires, groups: self.config.groups) {
            return .notReady("waiting for a healthy endpoint in \(group)")
        }
        return .ready
    }
}
