/// Decides, for one event loop, which upstream connection a request uses and what happens to a
/// connection when a request is done with it.
///
/// Pure: it names connections by ``ConnectionID`` and returns actions; the loop's pool executor
/// connects, writes and closes.
/// 1. ``lease(now:)`` picks the next upstream round-robin and reuses its most recently parked idle
///    connection (LIFO keeps the warmest connection busy and lets the rest time out), or asks for a
///    new connection.
/// 2. ``release(_:reusable:now:)`` parks a reusable connection unless the upstream already has
///    `maxIdle` idle ones or the pool is shutting down.
/// 3. ``sweep(now:)`` closes connections idle longer than `idleTimeout`.
/// 4. ``connectionClosed(_:)`` forgets a connection the upstream (or an error) closed.
public struct UpstreamPoolStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    public enum LeaseAction: Equatable, Sendable {
        /// Use this idle connection to `upstream` (an index into the configured upstreams).
        case useIdle(ConnectionID, upstream: Int)
        /// Open a new connection to `upstream` and name it `id`.
        case connect(ConnectionID, upstream: Int)
    }

    public enum ReleaseAction: Equatable, Sendable {
        /// Keep the connection for the next request.
        case park
        /// Close it.
        case close
    }

    private struct IdleConnection {
        var id: ConnectionID
        var since: Instant
    }

    private struct UpstreamState {
        /// Parked connections, most recent last.
        var idle: [IdleConnection] = []
        /// Connections leased to requests or connecting.
        var busy: Set<ConnectionID> = []
    }

    private var upstreams: [UpstreamState]
    private var owner: [ConnectionID: Int] = [:]
    private var nextUpstream = 0
    private var generator: ConnectionID.Generator
    private var shuttingDown = false
    public let maxIdle: Int
    public let idleTimeout: Duration

    public init(upstreamCount: Int, maxIdle: Int, idleTimeout: Duration, idGenerator: ConnectionID.Generator) {
        precondition(upstreamCount > 0, "the config reader requires an upstream")
        self.upstreams = Array(repeating: UpstreamState(), count: upstreamCount)
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.generator = idGenerator
    }

    /// A connection for the next request, round-robin over upstreams.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func lease(now: Instant) -> LeaseAction {
        let upstream = self.nextUpstream
        self.nextUpstream = (self.nextUpstream + 1) % self.upstreams.count
        return self.lease(upstream: upstream, now: now)
    }

    /// A connection to one upstream; used for the retry on another connection.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func lease(upstream: Int, now: Instant) -> LeaseAction {
        precondition(self.upstreams.indices.contains(upstream), "upstream index in range")
        if let idle = self.upstreams[upstream].idle.popLast() {
            self.upstreams[upstream].busy.insert(idle.id)
            return .useIdle(idle.id, upstream: upstream)
        }
        let id = self.generator.make()
        self.upstreams[upstream].busy.insert(id)
        self.owner[id] = upstream
        return .connect(id, upstream: upstream)
    }

    /// The index after `upstream`, for a retry on another upstream (the same one when there is one).
    public func upstream(after upstream: Int) -> Int { (upstream + 1) % self.upstreams.count }

    /// A request is done with the connection.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func release(_ id: ConnectionID, reusable: Bool, now: Instant) -> ReleaseAction {
        guard let upstream = self.owner[id], self.upstreams[upstream].busy.remove(id) != nil else {
            preconditionFailure("released a connection that was not leased: \(id)")
        }
        guard reusable, !self.shuttingDown, self.upstreams[upstream].idle.count < self.maxIdle else {
            self.owner[id] = nil
            return .close
        }
        self.upstreams[upstream].idle.append(IdleConnection(id: id, since: now))
        return .park
    }

    /// The connection is gone (closed by the upstream, failed to connect, or closed by us).
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func connectionClosed(_ id: ConnectionID) {
        guard let upstream = self.owner.removeValue(forKey: id) else { return }
        self.upstreams[upstream].busy.remove(id)
        self.upstreams[upstream].idle.removeAll { $0.id == id }
    }

    /// Idle connections to close because they idled longer than `idleTimeout`.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func sweep(now: Instant) -> [ConnectionID] {
        var expired: [ConnectionID] = []
        for index in self.upstreams.indices {
            self.upstreams[index].idle.removeAll { connection in
                guard connection.since.duration(to: now) >= self.idleTimeout else { return false }
                expired.append(connection.id)
                return true
            }
        }
        for id in expired { self.owner[id] = nil }
        return expired
    }

    /// Stop parking connections; returns the idle ones to close.
    public mutating func shutdown() -> [ConnectionID] {
        self.shuttingDown = true
        var idle: [ConnectionID] = []
        for index in self.upstreams.indices {
            idle += self.upstreams[index].idle.map(\.id)
            self.upstreams[index].idle.removeAll()
        }
        for id in idle { self.owner[id] = nil }
        return idle
    }

    /// Idle and busy connections per upstream, for `/status`.
    public func counts() -> [(idle: Int, busy: Int)] {
        self.upstreams.map { ($0.idle.count, $0.busy.count) }
    }
}
