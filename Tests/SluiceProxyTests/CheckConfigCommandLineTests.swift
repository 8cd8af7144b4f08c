import Foundation
import Testing

/// The real `sluice check-config`: a good file prints the effective configuration and exits 0, a bad
/// one prints every problem and exits 1, `--format json` is one object for scripts.
@Suite("check-config command line")
struct CheckConfigCommandLineTests {
    static var enabled: Bool { FileManager.default.fileExists(atPath: CommandLineTests.binary.path) }

    /// Writes `text` to a fresh temporary YAML file and returns its path.
    static func file(_ text: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-check-\(UUID()).yaml")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    /// DESIGN.md §5's example, without its `tls:` blocks (TLS is a later issue).
    static let example = """
        listen:
          - 0.0.0.0:8080
          - address: 0.0.0.0:8443
        admin: 0.0.0.0:9901
        drain-delay: 5s
        drain-timeout: 20s
        termination-grace: 30s
        upstreams:
          api:
            endpoints: [http://api.default.svc:3000, http://10.0.0.7:3000]
            balance: least-request
            retries: 1
            retry-buffer: 64KiB
            health: {path: /healthz, interval: 2s, timeout: 1s, healthy-after: 2, unhealthy-after: 3, expect: 200-399}
            outlier: {consecutive-failures: 5, base-ejection: 30s, max-ejected: 50%}
            connect-timeout: 1s
            response-header-timeout: 30s
            idle-timeout: 4s
            max-idle: 512
            dns-refresh: 5s
          grpc:
            endpoints: [h2c://grpc.default.svc:50051]
            outlier: off
        routes:
          - host: API.example.com
            path-prefix: /v1/
            upstream: api
            strip-prefix: true
            host-rewrite: api.internal
            retry-on-5xx: true
            max-body-size: 10MiB
          - host: "*.example.com"
            upstream: grpc
          - path-prefix: /
            upstream: api
        ready-requires: [api]

        """

    /// A valid file: the effective configuration (groups with their inherited settings, routes) and the
    /// budget on stdout, "configuration is valid" on stderr; exit 0.
    @Test(.enabled(if: enabled))
    func validFilePrintsTheEffectiveConfigurationAndExitsZero() async throws {
        let path = try Self.file(Self.example)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await CommandLineTests.run(["check-config", "--config", path, "--threads", "3", "--upstream-connect-timeout", "2s"])
        #expect(result.exitCode == 0)
        #expect(result.stderr == "sluice: configuration is valid\n")
        #expect(result.stdout.hasPrefix("listen:\n  - 0.0.0.0:8080\n  - 0.0.0.0:8443\nadmin: 0.0.0.0:9901\nthreads: 3\ndrain-delay: 5s\n"))
        #expect(
            result.stdout.contains(
                """
                  grpc:
                    endpoints: [h2c://grpc.default.svc:50051]
                    balance: round-robin
                    retries: 1
                    retry-buffer: 64KiB
                    health: off
                    outlier: off
                    connect-timeout: 2s
                    response-header-timeout: 1m
                    idle-timeout: 4s
                    max-idle: 512
                    dns-refresh: 5s
                routes:
                  - host: api.example.com
                    path-prefix: /v1/
                    upstream: api
                    strip-prefix: true
                    host-rewrite: api.internal
                    retry-on-5xx: true
                    max-body-size: 10MiB
                  - host: "*.example.com"
                    path-prefix: /
                    upstream: grpc
                  - path-prefix: /
                    upstream: api
                ready-requires: [api]
                # drain budget: drain-delay 5s + drain-timeout 20s + margin 1s = 26s of termination-grace 30s (4s to spare)

                """))
        #expect(result.stdout.contains("    connect-timeout: 1s\n"))  // api's own, over the flag
    }

    /// `tunnel-idle-timeout` is read from the file, the environment and the flag (the flag winning),
    /// printed in the effective configuration and in the JSON report, and must be above zero.
    @Test(.enabled(if: enabled))
    func tunnelIdleTimeoutIsReadPrintedAndValidated() async throws {
        let path = try Self.file("upstream: http://127.0.0.1:3000\ntunnel-idle-timeout: 2h\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fromFile = try await CommandLineTests.run(["check-config", "--config", path])
        #expect(fromFile.exitCode == 0)
        #expect(fromFile.stdout.contains("\nstream-stall-timeout: 30s\ntunnel-idle-timeout: 2h\nmax-connections: auto\n"))
        let fromEnvironment = try await CommandLineTests.run(
            ["check-config", "--config", path, "--format", "json"], environment: ["SLUICE_TUNNEL_IDLE_TIMEOUT": "90s"])
        #expect(fromEnvironment.exitCode == 0)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(fromEnvironment.stdout.utf8)) as? [String: Any])
        let config = try #require(report["config"] as? [String: Any])
        #expect(config["tunnel_idle_timeout"] as? String == "1m30s")
        #expect(config["tunnel_idle_timeout_seconds"] as? Int == 90)
        let fromFlag = try await CommandLineTests.run(
            ["check-config", "--config", path, "--tunnel-idle-timeout", "45m"], environment: ["SLUICE_TUNNEL_IDLE_TIMEOUT": "90s"])
        #expect(fromFlag.exitCode == 0)
        #expect(fromFlag.stdout.contains("\ntunnel-idle-timeout: 45m\n"))
        let zero = try await CommandLineTests.run(["check-config", "--config", path, "--tunnel-idle-timeout", "0s"])
        #expect(zero.exitCode == 1)
        #expect(zero.stdout == "")
        #expect(zero.stderr.contains("sluice: invalid --tunnel-idle-timeout \"0s\": expected a duration such as 500ms, 5s, 1m30s or a bare number of seconds, greater than zero\n"))
    }

    /// A bad file: every problem on stderr with its path, nothing on stdout; exit 1.
    @Test(.enabled(if: enabled))
    func invalidFileReportsEveryProblemAndExitsOne() async throws {
        let path = try Self.file(
            """
            listen:
              - 0.0.0.0:8080
              - {address: 0.0.0.0:8443, tls: {certificates: []}}
            upstreams:
              api:
                endpoints: [http://api:3000]
                health: {interval: 2x}
              grpc:
                endpoints: [h2c://grpc:50051]
            routes:
              - {path-prefix: /v1/, upstream: api}
              - {host: "*.example.com", upstream: grpc}
              - {path-prefix: /, upstream: apii}

            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await CommandLineTests.run(["check-config", "--config", path])
        #expect(result.exitCode == 1)
        #expect(result.stdout == "")
        #expect(
            result.stderr == """
                sluice: listen[1].tls.certificates: empty; a TLS listener needs at least one {cert: FILE, key: FILE}
                sluice: upstreams.api.health.interval: "2x" is not a duration (500ms, 5s, 1m30s)
                sluice: routes[2].upstream: "apii" is not a group; groups: api, grpc
                sluice: configuration is invalid (3 errors)

                """)
    }

    /// `--format json` with the flags' short form and a grace period: one object with the budget in
    /// seconds and the admin port; a grace period too short for it fails with exit 1.
    @Test(.enabled(if: enabled))
    func jsonFormatReportsTheBudgetForScripts() async throws {
        let fits = try await CommandLineTests.run(
            ["check-config", "--upstream", "http://127.0.0.1:3000", "--format", "json", "--grace-period", "30"],
            environment: ["SLUICE_ADMIN": "0.0.0.0:9902"]
        )
        #expect(fits.exitCode == 0)
        #expect(fits.stderr == "")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(fits.stdout.utf8)) as? [String: Any])
        #expect(report["valid"] as? Bool == true)
        #expect(report["grace_period_seconds"] as? Int == 30)
        let config = try #require(report["config"] as? [String: Any])
        #expect(config["admin_port"] as? Int == 9902)
        let drain = try #require(config["drain"] as? [String: Any])
        #expect(drain["budget_seconds"] as? Int == 26)
        #expect(drain["termination_grace"] as? String == "30s")

        let short = try await CommandLineTests.run(["check-config", "--upstream", "http://127.0.0.1:3000", "--format=json", "--grace-period", "10s"])
        #expect(short.exitCode == 1)
        let failed = try #require(try JSONSerialization.jsonObject(with: Data(short.stdout.utf8)) as? [String: Any])
        #expect(failed["valid"] as? Bool == false)
        #expect(
            failed["errors"] as? [String] == [
                "drain budget does not fit the grace period: drain-delay 5s + drain-timeout 20s + margin 1s = 26s exceeds the grace period 10s; Sluice would be killed while draining",
                "termination-grace 30s is longer than the grace period 10s: Sluice would plan with time it does not have; set them equal",
            ])
    }

    /// Bad check-config flags and an unreadable file are errors like any other; a setting given twice
    /// is a warning; exit 1 or 0.
    @Test(.enabled(if: enabled))
    func badCheckFlagsMissingFileAndWarnings() async throws {
        let bad = try await CommandLineTests.run(["check-config", "--upstream", "http://127.0.0.1:3000", "--format", "xml", "--grace-period", "soon"])
        #expect(bad.exitCode == 1)
        #expect(
            bad.stderr == """
                sluice: invalid --format "xml": expected text or json
                sluice: invalid --grace-period "soon": expected a duration such as 500ms, 5s, 1m30s or a bare number of seconds
                sluice: configuration is invalid (2 errors)

                """)
        let missing = try await CommandLineTests.run(["check-config", "--config", "/nonexistent/sluice.yaml"])
        #expect(missing.exitCode == 1)
        #expect(
            missing.stderr == """
                sluice: cannot read config file /nonexistent/sluice.yaml: No such file or directory
                sluice: configuration is invalid (1 error)

                """)
        let twice = try await CommandLineTests.run(
            ["check-config", "--upstream", "http://127.0.0.1:3000", "--drain-delay", "5s"], environment: ["SLUICE_DRAIN_DELAY": "7s"])
        #expect(twice.exitCode == 0)
        #expect(twice.stderr == "sluice: warning: drain-delay: --drain-delay 5s overrides SLUICE_DRAIN_DELAY 7s\nsluice: configuration is valid\n")
        #expect(twice.stdout.contains("upstreams:\n  default:\n    endpoints: [http://127.0.0.1:3000]\n"))
        #expect(twice.stdout.contains("routes:\n  - path-prefix: /\n    upstream: default\n"))
    }
}
