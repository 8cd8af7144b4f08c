/// Passive outlier detection for the endpoints of one group (`outlier:`): an endpoint that fails
/// requests in a row is ejected for a while, longer each time, as Envoy's `consecutive_5xx`.
///
/// Pure: the loops report how requests ended (``requestFinished(_:outcome:now:)``), the machine
/// returns ejections and un-ejections for the executor to log, count and publish to every loop.
///
/// 1. A request that got a response below 500 is a success and resets the endpoint's count of
///    failures in a row. A connect error, a reset, a response-head timeout or a 5xx from the
///    upstream is a failure (``RequestOutcome``). A request the client abandoned is not reported.
/// 2. `consecutiveFailures` failures in a row eject the endpoint for `baseEjection` × the number of
///    its ejections so far (the first lasts one base, the second two, …), at most
///    ``maxEjection`` (default 300 s, Envoy's `max_ejection_time`; never less than one base).
/// 3. At most `maxEjectedPercent`% of the group's endpoints are ejected at once, rounded down, but
///    at least one when the group has two or more endpoints (as Envoy, whatever the percentage).
///    A group of one endpoint never ejects it: with nothing else to pick, the balancer's panic
///    mode would send to it anyway, so an ejection would only be noise. An ejection the cap
///    refused is reported once per run of failures (``RequestFinishedAction/ejectionRefused(_:ejected:limit:)``);
///    the endpoint is ejected on its next failure once there is room.
/// 4. ``sweep(now:)`` un-ejects endpoints whose time is up (call it at ``nextDeadline``); they come
///    back with a count of 0. Outcomes of requests that were in flight while an endpoint was
///    ejected are ignored: they neither extend nor shorten the ejection.
/// 5. The multiplier decays: for each whole `baseEjection` an endpoint spends un-ejected, its
///    number of ejections so far drops by one (Envoy decays once per detection interval; one
///    base period is the same idea without another setting). An endpoint that fails again soon
///    after coming back is ejected for longer; one that behaved for a while starts over short.
/// 6. Endpoints come and go (``endpointAdded(_:)``, ``endpointRemoved(_:)``). Removing endpoints
///    lowers the cap but ejects nothing early; an ejected endpoint that is removed is simply gone.
///
/// ```swift
/// var outliers = OutlierDetector<HostPort, MonotonicInstant>(config: group.outlier!, endpoints: keys)
/// switch outliers.requestFinished(endpoint, outcome: .reset, now: now) {
/// case .eject(let endpoint, let until): publish(endpoint, ejectedUntil: until)
/// case .ejectionRefused(let endpoint, let ejected, let limit): count(endpoint, ejected, limit)
/// case .none: break
/// }
/// for action in outliers.sweep(now: now) { … }                 // when nextDeadline passes
/// ```
public struct OutlierDetector<Endpoint: Hashable & Sendable, Instant: InstantProtocol>: Sendable
where Instant.Duration == Duration {
    /// How a request to an endpoint ended, as far as the endpoint's health goes.
    public enum RequestOutcome: Equatable, Sendable {
        /// A response head with a status below 500 arrived (a 4xx is the client's fault, not the endpoint's).
        case success
        /// No connection could be made.
        case connectFailed
        /// The connection (or the HTTP/2 stream) was reset or closed before the response ended.
        case reset
        /// No response head within `response-header-timeout`.
        case timedOut
        /// The upstream answered with a 5xx status.
        case serverError(status: Int)

        /// Whether the outcome counts towards an ejection.
        public var isFailure: Bool {
            switch self {
            case .success: false
            case .connectFailed, .reset, .timedOut, .serverError: true
            }
        }
    }

    public enum RequestFinishedAction: Equatable, Sendable {
        /// Nothing changed that the executor must carry out.
        case none
        /// Take the endpoint out of the balancers until `until` (``sweep(now:)`` brings it back).
        case eject(Endpoint, until: Instant)
        /// The endpoint reached `consecutiveFailures`, but `ejected` endpoints are out already and
        /// `limit` may be: it stays in. Reported once per run of failures, for the log and a counter.
        case ejectionRefused(Endpoint, ejected: Int, limit: Int)
    }

    public enum SweepAction: Equatable, Sendable {
        /// The endpoint's ejection is over: the balancers may pick it again.
        case uneject(Endpoint)
    }

    /// Where an endpoint stands.
    private enum State: Sendable {
        /// Taking requests. `failures`: failures in a row; `refusalReported`: this run of failures
        /// already reported a refused ejection. Valid transitions: `.ejected` (a failure at the threshold
        /// with room under the cap).
        case active(failures: Int, refusalReported: Bool)
        /// Out of the balancers until this instant. Valid transitions: `.active` (``sweep(now:)``, count 0).
        case ejected(until: Instant)
    }

    private struct EndpointState: Sendable {
        var state: State = .active(failures: 0, refusalReported: false)
        /// Ejections so far, less the decay: the next ejection lasts (this + 1) × base.
        var ejections = 0
        /// Decay counts whole base periods from this instant (the end of the last ejection, or the
        /// last decay step); `nil` while nothing is to decay.
        var decaySince: Instant?
    }

    public let config: OutlierDetection
    /// The longest an ejection lasts, however many came before.
    public let maxEjection: Duration
    private var endpoints: [Endpoint: EndpointState] = [:]
    private var ejectedCount = 0
    /// Endpoints not in the clean state (active, no failure in a row, nothing reported): while
    /// there is none, a success changes nothing and is answered without looking its endpoint up
    /// (the common case, on every response).
    private var unclean = 0

    /// - Parameters:
    ///   - maxEjection: the cap on one ejection's length; raised to `baseEjection` if below it.
    public init(config: OutlierDetection, endpoints: [Endpoint] = [], maxEjection: Duration = .seconds(300)) {
        precondition(config.consecutiveFailures >= 1, "validation requires consecutive-failures of at least 1")
        precondition(config.baseEjection > .zero, "validation requires a positive base-ejection")
        self.config = config
        self.maxEjection = max(maxEjection, config.baseEjection)
        for endpoint in endpoints { self.endpoints[endpoint] = EndpointState() }
    }

    // MARK: Endpoints

    /// An endpoint joined the group; a known one keeps its state.
    public mutating func endpointAdded(_ endpoint: Endpoint) {
        if self.endpoints[endpoint] == nil { self.endpoints[endpoint] = EndpointState() }
    }

    /// An endpoint left the group; if it was ejected, it no longer counts against the cap.
    public mutating func endpointRemoved(_ endpoint: Endpoint) {
        guard let removed = self.endpoints.removeValue(forKey: endpoint) else { return }
        if case .ejected = removed.state { self.ejectedCount -= 1 }
        if !Self.isClean(removed.state) { self.unclean -= 1 }
    }

    // MARK: Events

    /// A request to `endpoint` ended with `outcome`. Outcomes for unknown (removed) or ejected
    /// endpoints are ignored.
    @_specialize(exported: true, where Endpoint == String, Instant == MonotonicInstant)
    public mutating func requestFinished(_ endpoint: Endpoint, outcome: RequestOutcome, now: Instant) -> RequestFinishedAction {
        if self.unclean == 0, !outcome.isFailure { return .none }
        guard var entry = self.endpoints[endpoint] else { return .none }
        switch entry.state {
        case .ejected:
            return .none
        case .active(let failures, let refusalReported):
            guard outcome.isFailure else {
                if failures != 0 || refusalReported {
                    self.endpoints[endpoint]?.state = .active(failures: 0, refusalReported: false)
                    self.unclean -= 1
                }
                return .none
            }
            if failures == 0 && !refusalReported { self.unclean += 1 }
            let failures = failures + 1
            guard failures >= self.config.consecutiveFailures, self.endpoints.count >= 2 else {
                self.endpoints[endpoint]?.state = .active(failures: failures, refusalReported: refusalReported)
                return .none
            }
            let limit = self.ejectionLimit
            guard self.ejectedCount < limit else {
                entry.state = .active(failures: failures, refusalReported: true)
                self.endpoints[endpoint] = entry
                return refusalReported ? .none : .ejectionRefused(endpoint, ejected: self.ejectedCount, limit: limit)
            }
            self.decay(&entry, now: now)
            entry.ejections = min(entry.ejections + 1, self.maxMultiplier)
            let until = now.advanced(by: self.ejectionLength(multiplier: entry.ejections))
            entry.state = .ejected(until: until)
            entry.decaySince = nil
            self.endpoints[endpoint] = entry
            self.ejectedCount += 1
            return .eject(endpoint, until: until)
        }
    }

    /// Un-ejects the endpoints whose ejection is over, in the order their ejections ended (ties in
    /// no particular order).
    public mutating func sweep(now: Instant) -> [SweepAction] {
        let over = self.endpoints.compactMap { endpoint, entry -> (Endpoint, Instant)? in
            guard case .ejected(let until) = entry.state, until <= now else { return nil }
            return (endpoint, until)
        }.sorted { $0.1 < $1.1 }
        for (endpoint, until) in over {
            // Decay counts from the end of the ejection, even when the sweep comes late.
            self.endpoints[endpoint]?.state = .active(failures: 0, refusalReported: false)
            self.endpoints[endpoint]?.decaySince = until
            self.ejectedCount -= 1
            self.unclean -= 1
        }
        return over.map { .uneject($0.0) }
    }

    private static func isClean(_ state: State) -> Bool {
        if case .active(0, false) = state { return true }
        return false
    }

    // MARK: Queries

    /// The earliest end of an ejection; `nil` when none is ejected. Decay needs no timer.
    public var nextDeadline: Instant? {
        self.endpoints.values.lazy.compactMap { entry -> Instant? in
            guard case .ejected(let until) = entry.state else { return nil }
            return until
        }.min()
    }

    /// Whether the balancers must skip the endpoint now.
    @_specialize(exported: true, where Endpoint == String, Instant == MonotonicInstant)
    public func isEjected(_ endpoint: Endpoint) -> Bool {
        guard case .ejected = self.endpoints[endpoint]?.state else { return false }
        return true
    }

    /// When the endpoint's ejection ends; `nil` when it is not ejected.
    public func ejectedUntil(_ endpoint: Endpoint) -> Instant? {
        guard case .ejected(let until) = self.endpoints[endpoint]?.state else { return nil }
        return until
    }

    /// Endpoints ejected now.
    public var ejected: Int { self.ejectedCount }

    /// How many endpoints may be ejected at once: `maxEjectedPercent`% of the group rounded down,
    /// at least 1 with two or more endpoints, 0 with one.
    public var ejectionLimit: Int {
        let count = self.endpoints.count
        guard count >= 2 else { return 0 }
        return max(1, count * self.config.maxEjectedPercent / 100)
    }

    /// The endpoint's ejections so far after decay at `now` (the next ejection lasts one more base
    /// than this many), for `/status`.
    public func ejections(of endpoint: Endpoint, now: Instant) -> Int {
        guard var entry = self.endpoints[endpoint] else { return 0 }
        if case .active = entry.state { self.decay(&entry, now: now) }
        return entry.ejections
    }

    /// Failures in a row for the endpoint (0 while ejected).
    public func consecutiveFailures(of endpoint: Endpoint) -> Int {
        guard case .active(let failures, _) = self.endpoints[endpoint]?.state else { return 0 }
        return failures
    }

    // MARK: Private

    /// The multiplier past which ejections no longer grow (they are at ``maxEjection`` already).
    private var maxMultiplier: Int {
        let base = self.config.baseEjection.nanosecondsClamped
        let cap = self.maxEjection.nanosecondsClamped
        return Int((cap + base - 1) / base)
    }

    private func ejectionLength(multiplier: Int) -> Duration {
        min(self.config.baseEjection * multiplier, self.maxEjection)
    }

    /// Takes one ejection off per whole base period spent un-ejected since `decaySince`.
    private func decay(_ entry: inout EndpointState, now: Instant) {
        guard let since = entry.decaySince, entry.ejections > 0 else { return }
        let base = self.config.baseEjection.nanosecondsClamped
        let clean = max(0, since.duration(to: now).nanosecondsClamped)
        let periods = clean / base
        guard periods > 0 else { return }
        let steps = Int(min(periods, Int64(entry.ejections)))
        entry.ejections -= steps
        entry.decaySince = entry.ejections > 0 ? since.advanced(by: self.config.baseEjection * steps) : nil
    }
}

extension OutlierDetector.RequestOutcome {
    /// What an error that ended an attempt says about the endpoint: a failed connect, a timeout
    /// (504), or else a reset or an invalid response (counted as a reset).
    public init(_ error: ProxyError) {
        if error.retry == .always {
            self = .connectFailed
        } else if error.status == 504 {
            self = .timedOut
        } else {
            self = .reset
        }
    }
}
