/// Whether an accepted connection got one of the process's connection slots (`--max-connections`).
public enum ConnectionSlot: Sendable, Equatable {
    /// It has one; `last` when that was the last free slot.
    case taken(last: Bool)
    /// Every slot is taken.
    case unavailable
}

/// Decides when one listener accepts connections.
///
/// Two things stop a listener reading its accept queue:
/// 1. the connection limit: with every slot taken, reading stops until a connection closes
///    (``slotFreed(limitReached:stillParked:)``); clients wait in the kernel's backlog meanwhile;
/// 2. accept failing for lack of descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM). The pending
///    connection stays in the queue, so the listen socket stays readable and a loop that keeps
///    reading fails again at once, forever (the spin of issue 14 item 7). Reading stops and is
///    retried after a backoff (doubling from ``initialBackoff`` to ``maxBackoff``), or at once
///    when a connection closes and so frees a descriptor. A listener that could free a reserved
///    descriptor (the admin listener) retries at once instead.
///
/// Connections accepted in the same read as the one that took the last slot find no slot: they
/// are *parked* (held, unserved) until a slot frees, so the limit is exact.
///
/// Pure: no channel, no clock. Each event returns an ``Action`` on three independent axes: what
/// to do with the connection, with reading, and what to log (the caller rate-limits the log).
///
/// ```swift
/// var gate = AcceptGateStateMachine<MonotonicInstant>()
/// let action = gate.accepted(slot: budget.acquire(), now: .now())
/// ```
public struct AcceptGateStateMachine<Instant: InstantProtocol> where Instant.Duration == Duration {
    /// Why reading is stopped.
    private enum Pause: Equatable {
        /// Every slot is taken. Valid transitions: to reading on a freed slot.
        case limit
        /// Accept failed for lack of descriptors. Valid transitions: to reading when the retry is
        /// due or a slot frees; to `limit` when the retry is due but every slot is taken.
        case descriptors
    }

    /// From the first failed accept for lack of descriptors to the next accept that succeeds.
    private struct Starvation {
        var since: Instant
        var failures: Int
        var backoff: Duration
    }

    public struct Action: Equatable, Sendable {
        public enum Connection: Equatable, Sendable {
            /// Hand it on to be served.
            case serve
            /// Hold it, unserved, until a slot frees.
            case park
        }

        public enum Reading: Equatable, Sendable {
            /// Stop reading the accept queue until a slot frees.
            case stop
            /// Stop reading the accept queue; retry after this long (or when a slot frees).
            case stopAndRetry(in: Duration)
            /// Read the accept queue again.
            case start
        }

        public enum Log: Equatable, Sendable {
            /// The first failed accept for lack of descriptors since the last one that succeeded.
            case descriptorsExhausted
            /// An accept succeeded again after `failedAccepts` failed over `after`.
            case descriptorsRecovered(after: Duration, failedAccepts: Int)
            /// Every connection slot is taken: accepting pauses.
            case limitReached
        }

        public var connection: Connection?
        public var reading: Reading?
        public var log: Log?

        public init(connection: Connection? = nil, reading: Reading? = nil, log: Log? = nil) {
            self.connection = connection
            self.reading = reading
            self.log = log
        }

        public static var none: Action { Action() }
    }

    private var pause: Pause?
    private var starvation: Starvation?
    private var isClosed = false
    public let initialBackoff: Duration
    public let maxBackoff: Duration

    public init(initialBackoff: Duration = .milliseconds(50), maxBackoff: Duration = .seconds(1)) {
        precondition(initialBackoff > .zero && maxBackoff >= initialBackoff)
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    /// Whether the listener reads its accept queue now.
    public var isReading: Bool { self.pause == nil && !self.isClosed }

    /// Failed accepts since the last one that succeeded.
    public var failedAccepts: Int { self.starvation?.failures ?? 0 }

    /// A connection was accepted; `slot` says whether it got a connection slot.
    public mutating func accepted(slot: ConnectionSlot, now: Instant) -> Action {
        var action = Action()
        if let starvation = self.starvation {
            self.starvation = nil
            action.log = .descriptorsRecovered(after: starvation.since.duration(to: now), failedAccepts: starvation.failures)
        }
        switch slot {
        case .taken(last: false):
            action.connection = .serve
        case .taken(last: true):
            action.connection = .serve
            action.reading = self.stopForLimit()
            if action.reading != nil, action.log == nil { action.log = .limitReached }
        case .unavailable:
            action.connection = .park
            action.reading = self.stopForLimit()
            if action.reading != nil, action.log == nil { action.log = .limitReached }
        }
        return action
    }

    /// Accept failed for lack of descriptors. `freedReserve`: the caller closed a descriptor it
    /// held in reserve for this listener, so the retry can happen at once.
    public mutating func acceptFailed(now: Instant, freedReserve: Bool = false) -> Action {
        guard !self.isClosed else { return .none }
        var action = Action()
        if var starvation = self.starvation {
            starvation.failures += 1
            starvation.backoff = min(starvation.backoff * 2, self.maxBackoff)
            self.starvation = starvation
        } else {
            self.starvation = Starvation(since: now, failures: 1, backoff: self.initialBackoff)
            action.log = .descriptorsExhausted
        }
        // Already stopped at the limit (a failure later in the same read): a freed slot resumes it.
        guard self.pause == nil, !freedReserve else { return action }
        self.pause = .descriptors
        action.reading = .stopAndRetry(in: self.starvation!.backoff)
        return action
    }

    /// The retry after a failed accept is due; `limitReached` says whether every slot is taken now.
    public mutating func retryDue(limitReached: Bool) -> Action {
        guard self.pause == .descriptors, !self.isClosed else { return .none }
        if limitReached {
            self.pause = .limit
            return .none
        }
        self.pause = nil
        return Action(reading: .start)
    }

    /// A connection closed somewhere in the process: a slot (and a descriptor) is free. The caller
    /// has served what it had parked as far as slots allowed; `stillParked` says whether some wait.
    public mutating func slotFreed(limitReached: Bool, stillParked: Bool) -> Action {
        guard self.pause != nil, !self.isClosed, !limitReached, !stillParked else { return .none }
        self.pause = nil
        return Action(reading: .start)
    }

    /// The listener closed: nothing more to decide.
    public mutating func closed() {
        self.isClosed = true
        self.pause = nil
    }

    private mutating func stopForLimit() -> Action.Reading? {
        switch self.pause {
        case nil:
            self.pause = .limit
            return .stop
        case .limit:
            return nil
        case .descriptors:
            // Its retry timer stays scheduled; when due it finds the limit and waits for a slot.
            return nil
        }
    }
}
