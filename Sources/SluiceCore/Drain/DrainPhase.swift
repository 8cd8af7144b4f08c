/// The phases of a Sluice process, in order (DESIGN.md §2).
public enum DrainPhase: String, Sendable, CaseIterable, Comparable {
    /// Binding listeners. Readiness 503.
    case starting
    /// Listeners accept, readiness 200.
    case serving
    /// `POST /drain/rehearse`: readiness 503 for the window, nothing else changes; then `serving`.
    case rehearsing
    /// First SIGTERM/SIGINT: readiness 503 at once, everything still served, keep-alive responses
    /// gradually carry `Connection: close`, HTTP/2 gets the shutdown notice.
    case propagating
    /// `drain-delay` elapsed (or a second signal): listeners closed, idle connections closed, busy
    /// ones close after their response, HTTP/2 final GOAWAY.
    case draining
    /// No connection left: exit 0.
    case stopped
    /// `drain-timeout` elapsed, SIGQUIT or a third signal: what is left is cut and counted, exit 3.
    case forced

    /// Readiness is 200 only while serving, and never again once draining has begun.
    public var isReady: Bool { self == .serving }

    /// The value exported as the `sluice_drain_phase` gauge: 0 starting, 1 serving, 2 propagating,
    /// 3 draining, 4 stopped, 5 forced (as before rehearsals existed), 6 rehearsing.
    public var ordinal: Int {
        switch self {
        case .starting: 0
        case .serving: 1
        case .propagating: 2
        case .draining: 3
        case .stopped: 4
        case .forced: 5
        case .rehearsing: 6
        }
    }

    /// The order of the lifecycle: a rehearsal sits between serving and propagating.
    private var rank: Int { Self.allCases.firstIndex(of: self)! }

    public static func < (lhs: DrainPhase, rhs: DrainPhase) -> Bool { lhs.rank < rhs.rank }
}

/// The signals the drain lifecycle reacts to.
public enum DrainSignal: Sendable, Equatable {
    /// SIGTERM or SIGINT: a graceful drain; the second skips the rest of the delay, the third forces.
    case terminate
    /// SIGQUIT: close everything at once.
    case quit
}
