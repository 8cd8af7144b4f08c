import SluiceCore
import Testing

@Suite struct SluiceConfigReaderTests {
    static let upstream = ["upstream": ["http://127.0.0.1:3000"]]
    static let durationAccepted = "a duration such as 500ms, 5s, 1m30s or a bare number of seconds"
    static let hostPortAccepted = "HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:8080, port 0-65535"
    static let upstreamAccepted = "a URL such as http://127.0.0.1:3000, https://api.internal or h2c://127.0.0.1:50051 (scheme http, https or h2c, no path)"
    static let sizeAccepted = "a size such as 32768, 32KiB, 1MiB or 2GiB"
    static let knownKeys =
        "listen, listen-tls, tls-cert, tls-key, upstream, admin, threads, drain-delay, drain-timeout, termination-grace, drain-quiet, drain-delay-min, drain-report, drain-idle-quiet, request-header-timeout, idle-timeout, max-header-size, max-body-size, request-body-timeout, stream-stall-timeout, tunnel-idle-timeout, max-connections, upstream-connect-timeout, response-header-timeout, upstream-idle-timeout, upstream-max-idle, app-ready-path, app-stop-signal, app-forward-signals, log-level, log-format, upstreams, routes, ready-requires"

    /// The error messages for `sources`, or `[]` when the configuration is valid.
    func messages(_ sources: ConfigSources, defaultThreads: Int = 2) -> [String] {
        do {
            _ = try SluiceConfig.read(sources, defaultThreads: defaultThreads)
            return []
        } catch {
            return error.errors.map(\.message)
        }
    }

    // MARK: - Defaults and precedence

    /// With only an upstream given, every other setting has its documented default and threads follows the CPUs.
    @Test func onlyAnUpstreamGivenLeavesEveryDocumentedDefault() throws {
        let config = try SluiceConfig.read(ConfigSources(flags: Self.upstream), defaultThreads: 4)
        #expect(config.listen == [Listener(HostPort(host: "0.0.0.0", port: 8080))])
        #expect(config.upstreams == [UpstreamURL(host: "127.0.0.1", port: 3000)])
        #expect(config.admin == HostPort(host: "0.0.0.0", port: 9901))
        #expect(config.threads == 4)
        #expect(config.drain.delay == .seconds(5))
        #expect(config.drain.timeout == .seconds(20))
        #expect(config.drain.terminationGrace == .seconds(30))
        #expect(config.drain.idleQuietPeriod == .milliseconds(250))
        #expect(SluiceConfig.Drain.margin == .seconds(1))
        #expect(config.http.requestHeaderTimeout == .seconds(30))
        #expect(config.http.idleTimeout == .seconds(60))
        #expect(config.http.maxHeaderBytes == 32768)
        #expect(config.http.maxBodyBytes == nil)
        #expect(config.http.requestBodyTimeout == .seconds(30))
        #expect(config.http.streamStallTimeout == .seconds(30))
        #expect(config.http.tunnelIdleTimeout == .seconds(3600))
        #expect(config.http.maxConnections == nil)
        #expect(SluiceConfig.Drain.partialHeadGrace == .seconds(1))
        #expect(config.upstream.connectTimeout == .seconds(5))
        #expect(config.upstream.responseHeaderTimeout == .seconds(60))
        #expect(config.upstream.idleTimeout == .seconds(4))
        #expect(config.upstream.maxIdle == 512)
        #expect(config.logging.level == .info)
        #expect(config.logging.format == .text)
        var expected = SluiceConfig()
        expected.upstreams = [UpstreamURL(host: "127.0.0.1", port: 3000)]
        expected.threads = 4
        expected.applyShortForm()
        #expect(config == expected)
    }

    /// A CPU count below one still gives one event loop.
    @Test func noCPUsReportedStillGivesOneThread() throws {
        #expect(try SluiceConfig.read(ConfigSources(flags: Self.upstream), defaultThreads: 0).threads == 1)
    }

    /// Every setting given as a flag lands in its typed field, with case-insensitive log level and format.
    @Test func everySettingGivenAsAFlagLandsInItsField() throws {
        let flags: [String: [String]] = [
            "listen": ["127.0.0.1:8081", "[::1]:8082"],
            "listen-tls": ["127.0.0.1:8443"],
            "tls-cert": ["/etc/tls/tls.crt"],
            "tls-key": ["/etc/tls/tls.key"],
            "upstream": ["http://10.0.0.1:3000", "http://10.0.0.2"],
            "admin": ["127.0.0.1:9999"],
            "threads": ["8"],
            "drain-delay": ["2s"],
            "drain-timeout": ["1m"],
            "termination-grace": ["90s"],
            "drain-idle-quiet": ["100ms"],
            "drain-quiet": ["1s"],
            "drain-delay-min": ["500ms"],
            "drain-report": ["/tmp/drain.json"],
            "app-ready-path": ["/healthz"],
            "app-stop-signal": ["SIGINT"],
            "app-forward-signals": ["usr1,USR2", "WINCH"],
            "request-header-timeout": ["15s"],
            "idle-timeout": ["2m"],
            "max-header-size": ["64KiB"],
            "max-body-size": ["10MiB"],
            "request-body-timeout": ["5s"],
            "stream-stall-timeout": ["10s"],
            "tunnel-idle-timeout": ["15m"],
            "max-connections": ["2000"],
            "upstream-connect-timeout": ["1s"],
            "response-header-timeout": ["30s"],
            "upstream-idle-timeout": ["3s"],
            "upstream-max-idle": ["0"],
            "log-level": ["DEBUG"],
            "log-format": ["JSON"],
        ]
        #expect(Set(flags.keys) == Set(SluiceConfig.keys))
        let config = try SluiceConfig.read(ConfigSources(flags: flags, appCommand: ["node", "server.js"]), defaultThreads: 2)
        #expect(
            config.listen == [
                Listener(HostPort(host: "127.0.0.1", port: 8081)), Listener(HostPort(host: "::1", port: 8082)),
                Listener(HostPort(host: "127.0.0.1", port: 8443), tls: TLSSettings(certificates: [.init(cert: "/etc/tls/tls.crt", key: "/etc/tls/tls.key")])),
            ])
        #expect(config.upstreams == [UpstreamURL(host: "10.0.0.1", port: 3000), UpstreamURL(host: "10.0.0.2", port: 80)])
        #expect(config.admin == HostPort(host: "127.0.0.1", port: 9999))
        #expect(config.threads == 8)
        #expect(config.drain.delay == .seconds(2))
        #expect(config.drain.timeout == .seconds(60))
        #expect(config.drain.terminationGrace == .seconds(90))
        #expect(config.drain.idleQuietPeriod == .milliseconds(100))
        #expect(config.drain.quiet == .seconds(1))
        #expect(config.drain.delayMin == .milliseconds(500))
        #expect(config.drain.reportFile == "/tmp/drain.json")
        var app = SluiceConfig.App(command: ["node", "server.js"])
        app.readyPath = "/healthz"
        app.stopSignal = .int
        app.forwardSignals = [.usr1, .usr2, .winch]
        #expect(config.app == app)
        #expect(config.http.requestHeaderTimeout == .seconds(15))
        #expect(config.http.idleTimeout == .seconds(120))
        #expect(config.http.maxHeaderBytes == 65536)
        #expect(config.http.maxBodyBytes == 10 << 20)
        #expect(config.http.requestBodyTimeout == .seconds(5))
        #expect(config.http.streamStallTimeout == .seconds(10))
        #expect(config.http.tunnelIdleTimeout == .seconds(900))
        #expect(config.http.maxConnections == 2000)
        #expect(config.upstream.connectTimeout == .seconds(1))
        #expect(config.upstream.responseHeaderTimeout == .seconds(30))
        #expect(config.upstream.idleTimeout == .seconds(3))
        #expect(config.upstream.maxIdle == 0)
        #expect(config.logging.level == .debug)
        #expect(config.logging.format == .json)
    }

    /// `unlimited` (any case) sets no body limit, overriding a limit from a lower source.
    @Test func unlimitedBodySizeClearsTheLimit() throws {
        let sources = ConfigSources(flags: Self.upstream.merging(["max-body-size": ["UNLIMITED"]]) { $1 }, file: ["max-body-size": ["1MiB"]])
        #expect(try SluiceConfig.read(sources, defaultThreads: 1).http.maxBodyBytes == nil)
        let fromFile = ConfigSources(flags: Self.upstream, file: ["max-body-size": ["1MiB"]])
        #expect(try SluiceConfig.read(fromFile, defaultThreads: 1).http.maxBodyBytes == 1 << 20)
    }

    /// A flag beats the environment, the environment beats the file, the file beats the default.
    @Test func flagsBeatEnvironmentBeatFileBeatDefaults() throws {
        let file: ConfigNode = ["drain-delay": ["4s"], "threads": ["3"], "log-level": ["error"]]
        let environment = ["SLUICE_DRAIN_DELAY": "3s", "SLUICE_THREADS": "5"]
        let flags = Self.upstream.merging(["drain-delay": ["2s"]]) { $1 }
        let all = try SluiceConfig.read(ConfigSources(flags: flags, environment: environment, file: file), defaultThreads: 7)
        #expect(all.drain.delay == .seconds(2))
        #expect(all.threads == 5)
        #expect(all.logging.level == .error)
        #expect(all.logging.format == .text)

        let noFlags = try SluiceConfig.read(ConfigSources(flags: Self.upstream, environment: environment, file: file), defaultThreads: 7)
        #expect(noFlags.drain.delay == .seconds(3))

        let fileOnly = try SluiceConfig.read(ConfigSources(flags: Self.upstream, file: file), defaultThreads: 7)
        #expect(fileOnly.drain.delay == .seconds(4))
        #expect(fileOnly.threads == 3)
    }

    /// A flag given with no values does not hide the environment.
    @Test func emptyFlagListFallsThroughToTheEnvironment() throws {
        let sources = ConfigSources(flags: ["upstream": []], environment: ["SLUICE_UPSTREAM": "http://10.0.0.9:1"])
        #expect(try SluiceConfig.read(sources, defaultThreads: 1).upstreams == [UpstreamURL(host: "10.0.0.9", port: 1)])
    }

    /// SLUICE_UPSTREAM and SLUICE_LISTEN take comma-separated lists, trimmed.
    @Test func environmentListsAreCommaSeparatedAndTrimmed() throws {
        let sources = ConfigSources(environment: [
            "SLUICE_UPSTREAM": "http://10.0.0.1:3000, http://10.0.0.2:3001",
            "SLUICE_LISTEN": "127.0.0.1:80 ,[::1]:81",
        ])
        let config = try SluiceConfig.read(sources, defaultThreads: 1)
        #expect(config.upstreams == [UpstreamURL(host: "10.0.0.1", port: 3000), UpstreamURL(host: "10.0.0.2", port: 3001)])
        #expect(config.listen.map(\.address) == [HostPort(host: "127.0.0.1", port: 80), HostPort(host: "::1", port: 81)])
    }

    /// A repeatable setting given in the file keeps every value in order.
    @Test func fileListKeepsEveryValueInOrder() throws {
        let sources = ConfigSources(file: ["upstream": ["http://b:2", "http://a:1"]], fileName: "sluice.yaml")
        #expect(try SluiceConfig.read(sources, defaultThreads: 1).upstreams == [UpstreamURL(host: "b", port: 2), UpstreamURL(host: "a", port: 1)])
    }

    /// Unknown SLUICE_ variables are ignored: other tools set their own.
    @Test func unknownSluiceEnvironmentVariableIsIgnored() throws {
        let sources = ConfigSources(flags: Self.upstream, environment: ["SLUICE_FOO": "bar", "SLUICE_": "x", "PATH": "/bin"])
        #expect(try SluiceConfig.read(sources, defaultThreads: 1).drain.delay == .seconds(5))
    }

    /// The environment name of a key is SLUICE_ and the key upper-cased with dashes as underscores.
    @Test func environmentNameIsPrefixedUpperSnakeCase() {
        #expect(ConfigSources.environmentName(for: "drain-delay") == "SLUICE_DRAIN_DELAY")
        #expect(ConfigSources.environmentName(for: "upstream") == "SLUICE_UPSTREAM")
        #expect(ConfigSources.environmentName(for: "upstream-max-idle") == "SLUICE_UPSTREAM_MAX_IDLE")
    }

    // MARK: - Error messages

    struct BadValue: Sendable, CustomTestStringConvertible {
        var key: String
        var value: String
        var message: String
        var testDescription: String { "--\(self.key) \(self.value)" }
    }

    static let badValues: [BadValue] = [
        BadValue(key: "drain-delay", value: "5x", message: "invalid --drain-delay \"5x\": expected \(durationAccepted)"),
        BadValue(key: "drain-timeout", value: "-1s", message: "invalid --drain-timeout \"-1s\": expected \(durationAccepted)"),
        BadValue(key: "termination-grace", value: "soon", message: "invalid --termination-grace \"soon\": expected \(durationAccepted)"),
        BadValue(key: "drain-idle-quiet", value: "1s1m", message: "invalid --drain-idle-quiet \"1s1m\": expected \(durationAccepted)"),
        BadValue(
            key: "request-header-timeout", value: "0",
            message: "invalid --request-header-timeout \"0\": expected \(durationAccepted), greater than zero"),
        BadValue(key: "idle-timeout", value: "0s", message: "invalid --idle-timeout \"0s\": expected \(durationAccepted), greater than zero"),
        BadValue(
            key: "upstream-connect-timeout", value: "fast",
            message: "invalid --upstream-connect-timeout \"fast\": expected \(durationAccepted), greater than zero"),
        BadValue(
            key: "response-header-timeout", value: "0ms",
            message: "invalid --response-header-timeout \"0ms\": expected \(durationAccepted), greater than zero"),
        BadValue(
            key: "upstream-idle-timeout", value: "",
            message: "invalid --upstream-idle-timeout \"\": expected \(durationAccepted), greater than zero"),
        BadValue(key: "max-header-size", value: "512", message: "invalid --max-header-size \"512\": expected \(sizeAccepted), at least 1KiB"),
        BadValue(key: "max-header-size", value: "lots", message: "invalid --max-header-size \"lots\": expected \(sizeAccepted), at least 1KiB"),
        BadValue(key: "max-body-size", value: "1.5MiB", message: "invalid --max-body-size \"1.5MiB\": expected \(sizeAccepted), or unlimited"),
        BadValue(
            key: "request-body-timeout", value: "0",
            message: "invalid --request-body-timeout \"0\": expected \(durationAccepted), greater than zero"),
        BadValue(
            key: "stream-stall-timeout", value: "never",
            message: "invalid --stream-stall-timeout \"never\": expected \(durationAccepted), greater than zero"),
        BadValue(
            key: "tunnel-idle-timeout", value: "0",
            message: "invalid --tunnel-idle-timeout \"0\": expected \(durationAccepted), greater than zero"),
        BadValue(
            key: "tunnel-idle-timeout", value: "forever",
            message: "invalid --tunnel-idle-timeout \"forever\": expected \(durationAccepted), greater than zero"),
        BadValue(key: "max-connections", value: "0", message: "invalid --max-connections \"0\": expected a whole number from 1 to 10000000, or auto"),
        BadValue(key: "max-connections", value: "-5", message: "invalid --max-connections \"-5\": expected a whole number from 1 to 10000000, or auto"),
        BadValue(key: "threads", value: "0", message: "invalid --threads \"0\": expected a whole number from 1 to 256"),
        BadValue(key: "threads", value: "257", message: "invalid --threads \"257\": expected a whole number from 1 to 256"),
        BadValue(key: "threads", value: "two", message: "invalid --threads \"two\": expected a whole number from 1 to 256"),
        BadValue(key: "upstream-max-idle", value: "100001", message: "invalid --upstream-max-idle \"100001\": expected a whole number from 0 to 100000"),
        BadValue(key: "upstream-max-idle", value: "-1", message: "invalid --upstream-max-idle \"-1\": expected a whole number from 0 to 100000"),
        BadValue(
            key: "log-level", value: "verbose",
            message: "invalid --log-level \"verbose\": expected one of trace, debug, info, notice, warning, error, critical"),
        BadValue(key: "log-format", value: "xml", message: "invalid --log-format \"xml\": expected text or json"),
        BadValue(key: "listen", value: "::1:8080", message: "invalid --listen \"::1:8080\": expected \(hostPortAccepted)"),
        BadValue(key: "admin", value: "localhost", message: "invalid --admin \"localhost\": expected \(hostPortAccepted)"),
        BadValue(key: "upstream", value: "https://app:443/v1", message: "invalid --upstream \"https://app:443/v1\": expected \(upstreamAccepted)"),
        BadValue(key: "upstream", value: "http://app:3000/api", message: "invalid --upstream \"http://app:3000/api\": expected \(upstreamAccepted)"),
    ]

    /// A bad value of each kind is reported alone, naming the flag, the value and what is accepted.
    @Test(arguments: badValues)
    func badFlagValueIsReportedWithItsExactMessage(_ bad: BadValue) {
        var flags = Self.upstream
        flags[bad.key] = [bad.value]
        #expect(messages(ConfigSources(flags: flags)) == [bad.message])
    }

    /// A bad value from the environment names the variable; one from the file names the key and the file.
    @Test func badValueNamesTheSourceItCameFrom() {
        #expect(
            messages(ConfigSources(flags: Self.upstream, environment: ["SLUICE_THREADS": "zero"]))
                == ["invalid SLUICE_THREADS \"zero\": expected a whole number from 1 to 256"])
        #expect(
            messages(ConfigSources(flags: Self.upstream, file: ["threads": ["0"]], fileName: "/etc/sluice.yaml"))
                == ["invalid threads in /etc/sluice.yaml \"0\": expected a whole number from 1 to 256"])
        #expect(
            messages(ConfigSources(flags: Self.upstream, file: ["threads": ["0"]]))
                == ["invalid threads in the config file \"0\": expected a whole number from 1 to 256"])
    }

    /// One bad element of an environment list is reported; an empty element (trailing comma) too.
    @Test func badElementOfAnEnvironmentListIsReported() {
        #expect(
            messages(ConfigSources(environment: ["SLUICE_UPSTREAM": "http://a:1,https://b/x"]))
                == ["invalid SLUICE_UPSTREAM \"https://b/x\": expected \(Self.upstreamAccepted)"])
        #expect(
            messages(ConfigSources(environment: ["SLUICE_UPSTREAM": "http://a:1,"]))
                == ["invalid SLUICE_UPSTREAM \"\": expected \(Self.upstreamAccepted)"])
    }

    /// Every bad element of a repeated flag is reported, and no "no upstream" error is added on top.
    @Test func everyBadElementOfARepeatedFlagIsReported() {
        let flags = ["upstream": ["http://ok:1", "tcp://a:1", "http://b:2/x"]]
        #expect(
            messages(ConfigSources(flags: flags)) == [
                "invalid --upstream \"tcp://a:1\": expected \(Self.upstreamAccepted)",
                "invalid --upstream \"http://b:2/x\": expected \(Self.upstreamAccepted)",
            ])
    }

    /// h2c upstreams are read with their scheme; mixing http and h2c upstreams is one clear error.
    @Test func h2cUpstreamsAreReadAndMixingSchemesIsAnError() throws {
        let config = try SluiceConfig.read(ConfigSources(flags: ["upstream": ["h2c://127.0.0.1:50051", "h2c://[::1]:50052"]]), defaultThreads: 1)
        #expect(config.upstreams == [UpstreamURL(scheme: .h2c, host: "127.0.0.1", port: 50051), UpstreamURL(scheme: .h2c, host: "::1", port: 50052)])
        #expect(
            messages(ConfigSources(flags: ["upstream": ["http://a:1", "http://b:2", "h2c://c:3"]]))
                == ["--upstream mixes schemes (http://a:1 and h2c://c:3): all upstreams must share one scheme: http://, https:// or h2c://"])
    }

    /// A single-valued setting given twice is an error naming the count, from a flag or the environment.
    @Test func singleValuedSettingGivenTwiceIsAnError() {
        #expect(
            messages(ConfigSources(flags: Self.upstream.merging(["threads": ["2", "3"]]) { $1 }))
                == ["--threads is given 2 times but takes one value"])
        #expect(
            messages(ConfigSources(flags: Self.upstream, environment: ["SLUICE_DRAIN_DELAY": "5s,6s"]))
                == ["SLUICE_DRAIN_DELAY is given 2 times but takes one value"])
    }

    /// An unknown key in the file is an error that lists the known settings; several are reported in name order.
    @Test func unknownFileKeysAreErrorsListingTheKnownSettings() {
        let sources = ConfigSources(flags: Self.upstream, file: ["bogus": ["1"], "another": ["x"]], fileName: "sluice.yaml")
        #expect(
            messages(sources) == [
                "unknown setting \"another\" in sluice.yaml; known settings: \(Self.knownKeys)",
                "unknown setting \"bogus\" in sluice.yaml; known settings: \(Self.knownKeys)",
            ])
        #expect(
            messages(ConfigSources(flags: Self.upstream, file: ["drain_delay": ["1s"]]))
                == ["unknown setting \"drain_delay\" in the config file; known settings: \(Self.knownKeys)"])
    }

    /// Without any upstream the error says how to set one.
    @Test func missingUpstreamIsAnErrorSayingHowToSetOne() {
        #expect(
            messages(ConfigSources()) == [
                "no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to \(Self.upstreamAccepted)"
            ])
    }

    /// An explicitly empty listener list in the file is an error.
    @Test func emptyListenerListIsAnError() {
        #expect(
            messages(ConfigSources(flags: Self.upstream, file: ["listen": []]))
                == ["no listener configured: set --listen to \(Self.hostPortAccepted)"])
    }

    // MARK: - The drain budget

    /// drain-delay + drain-timeout + 1 s margin over termination-grace is refused, naming all four.
    @Test func budgetThatDoesNotFitNamesDelayTimeoutMarginAndGrace() {
        #expect(
            messages(ConfigSources(flags: Self.upstream.merging(["drain-delay": ["10s"]]) { $1 })) == [
                "drain budget does not fit: drain-delay 10s + drain-timeout 20s + margin 1s = 31s exceeds termination-grace 30s; shorten drain-delay or drain-timeout, or raise termination-grace together with the pod's terminationGracePeriodSeconds"
            ])
        let flags = Self.upstream.merging(["drain-delay": ["1m30s"], "drain-timeout": ["1m"], "termination-grace": ["2m"]]) { $1 }
        #expect(
            messages(ConfigSources(flags: flags)) == [
                "drain budget does not fit: drain-delay 1m30s + drain-timeout 1m + margin 1s = 2m31s exceeds termination-grace 2m; shorten drain-delay or drain-timeout, or raise termination-grace together with the pod's terminationGracePeriodSeconds"
            ])
        let subSecond = Self.upstream.merging(["drain-delay": ["9.5s"]]) { $1 }
        #expect(
            messages(ConfigSources(flags: subSecond)) == [
                "drain budget does not fit: drain-delay 9500ms + drain-timeout 20s + margin 1s = 30500ms exceeds termination-grace 30s; shorten drain-delay or drain-timeout, or raise termination-grace together with the pod's terminationGracePeriodSeconds"
            ])
    }

    /// A budget that uses the grace period exactly, margin included, fits.
    @Test func budgetThatFillsTheGraceExactlyFits() throws {
        let flags = Self.upstream.merging(["drain-delay": ["9s"]]) { $1 }
        #expect(try SluiceConfig.read(ConfigSources(flags: flags), defaultThreads: 1).drain.delay == .seconds(9))
        let bigger = Self.upstream.merging(["drain-delay": ["30s"], "drain-timeout": ["1m"], "termination-grace": ["91s"]]) { $1 }
        #expect(try SluiceConfig.read(ConfigSources(flags: bigger), defaultThreads: 1).drain.terminationGrace == .seconds(91))
    }

    /// When a budget setting is itself invalid, only that error is reported, not a budget error on top.
    @Test func invalidBudgetSettingSuppressesTheBudgetError() {
        let flags = Self.upstream.merging(["drain-delay": ["1h"], "termination-grace": ["never"]]) { $1 }
        #expect(messages(ConfigSources(flags: flags)) == ["invalid --termination-grace \"never\": expected \(Self.durationAccepted)"])
    }

    // MARK: - All at once

    /// Several bad values give several errors, in a fixed order: file keys, settings in key order, then
    /// the missing upstream.
    @Test func everyErrorIsReportedAtOnceInOrder() {
        let sources = ConfigSources(
            flags: ["threads": ["0"], "drain-delay": ["soon"], "log-level": ["loud"], "listen": ["nowhere"]],
            environment: ["SLUICE_LOG_FORMAT": "xml"],
            file: ["colour": ["blue"]],
            fileName: "sluice.yaml"
        )
        #expect(
            messages(sources) == [
                "unknown setting \"colour\" in sluice.yaml; known settings: \(Self.knownKeys)",
                "invalid --listen \"nowhere\": expected \(Self.hostPortAccepted)",
                "invalid --threads \"0\": expected a whole number from 1 to 256",
                "invalid --drain-delay \"soon\": expected \(Self.durationAccepted)",
                "invalid --log-level \"loud\": expected one of trace, debug, info, notice, warning, error, critical",
                "invalid SLUICE_LOG_FORMAT \"xml\": expected text or json",
                "no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to \(Self.upstreamAccepted)",
            ])
    }

    /// The thrown value's description is every message, one per line.
    @Test func errorsDescriptionIsOneMessagePerLine() {
        #expect(throws: ConfigErrors(errors: [ConfigError("invalid --threads \"0\": expected a whole number from 1 to 256"), ConfigError("no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to \(Self.upstreamAccepted)")])) {
            try SluiceConfig.read(ConfigSources(flags: ["threads": ["0"]]), defaultThreads: 1)
        }
        let errors = ConfigErrors(errors: [ConfigError("a"), ConfigError("b")])
        #expect(errors.description == "a\nb")
        #expect(ConfigError("a").description == "a")
    }

    /// A drain delay too large to count in nanoseconds is a configuration error, not a crash at start-up.
    ///
    /// Regression (found by these tests, since fixed) (same root cause as DurationParserTests.hugeBareNumberOfSecondsIsRejectedInsteadOfCrashing):
    /// `sluice --drain-delay 10000000000` traps instead of exiting 1 with a message.
    @Test func hugeDrainDelayIsAConfigErrorInsteadOfACrash() async {
        await #expect(processExitsWith: .success) {
            let sources = ConfigSources(flags: ["upstream": ["http://127.0.0.1:3000"], "drain-delay": ["10000000000"]])
            precondition((try? SluiceConfig.read(sources, defaultThreads: 1)) == nil)
        }
    }

    // MARK: - Supervisor mode and the adaptive delay

    /// The command after `--` makes an app with the defaults; the environment and file give the app-* settings too.
    @Test func supervisorModeReadsTheCommandAndItsSettings() throws {
        let plain = try SluiceConfig.read(ConfigSources(flags: Self.upstream, appCommand: ["python3", "app.py"]), defaultThreads: 1)
        #expect(plain.app == SluiceConfig.App(command: ["python3", "app.py"]))
        #expect(plain.app?.stopSignal == .term && plain.app?.forwardSignals == [] && plain.app?.readyPath == nil)
        let sources = ConfigSources(
            flags: Self.upstream, environment: ["SLUICE_APP_FORWARD_SIGNALS": "USR2,USR1"], file: ["app-stop-signal": "quit", "drain-quiet": "750ms"],
            appCommand: ["app"])
        let config = try SluiceConfig.read(sources, defaultThreads: 1)
        #expect(config.app?.forwardSignals == [.usr2, .usr1])
        #expect(config.app?.stopSignal == .quit)
        #expect(config.drain.quiet == .milliseconds(750))
        #expect(config.drain.delayMin == .seconds(2))
        #expect(try SluiceConfig.read(ConfigSources(flags: Self.upstream), defaultThreads: 1).app == nil)
    }

    /// Bad supervisor settings are reported with what is accepted, and why some signals are not.
    @Test func badSupervisorSettingsAreReported() {
        let forward = "a comma-separated list of USR1, USR2, WINCH, ALRM (HUP stays Sluice's: it reloads the configuration; TERM, INT and QUIT start Sluice's drain)"
        #expect(
            messages(ConfigSources(flags: Self.upstream.merging(["app-forward-signals": ["USR1,HUP"], "app-ready-path": ["healthz"]]) { $1 }, appCommand: ["a"]))
                == [
                    "invalid --app-ready-path \"healthz\": expected a path starting with /, e.g. /healthz",
                    "invalid --app-forward-signals \"HUP\": expected \(forward)",
                ])
        #expect(
            messages(ConfigSources(flags: ["upstream": ["h2c://127.0.0.1:50051"], "app-ready-path": ["/ready"]], appCommand: ["a"])) == [
                "app-ready-path /ready needs an http:// upstream to send GET /ready to, but the first upstream is h2c://127.0.0.1:50051; leave app-ready-path out to wait for a TCP connect instead"
            ])
        #expect(
            messages(ConfigSources(flags: Self.upstream.merging(["app-forward-signals": ["USR1"]]) { $1 })) == [
                "--app-forward-signals is a supervisor-mode setting, but no app is given: put its command after --, e.g. sluice --upstream http://127.0.0.1:3000 -- node server.js"
            ])
        #expect(
            messages(ConfigSources(flags: Self.upstream.merging(["drain-quiet": ["0s"]]) { $1 })) == [
                "invalid --drain-quiet \"0s\": expected \(Self.durationAccepted), greater than zero"
            ])
    }
}
