import NIOCore
import SluiceCore

extension MonotonicInstant {
    /// Now, on the event loops' monotonic clock (`CLOCK_MONOTONIC`, as `NIODeadline.now()`).
    @inline(__always)
    public static func now() -> MonotonicInstant {
        MonotonicInstant(nanoseconds: Int64(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds))
    }
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
