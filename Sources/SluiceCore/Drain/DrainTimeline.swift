/// What happened during one drain (or rehearsal), 100 ms at a time: the late-arrival telemetry of
/// `/status`, the exit log line and `sluice_drain_last_new_connection_seconds`, the rehearsal's report
/// and the `--drain-report` file.
///
/// Pure: the drain coordinator samples the loops' ``ConnectionTable/Arrivals`` (cumulative since the
/// start) and connection counts every 100 ms and passes each sample with its time; the timeline
/// turns them into buckets.
///
/// ```swift
/// var timeline = DrainTimeline(start: signalAt, kind: .drain)
/// timeline.mark(.propagating, at: signalAt)
/// timeline.record(sample)                       // every 100 ms
/// timeline.lastNewConnectionSeconds             // 3.1
/// ```
public struct DrainTimeline<Instant: InstantProtocol> where Instant.Duration == Duration {
    public enum Kind: String, Sendable {
        case drain
        case rehearsal
    }

    /// What started the timeline: its `t = 0`.
    public enum Trigger: String, Sendable {
        case signal
        case rehearsal
        case appExit = "app-exit"
    }

    /// The loops' state at one moment.
    public struct Sample {
        public var now: Instant
        /// Summed over loops, cumulative since the start.
        public var arrivals: ConnectionTable<Instant>.Arrivals
        public var counts: ConnectionTable<Instant>.Counts

        public init(now: Instant, arrivals: ConnectionTable<Instant>.Arrivals, counts: ConnectionTable<Instant>.Counts) {
            self.now = now
            self.arrivals = arrivals
            self.counts = counts
        }
    }

    /// One 100 ms slice: what arrived in it, and what was open at its end.
    public struct Bucket: Equatable, Sendable {
        public var newConnections = 0
        public var requests = 0
        public var inFlight = 0
        public var connections: [ConnectionTable<Instant>.State: Int] = [:]
    }

    public struct Mark: Equatable, Sendable {
        public var phase: DrainPhase
        /// Seconds from the start.
        public var seconds: Double

        public init(phase: DrainPhase, seconds: Double) {
            self.phase = phase
            self.seconds = seconds
        }
    }

    public static var bucketWidth: Duration { .milliseconds(100) }

    public let start: Instant
    public private(set) var kind: Kind
    public let trigger: Trigger
    public private(set) var buckets: [Bucket] = []
    public private(set) var marks: [Mark] = []
    public private(set) var forcedCloses = 0
    private var last: ConnectionTable<Instant>.Arrivals = .init()

    public init(start: Instant, kind: Kind, trigger: Trigger) {
        self.start = start
        self.kind = kind
        self.trigger = trigger
    }

    /// A rehearsal became a real drain (SIGTERM during its window): the timeline goes on.
    public mutating func becomeDrain() { self.kind = .drain }

    public mutating func mark(_ phase: DrainPhase, at: Instant) {
        self.marks.append(Mark(phase: phase, seconds: self.seconds(at)))
    }

    public mutating func recordForcedCloses(_ count: Int) { self.forcedCloses += count }

    /// Takes the sample's arrivals (counted per 100 ms by the loops themselves, so each lands in the
    /// slice it happened in) and its open connections and requests in flight, which stand for the
    /// end of the slice the sample was taken in (the slices in between, if sampling was late, keep
    /// the previous ones).
    public mutating func record(_ sample: Sample) {
        let elapsed = max(.zero, self.start.duration(to: sample.now))
        let index = Int(elapsed.nanosecondsClamped / Self.bucketWidth.nanosecondsClamped)
        let count = max(index + 1, sample.arrivals.connectionsPerBucket.count, sample.arrivals.requestsPerBucket.count)
        while self.buckets.count < count {
            var bucket = Bucket()
            if let previous = self.buckets.last {
                bucket.inFlight = previous.inFlight
                bucket.connections = previous.connections
            }
            self.buckets.append(bucket)
        }
        for bucket in self.buckets.indices {
            self.buckets[bucket].newConnections = sample.arrivals.connectionsPerBucket.indices.contains(bucket) ? sample.arrivals.connectionsPerBucket[bucket] : 0
            self.buckets[bucket].requests = sample.arrivals.requestsPerBucket.indices.contains(bucket) ? sample.arrivals.requestsPerBucket[bucket] : 0
        }
        for bucket in index..<self.buckets.count {
            self.buckets[bucket].inFlight = sample.counts.requestsInFlight
            self.buckets[bucket].connections = sample.counts.byState
        }
        self.last = sample.arrivals
    }

    /// Connections accepted since the start.
    public var newConnections: Int { self.last.connections }
    /// Requests started since the start.
    public var requests: Int { self.last.requests }

    /// Seconds from the start to the last new connection, if one came.
    public var lastNewConnectionSeconds: Double? { self.last.lastConnectionAt.map(self.seconds) }

    /// Seconds from the start to the last request on a connection opened before it, if one came.
    public var lastOlderConnectionRequestSeconds: Double? { self.last.lastRequestOnOlderConnectionAt.map(self.seconds) }

    public var newConnectionsPer100ms: [Int] { self.buckets.map(\.newConnections) }

    /// Whether the last new connection came in the final 20% of `delay`: the endpoint's removal had
    /// not reached every balancer when the delay was nearly over.
    public func delayLooksShort(delay: Duration) -> Bool {
        guard let last = self.lastNewConnectionSeconds, delay > .zero else { return false }
        return last >= 0.8 * delay.secondsDouble
    }

    /// A `drain-delay` with room for what was measured: the last new connection plus a quarter, at
    /// least 1 s, in whole seconds.
    public var suggestedDelay: Duration {
        let last = self.lastNewConnectionSeconds ?? 0
        let seconds = max(1, Int((last * 1.25).rounded(.up)))
        return .seconds(seconds)
    }

    func seconds(_ instant: Instant) -> Double {
        Self.rounded(self.start.duration(to: instant).secondsDouble)
    }

    /// Milliseconds precision, for JSON.
    static func rounded(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }

    // MARK: JSON

    private static func number(_ value: Double?) -> String { value.map { String($0) } ?? "null" }

    /// `/status`'s `drain` object while a drain or rehearsal runs.
    public func statusJSON(now: Instant) -> String {
        JSONText.object([
            ("kind", JSONText.string(self.kind.rawValue)),
            ("seconds_since_start", String(self.seconds(now))),
            ("last_new_connection_seconds", Self.number(self.lastNewConnectionSeconds)),
            ("new_connections", String(self.newConnections)),
            ("new_connections_per_100ms", JSONText.array(self.newConnectionsPer100ms.map(String.init))),
            ("last_old_connection_request_seconds", Self.number(self.lastOlderConnectionRequestSeconds)),
        ])
    }

    /// `POST /drain/rehearse`'s answer. `outcome`: `completed`, or `drain` when a SIGTERM turned the
    /// rehearsal into a real drain.
    public func rehearsalJSON(window: Duration, outcome: String, now: Instant) -> String {
        JSONText.object([
            ("outcome", JSONText.string(outcome)),
            ("for_seconds", String(Self.rounded(window.secondsDouble))),
            ("elapsed_seconds", String(self.seconds(now))),
            ("last_new_connection_seconds", Self.number(self.lastNewConnectionSeconds)),
            ("new_connections", String(self.newConnections)),
            ("new_connections_per_100ms", JSONText.array(self.newConnectionsPer100ms.map(String.init))),
            ("last_old_connection_request_seconds", Self.number(self.lastOlderConnectionRequestSeconds)),
            ("suggested_drain_delay", JSONText.string(DurationParser.format(self.suggestedDelay))),
        ]) + "\n"
    }

    /// Supervisor mode: how the app ended, for the report. `stopSentAt` is nil when the app exited on
    /// its own; times are seconds from the start.
    public func appStopJSON(status: String, stopSignal: String?, stopSentAt: Instant?, exitSeenAt: Instant, killed: Bool) -> String {
        JSONText.object([
            ("status", JSONText.string(status)),
            ("stop_signal", stopSignal.map(JSONText.string) ?? "null"),
            ("stop_sent_t", Self.number(stopSentAt.map(self.seconds))),
            ("exit_seen_t", String(self.seconds(exitSeenAt))),
            ("killed", killed ? "true" : "false"),
        ])
    }

    /// The settings a report names, in seconds.
    public struct Settings: Sendable {
        public var delay: Duration
        public var quiet: Duration?
        public var delayMin: Duration
        public var timeout: Duration

        public init(delay: Duration, quiet: Duration?, delayMin: Duration, timeout: Duration) {
            self.delay = delay
            self.quiet = quiet
            self.delayMin = delayMin
            self.timeout = timeout
        }
    }

    /// The `--drain-report` document.
    /// - Parameter app: supervisor mode: the app's stop, as a JSON object (``appStopJSON(status:stopSignal:stopSentAt:exitSeenAt:killed:)``).
    public func reportJSON(startWallTime: String, settings: Settings, exitCode: Int32, outcome: String, app: String? = nil) -> String {
        let states = ConnectionTable<Instant>.State.allCases
        let buckets = self.buckets.enumerated().map { index, bucket in
            JSONText.object([
                ("t", String(Self.rounded(Double(index) * Self.bucketWidth.secondsDouble))),
                ("new_connections", String(bucket.newConnections)),
                ("requests", String(bucket.requests)),
                ("in_flight", String(bucket.inFlight)),
                ("connections", JSONText.object(states.map { ($0.rawValue, String(bucket.connections[$0] ?? 0)) })),
            ])
        }
        return JSONText.object([
            ("version", "1"),
            ("start_wall_time", JSONText.string(startWallTime)),
            ("trigger", JSONText.string(self.trigger.rawValue)),
            ("drain_delay_seconds", JSONText.seconds(settings.delay)),
            ("drain_quiet_seconds", settings.quiet.map(JSONText.seconds) ?? "null"),
            ("drain_delay_min_seconds", JSONText.seconds(settings.delayMin)),
            ("drain_timeout_seconds", JSONText.seconds(settings.timeout)),
            ("exit_code", String(exitCode)),
            ("outcome", JSONText.string(outcome)),
            ("marks", JSONText.array(self.marks.map { JSONText.object([("phase", JSONText.string($0.phase.rawValue)), ("t", String($0.seconds))]) })),
            ("last_new_connection_seconds", Self.number(self.lastNewConnectionSeconds)),
            ("last_old_connection_request_seconds", Self.number(self.lastOlderConnectionRequestSeconds)),
            ("new_connections", String(self.newConnections)),
            ("requests", String(self.requests)),
            ("forced_closes", String(self.forcedCloses)),
            ("app", app ?? "null"),
            ("buckets", "[\n  " + buckets.joined(separator: ",\n  ") + "]"),
        ]) + "\n"
    }
}

extension DrainTimeline: Sendable where Instant: Sendable {}
extension DrainTimeline.Sample: Sendable where Instant: Sendable {}
