/// Decides the process's drain phase from signals, elapsed time and the connection count.
///
/// Pure: it holds no channel, does no I/O, reads no clock. The caller passes `now` (from the
/// injected `Clock`) with every event and schedules a wake-up at ``nextDeadline``.
///
/// Legal transitions (DESIGN.md §2):
/// 1. `starting → serving` when the listeners are bound;
/// 2. `serving → propagating` on the first terminate signal (straight to `draining` when the delay is zero);
/// 3. `propagating → draining` when the delay elapses or on a second terminate signal;
/// 4. `draining → stopped` when no connection is left;
/// 5. `draining → forced` when the drain timeout elapses;
/// 6. any live phase `→ forced` on SIGQUIT or a third terminate signal; `starting → stopped` on any signal.
///
/// ```swift
/// var machine = DrainLifecycleStateMachine<ContinuousClock>(delay: .seconds(5), timeout: .seconds(20))
/// _ = machine.listenersBound()
/// switch machine.signalReceived(.terminate, now: clock.now) { ... }
/// ```
public struct DrainLifecycleStateMachine<C: Clock> where C.Duration == Duration {
    private enum State {
        /// Listeners are being bound.
        case starting
        /// Accepting and ready.
        case serving
        /// Readiness fails; everything is still served until `until`.
        case propagating(since: C.Instant, until: C.Instant, signals: Int)
        /// Listeners closed; connections finish until `deadline`.
        case draining(since: C.Instant, deadline: C.Instant, signals: Int)
        /// Done, cleanly.
        case stopped
        /// Done, connections cut.
        case forced
    }

    public enum ListenersBoundAction: Equatable {
        case startServing
        /// A signal arrived while starting; the process is already stopping.
        case none
    }

    public enum SignalAction: Equatable {
        case none
        /// Fail readiness, keep serving, start moving keep-alive clients away until `until`.
        case startPropagating(until: C.Instant)
        /// Close listeners and idle connections; busy ones finish until `deadline`.
        case startDraining(deadline: C.Instant)
        /// Close everything now and exit 3.
        case forceClose
        /// Nothing was serving yet: exit 0 at once.
        case stop
    }

    public enum DeadlineAction: Equatable {
        case none
        case startDraining(deadline: C.Instant)
        case forceClose
    }

    public enum ConnectionsDrainedAction: Equatable {
        case none
        /// Every connection is gone: exit 0.
        case stop
    }

    private var state: State = .starting
    public let delay: Duration
    public let timeout: Duration

    public init(delay: Duration, timeout: Duration) {
        precondition(delay >= .zero && timeout >= .zero, "drain durations are validated by the config reader")
        self.delay = delay
        self.timeout = timeout
    }

    public var phase: DrainPhase {
        switch self.state {
        case .starting: .starting
        case .serving: .serving
        case .propagating: .propagating
        case .draining: .draining
        case .stopped: .stopped
        case .forced: .forced
        }
    }

    /// When the caller must call ``deadlineReached(now:)`` next, if ever.
    public var nextDeadline: C.Instant? {
        switch self.state {
        case .propagating(_, let until, _): until
        case .draining(_, let deadline, _): deadline
        case .starting, .serving, .stopped, .forced: nil
        }
    }

    /// Time left in the current phase, for `/status`.
    public func timeLeft(now: C.Instant) -> Duration? {
        self.nextDeadline.map { max(.zero, now.duration(to: $0)) }
    }

    public mutating func listenersBound() -> ListenersBoundAction {
        switch self.state {
        case .starting:
            self.state = .serving
            return .startServing
        case .stopped, .forced:
            return .none
        case .serving, .propagating, .draining:
            preconditionFailure("listeners are bound once, before any drain: \(self.phase)")
        }
    }

    public mutating func signalReceived(_ signal: DrainSignal, now: C.Instant) -> SignalAction {
        switch (self.state, signal) {
        case (.starting, _):
            self.state = .stopped
            return .stop
        case (.stopped, _), (.forced, _):
            return .none
        case (.serving, .quit), (.propagating, .quit), (.draining, .quit):
            self.state = .forced
            return .forceClose
        case (.serving, .terminate):
            if self.delay == .zero {
                return self.startDraining(now: now, signals: 1)
            }
            let until = now.advanced(by: self.delay)
            self.state = .propagating(since: now, until: until, signals: 1)
            return .startPropagating(until: until)
        case (.propagating(_, _, let signals), .terminate):
            return self.startDraining(now: now, signals: signals + 1)
        case (.draining(let since, let deadline, let signals), .terminate):
            if signals + 1 >= 3 {
                self.state = .forced
                return .forceClose
            }
            self.state = .draining(since: since, deadline: deadline, signals: signals + 1)
            return .none
        }
    }

    public mutating func deadlineReached(now: C.Instant) -> DeadlineAction {
        switch self.state {
        case .propagating(_, let until, let signals):
            guard now >= until else { return .none }
            switch self.startDraining(now: now, signals: signals) {
            case .startDraining(let deadline): return .startDraining(deadline: deadline)
            case .none, .startPropagating, .forceClose, .stop:
                preconditionFailure("leaving propagating always starts draining")
            }
        case .draining(_, let deadline, _):
            guard now >= deadline else { return .none }
            self.state = .forced
            return .forceClose
        case .starting, .serving, .stopped, .forced:
            return .none
        }
    }

    /// Every listener is closed and no connection is left.
    public mutating func connectionsDrained(now: C.Instant) -> ConnectionsDrainedAction {
        switch self.state {
        case .draining:
            self.state = .stopped
            return .stop
        case .starting, .serving, .propagating, .stopped, .forced:
            // Before draining an empty table means nothing: listeners still accept.
            return .none
        }
    }

    private mutating func startDraining(now: C.Instant, signals: Int) -> SignalAction {
        let deadline = now.advanced(by: self.timeout)
        self.state = .draining(since: now, deadline: deadline, signals: signals)
        return .startDraining(deadline: deadline)
    }
}
