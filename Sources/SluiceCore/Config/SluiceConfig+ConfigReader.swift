/// The three places a setting can come from, highest precedence first: flags, environment, YAML file.
///
/// Keys are the flag names without dashes in front (`drain-delay`). Environment variables are
/// `SLUICE_` followed by the key upper-cased with `-` as `_` (`SLUICE_DRAIN_DELAY`); a repeatable
/// setting takes a comma-separated list there. Unknown `SLUICE_*` variables are ignored (tools set
/// their own), unknown keys in the file are errors.
public struct ConfigSources: Sendable {
    public var flags: [String: [String]]
    public var environment: [String: String]
    public var file: [String: [String]]
    /// The file's path, for messages.
    public var fileName: String?

    public init(flags: [String: [String]] = [:], environment: [String: String] = [:], file: [String: [String]] = [:], fileName: String? = nil) {
        self.flags = flags
        self.environment = environment
        self.file = file
        self.fileName = fileName
    }

    public static func environmentName(for key: String) -> String {
        "SLUICE_" + key.uppercased().replacingDashesWithUnderscores()
    }

    /// The winning values for `key` and where they came from.
    func lookup(_ key: String) -> (values: [String], origin: String)? {
        if let values = self.flags[key], !values.isEmpty { return (values, "--\(key)") }
        let envName = Self.environmentName(for: key)
        if let value = self.environment[envName] {
            let values = value.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
            return (values, envName)
        }
        if let values = self.file[key] { return (values, "\(key) in \(self.fileName ?? "the config file")") }
        return nil
    }
}

/// One thing wrong with the configuration, phrased for a person: it names the setting, the value and what is accepted.
public struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

/// All that was wrong, reported at once.
public struct ConfigErrors: Error, Equatable, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]
    public init(errors: [ConfigError]) { self.errors = errors }
    public var description: String { self.errors.map(\.message).joined(separator: "\n") }
}

extension SluiceConfig {
    /// Resolves the configuration from its sources, reporting every error at once.
    ///
    /// - Parameter defaultThreads: the CPUs this process may run on (the caller reads its affinity mask).
    public static func read(_ sources: ConfigSources, defaultThreads: Int) throws(ConfigErrors) -> SluiceConfig {
        var reader = Reader(sources: sources)
        var config = SluiceConfig()
        config.threads = max(1, defaultThreads)

        for key in sources.file.keys.sorted() where !Self.keys.contains(key) {
            reader.errors.append(ConfigError("unknown setting \"\(key)\" in \(sources.fileName ?? "the config file"); known settings: \(Self.keys.joined(separator: ", "))"))
        }

        reader.list("listen", HostPort.accepted, into: &config.listen) { HostPort(parsing: $0) }
        reader.list("upstream", UpstreamURL.accepted, into: &config.upstreams) { UpstreamURL(parsing: $0) }
        reader.one("admin", HostPort.accepted, into: &config.admin) { HostPort(parsing: $0) }
        reader.one("threads", "a whole number from 1 to 256", into: &config.threads) { Int($0).flatMap { (1...256).contains($0) ? $0 : nil } }
        reader.duration("drain-delay", into: &config.drain.delay)
        reader.duration("drain-timeout", into: &config.drain.timeout)
        reader.duration("termination-grace", into: &config.drain.terminationGrace)
        reader.duration("drain-idle-quiet", into: &config.drain.idleQuietPeriod)
        reader.duration("request-header-timeout", positive: true, into: &config.http.requestHeaderTimeout)
        reader.duration("idle-timeout", positive: true, into: &config.http.idleTimeout)
        reader.one("max-header-size", ByteSizeParser.accepted + ", at least 1KiB", into: &config.http.maxHeaderBytes) {
            ByteSizeParser.parse($0).flatMap { $0 >= 1024 ? $0 : nil }
        }
        reader.one("max-body-size", ByteSizeParser.accepted + ", or unlimited", into: &config.http.maxBodyBytes) { text -> Int?? in
            if text.lowercased() == "unlimited" { return .some(nil) }
            return ByteSizeParser.parse(text).map { .some($0) }
        }
        reader.duration("request-body-timeout", positive: true, into: &config.http.requestBodyTimeout)
        reader.duration("stream-stall-timeout", positive: true, into: &config.http.streamStallTimeout)
        reader.one("max-connections", "a whole number from 1 to 10000000, or auto", into: &config.http.maxConnections) { text -> Int?? in
            if text.lowercased() == "auto" { return .some(nil) }
            return Int(text).flatMap { (1...10_000_000).contains($0) ? .some($0) : nil }
        }
        reader.duration("upstream-connect-timeout", positive: true, into: &config.upstream.connectTimeout)
        reader.duration("response-header-timeout", positive: true, into: &config.upstream.responseHeaderTimeout)
        reader.duration("upstream-idle-timeout", positive: true, into: &config.upstream.idleTimeout)
        reader.one("upstream-max-idle", "a whole number from 0 to 100000", into: &config.upstream.maxIdle) {
            Int($0).flatMap { (0...100_000).contains($0) ? $0 : nil }
        }
        reader.one("log-level", "one of " + Logging.Level.allCases.map(\.rawValue).joined(separator: ", "), into: &config.logging.level) {
            Logging.Level(rawValue: $0.lowercased())
        }
        reader.one("log-format", "text or json", into: &config.logging.format) { Logging.Format(rawValue: $0.lowercased()) }

        var errors = reader.errors
        if config.upstreams.isEmpty && !reader.failedKeys.contains("upstream") {
            errors.append(ConfigError("no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to \(UpstreamURL.accepted)"))
        }
        if let first = config.upstreams.first, let other = config.upstreams.first(where: { $0.scheme != first.scheme }) {
            errors.append(ConfigError("--upstream mixes schemes (\(first) and \(other)): all upstreams must be http:// or all h2c://"))
        }
        if config.listen.isEmpty && !reader.failedKeys.contains("listen") {
            errors.append(ConfigError("no listener configured: set --listen to \(HostPort.accepted)"))
        }
        let budgetKeys: Set<String> = ["drain-delay", "drain-timeout", "termination-grace"]
        if reader.failedKeys.isDisjoint(with: budgetKeys) {
            let needed = config.drain.delay + config.drain.timeout + Drain.margin
            if needed > config.drain.terminationGrace {
                errors.append(
                    ConfigError(
                        "drain budget does not fit: drain-delay \(DurationParser.format(config.drain.delay)) + drain-timeout \(DurationParser.format(config.drain.timeout)) + margin \(DurationParser.format(Drain.margin)) = \(DurationParser.format(needed)) exceeds termination-grace \(DurationParser.format(config.drain.terminationGrace)); shorten drain-delay or drain-timeout, or raise termination-grace together with the pod's terminationGracePeriodSeconds"
                    )
                )
            }
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        config.applyShortForm()
        return config
    }

    private struct Reader {
        var sources: ConfigSources
        var errors: [ConfigError] = []
        var failedKeys: Set<String> = []

        mutating func fail(_ key: String, _ origin: String, _ value: String, _ accepted: String) {
            self.failedKeys.insert(key)
            self.errors.append(ConfigError("invalid \(origin) \"\(value)\": expected \(accepted)"))
        }

        mutating func one<T>(_ key: String, _ accepted: String, into target: inout T, _ parse: (String) -> T?) {
            guard let (values, origin) = self.sources.lookup(key) else { return }
            guard values.count == 1 else {
                self.failedKeys.insert(key)
                self.errors.append(ConfigError("\(origin) is given \(values.count) times but takes one value"))
                return
            }
            if let value = parse(values[0]) { target = value } else { self.fail(key, origin, values[0], accepted) }
        }

        mutating func list<T>(_ key: String, _ accepted: String, into target: inout [T], _ parse: (String) -> T?) {
            guard let (values, origin) = self.sources.lookup(key) else { return }
            var parsed: [T] = []
            for value in values {
                if let item = parse(value) { parsed.append(item) } else { self.fail(key, origin, value, accepted) }
            }
            if !self.failedKeys.contains(key) { target = parsed }
        }

        mutating func duration(_ key: String, positive: Bool = false, into target: inout Duration) {
            let accepted = positive ? DurationParser.accepted + ", greater than zero" : DurationParser.accepted
            self.one(key, accepted, into: &target) { text in
                guard let duration = DurationParser.parse(text), !positive || duration > .zero else { return nil }
                return duration
            }
        }
    }
}

extension String {
    func replacingDashesWithUnderscores() -> String { String(self.map { $0 == "-" ? "_" : $0 }) }
}
