import SluiceCore
import Testing

@Suite struct HTTP2UpstreamPoolStateMachineTests {
    typealias Pool = HTTP2UpstreamPoolStateMachine<MockClock.Instant>
    typealias Instant = MockClock.Instant

    let t0 = Instant(offset: .seconds(1000))

    func makePool(maxConnections: Int = 4, idleTimeout: Duration = .seconds(4)) -> Pool {
        Pool(maxConnections: maxConnections, idleTimeout: idleTimeout, idGenerator: ConnectionID.Generator())
    }

    func id(_ raw: UInt64) -> ConnectionID { ConnectionID(rawValue: raw) }

    func counts(_ pool: Pool) -> [Int] {
        let counts = pool.counts()
        return [counts.idle, counts.busy]
    }

    /// The first lease connects; leases while it connects wait on it instead of opening more connections.
    @Test func aBurstWaitsOnOneConnect() {
        var pool = makePool()
        #expect(pool.lease(now: t0) == .connect(id(1)))
        for _ in 0..<99 { #expect(pool.lease(now: t0) == .wait(id(1))) }
        #expect(pool.connection(id(1))?.streams == 100)
        // The 101st exceeds the assumed 100 slots: a second connection.
        #expect(pool.lease(now: t0) == .connect(id(2)))
        #expect(counts(pool) == [0, 2])
    }

    /// Once connected, streams go to the ready connection with the fewest streams, within its limit.
    @Test func streamsGoToTheLeastLoadedConnectionWithinThePeersLimit() {
        var pool = makePool()
        #expect(pool.lease(now: t0) == .connect(id(1)))
        pool.connected(id(1), maxConcurrentStreams: 2, now: t0)
        #expect(pool.lease(now: t0) == .use(id(1)))
        #expect(pool.lease(now: t0) == .connect(id(2)))
        pool.connected(id(2), maxConcurrentStreams: 2, now: t0)
        #expect(pool.lease(now: t0) == .use(id(2)))
        #expect(pool.streamClosed(id(1), now: t0) == .keep)
        #expect(pool.lease(now: t0) == .use(id(1)))
        #expect(pool.connection(id(1))?.streams == 2)
        #expect(pool.connection(id(2))?.streams == 2)
    }

    /// At the connection cap, the least loaded connection takes the stream past its limit (libnghttp2 queues it).
    @Test func pastTheConnectionCapStreamsOvercommitTheLeastLoaded() {
        var pool = makePool(maxConnections: 2)
        #expect(pool.lease(now: t0) == .connect(id(1)))
        pool.connected(id(1), maxConcurrentStreams: 1, now: t0)
        #expect(pool.lease(now: t0) == .connect(id(2)))
        pool.connected(id(2), maxConcurrentStreams: 1, now: t0)
        #expect(pool.lease(now: t0) == .use(id(1)))
        #expect(pool.lease(now: t0) == .use(id(2)))
        #expect(pool.lease(now: t0) == .use(id(1)))
        #expect(pool.connection(id(1))?.streams == 3)
    }

    /// A peer limit of 0 is treated as 1, so a connection is never unusable forever.
    @Test func aZeroStreamLimitCountsAsOne() {
        var pool = makePool(maxConnections: 1)
        _ = pool.lease(now: t0)
        pool.connected(id(1), maxConcurrentStreams: 0, now: t0)
        #expect(pool.connection(id(1))?.maxStreams == 1)
        pool.maxConcurrentStreamsChanged(id(1), to: 0)
        #expect(pool.connection(id(1))?.maxStreams == 1)
        pool.maxConcurrentStreamsChanged(id(1), to: 50)
        #expect(pool.connection(id(1))?.maxStreams == 50)
    }

    /// GOAWAY from the upstream: no new streams there; the connection closes when its last stream ends.
    @Test func goAwayStopsNewStreamsAndClosesWhenDrained() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        pool.connected(id(1), maxConcurrentStreams: 100, now: t0)
        #expect(pool.lease(now: t0) == .use(id(1)))
        #expect(pool.goAwayReceived(id(1)) == .keep)
        #expect(pool.lease(now: t0) == .connect(id(2)))
        #expect(pool.streamClosed(id(1), now: t0) == .keep)
        #expect(pool.streamClosed(id(1), now: t0) == .close)
        #expect(pool.connection(id(1)) == nil)
        // GOAWAY on a connection without streams closes it at once.
        pool.connected(id(2), maxConcurrentStreams: 100, now: t0)
        #expect(pool.streamClosed(id(2), now: t0) == .keep)
        #expect(pool.goAwayReceived(id(2)) == .close)
        #expect(counts(pool) == [0, 0])
    }

    /// Connections without streams are swept after the idle timeout, measured from their last stream's end.
    @Test func idleConnectionsAreSweptAfterTheTimeout() {
        var pool = makePool(idleTimeout: .seconds(4))
        _ = pool.lease(now: t0)
        pool.connected(id(1), maxConcurrentStreams: 100, now: t0)
        #expect(pool.sweep(now: t0 + .seconds(10)) == [])  // a stream is open
        #expect(pool.streamClosed(id(1), now: t0 + .seconds(10)) == .keep)
        #expect(counts(pool) == [1, 0])
        #expect(pool.sweep(now: t0 + .seconds(13)) == [])
        #expect(pool.lease(now: t0 + .seconds(13)) == .use(id(1)))  // reuse resets the clock
        #expect(pool.streamClosed(id(1), now: t0 + .seconds(14)) == .keep)
        #expect(pool.sweep(now: t0 + .seconds(17.5)) == [])
        #expect(pool.sweep(now: t0 + .seconds(18)) == [id(1)])
        #expect(pool.connection(id(1)) == nil)
        // A connection that never had a stream after connecting idles from its connect.
        #expect(pool.lease(now: t0 + .seconds(20)) == .connect(id(2)))
        #expect(pool.streamClosed(id(2), now: t0 + .seconds(20)) == .keep)  // the request went away while connecting
        pool.connected(id(2), maxConcurrentStreams: 100, now: t0 + .seconds(21))
        #expect(pool.sweep(now: t0 + .seconds(25)) == [id(2)])
    }

    /// A connection that closes or fails to connect is forgotten; the next lease connects anew.
    @Test func aClosedConnectionIsForgotten() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        _ = pool.lease(now: t0)
        pool.connectionClosed(id(1))
        #expect(pool.connection(id(1)) == nil)
        #expect(pool.streamClosed(id(1), now: t0) == .keep)  // late reports about it are ignored
        pool.connected(id(1), maxConcurrentStreams: 10, now: t0)
        #expect(pool.goAwayReceived(id(1)) == .keep)
        #expect(pool.lease(now: t0) == .connect(id(2)))
        #expect(counts(pool) == [0, 1])
    }

    /// Shutdown (the drain, or the endpoint left its group) closes connections without streams at
    /// once and the others as their last stream ends.
    @Test func shutdownClosesIdleNowAndBusyWhenDone() {
        var pool = makePool()
        _ = pool.lease(now: t0)
        pool.connected(id(1), maxConcurrentStreams: 1, now: t0)
        _ = pool.lease(now: t0)
        pool.connected(id(2), maxConcurrentStreams: 1, now: t0)
        #expect(pool.streamClosed(id(2), now: t0) == .keep)
        #expect(pool.shutdown() == [id(2)])
        #expect(pool.streamClosed(id(1), now: t0) == .close)
        #expect(counts(pool) == [0, 0])
        // A request accepted before the listeners closed still gets a stream.
        #expect(pool.lease(now: t0) == .connect(id(3)))
        pool.connected(id(3), maxConcurrentStreams: 10, now: t0)
        #expect(pool.streamClosed(id(3), now: t0) == .close)
        #expect(counts(pool) == [0, 0])
        #expect(pool.shutdown().isEmpty)
    }

    /// isShuttingDown is false until shutdown, then true for good, also once the pool is empty.
    @Test func isShuttingDownTurnsTrueAtShutdownAndStays() {
        var pool = makePool()
        #expect(!pool.isShuttingDown)
        _ = pool.lease(now: t0)
        pool.connectionClosed(id(1))
        #expect(!pool.isShuttingDown, "an empty pool is not shutting down by itself")
        #expect(pool.shutdown().isEmpty)
        #expect(pool.isShuttingDown)
        _ = pool.lease(now: t0)
        pool.connected(id(2), maxConcurrentStreams: 10, now: t0)
        #expect(pool.streamClosed(id(2), now: t0) == .close)
        _ = pool.shutdown()
        #expect(pool.isShuttingDown)
        #expect(counts(pool) == [0, 0])
    }

    /// The configured limits are kept.
    @Test func limitsAreKept() {
        let pool = makePool(maxConnections: 7, idleTimeout: .seconds(9))
        #expect(pool.maxConnections == 7)
        #expect(pool.idleTimeout == .seconds(9))
    }

    /// Random walks against a plain model: stream counts per connection always match, no connection
    /// exceeds its limit while another usable connection could be opened, closes happen exactly when
    /// the model says the connection is drained and may not take streams (before and after a
    /// shutdown), and the counts match.
    @Test(arguments: [1, 2, 3, 42, 1234])
    func randomWalksMatchTheModel(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let cap = Int(rng.next() % 3) + 1
        var pool = makePool(maxConnections: cap, idleTimeout: .seconds(4))
        struct ModelConnection {
            var state: Pool.ConnectionState
            var streams: Int
            var max: Int
        }
        var model: [ConnectionID: ModelConnection] = [:]
        var shuttingDown = false
        let shutdownStep = 2_500 + Int(rng.next() % 2_000)
        var now = t0
        for step in 0..<5_000 {
            if step == shutdownStep {
                let idle = model.filter { $0.value.state == .ready && $0.value.streams == 0 }.keys
                #expect(pool.shutdown() == idle.sorted { $0.rawValue < $1.rawValue })
                for id in idle { model[id] = nil }
                shuttingDown = true
            }
            now = now + .milliseconds(Int(rng.next() % 700))
            let ids = model.keys.sorted { $0.rawValue < $1.rawValue }
            switch rng.next() % 7 {
            case 0, 1:
                let action = pool.lease(now: now)
                switch action {
                case .connect(let id):
                    #expect(model[id] == nil)
                    let usable = model.values.filter { $0.state != .goingAway }
                    #expect(usable.count < cap)
                    #expect(usable.allSatisfy { $0.streams >= $0.max })
                    model[id] = ModelConnection(state: .connecting, streams: 1, max: 100)
                case .use(let id), .wait(let id):
                    #expect(model[id]?.state == (action == .use(id) ? .ready : .connecting))
                    model[id]!.streams += 1
                }
            case 2:
                guard let id = ids.first(where: { model[$0]!.state == .connecting }) else { continue }
                let max = Int(rng.next() % 4)
                pool.connected(id, maxConcurrentStreams: max, now: now)
                model[id]!.state = .ready
                model[id]!.max = Swift.max(1, max)
            case 3, 4:
                guard let id = ids.filter({ model[$0]!.streams > 0 }).randomElement(using: &rng) else { continue }
                model[id]!.streams -= 1
                let expectClose =
                    model[id]!.streams == 0 && (model[id]!.state == .goingAway || (shuttingDown && model[id]!.state == .ready))
                #expect(pool.streamClosed(id, now: now) == (expectClose ? .close : .keep))
                if expectClose { model[id] = nil }
            case 5:
                guard let id = ids.filter({ model[$0]!.state == .ready }).randomElement(using: &rng) else { continue }
                let expectClose = model[id]!.streams == 0
                #expect(pool.goAwayReceived(id) == (expectClose ? .close : .keep))
                if expectClose { model[id] = nil } else { model[id]!.state = .goingAway }
            default:
                if rng.next() % 2 == 0, let id = ids.randomElement(using: &rng) {
                    pool.connectionClosed(id)
                    model[id] = nil
                } else {
                    for id in pool.sweep(now: now) {
                        #expect(model[id]?.state == .ready && model[id]?.streams == 0)
                        model[id] = nil
                    }
                }
            }
            for (id, connection) in model {
                let seen = pool.connection(id)
                #expect(seen?.state == connection.state && seen?.streams == connection.streams && seen?.maxStreams == connection.max)
            }
            let idle = model.values.filter { $0.state == .ready && $0.streams == 0 }.count
            #expect(counts(pool) == [idle, model.count - idle], "step \(step)")
            #expect(pool.isShuttingDown == shuttingDown)
        }
    }
}
