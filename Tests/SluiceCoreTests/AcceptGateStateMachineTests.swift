import SluiceCore
import Testing

@Suite struct AcceptGateStateMachineTests {
    typealias Machine = AcceptGateStateMachine<MockClock.Instant>
    typealias Action = Machine.Action

    // MARK: - The connection limit

    /// Below the limit every accepted connection is served and reading goes on.
    @Test func belowTheLimitConnectionsAreServedAndReadingGoesOn() {
        let clock = MockClock()
        var machine = Machine()
        #expect(machine.accepted(slot: .taken(last: false), now: clock.now) == Action(connection: .serve))
        #expect(machine.isReading)
    }

    /// The connection that takes the last slot is served, and reading stops with one log line.
    @Test func takingTheLastSlotServesAndStopsReading() {
        let clock = MockClock()
        var machine = Machine()
        #expect(machine.accepted(slot: .taken(last: true), now: clock.now) == Action(connection: .serve, reading: .stop, log: .limitReached))
        #expect(!machine.isReading)
    }

    /// Connections the same read accepted past the limit are parked, reading stopped only once.
    @Test func connectionsPastTheLimitInOneReadAreParked() {
        let clock = MockClock()
        var machine = Machine()
        _ = machine.accepted(slot: .taken(last: true), now: clock.now)
        #expect(machine.accepted(slot: .unavailable, now: clock.now) == Action(connection: .park))
        #expect(machine.accepted(slot: .unavailable, now: clock.now) == Action(connection: .park))
    }

    /// A connection accepted with no slot free while reading parks it and stops reading.
    @Test func noSlotWhileReadingParksAndStops() {
        let clock = MockClock()
        var machine = Machine()
        #expect(machine.accepted(slot: .unavailable, now: clock.now) == Action(connection: .park, reading: .stop, log: .limitReached))
    }

    /// A freed slot starts reading again, unless the limit is still reached or connections are still parked.
    @Test func aFreedSlotResumesReadingOnlyWhenRoomAndNothingParked() {
        let clock = MockClock()
        var machine = Machine()
        _ = machine.accepted(slot: .taken(last: true), now: clock.now)
        #expect(machine.slotFreed(limitReached: true, stillParked: false) == .none)
        #expect(machine.slotFreed(limitReached: false, stillParked: true) == .none)
        #expect(machine.slotFreed(limitReached: false, stillParked: false) == Action(reading: .start))
        #expect(machine.isReading)
        // Already reading: nothing to do.
        #expect(machine.slotFreed(limitReached: false, stillParked: false) == .none)
    }

    // MARK: - Out of descriptors

    /// The first failed accept stops reading, retries after the initial backoff, and logs once.
    @Test func firstFailedAcceptStopsReadingAndLogs() {
        let clock = MockClock()
        var machine = Machine(initialBackoff: .milliseconds(50), maxBackoff: .seconds(1))
        #expect(machine.acceptFailed(now: clock.now) == Action(reading: .stopAndRetry(in: .milliseconds(50)), log: .descriptorsExhausted))
        #expect(!machine.isReading)
        #expect(machine.failedAccepts == 1)
    }

    /// Failures that follow double the backoff up to the maximum and log nothing more.
    @Test func repeatedFailuresDoubleTheBackoffUpToTheMaximumSilently() {
        var clock = MockClock()
        var machine = Machine(initialBackoff: .milliseconds(50), maxBackoff: .seconds(1))
        var delays: [Duration] = []
        for _ in 0..<8 {
            let action = machine.acceptFailed(now: clock.now)
            guard case .stopAndRetry(let delay) = action.reading else {
                Issue.record("expected a retry, got \(action)")
                return
            }
            if delays.count > 0 { #expect(action.log == nil) }
            delays.append(delay)
            clock.advance(by: delay)
            #expect(machine.retryDue(limitReached: false) == Action(reading: .start))
        }
        #expect(delays == [.milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .seconds(1), .seconds(1), .seconds(1)])
    }

    /// The next accept that succeeds ends the episode with one line saying how long and how many failed.
    @Test func aSuccessfulAcceptReportsTheRecovery() {
        var clock = MockClock()
        var machine = Machine()
        _ = machine.acceptFailed(now: clock.now)
        clock.advance(by: .milliseconds(50))
        _ = machine.retryDue(limitReached: false)
        _ = machine.acceptFailed(now: clock.now)
        clock.advance(by: .milliseconds(100))
        _ = machine.retryDue(limitReached: false)
        #expect(
            machine.accepted(slot: .taken(last: false), now: clock.now)
                == Action(connection: .serve, log: .descriptorsRecovered(after: .milliseconds(150), failedAccepts: 2))
        )
        #expect(machine.failedAccepts == 0)
        // A new episode logs again and starts from the initial backoff.
        #expect(machine.acceptFailed(now: clock.now) == Action(reading: .stopAndRetry(in: .milliseconds(50)), log: .descriptorsExhausted))
    }

    /// A connection closing frees a descriptor: a listener backing off retries at once.
    @Test func aFreedSlotEndsTheBackoffEarly() {
        let clock = MockClock()
        var machine = Machine()
        _ = machine.acceptFailed(now: clock.now)
        #expect(machine.slotFreed(limitReached: false, stillParked: false) == Action(reading: .start))
        // The timer that fires later finds the listener reading and does nothing.
        #expect(machine.retryDue(limitReached: false) == .none)
    }

    /// A retry due while every slot is taken waits for a slot instead.
    @Test func aRetryDueAtTheLimitWaitsForASlot() {
        let clock = MockClock()
        var machine = Machine()
        _ = machine.acceptFailed(now: clock.now)
        #expect(machine.retryDue(limitReached: true) == .none)
        #expect(!machine.isReading)
        #expect(machine.slotFreed(limitReached: false, stillParked: false) == Action(reading: .start))
    }

    /// A listener that freed a reserved descriptor keeps reading (the accept is retried at once).
    @Test func freeingAReservedDescriptorKeepsReading() {
        let clock = MockClock()
        var machine = Machine()
        #expect(machine.acceptFailed(now: clock.now, freedReserve: true) == Action(log: .descriptorsExhausted))
        #expect(machine.isReading)
        #expect(machine.accepted(slot: .taken(last: false), now: clock.now).connection == .serve)
    }

    /// A failure after the limit already stopped reading (later in the same read) schedules no retry.
    @Test func aFailureWhileStoppedAtTheLimitSchedulesNoRetry() {
        let clock = MockClock()
        var machine = Machine()
        _ = machine.accepted(slot: .taken(last: true), now: clock.now)
        #expect(machine.acceptFailed(now: clock.now) == Action(log: .descriptorsExhausted))
        #expect(machine.slotFreed(limitReached: false, stillParked: false) == Action(reading: .start))
    }

    /// Once closed, nothing starts reading again.
    @Test func aClosedListenerNeverResumes() {
        let clock = MockClock()
        var machine = Machine()
        _ = machine.acceptFailed(now: clock.now)
        machine.closed()
        #expect(machine.retryDue(limitReached: false) == .none)
        #expect(machine.slotFreed(limitReached: false, stillParked: false) == .none)
        #expect(machine.acceptFailed(now: clock.now) == .none)
    }

    // MARK: - The automatic limit

    /// auto = (open-file limit − (64 + 4 × threads)) / 2, at least 1, at most 10,000,000.
    @Test func theAutomaticLimitHalvesWhatTheReserveLeaves() {
        #expect(ConnectionLimit.automatic(descriptorLimit: 256, threads: 2) == 92)
        #expect(ConnectionLimit.automatic(descriptorLimit: 1024, threads: 2) == 476)
        #expect(ConnectionLimit.automatic(descriptorLimit: 1_048_576, threads: 2) == 524_252)
        #expect(ConnectionLimit.automatic(descriptorLimit: 64, threads: 2) == 1)
        #expect(ConnectionLimit.automatic(descriptorLimit: Int.max, threads: 2) == 10_000_000)
        #expect(ConnectionLimit.effective(configured: 3, descriptorLimit: 256, threads: 2) == 3)
        #expect(ConnectionLimit.effective(configured: nil, descriptorLimit: 256, threads: 2) == 92)
    }
}
