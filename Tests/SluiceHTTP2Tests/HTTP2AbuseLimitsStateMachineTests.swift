import SluiceHTTP2
import Testing

@Suite struct HTTP2AbuseLimitsStateMachineTests {
    typealias Machine = HTTP2AbuseLimitsStateMachine<MockClock>
    let clock = MockClock()

    /// 100 resets in the same instant are allowed by default; the 101st trips ENHANCE_YOUR_CALM.
    @Test func rapidResetTripsAfterBurst() {
        var machine = Machine(now: clock.now)
        for _ in 0..<100 { #expect(machine.resetReceived(now: clock.now) == .none) }
        #expect(machine.resetReceived(now: clock.now) == .sendGoAwayAndClose(errorCode: .enhanceYourCalm))
        #expect(machine.isTripped)
        #expect(machine.resetReceived(now: clock.now) == .none)
    }

    /// Resets at the sustained rate (100 a second, one every 10 ms) never trip the limit.
    @Test func resetsAtTheRateAreAllowed() {
        var machine = Machine(now: clock.now)
        for _ in 0..<1_000 {
            #expect(machine.resetReceived(now: clock.now) == .none)
            clock.advance(by: .milliseconds(10))
        }
        #expect(!machine.isTripped)
    }

    /// The bucket refills over time but never above its burst.
    @Test func bucketRefillsButCapsAtBurst() {
        var machine = Machine(limits: .init(resets: .init(perSecond: 10, burst: 5)), now: clock.now)
        for _ in 0..<5 { #expect(machine.resetReceived(now: clock.now) == .none) }
        clock.advance(by: .milliseconds(250))  // 2.5 tokens back
        #expect(machine.resetReceived(now: clock.now) == .none)
        #expect(machine.resetReceived(now: clock.now) == .none)
        clock.advance(by: .seconds(60))  // refill capped at 5
        for _ in 0..<5 { #expect(machine.resetReceived(now: clock.now) == .none) }
        #expect(machine.resetReceived(now: clock.now) == .sendGoAwayAndClose(errorCode: .enhanceYourCalm))
    }

    /// Refill is proportional to elapsed time: 999 ms at one token a second is not yet a token, 1 s is.
    @Test func refillIsProportionalToElapsedTime() {
        var early = Machine(limits: .init(resets: .init(perSecond: 1, burst: 1)), now: clock.now)
        var onTime = Machine(limits: .init(resets: .init(perSecond: 1, burst: 1)), now: clock.now)
        #expect(early.resetReceived(now: clock.now) == .none)
        #expect(onTime.resetReceived(now: clock.now) == .none)
        #expect(early.resetReceived(now: clock.now.advanced(by: .milliseconds(999))) == .sendGoAwayAndClose(errorCode: .enhanceYourCalm))
        #expect(onTime.resetReceived(now: clock.now.advanced(by: .seconds(1))) == .none)
    }

    /// A SETTINGS flood trips ENHANCE_YOUR_CALM after its own burst, independent of resets.
    @Test func settingsFloodTrips() {
        var machine = Machine(now: clock.now)
        for _ in 0..<50 { #expect(machine.settingsReceived(now: clock.now) == .none) }
        #expect(machine.resetReceived(now: clock.now) == .none)
        #expect(machine.settingsReceived(now: clock.now) == .sendGoAwayAndClose(errorCode: .enhanceYourCalm))
    }

    /// A PING flood trips ENHANCE_YOUR_CALM after its burst.
    @Test func pingFloodTrips() {
        var machine = Machine(limits: .init(pings: .init(perSecond: 1, burst: 3)), now: clock.now)
        for _ in 0..<3 { #expect(machine.pingReceived(now: clock.now) == .none) }
        #expect(machine.pingReceived(now: clock.now) == .sendGoAwayAndClose(errorCode: .enhanceYourCalm))
        #expect(machine.settingsReceived(now: clock.now) == .none)
    }

    /// Unacknowledged SETTINGS past the timeout trips SETTINGS_TIMEOUT.
    @Test func settingsAckTimeoutTrips() {
        var machine = Machine(now: clock.now)
        #expect(machine.settingsSent(now: clock.now) == .scheduleAckTimer(timeout: .seconds(10)))
        #expect(machine.settingsSent(now: clock.now) == .none)
        #expect(machine.settingsAckTimerFired() == .sendGoAwayAndClose(errorCode: .settingsTimeout))
        #expect(machine.isTripped)
    }

    /// An ack before the timer fires disarms it.
    @Test func settingsAckDisarmsTimer() {
        var machine = Machine(now: clock.now)
        _ = machine.settingsSent(now: clock.now)
        machine.settingsAckReceived()
        #expect(machine.settingsAckTimerFired() == .none)
        #expect(!machine.isTripped)
    }

    /// A timer without SETTINGS outstanding (never sent) does not trip.
    @Test func timerWithoutOutstandingSettingsDoesNotTrip() {
        var machine = Machine(now: clock.now)
        #expect(machine.settingsAckTimerFired() == .none)
        #expect(!machine.isTripped)
    }

    /// Once tripped, nothing else is asked for.
    @Test func trippedMachineIgnoresEverything() {
        var machine = Machine(limits: .init(settings: .init(perSecond: 1, burst: 1)), now: clock.now)
        _ = machine.settingsReceived(now: clock.now)
        #expect(machine.settingsReceived(now: clock.now) == .sendGoAwayAndClose(errorCode: .enhanceYourCalm))
        #expect(machine.settingsSent(now: clock.now) == .none)
        #expect(machine.pingReceived(now: clock.now) == .none)
        machine.settingsAckReceived()
        #expect(machine.settingsAckTimerFired() == .none)
    }
}
