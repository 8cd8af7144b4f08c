/// Decides the process's drain phase from signals, elapsed time, new connections, the supervised
/// app and the connection count. It is the one place the phase lives (DESIGN.md §2): the server
/// publishes ``phase`` to the admin endpoints and the loops, and carries out the ``Action``s.
///
/// Pure: it holds no channel, does no I/O, reads no clock. The caller passes `now` (from the
/// injected `Clock`) with every event and schedules a wake-up at ``nextDeadline``.
///
/// Legal transitions (DESIGN.md §2):
/// 1. `starting → serving` when the listeners are bound;
/// 2. `serving → rehearsing` on `POST /drain/rehearse`, and back to `serving` when its window ends;
/// 3. `serving → propagating` on the first terminate signal (straight to `draining` when the delay is
///    zero); `rehearsing → propagating` too, keeping the time the rehearsal has already run;
/// 4. `propagating → draining` when the delay elapses (with `drain-quiet`: once no new connection
///    came for that long, between `drain-delay-min` and `drain-delay`), on a second terminate signal,
///    or when the supervised app exits;
/// 5. `serving`/`rehearsing → draining` when the supervised app exits: there is nothing left to serve;
/// 6. `draining → stopped` when no connection is left;
/// 7. `draining → forced` when the drain timeout elapses;
/// 8. any live phase `→ forced` on SIGQUIT or a third terminate signal; `starting → stopped` on any
///    signal or app exit.
///
/// ```swift
/// var machine = DrainLifecycleStateMachine<ContinuousClock>(delay: .seconds(5), timeout: .seconds(20))
/// _ = machine.listenersBound()
/// switch machine.signalReceived(.terminate, now: clock.now) { ... }
/// ```
public struct DrainLifecycleStateMachine<C: Clock> where C.Duration == Duration {
    /// The adaptive delay (`--drain-quiet`): `propagating` ends once no new connection has been
    /// accepted for `quiet`, but not before `minimum` and always by `drain-delay`.
    public struct Quiet: Equatable, Sendable {
        public var quiet: Duration
        public var minimum: Duration

        public init(quiet: Duration, minimum: Duration) {
            self.quiet = quiet
            self.minimum = minimum
        }
    }

    private struct Propagation {
        /// When the drain (or the rehearsal it grew out of) began: the delay counts from here.
        var since: C.Instant
        var signals: Int
    }

    private enum State {
        /// Listeners are being bound.
        case starting
        /// Accepting and ready.
        case serving
        /// Readiness fails until `until`; nothing else changes.
        case rehearsing(since: C.Instant, until: C.Instant)
        /// Readiness fails; everything is still served until ``propagationEnd``.
        case propagating(Propagation)
        /// Listeners closed; connections finish until `deadline`.
        case draining(since: C.Instant, deadline: C.Instant, signals: Int)
        /// Done, cleanly.
        case stopped
        /// Done, connections cut.
        case forced
    }

    /// What the caller carries out; every event answers with one.
    public enum Action: Equatable {
        case none
        /// The listeners are bound: readiness 200.
        case startServing
        /// Fail readiness until `until`, touch no connection, count the arrivals.
        case startRehearsal(until: C.Instant)
        /// The rehearsal's window is over: readiness 200 again.
        case endRehearsal
        /// Fail readiness, keep serving, start moving keep-alive clients away until `until` (with
        /// `drain-quiet`, the latest it may end; ``nextDeadline`` says when to look again).
        case startPropagating(until: C.Instant)
        /// Close listeners and idle connections; busy ones finish until `deadline`.
        case startDraining(deadline: C.Instant)
        /// Close everything now and exit 3.
        case forceClose
        /// Done: exit 0 (every connection finished, or nothing was serving yet).
        case stop
    }

    /// Why a rehearsal was not started.
    public enum RehearsalRefusal: Error, Equatable {
        /// Not serving: starting, draining, or already rehearsing.
        case notServing(DrainPhase)
    }

    private var state: State = .starting
    /// The last new connection accepted since the rehearsal or drain began, for the quiet period.
    private var lastArrival: C.Instant?
    public let delay: Duration
    public let timeout: Duration
    public let quiet: Quiet?

    public init(delay: Duration, timeout: Duration, quiet: Quiet? = nil) {
        precondition(delay >= .zero && timeout >= .zero, "drain durations are validated by the config reader")
        self.delay = delay
        self.timeout = timeout
        self.quiet = quiet.map { Quiet(quiet: $0.quiet, minimum: min($0.minimum, delay)) }
    }

    public var phase: DrainPhase {
        switch self.state {
        case .starting: .starting
        case .serving: .serving
        case .rehearsing: .rehearsing
        case .propagating: .propagating
        case .draining: .draining
        case .stopped: .stopped
        case .forced: .forced
        }
    }

    /// When the rehearsal or the drain began (the first signal, or the rehearsal it grew out of).
    public var startedAt: C.Instant? {
        switch self.state {
        case .rehearsing(let since, _): since
        case .propagating(let propagation): propagation.since
        case .draining(let since, _, _): since
        case .starting, .serving, .stopped, .forced: nil
        }
    }

    /// When the caller must call ``deadlineReached(now:)`` next, if ever.
    public var nextDeadline: C.Instant? {
        switch self.state {
        case .rehearsing(_, let until): until
        case .propagating(let propagation): self.propagationEnd(propagation)
        case .draining(_, let deadline, _): deadline
        case .starting, .serving, .stopped, .forced: nil
        }
    }

    /// Time left in the current phase, for `/status`.
    public func timeLeft(now: C.Instant) -> Duration? {
        self.nextDeadline.map { max(.zero, now.duration(to: $0)) }
    }

    /// `since + drain-delay`; with `drain-quiet`, earlier once arrivals have gone quiet.
    private func propagationEnd(_ propagation: Propagation) -> C.Instant {
        let latest = propagation.since.advanced(by: self.delay)
        guard let quiet = self.quiet else { return latest }
        let earliest = propagation.since.advanced(by: quiet.minimum)
        let quietEnd = max(propagation.since, self.lastArrival ?? propagation.since).advanced(by: quiet.quiet)
        return min(latest, max(earliest, quietEnd))
    }

    public mutating func listenersBound() -> Action {
        switch self.state {
        case .starting:
            self.state = .serving
            return .startServing
        case .stopped, .forced:
            return .none
        case .serving, .rehearsing, .propagating, .draining:
            preconditionFailure("listeners are bound once, before any drain: \(self.phase)")
        }
    }

    /// `POST /drain/rehearse?for=`: readiness fails for `duration`, nothing else changes.
    public mutating func rehearsalRequested(for duration: Duration, now: C.Instant) -> Result<C.Instant, RehearsalRefusal> {
        guard case .serving = self.state else { return .failure(.notServing(self.phase)) }
        let until = now.advanced(by: duration)
        self.state = .rehearsing(since: now, until: until)
        self.lastArrival = nil
        return .success(until)
    }

    /// A new downstream connection was accepted at `at` (reported by the loops, at most 100 ms late).
    public mutating func newConnectionAccepted(at: C.Instant) {
        switch self.state {
        case .rehearsing(let since, _) where at >= since:
            self.lastArrival = max(self.lastArrival ?? at, at)
        case .propagating(let propagation) where at >= propagation.since:
            self.lastArrival = max(self.lastArrival ?? at, at)
        case .starting, .serving, .rehearsing, .propagating, .draining, .stopped, .forced:
            break
        }
    }

    public mutating func signalReceived(_ signal: DrainSignal, now: C.Instant) -> Action {
        switch (self.state, signal) {
        case (.starting, _):
            self.state = .stopped
            return .stop
        case (.stopped, _), (.forced, _):
            return .none
        case (.serving, .quit), (.rehearsing, .quit), (.propagating, .quit), (.draining, .quit):
            self.state = .forced
            return .forceClose
        case (.serving, .terminate):
            self.lastArrival = nil
            return self.startPropagating(since: now, now: now)
        case (.rehearsing(let since, _), .terminate):
            // The rehearsal has already failed readiness since `since`: the delay counts from there.
            return self.startPropagating(since: since, now: now)
        case (.propagating(let propagation), .terminate):
            return self.startDraining(since: propagation.since, now: now, signals: propagation.signals + 1)
        case (.draining(let since, let deadline, let signals), .terminate):
            if signals + 1 >= 3 {
                self.state = .forced
                return .forceClose
            }
            self.state = .draining(since: since, deadline: deadline, signals: signals + 1)
            return .none
        }
    }

    /// The supervised app exited on its own: readiness fails and the drain skips to `draining`
    /// (there is nothing to serve). In `draining` and after, the app was expected to go.
    public mutating func appExited(now: C.Instant) -> Action {
        switch self.state {
        case .starting:
            self.state = .stopped
            return .stop
        case .serving:
            return self.startDraining(since: now, now: now, signals: 0)
        case .rehearsing(let since, _):
            return self.startDraining(since: since, now: now, signals: 0)
        case .propagating(let propagation):
            return self.startDraining(since: propagation.since, now: now, signals: propagation.signals)
        case .draining, .stopped, .forced:
            return .none
        }
    }

    public mutating func deadlineReached(now: C.Instant) -> Action {
        switch self.state {
        case .rehearsing(_, let until):
            guard now >= until else { return .none }
            self.state = .serving
            return .endRehearsal
        case .propagating(let propagation):
            guard now >= self.propagationEnd(propagation) else { return .none }
            return self.startDraining(since: propagation.since, now: now, signals: propagation.signals)
        case .draining(_, let deadline, _):
            guard now >= deadline else { return .none }
            self.state = .forced
            return .forceClose
        case .starting, .serving, .stopped, .forced:
            return .none
        }
    }

    /// Every listener is closed and no connection is left.
    public mutating func connectionsDrained(now: C.Instant) -> Action {
        switch self.state {
        case .draining:
            self.state = .stopped
            return .stop
        case .starting, .serving, .rehearsing, .propagating, .stopped, .forced:
            // Before draining an empty table means nothing: listeners still accept.
            return .none
        }
    }

    private mutating func startPropagating(since: C.Instant, now: C.Instant) -> Action {
        let propagation = Propagation(since: since, signals: 1)
        let end = self.propagationEnd(propagation)
        if self.delay == .zero || now >= end {
            return self.startDraining(since: since, now: now, signals: 1)
        }
        self.state = .propagating(propagation)
        return .startPropagating(until: end)
    }

    private mutating func startDraining(since: C.Instant, now: C.Instant, signals: Int) -> Action {
        let deadline = now.advanced(by: self.timeout)
        self.state = .draining(since: since, deadline: deadline, signals: signals)
        return .startDraining(deadline: deadline)
    }
}
