import Logging
import NIOCore
import SluiceCore

/// A downstream connection as the drain sees it.
protocol DownstreamConnection: AnyObject {
    /// Close now (idle drain close, forced close).
    func close()
    /// The connection table's sweep found the connection's time up; HTTP/1 may answer 408 first.
    func timedOut(_ reason: ConnectionTable<MonotonicInstant>.SweepReason)
    /// `propagating` began: HTTP/2 sends the GOAWAY shutdown notice. HTTP/1 does nothing (its
    /// responses start carrying `Connection: close` by the connection table's decision).
    func sendShutdownNotice()
    /// `draining` began: HTTP/2 sends the final GOAWAY and closes when its streams are done.
    func beginGracefulShutdown()
    /// Response bytes the connection holds for its client (HTTP/2: queued on its streams).
    var bufferedResponseBytes: Int { get }
}

extension DownstreamConnection {
    func timedOut(_ reason: ConnectionTable<MonotonicInstant>.SweepReason) { self.close() }
    func sendShutdownNotice() {}
    func beginGracefulShutdown() {}
    var bufferedResponseBytes: Int { 0 }
}

extension DownstreamHTTP1Handler: DownstreamConnection {}

/// What a loop tells the drain coordinator.
enum LoopEvent: Sendable {
    /// In `draining`, this loop's listener is closed and its last connection is gone.
    case drained(loop: Int)
}

/// Everything one event loop owns: its listener, its share of the connection table, its routes and
/// upstream groups (with their pools) and its counters. Confined to the loop (every method asserts it); other threads reach it
/// through `NIOLoopBound` and `eventLoop.execute`.
final class LoopContext {
    let index: Int
    let eventLoop: any EventLoop
    var table: ConnectionTable<MonotonicInstant>
    /// The routes and upstream groups of the configuration in force; replaced whole on reload
    /// (``applyReload(_:opening:closing:)``).
    private(set) var routing: LoopRouting
    /// Groups a reload took out of ``routing`` (removed or changed) that still have connections: they
    /// are shut down (no new connection is parked, busy ones close when their request ends) and swept
    /// (idle and response-header timeouts) until their last connection is gone.
    private var retiredGroups: [LoopUpstreamGroup] = []
    /// What the retired groups that are gone had counted, so that the summed counters never go back.
    private var retiredStats = EndpointPoolStats()
    var stats = RequestStats()
    /// Retries in flight may be at most 20% of requests in flight (at least 3), on this loop.
    let retryBudget = LoopRetryBudget()
    let requestLimits: RequestRules.Limits
    /// Over how long, from the start of `draining`, the WebSocket tunnels are told to close (each at
    /// its own random moment, so clients do not reconnect in one burst): half of `drain-timeout`,
    /// leaving the other half for the close handshakes and the requests still in flight. HTTP/2
    /// connections read it when they send their final GOAWAY, for their WebSocket streams.
    let tunnelCloseWindow: Duration
    let logger: Logger
    /// Where upstream groups count what they count outside the loop snapshots (upstream TLS failures).
    let metrics: ProxyMetrics?
    /// This loop's listeners (one per configured address, SO_REUSEPORT), by configured address.
    private(set) var listeners: [BoundListener] = []

    private var connections: [ConnectionID: any DownstreamConnection] = [:]
    private var ids: ConnectionID.Generator
    private var random = SystemRandomNumberGenerator()
    private(set) var phase: DrainPhase = .serving
    private var listenersClosed = false
    private var drainedReported = false
    private let report: @Sendable (LoopEvent) -> Void
    private var sweepTask: Scheduled<Void>?
    private var lastMemoryRelease = MonotonicInstant.now()
    static let sweepInterval: TimeAmount = .milliseconds(100)

    init(
        index: Int, eventLoop: any EventLoop, config: SluiceConfig, logger: Logger, metrics: ProxyMetrics? = nil,
        report: @escaping @Sendable (LoopEvent) -> Void
    ) {
        self.index = index
        self.metrics = metrics
        self.eventLoop = eventLoop
        self.logger = logger
        self.report = report
        self.ids = ConnectionID.Generator(loopIndex: index)
        self.table = ConnectionTable(
            timeouts: .init(
                requestHeader: config.http.requestHeaderTimeout,
                idle: config.http.idleTimeout,
                drainQuiet: config.drain.idleQuietPeriod,
                requestBody: config.http.requestBodyTimeout,
                tunnelIdle: config.http.tunnelIdleTimeout
            )
        )
        self.tunnelCloseWindow = config.drain.timeout / 2
        self.routing = LoopRouting(config: config, eventLoop: eventLoop, loopIndex: index, logger: logger, metrics: metrics)
        // The body limit is the route's (``RouteTarget/maxBodyBytes``), applied once the request is routed.
        self.requestLimits = RequestRules.Limits(maxHeaderBytes: config.http.maxHeaderBytes, maxBodyBytes: nil)
    }

    // MARK: Connections

    func register(_ connection: any DownstreamConnection, protocol proto: ConnectionProtocol, peer: String) -> ConnectionID {
        self.eventLoop.assertInEventLoop()
        let id = self.ids.make()
        self.table.add(id, protocol: proto, peer: peer, now: .now(), using: &self.random)
        self.connections[id] = connection
        return id
    }

    /// A connection registered at accept turned out to speak `proto` (h2c prior knowledge was
    /// detected): `connection` takes over its entry. A drain that has begun reaches it at once, as
    /// ``ConnectionTable/add(_:protocol:peer:now:using:)`` gives no action for a late arrival.
    func adopt(_ id: ConnectionID, connection: any DownstreamConnection, protocol proto: ConnectionProtocol) {
        self.eventLoop.assertInEventLoop()
        if self.table[id]?.protocol != proto { self.table.setProtocol(id, proto) }
        self.connections[id] = connection
        switch self.phase {
        case .starting, .serving, .rehearsing, .stopped: break
        case .propagating: connection.sendShutdownNotice()
        case .draining: connection.beginGracefulShutdown()
        case .forced: connection.close()
        }
    }

    func unregister(_ id: ConnectionID) {
        self.eventLoop.assertInEventLoop()
        self.table.remove(id)
        self.connections[id] = nil
        self.reportIfDrained()
    }

    // MARK: Time

    func startSweeping() {
        self.eventLoop.assertInEventLoop()
        self.sweepTask = self.eventLoop.assumeIsolated().scheduleTask(in: Self.sweepInterval) { [self] in
            self.sweep()
            self.startSweeping()
        }
    }

    func stopSweeping() {
        self.sweepTask?.cancel()
        self.sweepTask = nil
    }

    func sweep() {
        self.eventLoop.assertInEventLoop()
        let now = MonotonicInstant.now()
        if self.index == 0 { self.releaseMemoryIfDue(now: now) }
        for (id, reason) in self.table.sweep(now: now) {
            self.logger.debug("closing connection", metadata: ["connection": "\(id)", "reason": "\(reason.rawValue)"])
            self.connections[id]?.timedOut(reason)
        }
        self.routing.sweep(now: now)
        self.sweepRetiredGroups(now: now)
    }

    /// Loop 0 gives free heap memory back to the system every ``MemoryRelease/interval``.
    private func releaseMemoryIfDue(now: MonotonicInstant) {
        guard self.lastMemoryRelease.duration(to: now) >= MemoryRelease.interval else { return }
        self.lastMemoryRelease = now
        if let free = MemoryRelease.releaseIfWorthIt() {
            self.logger.debug("returned free heap memory to the system", metadata: ["free_bytes": "\(free)"])
        }
    }

    // MARK: Drain

    func beginPropagating(until: MonotonicInstant) {
        self.eventLoop.assertInEventLoop()
        self.phase = .propagating
        for (id, action) in self.table.beginPropagating(now: .now(), until: until, using: &self.random) {
            switch action {
            case .sendShutdownNotice: self.connections[id]?.sendShutdownNotice()
            }
        }
    }

    func beginDraining() {
        self.eventLoop.assertInEventLoop()
        self.phase = .draining
        for (id, action) in self.table.beginDraining(now: .now(), tunnelCloseWindow: self.tunnelCloseWindow, using: &self.random) {
            switch action {
            case .close: self.connections[id]?.close()
            case .sendFinalGoAway: self.connections[id]?.beginGracefulShutdown()
            }
        }
        // One more turn of the loop lets the listeners accept what is already queued before they close.
        let listeners = self.listeners
        self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { [self] in
            let closes = listeners.map { $0.channel.close() }
            EventLoopFuture.andAllComplete(closes, on: self.eventLoop).assumeIsolated().whenComplete { _ in
                self.listenersClosed = true
                self.reportIfDrained()
            }
        }
    }

    /// Closes every connection now; returns how many were cut.
    func forceClose() -> Int {
        self.eventLoop.assertInEventLoop()
        self.phase = .forced
        let cut = self.connections.count
        self.stats.forcedCloses += cut
        for connection in Array(self.connections.values) { connection.close() }
        for listener in self.listeners { listener.channel.close(promise: nil) }
        self.routing.shutdown()
        for group in self.retiredGroups { group.shutdown() }
        return cut
    }

    private func reportIfDrained() {
        guard self.phase == .draining, self.listenersClosed, self.table.isEmpty, !self.drainedReported else { return }
        self.drainedReported = true
        self.routing.shutdown()
        self.report(.drained(loop: self.index))
    }

    // MARK: Reload

    /// Adds a listener bound for this loop (at start-up or by a reload). Once `draining` has begun
    /// there is nothing to add it to: it is closed at once.
    func addListener(_ channel: any Channel, address: HostPort) {
        self.eventLoop.assertInEventLoop()
        guard self.phase < .draining else {
            channel.close(promise: nil)
            return
        }
        self.listeners.append(BoundListener(address: address, channel: channel))
    }

    /// Puts a reloaded configuration in force on this loop, in one turn of the loop:
    /// 1. `opening` (this loop's channels of the new listen addresses) join the listeners;
    /// 2. a new ``LoopRouting`` replaces the old one, keeping its unchanged groups; requests already
    ///    routed keep the groups they hold;
    /// 3. the groups taken out are shut down: idle connections close now, busy ones when their
    ///    request ends (they are swept until then);
    /// 4. the listeners of `closing` stop accepting (after one more turn, as in `draining`); the
    ///    connections they accepted are served on and end by their own idle timeout.
    ///
    /// Returns `false`, changing nothing (and closing `opening`), once a drain has begun: the drain
    /// has closed, or is closing, the listeners and groups it knows of.
    func applyReload(_ config: SluiceConfig, opening: [BoundListener], closing: Set<HostPort>) -> Bool {
        self.eventLoop.assertInEventLoop()
        guard self.phase < .propagating else {
            for listener in opening { listener.channel.close(promise: nil) }
            return false
        }
        self.listeners += opening
        let previous = self.routing
        let next = LoopRouting(
            config: config, eventLoop: self.eventLoop, loopIndex: self.index, logger: self.logger, metrics: self.metrics, reusing: previous)
        self.routing = next
        let retired = previous.retired(by: next)
        for group in retired { group.shutdown() }
        self.retiredGroups += retired
        let removed = self.listeners.filter { closing.contains($0.address) }
        self.listeners.removeAll { closing.contains($0.address) }
        if !removed.isEmpty {
            self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(20)) {
                for listener in removed { listener.channel.close(promise: nil) }
            }
        }
        return true
    }

    /// Sweeps the retired groups and lets go of those whose last connection is gone.
    private func sweepRetiredGroups(now: MonotonicInstant) {
        guard !self.retiredGroups.isEmpty else { return }
        for group in self.retiredGroups { group.sweep(now: now) }
        let gone = self.retiredGroups.filter { group in group.pools.allSatisfy { $0.counts().idle == 0 && $0.counts().busy == 0 } }
        guard !gone.isEmpty else { return }
        self.retiredStats = gone.reduce(self.retiredStats) { $0 + $1.stats }
        self.retiredGroups.removeAll { group in gone.contains { $0 === group } }
    }

    /// The groups of the routing in force, for tests: which objects a reload kept.
    var groupIdentities: [String: ObjectIdentifier] {
        var identities: [String: ObjectIdentifier] = [:]
        for group in self.routing.groups { identities[group.name] = ObjectIdentifier(group) }
        return identities
    }

    // MARK: Status

    func snapshot() -> LoopSnapshot {
        self.eventLoop.assertInEventLoop()
        var stats = self.stats
        let poolStats = self.routing.stats + self.retiredGroups.reduce(self.retiredStats) { $0 + $1.stats }
        stats.upstreamConnectErrors = poolStats.connectErrors
        stats.upstreamUnsolicitedBytes = poolStats.unsolicitedBytesCloses
        let buffered = self.connections.values.reduce(0) { $0 + $1.bufferedResponseBytes }
        return LoopSnapshot(
            connections: self.table.counts(), stats: stats,
            upstreams: self.routing.groups.flatMap { group in
                group.pools.map { UpstreamCounts(group: group.name, endpoint: $0.endpoint, idle: $0.counts().idle, busy: $0.counts().busy) }
            },
            http2BufferedBytes: buffered
        )
    }
}

/// One endpoint's pooled connections on a loop (summed over loops for `/status`).
struct UpstreamCounts: Sendable {
    var group: String
    var endpoint: UpstreamURL
    var idle: Int
    var busy: Int

    /// `lhs` and `rhs` summed by group and endpoint, in `lhs`'s order (then what only `rhs` has): two
    /// loops may be a reload apart when a snapshot is taken, so their lists need not line up.
    static func sum(_ lhs: [UpstreamCounts], _ rhs: [UpstreamCounts]) -> [UpstreamCounts] {
        var result = lhs
        for counts in rhs {
            if let index = result.firstIndex(where: { $0.group == counts.group && $0.endpoint == counts.endpoint }) {
                result[index].idle += counts.idle
                result[index].busy += counts.busy
            } else {
                result.append(counts)
            }
        }
        return result
    }
}

/// A listener on one loop, with the address it was configured as (port 0 included), by which a
/// reload tells which listeners to keep.
struct BoundListener {
    let address: HostPort
    let channel: any Channel
}

/// One loop's counts, summed by ``ProxyServer/snapshot()``.
struct LoopSnapshot: Sendable {
    var connections: ConnectionTable<MonotonicInstant>.Counts
    var stats: RequestStats
    var upstreams: [UpstreamCounts]
    /// Response bytes queued on HTTP/2 streams, not yet sent to their clients.
    var http2BufferedBytes = 0

    static func + (lhs: LoopSnapshot, rhs: LoopSnapshot) -> LoopSnapshot {
        LoopSnapshot(
            connections: lhs.connections + rhs.connections,
            stats: lhs.stats + rhs.stats,
            upstreams: UpstreamCounts.sum(lhs.upstreams, rhs.upstreams),
            http2BufferedBytes: lhs.http2BufferedBytes + rhs.http2BufferedBytes
        )
    }
}
