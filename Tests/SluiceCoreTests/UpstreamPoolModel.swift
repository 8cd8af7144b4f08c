import SluiceCore

/// A value-type picture of the connections to one endpoint that a pool executor would hold, driven
/// by the actions the ``UpstreamPoolStateMachine`` returns. Each method applies one action and throws
/// when the executor could not carry it out, or when it breaks a pool rule (LIFO reuse, connecting
/// only without an idle connection, fresh IDs, `maxIdle`, no parking after shutdown, sweeping exactly
/// the expired idle connections).
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

    let maxIdle: Int
    let idleTimeout: Duration
    private(set) var shuttingDown = false
    /// Parked connections, most recent last.
    private var idle: [Parked] = []
    /// Connections leased to a request (or connecting).
    private(set) var busy: Set<ConnectionID> = []
    /// Every ID the machine ever handed out: a new connection must have a new ID.
    private var seen: Set<ConnectionID> = []

    init(maxIdle: Int, idleTimeout: Duration) {
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
    }

    var idleIDs: [ConnectionID] { self.idle.map(\.id) }

    /// Idle and busy, as the machine's `counts()` should report them.
    var counts: [Int] { [self.idle.count, self.busy.count] }

    /// Applies the action of `lease(now:)`.
    mutating func leased(_ action: Machine.LeaseAction) throws {
        switch action {
        case .useIdle(let id):
            guard let last = self.idle.last else { throw IllegalAction("useIdle \(id) but there is no idle connection") }
            guard last.id == id else {
                throw IllegalAction("useIdle \(id) but the most recently parked connection is \(last.id)")
            }
            self.idle.removeLast()
            self.busy.insert(id)
        case .connect(let id):
            guard self.idle.isEmpty else { throw IllegalAction("connect \(id) while there are idle connections") }
            guard self.seen.insert(id).inserted else { throw IllegalAction("connect reuses the ID \(id)") }
            self.busy.insert(id)
        }
    }

    /// Applies the action of `release(_:reusable:now:)`.
    mutating func released(_ id: ConnectionID, reusable: Bool, now: MockClock.Instant, action: Machine.ReleaseAction) throws {
        guard self.busy.remove(id) != nil else { throw IllegalAction("released \(id), which is not busy") }
        let mayPark = reusable && !self.shuttingDown && self.idle.count < self.maxIdle
        switch action {
        case .park:
            guard mayPark else {
                throw IllegalAction("parked \(id) (reusable \(reusable), shutting down \(self.shuttingDown), idle \(self.idle.count) of \(self.maxIdle))")
            }
            self.idle.append(Parked(id: id, since: now))
        case .close:
            guard !mayPark else { throw IllegalAction("closed \(id) although it could be parked") }
        }
    }

    /// The executor saw the connection close (by the upstream, a failed connect, or us).
    mutating func closed(_ id: ConnectionID) {
        self.busy.remove(id)
        self.idle.removeAll { $0.id == id }
    }

    /// Applies the result of `sweep(now:)`: exactly the connections idle for `idleTimeout` or longer.
    mutating func swept(_ ids: [ConnectionID], now: MockClock.Instant) throws {
        let expired = Set(self.idle.filter { $0.since.duration(to: now) >= self.idleTimeout }.map(\.id))
        guard Set(ids) == expired, ids.count == expired.count else {
            throw IllegalAction("swept \(ids), expected \(expired.sorted { $0.rawValue < $1.rawValue })")
        }
        self.idle.removeAll { expired.contains($0.id) }
    }

    /// Applies the result of `shutdown()`: every idle connection, once.
    mutating func shutDown(_ ids: [ConnectionID]) throws {
        let idle = self.idleIDs
        guard Set(ids) == Set(idle), ids.count == idle.count else { throw IllegalAction("shutdown closed \(ids), idle were \(idle)") }
        self.shuttingDown = true
        self.idle = []
    }
}
