import SluiceCore

/// A value-type picture of the connections a pool executor would hold, driven by the actions the
/// ``UpstreamPoolStateMachine`` returns. Each method applies one action and throws when the executor
/// could not carry it out, or when it breaks a pool rule (round-robin, LIFO reuse, `maxIdle`,
/// no parking after shutdown, sweeping exactly the expired idle connections).
struct UpstreamPoolModel {
    typealias Machine = UpstreamPoolStateMachine<MockClock.Instant>

    struct IllegalAction: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    private struct Parked {
        var id: ConnectionID
        var since: MockClock.Instant
    }

    let upstreamCount: Int
    let maxIdle: Int
    let idleTimeout: Duration
    private(set) var nextUpstream = 0
    private(set) var shuttingDown = false
    /// Parked connections per upstream, most recent last.
    private var idle: [[Parked]]
    /// Connections leased to a request (or connecting), and their upstream.
    private(set) var busy: [ConnectionID: Int] = [:]
    /// Every ID the machine ever handed out: a new connection must have a new ID.
    private var seen: Set<ConnectionID> = []

    init(upstreamCount: Int, maxIdle: Int, idleTimeout: Duration) {
        self.upstreamCount = upstreamCount
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.idle = Array(repeating: [], count: upstreamCount)
    }

    var idleIDs: [ConnectionID] { self.idle.flatMap { $0.map(\.id) } }

    /// Idle and busy per upstream, as the machine's `counts()` should report them.
    var counts: [[Int]] {
        (0..<self.upstreamCount).map { upstream in
            [self.idle[upstream].count, self.busy.values.filter { $0 == upstream }.count]
        }
    }

    /// Applies the action of a round-robin `lease(now:)`.
    mutating func leasedRoundRobin(_ action: Machine.LeaseAction) throws {
        let expected = self.nextUpstream
        self.nextUpstream = (self.nextUpstream + 1) % self.upstreamCount
        try self.leased(action, upstream: expected)
    }

    /// Applies the action of `lease(upstream:now:)`.
    mutating func leased(_ action: Machine.LeaseAction, upstream expected: Int) throws {
        switch action {
        case .useIdle(let id, let upstream):
            guard upstream == expected else { throw IllegalAction("leased upstream \(upstream), expected \(expected)") }
            guard let last = self.idle[upstream].last else { throw IllegalAction("useIdle \(id) but upstream \(upstream) has no idle connection") }
            guard last.id == id else {
                throw IllegalAction("useIdle \(id) but the most recently parked connection of upstream \(upstream) is \(last.id)")
            }
            self.idle[upstream].removeLast()
            self.busy[id] = upstream
        case .connect(let id, let upstream):
            guard upstream == expected else { throw IllegalAction("leased upstream \(upstream), expected \(expected)") }
            guard self.idle[upstream].isEmpty else { throw IllegalAction("connect \(id) while upstream \(upstream) has idle connections") }
            guard self.seen.insert(id).inserted else { throw IllegalAction("connect reuses the ID \(id)") }
            self.busy[id] = upstream
        }
    }

    /// Applies the action of `release(_:reusable:now:)`.
    mutating func released(_ id: ConnectionID, reusable: Bool, now: MockClock.Instant, action: Machine.ReleaseAction) throws {
        guard let upstream = self.busy.removeValue(forKey: id) else { throw IllegalAction("released \(id), which is not busy") }
        let mayPark = reusable && !self.shuttingDown && self.idle[upstream].count < self.maxIdle
        switch action {
        case .park:
            guard mayPark else {
                throw IllegalAction("parked \(id) (reusable \(reusable), shutting down \(self.shuttingDown), idle \(self.idle[upstream].count) of \(self.maxIdle))")
            }
            self.idle[upstream].append(Parked(id: id, since: now))
        case .close:
            guard !mayPark else { throw IllegalAction("closed \(id) although it could be parked") }
        }
    }

    /// The executor saw the connection close (by the upstream, a failed connect, or us).
    mutating func closed(_ id: ConnectionID) {
        self.busy[id] = nil
        for upstream in self.idle.indices { self.idle[upstream].removeAll { $0.id == id } }
    }

    /// Applies the result of `sweep(now:)`: exactly the connections idle for `idleTimeout` or longer.
    mutating func swept(_ ids: [ConnectionID], now: MockClock.Instant) throws {
        let expired = Set(self.idle.flatMap { $0 }.filter { $0.since.duration(to: now) >= self.idleTimeout }.map(\.id))
        guard Set(ids) == expired, ids.count == expired.count else {
            throw IllegalAction("swept \(ids), expected \(expired.sorted { $0.rawValue < $1.rawValue })")
        }
        for upstream in self.idle.indices { self.idle[upstream].removeAll { expired.contains($0.id) } }
    }

    /// Applies the result of `shutdown()`: every idle connection, once.
    mutating func shutDown(_ ids: [ConnectionID]) throws {
        let idle = self.idleIDs
        guard Set(ids) == Set(idle), ids.count == idle.count else { throw IllegalAction("shutdown closed \(ids), idle were \(idle)") }
        self.shuttingDown = true
        self.idle = Array(repeating: [], count: self.upstreamCount)
    }
}
