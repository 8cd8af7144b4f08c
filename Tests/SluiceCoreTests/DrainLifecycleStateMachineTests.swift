import SluiceCore
import Testing

@Suite struct DrainLifecycleStateMachineTests {
    typealias Machine = DrainLifecycleStateMachine<MockClock>
    typealias Instant = MockClock.Instant

    let start = Instant(offset: .seconds(1000))

    /// A machine that has bound its listeners and is serving.
    func servingMachine(delay: Duration = .seconds(5), timeout: Duration = .seconds(20)) -> Machine {
        var machine = Machine(delay: delay, timeout: timeout)
        #expect(machine.listenersBound() == .startServing)
        #expect(machine.phase == .serving)
        return machine
    }

    // MARK: - Starting

    /// A new machine is starting, has no deadline, and serves once its listeners are bound.
    @Test func startingBecomesServingWhenListenersAreBound() {
        let clock = MockClock(now: self.start)
        var machine = Machine(delay: .seconds(5), timeout: .seconds(20))
        #expect(machine.phase == .starting)
        #expect(machine.nextDeadline == nil)
        #expect(machine.timeLeft(now: clock.now) == nil)
        #expect(machine.delay == .seconds(5))
        #expect(machine.timeout == .seconds(20))
        #expect(machine.listenersBound() == .startServing)
        #expect(machine.phase == .serving)
        #expect(machine.nextDeadline == nil)
    }

    /// Any signal while starting stops at once (nothing was served), and binding afterwards does nothing.
    @Test(arguments: [DrainSignal.terminate, .quit])
    func signalWhileStartingStopsAndLaterBindingIsIgnored(_ signal: DrainSignal) {
        let clock = MockClock(now: self.start)
        var machine = Machine(delay: .seconds(5), timeout: .seconds(20))
        #expect(machine.signalReceived(signal, now: clock.now) == .stop)
        #expect(machine.phase == .stopped)
        #expect(machine.listenersBound() == .none)
        #expect(machine.phase == .stopped)
    }

    /// Binding the listeners twice is a programming error.
    @Test func bindingListenersWhileServingIsAPreconditionFailure() async {
        await #expect(processExitsWith: .failure) {
            var machine = DrainLifecycleStateMachine<ContinuousClock>(delay: .seconds(1), timeout: .seconds(1))
            _ = machine.listenersBound()
            _ = machine.listenersBound()
        }
    }

    // MARK: - Serving → propagating → draining

    /// The first terminate signal while serving starts propagating until now + delay.
    @Test func firstTerminateWhileServingStartsPropagatingUntilNowPlusDelay() {
        let clock = MockClock(now: self.start)
        var machine = servingMachine()
        let until = clock.now + .seconds(5)
        #expect(machine.signalReceived(.terminate, now: clock.now) == .startPropagating(until: until))
        #expect(machine.phase == .propagating)
        #expect(machine.nextDeadline == until)
        #expect(machine.timeLeft(now: clock.now) == .seconds(5))
    }

    /// With a zero delay the first terminate signal goes straight to draining with deadline now + timeout.
    @Test func zeroDelayGoesStraightFromServingToDraining() {
        let clock = MockClock(now: self.start)
        var machine = servingMachine(delay: .zero)
        #expect(machine.signalReceived(.terminate, now: clock.now) == .startDraining(deadline: clock.now + .seconds(20)))
        #expect(machine.phase == .draining)
        #expect(machine.nextDeadline == clock.now + .seconds(20))
    }

    /// A deadline wake-up before the end of propagating does nothing.
    @Test func deadlineBeforeTheEndOfPropagatingDoesNothing() {
        var clock = MockClock(now: self.start)
        var machine = servingMachine()
        let until = clock.now + .seconds(5)
        _ = machine.signalReceived(.terminate, now: clock.now)
        clock.advance(by: .seconds(5) - .nanoseconds(1))
        #expect(machine.deadlineReached(now: clock.now) == .none)
        #expect(machine.phase == .propagating)
        #expect(machine.nextDeadline == until)
        #expect(machine.timeLeft(now: clock.now) == .nanoseconds(1))
    }

    /// At the end of propagating the machine starts draining with deadline until + timeout.
    @Test func deadlineAtTheEndOfPropagatingStartsDrainingWithTheTimeout() {
        var clock = MockClock(now: self.start)
        var machine = servingMachine()
        _ = machine.signalReceived(.terminate, now: clock.now)
        clock.advance(by: .seconds(5))
        #expect(machine.deadlineReached(now: clock.now) == .startDraining(deadline: clock.now + .seconds(20)))
        #expect(machine.phase == .draining)
        #expect(machine.nextDeadline == clock.now + .seconds(20))
        #expect(machine.timeLeft(now: clock.now) == .seconds(20))
    }

    /// A late wake-up starts draining then: the timeout runs from when listeners actually close.
    @Test func lateDeadlineWakeUpStartsDrainingFromThatMoment() {
        var clock = MockClock(now: self.start)
        var machine = servingMachine()
        _ = machine.signalReceived(.terminate, now: clock.now)
        clock.advance(by: .milliseconds(5003))
        #expect(machine.deadlineReached(now: clock.now) == .startDraining(deadline: clock.now + .seconds(20)))
    }

    /// A second terminate signal while propagating skips the rest of the delay.
    @Test func secondTerminateWhilePropagatingSkipsTheRestOfTheDelay() {
        var clock = MockClock(now: self.start)
        var machine = servingMachine()
        _ = machine.signalReceived(.terminate, now: clock.now)
        clock.advance(by: .seconds(1))
        #expect(machine.signalReceived(.terminate, now: clock.now) == .startDraining(deadline: clock.now + .seconds(20)))
        #expect(machine.phase == .draining)
        #expect(machine.nextDeadline == clock.now + .seconds(20))
        // The propagating wake-up that was scheduled earlier now means nothing.
        clock.advance(by: .seconds(4))
        #expect(machine.deadlineReached(now: clock.now) == .none)
        #expect(machine.phase == .draining)
    }

    // MARK: - Forcing

    /// A third terminate signal forces when the second one started draining.
    @Test func thirdTerminateForcesWhenTheSecondStartedDraining() {
        let clock = MockClock(now: self.start)
        var machine = servingMachine()
        _ = machine.signalReceived(.terminate, now: clock.now)
        _ = machine.signalReceived(.terminate, now: clock.now)
        #expect(machine.phase == .draining)
        #expect(machine.signalReceived(.terminate, now: clock.now) == .forceClose)
        #expect(machine.phase == .forced)
        #expect(machine.nextDeadline == nil)
    }

    /// When the delay elapsed on its own, the second signal changes nothing and the third forces.
    @Test func thirdTerminateForcesWhenTheDelayElapsedNaturally() {
        var clock = MockClock(now: self.start)
        var machine = servingMachine()
        _ = machine.signalReceived(.terminate, now: clock.now)
        clock.advance(by: .seconds(5))
        _ = machine.deadlineReached(now: clock.now)
        let deadline = clock.now + .seconds(20)
        #expect(machine.phase == .draining)
        clock.advance(by: .seconds(1))
        #expect(machine.signalReceived(.terminate, now: clock.now) == .none)
        #expect(machine.phase == .draining)
        #expect(machine.nextDeadline == deadline)
        #expect(machine.signalReceived(.terminate, now: clock.now) == .forceClose)
        #expect(machine.phase == .forced)
    }

    /// With a zero delay the first signal drains, the second changes nothing and the third forces.
    @Test func thirdTerminateForcesWithZeroDelay() {
        let clock = MockClock(now: self.start)
        var machine = servingMachine(delay: .zero)
        #expect(machine.signalReceived(.terminate, now: clock.now) == .startDraining(deadline: clock.now + .seconds(20)))
        #expect(machine.signalReceived(.terminate, now: clock.now) == .none)
        #expect(machine.signalReceived(.terminate, now: clock.now) == .forceClose)
        #expect(machine.phase == .forced)
    }

    enum LivePhase: String, CaseIterable, Sendable {
        case serving, propagating, draining
    }

    /// A machine brought to a live phase through its legal transitions.
    func liveMachine(_ phase: LivePhase) -> Machine {
        let clock = MockClock(now: self.start)
        var machine = servingMachine()
        switch phase {
        case .serving:
            break
        case .propagating:
            _ = machine.signalReceived(.terminate, now: clock.now)
        case .draining:
            _ = machine.signalReceived(.terminate, now: clock.now)
            _ = machine.signalReceived(.terminate, now: clock.now)
        }
        #expect(machine.phase.rawValue == phase.rawValue)
        return machine
    }

    /// SIGQUIT forces from serving, propagating and draining alike.
    @Test(arguments: LivePhase.allCases)
    func quitForcesFromEveryLivePhase(_ phase: LivePhase) {
        let clock = MockClock(now: self.start)
        var machine = liveMachine(phase)
        #expect(machine.signalReceived(.quit, now: clock.now) == .forceClose)
        #expect(machine.phase == .forced)
        #expect(machine.nextDeadline == nil)
    }

    /// The drain deadline forces, not a moment before.
    @Test func drainDeadlineForcesNotBefore() {
        var clock = MockClock(now: self.start)
        var machine = servingMachine()
        _ = machine.signalReceived(.terminate, now: clock.now)
        _ = machine.signalReceived(.terminate, now: clock.now)
        clock.advance(by: .seconds(20) - .nanoseconds(1))
        #expect(machine.deadlineReached(now: clock.now) == .none)
        #expect(machine.phase == .draining)
        clock.advance(by: .nanoseconds(1))
        #expect(machine.deadlineReached(now: clock.now) == .forceClose)
        #expect(machine.phase == .forced)
    }

    /// A deadline wake-up while starting or serving does nothing.
    @Test func deadlineWhileStartingOrServingDoesNothing() {
        let clock = MockClock(now: self.start)
        var machine = Machine(delay: .seconds(5), timeout: .seconds(20))
        #expect(machine.deadlineReached(now: clock.now) == .none)
        #expect(machine.phase == .starting)
        _ = machine.listenersBound()
        #expect(machine.deadlineReached(now: clock.now + .seconds(3600)) == .none)
        #expect(machine.phase == .serving)
    }

    // MARK: - Stopping

    /// An empty table stops the process only while draining; before that listeners still accept.
    @Test func connectionsDrainedOnlyStopsWhileDraining() {
        let clock = MockClock(now: self.start)
        var starting = Machine(delay: .seconds(5), timeout: .seconds(20))
        #expect(starting.connectionsDrained(now: clock.now) == .none)
        #expect(starting.phase == .starting)
        var serving = liveMachine(.serving)
        #expect(serving.connectionsDrained(now: clock.now) == .none)
        #expect(serving.phase == .serving)
        var propagating = liveMachine(.propagating)
        #expect(propagating.connectionsDrained(now: clock.now) == .none)
        #expect(propagating.phase == .propagating)
        var draining = liveMachine(.draining)
        #expect(draining.connectionsDrained(now: clock.now) == .stop)
        #expect(draining.phase == .stopped)
        #expect(draining.nextDeadline == nil)
    }

    /// After a clean stop no event produces an action.
    @Test func nothingHappensAfterStopped() {
        let clock = MockClock(now: self.start)
        var machine = liveMachine(.draining)
        _ = machine.connectionsDrained(now: clock.now)
        assertInert(&machine, phase: .stopped)
    }

    /// After a forced close no event produces an action.
    @Test func nothingHappensAfterForced() {
        let clock = MockClock(now: self.start)
        var machine = liveMachine(.serving)
        _ = machine.signalReceived(.quit, now: clock.now)
        assertInert(&machine, phase: .forced)
    }

    func assertInert(_ machine: inout Machine, phase: DrainPhase) {
        let clock = MockClock(now: self.start)
        let later = clock.now + .seconds(3600)
        #expect(machine.signalReceived(.terminate, now: later) == .none)
        #expect(machine.signalReceived(.quit, now: later) == .none)
        #expect(machine.deadlineReached(now: later) == .none)
        #expect(machine.connectionsDrained(now: later) == .none)
        #expect(machine.listenersBound() == .none)
        #expect(machine.phase == phase)
        #expect(machine.nextDeadline == nil)
        #expect(machine.timeLeft(now: later) == nil)
    }

    // MARK: - Deadlines and readiness

    /// timeLeft counts down to the phase's deadline and never goes below zero.
    @Test func timeLeftCountsDownAndNeverGoesNegative() {
        let clock = MockClock(now: self.start)
        var machine = servingMachine(delay: .seconds(5), timeout: .seconds(20))
        #expect(machine.timeLeft(now: clock.now) == nil)
        let start = clock.now
        _ = machine.signalReceived(.terminate, now: start)
        #expect(machine.timeLeft(now: start + .milliseconds(1500)) == .milliseconds(3500))
        #expect(machine.timeLeft(now: start + .seconds(9)) == .zero)
        _ = machine.deadlineReached(now: start + .seconds(5))
        #expect(machine.nextDeadline == start + .seconds(25))
        #expect(machine.timeLeft(now: start + .seconds(10)) == .seconds(15))
        #expect(machine.timeLeft(now: start + .seconds(60)) == .zero)
    }

    /// Readiness is on only while serving, and never comes back once the drain has begun.
    @Test func readinessIsOnOnlyWhileServingAndNeverReturns() {
        var clock = MockClock(now: self.start)
        var machine = Machine(delay: .seconds(5), timeout: .seconds(20))
        var readiness = [machine.phase.isReady]
        _ = machine.listenersBound()
        readiness.append(machine.phase.isReady)
        _ = machine.signalReceived(.terminate, now: clock.now)
        readiness.append(machine.phase.isReady)
        clock.advance(by: .seconds(5))
        _ = machine.deadlineReached(now: clock.now)
        readiness.append(machine.phase.isReady)
        _ = machine.signalReceived(.terminate, now: clock.now)
        readiness.append(machine.phase.isReady)
        _ = machine.connectionsDrained(now: clock.now)
        readiness.append(machine.phase.isReady)
        #expect(readiness == [false, true, false, false, false, false])
        #expect(machine.phase == .stopped)
    }
}

@Suite struct DrainPhaseTests {
    /// Only serving is ready.
    @Test func onlyServingIsReady() {
        #expect(DrainPhase.allCases.filter(\.isReady) == [.serving])
    }

    /// Phases are ordered as in DESIGN.md §2 (a rehearsal between serving and propagating), with the
    /// gauge values 0 to 5 they had before rehearsals existed, 6 for rehearsing, and their names as raw values.
    @Test func phasesAreOrderedWithGaugeValuesAndNames() {
        #expect(DrainPhase.allCases == [.starting, .serving, .rehearsing, .propagating, .draining, .stopped, .forced])
        #expect(DrainPhase.allCases.map(\.ordinal) == [0, 1, 6, 2, 3, 4, 5])
        #expect(DrainPhase.allCases.map(\.rawValue) == ["starting", "serving", "rehearsing", "propagating", "draining", "stopped", "forced"])
        #expect(DrainPhase.serving < .rehearsing && DrainPhase.rehearsing < .propagating)
        #expect(DrainPhase.serving < .propagating)
        #expect(DrainPhase.draining < .forced)
        #expect(!(DrainPhase.stopped < .draining))
        #expect(DrainPhase.allCases.shuffled().sorted() == DrainPhase.allCases)
    }
}
