/// Decides, for one endpoint on one event loop, which HTTP/1.1 connection a request uses and what
/// happens to a connection when a request is done with it.
///
/// There is one machine per (group, endpoint, event loop). Which endpoint a request goes to (and,
/// on a retry, which other endpoint) is the group's `Balancer`'s decision; by the time a request
/// reaches this machine the endpoint is chosen, and the machine only manages the connections to it.
///
/// Pure: it names connections by ``ConnectionID`` and returns actions; the loop's pool executor
/// connects, writes and closes.
/// 1. ``lease(now:)`` reuses the most recently parked idle connection (LIFO keeps the warmest
///    connection busy and lets the rest time out), or asks for a new connection.
/// 2. ``release(_:reusable:now:)`` parks a reusable connection unless `maxIdle` are already idle or
///    the pool is shutting down.
/// 3. ``sweep(now:)`` closes connections idle longer than `idleTimeout`.
/// 4. ``connectionClosed(_:)`` forgets a connection the upstream (or an error) closed.
/// 5. ``shutdown()`` drains the pool on the upstream side (the process drains, or the endpoint left
///    the group): idle connections close now, busy ones close when their request ends.
///
/// ```swift
/// var pool = UpstreamPoolStateMachine<MonotonicInstant>(
///     maxIdle: 32, idleTimeout: .seconds(60), idGenerator: ConnectionID.Generator(loopIndex: 0))
/// let id: ConnectionID
/// switch pool.lease(now: now) {
/// case .useIdle(let idle): id = idle
/// case .connect(let new): id = new; connect(naming: new)
/// }
/// // … the request goes out on `id`; its response ends and the connection may carry another:
/// if pool.release(id, reusable: true, now: now) == .close { close(id) }
/// ```
public struct UpstreamPoolStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    public enum LeaseAction: Equatable, Sendable {
        /// Use this idle connection to the endpoint.
        case useIdle(ConnectionID)
        /// Open a new connection to the endpoint and name it with this ID.
        case connect(ConnectionID)
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

    /// Parked connections, most recent last. Valid transitions: to `busy` (``lease(now:)``), or
    /// forgotten (``sweep(now:)``, ``shutdown()``, ``connectionClosed(_:)``).
    private var idle: [IdleConnection] = []
    /// Connections leased to requests or connecting. Valid transitions: to `idle`
    /// (``release(_:reusable:now:)`` with `.park`), or forgotten (`.close`, ``connectionClosed(_:)``).
    private var busy: Set<ConnectionID> = []
    private var generator: ConnectionID.Generator
    private var shuttingDown = false
    /// At most this many idle connections are kept.
    public let maxIdle: Int
    /// An idle connection is closed by the sweep after idling this long.
    public let idleTimeout: Duration

    public init(maxIdle: Int, idleTimeout: Duration, idGenerator: ConnectionID.Generator) {
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.generator = idGenerator
    }

    /// A connection to the endpoint for the next request (also for a retry on another connection
    /// to the same endpoint). Works after ``shutdown()`` too: a request accepted before the drain
    /// began, or already routed here before the endpoint was removed, still needs a connection.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func lease(now: Instant) -> LeaseAction {
        if let idle = self.idle.popLast() {
            self.busy.insert(idle.id)
            return .useIdle(idle.id)
        }
        let id = self.generator.make()
        self.busy.insert(id)
        return .connect(id)
    }

    /// A request is done with the connection.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func release(_ id: ConnectionID, reusable: Bool, now: Instant) -> ReleaseAction {
        guard self.busy.remove(id) != nil else {
            preconditionFailure("released a connection that was not leased: \(id)")
        }
        guard reusable, !self.shuttingDown, self.idle.count < self.maxIdle else {
            return .close
        }
        self.idle.append(IdleConnection(id: id, since: now))
        return .park
    }

    /// The connection is gone (closed by the upstream, failed to connect, or closed by us).
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func connectionClosed(_ id: ConnectionID) {
        if self.busy.remove(id) == nil {
            self.idle.removeAll { $0.id == id }
        }
    }

    /// Idle connections to close because they idled longer than `idleTimeout`.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func sweep(now: Instant) -> [ConnectionID] {
        var expired: [ConnectionID] = []
        self.idle.removeAll { connection in
            guard connection.since.duration(to: now) >= self.idleTimeout else { return false }
            expired.append(connection.id)
            return true
        }
        return expired
    }

    /// Drains the endpoint on the upstream side; returns the idle connections to close now.
    ///
    /// Serves both the process's drain and an endpoint that left its group (a DNS change, a config
    /// reload): from now on nothing is parked, so each busy connection closes when its request ends
    /// (``release(_:reusable:now:)`` returns `.close`). Leasing still works for the requests that
    /// were already on their way here. Calling it again returns nothing.
    public mutating func shutdown() -> [ConnectionID] {
        self.shuttingDown = true
        let idle = self.idle.map(\.id)
        self.idle.removeAll()
        return idle
    }

    /// Whether ``shutdown()`` was called. A pool shutting down whose ``counts()`` are both zero holds
    /// no connection any more.
    public var isShuttingDown: Bool { self.shuttingDown }

    /// Idle and busy connections, for `/status`.
    public func counts() -> (idle: Int, busy: Int) {
        (self.idle.count, self.busy.count)
    }
}
