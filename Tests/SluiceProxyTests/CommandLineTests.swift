import Foundation
import Glibc
import NIOCore
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

/// The real `sluice` executable: flags, environment, config file, errors and exit codes.
@Suite("Command line")
struct CommandLineTests {
    static let binary: URL = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/sluice")
    }()

    static func run(_ arguments: [String], environment: [String: String] = [:]) async throws -> Curl.Result {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SLUICE_") }
        env.merge(environment) { $1 }
        return try await Subprocess.run(Self.binary.path, arguments, environment: env)
    }

    /// Every bad value is reported at once, one line each naming the setting, the value and what is accepted; exit 1.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func badSettingsAreAllReportedAndExitOne() async throws {
        let result = try await Self.run(
            ["--listen", "nowhere", "--drain-delay", "5x", "--threads", "0"],
            environment: ["SLUICE_MAX_BODY_SIZE": "lots"]
        )
        #expect(result.exitCode == 1)
        #expect(
            result.stderr == """
                sluice: invalid --listen "nowhere": expected HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:8080, port 0-65535
                sluice: invalid --threads "0": expected a whole number from 1 to 256
                sluice: invalid --drain-delay "5x": expected a duration such as 500ms, 5s, 1m30s or a bare number of seconds
                sluice: invalid SLUICE_MAX_BODY_SIZE "lots": expected a size such as 32768, 32KiB, 1MiB or 2GiB, or unlimited
                sluice: no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to a URL such as http://127.0.0.1:3000, https://api.internal or h2c://127.0.0.1:50051 (scheme http, https or h2c, no path)

                """
        )
    }

    static let knownFlags = SluiceConfig.commandLineSettings.map { "--\($0.name)" }.joined(separator: ", ")

    /// Bad values that start with a dash and an unknown flag are all reported at once, one `sluice:` line
    /// each, exit 1. (Issue 14: `-5` and `-1` were taken for unknown flags; exit 64 with only the first problem.)
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func badCommandLineIsReportedWholeAndExitsOne() async throws {
        let result = try await Self.run(["--max-header-size", "-5", "--upstream-max-idle", "-1", "--bogus", "x", "--upstream", "http://127.0.0.1:1"])
        #expect(result.exitCode == 1)
        #expect(
            result.stderr == """
                sluice: unknown flag --bogus; known flags: \(Self.knownFlags)
                sluice: invalid --max-header-size "-5": expected a size such as 32768, 32KiB, 1MiB or 2GiB, at least 1KiB
                sluice: invalid --upstream-max-idle "-1": expected a whole number from 0 to 100000

                """
        )
    }

    /// A typo of a flag names the flag meant, `--flag=value` is read, and a flag missing its value says what it takes; exit 1.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func typoAttachedValueAndMissingValueAreReportedTogether() async throws {
        let result = try await Self.run(["--drain-dely", "5s", "--upstream=http://127.0.0.1:1", "--threads=-2", "--log-level"])
        #expect(result.exitCode == 1)
        #expect(
            result.stderr == """
                sluice: unknown flag --drain-dely; did you mean --drain-delay?
                sluice: --log-level needs a value: --log-level LEVEL
                sluice: invalid --threads "-2": expected a whole number from 1 to 256

                """
        )
    }

    /// `sluice demo` reads its flags the same way: an unknown flag is a configuration error, exit 1.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func demoReportsBadFlagsLikeRun() async throws {
        let result = try await Self.run(["demo", "--drain-timeout", "-3s", "--bogus"])
        #expect(result.exitCode == 1)
        #expect(
            result.stderr == """
                sluice: unknown flag --bogus; known flags: \(Self.knownFlags)
                sluice: invalid --drain-timeout "-3s": expected a duration such as 500ms, 5s, 1m30s or a bare number of seconds

                """
        )
    }

    /// An app after `--` that cannot be started is a start-up error naming the command, exit 1.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func appThatCannotStartIsAStartUpError() async throws {
        let result = try await Self.run([
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1", "--", "/nonexistent/sluice-app", "--port", "3000",
        ])
        #expect(result.exitCode == 1)
        #expect(result.stderr.hasSuffix("sluice: cannot start the app \"/nonexistent/sluice-app --port 3000\": No such file or directory\n"), "\(result.stderr)")
    }

    /// Supervisor-mode settings without an app, and an empty command after `--`, are configuration errors.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func supervisorSettingsNeedAnApp() async throws {
        let result = try await Self.run(["--upstream", "http://127.0.0.1:1", "--app-ready-path", "/healthz", "--app-stop-signal", "BOGUS"])
        #expect(result.exitCode == 1)
        #expect(
            result.stderr == """
                sluice: invalid --app-stop-signal "BOGUS": expected one of TERM, INT, QUIT, HUP, USR1, USR2, WINCH, KILL
                sluice: --app-ready-path is a supervisor-mode setting, but no app is given: put its command after --, e.g. sluice --upstream http://127.0.0.1:3000 -- node server.js

                """)
        let empty = try await Self.run(["--upstream", "http://127.0.0.1:1", "--"])
        #expect(empty.exitCode == 1)
        #expect(empty.stderr == "sluice: -- is given without a command: put the app's command after it, e.g. -- node server.js\n")
    }

    /// `--help` (and `run --help`, `demo --help`, `check-config --help`) lists every flag with its value and help text; exit 0.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func helpListsEveryFlagWithItsHelpText() async throws {
        for arguments in [["--help"], ["run", "--help"], ["demo", "--help"], ["check-config", "--help"], ["--upstream", "http://127.0.0.1:1", "-h"]] {
            let result = try await Self.run(arguments)
            #expect(result.exitCode == 0, "\(arguments)")
            #expect(result.stderr == "", "\(arguments)")
            let text = result.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            for setting in SluiceConfig.commandLineSettings {
                #expect(text.contains("--\(setting.name) \(setting.value) \(setting.help)"), "\(arguments): --\(setting.name)")
            }
        }
    }

    /// A drain budget that does not fit the grace period is refused, naming the numbers.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func budgetThatDoesNotFitIsRefused() async throws {
        let result = try await Self.run(["--upstream", "http://127.0.0.1:3000", "--drain-delay", "15s", "--drain-timeout", "20s"])
        #expect(result.exitCode == 1)
        #expect(result.stderr.hasPrefix("sluice: drain budget does not fit: drain-delay 15s + drain-timeout 20s + margin 1s = 36s exceeds termination-grace 30s"))
    }

    /// A config file with an unknown key, or that is not YAML, is an error naming the file.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func configFileErrorsNameTheFile() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-\(UUID()).yaml")
        defer { try? FileManager.default.removeItem(at: file) }
        try "upstream: [http://127.0.0.1:3000]\ndrain-dely: 5s\n".write(to: file, atomically: true, encoding: .utf8)
        let unknown = try await Self.run(["--config", file.path])
        #expect(unknown.exitCode == 1)
        #expect(unknown.stderr.hasPrefix("sluice: unknown setting \"drain-dely\" in \(file.path); known settings: listen, listen-tls, tls-cert, tls-key, upstream,"))

        try "upstream: [unclosed\n".write(to: file, atomically: true, encoding: .utf8)
        let broken = try await Self.run([], environment: ["SLUICE_CONFIG": file.path])
        #expect(broken.exitCode == 1)
        #expect(broken.stderr.hasPrefix("sluice: config file \(file.path) is not valid YAML"))

        let missing = try await Self.run(["--config", "/nonexistent/sluice.yaml"])
        #expect(missing.stderr == "sluice: cannot read config file /nonexistent/sluice.yaml: No such file or directory\n")
    }

    /// A port someone else holds is a start-up error naming the address; exit 1.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func busyPortIsAStartUpError() async throws {
        let holder = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        defer { holder.close(promise: nil) }
        let port = holder.localAddress!.port!
        let result = try await Self.run(["--listen", "127.0.0.1:\(port)", "--admin", "127.0.0.1:0", "--upstream", "http://127.0.0.1:3000"])
        #expect(result.exitCode == 1)
        #expect(result.stderr.contains("sluice: cannot listen on 127.0.0.1:\(port): address already in use (errno 98)\n"))
    }

    /// Sluice can start again on the port it just drained, although that port has connections in
    /// TIME_WAIT (it closed idle keep-alive connections itself): a restart must not fail.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func restartOnTheSamePortRightAfterADrain() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        defer { Task { await upstream.stop() } }
        // Outside the ephemeral range (32768-60999), so no other test's port-0 listener can take it
        // between the two runs (that race once had this test talking to another sluice's admin port).
        let port = try #require(Self.freePort(in: 20_000..<30_000))
        for _ in 0..<2 {
            let process = Process()
            process.executableURL = Self.binary
            process.arguments = ["--listen", "127.0.0.1:\(port)", "--admin", "127.0.0.1:0", "--upstream", upstream.url, "--drain-delay", "0s", "--log-level", "error"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            var client: RawClient?
            for _ in 0..<200 where client == nil {
                client = try? await RawClient.connect(port: port)
                if client == nil { try await Task.sleep(for: .milliseconds(25)) }  // bounded wait for the listener
            }
            let connected = try #require(client)
            let (text, _) = try await connected.exchange("GET /hello HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            kill(process.processIdentifier, SIGTERM)
            #expect(try await connected.waitForClose() == "")
            let status = await Task.detached { process.waitUntilExit(); return process.terminationStatus }.value
            #expect(status == 0)
        }
    }

    /// The start-up probe only binds: nothing listens on the port after it (a listening probe once
    /// accepted a client's connection onto a channel that never answered), and it fails, naming
    /// the errno, on a port something listens on.
    @Test func startupProbeBindsWithoutListening() async throws {
        let port = try #require(Self.freePort(in: 20_000..<30_000))
        try ProxyServer.probeBind(host: "127.0.0.1", port: port)
        let fd = LoopbackSocket.make()
        defer { close(fd) }
        #expect(!LoopbackSocket.connect(fd, port: port))

        let holder = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: port).get()
        defer { holder.close(promise: nil) }
        do {
            try ProxyServer.probeBind(host: "127.0.0.1", port: port)
            Issue.record("the probe bound a port that has a listener")
        } catch let error as IOError {
            #expect(error.errnoCode == EADDRINUSE)
        }
    }

    /// A port in `range` nothing listens on now, probed by binding (with SO_REUSEADDR, as sluice binds).
    static func freePort(in range: Range<Int>) -> Int? {
        for port in range.shuffled().prefix(200) {
            let fd = LoopbackSocket.make { LoopbackSocket.setOption($0, SOL_SOCKET, SO_REUSEADDR, Int32(1)) }
            defer { close(fd) }
            if LoopbackSocket.bind(fd, port: port) != nil { return port }
        }
        return nil
    }

    /// `--version` prints the version.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func versionIsPrinted() async throws {
        let result = try await Self.run(["--version"])
        #expect(result.exitCode == 0)
        #expect(result.stdout == "0.1.0\n")
    }
}
