/// What `sluice check-config` prints: the effective configuration, the drain budget, and a machine
/// readable report for the deployment lint.
extension SluiceConfig {
    /// The effective configuration as YAML with the keys of the file (DESIGN.md §5): every setting with
    /// its value after flags, environment, file and defaults, every group with its effective settings
    /// (the global defaults filled in), every route. Valid input for `--config`, but for `threads`,
    /// which is the CPU count found at start-up when not given.
    ///
    /// ```
    /// listen:
    ///   - 0.0.0.0:8080
    /// admin: 0.0.0.0:9901
    /// ...
    /// upstreams:
    ///   default:
    ///     endpoints: [http://127.0.0.1:3000]
    ///     balance: round-robin
    /// ...
    /// ```
    public var effectiveYAML: String {
        var lines: [String] = []
        lines.append("listen:")
        for listener in self.listen {
            guard let tls = listener.tls else {
                lines.append("  - \(listener.address)")
                continue
            }
            lines.append("  - address: \(listener.address)")
            lines.append("    tls:")
            lines.append("      certificates:")
            lines += tls.certificates.map { "        - {cert: \($0.cert), key: \($0.key)}" }
            lines.append("      min-version: \"\(tls.minVersion.rawValue)\"")
            lines.append("      alpn: [\(tls.alpn.joined(separator: ", "))]")
        }
        lines.append("admin: \(self.admin)")
        lines.append("threads: \(self.threads)")
        lines.append("drain-delay: \(DurationParser.format(self.drain.delay))")
        lines.append("drain-timeout: \(DurationParser.format(self.drain.timeout))")
        lines.append("termination-grace: \(DurationParser.format(self.drain.terminationGrace))")
        if let quiet = self.drain.quiet { lines.append("drain-quiet: \(DurationParser.format(quiet))") }
        lines.append("drain-delay-min: \(DurationParser.format(self.drain.delayMin))")
        if let report = self.drain.reportFile { lines.append("drain-report: \(YAMLText.scalar(report))") }
        lines.append("drain-idle-quiet: \(DurationParser.format(self.drain.idleQuietPeriod))")
        lines.append("request-header-timeout: \(DurationParser.format(self.http.requestHeaderTimeout))")
        lines.append("idle-timeout: \(DurationParser.format(self.http.idleTimeout))")
        lines.append("max-header-size: \(ByteSizeParser.format(self.http.maxHeaderBytes))")
        lines.append("max-body-size: \(self.http.maxBodyBytes.map(ByteSizeParser.format) ?? "unlimited")")
        lines.append("request-body-timeout: \(DurationParser.format(self.http.requestBodyTimeout))")
        lines.append("stream-stall-timeout: \(DurationParser.format(self.http.streamStallTimeout))")
        lines.append("tunnel-idle-timeout: \(DurationParser.format(self.http.tunnelIdleTimeout))")
        lines.append("max-connections: \(self.http.maxConnections.map(String.init) ?? "auto")")
        lines.append("upstream-connect-timeout: \(DurationParser.format(self.upstream.connectTimeout))")
        lines.append("response-header-timeout: \(DurationParser.format(self.upstream.responseHeaderTimeout))")
        lines.append("upstream-idle-timeout: \(DurationParser.format(self.upstream.idleTimeout))")
        lines.append("upstream-max-idle: \(self.upstream.maxIdle)")
        if let app = self.app {
            lines.append("# supervisor mode: -- \(app.command.joined(separator: " "))")
            if let path = app.readyPath { lines.append("app-ready-path: \(YAMLText.scalar(path))") }
            lines.append("app-stop-signal: \(app.stopSignal.rawValue)")
            lines.append("app-forward-signals: [\(app.forwardSignals.map(\.rawValue).joined(separator: ", "))]")
        }
        lines.append("log-level: \(self.logging.level.rawValue)")
        lines.append("log-format: \(self.logging.format.rawValue)")
        lines.append("upstreams:")
        for group in self.groups {
            lines.append("  \(group.name):")
            lines += group.effectiveYAML.map { "    " + $0 }
        }
        lines.append("routes:")
        for route in self.routes {
            let fields = route.effectiveYAML
            lines += fields.enumerated().map { ($0.offset == 0 ? "  - " : "    ") + $0.element }
        }
        lines.append("ready-requires: [\(self.readyRequires.joined(separator: ", "))]")
        return lines.joined(separator: "\n") + "\n"
    }

    /// `drain-delay 5s + drain-timeout 20s + margin 1s = 26s of termination-grace 30s (4s to spare)`.
    public var drainBudgetSummary: String {
        let drain = self.drain
        let spare = drain.terminationGrace - drain.budget
        let tail = spare >= .zero ? "\(DurationParser.format(spare)) to spare" : "\(DurationParser.format(.zero - spare)) short"
        return
            "drain-delay \(DurationParser.format(drain.delay)) + drain-timeout \(DurationParser.format(drain.timeout)) + margin \(DurationParser.format(Drain.margin)) = \(DurationParser.format(drain.budget)) of termination-grace \(DurationParser.format(drain.terminationGrace)) (\(tail))"
    }

    /// Settings given in more than one place with different values, and which one wins: not errors
    /// (the precedence is documented), but a deployment that sets `drain-delay` twice usually meant one.
    ///
    /// ```swift
    /// SluiceConfig.overriddenSettings(in: ConfigSources(flags: ["drain-delay": ["5s"]], environment: ["SLUICE_DRAIN_DELAY": "7s"]))
    /// // ["drain-delay: --drain-delay 5s overrides SLUICE_DRAIN_DELAY 7s"]
    /// ```
    public static func overriddenSettings(in sources: ConfigSources) -> [String] {
        var warnings: [String] = []
        for key in Self.keys {
            var given: [(origin: String, values: [String])] = []
            if let values = sources.flags[key], !values.isEmpty { given.append(("--\(key)", values)) }
            let envName = ConfigSources.environmentName(for: key)
            if let value = sources.environment[envName] {
                given.append((envName, value.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }))
            }
            switch sources.file?[key] {
            case .scalar(let text)?: given.append(("\(key) in \(sources.fileLabel)", [text.trimmingWhitespace()]))
            case .list(let items)?: given.append(("\(key) in \(sources.fileLabel)", items.compactMap { $0.text?.trimmingWhitespace() }))
            case .mapping?, nil: break
            }
            guard let winner = given.first else { continue }
            for other in given.dropFirst() where other.values != winner.values {
                warnings.append(
                    "\(key): \(winner.origin) \(winner.values.joined(separator: ",")) overrides \(other.origin) \(other.values.joined(separator: ","))"
                )
            }
        }
        return warnings
    }
}

extension SluiceConfig.Drain {
    /// What is wrong with this budget for an orchestrator that kills after `gracePeriod` (the pod's
    /// `terminationGracePeriodSeconds`, Compose's `stop_grace_period`): the drain must fit it with the
    /// margin, and ``terminationGrace`` must not promise more time than it gives.
    public func gracePeriodProblems(_ gracePeriod: Duration) -> [String] {
        var problems: [String] = []
        if self.budget > gracePeriod {
            problems.append(
                "drain budget does not fit the grace period: drain-delay \(DurationParser.format(self.delay)) + drain-timeout \(DurationParser.format(self.timeout)) + margin \(DurationParser.format(Self.margin)) = \(DurationParser.format(self.budget)) exceeds the grace period \(DurationParser.format(gracePeriod)); Sluice would be killed while draining"
            )
        }
        if self.terminationGrace > gracePeriod {
            problems.append(
                "termination-grace \(DurationParser.format(self.terminationGrace)) is longer than the grace period \(DurationParser.format(gracePeriod)): Sluice would plan with time it does not have; set them equal"
            )
        }
        return problems
    }
}

extension UpstreamGroup {
    /// The group's effective settings, one YAML line each (without indentation).
    var effectiveYAML: [String] {
        var lines = ["endpoints: [\(self.endpoints.map(\.description).joined(separator: ", "))]"]
        switch self.balance {
        case .hash(let key): lines += ["balance: hash", "hash-on: \(key)"]
        case .roundRobin, .leastRequest, .random: lines.append("balance: \(self.balance)")
        }
        lines.append("retries: \(self.retries)")
        lines.append("retry-buffer: \(ByteSizeParser.format(self.retryBuffer))")
        if let health = self.health {
            let expect = health.expect.count == 1 ? "\(health.expect.lowerBound)" : "\(health.expect.lowerBound)-\(health.expect.upperBound)"
            lines.append(
                "health: {path: \(health.path), interval: \(DurationParser.format(health.interval)), timeout: \(DurationParser.format(health.timeout)), healthy-after: \(health.healthyAfter), unhealthy-after: \(health.unhealthyAfter), expect: \(expect)}"
            )
        } else {
            lines.append("health: off")
        }
        if let outlier = self.outlier {
            lines.append(
                "outlier: {consecutive-failures: \(outlier.consecutiveFailures), base-ejection: \(DurationParser.format(outlier.baseEjection)), max-ejected: \(outlier.maxEjectedPercent)%}"
            )
        } else {
            lines.append("outlier: off")
        }
        lines.append("connect-timeout: \(DurationParser.format(self.connection.connectTimeout))")
        lines.append("response-header-timeout: \(DurationParser.format(self.connection.responseHeaderTimeout))")
        lines.append("idle-timeout: \(DurationParser.format(self.connection.idleTimeout))")
        lines.append("max-idle: \(self.connection.maxIdle)")
        lines.append("dns-refresh: \(DurationParser.format(self.dnsRefresh))")
        if let tls = self.effectiveTLS {
            // Only the keys set; a comment says what the unset ones mean (the text stays valid input).
            let set = [("ca", tls.ca), ("sni", tls.sni), ("cert", tls.cert), ("key", tls.key)].compactMap { key, value in
                value.map { "\(key): \(YAMLText.scalar($0))" }
            }
            var defaults: [String] = []
            if tls.ca == nil { defaults.append("ca: the system CA bundle") }
            if tls.sni == nil { defaults.append("sni: each endpoint's host name") }
            if tls.cert == nil { defaults.append("no client certificate") }
            lines.append("tls: {\(set.joined(separator: ", "))}" + (defaults.isEmpty ? "" : "  # \(defaults.joined(separator: "; "))"))
        }
        return lines
    }
}

extension Route {
    /// The route's keys, one YAML line each; unset optional ones are left out.
    var effectiveYAML: [String] {
        var lines: [String] = []
        if let host = self.host { lines.append("host: \(YAMLText.scalar(host.description))") }
        switch self.path {
        case .prefix(let prefix): lines.append("path-prefix: \(YAMLText.scalar(prefix))")
        case .exact(let path): lines.append("path: \(YAMLText.scalar(path))")
        }
        lines.append("upstream: \(self.upstream)")
        if self.stripPrefix { lines.append("strip-prefix: true") }
        if let hostRewrite = self.hostRewrite { lines.append("host-rewrite: \(YAMLText.scalar(hostRewrite))") }
        if self.retryOn5xx { lines.append("retry-on-5xx: true") }
        if let maxBody = self.maxBodyBytes { lines.append("max-body-size: \(ByteSizeParser.format(maxBody))") }
        return lines
    }
}

/// Text as a YAML plain scalar when it can be one, else double-quoted.
enum YAMLText {
    static func scalar(_ text: String) -> String {
        let special: Set<Character> = ["*", "&", "!", "{", "}", "[", "]", ",", "#", "|", ">", "@", "`", "\"", "'", "%", "?", ":", "-"]
        let plain =
            !text.isEmpty && !special.contains(text.first!) && !text.contains(": ") && !text.contains(" #")
            && text.first?.isWhitespace == false && text.last?.isWhitespace == false
        return plain ? text : JSONText.string(text)
    }
}

/// A few JSON values as text, without Foundation (check-config's report, the JSON log lines).
public enum JSONText {
    /// A JSON string literal.
    public static func string(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    public static func array(_ items: [String]) -> String { "[" + items.joined(separator: ", ") + "]" }

    public static func object(_ fields: [(String, String)]) -> String {
        "{" + fields.map { "\(Self.string($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
    }

    /// Seconds as a JSON number: `5`, `0.25`.
    public static func seconds(_ duration: Duration) -> String {
        let nanos = duration.nanosecondsClamped
        if nanos % 1_000_000_000 == 0 { return String(nanos / 1_000_000_000) }
        return String(duration.secondsDouble)
    }
}

/// The outcome of checking a configuration (`sluice check-config`): the configuration when it is
/// valid, every error, the warnings, and the orchestrator's grace period when one was given.
///
/// ```swift
/// let check = ConfigCheck(sources, defaultThreads: 2, gracePeriod: .seconds(30))
/// check.isValid   // errors.isEmpty
/// check.json      // {"valid": true, "errors": [], ...}
/// ```
public struct ConfigCheck: Sendable {
    /// The configuration, when it could be read (it may still not fit ``gracePeriod``).
    public var config: SluiceConfig?
    /// Everything wrong: the configuration's errors, or the grace period's problems.
    public var errors: [ConfigError]
    /// Settings overridden by another source with a different value (``SluiceConfig/overriddenSettings(in:)``).
    public var warnings: [String]
    /// The orchestrator's grace period the drain must fit, when given (`--grace-period`).
    public var gracePeriod: Duration?

    public init(_ sources: ConfigSources, defaultThreads: Int, gracePeriod: Duration? = nil, errors: [ConfigError] = []) {
        self.errors = errors
        self.warnings = SluiceConfig.overriddenSettings(in: sources)
        self.gracePeriod = gracePeriod
        do {
            let config = try SluiceConfig.read(sources, defaultThreads: defaultThreads)
            if errors.isEmpty { self.config = config }
            if let gracePeriod { self.errors += config.drain.gracePeriodProblems(gracePeriod).map(ConfigError.init) }
        } catch {
            self.errors += error.errors
        }
    }

    /// A check that could not read the settings at all (an unreadable config file): only `errors`.
    public init(errors: [ConfigError]) {
        self.config = nil
        self.errors = errors
        self.warnings = []
        self.gracePeriod = nil
    }

    public var isValid: Bool { self.errors.isEmpty }

    /// One JSON object: `valid`, `errors`, `warnings`, `grace_period_seconds` (or null), and `config`
    /// (null when it could not be read) with `listen`, `admin`, `admin_port`, `drain` (each duration as
    /// text and in seconds: `delay`, `timeout`, `margin`, `budget`, `termination_grace`, `quiet` (or
    /// null), `delay_min`; and `report`), `tunnel_idle_timeout` (and `tunnel_idle_timeout_seconds`),
    /// `groups`, `routes` and `app` (supervisor mode: `command`, `ready_path`, `stop_signal`,
    /// `forward_signals`; null without an app).
    public var json: String {
        var fields: [(String, String)] = [
            ("valid", self.isValid ? "true" : "false"),
            ("errors", JSONText.array(self.errors.map { JSONText.string($0.message) })),
            ("warnings", JSONText.array(self.warnings.map(JSONText.string))),
            ("grace_period_seconds", self.gracePeriod.map(JSONText.seconds) ?? "null"),
        ]
        if let config = self.config {
            let drain = config.drain
            func duration(_ name: String, _ value: Duration) -> [(String, String)] {
                [(name, JSONText.string(DurationParser.format(value))), (name + "_seconds", JSONText.seconds(value))]
            }
            let drainFields =
                duration("delay", drain.delay) + duration("timeout", drain.timeout) + duration("margin", SluiceConfig.Drain.margin)
                + duration("budget", drain.budget) + duration("termination_grace", drain.terminationGrace)
                + [
                    ("quiet", drain.quiet.map { JSONText.string(DurationParser.format($0)) } ?? "null"),
                    ("quiet_seconds", drain.quiet.map(JSONText.seconds) ?? "null"),
                ]
                + duration("delay_min", min(drain.delayMin, drain.delay)) + [("report", drain.reportFile.map(JSONText.string) ?? "null")]
            let app = config.app.map { app in
                JSONText.object([
                    ("command", JSONText.array(app.command.map(JSONText.string))),
                    ("ready_path", app.readyPath.map(JSONText.string) ?? "null"),
                    ("stop_signal", JSONText.string(app.stopSignal.rawValue)),
                    ("forward_signals", JSONText.array(app.forwardSignals.map { JSONText.string($0.rawValue) })),
                ])
            }
            let groups = config.groups.map { group in
                JSONText.object([
                    ("name", JSONText.string(group.name)), ("scheme", JSONText.string(group.scheme.rawValue)),
                    ("endpoints", JSONText.array(group.endpoints.map { JSONText.string($0.description) })),
                    ("tls", group.effectiveTLS.map { tls in
                        JSONText.object([
                            ("ca", tls.ca.map(JSONText.string) ?? "null"), ("sni", tls.sni.map(JSONText.string) ?? "null"),
                            ("cert", tls.cert.map(JSONText.string) ?? "null"), ("key", tls.key.map(JSONText.string) ?? "null"),
                        ])
                    } ?? "null"),
                ])
            }
            let routes = config.routes.map { route in
                JSONText.object([
                    ("host", route.host.map { JSONText.string($0.description) } ?? "null"),
                    ("path", JSONText.string(route.path.description)), ("upstream", JSONText.string(route.upstream)),
                ])
            }
            var configFields: [(String, String)] = [
                ("listen", JSONText.array(config.listen.map { JSONText.string($0.address.description) })),
                ("listeners", JSONText.array(config.listen.map(\.jsonText))),
                ("admin", JSONText.string(config.admin.description)), ("admin_port", String(config.admin.port)),
                ("drain", JSONText.object(drainFields)),
            ]
            configFields += duration("tunnel_idle_timeout", config.http.tunnelIdleTimeout)
            configFields += [("groups", JSONText.array(groups)), ("routes", JSONText.array(routes)), ("app", app ?? "null")]
            fields.append(("config", JSONText.object(configFields)))
        } else {
            fields.append(("config", "null"))
        }
        return JSONText.object(fields) + "\n"
    }
}

extension Listener {
    /// `{"address": "0.0.0.0:8443", "scheme": "https", "tls": {...}}` (`tls` null for plaintext).
    var jsonText: String {
        let tls = self.tls.map { tls in
            JSONText.object([
                (
                    "certificates",
                    JSONText.array(tls.certificates.map { JSONText.object([("cert", JSONText.string($0.cert)), ("key", JSONText.string($0.key))]) })
                ),
                ("min_version", JSONText.string(tls.minVersion.rawValue)),
                ("alpn", JSONText.array(tls.alpn.map(JSONText.string))),
            ])
        }
        return JSONText.object([
            ("address", JSONText.string(self.address.description)), ("scheme", JSONText.string(self.scheme.rawValue)),
            ("tls", tls ?? "null"),
        ])
    }
}
