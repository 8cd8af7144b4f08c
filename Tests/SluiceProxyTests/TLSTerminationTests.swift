import Foundation
import NIOCore
import NIOPosix
import SluiceCore
import SluiceTestSupport
import Testing

@testable import SluiceProxy

/// The listener seam through the real ``ProxyServer``: a TLS listener beside a plaintext one, ALPN
/// choosing the front end, the scheme taken from the listener (issue 12). Certificate loading, SNI and
/// reload are ``TLSListener``'s own tests; the e2e tests (Tests/e2e/test_tls*.py) drive the binary.
@Suite("TLS termination through the proxy", .serialized)
struct TLSTerminationTests {
    /// A proxy with a plaintext listener and a TLS one (`a.example.test` and a wildcard) in front of an
    /// h2c upstream that echoes what the request carried.
    /// `http1Upstream`: an HTTP/1.1 upstream whose `/headers` answers with the request's fields.
    static func withTLSProxy(
        alpn: [String] = TLSSettings.alpnProtocols, http1Upstream: Bool = false,
        _ body: (ProxyHarness, _ tlsPort: Int, TestCertificates) async throws -> Void
    ) async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.remove() }
        let upstream: (port: Int, scheme: String, stop: @Sendable () async -> Void)
        if http1Upstream {
            let server = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
            upstream = (server.port, "http", { await server.stop() })
        } else {
            let h2c = try await H2CUpstream.start()
            upstream = (h2c.port, "h2c", { await h2c.stop() })
        }
        let secure = HostPort(host: "127.0.0.2", port: 0)
        let tls = TLSSettings(
            certificates: [.init(cert: certificates.a.cert, key: certificates.a.key), .init(cert: certificates.wildcard.cert, key: certificates.wildcard.key)],
            alpn: alpn)
        try await ProxyHarness.withProxy(
            upstreams: ["\(upstream.scheme)://127.0.0.1:\(upstream.port)"],
            { config in config.listen = [Listener(HostPort(host: "127.0.0.1", port: 0)), Listener(secure, tls: tls)] },
            cleanup: upstream.stop
        ) { proxy in
            let bound = proxy.server.boundListeners.withLockedValue { $0 }
            let tlsPort = try #require(proxy.server.listenerStatuses(proxy.server.config).last?.bound?.port ?? bound[secure]?.port)
            try await body(proxy, tlsPort, certificates)
        }
    }

    /// curl over TLS with `name` resolved to loopback, trusting the test CA; prints the HTTP version and body.
    static func curl(_ arguments: [String], name: String = "a.example.test", port: Int, certificates: TestCertificates, path: String = "/x")
        async throws -> Curl.Result
    {
        try await Curl.run(
            ["-sS", "--cacert", certificates.ca.cert, "--resolve", "\(name):\(port):127.0.0.2", "-w", "\n%{http_version}"] + arguments
                + ["https://\(name):\(port)\(path)"])
    }

    /// ALPN h2 and http/1.1 both reach an h2c upstream through the TLS listener, which sees
    /// `:scheme https`; over the plaintext listener `http`.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.curl), "needs /usr/bin/curl"))
    func theSchemeComesFromTheListener() async throws {
        try await Self.withTLSProxy { proxy, tlsPort, certificates in
            for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
                let headers = FileManager.default.temporaryDirectory.appendingPathComponent("tls-headers-\(UUID().uuidString)").path
                defer { try? FileManager.default.removeItem(atPath: headers) }
                let result = try await Self.curl([flag, "-D", headers], port: tlsPort, certificates: certificates)
                #expect(result.exitCode == 0, "\(result.stderr)")
                #expect(result.stdout.hasSuffix("\n\(version)"), "ALPN: \(result.stdout)")
                let dump = try String(contentsOfFile: headers, encoding: .utf8).replacingOccurrences(of: "\r\n", with: "\n").lowercased()
                #expect(dump.contains("x-scheme: https\n"), "\(dump)")
            }
            let plain = try await Curl.run(["-sS", "-D", "-", "-o", "/dev/null", proxy.url + "/x"])
            let dump = plain.stdout.replacingOccurrences(of: "\r\n", with: "\n").lowercased()
            #expect(dump.contains("x-scheme: http\n"), "\(dump)")
        }
    }

    /// An HTTP/1.1 upstream sees `X-Forwarded-Proto: https` for requests over TLS (HTTP/2 and
    /// HTTP/1.1), `http` over the plaintext listener.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.curl), "needs /usr/bin/curl"))
    func forwardedProtoComesFromTheListener() async throws {
        try await Self.withTLSProxy(http1Upstream: true) { proxy, tlsPort, certificates in
            for flag in ["--http2", "--http1.1"] {
                let result = try await Self.curl([flag], port: tlsPort, certificates: certificates, path: "/headers")
                #expect(result.exitCode == 0, "\(result.stderr)")
                #expect(result.stdout.contains("\nx-forwarded-proto: https\n"), "\(result.stdout)")
            }
            let plain = try await Curl.run(["-sS", proxy.url + "/headers"])
            #expect(plain.stdout.contains("\nx-forwarded-proto: http\n"), "\(plain.stdout)")
        }
    }

    /// A listener whose ALPN list is only `http/1.1` never selects h2, and a client without ALPN
    /// speaks HTTP/1.1.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.curl), "needs /usr/bin/curl"))
    func alpnListLimitsTheProtocols() async throws {
        try await Self.withTLSProxy(alpn: ["http/1.1"]) { _, tlsPort, certificates in
            let h2 = try await Self.curl(["--http2", "-o", "/dev/null"], port: tlsPort, certificates: certificates)
            #expect(h2.exitCode == 0 && h2.stdout.hasSuffix("\n1.1"), "\(h2)")
        }
        try await Self.withTLSProxy { _, tlsPort, certificates in
            let none = try await Self.curl(["--http2", "--no-alpn", "-o", "/dev/null"], port: tlsPort, certificates: certificates)
            #expect(none.exitCode == 0 && none.stdout.hasSuffix("\n1.1"), "\(none)")
        }
    }

    /// The drain over TLS: in `propagating` an HTTP/1.1 response over TLS still comes, with
    /// `Connection: close` once `draining` began for a request already in the connection; here the
    /// simplest form: readiness fails while TLS requests are served, and the drain ends cleanly.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.curl), "needs /usr/bin/curl"))
    func tlsRequestsAreServedWhileReadinessFails() async throws {
        try await Self.withTLSProxy { proxy, tlsPort, certificates in
            proxy.signal(.terminate)
            #expect(await proxy.reached(.propagating))
            let result = try await Self.curl(["--http1.1", "-o", "/dev/null", "-w", " %{http_code}"], port: tlsPort, certificates: certificates)
            #expect(result.exitCode == 0 && result.stdout == " 200", "\(result)")
        }
    }
}
