import ArgumentParser
import Logging
import NIOCore
import SluiceCore
import SluiceProxy

#if canImport(Glibc)
import Glibc
#endif

/// `sluice`: the proxy (the default subcommand) and `sluice demo`.
public struct SluiceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "A graceful-draining HTTP reverse proxy: zero dropped requests when Kubernetes stops the pod.",
        version: SluiceVersion.current,
        subcommands: [RunCommand.self, DemoCommand.self],
        defaultSubcommand: RunCommand.self
    )

    public init() {}
}

public enum SluiceVersion {
    public static let current = "0.1.0"
}

/// The settings every way of running the proxy shares, as the command line gives them: text, not yet
/// checked. ``SluiceConfig/read(_:defaultThreads:)`` checks them together with the environment and file.
struct ProxyOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: "YAML file with the same keys as these flags (also SLUICE_CONFIG).")
    var config: String?
    @Option(name: .customLong("listen"), help: "HOST:PORT to accept clients on; repeatable. Default 0.0.0.0:8080.")
    var listen: [String] = []
    @Option(name: .customLong("upstream"), help: "Upstream URL, e.g. http://127.0.0.1:3000, or h2c://127.0.0.1:50051 for HTTP/2 (gRPC); repeatable, round-robin.")
    var upstream: [String] = []
    @Option(name: .customLong("admin"), help: "HOST:PORT of /livez, /readyz, /status, /metrics. Default 0.0.0.0:9901.")
    var admin: String?
    @Option(name: .customLong("drain-delay"), help: "How long readiness fails while traffic is still served. Default 5s.")
    var drainDelay: String?
    @Option(name: .customLong("drain-timeout"), help: "How long in-flight requests may finish once listeners close. Default 20s.")
    var drainTimeout: String?
    @Option(name: .customLong("termination-grace"), help: "The pod's terminationGracePeriodSeconds; the drain must fit. Default 30s.")
    var terminationGrace: String?
    @Option(name: .customLong("drain-idle-quiet"), help: "While draining, an idle connection closes after this much quiet. Default 250ms.")
    var drainIdleQuiet: String?
    @Option(name: .customLong("threads"), help: "Event loops. Default: the CPUs this process may run on.")
    var threads: String?
    @Option(name: .customLong("request-header-timeout"), help: "A request head must arrive within this. Default 30s.")
    var requestHeaderTimeout: String?
    @Option(name: .customLong("idle-timeout"), help: "Idle keep-alive client connections close after this. Default 60s.")
    var idleTimeout: String?
    @Option(name: .customLong("max-header-size"), help: "Largest request head; larger gets 431. Default 32KiB.")
    var maxHeaderSize: String?
    @Option(name: .customLong("max-body-size"), help: "Largest request body; larger gets 413. Default unlimited.")
    var maxBodySize: String?
    @Option(name: .customLong("request-body-timeout"), help: "Longest gap between request body bytes; then 408 (or abort). Default 30s.")
    var requestBodyTimeout: String?
    @Option(name: .customLong("stream-stall-timeout"), help: "HTTP/2 streams stalled on the client's flow control are reset after this. Default 30s.")
    var streamStallTimeout: String?
    @Option(name: .customLong("max-connections"), help: "Most client connections at once; past it accepting pauses. Default auto (from the open-file limit).")
    var maxConnections: String?
    @Option(name: .customLong("upstream-connect-timeout"), help: "Upstream connect timeout (502 after). Default 5s.")
    var upstreamConnectTimeout: String?
    @Option(name: .customLong("response-header-timeout"), help: "Upstream response head timeout (504 after). Default 60s.")
    var responseHeaderTimeout: String?
    @Option(name: .customLong("upstream-idle-timeout"), help: "Pooled upstream connections close after this idle time. Default 4s.")
    var upstreamIdleTimeout: String?
    @Option(name: .customLong("upstream-max-idle"), help: "Idle upstream connections kept per upstream and loop. Default 512.")
    var upstreamMaxIdle: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical. Default info.")
    var logLevel: String?
    @Option(name: .customLong("log-format"), help: "text or json. Default text.")
    var logFormat: String?

    var flags: [String: [String]] {
        var flags: [String: [String]] = [:]
        func set(_ key: String, _ value: String?) { if let value { flags[key] = [value] } }
        if !self.listen.isEmpty { flags["listen"] = self.listen }
        if !self.upstream.isEmpty { flags["upstream"] = self.upstream }
        set("admin", self.admin)
        set("drain-delay", self.drainDelay)
        set("drain-timeout", self.drainTimeout)
        set("termination-grace", self.terminationGrace)
        set("drain-idle-quiet", self.drainIdleQuiet)
        set("threads", self.threads)
        set("request-header-timeout", self.requestHeaderTimeout)
        set("idle-timeout", self.idleTimeout)
        set("max-header-size", self.maxHeaderSize)
        set("max-body-size", self.maxBodySize)
        set("request-body-timeout", self.requestBodyTimeout)
        set("stream-stall-timeout", self.streamStallTimeout)
        set("max-connections", self.maxConnections)
        set("upstream-connect-timeout", self.upstreamConnectTimeout)
        set("response-header-timeout", self.responseHeaderTimeout)
        set("upstream-idle-timeout", self.upstreamIdleTimeout)
        set("upstream-max-idle", self.upstreamMaxIdle)
        set("log-level", self.logLevel)
        set("log-format", self.logFormat)
        return flags
    }

    /// Flags over environment over file over defaults, every error reported at once.
    func resolve(environment: [String: String], defaults: [String: [String]] = [:]) throws(ConfigErrors) -> SluiceConfig {
        var sources = ConfigSources(flags: self.flags, environment: environment)
        let path = self.config ?? environment["SLUICE_CONFIG"]
        if let path {
            do {
                sources.file = try ConfigFile.load(path: path)
                sources.fileName = path
            } catch {
                throw ConfigErrors(errors: [error])
            }
        }
        for (key, value) in defaults where sources.flags[key] == nil { sources.flags[key] = value }
        return try SluiceConfig.read(sources, defaultThreads: System.coreCount)
    }
}

/// Runs the proxy until it has drained.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy (the default).",
        discussion: """
            Every flag is also an environment variable SLUICE_<FLAG> (dashes as underscores; repeated
            values comma-separated) and a key of the --config YAML file. Precedence: flags, environment,
            file, defaults. Durations: 500ms, 5s, 1m30s or bare seconds.

            Signals: SIGTERM/SIGINT start the drain (readiness fails at once, traffic is still served for
            --drain-delay, then listeners close and connections finish within --drain-timeout); a second
            one skips the rest of the delay; a third one, or SIGQUIT, closes everything at once.
            Exit codes: 0 clean drain, 1 start-up or configuration error, 3 drain deadline reached.
            """
    )

    @OptionGroup var options: ProxyOptions

    func run() async throws {
        let config: SluiceConfig
        do {
            config = try self.options.resolve(environment: Environment.current)
        } catch {
            for problem in error.errors { Console.error("sluice: \(problem.message)") }
            throw ExitCode(1)
        }
        let code = await Launcher.runProxy(config: config, narrate: false)
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
