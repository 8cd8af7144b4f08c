/// Decides, for one endpoint on one event loop, which HTTP/2 (h2c) connection carries a request's
/// stream.
///
/// There is one machine per (group, endpoint, event loop). Which endpoint a request goes to (and,
/// on a retry, which other endpoint) is the group's `Balancer`'s decision; by the time a request
/// reaches this machine the endpoint is chosen, and the machine only spreads streams over the
/// connections to it.
///
/// Pure: it names connections by ``ConnectionID`` and counts streams; the loop's pool executor
/// connects, opens streams and closes. Unlike HTTP/1.1, a connection is shared: a request leases a
/// *stream slot* on it, not the connection.
/// 1. ``lease(now:)`` takes the usable connection (connecting or ready, not going away) with the
///    fewest streams, if that one has a free slot under the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`.
///    Without a free slot it asks for a new connection, up to `maxConnections`; past that the least
///    loaded connection takes the stream anyway (libnghttp2 queues it until a slot frees). A
///    connection still connecting counts as having ``assumedMaxConcurrentStreams`` slots, so a burst
///    waits on one connect instead of opening many.
/// 2. ``streamClosed(_:now:)`` frees the slot; a connection that is going away (the upstream sent
///    GOAWAY) or belongs to a pool shutting down is closed when its last stream ends.
/// 3. ``sweep(now:)`` closes ready connections without streams for `idleTimeout`.
/// 4. ``connectionClosed(_:)`` forgets a connection that closed or failed to connect; the streams
///    waiting on it fail (the executor tells their requests).
/// 5. ``shutdown()`` drains the pool on the upstream side (the process drains, or the endpoint left
///    the group): connections without streams close now, the others when their last stream ends.
///
/// ```swift
/// var pool = HTTP2UpstreamPoolStateMachine<MonotonicInstant>(
///     maxConnections: 4, idleTimeout: .seconds(60), idGenerator: ConnectionID.Generator(loopIndex: 0))
/// switch pool.lease(now: now) {
/// case .use(let id): openStream(on: id)
/// case .wait(let id): openStreamWhenUp(id)
/// case .connect(let id): connect(naming: id); openStreamWhenUp(id)
/// }
/// // The connection's SETTINGS arrived:
/// pool.connected(id, maxConcurrentStreams: 128, now: now)
/// // The stream ended:
/// if pool.streamClosed(id, now: now) == .close { close(id) }
/// ```
public struct HTTP2UpstreamPoolStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    public enum LeaseAction: Equatable, Sendable {
        /// Open the stream on this connection now.
        case use(ConnectionID)
        /// The connection is still connecting: open the stream when it is up.
        case wait(ConnectionID)
        /// Open a new connection to the endpoint, name it with this ID, and open the stream when it is up.
        case connect(ConnectionID)
    }

    public enum CloseAction: Equatable, Sendable {
        /// Keep the connection.
        case keep
        /// Close it: nothing is left on it and nothing new may start.
        case close
    }

    public enum ConnectionState: Equatable, Sendable {
        case connecting
        case ready
        /// The upstream sent GOAWAY: no new streams.
        case goingAway
    }

    private struct Connection {
        var state: ConnectionState
        /// Streams leased on it (open, or waiting for the connect).
        var streams: Int
        var maxStreams: Int
        /// When the last stream ended (nil while streams are open or it is connecting).
        var idleSince: Instant?
    }

    /// Slots a connection is assumed to have before the peer's SETTINGS arrive (RFC 9113 recommends
    /// at least 100 as the advertised value).
    public static var assumedMaxConcurrentStreams: Int { 100 }

    /// The connections the pool knows. Valid transitions: `.connecting` to `.ready`
    /// (``connected(_:maxConcurrentStreams:now:)``) or to `.goingAway` (``goAwayReceived(_:)``);
    /// `.ready` to `.goingAway`; any state to forgotten (a `.close` action, ``sweep(now:)``,
    /// ``shutdown()``, ``connectionClosed(_:)``).
    private var connections: [ConnectionID: Connection] = [:]
    /// The known connections in the order they were opened (ties in ``lease(now:)`` go to the oldest).
    private var opened: [ConnectionID] = []
    private var generator: ConnectionID.Generator
    private var shuttingDown = false
    /// At most this many usable (not going away) connections to the endpoint are opened from this loop.
    public let maxConnections: Int
    /// A ready connection without streams is closed by the sweep after idling this long.
    public let idleTimeout: Duration

    public init(maxConnections: Int, idleTimeout: Duration, idGenerator: ConnectionID.Generator) {
        precondition(maxConnections > 0, "at least one connection per endpoint")
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        self.generator = idGenerator
    }

    /// A stream slot for the next request (also for a retry on the same endpoint). Works after
    /// ``shutdown()`` too: a request accepted before the drain began, or already routed here before
    /// the endpoint was removed, still needs a stream.
    public mutating func lease(now: Instant) -> LeaseAction {
        // The least loaded connection with a free slot; failing that, the least loaded one at all.
        var withRoom: (id: ConnectionID, streams: Int)?
        var least: (id: ConnectionID, streams: Int)?
        var usable = 0
        for id in self.opened {
            guard let connection = self.connections[id], connection.state != .goingAway else { continue }
            usable += 1
            if connection.streams < connection.maxStreams, connection.streams < (withRoom?.streams ?? .max) {
                withRoom = (id, connection.streams)
            }
            if connection.streams < (least?.streams ?? .max) { least = (id, connection.streams) }
        }
        if let id = withRoom?.id ?? (usable >= self.maxConnections ? least?.id : nil) {
            self.connections[id]!.streams += 1
            self.connections[id]!.idleSince = nil
            return self.connections[id]!.state == .connecting ? .wait(id) : .use(id)
        }
        let id = self.generator.make()
        self.connections[id] = Connection(
            state: .connecting,
            streams: 1,
            maxStreams: Self.assumedMaxConcurrentStreams,
            idleSince: nil
        )
        self.opened.append(id)
        return .connect(id)
    }

    /// The connection is up and the peer allows `maxConcurrentStreams` streams.
    public mutating func connected(_ id: ConnectionID, maxConcurrentStreams: Int, now: Instant) {
        guard var connection = self.connections[id], connection.state == .connecting else { return }
        connection.state = .ready
        connection.maxStreams = max(1, maxConcurrentStreams)
        if connection.streams == 0 { connection.idleSince = now }
        self.connections[id] = connection
    }

    /// The peer's SETTINGS changed its stream limit.
    public mutating func maxConcurrentStreamsChanged(_ id: ConnectionID, to maxConcurrentStreams: Int) {
        guard self.connections[id] != nil else { return }
        self.connections[id]!.maxStreams = max(1, maxConcurrentStreams)
    }

    /// A stream leased on `id` ended (completed, reset, or never opened because its request went away).
    public mutating func streamClosed(_ id: ConnectionID, now: Instant) -> CloseAction {
        guard var connection = self.connections[id] else { return .keep }
        precondition(connection.streams > 0, "stream closed on a connection without streams: \(id)")
        connection.streams -= 1
        if connection.streams == 0 {
            if connection.state == .goingAway || (self.shuttingDown && connection.state == .ready) {
                self.forget(id)
                return .close
            }
            if connection.state == .ready { connection.idleSince = now }
        }
        self.connections[id] = connection
        return .keep
    }

    /// The upstream sent GOAWAY: no new streams go to `id`; it closes once its streams end.
    public mutating func goAwayReceived(_ id: ConnectionID) -> CloseAction {
        guard var connection = self.connections[id] else { return .keep }
        connection.state = .goingAway
        connection.idleSince = nil
        if connection.streams == 0 {
            self.forget(id)
            return .close
        }
        self.connections[id] = connection
        return .keep
    }

    /// The connection is gone (closed by either side, or its connect failed).
    public mutating func connectionClosed(_ id: ConnectionID) {
        self.forget(id)
    }

    /// Ready connections to close because they had no stream for `idleTimeout`.
    public mutating func sweep(now: Instant) -> [ConnectionID] {
        var expired: [ConnectionID] = []
        for (id, connection) in self.connections {
            if connection.state == .ready, connection.streams == 0, let since = connection.idleSince,
                since.duration(to: now) >= self.idleTimeout
            {
                expired.append(id)
            }
        }
        expired.sort { $0.rawValue < $1.rawValue }
        for id in expired { self.forget(id) }
        return expired
    }

    /// Drains the endpoint on the upstream side; returns the ready connections without streams to
    /// close now.
    ///
    /// Serves both the process's drain and an endpoint that left its group (a DNS change, a config
    /// reload): from now on no connection is kept idle, so each connection with streams closes when
    /// its last stream ends (``streamClosed(_:now:)`` returns `.close`). A connection still connecting
    /// is left to its streams; if they all went away before it came up, the sweep closes it.
    /// Leasing still works for the requests that were already on their way here. Calling it again
    /// returns nothing.
    public mutating func shutdown() -> [ConnectionID] {
        self.shuttingDown = true
        var idle: [ConnectionID] = []
        for (id, connection) in self.connections where connection.state == .ready && connection.streams == 0 {
            idle.append(id)
        }
        idle.sort { $0.rawValue < $1.rawValue }
        for id in idle { self.forget(id) }
        return idle
    }

    /// The state and stream count of a connection, if the pool knows it.
    public func connection(_ id: ConnectionID) -> (state: ConnectionState, streams: Int, maxStreams: Int)? {
        self.connections[id].map { ($0.state, $0.streams, $0.maxStreams) }
    }

    /// Whether ``shutdown()`` was called. A pool shutting down whose ``counts()`` are both zero holds
    /// no connection any more.
    public var isShuttingDown: Bool { self.shuttingDown }

    /// Connections without streams (idle) and with streams or connecting (busy), for `/status`.
    public func counts() -> (idle: Int, busy: Int) {
        var idle = 0
        var busy = 0
        for connection in self.connections.values {
            if connection.state == .ready && connection.streams == 0 { idle += 1 } else { busy += 1 }
        }
        return (idle, busy)
    }

    private mutating func forget(_ id: ConnectionID) {
        guard self.connections.removeValue(forKey: id) != nil else { return }
        self.opened.removeAll { $0 == id }
    }
}
