import SluiceCore
import Testing

@Suite struct HealthCheckStateMachineTests {
    typealias Machine = HealthCheckStateMachine<String, MockClock.Instant>
    typealias Instant = MockClock.Instant

    static func config(healthyAfter: Int = 2, unhealthyAfter: Int = 3) -> HealthCheck {
        var check = HealthCheck()
        check.interval = .seconds(2)
        check.timeout = .seconds(1)
        check.healthyAfter = healthyAfter
        check.unhealthyAfter = unhealthyAfter
        check.expect = 200...399
        return check
    }

    /// A group's machine, its clock, a seeded RNG, and the endpoints added at the start.
    struct Harness {
        var machine: Machine
        var clock = MockClock(now: Instant(offset: .seconds(1000)))
        var rng = SplitMix64(seed: 42)

        init(_ check: HealthCheck = HealthCheckStateMachineTests.config(), endpoints: [String] = ["a"]) {
            self.machine = Machine(check: check)
            for endpoint in endpoints {
                _ = self.machine.endpointAdded(endpoint, now: self.clock.now, using: &self.rng)
            }
        }

        /// Moves the clock to the endpoint's next check, starts it and returns its id (other
        /// endpoints' actions are dropped: use it with one endpoint in play).
        mutating func startCheck(_ endpoint: String) -> Machine.CheckID {
            while self.machine.checkInFlight(for: endpoint) == nil {
                self.clock.now = self.machine.nextDeadline!
                _ = self.machine.tick(now: self.clock.now, using: &self.rng)
            }
            return self.machine.checkInFlight(for: endpoint)!
        }

        /// Runs one whole check of the endpoint that ends with `result` a little later.
        mutating func check(_ endpoint: String, _ result: Machine.CheckResult) -> Machine.CheckCompletedAction {
            let id = self.startCheck(endpoint)
            self.clock.advance(by: .milliseconds(10))
            return self.machine.checkCompleted(id, result: result, now: self.clock.now, using: &self.rng)
        }
    }

    // MARK: Scheduling

    /// The first checks of endpoints added together spread over one interval instead of firing together.
    @Test func firstChecksOfManyEndpointsSpreadOverOneInterval() {
        var machine = Machine(check: Self.config())
        var rng = SplitMix64(seed: 7)
        let t0 = Instant(offset: .seconds(50))
        var firsts: [Instant] = []
        for index in 0..<50 {
            guard case .added(let first) = machine.endpointAdded("e\(index)", now: t0, using: &rng) else {
                Issue.record("e\(index) was new")
                return
            }
            #expect(first >= t0 && first < t0 + .seconds(2))
            firsts.append(first)
        }
        #expect(Set(firsts.map(\.offset)).count == 50)
        #expect(firsts.contains { $0 < t0 + .seconds(1) } && firsts.contains { $0 >= t0 + .seconds(1) })
        #expect(machine.nextDeadline == firsts.min())
    }

    /// After each result the next check is due one interval later, ±10%, and both sides of the interval occur.
    @Test func nextCheckIsDueOneIntervalLaterWithinTenPercentJitter() {
        var harness = Harness()
        var gaps: [Duration] = []
        for _ in 0..<200 {
            _ = harness.check("a", .response(status: 200))
            let completedAt = harness.clock.now
            gaps.append(completedAt.duration(to: harness.machine.nextDeadline!))
        }
        #expect(gaps.allSatisfy { $0 >= .milliseconds(1800) && $0 <= .milliseconds(2200) })
        #expect(gaps.contains { $0 < .milliseconds(1900) } && gaps.contains { $0 > .milliseconds(2100) })
    }

    /// Ticking before anything is due does nothing; at the due instant exactly one check starts,
    /// with the timeout as its deadline.
    @Test func aCheckStartsWhenDueWithTheTimeoutAsDeadline() {
        var harness = Harness()
        let due = harness.machine.nextDeadline!
        #expect(harness.machine.tick(now: due - .nanoseconds(1), using: &harness.rng) == [])
        let actions = harness.machine.tick(now: due, using: &harness.rng)
        guard case .startCheck(let start) = actions.first, actions.count == 1 else {
            Issue.record("expected one check to start, got \(actions)")
            return
        }
        #expect(start.endpoint == "a")
        #expect(start.deadline == due + .seconds(1))
        #expect(harness.machine.checkInFlight(for: "a") == start.id)
        #expect(harness.machine.nextDeadline == start.deadline)
    }

    /// While a check is in flight no second one starts for the endpoint, however often the timer fires.
    @Test func atMostOneCheckInFlightPerEndpoint() {
        var harness = Harness()
        let id = harness.startCheck("a")
        for step in 1...9 {
            let actions = harness.machine.tick(now: harness.clock.now + .milliseconds(100 * step), using: &harness.rng)
            #expect(actions == [])
        }
        #expect(harness.machine.checkInFlight(for: "a") == id)
    }

    // MARK: Verdicts from unknown

    /// A new endpoint is unknown: available, but not a confirmed healthy endpoint for `ready-requires`.
    @Test func aNewEndpointIsUnknownAndNotConfirmed() {
        let harness = Harness()
        #expect(harness.machine.health(of: "a") == .unknown)
        #expect(!harness.machine.hasHealthyEndpoint)
        #expect(harness.machine.health(of: "b") == nil)
    }

    /// From unknown, one pass is enough to be healthy (as Envoy at start-up), so readiness waits about one interval.
    @Test func anUnknownEndpointIsHealthyAfterItsFirstPass() {
        var harness = Harness(Self.config(healthyAfter: 3))
        #expect(harness.check("a", .response(status: 204)) == .healthChanged(.becameHealthy("a")))
        #expect(harness.machine.health(of: "a") == .healthy)
        #expect(harness.machine.hasHealthyEndpoint)
    }

    /// From unknown, one failure is enough to be unhealthy (as HAProxy's start state): never seen working, no benefit of the doubt.
    @Test func anUnknownEndpointIsUnhealthyAfterItsFirstFailure() {
        var harness = Harness(Self.config(unhealthyAfter: 5))
        #expect(harness.check("a", .connectFailed("connection refused")) == .healthChanged(.becameUnhealthy("a", reason: .connectFailed("connection refused"))))
        #expect(harness.machine.health(of: "a") == .unhealthy)
        #expect(!harness.machine.hasHealthyEndpoint)
    }

    // MARK: Thresholds

    /// A healthy endpoint becomes unhealthy only after `unhealthyAfter` failures in a row, the last failure being the reason.
    @Test func aHealthyEndpointFallsAfterUnhealthyAfterFailuresInARow() {
        var harness = Harness(Self.config(unhealthyAfter: 3))
        _ = harness.check("a", .response(status: 200))
        #expect(harness.check("a", .response(status: 500)) == .recorded)
        #expect(harness.check("a", .failed("connection reset")) == .recorded)
        #expect(harness.machine.health(of: "a") == .healthy)
        #expect(harness.check("a", .response(status: 503)) == .healthChanged(.becameUnhealthy("a", reason: .unexpectedStatus(503))))
        #expect(harness.machine.health(of: "a") == .unhealthy)
    }

    /// A pass between failures starts the count of failures over.
    @Test func aPassBetweenFailuresResetsTheFailureCount() {
        var harness = Harness(Self.config(unhealthyAfter: 3))
        _ = harness.check("a", .response(status: 200))
        _ = harness.check("a", .response(status: 500))
        _ = harness.check("a", .response(status: 500))
        #expect(harness.check("a", .response(status: 200)) == .recorded)
        #expect(harness.check("a", .response(status: 500)) == .recorded)
        #expect(harness.check("a", .response(status: 500)) == .recorded)
        #expect(harness.machine.health(of: "a") == .healthy)
    }

    /// An unhealthy endpoint comes back only after `healthyAfter` passes in a row; a failure between them starts over.
    @Test func anUnhealthyEndpointRecoversAfterHealthyAfterPassesInARow() {
        var harness = Harness(Self.config(healthyAfter: 3))
        _ = harness.check("a", .response(status: 500))
        #expect(harness.machine.health(of: "a") == .unhealthy)
        #expect(harness.check("a", .response(status: 200)) == .recorded)
        #expect(harness.check("a", .response(status: 200)) == .recorded)
        #expect(harness.check("a", .response(status: 404)) == .recorded)
        #expect(harness.check("a", .response(status: 200)) == .recorded)
        #expect(harness.check("a", .response(status: 200)) == .recorded)
        #expect(harness.check("a", .response(status: 399)) == .healthChanged(.becameHealthy("a")))
        #expect(harness.machine.health(of: "a") == .healthy)
    }

    /// A status passes exactly when it is in `expect`; a connect error and any other failure fail with their reason.
    @Test(arguments: [
        (Machine.CheckResult.response(status: 200), nil),
        (.response(status: 399), nil),
        (.response(status: 199), Machine.CheckFailure.unexpectedStatus(199)),
        (.response(status: 400), .unexpectedStatus(400)),
        (.response(status: 502), .unexpectedStatus(502)),
        (.connectFailed("refused"), .connectFailed("refused")),
        (.failed("reset"), .failed("reset")),
    ])
    func aResultPassesOnlyWithAnExpectedStatus(result: Machine.CheckResult, failure: Machine.CheckFailure?) {
        var harness = Harness()
        let expected: Machine.CheckCompletedAction =
            if let failure { .healthChanged(.becameUnhealthy("a", reason: failure)) } else { .healthChanged(.becameHealthy("a")) }
        #expect(harness.check("a", result) == expected)
    }

    // MARK: Timeouts and superseded results

    /// A check without an answer by its deadline is cancelled and counts as a failure; its late result is ignored.
    @Test func aTimedOutCheckFailsAndItsLateResultIsIgnored() {
        var harness = Harness()
        let id = harness.startCheck("a")
        let deadline = harness.machine.nextDeadline!
        #expect(deadline == harness.clock.now + .seconds(1))
        let actions = harness.machine.tick(now: deadline, using: &harness.rng)
        #expect(actions == [.cancelCheck(id), .healthChanged(.becameUnhealthy("a", reason: .timedOut(.seconds(1))))])
        #expect(harness.machine.checkInFlight(for: "a") == nil)
        #expect(harness.machine.checkCompleted(id, result: .response(status: 200), now: deadline + .milliseconds(5), using: &harness.rng) == .ignored)
        #expect(harness.machine.health(of: "a") == .unhealthy)
        // The next check is scheduled one (jittered) interval after the timeout.
        let next = harness.machine.nextDeadline!
        #expect(next >= deadline + .milliseconds(1800) && next <= deadline + .milliseconds(2200))
    }

    /// A timeout that does not cross the threshold cancels the check without a health change.
    @Test func aTimeoutBelowTheThresholdIsOnlyCancelled() {
        var harness = Harness()
        _ = harness.check("a", .response(status: 200))
        let id = harness.startCheck("a")
        #expect(harness.machine.tick(now: harness.machine.nextDeadline!, using: &harness.rng) == [.cancelCheck(id)])
        #expect(harness.machine.health(of: "a") == .healthy)
    }

    /// A result for a check that was never started, or already answered, is ignored.
    @Test func aResultForACheckNotInFlightIsIgnored() {
        var harness = Harness()
        let id = harness.startCheck("a")
        #expect(harness.machine.checkCompleted(id, result: .response(status: 200), now: harness.clock.now, using: &harness.rng) == .healthChanged(.becameHealthy("a")))
        #expect(harness.machine.checkCompleted(id, result: .response(status: 500), now: harness.clock.now, using: &harness.rng) == .ignored)
        #expect(harness.machine.checkCompleted(Machine.CheckID(rawValue: 999), result: .response(status: 500), now: harness.clock.now, using: &harness.rng) == .ignored)
        #expect(harness.machine.health(of: "a") == .healthy)
    }

    // MARK: Adding and removing endpoints

    /// Removing an endpoint with a check in flight cancels the check, and the check's result is ignored.
    @Test func removingAnEndpointSupersedesItsCheckInFlight() {
        var harness = Harness()
        let id = harness.startCheck("a")
        #expect(harness.machine.endpointRemoved("a") == .cancelCheck(id))
        #expect(harness.machine.checkCompleted(id, result: .response(status: 200), now: harness.clock.now, using: &harness.rng) == .ignored)
        #expect(harness.machine.health(of: "a") == nil)
        #expect(harness.machine.nextDeadline == nil)
        #expect(harness.machine.endpointRemoved("a") == .unknownEndpoint)
    }

    /// Removing an endpoint between checks just forgets it; added again, it starts over as unknown.
    @Test func aRemovedEndpointThatComesBackStartsOverAsUnknown() {
        var harness = Harness()
        _ = harness.check("a", .response(status: 200))
        #expect(harness.machine.endpointRemoved("a") == .removed)
        guard case .added = harness.machine.endpointAdded("a", now: harness.clock.now, using: &harness.rng) else {
            Issue.record("a was forgotten, so it is new again")
            return
        }
        #expect(harness.machine.health(of: "a") == .unknown)
    }

    /// Adding and removing endpoints (a reload, a DNS answer) keeps the state and the check in flight of the others.
    @Test func addingAndRemovingEndpointsKeepsTheOthersState() {
        var harness = Harness(endpoints: ["a"])
        _ = harness.check("a", .response(status: 200))
        let inFlight = harness.startCheck("a")
        #expect(harness.machine.endpointAdded("a", now: harness.clock.now, using: &harness.rng) == .alreadyKnown)
        guard case .added = harness.machine.endpointAdded("b", now: harness.clock.now, using: &harness.rng) else {
            Issue.record("b is new")
            return
        }
        #expect(harness.machine.endpointRemoved("b") == .removed)
        #expect(harness.machine.health(of: "a") == .healthy)
        #expect(harness.machine.checkInFlight(for: "a") == inFlight)
        #expect(harness.machine.checkCompleted(inFlight, result: .response(status: 200), now: harness.clock.now, using: &harness.rng) == .recorded)
    }

    /// Several endpoints are checked independently; the group has a confirmed healthy endpoint once any passed, and the counts add up.
    @Test func endpointsAreJudgedIndependently() {
        var harness = Harness(endpoints: ["a", "b", "c"])
        // One interval on, every first check is due: one tick starts them all.
        harness.clock.advance(by: .seconds(2))
        var started: [String: Machine.CheckID] = [:]
        for action in harness.machine.tick(now: harness.clock.now, using: &harness.rng) {
            guard case .startCheck(let start) = action else {
                Issue.record("only starts expected, got \(action)")
                continue
            }
            started[start.endpoint] = start.id
        }
        #expect(started.count == 3)
        let now = harness.clock.now
        #expect(harness.machine.counts() == (unknown: 3, healthy: 0, unhealthy: 0))
        #expect(harness.machine.checkCompleted(started["a"]!, result: .response(status: 200), now: now, using: &harness.rng) == .healthChanged(.becameHealthy("a")))
        #expect(harness.machine.checkCompleted(started["b"]!, result: .response(status: 500), now: now, using: &harness.rng) == .healthChanged(.becameUnhealthy("b", reason: .unexpectedStatus(500))))
        #expect(harness.machine.counts() == (unknown: 1, healthy: 1, unhealthy: 1))
        #expect(harness.machine.hasHealthyEndpoint)
        #expect(harness.machine.health(of: "c") == .unknown)
    }
}

@Suite struct EndpointAvailabilityTests {
    /// Unhealthy or ejected endpoints are out; unknown, healthy and unchecked ones are in.
    @Test(arguments: [
        (EndpointHealth?.none, false, true),
        (.unknown, false, true),
        (.healthy, false, true),
        (.unhealthy, false, false),
        (.none, true, false),
        (.unknown, true, false),
        (.healthy, true, false),
        (.unhealthy, true, false),
    ])
    func anEndpointIsAvailableWhenNotUnhealthyAndNotEjected(health: EndpointHealth?, ejected: Bool, available: Bool) {
        #expect(EndpointAvailability.isAvailable(health: health, ejected: ejected) == available)
    }

    /// The list follows the balancer's endpoint order, combining the group's two machines (either may be absent).
    @Test func theListCombinesHealthAndEjectionInEndpointOrder() {
        var rng = SplitMix64(seed: 1)
        let now = MockClock.Instant(offset: .zero)
        var check = HealthCheck()
        check.unhealthyAfter = 1
        var health = HealthCheckStateMachine<String, MockClock.Instant>(check: check)
        for endpoint in ["a", "b", "c"] { _ = health.endpointAdded(endpoint, now: now, using: &rng) }
        // Run every first check: b fails.
        let later = now + .seconds(5)
        for action in health.tick(now: later, using: &rng) {
            guard case .startCheck(let start) = action else { continue }
            _ = health.checkCompleted(start.id, result: .response(status: start.endpoint == "b" ? 500 : 200), now: later, using: &rng)
        }
        var outlierConfig = OutlierDetection()
        outlierConfig.consecutiveFailures = 1
        var outliers = OutlierDetector<String, MockClock.Instant>(config: outlierConfig, endpoints: ["a", "b", "c"])
        _ = outliers.requestFinished("c", outcome: .reset, now: later)

        #expect(EndpointAvailability.list(["a", "b", "c"], health: health, outliers: outliers) == [true, false, false])
        #expect(EndpointAvailability.list(["c", "b", "a"], health: health, outliers: nil) == [true, false, true])
        #expect(EndpointAvailability.list(["a", "b", "c"], health: nil, outliers: outliers) == [true, true, false])
        #expect(EndpointAvailability.list(["a", "b", "c"], health: nil as HealthCheckStateMachine<String, MockClock.Instant>?, outliers: nil) == [true, true, true])
        #expect(EndpointAvailability.list(["a", "b", "c", "d"], health: ["a": .healthy, "b": .unhealthy, "d": .unknown], ejected: ["c"]) == [true, false, false, true])
    }
}
