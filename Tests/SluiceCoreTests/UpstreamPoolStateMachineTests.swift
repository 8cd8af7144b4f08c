import SluiceCore
import Testing

@Suite struct UpstreamPoolStateMachineTests {
    typealias Pool = UpstreamPoolStateMachine<MockClock.Instant>
    typealias Instant = MockClock.Instant

    let t0 = Instant(offset: .seconds(1000))

    func makePool(upstreams: Int = 1, maxIdle: Int = 32, idleTimeout: Duration = .seconds(4), loop: Int = 0) -> Pool {
        Pool(upstreamCount: upstreams, maxIdle: maxIdle, idleTimeout: idleTimeout, idGenerator: ConnectionID.Generator(loopIndex: loop))
    }

    func id(_ raw: UInt64, loop: UInt64 = 0) -> ConnectionID { ConnectionID(rawValue: loop << 48 | raw) }

    func counts(_ pool: Pool) -> [[Int]] { pool.counts().map { [$0.idle, $0.busy] } }

    /// Leases go round-robin over the upstreams, opening a new connection with a fresh ID on each.
    @Test func leasesGoRoundRobinAndConnectWithFreshIDs() {
        var pool = makePool(upstreams: 3)
        #expect(pool.lease(now: t0) == .connect(id(1), upstream: 0))
        #expect(pool.lease(now: t0) == .connect(id(2), upstream: 1))
        #expect(pool.lease(now: t0) == .connect(id(3), upstream: 2))
        #expect(pool.lease(now: t0) == .connect(id(4), upstream: 0))
        #expect(counts(pool) == [[0, 2], [0, 1], [0, 1]])
    }

    /// IDs come from the injected generator, so they carry the loop's index.
    @Test func connectionIDsComeFromTheInjectedGenerator() {
        var pool = makePool(loop: 5)
        #expect(pool.lease(now: t0) == .connect(id(1, loop: 5), upstream: 0))
    }

    /// Leasing a given upstream does not move the round-robin position.
    @Test func leasingAGivenUpstreamKeepsTheRoundRobinPosition() {
        var pool = makePool(upstreams: 3)
        #expect(pool.lease(upstream: 2, now: t0) == .connect(id(1), upstream: 2))
        #expect(pool.lease(now: t0) == .connect(id(2), upstream: 0))
        #expect(pool.lease(upstream: 0, now: t0) == .connect(id(3), upstream: 0))
        #expect(pool.lease(now: t0) == .connect(id(4), upstream: 1))
    }

    /// A reusable connection released is parked and the next lease of its upstream uses it.
    @Test func releasedReusableConnectionIsParkedAndReused() {
        var pool = makePool()
        #expect(pool.lease(now: t0) == .connect(id(1), upstream: 0))
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
        #expect(counts(pool) == [[1, 0]])
        #expect(pool.lease(now: t0) == .useIdle(id(1), upstream: 0))
        #expect(counts(pool) == [[0, 1]])
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
    }

    /// An idle connection of one upstream is never used for another.
    @Test func idleConnectionServesOnlyItsOwnUpstream() {
        var pool = makePool(upstreams: 2)
        #expect(pool.lease(now: t0) == .connect(id(1), upstream: 0))
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
        #expect(pool.lease(now: t0) == .connect(id(2), upstream: 1))
        #expect(pool.lease(now: t0) == .useIdle(id(1), upstream: 0))
    }

    /// The most recently parked connection is reused first (LIFO), so the rest can time out.
    @Test func mostRecentlyParkedConnectionIsReusedFirst() {
        var pool = makePool()
        for raw in UInt64(1)...3 { #expect(pool.lease(now: t0) == .connect(id(raw), upstream: 0)) }
        #expect(pool.release(id(2), reusable: true, now: t0) == .park)
        #expect(pool.release(id(1), reusable: true, now: t0 + .seconds(1)) == .park)
        #expect(pool.release(id(3), reusable: true, now: t0 + .seconds(2)) == .park)
        #expect(pool.lease(now: t0 + .seconds(3)) == .useIdle(id(3), upstream: 0))
        #expect(pool.lease(now: t0 + .seconds(3)) == .useIdle(id(1), upstream: 0))
        #expect(pool.lease(now: t0 + .seconds(3)) == .useIdle(id(2), upstream: 0))
        #expect(pool.lease(now: t0 + .seconds(3)) == .connect(id(4), upstream: 0))
    }

    /// Beyond maxIdle idle connections per upstream, released connections are closed.
    @Test func releaseBeyondMaxIdleCloses() {
        var pool = makePool(upstreams: 2, maxIdle: 2)
        for _ in 0..<6 { _ = pool.lease(now: t0) }  // ids 1, 3, 5 on upstream 0; 2, 4, 6 on upstream 1
        #expect(pool.release(id(1), reusable: true, now: t0) == .park)
        #expect(pool.release(id(3), reusable: true, now: t0) == .park)
        #expect(pool.release(id(5), reusable: true, now: t0) == .close)
        #expect(pool.release(id(2), reusable: true, now: t0) == .park, "the limit is per upstream")
        #expect(counts(pool) == [[2, 0], [1, 2]])
    }

    /// With maxIdle 0 nothing is ever parked.
    @Test func maxIdleZeroNeverParks() {
        var pool = makePool(maxIdle: 0)
        _ = pool.lease(now: t0)
        #expect(pool.release(id(1), reusable: true, now: t0) == .close)
        #expect(pool.lease(now: t0) == .connect(id(2), upstream: 0))
    }

    /// A connection released as not reusable is closed and forgotten; the next lease connects anew.
    @Test func releaseNotReusableClosesAndForgets() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        #expect(pool.release(id(1), reusable: false, now: t0) == .close)
        #expect(counts(pool) == [[0, 0]])
        pool.connectionClosed(id(1))  // its close arrives later: nothing to forget
        #expect(pool.lease(now: t0) == .connect(id(2), upstream: 0))
    }

    /// Releasing a connection that was not leased is a programming error.
    @Test func releasingAConnectionTwiceIsAPreconditionFailure() async {
        await #expect(processExitsWith: .failure) {
            var pool = UpstreamPoolStateMachine<ContinuousClock.Instant>(
                upstreamCount: 1, maxIdle: 1, idleTimeout: .seconds(1), idGenerator: ConnectionID.Generator())
            let now = ContinuousClock.now
            guard case .connect(let id, _) = pool.lease(now: now) else { return }
            _ = pool.release(id, reusable: false, now: now)
            _ = pool.release(id, reusable: false, now: now)
        }
    }

    /// Shutdown returns every idle connection to close; later releases close instead of parking, and
    /// leases still work for the requests that remain.
    @Test func shutdownClosesIdleAndLaterReleasesClose() {
        var pool = makePool(upstreams: 2)
        for _ in 0..<4 { _ = pool.lease(now: t0) }
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.release(id(2), reusable: true, now: t0)
        _ = pool.release(id(3), reusable: true, now: t0)
        #expect(Set(pool.shutdown()) == [id(1), id(2), id(3)])
        #expect(counts(pool) == [[0, 0], [0, 1]])
        #expect(pool.release(id(4), reusable: true, now: t0) == .close)
        #expect(pool.shutdown().isEmpty)
        #expect(pool.lease(now: t0) == .connect(id(5), upstream: 0))
        #expect(pool.release(id(5), reusable: true, now: t0) == .close)
    }

    /// The sweep closes idle connections parked idleTimeout ago or longer, and only those.
    @Test func sweepClosesConnectionsIdleForTheIdleTimeout() {
        var pool = makePool(upstreams: 2)
        for _ in 0..<3 { _ = pool.lease(now: t0) }
        _ = pool.release(id(1), reusable: true, now: t0)
        _ = pool.release(id(2), reusable: true, now: t0 + .seconds(1))
        _ = pool.release(id(3), reusable: true, now: t0 + .seconds(2))
        #expect(pool.sweep(now: t0 + .seconds(4) - .nanoseconds(1)).isEmpty)
        #expect(pool.sweep(now: t0 + .seconds(4)) == [id(1)])
        #expect(Set(pool.sweep(now: t0 + .seconds(6))) == [id(2), id(3)])
        #expect(counts(pool) == [[0, 0], [0, 0]])
        #expect(pool.lease(upstream: 0, now: t0 + .seconds(6)) == .connect(id(4), upstream: 0))
        #expect(pool.lease(upstream: 1, now: t0 + .seconds(6)) == .connect(id(5), upstream: 1))
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
        #expect(counts(pool) == [[1, 0]])
        #expect(pool.lease(now: t0) == .useIdle(id(1), upstream: 0))
        #expect(pool.lease(now: t0) == .connect(id(3), upstream: 0))
    }

    /// A busy connection that closed (or failed to connect) no longer counts as busy.
    @Test func busyConnectionClosedFreesItsSlot() {
        var pool = makePool(upstreams: 2)
        _ = pool.lease(now: t0)
        _ = pool.lease(now: t0)
        pool.connectionClosed(id(2))
        #expect(counts(pool) == [[0, 1], [0, 0]])
        pool.connectionClosed(id(2))
        pool.connectionClosed(id(99))
        #expect(counts(pool) == [[0, 1], [0, 0]])
    }

    /// upstream(after:) names the next upstream, wrapping, and the same one when there is only one.
    @Test func upstreamAfterWrapsAround() {
        let three = makePool(upstreams: 3)
        #expect([0, 1, 2].map { three.upstream(after: $0) } == [1, 2, 0])
        #expect(makePool(upstreams: 1).upstream(after: 0) == 0)
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
        let upstreams = Int.random(in: 1...4, using: &rng)
        let maxIdle = Int.random(in: 0...4, using: &rng)
        var pool = makePool(upstreams: upstreams, maxIdle: maxIdle, idleTimeout: .seconds(4), loop: Int(seed % 7))
        var model = UpstreamPoolModel(upstreamCount: upstreams, maxIdle: maxIdle, idleTimeout: .seconds(4))
        var clock = MockClock(now: t0)
        let shutdownStep = Int.random(in: 1500...2500, using: &rng)
        var parked = 0
        var reused = 0

        for step in 0..<3000 {
            let roll = Int.random(in: 0..<100, using: &rng)
            switch roll {
            case 0..<30:
                let action = pool.lease(now: clock.now)
                if case .useIdle = action { reused += 1 }
                try model.leasedRoundRobin(action)
            case 30..<38:
                let upstream = Int.random(in: 0..<upstreams, using: &rng)
                try model.leased(pool.lease(upstream: upstream, now: clock.now), upstream: upstream)
            case 38..<72:
                guard let id = model.busy.keys.sorted(by: { $0.rawValue < $1.rawValue }).randomElement(using: &rng) else { break }
                let reusable = Int.random(in: 0..<10, using: &rng) < 8
                let action = pool.release(id, reusable: reusable, now: clock.now)
                if action == .park { parked += 1 }
                try model.released(id, reusable: reusable, now: clock.now, action: action)
            case 72..<80:
                let known = (Array(model.busy.keys) + model.idleIDs).sorted { $0.rawValue < $1.rawValue }
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
        }
        #expect(model.shuttingDown)
        if maxIdle > 0 {
            #expect(parked > 0 && reused > 0, "the sequence exercised parking and reuse")
        }
    }

    /// The model itself refuses an illegal action, so the random test can fail.
    @Test func modelRejectsIllegalActions() {
        var model = UpstreamPoolModel(upstreamCount: 2, maxIdle: 1, idleTimeout: .seconds(4))
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try model.leasedRoundRobin(.connect(id(1), upstream: 1)) }
        var fresh = UpstreamPoolModel(upstreamCount: 1, maxIdle: 1, idleTimeout: .seconds(4))
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.leasedRoundRobin(.useIdle(id(1), upstream: 0)) }
        #expect(throws: Never.self) { try fresh.leased(.connect(id(1), upstream: 0), upstream: 0) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.released(id(1), reusable: true, now: t0, action: .close) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.released(id(1), reusable: true, now: t0, action: .park) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try fresh.leased(.connect(id(1), upstream: 0), upstream: 0) }
        var noIdle = UpstreamPoolModel(upstreamCount: 1, maxIdle: 0, idleTimeout: .seconds(4))
        #expect(throws: Never.self) { try noIdle.leased(.connect(id(1), upstream: 0), upstream: 0) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try noIdle.released(id(1), reusable: true, now: t0, action: .park) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try noIdle.swept([id(1)], now: t0) }
        #expect(throws: UpstreamPoolModel.IllegalAction.self) { try noIdle.shutDown([id(1)]) }
    }
}
