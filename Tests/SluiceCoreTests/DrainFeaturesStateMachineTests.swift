import SluiceCore
import Testing

/// The drain machine's issue-13 transitions on the mock clock: the adaptive delay (`drain-quiet`
/// between `drain-delay-min` and `drain-delay`), rehearsals, and the supervised app's exit.
@Suite struct DrainFeaturesStateMachineTests {
    typealias Machine = DrainLifecycleStateMachine<MockClock>
    typealias Instant = MockClock.Instant

    let t0 = Instant(offset: .seconds(1000))

    func serving(delay: Duration = .seconds(15), timeout: Duration = .seconds(10), quiet: Duration? = nil, minimum: Duration = .seconds(2)) -> Machine {
        var machine = Machine(delay: delay, timeout: timeout, quiet: quiet.map { .init(quiet: $0, minimum: minimum) })
        #expect(machine.listenersBound() == .startServing)
        return machine
    }

    // MARK: - Adaptive delay

    /// With no arrivals after the signal, propagating ends at the minimum, not at quiet or the maximum.
    @Test func quietWithoutArrivalsEndsAtTheMinimum() {
        var machine = self.serving(quiet: .seconds(1), minimum: .seconds(2))
        #expect(machine.signalReceived(.terminate, now: self.t0) == .startPropagating(until: self.t0 + .seconds(2)))
        #expect(machine.nextDeadline == self.t0 + .seconds(2))
        #expect(machine.deadlineReached(now: self.t0 + .milliseconds(1999)) == .none)
        #expect(machine.deadlineReached(now: self.t0 + .seconds(2)) == .startDraining(deadline: self.t0 + .seconds(12)))
        #expect(machine.phase == .draining)
    }

    /// Each new connection pushes the end to `last arrival + quiet`.
    @Test func arrivalsStretchTheDelayByTheQuietPeriod() {
        var machine = self.serving(quiet: .seconds(1), minimum: .seconds(2))
        _ = machine.signalReceived(.terminate, now: self.t0)
        machine.newConnectionAccepted(at: self.t0 + .milliseconds(4500))
        #expect(machine.nextDeadline == self.t0 + .milliseconds(5500))
        #expect(machine.deadlineReached(now: self.t0 + .seconds(2)) == .none)
        #expect(machine.phase == .propagating)
        // An older report changes nothing: the latest arrival counts.
        machine.newConnectionAccepted(at: self.t0 + .seconds(3))
        #expect(machine.nextDeadline == self.t0 + .milliseconds(5500))
        #expect(machine.deadlineReached(now: self.t0 + .milliseconds(5499)) == .none)
        #expect(machine.deadlineReached(now: self.t0 + .milliseconds(5500)) == .startDraining(deadline: self.t0 + .milliseconds(15500)))
    }

    /// An arrival early in the delay does not end it before the minimum.
    @Test func anEarlyQuietEndWaitsForTheMinimum() {
        var machine = self.serving(quiet: .milliseconds(500), minimum: .seconds(3))
        _ = machine.signalReceived(.terminate, now: self.t0)
        machine.newConnectionAccepted(at: self.t0 + .milliseconds(100))
        #expect(machine.nextDeadline == self.t0 + .seconds(3))
    }

    /// Arrivals that never stop end the delay at `drain-delay`, the maximum.
    @Test func endlessArrivalsEndAtTheMaximum() {
        var machine = self.serving(delay: .seconds(15), quiet: .seconds(1))
        _ = machine.signalReceived(.terminate, now: self.t0)
        machine.newConnectionAccepted(at: self.t0 + .milliseconds(14900))
        #expect(machine.nextDeadline == self.t0 + .seconds(15))
        #expect(machine.deadlineReached(now: self.t0 + .seconds(15)) == .startDraining(deadline: self.t0 + .seconds(25)))
    }

    /// A minimum above `drain-delay` is clamped to it; arrivals before the signal do not count.
    @Test func theMinimumIsClampedAndOldArrivalsIgnored() {
        var machine = self.serving(delay: .seconds(1), quiet: .seconds(5), minimum: .seconds(2))
        #expect(machine.quiet == .init(quiet: .seconds(5), minimum: .seconds(1)))
        machine.newConnectionAccepted(at: self.t0 - .seconds(1))
        #expect(machine.signalReceived(.terminate, now: self.t0) == .startPropagating(until: self.t0 + .seconds(1)))
        machine.newConnectionAccepted(at: self.t0 - .milliseconds(1))
        #expect(machine.nextDeadline == self.t0 + .seconds(1))
    }

    /// Without `drain-quiet` arrivals change nothing: the fixed delay.
    @Test func withoutQuietTheDelayIsFixed() {
        var machine = self.serving(delay: .seconds(5))
        _ = machine.signalReceived(.terminate, now: self.t0)
        machine.newConnectionAccepted(at: self.t0 + .milliseconds(100))
        #expect(machine.nextDeadline == self.t0 + .seconds(5))
    }

    /// A second signal still skips the rest of an adaptive delay.
    @Test func aSecondSignalSkipsTheAdaptiveDelay() {
        var machine = self.serving(quiet: .seconds(1))
        _ = machine.signalReceived(.terminate, now: self.t0)
        #expect(machine.signalReceived(.terminate, now: self.t0 + .milliseconds(300)) == .startDraining(deadline: self.t0 + .milliseconds(10300)))
    }

    // MARK: - Rehearsal

    /// A rehearsal fails readiness for its window and then serves again; its start is the timeline's.
    @Test func aRehearsalEndsBackInServing() {
        var machine = self.serving()
        #expect(machine.rehearsalRequested(for: .seconds(10), now: self.t0) == .success(self.t0 + .seconds(10)))
        #expect(machine.phase == .rehearsing)
        #expect(!machine.phase.isReady)
        #expect(machine.startedAt == self.t0)
        #expect(machine.nextDeadline == self.t0 + .seconds(10))
        #expect(machine.deadlineReached(now: self.t0 + .seconds(9)) == .none)
        #expect(machine.deadlineReached(now: self.t0 + .seconds(10)) == .endRehearsal)
        #expect(machine.phase == .serving)
        #expect(machine.phase.isReady)
        #expect(machine.nextDeadline == nil)
        // Another rehearsal may follow.
        #expect(machine.rehearsalRequested(for: .seconds(1), now: self.t0 + .seconds(11)) == .success(self.t0 + .seconds(12)))
    }

    /// A rehearsal is refused while one runs and once a drain has begun.
    @Test func rehearsalsAreRefusedUnlessServing() {
        var starting = Machine(delay: .seconds(5), timeout: .seconds(5))
        #expect(starting.rehearsalRequested(for: .seconds(1), now: self.t0) == .failure(.notServing(.starting)))
        var machine = self.serving()
        _ = machine.rehearsalRequested(for: .seconds(10), now: self.t0)
        #expect(machine.rehearsalRequested(for: .seconds(10), now: self.t0) == .failure(.notServing(.rehearsing)))
        _ = machine.signalReceived(.terminate, now: self.t0 + .seconds(1))
        #expect(machine.rehearsalRequested(for: .seconds(10), now: self.t0) == .failure(.notServing(.propagating)))
    }

    /// SIGTERM during a rehearsal is a real drain whose delay counts from the rehearsal's start.
    @Test func aSignalDuringARehearsalKeepsTheTimeElapsed() {
        var machine = self.serving(delay: .seconds(5))
        _ = machine.rehearsalRequested(for: .seconds(10), now: self.t0)
        #expect(machine.signalReceived(.terminate, now: self.t0 + .seconds(3)) == .startPropagating(until: self.t0 + .seconds(5)))
        #expect(machine.phase == .propagating)
        #expect(machine.startedAt == self.t0)
        #expect(machine.deadlineReached(now: self.t0 + .seconds(5)) == .startDraining(deadline: self.t0 + .seconds(15)))
    }

    /// A SIGTERM after the rehearsal has already lasted a whole delay goes straight to draining.
    @Test func aSignalLateInALongRehearsalDrainsAtOnce() {
        var machine = self.serving(delay: .seconds(5))
        _ = machine.rehearsalRequested(for: .seconds(60), now: self.t0)
        #expect(machine.signalReceived(.terminate, now: self.t0 + .seconds(7)) == .startDraining(deadline: self.t0 + .seconds(17)))
        #expect(machine.startedAt == self.t0)
    }

    /// The rehearsal's arrivals count towards the quiet period of the drain it turns into.
    @Test func rehearsalArrivalsCountForTheQuietPeriod() {
        var machine = self.serving(delay: .seconds(15), quiet: .seconds(1), minimum: .seconds(2))
        _ = machine.rehearsalRequested(for: .seconds(10), now: self.t0)
        machine.newConnectionAccepted(at: self.t0 + .seconds(4))
        #expect(machine.signalReceived(.terminate, now: self.t0 + .milliseconds(4200)) == .startPropagating(until: self.t0 + .seconds(5)))
    }

    /// SIGQUIT during a rehearsal forces.
    @Test func quitDuringARehearsalForces() {
        var machine = self.serving()
        _ = machine.rehearsalRequested(for: .seconds(10), now: self.t0)
        #expect(machine.signalReceived(.quit, now: self.t0) == .forceClose)
        #expect(machine.phase == .forced)
    }

    // MARK: - App exit

    /// The app's exit in each phase: starting stops, serving/rehearsing/propagating skip to draining,
    /// draining and after are unchanged.
    @Test func appExitInEachPhase() {
        var starting = Machine(delay: .seconds(5), timeout: .seconds(10))
        #expect(starting.appExited(now: self.t0) == .stop)
        #expect(starting.phase == .stopped)

        var serving = self.serving()
        #expect(serving.appExited(now: self.t0) == .startDraining(deadline: self.t0 + .seconds(10)))
        #expect(serving.phase == .draining)
        #expect(serving.startedAt == self.t0)

        var rehearsing = self.serving()
        _ = rehearsing.rehearsalRequested(for: .seconds(10), now: self.t0)
        #expect(rehearsing.appExited(now: self.t0 + .seconds(2)) == .startDraining(deadline: self.t0 + .seconds(12)))
        #expect(rehearsing.startedAt == self.t0)

        var propagating = self.serving()
        _ = propagating.signalReceived(.terminate, now: self.t0)
        #expect(propagating.appExited(now: self.t0 + .seconds(1)) == .startDraining(deadline: self.t0 + .seconds(11)))
        // The signal count carries on: two more signals force.
        #expect(propagating.signalReceived(.terminate, now: self.t0 + .seconds(2)) == .none)
        #expect(propagating.signalReceived(.terminate, now: self.t0 + .seconds(2)) == .forceClose)

        var draining = self.serving()
        _ = draining.signalReceived(.terminate, now: self.t0)
        _ = draining.signalReceived(.terminate, now: self.t0)
        #expect(draining.appExited(now: self.t0 + .seconds(1)) == .none)
        #expect(draining.phase == .draining)
        #expect(draining.connectionsDrained(now: self.t0 + .seconds(1)) == .stop)
        #expect(draining.appExited(now: self.t0 + .seconds(2)) == .none)
        #expect(draining.phase == .stopped)
    }
}

/// How the supervised app's end becomes Sluice's exit code.
@Suite struct AppExitTests {
    @Test func exitCodes() {
        let term: Int32 = 15
        // Clean: the drain's own code.
        #expect(AppExit.exited(0).exitCode(drainCode: 0, stopSignal: term) == 0)
        #expect(AppExit.exited(0).exitCode(drainCode: 3, stopSignal: term) == 3)
        #expect(AppExit.signaled(term).exitCode(drainCode: 0, stopSignal: term) == 0)
        // The app failed: its code, or 128 + the signal.
        #expect(AppExit.exited(7).exitCode(drainCode: 0, stopSignal: nil) == 7)
        #expect(AppExit.exited(5).exitCode(drainCode: 3, stopSignal: term) == 5)
        #expect(AppExit.signaled(9).exitCode(drainCode: 0, stopSignal: term) == 137)
        #expect(AppExit.signaled(11).exitCode(drainCode: 0, stopSignal: nil) == 139)
        // Ended by SIGTERM on its own (not ours): a failure.
        #expect(AppExit.signaled(term).exitCode(drainCode: 0, stopSignal: nil) == 143)
        #expect(AppExit.exited(0).description == "exit:0")
        #expect(AppExit.signaled(9).description == "signal:9")
    }
}
