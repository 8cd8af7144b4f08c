/// What active health checks know of an endpoint, as published to every loop and `/status`.
public enum EndpointHealth: String, Sendable, Hashable, CustomStringConvertible {
    /// Not checked yet (just added, at start-up or by a reload or a DNS answer). Counts as available,
    /// so that a start or a reload does not answer 503 to everything while the first checks run;
    /// it does not count as confirmed for `ready-requires`.
    case unknown
    /// Passed its checks: available, and confirmed for `ready-requires`.
    case healthy
    /// Failed its checks: the balancer skips it (unless every endpoint is out: its panic mode).
    case unhealthy

    public var description: String { self.rawValue }
}

/// Active health checks for the endpoints of one group (`health:`): when each endpoint's next
/// check is due, what a check's result means, and when an endpoint's health changes.
///
/// Pure: it names checks by ``CheckID`` and returns actions; the group's health-check executor (on
/// one event loop) sends `GET path`, cancels what timed out, and logs, counts and publishes the
/// changes. One machine serves a whole group, so that adding and removing endpoints (reload, DNS
/// re-resolution) keeps the others' state and `ready-requires` has one place to ask.
///
/// 1. ``endpointAdded(_:now:using:)`` starts an endpoint at ``EndpointHealth/unknown`` with its
///    first check at a random offset within one interval, so the checks of many endpoints (and of
///    many Sluice processes started together) do not align.
/// 2. ``tick(now:using:)`` starts the checks that are due and times out those whose response head
///    did not arrive within `timeout`. At most one check per endpoint is in flight.
/// 3. ``checkCompleted(_:result:now:using:)`` judges a result: a status in `expect` passes; any
///    other status, a connect error or any other failure fails. The next check is due one
///    interval later, jittered by ±``jitterPercent``%. A result for a check that is no longer in
///    flight (timed out, or its endpoint removed) is ignored.
/// 4. Thresholds: `healthyAfter` passes in a row make an unhealthy endpoint healthy,
///    `unhealthyAfter` failures in a row make a healthy one unhealthy. An ``EndpointHealth/unknown``
///    endpoint takes the first verdict at once: one pass makes it healthy, one failure unhealthy.
///    This sits between Envoy (a new host fails until its first check passes, and one pass is
///    enough at start-up) and HAProxy (a server starts up, but on the edge: one failed check takes
///    it down). Unknown counts as available so a reload never empties a group, but an endpoint
///    that was never seen working gets no benefit of the doubt past its first check, and a single
///    pass suffices for readiness so `ready-requires` waits about one interval, not
///    `healthyAfter` of them.
/// 5. ``endpointRemoved(_:)`` forgets an endpoint; its check in flight, if any, is cancelled.
///
/// ```swift
/// var health = HealthCheckStateMachine<HostPort, MonotonicInstant>(check: group.health!)
/// _ = health.endpointAdded(endpoint, now: now, using: &rng)
/// for action in health.tick(now: now, using: &rng) { run(action) }        // when nextDeadline passes
/// switch health.checkCompleted(id, result: .response(status: 200), now: now, using: &rng) { … }
/// ```
///
/// `Endpoint` is the executor's stable key for an endpoint (a resolved `HostPort`, say): an endpoint
/// that stays across a reload or a DNS answer must keep its key.
public struct HealthCheckStateMachine<Endpoint: Hashable & Sendable, Instant: InstantProtocol>: Sendable
where Instant.Duration == Duration {
    /// Names one check, so that a late result is matched to the check it answers (or ignored).
    public struct CheckID: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public var description: String { "check#\(self.rawValue)" }
    }

    /// What a check found, as the executor saw it.
    public enum CheckResult: Equatable, Sendable {
        /// A response head with this status arrived within `timeout`.
        case response(status: Int)
        /// No connection could be made (refused, unreachable, TLS handshake failed).
        case connectFailed(String)
        /// The connection failed after it was made (reset, closed, invalid response).
        case failed(String)
    }

    /// Why a check failed: the reason an endpoint became unhealthy.
    public enum CheckFailure: Equatable, Sendable, CustomStringConvertible {
        /// No response head within `timeout`.
        case timedOut(Duration)
        /// The executor could not connect.
        case connectFailed(String)
        /// The connection failed after it was made.
        case failed(String)
        /// A status outside `expect`.
        case unexpectedStatus(Int)

        public var description: String {
            switch self {
            case .timedOut(let timeout): "no response head within \(timeout)"
            case .connectFailed(let detail): "connect failed: \(detail)"
            case .failed(let detail): "check failed: \(detail)"
            case .unexpectedStatus(let status): "unexpected status \(status)"
            }
        }
    }

    /// A change of an endpoint's health, for the executor to log, count and publish.
    public enum HealthChange: Equatable, Sendable {
        /// The endpoint passed `healthyAfter` checks in a row (one, when it was unknown).
        case becameHealthy(Endpoint)
        /// The endpoint failed `unhealthyAfter` checks in a row (one, when it was unknown); the last
        /// failure is the reason.
        case becameUnhealthy(Endpoint, reason: CheckFailure)
    }

    /// A check the executor is to send now: `GET path` on `endpoint`.
    public struct CheckStart: Equatable, Sendable {
        public var endpoint: Endpoint
        public var id: CheckID
        /// The machine times the check out at this instant (``tick(now:using:)``); the executor may
        /// use it for its own connect and read timeouts.
        public var deadline: Instant
    }

    public enum EndpointAddedAction: Equatable, Sendable {
        /// The endpoint is new: it is ``EndpointHealth/unknown`` and its first check is due at `firstCheck`.
        case added(firstCheck: Instant)
        /// The endpoint was known already: its state is kept.
        case alreadyKnown
    }

    public enum EndpointRemovedAction: Equatable, Sendable {
        /// The endpoint is forgotten; it had this check in flight, which the executor may cancel
        /// (its result would be ignored anyway).
        case cancelCheck(CheckID)
        /// The endpoint is forgotten; no check was in flight.
        case removed
        /// The endpoint was not known: nothing to do.
        case unknownEndpoint
    }

    public enum TickAction: Equatable, Sendable {
        /// Send this check.
        case startCheck(CheckStart)
        /// This check timed out: cancel its I/O (a late result is ignored). It counted as a failure.
        case cancelCheck(CheckID)
        /// A timeout changed an endpoint's health.
        case healthChanged(HealthChange)
    }

    public enum CheckCompletedAction: Equatable, Sendable {
        /// The result was counted; the endpoint's health did not change.
        case recorded
        /// The result changed the endpoint's health.
        case healthChanged(HealthChange)
        /// The check is no longer in flight (it timed out, or its endpoint was removed): ignored.
        case ignored
    }

    /// Where an endpoint's check cycle is.
    private enum CheckState: Sendable {
        /// No check in flight; the next one is due at this instant.
        /// Valid transitions: `.inFlight` (``tick(now:using:)`` at or after the instant).
        case waiting(due: Instant)
        /// A check was started and has not answered; it times out at `deadline`.
        /// Valid transitions: `.waiting` (its result, or its timeout).
        case inFlight(CheckID, deadline: Instant)
    }

    private struct EndpointState: Sendable {
        var health: EndpointHealth = .unknown
        /// Passes in a row since the last failure.
        var passes = 0
        /// Failures in a row since the last pass.
        var failures = 0
        var check: CheckState
    }

    /// The spread of the interval between two checks of one endpoint, in percent either way.
    public static var jitterPercent: Int { 10 }

    public let check: HealthCheck
    private var endpoints: [Endpoint: EndpointState] = [:]
    private var nextCheckID: UInt64 = 1

    public init(check: HealthCheck) {
        precondition(check.healthyAfter >= 1 && check.unhealthyAfter >= 1, "validation requires thresholds of at least 1")
        precondition(check.interval > .zero && check.timeout > .zero, "validation requires a positive interval and timeout")
        self.check = check
    }

    // MARK: Endpoints

    /// An endpoint joined the group (start-up, reload, DNS answer).
    public mutating func endpointAdded(_ endpoint: Endpoint, now: Instant, using rng: inout some RandomNumberGenerator) -> EndpointAddedAction {
        guard self.endpoints[endpoint] == nil else { return .alreadyKnown }
        // Anywhere within the first interval: endpoints added together spread their checks.
        let offset = Int64.random(in: 0..<max(1, self.check.interval.nanosecondsClamped), using: &rng)
        let due = now.advanced(by: .nanoseconds(offset))
        self.endpoints[endpoint] = EndpointState(check: .waiting(due: due))
        return .added(firstCheck: due)
    }

    /// An endpoint left the group; its state is forgotten (it starts over as unknown if it comes back).
    public mutating func endpointRemoved(_ endpoint: Endpoint) -> EndpointRemovedAction {
        guard let state = self.endpoints.removeValue(forKey: endpoint) else { return .unknownEndpoint }
        switch state.check {
        case .waiting: return .removed
        case .inFlight(let id, _): return .cancelCheck(id)
        }
    }

    // MARK: Checks

    /// Starts the checks that are due and times out those past their deadline. Call it when
    /// ``nextDeadline`` passes (or more often: it does nothing before then).
    public mutating func tick(now: Instant, using rng: inout some RandomNumberGenerator) -> [TickAction] {
        var actions: [TickAction] = []
        // Sorted so the actions come in a stable order whatever the dictionary's.
        let due = self.endpoints.compactMap { endpoint, state -> (Endpoint, Instant)? in
            switch state.check {
            case .waiting(let due): due <= now ? (endpoint, due) : nil
            case .inFlight(_, let deadline): deadline <= now ? (endpoint, deadline) : nil
            }
        }.sorted { $0.1 < $1.1 }
        for (endpoint, _) in due {
            guard let state = self.endpoints[endpoint] else { continue }
            switch state.check {
            case .waiting:
                let id = CheckID(rawValue: self.nextCheckID)
                self.nextCheckID += 1
                let deadline = now.advanced(by: self.check.timeout)
                self.endpoints[endpoint]?.check = .inFlight(id, deadline: deadline)
                actions.append(.startCheck(CheckStart(endpoint: endpoint, id: id, deadline: deadline)))
            case .inFlight(let id, _):
                actions.append(.cancelCheck(id))
                if let change = self.record(.failure(.timedOut(self.check.timeout)), for: endpoint, now: now, using: &rng) {
                    actions.append(.healthChanged(change))
                }
            }
        }
        return actions
    }

    /// A check answered. Results of checks no longer in flight are ignored.
    public mutating func checkCompleted(
        _ id: CheckID,
        result: CheckResult,
        now: Instant,
        using rng: inout some RandomNumberGenerator
    ) -> CheckCompletedAction {
        guard let endpoint = self.endpoint(checking: id) else { return .ignored }
        let verdict: Verdict
        switch result {
        case .response(let status):
            verdict = self.check.expect.contains(status) ? .pass : .failure(.unexpectedStatus(status))
        case .connectFailed(let detail):
            verdict = .failure(.connectFailed(detail))
        case .failed(let detail):
            verdict = .failure(.failed(detail))
        }
        if let change = self.record(verdict, for: endpoint, now: now, using: &rng) {
            return .healthChanged(change)
        }
        return .recorded
    }

    // MARK: Queries

    /// The earliest instant at which ``tick(now:using:)`` has something to do; `nil` without endpoints.
    public var nextDeadline: Instant? {
        self.endpoints.values.lazy.map { state -> Instant in
            switch state.check {
            case .waiting(let due): due
            case .inFlight(_, let deadline): deadline
            }
        }.min()
    }

    /// The endpoint's health; `nil` when it is not in the group.
    public func health(of endpoint: Endpoint) -> EndpointHealth? { self.endpoints[endpoint]?.health }

    /// Whether some endpoint passed its checks: what `ready-requires` waits for. Unknown endpoints
    /// do not count (they are available, but not confirmed).
    public var hasHealthyEndpoint: Bool { self.endpoints.values.contains { $0.health == .healthy } }

    /// How many endpoints are in each state, for `/status` and the metrics.
    public func counts() -> (unknown: Int, healthy: Int, unhealthy: Int) {
        var counts = (unknown: 0, healthy: 0, unhealthy: 0)
        for state in self.endpoints.values {
            switch state.health {
            case .unknown: counts.unknown += 1
            case .healthy: counts.healthy += 1
            case .unhealthy: counts.unhealthy += 1
            }
        }
        return counts
    }

    /// The check in flight for the endpoint, if any.
    public func checkInFlight(for endpoint: Endpoint) -> CheckID? {
        switch self.endpoints[endpoint]?.check {
        case .inFlight(let id, _): id
        case .waiting, nil: nil
        }
    }

    // MARK: Private

    private enum Verdict {
        case pass
        case failure(CheckFailure)
    }

    private func endpoint(checking id: CheckID) -> Endpoint? {
        for (endpoint, state) in self.endpoints {
            if case .inFlight(id, _) = state.check { return endpoint }
        }
        return nil
    }

    /// Counts a verdict for an endpoint whose check just ended, schedules its next check, and
    /// returns the health change it caused.
    private mutating func record(
        _ verdict: Verdict,
        for endpoint: Endpoint,
        now: Instant,
        using rng: inout some RandomNumberGenerator
    ) -> HealthChange? {
        guard var state = self.endpoints[endpoint] else {
            preconditionFailure("a verdict for an endpoint that is not in the group")
        }
        state.check = .waiting(due: now.advanced(by: self.jitteredInterval(using: &rng)))
        var change: HealthChange?
        switch verdict {
        case .pass:
            state.passes += 1
            state.failures = 0
            switch state.health {
            case .unknown:
                state.health = .healthy
                change = .becameHealthy(endpoint)
            case .unhealthy where state.passes >= self.check.healthyAfter:
                state.health = .healthy
                change = .becameHealthy(endpoint)
            case .healthy, .unhealthy:
                break
            }
        case .failure(let reason):
            state.failures += 1
            state.passes = 0
            switch state.health {
            case .unknown:
                state.health = .unhealthy
                change = .becameUnhealthy(endpoint, reason: reason)
            case .healthy where state.failures >= self.check.unhealthyAfter:
                state.health = .unhealthy
                change = .becameUnhealthy(endpoint, reason: reason)
            case .healthy, .unhealthy:
                break
            }
        }
        self.endpoints[endpoint] = state
        return change
    }

    /// `interval` ± ``jitterPercent``%, uniformly.
    private func jitteredInterval(using rng: inout some RandomNumberGenerator) -> Duration {
        let interval = self.check.interval.nanosecondsClamped
        let spread = interval / 100 * Int64(Self.jitterPercent)
        guard spread > 0 else { return self.check.interval }
        return .nanoseconds(interval + Int64.random(in: -spread...spread, using: &rng))
    }
}
