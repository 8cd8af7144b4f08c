import SluiceHTTP2
import Testing

@Suite struct HTTP2StreamStallStateMachineTests {
    typealias Machine = HTTP2StreamStallStateMachine<MockClock>
    let clock = MockClock()

    /// The first stream to block asks for the connection's one timer; when it fires after the timeout
    /// the stream is to be reset, and nothing is left to time.
    @Test func streamBlockedForTheTimeoutIsReset() {
        var machine = Machine(timeout: .seconds(30))
        #expect(machine.streamBlocked(HTTP2StreamID(1), now: clock.now) == .scheduleTimer(after: .seconds(30)))
        #expect(machine.streamBlocked(HTTP2StreamID(1), now: clock.now) == .none)
        clock.advance(by: .seconds(30))
        #expect(machine.timerFired(now: clock.now) == .resetStreams([HTTP2StreamID(1)], rescheduleAfter: nil))
        #expect(machine.blockedStreamCount == 0)
        // The timer is free again: the next blocked stream asks for it.
        #expect(machine.streamBlocked(HTTP2StreamID(3), now: clock.now) == .scheduleTimer(after: .seconds(30)))
    }

    /// Progress restarts a stream's clock; a stream blocked later is due later and the timer is asked
    /// for again for it; closed streams are forgotten.
    @Test func progressRestartsTheClockAndTheTimerFollowsTheNextDue() {
        var machine = Machine(timeout: .seconds(10))
        #expect(machine.streamBlocked(HTTP2StreamID(1), now: clock.now) == .scheduleTimer(after: .seconds(10)))
        clock.advance(by: .seconds(4))
        #expect(machine.streamBlocked(HTTP2StreamID(3), now: clock.now) == .none)
        #expect(machine.streamBlocked(HTTP2StreamID(5), now: clock.now) == .none)
        clock.advance(by: .seconds(2))
        machine.streamUnblocked(HTTP2StreamID(1))
        #expect(machine.streamBlocked(HTTP2StreamID(1), now: clock.now) == .none)  // progress at t=6
        machine.streamClosed(HTTP2StreamID(5))
        clock.advance(by: .seconds(4))  // t=10: nothing is due yet; stream 3 is due at t=14
        #expect(machine.timerFired(now: clock.now) == .resetStreams([], rescheduleAfter: .seconds(4)))
        clock.advance(by: .seconds(4))  // t=14
        #expect(machine.timerFired(now: clock.now) == .resetStreams([HTTP2StreamID(3)], rescheduleAfter: .seconds(2)))
        clock.advance(by: .seconds(2))  // t=16
        #expect(machine.timerFired(now: clock.now) == .resetStreams([HTTP2StreamID(1)], rescheduleAfter: nil))
    }

    /// Streams due together are reset together, in ID order; unblocked ones are not.
    @Test func streamsDueTogetherAreResetInOrder() {
        var machine = Machine(timeout: .milliseconds(500))
        for id in [7, 3, 5, 1] { _ = machine.streamBlocked(HTTP2StreamID(Int32(id)), now: clock.now) }
        machine.streamUnblocked(HTTP2StreamID(5))
        clock.advance(by: .seconds(1))
        #expect(machine.timerFired(now: clock.now) == .resetStreams([HTTP2StreamID(1), HTTP2StreamID(3), HTTP2StreamID(7)], rescheduleAfter: nil))
    }
}
