import ArgumentParser
import NIOCore
import SluiceCore
import SluiceProxy

/// `sluice check-config`: validates the configuration the proxy would run with, like `nginx -t`.
///
/// 1. Takes the proxy's flags, environment and `--config` file, read exactly as `sluice run` reads
///    them (``ProxyOptions``), plus two of its own: `--format text|json` and `--grace-period DURATION`.
/// 2. Valid: prints the effective configuration (YAML, the file's keys) and the drain budget on
///    stdout, warnings and `sluice: configuration is valid` on stderr; exit 0.
/// 3. Invalid: every error on stderr, one `sluice: ` line each, stdout empty; exit 1.
/// 4. `--format json`: one JSON object on stdout instead (``ConfigCheck/json``), nothing on stderr;
///    the same exit codes. The deployment lint (`scripts/check_drain_budget.py`) reads it.
/// 5. `--grace-period`: the orchestrator's grace period (the pod's `terminationGracePeriodSeconds`,
///    Compose's `stop_grace_period`); the drain budget must fit it and `termination-grace` must not be
///    longer, else it is an error.
///
/// ```
/// $ sluice check-config --config sluice.yaml --grace-period 30s
/// ```
struct CheckConfigCommand: AsyncParsableCommand {
    static let formatSetting = SluiceConfig.Setting("format", "FORMAT", "text (the effective configuration as YAML) or json (for scripts). Default text.")
    static let gracePeriodSetting = SluiceConfig.Setting(
        "grace-period", "DURATION",
        "The pod's terminationGracePeriodSeconds (or Compose's stop_grace_period): the drain budget must fit it, and termination-grace must not be longer. Default: not checked."
    )
    static let ownSettings = [formatSetting, gracePeriodSetting]

    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the configuration, print it with the drain budget, and exit 0 (valid) or 1.",
        usage: "sluice check-config [--config FILE] [--FLAG VALUE ...] [--format text|json] [--grace-period DURATION]",
        discussion: """
            Reads flags, environment and the --config file exactly as `sluice run` does, and reports every \
            problem at once. Valid: the effective configuration (every setting, every upstream group with its \
            effective settings, every route) and the drain budget on stdout; exit 0. Invalid: one line per \
            problem on stderr; exit 1.


            """ + checkFlagsHelp + "\n\n" + ProxyOptions.flagsHelp + "\n\n" + ProxyOptions.sources
    )

    /// check-config's own flags for `--help`, wrapped like the proxy's.
    static let checkFlagsHelp: String = {
        var lines = ["CHECK-CONFIG FLAGS:"]
        for setting in ownSettings {
            lines.append("  --\(setting.name) \(setting.value)")
            lines += ProxyOptions.wrap(setting.help, width: 78 - 6).map { "      " + $0 }
        }
        return lines.joined(separator: "\n")
    }()

    @OptionGroup var options: ProxyOptions

    func run() async throws {
        let environment = Environment.current
        var json = false
        var check: ConfigCheck
        do {
            let given = try self.options.gather(environment: environment, extra: Self.ownSettings)
            var errors = given.errors
            var gracePeriod: Duration?
            for setting in Self.ownSettings {
                let name = setting.name
                guard let values = given.extra[name] else { continue }
                guard values.count == 1 else {
                    errors.append(ConfigError("--\(name) is given \(values.count) times but takes one value"))
                    continue
                }
                switch name {
                case Self.formatSetting.name:
                    switch values[0].lowercased() {
                    case "json": json = true
                    case "text": json = false
                    default: errors.append(ConfigError("invalid --format \"\(values[0])\": expected text or json"))
                    }
                default:
                    if let duration = DurationParser.parse(values[0]) {
                        gracePeriod = duration
                    } else {
                        errors.append(ConfigError("invalid --grace-period \"\(values[0])\": expected \(DurationParser.accepted)"))
                    }
                }
            }
            check = ConfigCheck(given.sources, defaultThreads: System.coreCount, gracePeriod: gracePeriod, errors: errors)
            // Certificates and keys are read as start-up reads them.
            if let config = check.config { check.errors += ProxyServer.fileProblems(config).map(ConfigError.init) }
        } catch {
            check = ConfigCheck(errors: error.errors)
        }
        if json {
            Console.outRaw(check.json)
        } else {
            Self.printText(check)
        }
        if !check.isValid { throw ExitCode(1) }
    }

    static func printText(_ check: ConfigCheck) {
        for warning in check.warnings { Console.error("sluice: warning: \(warning)") }
        guard check.isValid, let config = check.config else {
            for problem in check.errors { Console.error("sluice: \(problem.message)") }
            Console.error("sluice: configuration is invalid (\(check.errors.count) \(check.errors.count == 1 ? "error" : "errors"))")
            return
        }
        Console.outRaw(config.effectiveYAML)
        Console.out("# drain budget: \(config.drainBudgetSummary)")
        if let gracePeriod = check.gracePeriod {
            Console.out("# grace period: \(DurationParser.format(gracePeriod)) (termination-grace and the drain budget fit in it)")
        }
        Console.error("sluice: configuration is valid")
    }
}
