/// What a tunnel carries, for what the drain does to it: a WebSocket can be asked to close with a
/// Close frame (so it is given a moment to do so, spread over the tunnel close window); any other
/// upgraded protocol can only be cut, at the drain deadline.
public enum TunnelKind: String, Sendable {
    /// An HTTP/1 `Upgrade: websocket` (or, on HTTP/2, an RFC 8441 extended CONNECT).
    case webSocket = "websocket"
    /// Any other `Upgrade` protocol: opaque bytes.
    case other
}

/// Every downstream connection of one event loop: what it speaks, who it is, how busy it is, and
/// what the drain has decided for it.
///
/// Pure and confined to its loop (the owner calls it on the loop; it does no locking). The table
/// turns a phase change or the passing of time into actions on entries; the owning loop carries
/// them out on the connections:
/// 1. ``beginPropagating(now:until:using:)``: each HTTP/1 connection gets a random moment in the
///    first 80% of the delay after which its responses carry `Connection: close`, so pooled clients
///    move away gradually rather than in one reconnect storm; each HTTP/2 connection gets the
///    shutdown notice.
/// 2. ``beginDraining(now:tunnelCloseWindow:using:)``: busy connections close after their response;
///    idle connections close once they have been quiet for the quiet period (``sweep(now:)``), so a
///    request the client sent just before the close is not lost; HTTP/2 connections get their final
///    GOAWAY; each HTTP/1 WebSocket tunnel gets a random moment in the tunnel close window at which
///    its close handshake starts, so clients do not all reconnect in one burst.
/// 3. ``sweep(now:)``: header-read and body-read timeouts, idle timeouts, the quiet-idle closes of
///    `draining`, and in `draining` the connections that have sent only part of a request head
///    (slowloris) once ``Timeouts/drainPartialHead`` has passed. An HTTP/1 tunnel is past all of
///    those: it is closed only by its tunnel idle timeout or, a WebSocket in `draining`, at its close
///    moment.
///
/// A tunnel (``tunnelStarted(_:kind:now:using:)``) keeps its request in flight, so a drain waits for
/// it as for any response, until its close handshake ends it or the drain deadline cuts it.
///
/// ```swift
/// table.tunnelStarted(id, kind: .webSocket, now: now, using: &rng)   // after the upstream's 101
/// table.tunnelActivity(id, now: now)                                 // each read batch
/// table.sweep(now: later)                                            // [(id, .tunnelIdleTimeout)]
/// ```
public struct ConnectionTable<Instant: InstantProtocol> where Instant.Duration == Duration {
    /// What `/status` shows per connection.
    public enum State: String, Sendable, CaseIterable {
        /// Waiting for a request.
        case idle
        /// Reading a request or serving one.
        case active
        /// Carrying at least one tunnel (HTTP/1: the upgraded connection; HTTP/2: WebSocket streams).
        case tunnel
        /// Told to close; finishing what it has.
        case closing
    }

    public struct Entry: Sendable {
        public let id: ConnectionID
        public let `protocol`: ConnectionProtocol
        public let peer: String
        public let acceptedAt: Instant
        public internal(set) var lastActivity: Instant
        public internal(set) var inFlight: Int
        /// Set from the first byte of a request head until the head is complete.
        public internal(set) var readingHeadSince: Instant?
        /// While a request body is being read: when its last bytes arrived (or its head, before any).
        public internal(set) var bodyReadAt: Instant?
        /// Responses started at or after this moment carry `Connection: close`.
        public internal(set) var closeAt: Instant?
        /// Set once the connection has been told to close (or decided to).
        public internal(set) var closing: Bool
        /// Responses completed on this connection.
        public internal(set) var requestsServed: Int
        /// Tunnels open: HTTP/1 0 or 1 (the connection itself after a 101); HTTP/2 the tunnel streams.
        public internal(set) var tunnels: Int = 0
        /// HTTP/1: what the tunnel carries, while there is one (nil on HTTP/2, whose streams carry it).
        public internal(set) var tunnelKind: TunnelKind? = nil
        /// An HTTP/1 WebSocket tunnel in `draining`: when its close handshake should start.
        public internal(set) var tunnelCloseAt: Instant? = nil

        // In-place updates: one hash lookup per event (``ConnectionTable/withEntry(_:_:)``).
        mutating func headBegan(now: Instant) {
            self.lastActivity = now
            if self.readingHeadSince == nil { self.readingHeadSince = now }
        }

        mutating func requestStarted(now: Instant) {
            self.readingHeadSince = nil
            self.inFlight += 1
            self.lastActivity = now
        }

        mutating func requestFinished(now: Instant) {
            self.bodyReadAt = nil
            self.inFlight = max(0, self.inFlight - 1)
            self.requestsServed += 1
            self.lastActivity = now
        }

        public var state: State {
            if self.closing { return .closing }
            if self.tunnels > 0 { return .tunnel }
            return self.inFlight > 0 || self.readingHeadSince != nil ? .active : .idle
        }
    }

    /// What the table is doing about the drain.
    private enum Mode {
        case normal
        case propagating(windowEnd: Instant)
        /// `tunnelCloseBy`: the end of the tunnel close window, by which every WebSocket tunnel has
        /// been told to close.
        case draining(since: Instant, tunnelCloseBy: Instant)
    }

    /// Timeouts the sweep enforces.
    public struct Timeouts: Sendable {
        public var requestHeader: Duration
        public var idle: Duration
        /// In `draining`, an idle connection is closed only after this much quiet.
        public var drainQuiet: Duration
        /// The longest gap between pieces of a request body.
        public var requestBody: Duration
        /// In `draining`, a connection with only part of a request head is closed after this long
        /// (from the start of `draining`, or from the head's first byte if that came later).
        public var drainPartialHead: Duration
        /// An HTTP/1 tunnel with no bytes in either direction for this long is closed.
        public var tunnelIdle: Duration
        public init(
            requestHeader: Duration,
            idle: Duration,
            drainQuiet: Duration,
            requestBody: Duration = .seconds(30),
            drainPartialHead: Duration = SluiceConfig.Drain.partialHeadGrace,
            tunnelIdle: Duration = .seconds(3600)
        ) {
            self.requestHeader = requestHeader
            self.idle = idle
            self.drainQuiet = drainQuiet
            self.requestBody = requestBody
            self.drainPartialHead = drainPartialHead
            self.tunnelIdle = tunnelIdle
        }
    }

    public enum PropagatingAction: Equatable, Sendable {
        /// HTTP/2: send the GOAWAY shutdown notice (last stream id 2^31-1) and a PING.
        case sendShutdownNotice
    }

    public enum DrainingAction: Equatable, Sendable {
        /// HTTP/2: send the final GOAWAY, let streams finish.
        case sendFinalGoAway
        /// An HTTP/1 connection idle and quiet long enough: close it now.
        case close
    }

    public enum SweepReason: String, Equatable, Sendable {
        /// A request head (or, on a new connection, its first byte) did not arrive in time.
        case requestHeaderTimeout
        /// No piece of the request body arrived for ``Timeouts/requestBody``.
        case requestBodyTimeout
        case idleTimeout
        case drainIdle
        /// `draining`: only part of a request head arrived, and the grace period is over.
        case drainPartialHead
        /// An HTTP/1 tunnel carried no bytes either way for ``Timeouts/tunnelIdle``: close it (a
        /// WebSocket with a Close frame first, if it can).
        case tunnelIdleTimeout
        /// `draining`: an HTTP/1 WebSocket tunnel's moment in the tunnel close window has come: start
        /// its close handshake (Close frames both ways), then close the connection.
        case drainTunnelClose
    }

    public struct Counts: Equatable, Sendable {
        public var total = 0
        public var byState: [State: Int] = [:]
        public var byProtocol: [ConnectionProtocol: Int] = [:]
        public var requestsInFlight = 0
        /// Tunnels open, by the protocol of the connection carrying them (HTTP/2: streams); a
        /// protocol without any is absent.
        public var tunnelsByProtocol: [ConnectionProtocol: Int] = [:]
        public init() {}

        public static func + (lhs: Counts, rhs: Counts) -> Counts {
            var sum = lhs
            sum.total += rhs.total
            sum.requestsInFlight += rhs.requestsInFlight
            sum.byState.merge(rhs.byState, uniquingKeysWith: +)
            sum.byProtocol.merge(rhs.byProtocol, uniquingKeysWith: +)
            sum.tunnelsByProtocol.merge(rhs.tunnelsByProtocol, uniquingKeysWith: +)
            return sum
        }
    }

    /// What arrived since ``watchArrivals(since:)``, for the drain's late-arrival telemetry: the
    /// drain samples it every 100 ms (``DrainTimeline``).
    public struct Arrivals: Equatable, Sendable {
        /// Where the counting starts (the first signal, or the rehearsal's start); nil: not watching.
        public internal(set) var since: Instant?
        /// Connections accepted since ``since``.
        public internal(set) var connections = 0
        /// Requests started (HTTP/1 requests, HTTP/2 streams) since ``since``.
        public internal(set) var requests = 0
        /// The last connection accepted since ``since``.
        public internal(set) var lastConnectionAt: Instant?
        /// The last request started on a connection accepted before ``since``: how long clients kept
        /// using the connections they already had.
        public internal(set) var lastRequestOnOlderConnectionAt: Instant?
        /// Connections accepted, per 100 ms from ``since`` (``DrainTimeline/bucketWidth``).
        public internal(set) var connectionsPerBucket: [Int] = []
        /// Requests started, per 100 ms from ``since``.
        public internal(set) var requestsPerBucket: [Int] = []

        public init() {}

        /// The 100 ms slice of `now` since ``since``.
        @inline(__always)
        static func bucket(since: Instant, now: Instant) -> Int {
            Int(since.duration(to: now).nanosecondsClamped / 100_000_000)
        }

        @inline(__always)
        static func count(_ index: Int, in buckets: inout [Int]) {
            if buckets.count <= index { buckets += repeatElement(0, count: index + 1 - buckets.count) }
            buckets[index] += 1
        }

        /// Two loops' arrivals together (counts summed, the later moments kept).
        public static func + (lhs: Arrivals, rhs: Arrivals) -> Arrivals {
            var sum = lhs
            sum.since = Self.later(lhs.since, rhs.since)
            sum.connections += rhs.connections
            sum.requests += rhs.requests
            sum.lastConnectionAt = Self.later(lhs.lastConnectionAt, rhs.lastConnectionAt)
            sum.lastRequestOnOlderConnectionAt = Self.later(lhs.lastRequestOnOlderConnectionAt, rhs.lastRequestOnOlderConnectionAt)
            sum.connectionsPerBucket = Self.sum(lhs.connectionsPerBucket, rhs.connectionsPerBucket)
            sum.requestsPerBucket = Self.sum(lhs.requestsPerBucket, rhs.requestsPerBucket)
            return sum
        }

        private static func sum(_ a: [Int], _ b: [Int]) -> [Int] {
            (0..<max(a.count, b.count)).map { (a.indices.contains($0) ? a[$0] : 0) + (b.indices.contains($0) ? b[$0] : 0) }
        }

        private static func later(_ a: Instant?, _ b: Instant?) -> Instant? {
            guard let a else { return b }
            guard let b else { return a }
            return max(a, b)
        }
    }

    private var entries: [ConnectionID: Entry] = [:]
    private var mode: Mode = .normal
    public private(set) var arrivals = Arrivals()
    public var timeouts: Timeouts

    public init(timeouts: Timeouts) {
        self.timeouts = timeouts
    }

    public var count: Int { self.entries.count }
    public var isEmpty: Bool { self.entries.isEmpty }
    public subscript(id: ConnectionID) -> Entry? { self.entries[id] }
    public var ids: Dictionary<ConnectionID, Entry>.Keys { self.entries.keys }

    /// A connection was accepted. In `propagating` it gets its own close moment; in `draining` it
    /// will close after its first response.
    @_specialize(exported: true, where Instant == MonotonicInstant, R == SystemRandomNumberGenerator)
    public mutating func add<R: RandomNumberGenerator>(
        _ id: ConnectionID,
        protocol proto: ConnectionProtocol,
        peer: String,
        now: Instant,
        using rng: inout R
    ) {
        var entry = Entry(
            id: id, protocol: proto, peer: peer, acceptedAt: now, lastActivity: now, inFlight: 0,
            readingHeadSince: nil, bodyReadAt: nil, closeAt: nil, closing: false, requestsServed: 0
        )
        switch self.mode {
        case .normal: break
        case .propagating(let windowEnd): entry.closeAt = Self.randomMoment(from: now, to: windowEnd, using: &rng)
        case .draining: entry.closeAt = now
        }
        precondition(self.entries.updateValue(entry, forKey: id) == nil, "connection IDs are unique: \(id)")
        if let since = self.arrivals.since, now >= since {
            self.arrivals.connections += 1
            self.arrivals.lastConnectionAt = now
            Arrivals.count(Arrivals.bucket(since: since, now: now), in: &self.arrivals.connectionsPerBucket)
        }
    }

    /// Counts arrivals from `since` (the first signal, or a rehearsal's start) afresh.
    public mutating func watchArrivals(since: Instant) {
        self.arrivals = Arrivals()
        self.arrivals.since = since
    }

    /// Stops counting (a rehearsal is over): the per-100 ms counts must not grow while serving.
    public mutating func stopWatchingArrivals() {
        self.arrivals = Arrivals()
    }

    /// The protocol became known after accept (h2c prior knowledge was detected).
    public mutating func setProtocol(_ id: ConnectionID, _ proto: ConnectionProtocol) {
        guard let old = self.entries[id] else { return }
        self.entries[id] = Entry(
            id: id, protocol: proto, peer: old.peer, acceptedAt: old.acceptedAt, lastActivity: old.lastActivity,
            inFlight: old.inFlight, readingHeadSince: old.readingHeadSince, bodyReadAt: old.bodyReadAt, closeAt: old.closeAt,
            closing: old.closing, requestsServed: old.requestsServed, tunnels: old.tunnels, tunnelKind: old.tunnelKind,
            tunnelCloseAt: old.tunnelCloseAt
        )
    }

    @discardableResult
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func remove(_ id: ConnectionID) -> Entry? {
        self.entries.removeValue(forKey: id)
    }

    /// Runs `body` on `id`'s entry in place, if there is one. Through `index(forKey:)` and
    /// `values[index]` rather than `entries[id]?.…`: the optional-chained `_modify` of
    /// `Dictionary.subscript(key:)` was not inlined and allocated its coroutine frame, two mallocs
    /// on every call (seen with a uprobe on malloc under load).
    @inline(__always)
    private mutating func withEntry(_ id: ConnectionID, _ body: (inout Entry) -> Void) {
        guard let index = self.entries.index(forKey: id) else { return }
        body(&self.entries.values[index])
    }

    /// Bytes of a new request head arrived on an idle connection.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func requestHeadBegan(_ id: ConnectionID, now: Instant) {
        self.withEntry(id) { $0.headBegan(now: now) }
    }

    /// A request head is complete and is being served.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func requestStarted(_ id: ConnectionID, now: Instant) {
        guard let since = self.arrivals.since, now >= since else {
            // Serving: no drain or rehearsal is counting arrivals.
            self.withEntry(id) { $0.requestStarted(now: now) }
            return
        }
        guard let index = self.entries.index(forKey: id) else { return }
        self.entries.values[index].requestStarted(now: now)
        self.arrivals.requests += 1
        Arrivals.count(Arrivals.bucket(since: since, now: now), in: &self.arrivals.requestsPerBucket)
        if self.entries.values[index].acceptedAt < since { self.arrivals.lastRequestOnOlderConnectionAt = now }
    }

    /// Request body bytes arrived (or the head of a request with a body was read): the body timeout
    /// runs from now.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func requestBodyRead(_ id: ConnectionID, now: Instant) {
        self.withEntry(id) { $0.bodyReadAt = now }
    }

    /// The request body has been read whole: no body timeout any more.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func requestBodyEnded(_ id: ConnectionID) {
        self.withEntry(id) { $0.bodyReadAt = nil }
    }

    /// Whether the response about to start must carry `Connection: close` because of the drain.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public func responseShouldClose(_ id: ConnectionID, now: Instant) -> Bool {
        guard let entry = self.entries[id] else { return true }
        if entry.closing { return true }
        guard let closeAt = entry.closeAt else { return false }
        return now >= closeAt
    }

    /// A response was sent completely.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func requestFinished(_ id: ConnectionID, now: Instant) {
        self.withEntry(id) { $0.requestFinished(now: now) }
    }

    /// The connection decided to close (its response carried `Connection: close`, or it failed).
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func markClosing(_ id: ConnectionID) {
        self.withEntry(id) { $0.closing = true }
    }

    // MARK: Tunnels

    /// A tunnel opened on `id`: HTTP/1, the upstream answered 101 and the connection now carries
    /// opaque bytes; HTTP/2, a tunnel stream (RFC 8441 WebSocket) began.
    ///
    /// The request stays in flight (a drain waits for the tunnel as for a response) and, on HTTP/1,
    /// the header and body timeouts stop: from now on only ``Timeouts/tunnelIdle`` and the drain's
    /// close moment apply. A WebSocket tunnel opened in `draining` gets its close moment at once, in
    /// what is left of the tunnel close window (now, if that has passed).
    @_specialize(exported: true, where Instant == MonotonicInstant, R == SystemRandomNumberGenerator)
    public mutating func tunnelStarted<R: RandomNumberGenerator>(
        _ id: ConnectionID,
        kind: TunnelKind,
        now: Instant,
        using rng: inout R
    ) {
        guard let index = self.entries.index(forKey: id) else { return }
        let tunnelCloseBy: Instant?
        switch self.mode {
        case .draining(_, let end): tunnelCloseBy = end
        case .normal, .propagating: tunnelCloseBy = nil
        }
        self.entries.values[index].tunnels += 1
        self.entries.values[index].lastActivity = now
        switch self.entries.values[index].protocol {
        case .http1:
            self.entries.values[index].tunnelKind = kind
            self.entries.values[index].readingHeadSince = nil
            self.entries.values[index].bodyReadAt = nil
            if kind == .webSocket, let tunnelCloseBy {
                self.entries.values[index].tunnelCloseAt = Self.randomMoment(from: now, to: tunnelCloseBy, using: &rng)
            }
        case .http2:
            break
        }
    }

    /// A tunnel on `id` ended (mostly HTTP/2 streams: an HTTP/1 tunnel ends with its connection).
    /// The owner finishes the request (``requestFinished(_:now:)``) or removes the entry as usual.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func tunnelEnded(_ id: ConnectionID, now: Instant) {
        self.withEntry(id) { entry in
            entry.tunnels = max(0, entry.tunnels - 1)
            entry.lastActivity = now
            if entry.tunnels == 0 {
                entry.tunnelKind = nil
                entry.tunnelCloseAt = nil
            }
        }
    }

    /// Bytes went through a tunnel on `id` (either way): its idle timeout runs from now. Called per
    /// read batch, so one hash lookup and nothing else.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func tunnelActivity(_ id: ConnectionID, now: Instant) {
        self.withEntry(id) { $0.lastActivity = now }
    }

    // MARK: Drain

    public mutating func beginPropagating<R: RandomNumberGenerator>(
        now: Instant,
        until: Instant,
        using rng: inout R
    ) -> [(ConnectionID, PropagatingAction)] {
        let windowEnd = now.advanced(by: now.duration(to: until) * 0.8)
        self.mode = .propagating(windowEnd: windowEnd)
        var actions: [(ConnectionID, PropagatingAction)] = []
        // In ID order, so a seeded generator gives every connection the same moment each run.
        for id in self.entries.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            switch self.entries[id]!.protocol {
            case .http1:
                self.entries[id]!.closeAt = Self.randomMoment(from: now, to: windowEnd, using: &rng)
            case .http2:
                actions.append((id, .sendShutdownNotice))
            }
        }
        return actions
    }

    /// `draining` begins. `tunnelCloseWindow`: over how long the HTTP/1 WebSocket tunnels are told
    /// to close (each at a random moment in `[now, now + tunnelCloseWindow]`, from `rng` in ID order,
    /// so a seeded generator gives every tunnel the same moment each run); other tunnels are left to
    /// the drain deadline, and no tunnel is closed as idle.
    @_specialize(exported: true, where Instant == MonotonicInstant, R == SystemRandomNumberGenerator)
    public mutating func beginDraining<R: RandomNumberGenerator>(
        now: Instant,
        tunnelCloseWindow: Duration,
        using rng: inout R
    ) -> [(ConnectionID, DrainingAction)] {
        let tunnelCloseBy = now.advanced(by: max(.zero, tunnelCloseWindow))
        self.mode = .draining(since: now, tunnelCloseBy: tunnelCloseBy)
        var actions: [(ConnectionID, DrainingAction)] = []
        for id in self.entries.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            self.entries[id]!.closeAt = now
            let entry = self.entries[id]!
            switch entry.protocol {
            case .http2:
                actions.append((id, .sendFinalGoAway))
            case .http1:
                if entry.tunnelKind == .webSocket, !entry.closing {
                    self.entries[id]!.tunnelCloseAt = Self.randomMoment(from: now, to: tunnelCloseBy, using: &rng)
                } else if entry.state == .idle, entry.lastActivity.duration(to: now) >= self.timeouts.drainQuiet {
                    self.entries[id]!.closing = true
                    actions.append((id, .close))
                }
            }
        }
        return actions
    }

    /// Connections whose time is up. Each returned connection is marked closing.
    @_specialize(exported: true, where Instant == MonotonicInstant)
    public mutating func sweep(now: Instant) -> [(ConnectionID, SweepReason)] {
        var closes: [(ConnectionID, SweepReason)] = []
        let drainingSince: Instant?
        switch self.mode {
        case .draining(let since, _): drainingSince = since
        case .normal, .propagating: drainingSince = nil
        }
        let draining = drainingSince != nil
        for (id, entry) in self.entries where !entry.closing && entry.protocol == .http1 {
            let reason: SweepReason?
            if entry.tunnelKind != nil {
                if let closeAt = entry.tunnelCloseAt, closeAt <= now {
                    reason = .drainTunnelClose
                } else if entry.lastActivity.duration(to: now) >= self.timeouts.tunnelIdle {
                    reason = .tunnelIdleTimeout
                } else {
                    reason = nil
                }
            } else if let since = entry.readingHeadSince {
                if since.duration(to: now) >= self.timeouts.requestHeader {
                    reason = .requestHeaderTimeout
                } else if let drainingSince, max(drainingSince, since).duration(to: now) >= self.timeouts.drainPartialHead {
                    reason = .drainPartialHead
                } else {
                    reason = nil
                }
            } else if let bodyReadAt = entry.bodyReadAt {
                reason = bodyReadAt.duration(to: now) >= self.timeouts.requestBody ? .requestBodyTimeout : nil
            } else if entry.inFlight > 0 {
                reason = nil
            } else if draining, entry.lastActivity.duration(to: now) >= self.timeouts.drainQuiet {
                reason = .drainIdle
            } else if entry.requestsServed == 0 {
                // Accepted but silent: the header timeout runs from accept.
                reason = entry.lastActivity.duration(to: now) >= self.timeouts.requestHeader ? .requestHeaderTimeout : nil
            } else if entry.lastActivity.duration(to: now) >= self.timeouts.idle {
                reason = .idleTimeout
            } else {
                reason = nil
            }
            if let reason { closes.append((id, reason)) }
        }
        for (id, _) in closes { self.entries[id]!.closing = true }
        return closes
    }

    @_specialize(exported: true, where Instant == MonotonicInstant)
    public func counts() -> Counts {
        var counts = Counts()
        for entry in self.entries.values {
            counts.total += 1
            counts.byState[entry.state, default: 0] += 1
            counts.byProtocol[entry.protocol, default: 0] += 1
            counts.requestsInFlight += entry.inFlight
            if entry.tunnels > 0 { counts.tunnelsByProtocol[entry.protocol, default: 0] += entry.tunnels }
        }
        return counts
    }

    private static func randomMoment<R: RandomNumberGenerator>(from start: Instant, to end: Instant, using rng: inout R) -> Instant {
        let span = start.duration(to: end)
        guard span > .zero else { return start }
        return start.advanced(by: span * Double.random(in: 0...1, using: &rng))
    }
}
