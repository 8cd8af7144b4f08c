import SluiceCore
import Testing

@Suite struct UpstreamPoolStateMachineTests {
    typealias Pool = UpstreamPoolStateMachine<MockClock.Instant>
    typealias Instant = MockClock.Instant

    let t0 = Instant(offset: .seconds(1000))

    func makePool(maxIdle: Int = 32, idleTimeout: Duration = .seconds(4), loop: Int = 0) -> Pool {
        Pool(maxIdle: maxIdle, idleTimeout: idleTimeout, idGenerator: ConnectionID.Generator(loopIndex: loop))
    }

    func id(_ raw: UInt64, loop: UInt64 = 0) -> ConnectionID { ConnectionID(rawValue: loop << 48 | raw) }

    func counts(_ pool: Pool) -> [Int] {
        let counts = pool.counts()
        return [counts.idle, counts.busy]
    }

    /// Without an idle connection, each lease opens a new connection with a fresh ID.
    @Test func leasesWithoutIdleConnectionsConnectWithFreshIDs() {
        var pool = makePool()
        #expect(pool.lease(now: t0) == .connect(id(1)))
        #expect(pool.lease(now: t0) == .connect(id(2)))
        #expect(pool.lease(now: t0) == .connect(id(3)))
        #expect(counts(pool) == [0, 3])
    }

    /// IDs come from the injected generator, so they carry the loop's index.
    @Test func connectionIDsComeFromTheInjectedGenerator() {
        var pool = makePool(loop: 5)
        #expect(pool.lease(now: t0) == .connect(id(1, loop: 5)))
    }

    /// A reusable connection released is parked and the next lease uses it.
    @Test func releasedReusableConnectionIsParkedAndReused() {
        var pool = makePool()
        #expect(pool.lease(now: t0) == .connect(id(1)))
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
        #expect(counts(pool) == [1, 0])
        #expect(pool.lease(now: t0) == .useIdle(id(1)))
        #expect(counts(pool) == [0, 1])
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
    }

    /// The most recently parked connection is reused first (LIFO), so the rest can time out.
    @Test func mostRecentlyParkedConnectionIsReusedFirst() {
        var pool = makePool()
        for raw in UInt64(1)...3 { #expect(pool.lease(now: t0) == .connect(id(raw))) }
        #expect(pool.release(id(2), reusable: true, now: t0) == .park)
        #expect(pool.release(id(1), reusable: true, now: t0 + .seconds(1)) == .park)
        #expect(pool.release(id(3), reusable: true, now: t0 + .seconds(2)) == .park)
        #expect(pool.lease(now: t0 + .seconds(3)) == .useIdle(id(3)))
        #expect(pool.lease(now: t0 + .seconds(3)) == .useIdle(id(1)))
        #expect(pool.lease(now: t0 + .seconds(3)) == .useIdle(id(2)))
        #expect(pool.lease(now: t0 + .seconds(3)) == .connect(id(4)))
    }

    /// Beyond maxIdle idle connections, released connections are closed; once one is leased again,
    /// there is room to park another.
    @Test func releaseBeyondMaxIdleCloses() {
        var pool = makePool(maxIdle: 2)
        for _ in 0..<4 { _ = pool.lease(now: t0) }
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
        #expect(pool.release(id(2), reusable: true, now: t0) == .park)
        #expect(pool.release(id(3), reusable: true, now: t0) == .close)
        #expect(counts(pool) == [2, 1])
        #expect(pool.lease(now: t0) == .useIdle(id(2)))
        #expect(pool.release(id(4), reusable: true, now: t0) == .park)
        #expect(counts(pool) == [2, 1])
    }

    /// With maxIdle 0 nothing is ever parked.
    @Test func maxIdleZeroNeverParks() {
        var pool = makePool(maxIdle: 0)
        _ = pool.lease(now: t0)
        #expect(pool.release(id(1), reusable: true, now: t0) == .close)
        #expect(pool.lease(now: t0) == .connect(id(2)))
    }

    /// A connection released as not reusable is closed and forgotten; the next lease connects anew.
    @Test func releaseNotReusableClosesAndForgets() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        #expect(pool.release(id(1), reusable: false, now: t0) == .close)
        #expect(counts(pool) == [0, 0])
        pool.connectionClosed(id(1))  // its close arrives later: nothing to forget
        #expect(pool.lease(now: t0) == .connect(id(2)))
    }

    /// Releasing a connection that was not leased is a programming error.
    @Test func releasingAConnectionTwiceIsAPreconditionFailure() async {
        await #expect(processExitsWith: .failure) {
            var pool = UpstreamPoolStateMachine<ContinuousClock.Instant>(
                maxIdle: 1, idleTimeout: .seconds(1), idGenerator: ConnectionID.Generator())
            let now = ContinuousClock.now
            guard case .connect(let id) = pool.lease(now: now) else { return }
            _ = pool.release(id, reusable: false, now: now)
            _ = pool.release(id, reusable: false, now: now)
        }
    }

    /// Shutdown (the drain, or the endpoint left its group) returns every idle connection to close;
    /// later releases close instead of parking, and leases still work for the requests that remain.
    @Test func shutdownClosesIdleAndLaterReleasesClose() {
        var pool = makePool()
        for _ in 0..<4 { _ = pool.lease(now: t0) }
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.release(id(2), reusable: true, now: t0)
        _ = pool.release(id(3), reusable: true, now: t0)
        #expect(Set(pool.shutdown()) == [id(1), id(2), id(3)])
        #expect(counts(pool) == [0, 1])
        #expect(pool.release(id(4), reusable: true, now: t0) == .close)
        #expect(pool.shutdown().isEmpty)
        #expect(pool.lease(now: t0) == .connect(id(5)))
        #expect(pool.release(id(5), reusable: true, now: t0) == .close)
        #expect(counts(pool) == [0, 0])
    }

    /// isShuttingDown is false until shutdown, then true for good, also once the pool is empty.
    @Test func isShuttingDownTurnsTrueAtShutdownAndStays() {
        var pool = makePool()
        #expect(!pool.isShuttingDown)
        _ = pool.lease(now: t0)
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.sweep(now: t0 + .seconds(10))
        #expect(!pool.isShuttingDown, "an empty pool is not shutting down by itself")
        #expect(pool.shutdown().isEmpty)
        #expect(pool.isShuttingDown)
        _ = pool.lease(now: t0)
        _ = pool.release(id(2), reusable: true, now: t0)
        _ = pool.shutdown()
        #expect(pool.isShuttingDown)
        #expect(counts(pool) == [0, 0])
    }

    /// The sweep closes idle connections parked idleTimeout ago or longer, and only those.
    @Test func sweepClosesConnectionsIdleForTheIdleTimeout() {
        var pool = makePool()
        for _ in 0..<4 { _ = pool.lease(now: t0) }
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.release(id(2), reusable: true, now: t0 + .seconds(1))
        _ = pool.release(id(3), reusable: true, now: t0 + .seconds(2))
        #expect(pool.sweep(now: t0 + .seconds(4) - .nanoseconds(1)).isEmpty)
        #expect(pool.sweep(now: t0 + .seconds(4)) == [id(1)])
        #expect(Set(pool.sweep(now: t0 + .seconds(6))) == [id(2), id(3)])
        #expect(counts(pool) == [0, 1], "the busy connection is not swept")
        #expect(pool.lease(now: t0 + .seconds(6)) == .connect(id(5)))
    }

    /// A leased connection's idle time starts again when it is parked again.
    @Test func reparkingRestartsTheIdleTime() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.lease(now: t0 + .seconds(3))
        _ = pool.release(id(1), reusable: true, now: t0 + .seconds(3))
        #expect(pool.sweep(now: t0 + .seconds(5)).isEmpty)
        #expect(pool.sweep(now: t0 + .seconds(7)) == [id(1)])
    }

    /// An idle connection the upstream closed is not leased again.
    @Test func idleConnectionClosedByTheUpstreamIsNotReused() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        _ = pool.lease(now: t0)
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.release(id(2), reusable: true, now: t0)
        pool.connectionClosed(id(2))
        #expect(counts(pool) == [1, 0])
        #expect(pool.lease(now: t0) == .useIdle(id(1)))
        #expect(pool.lease(now: t0) == .connect(id(3)))
    }

    /// A busy connection that closed (or failed to connect) no longer counts as busy.
    @Test func busyConnectionClosedFreesItsSlot() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        _ = pool.lease(now: t0)
        pool.connectionClosed(id(2))
        #expect(counts(pool) == [0, 1])
        pool.connectionClosed(id(2))
        pool.connectionClosed(id(99))
        #expect(counts(pool) == [0, 1])
    }

    /// The configured limits are kept.
    @Test func limitsAreKept() {
        let pool = makePool(maxIdle: 7, idleTimeout: .seconds(9))
        #expect(pool.maxIdle == 7)
        #expect(pool.idleTimeout == .seconds(9))
    }

    // MARK: - Random sequences against the model

    /// Thousands of random leases, releases, closes, sweeps and a shutdown never make the machine ask
    /// for an illegal action, and its counts always match the model's.
    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8, 0xC0FFEE, 0xFEED_FACE])
    func randomSequencesNeverBreakThePoolRules(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let maxIdle = Int.random(in: 0...4, using: &rng)
        var pool = makePool(maxIdle: maxIdle, idleTimeout: .seconds(4), loop: Int(seed % 7))
        var model = UpstreamPoolModel(maxIdle: maxIdle, idleTimeout: .seconds(4))
        var clock = MockClock(now: t0)
        let shutdownStep = Int.random(in: 1500...2500, using: &rng)
        var parked = 0
        var reused = 0

        for step in 0..<3000 {
            let roll = Int.random(in: 0..<100, using: &rng)
            switch roll {
            case 0..<38:
                let action = pool.lease(now: clock.now)
                if case .useIdle = action { reused += 1 }
                try model.leased(action)
            case 38..<72:
                guard let id = model.busy.sorted(by: { $0.rawValue < $1.rawValue }).randomElement(using: &rng) else { break }
                let reusable = Int.random(in: 0..<10, using: &rng) < 8
                let action = pool.release(id, reusable: reusable, now: clock.now)
                if action == .park { parked += 1 }
                try model.released(id, reusable: reusable, now: clock.now, action: action)
            case 72..<80:
                let known = (Array(model.busy) + model.idleIDs).sorted { $0.rawValue < $1.rawValue }
                guard let id = known.randomElement(using: &rng) else { break }
                pool.connectionClosed(id)
                model.closed(id)
            case 80..<92:
                clock.advance(by: .milliseconds(Int64.random(in: 0...3000, using: &rng)))
                try model.swept(pool.sweep(now: clock.now), now: clock.now)
            default:
                clock.advance(by: .milliseconds(Int64.random(in: 0...200, using: &rng)))
            }
            if step == shutdownStep {
                try model.shutDown(pool.shutdown())
            }
            #expect(counts(pool) == model.counts, "step \(step)")
            #expect(pool.isShuttingDown == model.shuttingDown, "step \(step)")
        }
        #expect(model.shuttingDown)
        if maxIdle > 0 {
            #expect(parked > 0 && reused > 0, "the sequence exercised parking and reuse")
        }
    }

    /// The model itself refuses an illegal action, so the random test can fail.
    @Test func modelRejectsIllegalActions() {
        var fresh = UpstreamPoolModel(maxIdle: 2, idleTimeout: .seconds(4))
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.leased(.useIdle(id(1))) }
        #expect(throws: Never.self) { try fresh.leased(.connect(id(1))) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.released(id(1), reusable: true, now: t0, action: .close) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.released(id(1), reusable: true, now: t0, action: .park) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.leased(.connect(id(1))) }
        var parked = UpstreamPoolModel(maxIdle: 2, idleTimeout: .seconds(4))
        #expect(throws: Never.self) { try parked.leased(.connect(id(1))) }
        #expect(throws: Never.self) { try parked.leased(.connect(id(2))) }
        #expect(throws: Never.self) { try parked.released(id(1), reusable: true, now: t0, action: .park) }
        #expect(throws: Never.self) { try parked.released(id(2), reusable: true, now: t0, action: .park) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try parked.leased(.connect(id(3))) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try parked.leased(.useIdle(id(1))) }
        var noIdle = UpstreamPoolModel(maxIdle: 0, idleTimeout: .seconds(4))
        #expect(throws: Never.self) { try noIdle.leased(.connect(id(1))) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try noIdle.released(id(1), reusable: true, now: t0, action: .park) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try noIdle.swept([id(1)], now: t0) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try noIdle.shutDown([id(1)]) }
    }
}
