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
/// 2. ``beginDraining(now:)``: busy connections close after their response; idle connections close
///    once they have been quiet for the quiet period (``sweep(now:)``), so a request the client sent
///    just before the close is not lost; HTTP/2 connections get their final GOAWAY.
/// 3. ``sweep(now:)``: header-read and body-read timeouts, idle timeouts, the quiet-idle closes of
///    `draining`, and in `draining` the connections that have sent only part of a request head
///    (slowloris) once ``Timeouts/drainPartialHead`` has passed.
public struct ConnectionTable<Instant: InstantProtocol> where Instant.Duration == Duration {
    /// What `/status` shows per connection.
    public enum State: String, Sendable, CaseIterable {
        /// Waiting for a request.
        case idle
        /// Reading a request or serving one.
        case active
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
            return self.inFlight > 0 || self.readingHeadSince != nil ? .active : .idle
        }
    }

    /// What the table is doing about the drain.
    private enum Mode {
        case normal
        case propagating(windowEnd: Instant)
        case draining(since: Instant)
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
        public init(
            requestHeader: Duration,
            idle: Duration,
            drainQuiet: Duration,
            requestBody: Duration = .seconds(30),
            drainPartialHead: Duration = SluiceConfig.Drain.partialHeadGrace
        ) {
            self.requestHeader = requestHeader
            self.idle = idle
            self.drainQuiet = drainQuiet
            self.requestBody = requestBody
            self.drainPartialHead = drainPartialHead
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
    }

    public struct Counts: Equatable, Sendable {
        public var total = 0
        public var byState: [State: Int] = [:]
        public var byProtocol: [ConnectionProtocol: Int] = [:]
        public var requestsInFlight = 0
        public init() {}

        public static func + (lhs: Counts, rhs: Counts) -> Counts {
            var sum = lhs
            sum.total += rhs.total
            sum.requestsInFlight += rhs.requestsInFlight
            sum.byState.merge(rhs.byState, uniquingKeysWith: +)
            sum.byProtocol.merge(rhs.byProtocol, uniquingKeysWith: +)
            return sum
        }
    }

    private var entries: [ConnectionID: Entry] = [:]
    private var mode: Mode = .normal
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
    }

    /// The protocol became known after accept (h2c prior knowledge was detected).
    public mutating func setProtocol(_ id: ConnectionID, _ proto: ConnectionProtocol) {
        guard let old = self.entries[id] else { return }
        self.entries[id] = Entry(
            id: id, protocol: proto, peer: old.peer, acceptedAt: old.acceptedAt, lastActivity: old.lastActivity,
            inFlight: old.inFlight, readingHeadSince: old.readingHeadSince, bodyReadAt: old.bodyReadAt, closeAt: old.closeAt,
            closing: old.closing, requestsServed: old.requestsServed
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
        self.withEntry(id) { $0.requestStarted(now: now) }
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

    public mutating func beginDraining(now: Instant) -> [(ConnectionID, DrainingAction)] {
        self.mode = .draining(since: now)
        var actions: [(ConnectionID, DrainingAction)] = []
        for id in self.entries.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            self.entries[id]!.closeAt = now
            let entry = self.entries[id]!
            switch entry.protocol {
            case .http2:
                actions.append((id, .sendFinalGoAway))
            case .http1:
                if entry.state == .idle, entry.lastActivity.duration(to: now) >= self.timeouts.drainQuiet {
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
        case .draining(let since): drainingSince = since
        case .normal, .propagating: drainingSince = nil
        }
        let draining = drainingSince != nil
        for (id, entry) in self.entries where !entry.closing && entry.protocol == .http1 {
            let reason: SweepReason?
            if let since = entry.readingHeadSince {
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
        }
        return counts
    }

    private static func randomMoment<R: RandomNumberGenerator>(from start: Instant, to end: Instant, using rng: inout R) -> Instant {
        let span = start.duration(to: end)
        guard span > .zero else { return start }
        return start.advanced(by: span * Double.random(in: 0...1, using: &rng))
    }
}
