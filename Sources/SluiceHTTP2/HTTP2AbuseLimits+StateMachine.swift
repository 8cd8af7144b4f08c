/// Per-connection limits against HTTP/2 floods.
///
/// Each rate is a token bucket: `burst` frames may arrive at once, and the bucket refills at
/// `perSecond` tokens a second. A frame that finds the bucket empty trips the limit.
///
/// 1. Rapid reset (CVE-2023-44487): RST_STREAM frames received. Default 100 a second, burst 100.
/// 2. SETTINGS flood: non-ack SETTINGS frames received. Default 20 a second, burst 50.
/// 3. PING flood: non-ack PING frames received. Default 20 a second, burst 50.
/// 4. SETTINGS ack timeout: our SETTINGS must be acknowledged within 10 s (RFC 9113 §6.5.3).
public struct HTTP2AbuseLimits: Sendable, Equatable {
    /// A token-bucket rate.
    public struct Rate: Sendable, Equatable {
        /// Tokens added each second.
        public var perSecond: Int
        /// The bucket's size: how many frames may arrive at once.
        public var burst: Int

        public init(perSecond: Int, burst: Int) {
            precondition(perSecond > 0 && burst > 0, "a rate needs a positive refill and burst")
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    /// RST_STREAM frames received. Default 100/s, burst 100.
    public var resets: Rate
    /// SETTINGS frames (not acks) received. Default 20/s, burst 50.
    public var settings: Rate
    /// PING frames (not acks) received. Default 20/s, burst 50.
    public var pings: Rate
    /// How long the peer has to acknowledge our SETTINGS. Default 10 s.
    public var settingsAckTimeout: Duration

    public init(
        resets: Rate = Rate(perSecond: 100, burst: 100),
        settings: Rate = Rate(perSecond: 20, burst: 50),
        pings: Rate = Rate(perSecond: 20, burst: 50),
        settingsAckTimeout: Duration = .seconds(10)
    ) {
        self.resets = resets
        self.settings = settings
        self.pings = pings
        self.settingsAckTimeout = settingsAckTimeout
    }
}

/// Counts the frames ``HTTP2AbuseLimits`` caps, for one connection; pure, time is passed in.
///
/// Once a limit trips, the machine is `tripped` and every later event answers `.none`: the connection
/// is already going away.
///
/// ```swift
/// var limits = HTTP2AbuseLimitsStateMachine<ContinuousClock>(limits: .init(), now: .now)
/// if case .sendGoAwayAndClose(let code) = limits.resetReceived(now: .now) { /* GOAWAY code, close */ }
/// ```
public struct HTTP2AbuseLimitsStateMachine<C: Clock>: Sendable where C.Duration == Duration {
    /// A token bucket; tokens are kept in millitokens so that refill is exact integer arithmetic.
    private struct Bucket: Sendable {
        let rate: HTTP2AbuseLimits.Rate
        var milliTokens: Int64
        var refilledAt: C.Instant

        init(rate: HTTP2AbuseLimits.Rate, now: C.Instant) {
            self.rate = rate
            self.milliTokens = Int64(rate.burst) * 1000
            self.refilledAt = now
        }

        /// Takes one token; false when the bucket is empty.
        mutating func take(now: C.Instant) -> Bool {
            let elapsed = self.refilledAt.duration(to: now)
            if elapsed > .zero {
                let (seconds, attoseconds) = elapsed.components
                // millitokens = elapsed seconds × rate × 1000, computed without overflow for any sane rate.
                let perSecondMilli = Int64(self.rate.perSecond) * 1000
                let fromSeconds = seconds.multipliedReportingOverflow(by: perSecondMilli)
                let fromFraction = Int64((Double(attoseconds) / 1e18) * Double(perSecondMilli))
                let capacity = Int64(self.rate.burst) * 1000
                let added = fromSeconds.overflow ? capacity : fromSeconds.partialValue + fromFraction
                self.milliTokens = min(capacity, self.milliTokens + min(added, capacity))
                self.refilledAt = now
            }
            guard self.milliTokens >= 1000 else { return false }
            self.milliTokens -= 1000
            return true
        }
    }

    private enum State: Sendable {
        /// Counting. `awaitingSettingsAck` while our SETTINGS waits for its ack (and its timer runs).
        /// Valid transitions: `.tripped`.
        case counting(resets: Bucket, settings: Bucket, pings: Bucket, awaitingSettingsAck: Bool)
        /// A limit tripped and the connection is going away; final.
        case tripped
    }

    private var state: State
    private let limits: HTTP2AbuseLimits

    public init(limits: HTTP2AbuseLimits = HTTP2AbuseLimits(), now: C.Instant) {
        self.limits = limits
        self.state = .counting(
            resets: Bucket(rate: limits.resets, now: now),
            settings: Bucket(rate: limits.settings, now: now),
            pings: Bucket(rate: limits.pings, now: now),
            awaitingSettingsAck: false
        )
    }

    /// Whether a limit has tripped.
    public var isTripped: Bool {
        switch self.state {
        case .counting: false
        case .tripped: true
        }
    }

    /// What to do after a counted frame arrived.
    public enum FrameReceivedAction: Equatable, Sendable {
        /// Within limits.
        case none
        /// Over the limit: send GOAWAY with `errorCode` (`ENHANCE_YOUR_CALM`) and close.
        case sendGoAwayAndClose(errorCode: HTTP2ErrorCode)
    }

    /// A RST_STREAM frame arrived.
    public mutating func resetReceived(now: C.Instant) -> FrameReceivedAction {
        switch self.state {
        case .counting(var resets, let settings, let pings, let awaiting):
            let allowed = resets.take(now: now)
            self.state = .counting(resets: resets, settings: settings, pings: pings, awaitingSettingsAck: awaiting)
            return allowed ? .none : self.trip(.enhanceYourCalm)
        case .tripped:
            return .none
        }
    }

    /// A SETTINGS frame (not an ack) arrived.
    public mutating func settingsReceived(now: C.Instant) -> FrameReceivedAction {
        switch self.state {
        case .counting(let resets, var settings, let pings, let awaiting):
            let allowed = settings.take(now: now)
            self.state = .counting(resets: resets, settings: settings, pings: pings, awaitingSettingsAck: awaiting)
            return allowed ? .none : self.trip(.enhanceYourCalm)
        case .tripped:
            return .none
        }
    }

    /// A PING frame (not an ack) arrived.
    public mutating func pingReceived(now: C.Instant) -> FrameReceivedAction {
        switch self.state {
        case .counting(let resets, let settings, var pings, let awaiting):
            let allowed = pings.take(now: now)
            self.state = .counting(resets: resets, settings: settings, pings: pings, awaitingSettingsAck: awaiting)
            return allowed ? .none : self.trip(.enhanceYourCalm)
        case .tripped:
            return .none
        }
    }

    private mutating func trip(_ code: HTTP2ErrorCode) -> FrameReceivedAction {
        self.state = .tripped
        return .sendGoAwayAndClose(errorCode: code)
    }

    /// What to do after we sent SETTINGS.
    public enum SettingsSentAction: Equatable, Sendable {
        /// Call ``settingsAckTimerFired()`` after `timeout`.
        case scheduleAckTimer(timeout: Duration)
        /// An earlier SETTINGS is still unacknowledged and its timer runs; or the limits tripped.
        case none
    }

    /// We sent a SETTINGS frame at `now`.
    public mutating func settingsSent(now: C.Instant) -> SettingsSentAction {
        switch self.state {
        case .counting(let resets, let settings, let pings, let awaiting):
            guard !awaiting else { return .none }
            self.state = .counting(resets: resets, settings: settings, pings: pings, awaitingSettingsAck: true)
            return .scheduleAckTimer(timeout: self.limits.settingsAckTimeout)
        case .tripped:
            return .none
        }
    }

    /// The peer acknowledged our SETTINGS.
    ///
    /// One ack ends the wait: we send SETTINGS once per connection, so there is never more than one
    /// outstanding.
    public mutating func settingsAckReceived() {
        switch self.state {
        case .counting(let resets, let settings, let pings, _):
            self.state = .counting(resets: resets, settings: settings, pings: pings, awaitingSettingsAck: false)
        case .tripped:
            break
        }
    }

    /// The timer from ``SettingsSentAction/scheduleAckTimer(timeout:)`` fired.
    ///
    /// The timer is the clock here: comparing against an instant from another clock could ignore a timer
    /// that fired a hair early, and it would never fire again.
    public mutating func settingsAckTimerFired() -> FrameReceivedAction {
        switch self.state {
        case .counting(_, _, _, let awaiting):
            guard awaiting else { return .none }
            return self.trip(.settingsTimeout)
        case .tripped:
            return .none
        }
    }
}
