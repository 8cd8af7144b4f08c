import ArgumentParser
import Logging
import NIOCore
import SluiceCore
import SluiceProxy

#if canImport(Glibc)
import Glibc
#endif

/// `sluice`: the proxy (the default subcommand), `sluice check-config` and `sluice demo`.
///
/// ArgumentParser picks the subcommand and answers `--help` and `--version`; the proxy's flags are
/// read by ``ParsedCommandLine`` from the one table ``SluiceConfig/commandLineSettings``, so a bad
/// command line is reported like every other configuration error: all problems at once, exit 1.
public struct SluiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A graceful-draining HTTP reverse proxy: zero dropped requests when Kubernetes stops the pod.",
        usage: """
            sluice [run] [--FLAG VALUE ...] [-- APP [ARGS...]]
            sluice check-config [--config FILE] [--FLAG VALUE ...] [--format text|json] [--grace-period DURATION]
            sluice demo [--FLAG VALUE ...]
            """,
        discussion: ProxyOptions.flagsHelp + "\n\n" + ProxyOptions.sources,
        version: SluiceVersion.current,
        subcommands: [RunCommand.self, CheckConfigCommand.self, DemoCommand.self],
        defaultSubcommand: RunCommand.self
    )

    public init() {}
}

public enum SluiceVersion {
    public static let current = "0.1.0"
}

/// The settings every way of running the proxy shares, as the command line gives them: the raw
/// arguments, read and checked together with the environment and file by ``resolve(environment:defaults:)``.
struct ProxyOptions: ParsableArguments {
    /// Everything ArgumentParser did not take itself (it takes `--help`, `-h` and `--version`).
    @Argument(parsing: .allUnrecognized, help: .hidden)
    var arguments: [String] = []

    /// The flags for `--help`, one block each, wrapped to fit 80 columns.
    static let flagsHelp: String = {
        var lines = ["FLAGS:"]
        for setting in SluiceConfig.commandLineSettings {
            lines.append("  --\(setting.name) \(setting.value)")
            lines += wrap(setting.help, width: 78 - 6).map { "      " + $0 }
        }
        return lines.joined(separator: "\n")
    }()

    /// Where else the settings come from, for `--help`.
    static let sources = """
        Every flag is also an environment variable SLUICE_<FLAG> (dashes as underscores; repeated values \
        comma-separated) and a key of the --config YAML file. Precedence: flags, environment, file, \
        defaults. Durations: 500ms, 5s, 1m30s or bare seconds; sizes: 32768, 32KiB, 1MiB. A bad \
        setting anywhere is reported with all the others; the exit code is then 1.
        """

    /// `text` broken at spaces into lines of at most `width` characters (longer words stay whole).
    static func wrap(_ text: String, width: Int) -> [String] {
        var lines: [String] = []
        var line = ""
        for word in text.split(separator: " ") {
            if !line.isEmpty && line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    /// Flags over environment over file over defaults, every error reported at once: the command
    /// line's own (unknown flags, missing values) first, then the values'.
    func resolve(environment: [String: String], defaults: [String: [String]] = [:]) throws(ConfigErrors) -> SluiceConfig {
        let given = try self.gather(environment: environment, defaults: defaults)
        let config: SluiceConfig
        do {
            config = try SluiceConfig.read(given.sources, defaultThreads: System.coreCount)
        } catch {
            throw ConfigErrors(errors: given.errors + error.errors)
        }
        if !given.errors.isEmpty { throw ConfigErrors(errors: given.errors) }
        return config
    }

    /// What a reload reads: the same arguments and `environment` (as at start-up), resolved again, the
    /// config file re-read from disk.
    func source(environment: [String: String], defaults: [String: [String]] = [:]) -> ConfigSource {
        let arguments = self.arguments
        return { () throws(ConfigErrors) -> SluiceConfig in
            var options = ProxyOptions()
            options.arguments = arguments
            return try options.resolve(environment: environment, defaults: defaults)
        }
    }

    /// The settings as given (flags, environment, the file's tree), the command line's own errors, and
    /// the values of `extra` flags (a subcommand's own, such as `check-config --format`), which are
    /// taken out of the settings. Throws when the config file cannot be read: without it the settings
    /// cannot be judged (its values are missing, not wrong).
    func gather(
        environment: [String: String], defaults: [String: [String]] = [:], extra: [SluiceConfig.Setting] = []
    ) throws(ConfigErrors) -> (sources: ConfigSources, errors: [ConfigError], extra: [String: [String]]) {
        let commandLine = ParsedCommandLine(self.arguments, known: SluiceConfig.commandLineSettings + extra)
        var errors = commandLine.errors
        var flags = commandLine.flags
        var extraValues: [String: [String]] = [:]
        for setting in extra { extraValues[setting.name] = flags.removeValue(forKey: setting.name) }
        let configPaths = flags.removeValue(forKey: SluiceConfig.configFileSetting.name) ?? []
        if configPaths.count > 1 {
            errors.append(ConfigError("--config is given \(configPaths.count) times but takes one value"))
        }
        var sources = ConfigSources(flags: flags, environment: environment, appCommand: commandLine.appArguments)
        if let path = configPaths.last ?? environment["SLUICE_CONFIG"] {
            do {
                sources.file = try ConfigFile.load(path: path)
                sources.fileName = path
            } catch {
                throw ConfigErrors(errors: errors + [error])
            }
        }
        for (key, value) in defaults where sources.flags[key] == nil { sources.flags[key] = value }
        return (sources, errors, extraValues)
    }
}

/// Runs the proxy until it has drained.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy (the default).",
        usage: "sluice [run] [--FLAG VALUE ...] [-- APP [ARGS...]]",
        discussion: ProxyOptions.flagsHelp + "\n\n" + ProxyOptions.sources + "\n\n" + """
            Signals: SIGTERM/SIGINT start the drain (readiness fails at once, traffic is still served for \
            --drain-delay, then listeners close and connections finish within --drain-timeout); a second \
            one skips the rest of the delay; a third one, or SIGQUIT, closes everything at once. SIGHUP (or \
            POST /reload on the admin listener, from loopback) reads the configuration again: the same flags \
            and environment, the --config file re-read; routes, upstream groups and listen addresses change \
            without a restart, an invalid file changes nothing.
            Supervisor mode (-- APP ARGS...): Sluice starts the app once its listeners are bound, is ready once \
            the app answers, and stops the app (--app-stop-signal, then SIGKILL before --termination-grace \
            is used up) only after its own drain; if the app exits, Sluice drains and exits with its code.
            Admin: GET /drain/wait answers when the drain ends; POST /drain/rehearse?for=10s fails readiness \
            for the window and reports when new connections stopped arriving.
            Exit codes: 0 clean drain, 1 start-up or configuration error, 3 drain deadline reached; in \
            supervisor mode the app's code when it failed.
            """
    )

    @OptionGroup var options: ProxyOptions

    func run() async throws {
        let config: SluiceConfig
        let environment = Environment.current
        do {
            config = try self.options.resolve(environment: environment)
        } catch {
            for problem in error.errors { Console.error("sluice: \(problem.message)") }
            throw ExitCode(1)
        }
        let code = await Launcher.runProxy(config: config, source: self.options.source(environment: environment), narrate: false)
        throw ExitCode(code)
    }
}

enum Environment {
    static var current: [String: String] {
        var environment: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let string = String(cString: entry)
            if let equals = string.firstIndex(of: "=") {
                environment[String(string[..<equals])] = String(string[string.index(after: equals)...])
            }
            pointer += 1
        }
        return environment
    }
}

enum Console {
    static func error(_ line: String) { Self.write(line + "\n", to: 2) }

    static func out(_ line: String) { Self.write(line + "\n", to: 1) }

    /// `text` on stdout as it is (no newline added).
    static func outRaw(_ text: String) { Self.write(text, to: 1) }

    private static func write(_ text: String, to fd: Int32) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written <= 0 { return }
            bytes = bytes.dropFirst(written)
        }
    }
}

/// The executable's entry point.
public enum SluiceMain {
    public static func run() async {
        await SluiceCommand.main()
    }
}
