import SluiceCore
import Testing

/// ``ParsedCommandLine``: the proxy's flags read from the one settings table, every problem reported at once.
@Suite struct SluiceConfigCommandLineTests {
    static let knownFlags =
        "--config, --listen, --listen-tls, --tls-cert, --tls-key, --upstream, --admin, --threads, --drain-delay, --drain-timeout, --termination-grace, --drain-quiet, --drain-delay-min, --drain-report, --drain-idle-quiet, --request-header-timeout, --idle-timeout, --max-header-size, --max-body-size, --request-body-timeout, --stream-stall-timeout, --tunnel-idle-timeout, --max-connections, --upstream-connect-timeout, --response-header-timeout, --upstream-idle-timeout, --upstream-max-idle, --app-ready-path, --app-stop-signal, --app-forward-signals, --log-level, --log-format"

    /// The messages of the command line's own errors.
    func errors(_ arguments: [String]) -> [String] {
        ParsedCommandLine(arguments).errors.map(\.message)
    }

    /// Every message for `arguments`: the command line's own, then the reader's; `[]` when all is well.
    func messages(_ arguments: [String]) -> [String] {
        let parsed = ParsedCommandLine(arguments)
        var messages = parsed.errors.map(\.message)
        do {
            _ = try SluiceConfig.read(ConfigSources(flags: parsed.flags), defaultThreads: 1)
        } catch {
            messages += error.errors.map(\.message)
        }
        return messages
    }

    // MARK: - Values

    /// `--flag value` and `--flag=value` both give a value; repeated flags keep every value in order.
    @Test func separateAndAttachedValuesAreReadInOrder() {
        let parsed = ParsedCommandLine(["--listen", "127.0.0.1:1", "--upstream=http://a:1", "--listen=[::1]:2", "--drain-delay", "2s"])
        #expect(parsed.flags == ["listen": ["127.0.0.1:1", "[::1]:2"], "upstream": ["http://a:1"], "drain-delay": ["2s"]])
        #expect(parsed.errors == [])
        #expect(parsed.appArguments == nil)
    }

    /// A word after a flag is its value even when it starts with one dash, so the reader can say what is wrong with it.
    @Test func valueStartingWithADashIsTheFlagsValue() {
        let parsed = ParsedCommandLine(["--max-header-size", "-5", "--upstream-max-idle", "-1", "--config", "-"])
        #expect(parsed.flags == ["max-header-size": ["-5"], "upstream-max-idle": ["-1"], "config": ["-"]])
        #expect(parsed.errors == [])
    }

    /// Only `=` separates an attached value: the rest may hold `=` and `--`, or be empty (which the reader rejects).
    @Test func attachedValueIsEverythingAfterTheFirstEquals() {
        #expect(ParsedCommandLine(["--upstream=http://a:1/?x=1", "--log-level=--debug"]).flags == ["upstream": ["http://a:1/?x=1"], "log-level": ["--debug"]])
        #expect(messages(["--upstream=http://a:1", "--threads="]) == ["invalid --threads \"\": expected a whole number from 1 to 256"])
    }

    /// A flag followed by nothing, by another flag or by `--` is missing its value; the next flag is still read.
    @Test func flagWithoutAValueIsAnErrorNamingWhatItTakes() {
        let parsed = ParsedCommandLine(["--drain-delay", "--upstream", "http://a:1", "--max-header-size"])
        #expect(parsed.flags == ["upstream": ["http://a:1"]])
        #expect(
            parsed.errors.map(\.message) == [
                "--drain-delay needs a value: --drain-delay DURATION",
                "--max-header-size needs a value: --max-header-size SIZE",
            ])
        #expect(errors(["--listen", "--"]) == ["--listen needs a value: --listen HOST:PORT"])
    }

    // MARK: - Unknown flags and stray words

    /// A likely typo of a known flag suggests it: a letter off, underscores, one dash, wrong case, or a unique start.
    @Test(arguments: [
        ("--drain-dely", "--drain-delay"), ("--upstrem", "--upstream"), ("--drain_delay", "--drain-delay"),
        ("-upstream", "--upstream"), ("--Log-Level", "--log-level"), ("--max-header", "--max-header-size"),
        ("--lissten", "--listen"),
    ])
    func unknownFlagThatIsALikelyTypoSuggestsTheKnownOne(_ typed: String, _ meant: String) {
        #expect(errors([typed, "1"]) == ["unknown flag \(typed); did you mean \(meant)?"])
    }

    /// An unknown flag like nothing known lists every known flag; the word after it is taken as its value, not reported again.
    @Test func unknownFlagWithNoLikelyMatchListsTheKnownFlags() {
        let parsed = ParsedCommandLine(["--bogus", "x", "--upstream", "http://a:1", "--drain", "-x", "-v"])
        #expect(
            parsed.errors.map(\.message) == [
                "unknown flag --bogus; known flags: \(Self.knownFlags)",
                "unknown flag --drain; known flags: \(Self.knownFlags)",
                "unknown flag -v; known flags: \(Self.knownFlags)",
            ])
        #expect(parsed.flags == ["upstream": ["http://a:1"]])
    }

    /// An unknown flag with an attached value does not take the next word: that word is reported too.
    @Test func unknownFlagWithAttachedValueLeavesTheNextWord() {
        #expect(
            errors(["--bogus=1", "stray"]) == [
                "unknown flag --bogus; known flags: \(Self.knownFlags)",
                "unexpected argument \"stray\": settings are flags, e.g. --upstream URL",
            ])
    }

    /// A word that is no flag's value is an error; so is a lone dash.
    @Test func strayWordsAreErrors() {
        #expect(
            errors(["http://a:1", "--threads", "2", "3", "-"]) == [
                "unexpected argument \"http://a:1\": settings are flags, e.g. --upstream URL",
                "unexpected argument \"3\": settings are flags, e.g. --upstream URL",
                "unexpected argument \"-\": settings are flags, e.g. --upstream URL",
            ])
    }

    /// Everything after `--` is kept for the app, flags included, and not read as settings.
    @Test func everythingAfterTheTerminatorIsKeptForTheApp() {
        let parsed = ParsedCommandLine(["--upstream", "http://a:1", "--", "node", "server.js", "--port", "3000", "--"])
        #expect(parsed.flags == ["upstream": ["http://a:1"]])
        #expect(parsed.appArguments == ["node", "server.js", "--port", "3000", "--"])
        #expect(parsed.errors == [])
        #expect(ParsedCommandLine(["--"]).appArguments == [])
    }

    // MARK: - All at once, with the reader

    /// Bad values, an unknown flag and a missing value are all reported: the command line's problems
    /// first, in order, then the values' in key order. (Issue 14: `-5`/`-1` were unknown flags, exit 64, first problem only.)
    @Test func everyProblemOfACommandLineIsReportedAtOnce() {
        #expect(
            messages(["--max-header-size", "-5", "--upstream-max-idle", "-1", "--bogus", "x", "--upstream", "http://127.0.0.1:1"]) == [
                "unknown flag --bogus; known flags: \(Self.knownFlags)",
                "invalid --max-header-size \"-5\": expected a size such as 32768, 32KiB, 1MiB or 2GiB, at least 1KiB",
                "invalid --upstream-max-idle \"-1\": expected a whole number from 0 to 100000",
            ])
        #expect(
            messages(["--drain-dely", "5s", "--threads=0", "--threads", "2", "--upstream", "http://127.0.0.1:1", "--log-level"]) == [
                "unknown flag --drain-dely; did you mean --drain-delay?",
                "--log-level needs a value: --log-level LEVEL",
                "--threads is given 2 times but takes one value",
            ])
    }

    // MARK: - The table

    /// The table is the one list of settings: the file keys, the flags (with `--config` first) and the repeatable ones derive from it.
    @Test func keysFlagsAndRepeatableKeysComeFromTheOneTable() {
        #expect(SluiceConfig.keys == SluiceConfig.settings.map(\.name))
        #expect(SluiceConfig.commandLineSettings.map(\.name) == ["config"] + SluiceConfig.keys)
        #expect(SluiceConfig.repeatableKeys == ["listen", "upstream", "app-forward-signals"])
        #expect(Set(SluiceConfig.keys).count == SluiceConfig.keys.count)
        for setting in SluiceConfig.commandLineSettings {
            #expect(!setting.value.isEmpty && setting.help.hasSuffix("."), "\(setting.name)")
        }
    }

    /// Every setting in the table is read by the reader: a bad value of each is reported naming its flag.
    /// A file path takes any value; given alone, the TLS short form names what it lacks.
    @Test(arguments: SluiceConfig.settings.map(\.name))
    func everySettingInTheTableIsRead(_ key: String) {
        let problems = messages(["--upstream", "http://a:1", "--\(key)", "%%"])
        if key == "drain-report" {
            #expect(problems.isEmpty, "any path may be written: \(problems)")
            return
        }
        #expect(problems.count == 1)
        if ["tls-cert", "tls-key"].contains(key) {
            #expect(problems.first?.hasPrefix("--\(key) given alone: a TLS listener needs all three of ") == true, "\(problems)")
        } else {
            #expect(problems.first?.hasPrefix("invalid --\(key) \"%%\": expected ") == true, "\(problems)")
        }
    }

    /// Exactly the settings the table calls repeatable take several values; the others refuse a second one.
    @Test(arguments: SluiceConfig.settings)
    func repeatableInTheTableIsWhatTheReaderAccepts(_ setting: SluiceConfig.Setting) {
        let problems = messages(["--upstream", "http://a:1", "--\(setting.name)", "%1", "--\(setting.name)", "%2"])
        if setting.repeatable {
            #expect(problems.count == 2 && problems.allSatisfy { $0.hasPrefix("invalid --\(setting.name) \"%") }, "\(problems)")
        } else {
            #expect(problems == ["--\(setting.name) is given 2 times but takes one value"])
        }
    }
}
