/// The three places a setting can come from, highest precedence first: flags, environment, YAML file.
///
/// Keys are the flag names without dashes in front (`drain-delay`). Environment variables are
/// `SLUICE_` followed by the key upper-cased with `-` as `_` (`SLUICE_DRAIN_DELAY`); a repeatable
/// setting takes a comma-separated list there. Unknown `SLUICE_*` variables are ignored (tools set
/// their own), unknown keys in the file are errors.
///
/// The file is a ``ConfigNode`` tree: the flat keys (`drain-delay: 5s`, `upstream: [URL, ...]`) and
/// the keys only a file can hold (`upstreams:`, `routes:`, `ready-requires:`, `listen:` entries with
/// `address:`), DESIGN.md §5.
public struct ConfigSources: Sendable {
    public var flags: [String: [String]]
    public var environment: [String: String]
    /// The YAML file's top-level mapping; `nil` when there is no file (or it is empty).
    public var file: ConfigNode?
    /// The file's path, for messages.
    public var fileName: String?
    /// Everything after `--` on the command line (supervisor mode); `nil` when there is no `--`.
    public var appCommand: [String]?

    public init(
        flags: [String: [String]] = [:], environment: [String: String] = [:], file: ConfigNode? = nil, fileName: String? = nil,
        appCommand: [String]? = nil
    ) {
        self.appCommand = appCommand
        self.flags = flags
        self.environment = environment
        self.file = file
        self.fileName = fileName
    }

    public static func environmentName(for key: String) -> String {
        "SLUICE_" + key.uppercased().replacingDashesWithUnderscores()
    }

    /// How messages name the file: its path, or "the config file".
    var fileLabel: String { self.fileName ?? "the config file" }

    /// The values a flag or the environment gives `key`, and where they came from (the file's are
    /// read by ``SluiceConfig/read(_:defaultThreads:)``, which checks their shape).
    func commandLineOrEnvironment(_ key: String) -> (values: [String], origin: String)? {
        if let values = self.flags[key], !values.isEmpty { return (values, "--\(key)") }
        let envName = Self.environmentName(for: key)
        if let value = self.environment[envName] {
            let values = value.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
            return (values, envName)
        }
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
    /// 1. Unknown keys of the file first (in name order), then each flat setting in the order of
    ///    ``SluiceConfig/settings`` (flags over environment over file over defaults), then the groups
    ///    (`upstreams:` or the short form `--upstream`), the routes, `ready-requires:`, and last the
    ///    drain budget.
    /// 2. Flat settings name their source: `invalid --drain-delay "5x": ...`,
    ///    `invalid drain-delay in sluice.yaml "5x": ...`. The file's own structure names the path:
    ///    `upstreams.api.health.interval: "2x" is not a duration (500ms, 5s, 1m30s)`.
    /// 3. `--upstream` (or `SLUICE_UPSTREAM`, or the file's `upstream:`) is the short form: one group
    ///    ``UpstreamGroup/defaultName`` with every URL, one route `/` to it. `upstreams:` names the
    ///    groups instead; giving both is an error.
    /// 4. Group connection settings default to the global ones (`--upstream-connect-timeout`,
    ///    `--response-header-timeout`, `--upstream-idle-timeout`, `--upstream-max-idle`).
    /// 5. ``SluiceConfig/upstreams`` holds the short form's URLs, or the first group's endpoints, for
    ///    the data path that does not route yet.
    ///
    /// ```swift
    /// let config = try SluiceConfig.read(ConfigSources(flags: ["upstream": ["http://127.0.0.1:3000"]]), defaultThreads: 2)
    /// config.groups.map(\.name)  // ["default"]
    /// config.routes              // [Route(upstream: "default")], path-prefix /
    /// ```
    ///
    /// - Parameter defaultThreads: the CPUs this process may run on (the caller reads its affinity mask).
    public static func read(_ sources: ConfigSources, defaultThreads: Int) throws(ConfigErrors) -> SluiceConfig {
        var config = SluiceConfig()
        config.threads = max(1, defaultThreads)
        var fileReader = FileReader(sources: sources)
        let flatFile = fileReader.flatSettings()
        var reader = Reader(sources: sources, file: flatFile)
        reader.errors = fileReader.unknownKeyErrors

        // Flags and the environment give plaintext addresses; the file's `listen:` may hold TLS ones.
        if sources.commandLineOrEnvironment("listen") != nil {
            reader.list("listen", HostPort.accepted, into: &config.listen) { HostPort(parsing: $0).map { Listener($0) } }
        } else if let listeners = fileReader.listeners {
            config.listen = listeners
        }
        reader.tlsShortForm(into: &config.listen)
        reader.list("upstream", UpstreamURL.accepted, into: &config.upstreams) { UpstreamURL(parsing: $0) }
        reader.one("admin", HostPort.accepted, into: &config.admin) { HostPort(parsing: $0) }
        reader.one("threads", "a whole number from 1 to 256", into: &config.threads) { Int($0).flatMap { (1...256).contains($0) ? $0 : nil } }
        reader.duration("drain-delay", into: &config.drain.delay)
        reader.duration("drain-timeout", into: &config.drain.timeout)
        reader.duration("termination-grace", into: &config.drain.terminationGrace)
        reader.duration("drain-idle-quiet", into: &config.drain.idleQuietPeriod)
        config.drain.quiet = reader.given("drain-quiet", DurationParser.accepted + ", greater than zero") { text in
            DurationParser.parse(text).flatMap { $0 > .zero ? $0 : nil }
        }
        reader.duration("drain-delay-min", into: &config.drain.delayMin)
        config.drain.reportFile = reader.given("drain-report", "the path of a file to write") { $0.isEmpty ? nil : $0 }
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
        reader.duration("tunnel-idle-timeout", positive: true, into: &config.http.tunnelIdleTimeout)
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
        config.app = reader.app(command: sources.appCommand)
        reader.one("log-level", "one of " + Logging.Level.allCases.map(\.rawValue).joined(separator: ", "), into: &config.logging.level) {
            Logging.Level(rawValue: $0.lowercased())
        }
        reader.one("log-format", "text or json", into: &config.logging.format) { Logging.Format(rawValue: $0.lowercased()) }

        var errors = reader.errors + fileReader.shapeErrors
        let shortForm = reader.lookup("upstream")
        let groupsNode = sources.file?[Self.upstreamsKey]
        switch (shortForm, groupsNode) {
        case (let shortForm?, _?):
            errors.append(
                ConfigError(
                    "\(shortForm.origin) and upstreams in \(sources.fileLabel) are both given: use one (--upstream is the short form of one group \"\(UpstreamGroup.defaultName)\"; upstreams: names groups)"
                )
            )
        case (nil, let groupsNode?):
            var tree = TreeReader()
            config.groups = tree.groups(groupsNode, defaults: config.upstream)
            errors += tree.errors
        case (_?, nil), (nil, nil):
            if config.upstreams.isEmpty && !reader.failedKeys.contains("upstream") {
                errors.append(ConfigError("no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to \(UpstreamURL.accepted)"))
            }
            if let first = config.upstreams.first, let other = config.upstreams.first(where: { $0.scheme != first.scheme }) {
                errors.append(ConfigError("--upstream mixes schemes (\(first) and \(other)): all upstreams must share one scheme: http://, https:// or h2c://"))
            }
            if !config.upstreams.isEmpty { config.applyShortForm() }
        }
        // Names the routes may use: every group given, valid or not, so that a bad group is reported
        // once and not again by every route that names it.
        var groupNames = groupsNode?.entries?.map(\.key) ?? []
        if shortForm != nil { groupNames.insert(UpstreamGroup.defaultName, at: 0) }
        var tree = TreeReader()
        let routesNode = sources.file?[Self.routesKey]
        // With both forms given, which groups exist is unknown: only routes that were written are checked.
        if routesNode != nil || shortForm == nil || groupsNode == nil {
            config.routes = tree.routes(routesNode, groups: groupNames)
        }
        if let readyNode = sources.file?[Self.readyRequiresKey] {
            config.readyRequires = tree.readyRequires(readyNode, groups: groupNames)
        }
        errors += tree.errors

        // A listener is known by its address (reload keeps, opens and closes listeners by it), so two
        // may not share one, not even port 0.
        var seenAddresses: Set<HostPort> = []
        for listener in config.listen where !seenAddresses.insert(listener.address).inserted {
            errors.append(ConfigError("listen \(listener.address) is given twice; each listener needs an address of its own"))
        }
        if config.listen.isEmpty && !reader.failedKeys.contains("listen") {
            errors.append(ConfigError("no listener configured: set --listen to \(HostPort.accepted)"))
        }
        if let app = config.app, let path = app.readyPath, let first = config.groups.first?.endpoints.first, first.scheme != .http {
            errors.append(
                ConfigError(
                    "app-ready-path \(path) needs an http:// upstream to send GET \(path) to, but the first upstream is \(first); leave app-ready-path out to wait for a TCP connect instead"
                ))
        }
        let budgetKeys: Set<String> = ["drain-delay", "drain-timeout", "termination-grace"]
        if reader.failedKeys.isDisjoint(with: budgetKeys), let problem = config.drain.budgetProblem {
            errors.append(ConfigError(problem))
        }
        if !errors.isEmpty { throw ConfigErrors(errors: errors) }
        return config
    }

    /// The keys only a config file holds (DESIGN.md §5), after the flags' keys in ``fileKeys``.
    static let upstreamsKey = "upstreams"
    static let routesKey = "routes"
    static let readyRequiresKey = "ready-requires"

    /// Every top-level key a config file may hold: the flags' keys, then `upstreams`, `routes` and
    /// `ready-requires`.
    public static let fileKeys: [String] = keys + [upstreamsKey, routesKey, readyRequiresKey]

    /// Reads the flat settings out of the file's tree and checks its top level: unknown keys, and
    /// flat keys holding what they cannot (a mapping, a list of lists).
    private struct FileReader {
        var sources: ConfigSources
        var unknownKeyErrors: [ConfigError] = []
        var shapeErrors: [ConfigError] = []
        /// The file's `listen:` entries; `nil` when it has none (or they have errors).
        var listeners: [Listener]?

        /// The flat keys' values as text, keyed by name; problems go to the two error lists.
        mutating func flatSettings() -> [String: [String]] {
            guard let file = self.sources.file else { return [:] }
            guard let entries = file.entries else {
                if file != .scalar("") {
                    self.shapeErrors.append(ConfigError("config file \(self.sources.fileLabel) must be a mapping of settings, e.g. \"drain-delay: 5s\""))
                }
                return [:]
            }
            let known = Set(SluiceConfig.fileKeys)
            for key in Set(entries.map(\.key)).sorted() where !known.contains(key) {
                self.unknownKeyErrors.append(
                    ConfigError("unknown setting \"\(key)\" in \(self.sources.fileLabel); known settings: \(SluiceConfig.fileKeys.joined(separator: ", "))")
                )
            }
            var flat: [String: [String]] = [:]
            var seen: Set<String> = []
            for entry in entries where SluiceConfig.keys.contains(entry.key) {
                guard seen.insert(entry.key).inserted else {
                    self.shapeErrors.append(ConfigError("\(entry.key) in \(self.sources.fileLabel) is given twice"))
                    continue
                }
                if entry.key == "listen" {
                    self.listeners = self.listeners(entry.value)
                    continue
                }
                switch entry.value {
                case .scalar(let text):
                    flat[entry.key] = [text]
                case .list(let items):
                    let texts = items.compactMap(\.text)
                    if texts.count == items.count {
                        flat[entry.key] = texts
                    } else {
                        self.shapeErrors.append(ConfigError("\(entry.key) in \(self.sources.fileLabel) must be a list of plain values"))
                    }
                case .mapping:
                    self.shapeErrors.append(ConfigError("\(entry.key) in \(self.sources.fileLabel) must be a value or a list of values, not a mapping"))
                }
            }
            return flat
        }

        /// `listen:` entries: a plain `HOST:PORT` (plaintext), or `{address: HOST:PORT, tls: {...}}`.
        mutating func listeners(_ node: ConfigNode) -> [Listener]? {
            let path = ConfigPath.key("listen")
            let items: [ConfigNode]
            switch node {
            case .scalar: items = [node]
            case .list(let list): items = list
            case .mapping: items = [node]
            }
            var listeners: [Listener] = []
            var tree = TreeReader()
            for (index, item) in items.enumerated() {
                let at = path.index(index)
                if let text = item.text {
                    if let address = HostPort(parsing: text) {
                        listeners.append(Listener(address))
                    } else {
                        tree.error(at, "\"\(text)\" is not HOST:PORT (0.0.0.0:8080, [::1]:8080; port 0-65535)")
                    }
                    continue
                }
                guard let entries = tree.mapping(item, at: at, known: ["address", "tls"], example: "{address: 0.0.0.0:8443, tls: {...}}") else {
                    continue
                }
                let tls = entries["tls"].flatMap { tree.tlsSettings($0, at: at.key("tls")) }
                guard let address = entries["address"] else {
                    tree.error(at.key("address"), "missing; e.g. address: 0.0.0.0:8080")
                    continue
                }
                guard let text = tree.scalar(address, at: at.key("address")) else { continue }
                if let hostPort = HostPort(parsing: text) {
                    listeners.append(Listener(hostPort, tls: tls))
                } else {
                    tree.error(at.key("address"), "\"\(text)\" is not HOST:PORT (0.0.0.0:8080, [::1]:8080; port 0-65535)")
                }
            }
            self.shapeErrors += tree.errors
            return tree.errors.isEmpty ? listeners : nil
        }
    }

    private struct Reader {
        var sources: ConfigSources
        /// The file's flat settings as text.
        var file: [String: [String]]
        var errors: [ConfigError] = []
        var failedKeys: Set<String> = []

        /// The winning values for `key` and where they came from.
        func lookup(_ key: String) -> (values: [String], origin: String)? {
            if let given = self.sources.commandLineOrEnvironment(key) { return given }
            if let values = self.file[key] { return (values, "\(key) in \(self.sources.fileLabel)") }
            return nil
        }

        mutating func fail(_ key: String, _ origin: String, _ value: String, _ accepted: String) {
            self.failedKeys.insert(key)
            self.errors.append(ConfigError("invalid \(origin) \"\(value)\": expected \(accepted)"))
        }

        mutating func one<T>(_ key: String, _ accepted: String, into target: inout T, _ parse: (String) -> T?) {
            guard let (values, origin) = self.lookup(key) else { return }
            guard values.count == 1 else {
                self.failedKeys.insert(key)
                self.errors.append(ConfigError("\(origin) is given \(values.count) times but takes one value"))
                return
            }
            if let value = parse(values[0]) { target = value } else { self.fail(key, origin, values[0], accepted) }
        }

        mutating func list<T>(_ key: String, _ accepted: String, into target: inout [T], _ parse: (String) -> T?) {
            guard let (values, origin) = self.lookup(key) else { return }
            var parsed: [T] = []
            for value in values {
                if let item = parse(value) { parsed.append(item) } else { self.fail(key, origin, value, accepted) }
            }
            if !self.failedKeys.contains(key) { target = parsed }
        }

        /// The value of a setting without a default: `nil` when not given or invalid (then reported).
        mutating func given<T>(_ key: String, _ accepted: String, _ parse: (String) -> T?) -> T? {
            guard self.lookup(key) != nil else { return nil }
            var value: T?
            self.one(key, accepted, into: &value) { parse($0).map { .some($0) } }
            return value
        }

        /// `--listen-tls HOST:PORT --tls-cert FILE --tls-key FILE`: one TLS listener, after the others.
        /// The three come together; an address that another listener already has is an error.
        mutating func tlsShortForm(into listeners: inout [Listener]) {
            let address = self.given("listen-tls", HostPort.accepted) { HostPort(parsing: $0) }
            let cert = self.given("tls-cert", "the path of a PEM certificate file") { $0.isEmpty ? nil : $0 }
            let key = self.given("tls-key", "the path of a PEM private key file") { $0.isEmpty ? nil : $0 }
            let given = ["listen-tls", "tls-cert", "tls-key"].compactMap { self.lookup($0)?.origin }
            guard !given.isEmpty, self.failedKeys.isDisjoint(with: ["listen-tls", "tls-cert", "tls-key"]) else { return }
            guard let address, let cert, let key else {
                self.failedKeys.insert("listen-tls")
                self.errors.append(
                    ConfigError("\(given.joined(separator: " and ")) given alone: a TLS listener needs all three of --listen-tls HOST:PORT, --tls-cert FILE and --tls-key FILE")
                )
                return
            }
            if listeners.contains(where: { $0.address == address }) {
                self.failedKeys.insert("listen-tls")
                self.errors.append(ConfigError("\(given[0]) \(address) is also a plaintext listener; one address serves one of them"))
                return
            }
            listeners.append(Listener(address, tls: TLSSettings(certificates: [.init(cert: cert, key: key)])))
        }

        /// Supervisor mode: the command after `--` and the `app-*` settings, which need it.
        mutating func app(command: [String]?) -> SluiceConfig.App? {
            let readyPath = self.given("app-ready-path", "a path starting with /, e.g. /healthz") { path -> String? in
                path.hasPrefix("/") && !path.contains(where: { $0 == " " || $0.isNewline }) ? path : nil
            }
            let stopSignal = self.given("app-stop-signal", "one of " + SignalName.stopSignals.map(\.rawValue).joined(separator: ", ")) { text in
                SignalName(parsing: text).flatMap { SignalName.stopSignals.contains($0) ? $0 : nil }
            }
            var forward: [SignalName]?
            if let (values, origin) = self.lookup("app-forward-signals") {
                let accepted =
                    "a comma-separated list of " + SignalName.forwardable.map(\.rawValue).joined(separator: ", ")
                    + " (HUP stays Sluice's: it reloads the configuration; TERM, INT and QUIT start Sluice's drain)"
                var names: [SignalName] = []
                for part in values.flatMap({ $0.split(separator: ",") }).map({ String($0).trimmingWhitespace() }) {
                    if let name = SignalName(parsing: part), SignalName.forwardable.contains(name) {
                        if !names.contains(name) { names.append(name) }
                    } else {
                        self.fail("app-forward-signals", origin, part, accepted)
                    }
                }
                if !self.failedKeys.contains("app-forward-signals") { forward = names }
            }
            guard let command else {
                for key in ["app-ready-path", "app-stop-signal", "app-forward-signals"] where !self.failedKeys.contains(key) {
                    guard let origin = self.lookup(key)?.origin else { continue }
                    self.failedKeys.insert(key)
                    self.errors.append(ConfigError("\(origin) is a supervisor-mode setting, but no app is given: put its command after --, e.g. sluice --upstream http://127.0.0.1:3000 -- node server.js"))
                }
                return nil
            }
            guard command.first.map({ !$0.isEmpty }) == true else {
                self.errors.append(ConfigError("-- is given without a command: put the app's command after it, e.g. -- node server.js"))
                return nil
            }
            var app = SluiceConfig.App(command: command)
            app.readyPath = readyPath
            if let stopSignal { app.stopSignal = stopSignal }
            if let forward { app.forwardSignals = forward }
            return app
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

extension SluiceConfig.Drain {
    /// `drain-delay + drain-timeout + margin`: how long a drain may take before Sluice exits.
    public var budget: Duration { self.delay + self.timeout + Self.margin }

    /// Why the budget does not fit ``terminationGrace``, or `nil` when it does.
    public var budgetProblem: String? {
        guard self.budget > self.terminationGrace else { return nil }
        return
            "drain budget does not fit: drain-delay \(DurationParser.format(self.delay)) + drain-timeout \(DurationParser.format(self.timeout)) + margin \(DurationParser.format(Self.margin)) = \(DurationParser.format(self.budget)) exceeds termination-grace \(DurationParser.format(self.terminationGrace)); shorten drain-delay or drain-timeout, or raise termination-grace together with the pod's terminationGracePeriodSeconds"
    }
}

extension Array where Element == ConfigNode.Entry {
    /// The value under `key` (the first, should a key appear twice).
    subscript(key: String) -> ConfigNode? { self.first { $0.key == key }?.value }
}

extension String {
    func replacingDashesWithUnderscores() -> String { String(self.map { $0 == "-" ? "_" : $0 }) }
}
