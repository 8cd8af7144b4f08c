import NIOCore

/// A moment on the event loops' monotonic clock (`CLOCK_MONOTONIC`, as `NIODeadline.now()`).
///
/// The pure machines in SluiceCore are generic over `InstantProtocol`; this is the instant the
/// proxy feeds them, read once per event.
public struct MonotonicInstant: InstantProtocol, Sendable {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    @inline(__always)
    public static func now() -> MonotonicInstant {
        MonotonicInstant(nanoseconds: Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds))
    }

    public func advanced(by duration: Duration) -> MonotonicInstant {
        MonotonicInstant(nanoseconds: self.nanoseconds &+ duration.nanosecondsClamped)
    }

    public func duration(to other: MonotonicInstant) -> Duration {
        .nanoseconds(other.nanoseconds &- self.nanoseconds)
    }

    public static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
}

/// A `Clock` over ``MonotonicInstant``, for the drain lifecycle machine.
public struct MonotonicClock: Clock, Sendable {
    public init() {}
    public var now: MonotonicInstant { .now() }
    public var minimumResolution: Duration { .nanoseconds(1) }
    public func sleep(until deadline: MonotonicInstant, tolerance: Duration?) async throws {
        try await ContinuousClock().sleep(for: MonotonicInstant.now().duration(to: deadline), tolerance: tolerance)
    }
}

extension Duration {
    var timeAmount: TimeAmount { .nanoseconds(self.nanosecondsClamped) }
}
