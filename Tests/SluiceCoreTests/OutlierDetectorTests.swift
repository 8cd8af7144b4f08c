import SluiceCore
import Testing

@Suite struct OutlierDetectorTests {
    typealias Detector = OutlierDetector<String, MockClock.Instant>
    typealias Instant = MockClock.Instant

    let t0 = Instant(offset: .seconds(1000))

    func makeDetector(
        endpoints: [String] = ["a", "b", "c", "d"],
        failures: Int = 3,
        base: Duration = .seconds(10),
        maxEjectedPercent: Int = 50,
        maxEjection: Duration = .seconds(300)
    ) -> Detector {
        var config = OutlierDetection()
        config.consecutiveFailures = failures
        config.baseEjection = base
        config.maxEjectedPercent = maxEjectedPercent
        return Detector(config: config, endpoints: endpoints, maxEjection: maxEjection)
    }

    /// Reports `count` failures of `endpoint` at `now` and returns the last action.
    @discardableResult
    func fail(_ detector: inout Detector, _ endpoint: String, times count: Int, outcome: Detector.RequestOutcome = .reset, now: Instant) -> Detector.RequestFinishedAction {
        var last = Detector.RequestFinishedAction.none
        for _ in 0..<count { last = detector.requestFinished(endpoint, outcome: outcome, now: now) }
        return last
    }

    /// Ejects `endpoint` now, then lets the ejection run out and sweeps; returns the ejection's length.
    func ejectAndWaitOut(_ detector: inout Detector, _ endpoint: String, now: inout Instant) -> Duration? {
        guard case .eject(_, let until) = fail(&detector, endpoint, times: detector.config.consecutiveFailures, now: now) else { return nil }
        let length = now.duration(to: until)
        now = until
        #expect(detector.sweep(now: now) == [.uneject(endpoint)])
        return length
    }

    // MARK: Ejection

    /// `consecutiveFailures` failures in a row eject the endpoint for one base ejection the first time.
    @Test func consecutiveFailuresEjectForOneBaseEjection() {
        var detector = makeDetector()
        #expect(fail(&detector, "a", times: 2, now: t0) == .none)
        #expect(detector.consecutiveFailures(of: "a") == 2)
        #expect(!detector.isEjected("a"))
        #expect(detector.requestFinished("a", outcome: .connectFailed, now: t0) == .eject("a", until: t0 + .seconds(10)))
        #expect(detector.isEjected("a"))
        #expect(detector.ejectedUntil("a") == t0 + .seconds(10))
        #expect(detector.ejected == 1)
        #expect(detector.nextDeadline == t0 + .seconds(10))
    }

    /// Connect errors, resets, timeouts and 5xx count as failures; a response below 500 (a 4xx included) is a success.
    @Test(arguments: [
        (Detector.RequestOutcome.success, false),
        (.connectFailed, true),
        (.reset, true),
        (.timedOut, true),
        (.serverError(status: 500), true),
        (.serverError(status: 503), true),
    ])
    func outcomesThatCountAsFailures(outcome: Detector.RequestOutcome, isFailure: Bool) {
        #expect(outcome.isFailure == isFailure)
        var detector = makeDetector(failures: 1)
        let action = detector.requestFinished("a", outcome: outcome, now: t0)
        #expect(action == (isFailure ? .eject("a", until: t0 + .seconds(10)) : .none))
    }

    /// A success resets the count of failures in a row.
    @Test func aSuccessResetsTheCount() {
        var detector = makeDetector()
        fail(&detector, "a", times: 2, now: t0)
        #expect(detector.requestFinished("a", outcome: .success, now: t0) == .none)
        #expect(detector.consecutiveFailures(of: "a") == 0)
        #expect(fail(&detector, "a", times: 2, now: t0) == .none)
        #expect(!detector.isEjected("a"))
    }

    /// Failures of one endpoint do not count towards another's.
    @Test func countsArePerEndpoint() {
        var detector = makeDetector()
        fail(&detector, "a", times: 2, now: t0)
        fail(&detector, "b", times: 2, now: t0)
        #expect(detector.consecutiveFailures(of: "a") == 2)
        #expect(detector.consecutiveFailures(of: "b") == 2)
        #expect(detector.ejected == 0)
    }

    // MARK: Un-ejection

    /// The sweep brings an endpoint back exactly when its ejection ends, not a moment before.
    @Test func anEndpointIsUnejectedWhenItsTimeIsUp() {
        var detector = makeDetector()
        fail(&detector, "a", times: 3, now: t0)
        #expect(detector.sweep(now: t0 + .seconds(10) - .nanoseconds(1)) == [])
        #expect(detector.isEjected("a"))
        #expect(detector.sweep(now: t0 + .seconds(10)) == [.uneject("a")])
        #expect(!detector.isEjected("a"))
        #expect(detector.ejected == 0)
        #expect(detector.nextDeadline == nil)
        #expect(detector.sweep(now: t0 + .seconds(20)) == [])
    }

    /// Several ejections that ended are un-ejected in the order they ended.
    @Test func aLateSweepUnejectsInTheOrderTheEjectionsEnded() {
        var detector = makeDetector()
        fail(&detector, "b", times: 3, now: t0 + .seconds(1))
        fail(&detector, "a", times: 3, now: t0 + .seconds(2))
        #expect(detector.nextDeadline == t0 + .seconds(11))
        #expect(detector.sweep(now: t0 + .seconds(60)) == [.uneject("b"), .uneject("a")])
    }

    /// An endpoint back from ejection starts with a count of 0: it needs the full run of failures again.
    @Test func anEndpointBackFromEjectionStartsWithCountZero() {
        var detector = makeDetector()
        fail(&detector, "a", times: 3, now: t0)
        _ = detector.sweep(now: t0 + .seconds(10))
        #expect(detector.consecutiveFailures(of: "a") == 0)
        #expect(fail(&detector, "a", times: 2, now: t0 + .seconds(10)) == .none)
        #expect(!detector.isEjected("a"))
    }

    /// Outcomes of requests that were in flight while the endpoint was ejected change nothing.
    @Test func outcomesWhileEjectedAreIgnored() {
        var detector = makeDetector()
        fail(&detector, "a", times: 3, now: t0)
        #expect(fail(&detector, "a", times: 10, now: t0 + .seconds(1)) == .none)
        #expect(detector.requestFinished("a", outcome: .success, now: t0 + .seconds(2)) == .none)
        #expect(detector.ejectedUntil("a") == t0 + .seconds(10))
        _ = detector.sweep(now: t0 + .seconds(10))
        #expect(detector.consecutiveFailures(of: "a") == 0)
    }

    // MARK: Ejection length

    /// Each ejection lasts one base longer than the last: base × the number of ejections so far.
    @Test func ejectionsGrowByOneBaseEachTime() {
        var detector = makeDetector()
        var now = t0
        #expect(ejectAndWaitOut(&detector, "a", now: &now) == .seconds(10))
        #expect(ejectAndWaitOut(&detector, "a", now: &now) == .seconds(20))
        #expect(ejectAndWaitOut(&detector, "a", now: &now) == .seconds(30))
        #expect(detector.ejections(of: "a", now: now) == 3)
    }

    /// An ejection never lasts longer than `maxEjection` (Envoy's max_ejection_time), however many came before.
    @Test func ejectionLengthIsCappedAtMaxEjection() {
        var detector = makeDetector(base: .seconds(100), maxEjection: .seconds(250))
        var now = t0
        var lengths: [Duration?] = []
        for _ in 0..<5 { lengths.append(ejectAndWaitOut(&detector, "a", now: &now)) }
        #expect(lengths == [.seconds(100), .seconds(200), .seconds(250), .seconds(250), .seconds(250)])
        // The multiplier stops at the cap, so decay starts from there (3 = ⌈250/100⌉).
        #expect(detector.ejections(of: "a", now: now) == 3)
    }

    /// The default cap is 300 s: with the default 30 s base, the 10th ejection and later last 300 s.
    @Test func theDefaultCapIsThreeHundredSeconds() {
        var detector = Detector(config: OutlierDetection(), endpoints: ["a", "b"])
        #expect(detector.maxEjection == .seconds(300))
        var now = t0
        var lengths: [Duration?] = []
        for _ in 0..<12 { lengths.append(ejectAndWaitOut(&detector, "a", now: &now)) }
        #expect(lengths.prefix(3) == [.seconds(30), .seconds(60), .seconds(90)])
        #expect(lengths.suffix(3) == [.seconds(300), .seconds(300), .seconds(300)])
    }

    /// A cap below the base ejection is raised to it: an ejection lasts at least one base.
    @Test func aCapBelowTheBaseIsRaisedToTheBase() {
        let detector = makeDetector(base: .seconds(60), maxEjection: .seconds(10))
        #expect(detector.maxEjection == .seconds(60))
    }

    /// The multiplier decays by one per whole base period spent un-ejected, so an endpoint that
    /// behaved for a while is ejected briefly again, and one that fails soon after coming back for longer.
    @Test func theMultiplierDecaysOncePerCleanBasePeriod() {
        var detector = makeDetector()
        var now = t0
        _ = ejectAndWaitOut(&detector, "a", now: &now)  // 10 s
        _ = ejectAndWaitOut(&detector, "a", now: &now)  // 20 s
        _ = ejectAndWaitOut(&detector, "a", now: &now)  // 30 s
        #expect(detector.ejections(of: "a", now: now) == 3)
        #expect(detector.ejections(of: "a", now: now + .seconds(9)) == 3)
        #expect(detector.ejections(of: "a", now: now + .seconds(10)) == 2)
        #expect(detector.ejections(of: "a", now: now + .seconds(25)) == 1)
        #expect(detector.ejections(of: "a", now: now + .seconds(3600)) == 0)
        // Failing 15 s after coming back: one period decayed (3 → 2), so this ejection lasts 3 bases.
        now = now + .seconds(15)
        guard case .eject(_, let until) = fail(&detector, "a", times: 3, now: now) else {
            Issue.record("a is ejected")
            return
        }
        #expect(now.duration(to: until) == .seconds(30))
        // After a long clean spell it starts over at one base.
        now = until
        _ = detector.sweep(now: now)
        now = now + .seconds(3600)
        #expect(ejectAndWaitOut(&detector, "a", now: &now) == .seconds(10))
    }

    /// Decay counts from the end of the ejection, not from a late sweep.
    @Test func decayCountsFromTheEndOfTheEjection() {
        var detector = makeDetector()
        fail(&detector, "a", times: 3, now: t0)
        _ = detector.sweep(now: t0 + .seconds(19))  // ended at t0+10 s, swept 9 s late
        #expect(detector.ejections(of: "a", now: t0 + .seconds(20)) == 0)
    }

    // MARK: The max-ejected cap

    /// No more than `maxEjectedPercent` of the group is ejected at once; the refused ejection is
    /// reported once per run of failures, and happens on the next failure once there is room.
    @Test func theMaxEjectedCapRefusesAndReportsOnce() {
        var detector = makeDetector(endpoints: ["a", "b", "c", "d"], maxEjectedPercent: 50)
        #expect(detector.ejectionLimit == 2)
        fail(&detector, "a", times: 3, now: t0)
        fail(&detector, "b", times: 3, now: t0 + .seconds(1))
        #expect(fail(&detector, "c", times: 3, now: t0 + .seconds(2)) == .ejectionRefused("c", ejected: 2, limit: 2))
        #expect(detector.requestFinished("c", outcome: .reset, now: t0 + .seconds(3)) == .none)
        #expect(!detector.isEjected("c"))
        #expect(detector.sweep(now: t0 + .seconds(10)) == [.uneject("a")])
        #expect(detector.requestFinished("c", outcome: .reset, now: t0 + .seconds(10)) == .eject("c", until: t0 + .seconds(20)))
        #expect(detector.ejected == 2)
    }

    /// After a success, a new run of failures that meets the cap is reported again.
    @Test func aRefusalIsReportedAgainAfterASuccess() {
        var detector = makeDetector(endpoints: ["a", "b", "c"], maxEjectedPercent: 10)
        fail(&detector, "a", times: 3, now: t0)
        #expect(fail(&detector, "b", times: 3, now: t0) == .ejectionRefused("b", ejected: 1, limit: 1))
        _ = detector.requestFinished("b", outcome: .success, now: t0)
        #expect(fail(&detector, "b", times: 2, now: t0) == .none)
        #expect(detector.requestFinished("b", outcome: .reset, now: t0) == .ejectionRefused("b", ejected: 1, limit: 1))
    }

    /// The limit is the percentage of the group rounded down, at least one with two or more endpoints, none with one.
    @Test(arguments: [
        (1, 50, 0), (1, 100, 0),
        (2, 50, 1), (2, 10, 1), (2, 0, 1), (2, 100, 2),
        (3, 50, 1), (4, 50, 2), (10, 10, 1), (10, 35, 3), (20, 10, 2),
    ])
    func theEjectionLimitForAGroupSize(endpoints: Int, percent: Int, limit: Int) {
        let detector = makeDetector(endpoints: (0..<endpoints).map { "e\($0)" }, maxEjectedPercent: percent)
        #expect(detector.ejectionLimit == limit)
    }

    /// A group of one endpoint never ejects it (the balancer's panic mode would use it anyway), and says nothing about it.
    @Test func aLoneEndpointIsNeverEjected() {
        var detector = makeDetector(endpoints: ["a"], maxEjectedPercent: 100)
        #expect(fail(&detector, "a", times: 50, now: t0) == .none)
        #expect(!detector.isEjected("a"))
        #expect(detector.ejected == 0)
    }

    /// A group of two ejects one endpoint, even at a low percentage, but never both.
    @Test func aTwoEndpointGroupEjectsOneButNotBoth() {
        var detector = makeDetector(endpoints: ["a", "b"], maxEjectedPercent: 10)
        #expect(fail(&detector, "a", times: 3, now: t0) == .eject("a", until: t0 + .seconds(10)))
        #expect(fail(&detector, "b", times: 3, now: t0) == .ejectionRefused("b", ejected: 1, limit: 1))
        #expect(!detector.isEjected("b"))
    }

    // MARK: Endpoints coming and going

    /// A removed endpoint is forgotten: its ejection no longer counts against the cap, its outcomes are ignored.
    @Test func removingAnEjectedEndpointFreesTheCap() {
        var detector = makeDetector(endpoints: ["a", "b", "c"], maxEjectedPercent: 10)
        fail(&detector, "a", times: 3, now: t0)
        detector.endpointRemoved("a")
        #expect(detector.ejected == 0)
        #expect(detector.nextDeadline == nil)
        #expect(detector.requestFinished("a", outcome: .reset, now: t0) == .none)
        #expect(fail(&detector, "b", times: 3, now: t0) == .eject("b", until: t0 + .seconds(10)))
    }

    /// Adding endpoints keeps the others' counts and ejections; a removed endpoint that comes back starts afresh.
    @Test func addingEndpointsKeepsTheOthersState() {
        var detector = makeDetector(endpoints: ["a", "b"])
        fail(&detector, "a", times: 3, now: t0)
        fail(&detector, "b", times: 2, now: t0)
        detector.endpointAdded("c")
        detector.endpointAdded("a")
        #expect(detector.isEjected("a"))
        #expect(detector.consecutiveFailures(of: "b") == 2)
        detector.endpointRemoved("b")
        detector.endpointAdded("b")
        #expect(detector.consecutiveFailures(of: "b") == 0)
    }

    /// Removing endpoints lowers the cap but does not un-eject anyone early.
    @Test func shrinkingTheGroupUnejectsNoOneEarly() {
        var detector = makeDetector(endpoints: ["a", "b", "c", "d"], maxEjectedPercent: 50)
        fail(&detector, "a", times: 3, now: t0)
        fail(&detector, "b", times: 3, now: t0)
        detector.endpointRemoved("c")
        detector.endpointRemoved("d")
        #expect(detector.ejectionLimit == 1)
        #expect(detector.ejected == 2)
        #expect(detector.isEjected("a") && detector.isEjected("b"))
        let unejected = detector.sweep(now: t0 + .seconds(10))
        #expect(unejected.count == 2 && unejected.contains(.uneject("a")) && unejected.contains(.uneject("b")))
        #expect(detector.ejected == 0)
    }
}
