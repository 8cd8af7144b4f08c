import Logging
import NIOCore
import SluiceCore

/// One loop's view of one configuration generation: the routes and a ``LoopUpstreamGroup`` per
/// group. Replaced whole on reload; requests in flight keep the groups they started with.
///
/// 1. Built from a configuration alone at start-up; on reload built ``init(config:eventLoop:loopIndex:logger:reusing:)``
///    the previous routing, whose groups with an unchanged ``UpstreamGroup`` value are taken over as
///    they are (pools, balancer, outlier state): a reload that only adds a route reconnects nothing.
/// 2. ``retired(by:)`` names the previous groups the new routing does not hold (removed or changed);
///    the loop shuts them down (``LoopUpstreamGroup/shutdown()``) once the new routing is in place.
///
/// ```swift
/// let next = LoopRouting(config: new, eventLoop: loop, loopIndex: 0, logger: logger, reusing: self.routing)
/// let retired = self.routing.retired(by: next)
/// self.routing = next
/// for group in retired { group.shutdown() }
/// ```
final class LoopRouting {
    let groups: [LoopUpstreamGroup]
    let router: Router
    /// For each route, in order, what a request it matches gets.
    private let targets: [RouteTarget]
    /// Whether any route looks at the host (else the handlers need not find the `Host` field).
    let matchesHosts: Bool

    init(
        config: SluiceConfig, eventLoop: any EventLoop, loopIndex: Int, logger: Logger, metrics: ProxyMetrics? = nil, reusing previous: LoopRouting? = nil
    ) {
        var previousGroups: [String: LoopUpstreamGroup] = [:]
        for group in previous?.groups ?? [] { previousGroups[group.name] = group }
        self.groups = config.groups.map { group -> LoopUpstreamGroup in
            if let kept = previousGroups[group.name], kept.config == group { return kept }
            return LoopUpstreamGroup(group, eventLoop: eventLoop, loopIndex: loopIndex, logger: logger, metrics: metrics)
        }
        var byName: [String: LoopUpstreamGroup] = [:]
        for group in self.groups { byName[group.name] = group }
        self.targets = config.routes.map { route in
            guard let group = byName[route.upstream] else { preconditionFailure("validation makes every route name a group: \(route.upstream)") }
            return RouteTarget(
                route: route, group: group, maxBodyBytes: route.maxBodyBytes ?? config.http.maxBodyBytes,
                retryPolicy: RetryPolicy(group: group.config, route: route))
        }
        self.router = Router(routes: config.routes)
        self.matchesHosts = config.routes.contains { $0.host != nil }
    }

    /// The first route that matches, with its group; `nil`: no route (404).
    func route(host: String?, path: String) -> RouteTarget? {
        self.router.match(host: host, path: path).map { self.targets[$0] }
    }

    func sweep(now: MonotonicInstant) {
        for group in self.groups { group.sweep(now: now) }
    }

    /// This routing's groups that `next` does not hold (removed, or replaced because they changed).
    func retired(by next: LoopRouting) -> [LoopUpstreamGroup] {
        let kept = Set(next.groups.map(ObjectIdentifier.init))
        return self.groups.filter { !kept.contains(ObjectIdentifier($0)) }
    }

    func shutdown() {
        for group in self.groups { group.shutdown() }
    }

    var stats: EndpointPoolStats { self.groups.reduce(EndpointPoolStats()) { $0 + $1.stats } }
}

/// A route with what serving it needs: its group on this loop, its body limit and retry policy.
/// A class: handed to every request the route matches, it is one reference, not a copy of the route.
final class RouteTarget {
    let route: Route
    let group: LoopUpstreamGroup
    /// `max-body-size` of the route, else `--max-body-size`; `nil`: unlimited.
    let maxBodyBytes: Int?
    /// The group's retries and replay buffer with the route's `retry-on-5xx`.
    let retryPolicy: RetryPolicy

    init(route: Route, group: LoopUpstreamGroup, maxBodyBytes: Int?, retryPolicy: RetryPolicy) {
        self.route = route
        self.group = group
        self.maxBodyBytes = maxBodyBytes
        self.retryPolicy = retryPolicy
    }

    /// The request target the upstream gets for `target` (the route's `strip-prefix`).
    func upstreamTarget(_ target: String) -> String {
        guard case .prefix(let prefix) = self.route.path else { return target }
        return Router.stripPrefix(prefix, from: target)
    }
}
