import SluiceCore
import Testing

/// Late-arrival telemetry: the connection table's arrivals and the drain timeline built from them.
@Suite struct DrainTimelineTests {
    typealias Instant = MockClock.Instant
    typealias Table = ConnectionTable<Instant>

    let t0 = Instant(offset: .seconds(100))

    func table() -> Table {
        Table(timeouts: .init(requestHeader: .seconds(30), idle: .seconds(60), drainQuiet: .milliseconds(250)))
    }

    /// Arrivals count only from `since`: connections accepted and requests started, the last
    /// connection, and the last request on a connection accepted before `since`.
    @Test func arrivalsCountFromTheirStart() {
        var table = self.table()
        var rng = SplitMix64(seed: 1)
        let old = ConnectionID(rawValue: UInt64(0) << 48 | UInt64(1))
        table.add(old, protocol: .http1, peer: "a", now: self.t0 - .seconds(5), using: &rng)
        table.requestStarted(old, now: self.t0 - .seconds(4))
        #expect(table.arrivals == Table.Arrivals())

        table.watchArrivals(since: self.t0)
        table.requestFinished(old, now: self.t0)
        table.requestStarted(old, now: self.t0 + .milliseconds(700))
        let new = ConnectionID(rawValue: UInt64(0) << 48 | UInt64(2))
        table.add(new, protocol: .http1, peer: "b", now: self.t0 + .milliseconds(300), using: &rng)
        table.requestStarted(new, now: self.t0 + .milliseconds(900))
        #expect(table.arrivals.since == self.t0)
        #expect(table.arrivals.connections == 1)
        #expect(table.arrivals.requests == 2)
        #expect(table.arrivals.lastConnectionAt == self.t0 + .milliseconds(300))
        #expect(table.arrivals.lastRequestOnOlderConnectionAt == self.t0 + .milliseconds(700))

        // Watching again starts afresh.
        table.watchArrivals(since: self.t0 + .seconds(10))
        #expect(table.arrivals.connections == 0 && table.arrivals.lastConnectionAt == nil)
    }

    /// Two loops' arrivals sum their counts and keep the later moments.
    @Test func arrivalsSumAcrossLoops() {
        var a = self.table()
        var b = self.table()
        var rng = SplitMix64(seed: 2)
        a.watchArrivals(since: self.t0)
        b.watchArrivals(since: self.t0)
        a.add(ConnectionID(rawValue: UInt64(0) << 48 | UInt64(1)), protocol: .http1, peer: "a", now: self.t0 + .seconds(2), using: &rng)
        b.add(ConnectionID(rawValue: UInt64(1) << 48 | UInt64(1)), protocol: .http2, peer: "b", now: self.t0 + .seconds(1), using: &rng)
        b.add(ConnectionID(rawValue: UInt64(1) << 48 | UInt64(2)), protocol: .http2, peer: "c", now: self.t0 + .seconds(1), using: &rng)
        let sum = a.arrivals + b.arrivals
        #expect(sum.connections == 3)
        #expect(sum.lastConnectionAt == self.t0 + .seconds(2))
        #expect(sum.since == self.t0)
    }

    /// A sample at `at` after a table saw connections accepted at `connections` and requests started
    /// at `requests` (offsets from t0), with `inFlight` requests open.
    func sample(_ at: Duration, connections: [Duration], requests: [Duration] = [], inFlight: Int = 0) -> DrainTimeline<Instant>.Sample {
        var table = self.table()
        var rng = SplitMix64(seed: 3)
        table.watchArrivals(since: self.t0)
        var counts = Table.Counts()
        counts.requestsInFlight = inFlight
        counts.byState = [.active: inFlight]
        for (index, offset) in connections.enumerated() {
            table.add(ConnectionID(rawValue: UInt64(index + 1)), protocol: .http1, peer: "p", now: self.t0 + offset, using: &rng)
        }
        if !requests.isEmpty && connections.isEmpty {
            table.add(ConnectionID(rawValue: 1000), protocol: .http1, peer: "p", now: self.t0 - .seconds(1), using: &rng)
        }
        let first = connections.isEmpty ? ConnectionID(rawValue: 1000) : ConnectionID(rawValue: 1)
        for offset in requests { table.requestStarted(first, now: self.t0 + offset) }
        return .init(now: self.t0 + at, arrivals: table.arrivals, counts: counts)
    }

    /// Arrivals land in the 100 ms slice they happened in, whenever the sample is taken; open
    /// connections and requests in flight stand for the slice the sample was taken in, and slices a
    /// late sample skipped keep the previous ones.
    @Test func samplesBecomeBuckets() {
        var timeline = DrainTimeline<Instant>(start: self.t0, kind: .drain, trigger: .signal)
        timeline.mark(.propagating, at: self.t0)
        timeline.record(self.sample(.milliseconds(2), connections: [], inFlight: 4))
        let early: [Duration] = [.milliseconds(30), .milliseconds(40), .milliseconds(80)]
        timeline.record(self.sample(.milliseconds(103), connections: early, requests: [.milliseconds(50)], inFlight: 2))
        let more = early + [.milliseconds(150), .milliseconds(190)]
        timeline.record(self.sample(.milliseconds(205), connections: more, requests: [.milliseconds(50), .milliseconds(120)], inFlight: 1))
        timeline.record(self.sample(.milliseconds(520), connections: more, requests: [.milliseconds(50), .milliseconds(120)], inFlight: 0))
        timeline.mark(.draining, at: self.t0 + .seconds(5))
        #expect(timeline.newConnectionsPer100ms == [3, 2, 0, 0, 0, 0])
        #expect(timeline.buckets.map(\.requests) == [1, 1, 0, 0, 0, 0])
        #expect(timeline.buckets.map(\.inFlight) == [4, 2, 1, 1, 1, 0])
        #expect(timeline.newConnections == 5)
        #expect(timeline.requests == 2)
        #expect(timeline.lastNewConnectionSeconds == 0.19)
        #expect(timeline.marks == [.init(phase: .propagating, seconds: 0), .init(phase: .draining, seconds: 5)])
    }

    /// The too-short warning fires only for a last arrival in the final 20% of the delay; the
    /// suggestion adds a quarter, in whole seconds, at least 1 s.
    @Test func delayVerdictAndSuggestion() {
        var timeline = DrainTimeline<Instant>(start: self.t0, kind: .rehearsal, trigger: .rehearsal)
        #expect(!timeline.delayLooksShort(delay: .seconds(5)))
        #expect(timeline.suggestedDelay == .seconds(1))
        timeline.record(self.sample(.seconds(4), connections: [.milliseconds(3990)]))
        #expect(!timeline.delayLooksShort(delay: .seconds(5)))
        #expect(timeline.suggestedDelay == .seconds(5))
        timeline.record(self.sample(.seconds(5), connections: [.milliseconds(3990), .seconds(4)]))
        #expect(timeline.delayLooksShort(delay: .seconds(5)))
        #expect(!timeline.delayLooksShort(delay: .seconds(10)))
    }

    /// The JSON documents carry the figures (rehearsal answer, /status member, report).
    @Test func jsonDocuments() {
        var timeline = DrainTimeline<Instant>(start: self.t0, kind: .rehearsal, trigger: .rehearsal)
        timeline.mark(.rehearsing, at: self.t0)
        timeline.record(self.sample(.milliseconds(150), connections: [.milliseconds(110), .milliseconds(120)], requests: Array(repeating: .milliseconds(130), count: 4), inFlight: 1))
        #expect(
            timeline.rehearsalJSON(window: .seconds(10), outcome: "completed", now: self.t0 + .seconds(10))
                == """
                {"outcome": "completed", "for_seconds": 10.0, "elapsed_seconds": 10.0, "last_new_connection_seconds": 0.12, "new_connections": 2, \
                "new_connections_per_100ms": [0, 2], "last_old_connection_request_seconds": null, "suggested_drain_delay": "1s"}

                """)
        #expect(
            timeline.statusJSON(now: self.t0 + .milliseconds(250))
                == """
                {"kind": "rehearsal", "seconds_since_start": 0.25, "last_new_connection_seconds": 0.12, "new_connections": 2, \
                "new_connections_per_100ms": [0, 2], "last_old_connection_request_seconds": null}
                """)
        timeline.becomeDrain()
        timeline.mark(.draining, at: self.t0 + .milliseconds(200))
        timeline.recordForcedCloses(1)
        let report = timeline.reportJSON(
            startWallTime: "2026-12-04T01:00:00.000Z", settings: .init(delay: .seconds(5), quiet: nil, delayMin: .seconds(2), timeout: .seconds(20)),
            exitCode: 3, outcome: "deadline")
        #expect(
            report == """
                {"version": 1, "start_wall_time": "2026-12-04T01:00:00.000Z", "trigger": "rehearsal", "drain_delay_seconds": 5, \
                "drain_quiet_seconds": null, "drain_delay_min_seconds": 2, "drain_timeout_seconds": 20, "exit_code": 3, "outcome": "deadline", \
                "marks": [{"phase": "rehearsing", "t": 0.0}, {"phase": "draining", "t": 0.2}], "last_new_connection_seconds": 0.12, \
                "last_old_connection_request_seconds": null, "new_connections": 2, "requests": 4, "forced_closes": 1, "app": null, "buckets": [
                  {"t": 0.0, "new_connections": 0, "requests": 0, "in_flight": 0, "connections": {"idle": 0, "active": 0, "tunnel": 0, "closing": 0}},
                  {"t": 0.1, "new_connections": 2, "requests": 4, "in_flight": 1, "connections": {"idle": 0, "active": 1, "tunnel": 0, "closing": 0}}]}

                """)
        #expect(timeline.kind == .drain)
        #expect(
            timeline.appStopJSON(status: "signal:KILL", stopSignal: "TERM", stopSentAt: self.t0 + .milliseconds(300), exitSeenAt: self.t0 + .seconds(4), killed: true)
                == "{\"status\": \"signal:KILL\", \"stop_signal\": \"TERM\", \"stop_sent_t\": 0.3, \"exit_seen_t\": 4.0, \"killed\": true}")
    }
}
