/// A moment on a monotonic clock, in nanoseconds: the instant the proxy feeds the pure machines.
///
/// The machines stay generic over `InstantProtocol` (tests use their own mock instants); their hot
/// entry points are pre-specialised for this type so the proxy's per-request calls do not run
/// unspecialised generic code (which allocated on every request). Reading the clock is the
/// proxy's business (`MonotonicInstant.now()` in SluiceProxy): this module does no I/O.
public struct MonotonicInstant: InstantProtocol, Sendable, Hashable {
    public var nanoseconds: Int64

    @inlinable
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    @inlinable
    public func advanced(by duration: Duration) -> MonotonicInstant {
        MonotonicInstant(nanoseconds: self.nanoseconds &+ duration.nanosecondsClamped)
    }

    @inlinable
    public func duration(to other: MonotonicInstant) -> Duration {
        .nanoseconds(other.nanoseconds &- self.nanoseconds)
    }

    @inlinable
    public static func < (lhs: MonotonicInstant, rhs: MonotonicInstant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
}
