import CoreMetrics
import NIOConcurrencyHelpers
import Prometheus
import SluiceCore

/// Sluice's metrics, exported as Prometheus text on the admin listener.
///
/// Per-request counters are plain integers on each event loop (no lock on the hot path); a scrape
/// sums them across loops and moves the swift-metrics counters forward by the difference. The
/// request-duration histogram is rendered from the loops' bucket counts directly, since a
/// swift-metrics timer would take a lock per request. The factory is injected, so tests and
/// several servers in one process never touch the global `MetricsSystem`.
public final class ProxyMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let phaseGauge: CoreMetrics.Gauge
    private let connectionsGauge: CoreMetrics.Gauge
    private let inFlightGauge: CoreMetrics.Gauge
    private let forcedCloses: CoreMetrics.Counter
    private let http2StreamStallResets: CoreMetrics.Counter
    private let upstreamConnectErrors: CoreMetrics.Counter
    private let upstreamUnsolicitedBytes: CoreMetrics.Counter
    private let aborted: CoreMetrics.Counter
    private let requestsByClass: [CoreMetrics.Counter]
    private let last = NIOLockedValueBox(RequestStats())
    /// Per-group counters, made monotonic across reloads (``GroupCounterTotals``).
    private let groupTotals = NIOLockedValueBox(GroupCounterTotals())
    /// `sluice_config_reloads_total{result=...}`, one counter per ``ReloadResult``.
    private let configReloads: [ReloadResult: CoreMetrics.Counter]
    /// Kept for the series made later: per TLS listener (``tlsListener(_:)``), per certificate
    /// name, per upstream group's TLS failure reason.
    /// `sluice_drain_last_new_connection_seconds`: late-arrival telemetry of the last drain or rehearsal.
    private let lastNewConnectionGauge: CoreMetrics.Gauge
    private let factory: PrometheusMetricsFactory

    /// How a reload ended, as the `result` label of `sluice_config_reloads_total`.
    enum ReloadResult: String, CaseIterable, Sendable {
        /// Applied on every loop.
        case ok
        /// The configuration could not be read, was invalid, or a new listener could not be bound.
        case error
        /// Not attempted: the drain has begun (or there is no configuration source).
        case refused
    }

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let factory = PrometheusMetricsFactory(registry: registry)
        self.factory = factory
        self.phaseGauge = CoreMetrics.Gauge(label: "sluice_drain_phase", factory: factory)
        self.lastNewConnectionGauge = CoreMetrics.Gauge(label: "sluice_drain_last_new_connection_seconds", factory: factory)
        self.connectionsGauge = CoreMetrics.Gauge(label: "sluice_connections_active", factory: factory)
        self.inFlightGauge = CoreMetrics.Gauge(label: "sluice_requests_in_flight", factory: factory)
        self.forcedCloses = CoreMetrics.Counter(label: "sluice_forced_closes_total", factory: factory)
        self.http2StreamStallResets = CoreMetrics.Counter(label: "sluice_http2_stream_stall_resets_total", factory: factory)
        self.upstreamConnectErrors = CoreMetrics.Counter(label: "sluice_upstream_connect_errors_total", factory: factory)
        self.upstreamUnsolicitedBytes = CoreMetrics.Counter(label: "sluice_upstream_unsolicited_bytes_total", factory: factory)
        self.aborted = CoreMetrics.Counter(label: "sluice_responses_aborted_total", factory: factory)
        self.requestsByClass = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"].map {
            CoreMetrics.Counter(label: "sluice_requests_total", dimensions: [("class", $0)], factory: factory)
        }
        var reloads: [ReloadResult: CoreMetrics.Counter] = [:]
        for result in ReloadResult.allCases {
            reloads[result] = CoreMetrics.Counter(label: "sluice_config_reloads_total", dimensions: [("result", result.rawValue)], factory: factory)
        }
        self.configReloads = reloads
        self.phaseGauge.record(DrainPhase.starting.ordinal)
    }

    func configReloaded(_ result: ReloadResult) {
        self.configReloads[result]?.increment()
    }

    func phase(_ phase: DrainPhase) {
        self.phaseGauge.record(phase.ordinal)
    }

    /// Seconds from the drain's (or rehearsal's) start to the last new connection accepted.
    func lastNewConnection(seconds: Double) {
        self.lastNewConnectionGauge.record(seconds)
    }

    /// Brings the metrics up to date with `snapshot` and renders the exposition text.
    func render(_ snapshot: LoopSnapshot, groups: [GroupSnapshot] = [], healthChanges: [String: Int] = [:]) -> String {
        let stats = snapshot.stats
        let previous = self.last.withLockedValue { last in
            defer { last = stats }
            return last
        }
        for index in stats.responsesByClass.indices {
            let delta = stats.responsesByClass[index] - previous.responsesByClass[index]
            if delta > 0 { self.requestsByClass[index].increment(by: delta) }
        }
        if stats.forcedCloses > previous.forcedCloses { self.forcedCloses.increment(by: stats.forcedCloses - previous.forcedCloses) }
        if stats.http2StreamStallResets > previous.http2StreamStallResets {
            self.http2StreamStallResets.increment(by: stats.http2StreamStallResets - previous.http2StreamStallResets)
        }
        if stats.upstreamConnectErrors > previous.upstreamConnectErrors {
            self.upstreamConnectErrors.increment(by: stats.upstreamConnectErrors - previous.upstreamConnectErrors)
        }
        if stats.upstreamUnsolicitedBytes > previous.upstreamUnsolicitedBytes {
            self.upstreamUnsolicitedBytes.increment(by: stats.upstreamUnsolicitedBytes - previous.upstreamUnsolicitedBytes)
        }
        if stats.aborted > previous.aborted { self.aborted.increment(by: stats.aborted - previous.aborted) }
        self.connectionsGauge.record(snapshot.connections.total)
        self.inFlightGauge.record(snapshot.connections.requestsInFlight)

        var text = self.registry.emitToString()
        text += "# TYPE sluice_request_duration_seconds histogram\n"
        var cumulative = 0
        for (index, bound) in RequestStats.durationBuckets.enumerated() {
            cumulative += stats.durationCounts[index]
            text += "sluice_request_duration_seconds_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative += stats.durationCounts[RequestStats.durationBuckets.count]
        text += "sluice_request_duration_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        text += "sluice_request_duration_seconds_sum \(stats.durationSumSeconds)\n"
        text += "sluice_request_duration_seconds_count \(cumulative)\n"
        if !stats.http2ConnectionErrors.isEmpty {
            text += "# TYPE sluice_http2_connection_errors_total counter\n"
            for (code, count) in stats.http2ConnectionErrors.sorted(by: { $0.key < $1.key }) {
                text += "sluice_http2_connection_errors_total{code=\"\(code)\"} \(count)\n"
            }
        }
        text += Self.renderTunnels(stats, active: snapshot.connections.tunnelsByProtocol)
        text += self.renderGroups(groups, healthChanges: healthChanges)
        return text
    }

    // MARK: TLS

    /// A TLS listener's counters, made once per listener so that a handshake increments a counter
    /// without a registry lookup:
    /// - `sluice_tls_handshakes_total{listener,version,alpn}`: completed handshakes, version `1.2` or
    ///   `1.3`, alpn `h2`, `http/1.1` or `none`;
    /// - `sluice_tls_handshake_failures_total{listener,reason}`: handshakes that did not complete, by
    ///   ``TLSHandshakeFailureReason``;
    /// - `sluice_tls_certificate_reloads_total{listener,result}`: result `ok` or `error`.
    ///
    /// `listener` is the listener's configured HOST:PORT.
    func tlsListener(_ listener: String) -> TLSListenerMetrics {
        TLSListenerMetrics(listener: listener, factory: self.factory)
    }

    /// `sluice_tls_certificate_expiry_timestamp_seconds{listener,name}`: the certificate's notAfter in
    /// Unix seconds; `name` is its first SAN DNS name (or its CN). The returned gauge is what
    /// ``removeTLSCertificateExpiry(_:)`` takes when a reload drops the name.
    func tlsCertificateExpiry(listener: String, name: String, notAfter: Int64) -> CoreMetrics.Gauge {
        let gauge = CoreMetrics.Gauge(
            label: "sluice_tls_certificate_expiry_timestamp_seconds", dimensions: [("listener", listener), ("name", name)], factory: self.factory
        )
        gauge.record(notAfter)
        return gauge
    }

    func removeTLSCertificateExpiry(_ gauge: CoreMetrics.Gauge) {
        gauge.destroy()
    }

    /// Why a TLS handshake to an upstream failed, the `reason` of
    /// `sluice_upstream_tls_handshake_failures_total{group,reason}`.
    public enum UpstreamTLSFailureReason: String, CaseIterable, Sendable {
        /// The upstream's certificate did not verify (untrusted, expired, wrong name).
        case verify
        /// The handshake failed otherwise (no shared version or cipher, an alert from the upstream).
        case handshake
        /// Anything else (the connection closed during the handshake, an internal error).
        case other
    }

    /// Counts `sluice_upstream_tls_handshake_failures_total{group,reason}`. Failures are rare, so
    /// the counter is looked up in the registry each time.
    public func upstreamTLSHandshakeFailed(group: String, reason: UpstreamTLSFailureReason) {
        CoreMetrics.Counter(
            label: "sluice_upstream_tls_handshake_failures_total", dimensions: [("group", group), ("reason", reason.rawValue)], factory: self.factory
        ).increment()
    }

    // MARK: Tunnels

    /// The tunnel series, every one present from the start (zero-valued), rendered from the loops'
    /// summed counters like the request histogram:
    /// - `sluice_tunnels_active{protocol}`: tunnels open now (HTTP/2: WebSocket streams);
    /// - `sluice_tunnels_total{protocol}`: tunnels closed;
    /// - `sluice_tunnel_duration_seconds`: a histogram of closed tunnels' lifetimes;
    /// - `sluice_tunnel_bytes_total{direction}`: bytes closed tunnels carried, `client_to_upstream`
    ///   and `upstream_to_client`;
    /// - `sluice_tunnel_drain_closes_total{result}`: WebSocket tunnels the drain closed, `clean` (both
    ///   Close frames came back) or `timeout` (the close handshake or the drain deadline ran out).
    static func renderTunnels(_ stats: RequestStats, active: [ConnectionProtocol: Int]) -> String {
        var text = "# TYPE sluice_tunnels_active gauge\n"
        for proto in ConnectionProtocol.allCases {
            text += "sluice_tunnels_active{protocol=\"\(proto.rawValue)\"} \(active[proto] ?? 0)\n"
        }
        text += "# TYPE sluice_tunnels_total counter\n"
        for (index, proto) in ConnectionProtocol.allCases.enumerated() {
            text += "sluice_tunnels_total{protocol=\"\(proto.rawValue)\"} \(stats.tunnelsClosed[index])\n"
        }
        text += "# TYPE sluice_tunnel_duration_seconds histogram\n"
        var cumulative = 0
        for (index, bound) in RequestStats.tunnelDurationBuckets.enumerated() {
            cumulative += stats.tunnelDurationCounts[index]
            text += "sluice_tunnel_duration_seconds_bucket{le=\"\(bound)\"} \(cumulative)\n"
        }
        cumulative += stats.tunnelDurationCounts[RequestStats.tunnelDurationBuckets.count]
        text += "sluice_tunnel_duration_seconds_bucket{le=\"+Inf\"} \(cumulative)\n"
        text += "sluice_tunnel_duration_seconds_sum \(stats.tunnelDurationSumSeconds)\n"
        text += "sluice_tunnel_duration_seconds_count \(cumulative)\n"
        text += "# TYPE sluice_tunnel_bytes_total counter\n"
        text += "sluice_tunnel_bytes_total{direction=\"client_to_upstream\"} \(stats.tunnelBytesFromClient)\n"
        text += "sluice_tunnel_bytes_total{direction=\"upstream_to_client\"} \(stats.tunnelBytesToClient)\n"
        text += "# TYPE sluice_tunnel_drain_closes_total counter\n"
        text += "sluice_tunnel_drain_closes_total{result=\"clean\"} \(stats.tunnelDrainClosesClean)\n"
        text += "sluice_tunnel_drain_closes_total{result=\"timeout\"} \(stats.tunnelDrainClosesTimedOut)\n"
        return text
    }

    // MARK: Groups and endpoints

    /// The per-group and per-endpoint series; their labels come from the configuration (group
    /// names) and from the DNS answers (endpoints), so their number is bounded by those:
    /// - `sluice_upstream_endpoint_healthy{group,endpoint}`: 1 unless the active checks found the
    ///   endpoint unhealthy (unchecked and not-yet-checked endpoints count as healthy, as the
    ///   balancer counts them); endpoints being drained after a DNS change are left out;
    /// - `sluice_upstream_health_changes_total{group}`, `sluice_upstream_ejections_total{group}`,
    ///   `sluice_upstream_panic_picks_total{group}`, `sluice_upstream_retries_total{group}`,
    ///   `sluice_upstream_retry_budget_exhausted_total{group}`;
    /// - `sluice_upstream_requests_total{group,class}`: attempts by the upstream's status class, or
    ///   `error` when none came (a retry is an attempt of its own);
    /// - `sluice_upstream_attempt_duration_seconds{group}`: a histogram of the attempts' times, from
    ///   the pick of the endpoint to the end of the response (or the failure).
    private func renderGroups(_ groups: [GroupSnapshot], healthChanges: [String: Int]) -> String {
        guard !groups.isEmpty else { return "" }
        let totals = self.groupTotals.withLockedValue { totals in
            for group in groups { totals.observe(group) }
            return totals
        }
        var text = "# TYPE sluice_upstream_endpoint_healthy gauge\n"
        for group in groups {
            for endpoint in group.endpoints where !endpoint.draining {
                let healthy = endpoint.health == .unhealthy ? 0 : 1
                text += "sluice_upstream_endpoint_healthy{group=\"\(Self.label(group.name))\",endpoint=\"\(Self.label(endpoint.key))\"} \(healthy)\n"
            }
        }
        text += "# TYPE sluice_upstream_health_changes_total counter\n"
        for group in groups {
            text += "sluice_upstream_health_changes_total{group=\"\(Self.label(group.name))\"} \(healthChanges[group.name] ?? 0)\n"
        }
        for (name, value) in [
            ("ejections", \GroupCounters.ejections), ("panic_picks", \GroupCounters.panicPicks), ("retries", \GroupCounters.retries),
            ("retry_budget_exhausted", \GroupCounters.retryBudgetExhausted),
        ] {
            text += "# TYPE sluice_upstream_\(name)_total counter\n"
            for group in groups {
                text += "sluice_upstream_\(name)_total{group=\"\(Self.label(group.name))\"} \(totals.total[group.name]?[keyPath: value] ?? 0)\n"
            }
        }
        text += "# TYPE sluice_upstream_requests_total counter\n"
        for group in groups {
            let byClass = totals.total[group.name]?.attemptsByClass ?? []
            for (index, name) in GroupCounters.classes.enumerated() {
                let count = index < byClass.count ? byClass[index] : 0
                text += "sluice_upstream_requests_total{group=\"\(Self.label(group.name))\",class=\"\(name)\"} \(count)\n"
            }
        }
        text += "# TYPE sluice_upstream_attempt_duration_seconds histogram\n"
        for group in groups {
            let label = Self.label(group.name)
            let counts = totals.total[group.name]?.attemptDurationCounts ?? []
            var cumulative = 0
            for (index, bound) in RequestStats.durationBuckets.enumerated() {
                cumulative += index < counts.count ? counts[index] : 0
                text += "sluice_upstream_attempt_duration_seconds_bucket{group=\"\(label)\",le=\"\(bound)\"} \(cumulative)\n"
            }
            cumulative += counts.last ?? 0
            text += "sluice_upstream_attempt_duration_seconds_bucket{group=\"\(label)\",le=\"+Inf\"} \(cumulative)\n"
            text += "sluice_upstream_attempt_duration_seconds_sum{group=\"\(label)\"} \(totals.total[group.name]?.attemptDurationSumSeconds ?? 0)\n"
            text += "sluice_upstream_attempt_duration_seconds_count{group=\"\(label)\"} \(cumulative)\n"
        }
        return text
    }

    /// A Prometheus label value: backslash, quote and newline escaped.
    static func label(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}

/// Why a TLS handshake on a listener did not complete, the `reason` of
/// `sluice_tls_handshake_failures_total{listener,reason}`.
public enum TLSHandshakeFailureReason: String, CaseIterable, Sendable {
    /// The handshake did not complete within the handshake timeout.
    case timeout
    /// The client offers no TLS version we accept (e.g. TLS 1.2 only, with min-version 1.3).
    case protocolVersion = "protocol_version"
    /// No cipher suite, signature algorithm or key-exchange group in common.
    case noSharedCipher = "no_shared_cipher"
    /// The client rejected our certificate (alert bad_certificate, unknown_ca, certificate_unknown...).
    case badCertificate = "bad_certificate"
    /// The client did not speak TLS at all (plain HTTP on the TLS port, garbage).
    case notTLS = "not_tls"
    /// The client closed the connection before the handshake completed.
    case eof
    /// Anything else.
    case other
}

/// One TLS listener's counters (``ProxyMetrics/tlsListener(_:)``), all made up front.
struct TLSListenerMetrics: Sendable {
    /// Indexed [version: 0 = 1.2, 1 = 1.3][alpn: 0 = h2, 1 = http/1.1, 2 = none].
    private let handshakes: [[CoreMetrics.Counter]]
    private let failures: [TLSHandshakeFailureReason: CoreMetrics.Counter]
    private let reloadsOK: CoreMetrics.Counter
    private let reloadsError: CoreMetrics.Counter

    init(listener: String, factory: PrometheusMetricsFactory) {
        self.handshakes = ["1.2", "1.3"].map { version in
            ["h2", "http/1.1", "none"].map { alpn in
                CoreMetrics.Counter(
                    label: "sluice_tls_handshakes_total", dimensions: [("listener", listener), ("version", version), ("alpn", alpn)], factory: factory
                )
            }
        }
        var failures: [TLSHandshakeFailureReason: CoreMetrics.Counter] = [:]
        for reason in TLSHandshakeFailureReason.allCases {
            failures[reason] = CoreMetrics.Counter(
                label: "sluice_tls_handshake_failures_total", dimensions: [("listener", listener), ("reason", reason.rawValue)], factory: factory
            )
        }
        self.failures = failures
        self.reloadsOK = CoreMetrics.Counter(
            label: "sluice_tls_certificate_reloads_total", dimensions: [("listener", listener), ("result", "ok")], factory: factory
        )
        self.reloadsError = CoreMetrics.Counter(
            label: "sluice_tls_certificate_reloads_total", dimensions: [("listener", listener), ("result", "error")], factory: factory
        )
    }

    /// A completed handshake. `tls13` is false for TLS 1.2 (the only other version we accept);
    /// `alpn` is the negotiated protocol, nil when none was.
    func handshakeCompleted(tls13: Bool, alpn: String?) {
        let column: Int
        switch alpn {
        case "h2": column = 0
        case "http/1.1": column = 1
        default: column = 2
        }
        self.handshakes[tls13 ? 1 : 0][column].increment()
    }

    func handshakeFailed(_ reason: TLSHandshakeFailureReason) {
        self.failures[reason]?.increment()
    }

    func certificatesReloaded(ok: Bool) {
        (ok ? self.reloadsOK : self.reloadsError).increment()
    }
}

/// Each group's counters as exported: the loops' counters start from zero when a reload builds new
/// groups, so a scrape adds what grew since the last one, and after a drop (a new generation)
/// adds the new count whole.
struct GroupCounterTotals: Sendable {
    private(set) var total: [String: GroupCounters] = [:]
    private var last: [String: GroupCounters] = [:]

    mutating func observe(_ group: GroupSnapshot) {
        let now = group.counters
        let before = self.last[group.name] ?? GroupCounters()
        var sum = self.total[group.name] ?? GroupCounters()
        func grown(_ now: Int, _ before: Int) -> Int { now >= before ? now - before : now }
        sum.ejections += grown(now.ejections, before.ejections)
        sum.ejectionsRefused += grown(now.ejectionsRefused, before.ejectionsRefused)
        sum.panicPicks += grown(now.panicPicks, before.panicPicks)
        sum.retries += grown(now.retries, before.retries)
        sum.retryBudgetExhausted += grown(now.retryBudgetExhausted, before.retryBudgetExhausted)
        for index in sum.attemptDurationCounts.indices {
            sum.attemptDurationCounts[index] += grown(now.attemptDurationCounts[index], before.attemptDurationCounts[index])
        }
        sum.attemptDurationSumSeconds +=
            now.attemptDurationSumSeconds >= before.attemptDurationSumSeconds
            ? now.attemptDurationSumSeconds - before.attemptDurationSumSeconds : now.attemptDurationSumSeconds
        for index in sum.attemptsByClass.indices {
            sum.attemptsByClass[index] += grown(now.attemptsByClass[index], before.attemptsByClass[index])
        }
        self.total[group.name] = sum
        self.last[group.name] = now
    }
}
