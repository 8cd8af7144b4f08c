/// Decides, for one event loop, which HTTP/2 (h2c) upstream connection carries a request's stream.
///
/// Pure: it names connections by ``ConnectionID`` and counts streams; the loop's pool executor
/// connects, opens streams and closes. Unlike HTTP/1.1, a connection is shared: a request leases a
/// *stream slot* on it, not the connection.
/// 1. ``lease(now:)`` picks the next upstream round-robin, then its usable connection (connecting or
///    ready, not going away) with the fewest streams, if that one has a free slot under the peer's
///    `SETTINGS_MAX_CONCURRENT_STREAMS`. Without a free slot it asks for a new connection, up to
///    `maxConnectionsPerUpstream`; past that the least loaded connection takes the stream anyway
///    (libnghttp2 queues it until a slot frees). A connection still connecting counts as having
///    ``assumedMaxConcurrentStreams`` slots, so a burst waits on one connect instead of opening many.
/// 2. ``streamClosed(_:now:)`` frees the slot; a connection that is going away (the upstream sent
///    GOAWAY) or belongs to a pool shutting down is closed when its last stream ends.
/// 3. ``sweep(now:)`` closes ready connections without streams for `idleTimeout`.
/// 4. ``connectionClosed(_:)`` forgets a connection that closed or failed to connect; the streams
///    waiting on it fail (the executor tells their requests).
public struct HTTP2UpstreamPoolStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    public enum LeaseAction: Equatable, Sendable {
        /// Open the stream on this connection now.
        case use(ConnectionID)
        /// The connection is still connecting: open the stream when it is up.
        case wait(ConnectionID)
        /// Open a new connection to `upstream`, name it `id`, and open the stream when it is up.
        case connect(ConnectionID, upstream: Int)
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
        var upstream: Int
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

    private var connections: [ConnectionID: Connection] = [:]
    /// Per upstream, its connections in the order they were opened.
    private var byUpstream: [[ConnectionID]]
    private var nextUpstream = 0
    private var generator: ConnectionID.Generator
    private var shuttingDown = false
    public let maxConnectionsPerUpstream: Int
    public let idleTimeout: Duration

    public init(upstreamCount: Int, maxConnectionsPerUpstream: Int, idleTimeout: Duration, idGenerator: ConnectionID.Generator) {
        precondition(upstreamCount > 0, "the config reader requires an upstream")
        precondition(maxConnectionsPerUpstream > 0, "at least one connection per upstream")
        self.byUpstream = Array(repeating: [], count: upstreamCount)
        self.maxConnectionsPerUpstream = maxConnectionsPerUpstream
        self.idleTimeout = idleTimeout
        self.generator = idGenerator
    }

    /// A stream slot for the next request, round-robin over upstreams.
    public mutating func lease(now: Instant) -> LeaseAction {
        let upstream = self.nextUpstream
        self.nextUpstream = (self.nextUpstream + 1) % self.byUpstream.count
        return self.lease(upstream: upstream, now: now)
    }

    /// A stream slot on a connection to one upstream; used for the retry on another upstream.
    public mutating func lease(upstream: Int, now: Instant) -> LeaseAction {
        precondition(self.byUpstream.indices.contains(upstream), "upstream index in range")
        // The least loaded connection with a free slot; failing that, the least loaded one at all.
        var withRoom: (id: ConnectionID, streams: Int)?
        var least: (id: ConnectionID, streams: Int)?
        var usable = 0
        for id in self.byUpstream[upstream] {
            guard let connection = self.connections[id], connection.state != .goingAway else { continue }
            usable += 1
            if connection.streams < connection.maxStreams, connection.streams < (withRoom?.streams ?? .max) {
                withRoom = (id, connection.streams)
            }
            if connection.streams < (least?.streams ?? .max) { least = (id, connection.streams) }
        }
        if let id = withRoom?.id ?? (usable >= self.maxConnectionsPerUpstream ? least?.id : nil) {
            self.connections[id]!.streams += 1
            self.connections[id]!.idleSince = nil
            return self.connections[id]!.state == .connecting ? .wait(id) : .use(id)
        }
        let id = self.generator.make()
        self.connections[id] = Connection(
            upstream: upstream,
            state: .connecting,
            streams: 1,
            maxStreams: Self.assumedMaxConcurrentStreams,
            idleSince: nil
        )
        self.byUpstream[upstream].append(id)
        return .connect(id, upstream: upstream)
    }

    /// The index after `upstream`, for a retry on another upstream (the same one when there is one).
    public func upstream(after upstream: Int) -> Int { (upstream + 1) % self.byUpstream.count }

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

    /// Stop keeping idle connections: returns those without streams to close now; the others close
    /// when their last stream ends. Leasing still works (a request accepted before the listeners
    /// closed may still need a stream).
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

    /// Per upstream: connections without streams (idle) and with streams or connecting (busy), for `/status`.
    public func counts() -> [(idle: Int, busy: Int)] {
        self.byUpstream.map { ids in
            var idle = 0
            var busy = 0
            for id in ids {
                guard let connection = self.connections[id] else { continue }
                if connection.state == .ready && connection.streams == 0 { idle += 1 } else { busy += 1 }
            }
            return (idle, busy)
        }
    }

    private mutating func forget(_ id: ConnectionID) {
        guard let connection = self.connections.removeValue(forKey: id) else { return }
        self.byUpstream[connection.upstream].removeAll { $0 == id }
    }
}
