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
    /// The routes and upstream groups of the configuration in force; replaced whole on reload.
    private(set) var routing: LoopRouting
    var stats = RequestStats()
    /// Retries in flight may be at most 20% of requests in flight (at least 3), on this loop.
    let retryBudget = LoopRetryBudget()
    let requestLimits: RequestRules.Limits
    let logger: Logger
    var listeners: [any Channel] = []

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

    init(index: Int, eventLoop: any EventLoop, config: SluiceConfig, logger: Logger, report: @escaping @Sendable (LoopEvent) -> Void) {
        self.index = index
        self.eventLoop = eventLoop
        self.logger = logger
        self.report = report
        self.ids = ConnectionID.Generator(loopIndex: index)
        self.table = ConnectionTable(
            timeouts: .init(
                requestHeader: config.http.requestHeaderTimeout,
                idle: config.http.idleTimeout,
                drainQuiet: config.drain.idleQuietPeriod,
                requestBody: config.http.requestBodyTimeout
            )
        )
        self.routing = LoopRouting(config: config, eventLoop: eventLoop, loopIndex: index, logger: logger)
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
        case .starting, .serving, .stopped: break
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
        for (id, action) in self.table.beginDraining(now: .now()) {
            switch action {
            case .close: self.connections[id]?.close()
            case .sendFinalGoAway: self.connections[id]?.beginGracefulShutdown()
            }
        }
        // One more turn of the loop lets the listeners accept what is already queued before they close.
        let listeners = self.listeners
        self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { [self] in
            let closes = listeners.map { $0.close() }
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
        for listener in self.listeners { listener.close(promise: nil) }
        self.routing.shutdown()
        return cut
    }

    private func reportIfDrained() {
        guard self.phase == .draining, self.listenersClosed, self.table.isEmpty, !self.drainedReported else { return }
        self.drainedReported = true
        self.routing.shutdown()
        self.report(.drained(loop: self.index))
    }

    // MARK: Status

    func snapshot() -> LoopSnapshot {
        self.eventLoop.assertInEventLoop()
        var stats = self.stats
        let poolStats = self.routing.stats
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
            upstreams: zip(lhs.upstreams, rhs.upstreams).map { UpstreamCounts(group: $0.group, endpoint: $0.endpoint, idle: $0.idle + $1.idle, busy: $0.busy + $1.busy) },
            http2BufferedBytes: lhs.http2BufferedBytes + rhs.http2BufferedBytes
        )
    }
}
