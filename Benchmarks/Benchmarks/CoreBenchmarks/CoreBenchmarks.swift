// The pure per-connection and per-request decisions of SluiceCore, measured without any I/O.
//
// Each benchmark runs its operation `benchmark.scaledIterations` times per sample; the table shows
// time and mallocs per operation. Only `mallocCountTotal` has checked-in thresholds
// (Benchmarks/Thresholds/): allocation counts are deterministic, timings on a shared machine are not.

import Benchmark
import SluiceBenchmarkSupport
import SluiceCore
import SluiceProxy

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .sluiceMicro(scalingFactor: .kilo)

    connectionTableBenchmarks()
    drainLifecycleBenchmarks()
    upstreamPoolBenchmarks()
}

// MARK: - ConnectionTable

/// The instant the proxy feeds the machines (`ConnectionTable<MonotonicInstant>` in `LoopContext`).
typealias Instant = MonotonicInstant

/// `sluice`'s defaults, which the machines are configured from.
let defaults = SluiceConfig()

/// The table's timeouts at the defaults (30 s header, 60 s idle, 250 ms drain quiet period).
let timeouts = ConnectionTable<Instant>.Timeouts(
    requestHeader: defaults.http.requestHeaderTimeout,
    idle: defaults.http.idleTimeout,
    drainQuiet: defaults.drain.idleQuietPeriod
)

/// A table of `count` HTTP/1 connections that have each served a request; every tenth one is
/// serving another right now, every hundredth is reading a head. Nothing in it is due for a close
/// before `start + 30 s`.
func populatedTable(count: Int, start: Instant, ids: inout ConnectionID.Generator) -> ConnectionTable<Instant> {
    var table = ConnectionTable<Instant>(timeouts: timeouts)
    var rng = SplitMix64(seed: 42)
    for index in 0..<count {
        let id = ids.make()
        table.add(id, protocol: .http1, peer: "10.0.\(index / 256 % 256).\(index % 256)", now: start, using: &rng)
        table.requestHeadBegan(id, now: start)
        table.requestStarted(id, now: start)
        table.requestFinished(id, now: start)
        if index % 10 == 0 {
            table.requestHeadBegan(id, now: start)
            table.requestStarted(id, now: start)
        } else if index % 100 == 1 {
            table.requestHeadBegan(id, now: start)
        }
    }
    return table
}

func connectionTableBenchmarks() {
    /// A connection's whole life on a loop already holding 1,000 others: accept, one request, close.
    Benchmark("ConnectionTable.connectionLifecycle.1kOpen") { benchmark in
        let start = Instant.now()
        var ids = ConnectionID.Generator(loopIndex: 1)
        var table = populatedTable(count: 1_000, start: start, ids: &ids)
        var rng = SplitMix64(seed: 7)
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            let now = start.advanced(by: .microseconds(index))
            let id = ids.make()
            table.add(id, protocol: .http1, peer: "192.0.2.10", now: now, using: &rng)
            table.requestHeadBegan(id, now: now)
            table.requestStarted(id, now: now)
            blackHole(table.responseShouldClose(id, now: now))
            table.requestFinished(id, now: now)
            blackHole(table.remove(id))
        }
        benchmark.stopMeasurement()
        blackHole(table.count)
    }

    /// The per-request path of a keep-alive connection: head begins, request starts, the response
    /// asks whether to add `Connection: close`, the request finishes.
    Benchmark("ConnectionTable.keepAliveRequest.1kOpen") { benchmark in
        let start = Instant.now()
        var ids = ConnectionID.Generator(loopIndex: 1)
        var table = populatedTable(count: 1_000, start: start, ids: &ids)
        let id = ConnectionID(rawValue: (1 << 48) | 500)
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            let now = start.advanced(by: .microseconds(index))
            table.requestHeadBegan(id, now: now)
            table.requestStarted(id, now: now)
            blackHole(table.responseShouldClose(id, now: now))
            table.requestFinished(id, now: now)
        }
        benchmark.stopMeasurement()
        blackHole(table.count)
    }

    /// The loop's periodic timeout sweep over a full table where nothing is due (the common case).
    Benchmark(
        "ConnectionTable.sweepNothingDue.10kOpen",
        configuration: .sluiceMicro(scalingFactor: .one)
    ) { benchmark in
        let start = Instant.now()
        var ids = ConnectionID.Generator(loopIndex: 1)
        var table = populatedTable(count: 10_000, start: start, ids: &ids)
        let now = start.advanced(by: .seconds(1))
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(table.sweep(now: now))
        }
        benchmark.stopMeasurement()
        blackHole(table.count)
    }

    /// `/status` and the metrics gauges: counts by state and protocol over a full table.
    Benchmark(
        "ConnectionTable.counts.10kOpen",
        configuration: .sluiceMicro(scalingFactor: .one)
    ) { benchmark in
        let start = Instant.now()
        var ids = ConnectionID.Generator(loopIndex: 1)
        let table = populatedTable(count: 10_000, start: start, ids: &ids)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(table.counts())
        }
    }
}

// MARK: - DrainLifecycleStateMachine

func drainLifecycleBenchmarks() {
    /// One process lifetime of decisions at the default delay and timeout: listeners bound,
    /// SIGTERM, an early wake-up, the delay elapsing, `/status` asking for the time left, then
    /// alternately the last connection going (clean stop) or the drain timeout (forced).
    Benchmark("DrainLifecycle.fullCycle") { benchmark in
        let delay = defaults.drain.delay
        let timeout = defaults.drain.timeout
        let start = MonotonicClock().now
        for index in benchmark.scaledIterations {
            let now = start.advanced(by: .microseconds(index))
            let draining = now.advanced(by: delay)
            var machine = DrainLifecycleStateMachine<MonotonicClock>(delay: delay, timeout: timeout)
            blackHole(machine.listenersBound())
            blackHole(machine.signalReceived(.terminate, now: now))
            blackHole(machine.deadlineReached(now: now.advanced(by: delay / 2)))
            blackHole(machine.deadlineReached(now: draining))
            blackHole(machine.timeLeft(now: draining.advanced(by: timeout / 2)))
            if index % 2 == 0 {
                blackHole(machine.connectionsDrained(now: draining.advanced(by: timeout / 2)))
            } else {
                blackHole(machine.deadlineReached(now: draining.advanced(by: timeout)))
            }
            blackHole(machine.phase)
        }
    }
}

// MARK: - UpstreamPoolStateMachine

func upstreamPoolBenchmarks() {
    /// The per-request path of a warm endpoint pool: lease an idle connection, release it reusable
    /// (parked again).
    Benchmark("UpstreamPool.leaseIdleAndRelease") { benchmark in
        let start = Instant.now()
        var pool = UpstreamPoolStateMachine<Instant>(
            maxIdle: defaults.upstream.maxIdle,
            idleTimeout: defaults.upstream.idleTimeout,
            idGenerator: ConnectionID.Generator(loopIndex: 1)
        )
        // Warm: four connections, all parked.
        var warm: [ConnectionID] = []
        for _ in 0..<4 {
            switch pool.lease(now: start) {
            case .connect(let id), .useIdle(let id): warm.append(id)
            }
        }
        for id in warm { _ = pool.release(id, reusable: true, now: start) }
        benchmark.startMeasurement()
        for index in benchmark.scaledIterations {
            let now = start.advanced(by: .microseconds(index))
            switch pool.lease(now: now) {
            case .useIdle(let id):
                blackHole(pool.release(id, reusable: true, now: now))
            case .connect(let id):
                preconditionFailure("a warm pool reuses: \(id)")
            }
        }
    }
}
