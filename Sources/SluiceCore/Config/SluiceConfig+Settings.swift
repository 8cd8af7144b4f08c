extension SluiceConfig {
    /// One setting as a person gives it, written once: the command line, the environment, the config
    /// file, `--help` and the list of known keys all derive from ``SluiceConfig/settings``.
    ///
    /// 1. `--<name>` is the flag, `SLUICE_<NAME>` (upper-cased, dashes as underscores) the environment
    ///    variable and `<name>` the config file key.
    /// 2. A repeatable setting may be given more than once (comma-separated in the environment, a list
    ///    in the file); any other is an error when given twice.
    /// 3. What a value means and which values are accepted is the reader's business
    ///    (``SluiceConfig/read(_:defaultThreads:)``); here is only what `--help` says about it.
    ///
    /// ```swift
    /// SluiceConfig.settings.map { "--\($0.name) \($0.value)" }  // ["--listen HOST:PORT", "--upstream URL", ...]
    /// ```
    public struct Setting: Sendable, Equatable {
        /// The flag name without dashes in front, e.g. `drain-delay`.
        public var name: String
        /// What a value looks like, for `--help`: `DURATION`, `HOST:PORT`.
        public var value: String
        /// One or two sentences for `--help`, ending with the default.
        public var help: String
        /// Whether the setting may be given more than once.
        public var repeatable: Bool

        public init(_ name: String, _ value: String, _ help: String, repeatable: Bool = false) {
            self.name = name
            self.value = value
            self.help = help
            self.repeatable = repeatable
        }
    }

    /// Every setting, in the order `--help` and error messages list them.
    public static let settings: [Setting] = [
        Setting("listen", "HOST:PORT", "Where clients connect (plaintext: HTTP/1.1 and h2c); repeatable. Default 0.0.0.0:8080.", repeatable: true),
        Setting("listen-tls", "HOST:PORT", "A TLS listener, with --tls-cert and --tls-key; ALPN picks HTTP/2 or HTTP/1.1. Default none."),
        Setting("tls-cert", "FILE", "PEM certificate chain (leaf first) of --listen-tls; reloaded when the file changes."),
        Setting("tls-key", "FILE", "PEM private key of --tls-cert."),
        Setting(
            "upstream", "URL",
            "Upstream URL, e.g. http://127.0.0.1:3000, or h2c://127.0.0.1:50051 for HTTP/2 (gRPC); repeatable, round-robin.",
            repeatable: true),
        Setting("admin", "HOST:PORT", "Where /livez, /readyz, /status and /metrics are served. Default 0.0.0.0:9901."),
        Setting("threads", "N", "Event loops. Default: the CPUs this process may run on."),
        Setting("drain-delay", "DURATION", "How long readiness fails while traffic is still served. Default 5s."),
        Setting("drain-timeout", "DURATION", "How long in-flight requests may finish once listeners close. Default 20s."),
        Setting("termination-grace", "DURATION", "The pod's terminationGracePeriodSeconds; the drain must fit. Default 30s."),
        Setting("drain-quiet", "DURATION", "End the delay once no new connection came for this long (within --drain-delay-min and --drain-delay). Default off."),
        Setting("drain-delay-min", "DURATION", "With --drain-quiet, the shortest delay. Default 2s."),
        Setting("drain-report", "FILE", "Write the drain's timeline (phases, arrivals per 100 ms) here as JSON at exit. Default none."),
        Setting("drain-idle-quiet", "DURATION", "While draining, an idle connection closes after this much quiet. Default 250ms."),
        Setting("request-header-timeout", "DURATION", "A request head must arrive within this. Default 30s."),
        Setting("idle-timeout", "DURATION", "Idle keep-alive client connections close after this. Default 60s."),
        Setting("max-header-size", "SIZE", "Largest request head; larger gets 431. Default 32KiB."),
        Setting("max-body-size", "SIZE", "Largest request body; larger gets 413. Default unlimited."),
        Setting("request-body-timeout", "DURATION", "Longest gap between request body bytes; then 408 (or abort). Default 30s."),
        Setting("stream-stall-timeout", "DURATION", "HTTP/2 streams stalled on the client's flow control are reset after this. Default 30s."),
        Setting("tunnel-idle-timeout", "DURATION", "WebSocket and other upgraded connections close after this long without bytes. Default 1h."),
        Setting("max-connections", "N", "Most client connections at once; past it accepting pauses. Default auto (from the open-file limit)."),
        Setting("upstream-connect-timeout", "DURATION", "Upstream connect timeout (502 after). Default 5s."),
        Setting("response-header-timeout", "DURATION", "Upstream response head timeout (504 after). Default 60s."),
        Setting("upstream-idle-timeout", "DURATION", "Pooled upstream connections close after this idle time. Default 4s."),
        Setting("upstream-max-idle", "N", "Idle upstream connections kept per upstream and loop. Default 512."),
        Setting("app-ready-path", "PATH", "Supervisor mode (-- CMD): ready once GET PATH on the upstream answers 2xx/3xx. Default: a TCP connect."),
        Setting("app-stop-signal", "SIGNAL", "Supervisor mode: the signal that stops the app once the drain is done. Default TERM."),
        Setting("app-forward-signals", "LIST", "Supervisor mode: signals passed on to the app, e.g. USR1,USR2. Default none.", repeatable: true),
        Setting("log-level", "LEVEL", "trace, debug, info, notice, warning, error or critical. Default info."),
        Setting("log-format", "FORMAT", "text or json. Default text."),
    ]

    /// `--config FILE` (also `SLUICE_CONFIG`): where the file comes from, so a flag but not a file key.
    public static let configFileSetting = Setting("config", "FILE", "YAML file with the same keys as these flags (also SLUICE_CONFIG).")

    /// The flags of the proxy's command line: `--config` and every setting.
    public static let commandLineSettings: [Setting] = [configFileSetting] + settings

    /// The flag names, which are also the config file's flat keys (``fileKeys`` adds `upstreams`,
    /// `routes` and `ready-requires`, which only a file holds).
    public static let keys: [String] = settings.map(\.name)

    /// Keys that may be given more than once.
    public static let repeatableKeys: Set<String> = Set(settings.filter(\.repeatable).map(\.name))
}
