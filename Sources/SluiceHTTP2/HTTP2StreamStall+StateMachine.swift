/// Which streams of one HTTP/2 connection have been stalled on flow control for too long, as a pure
/// state machine (issue 14 item 5).
///
/// A stream is stalled while response bytes (or its end) wait and the client's flow-control window is
/// closed. A client that never opens it would pin the bytes, the stream and the upstream exchange
/// behind it for good; past ``timeout`` without progress the stream is reset.
///
/// 1. ``streamBlocked(_:now:)`` when bytes start waiting behind a closed window; the first blocked
///    stream asks for a timer (`.scheduleTimer(after:)`). One timer serves the whole connection.
/// 2. ``streamUnblocked(_:)`` when some of them went out (progress restarts the clock), and
///    ``streamClosed(_:)`` when the stream is gone.
/// 3. ``timerFired(now:)``: streams blocked for ``timeout`` or longer are to be reset (in ID order),
///    and the timer is asked for again for the next one due, if any.
///
/// Pure: the handler passes `now` and runs the timer.
///
/// ```swift
/// var stalls = HTTP2StreamStallStateMachine<ContinuousClock>(timeout: .seconds(30))
/// stalls.streamBlocked(HTTP2StreamID(1), now: .now)   // .scheduleTimer(after: .seconds(30))
/// stalls.timerFired(now: .now + .seconds(30))         // .resetStreams([1], rescheduleAfter: nil)
/// ```
public struct HTTP2StreamStallStateMachine<C: Clock>: Sendable where C.Duration == Duration {
    /// How long a stream may wait on a closed window without progress.
    public let timeout: Duration

    /// When each blocked stream last made progress (became blocked).
    private var blockedSince: [HTTP2StreamID: C.Instant] = [:]
    /// Whether a timer is scheduled. Valid transitions: unarmed → armed when a stream blocks without a
    /// timer; armed → unarmed when it fires and nothing is left blocked; stays armed otherwise.
    private var timerArmed = false

    public init(timeout: Duration) {
        self.timeout = timeout
    }

    /// How many streams are blocked now.
    public var blockedStreamCount: Int { self.blockedSince.count }

    /// What to do after a stream blocked.
    public enum StreamBlockedAction: Equatable, Sendable {
        /// Call ``timerFired(now:)`` after this long.
        case scheduleTimer(after: Duration)
        /// A timer is already scheduled (or the stream was already blocked).
        case none
    }

    /// Bytes of `id` wait behind a closed window since `now`.
    public mutating func streamBlocked(_ id: HTTP2StreamID, now: C.Instant) -> StreamBlockedAction {
        guard self.blockedSince[id] == nil else { return .none }
        self.blockedSince[id] = now
        guard !self.timerArmed else { return .none }
        self.timerArmed = true
        return .scheduleTimer(after: self.timeout)
    }

    /// `id` sent some of its bytes (or its window opened).
    public mutating func streamUnblocked(_ id: HTTP2StreamID) {
        self.blockedSince[id] = nil
    }

    /// `id` is closed or reset.
    public mutating func streamClosed(_ id: HTTP2StreamID) {
        self.blockedSince[id] = nil
    }

    /// What to do when the timer fires.
    public enum TimerFiredAction: Equatable, Sendable {
        /// Reset `streams` (they have been stalled for the timeout; possibly none), and schedule the
        /// timer again after `rescheduleAfter` if it is not nil.
        case resetStreams([HTTP2StreamID], rescheduleAfter: Duration?)
    }

    /// The timer fired at `now`.
    public mutating func timerFired(now: C.Instant) -> TimerFiredAction {
        var expired: [HTTP2StreamID] = []
        var nextDue: C.Instant?
        for (id, since) in self.blockedSince {
            let due = since.advanced(by: self.timeout)
            if due <= now {
                expired.append(id)
            } else if nextDue.map({ due < $0 }) ?? true {
                nextDue = due
            }
        }
        for id in expired { self.blockedSince[id] = nil }
        self.timerArmed = nextDue != nil
        return .resetStreams(expired.sorted(), rescheduleAfter: nextDue.map { now.duration(to: $0) })
    }
}
