/// A clock whose time moves only when a test sets or advances ``now``; nothing ever sleeps.
///
/// A value type: each test owns its clock and passes `clock.now` to the machine under test.
struct MockClock: Clock {
    struct Instant: InstantProtocol, CustomStringConvertible {
        var offset: Duration

        init(offset: Duration) { self.offset = offset }

        func advanced(by duration: Duration) -> Instant { Instant(offset: self.offset + duration) }
        func duration(to other: Instant) -> Duration { other.offset - self.offset }
        static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
        static func + (lhs: Instant, rhs: Duration) -> Instant { lhs.advanced(by: rhs) }
        static func - (lhs: Instant, rhs: Duration) -> Instant { lhs.advanced(by: .zero - rhs) }

        var description: String { "t+\(self.offset)" }
    }

    var now = Instant(offset: .zero)
    var minimumResolution: Duration { .nanoseconds(1) }

    init(now: Instant = Instant(offset: .zero)) { self.now = now }

    mutating func advance(by duration: Duration) { self.now = self.now.advanced(by: duration) }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        // The pure machines under test never sleep; time moves only through `now`.
        preconditionFailure("MockClock.sleep is not used by the pure machines")
    }
}
