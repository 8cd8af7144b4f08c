import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SluiceCore
import Testing
import X509

@testable import SluiceProxy

/// TLS termination (issue 12) on real loopback sockets: certificate loading and its error
/// messages, SNI, ALPN, minimum version, handshake metrics, reload, and the file watcher.
@Suite("TLS listener")
struct TLSListenerTests {
    static let address = HostPort(host: "127.0.0.1", port: 0)
    static let origin = "listen 127.0.0.1:0"

    static func listener(_ files: [TestCertificates.Files], minVersion: TLSSettings.Version = .v1_2, alpn: [String] = ["h2", "http/1.1"]) -> Listener {
        Listener(
            address,
            tls: TLSSettings(certificates: files.map { .init(cert: $0.cert, key: $0.key) }, minVersion: minVersion, alpn: alpn)
        )
    }

    static let logger = Logger(label: "sluice-tls-test") { _ in SwiftLogNoOpLogHandler() }

    // MARK: - SNI

    /// Three certificates (a, b, *.wild): each name gets its own, an unknown name and no SNI get
    /// the first.
    @Test(arguments: [
        ("a.example.test", ["a.example.test"]), ("b.example.test", ["b.example.test"]), ("B.Example.Test", ["b.example.test"]),
        ("x.wild.example.test", ["*.wild.example.test"]), ("unknown.test", ["a.example.test"]), ("a.b.wild.example.test", ["a.example.test"]),
        (nil, ["a.example.test"]),
    ] as [(String?, [String])])
    func sniPicksTheCertificateByItsNames(serverName: String?, served: [String]) async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let tls = try TLSListener(listener: Self.listener([certs.a, certs.b, certs.wildcard]), metrics: ProxyMetrics(), logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let client = try await TLSTestClient.connect(port: server.port, serverName: serverName, ca: certs.ca.cert)
        let handshake = try await client.handshake.get()
        #expect(handshake.names == served)
        try await client.channel.executeThenClose { _, _ in }
    }

    /// A certificate file with the leaf and its issuer: the client gets both.
    @Test func chainFileServesTheWholeChain() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let chained = try certs.issue(names: ["chain.example.test"], appendCA: true)
        let tls = try TLSListener(listener: Self.listener([chained]), metrics: ProxyMetrics(), logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let client = try await TLSTestClient.connect(port: server.port, serverName: "chain.example.test", ca: certs.ca.cert, captureChain: true)
        let handshake = try await client.handshake.get()
        #expect(handshake.names == ["chain.example.test"])
        #expect(handshake.chainLength == 2)
        try await client.channel.executeThenClose { _, _ in }
    }

    // MARK: - ALPN, version, handshake metrics

    /// The client's offer decides: h2 when it offers h2, http/1.1 when only that, none without
    /// ALPN. The event reaches the handler after the observer, and the handshake is counted with
    /// its version and protocol.
    @Test(arguments: [
        (["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"), (["http/1.1", "h2"], "h2"), ([], "none"),
    ] as [([String], String)])
    func alpnIsNegotiatedPassedOnAndCounted(offer: [String], negotiated: String) async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let metrics = ProxyMetrics()
        let tls = try TLSListener(listener: Self.listener([certs.a]), metrics: metrics, logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let client = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: certs.ca.cert, alpn: offer)
        let handshake = try await client.handshake.get()
        #expect(handshake.alpn == (negotiated == "none" ? nil : negotiated))
        #expect(handshake.version == .tlsv13)
        try await client.channel.executeThenClose { inbound, outbound in
            var reader = LineReader(inbound)
            #expect(try await reader.read(until: "\n") == "event:\(negotiated)\n")
            // The observer has left; data flows both ways.
            try await outbound.write(ByteBuffer(string: "ping"))
            #expect(try await reader.read(until: "ping") == "ping")
        }
        let labels = ["listener": "127.0.0.1:0", "version": "1.3", "alpn": negotiated]
        #expect(await ProxyHarness.eventually { MetricsText(metrics).value("sluice_tls_handshakes_total", labels) == 1 })
    }

    /// TLS 1.2 is accepted with the default minimum, and counted as 1.2.
    @Test func tls12ClientIsAcceptedByDefault() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let metrics = ProxyMetrics()
        let tls = try TLSListener(listener: Self.listener([certs.a]), metrics: metrics, logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let client = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: certs.ca.cert, maxVersion: .tlsv12)
        let handshake = try await client.handshake.get()
        #expect(handshake.version == .tlsv12)
        #expect(handshake.alpn == "h2")
        try await client.channel.executeThenClose { _, _ in }
        let labels = ["listener": "127.0.0.1:0", "version": "1.2", "alpn": "h2"]
        #expect(await ProxyHarness.eventually { MetricsText(metrics).value("sluice_tls_handshakes_total", labels) == 1 })
    }

    /// min-version 1.3 refuses a client that speaks at most TLS 1.2; the failure is counted as
    /// `protocol_version`.
    @Test func minimumVersion13RefusesATLS12Client() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let metrics = ProxyMetrics()
        let tls = try TLSListener(listener: Self.listener([certs.a], minVersion: .v1_3), metrics: metrics, logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let client = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: certs.ca.cert, maxVersion: .tlsv12)
        await #expect(throws: (any Error).self) { try await client.handshake.get() }
        try? await client.channel.executeThenClose { _, _ in }
        let labels = ["listener": "127.0.0.1:0", "reason": "protocol_version"]
        #expect(await ProxyHarness.eventually { MetricsText(metrics).value("sluice_tls_handshake_failures_total", labels) == 1 })
        #expect(MetricsText(metrics).value("sluice_tls_handshakes_total", ["listener": "127.0.0.1:0", "version": "1.2", "alpn": "h2"]) == 0)
    }

    /// Failures by reason: plain HTTP on the TLS port is `not_tls`, a client that closes at once
    /// is `eof`, one that sends nothing is `timeout` (and is closed), a client that rejects our
    /// certificate is `bad_certificate`.
    @Test func handshakeFailuresAreCountedByReason() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let metrics = ProxyMetrics()
        let tls = try TLSListener(
            listener: Self.listener([certs.a]), metrics: metrics, logger: Self.logger, handshakeTimeout: .milliseconds(300)
        )
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }
        func failures(_ reason: String) -> Double? {
            MetricsText(metrics).value("sluice_tls_handshake_failures_total", ["listener": "127.0.0.1:0", "reason": reason])
        }

        let plain = try await RawTCP.connect(port: server.port)
        try await plain.writeAndFlush(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try await plain.closeFuture.get()
        #expect(await ProxyHarness.eventually { failures("not_tls") == 1 })

        let closing = try await RawTCP.connect(port: server.port)
        try await closing.close()
        #expect(await ProxyHarness.eventually { failures("eof") == 1 })

        let silent = try await RawTCP.connect(port: server.port)
        let started = ContinuousClock.now
        try await silent.closeFuture.get()  // The server closes it.
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(await ProxyHarness.eventually { failures("timeout") == 1 })

        // Trusting another CA, the client rejects the certificate with an alert.
        let other = try TestCertificates.make()
        defer { other.remove() }
        let rejecting = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: other.ca.cert)
        await #expect(throws: (any Error).self) { try await rejecting.handshake.get() }
        try? await rejecting.channel.executeThenClose { _, _ in }
        #expect(await ProxyHarness.eventually { failures("bad_certificate") == 1 })
        #expect(failures("other") == 0)
    }

    /// Each certificate's notAfter, by its first name, and the summaries for /status.
    @Test func expiryGaugeAndSummariesNameEachCertificate() throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let notAfter = TestCertificates.date("2031-06-01T12:00:00Z")
        let b = try certs.issue(names: ["b2.example.test", "alt.example.test"], notAfter: notAfter)
        let metrics = ProxyMetrics()
        let tls = try TLSListener(listener: Self.listener([certs.wildcard, b]), metrics: metrics, logger: Self.logger)
        let expected = Double(Int64(notAfter.timeIntervalSince1970))
        #expect(
            MetricsText(metrics).value(
                "sluice_tls_certificate_expiry_timestamp_seconds", ["listener": "127.0.0.1:0", "name": "b2.example.test"]
            ) == expected
        )
        #expect(
            MetricsText(metrics).value(
                "sluice_tls_certificate_expiry_timestamp_seconds", ["listener": "127.0.0.1:0", "name": "*.wild.example.test"]
            ) != nil
        )
        #expect(tls.certificateSummaries.count == 2)
        #expect(tls.certificateSummaries[1] == TLSCertificateSummary(names: ["b2.example.test", "alt.example.test"], file: b.cert, notAfter: 1_938_081_600))
    }

    // MARK: - Certificate errors

    /// Each problem alone, with its exact message, from `init` and from `check`.
    @Test func eachCertificateProblemHasItsMessage() throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let dir = certs.directory
        let garbage = "\(dir)/garbage.pem"
        try "hello\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        let o = Self.origin
        let cases: [(TestCertificates.Files, String)] = [
            (.init(cert: "\(dir)/missing.crt", key: certs.a.key), "TLS certificate \(dir)/missing.crt (\(o)): cannot read: no such file or directory"),
            (.init(cert: garbage, key: certs.a.key), "TLS certificate \(garbage) (\(o)): not a PEM certificate"),
            (.init(cert: certs.a.key, key: certs.a.key), "TLS certificate \(certs.a.key) (\(o)): not a PEM certificate"),
            (certs.expired, "TLS certificate \(certs.expired.cert) (\(o)): expired on 2021-01-01T00:00:00Z"),
            (certs.notYetValid, "TLS certificate \(certs.notYetValid.cert) (\(o)): not valid before 2099-01-01T00:00:00Z"),
            (.init(cert: certs.a.cert, key: "\(dir)/missing.key"), "TLS key \(dir)/missing.key (\(o)): cannot read: no such file or directory"),
            (.init(cert: certs.a.cert, key: dir), "TLS key \(dir) (\(o)): cannot read: is a directory"),
            (.init(cert: certs.a.cert, key: garbage), "TLS key \(garbage) (\(o)): not a PEM private key"),
            (.init(cert: certs.a.cert, key: certs.a.cert), "TLS key \(certs.a.cert) (\(o)): not a PEM private key"),
            (certs.mismatched, "TLS key \(certs.mismatched.key) (\(o)): does not match certificate \(certs.a.cert)"),
        ]
        for (files, message) in cases {
            let listener = Self.listener([files])
            #expect(TLSListener.check(listener) == [message])
            #expect(throws: TLSCertificateErrors(messages: [message])) {
                try TLSListener(listener: listener, metrics: ProxyMetrics(), logger: Self.logger)
            }
        }
    }

    /// An unreadable key file (when not root, who can read anything).
    @Test(.enabled(if: getuid() != 0)) func unreadableKeyIsPermissionDenied() throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: certs.a.key)
        #expect(TLSListener.check(Self.listener([certs.a])) == ["TLS key \(certs.a.key) (\(Self.origin)): cannot read: permission denied"])
    }

    /// Several problems in several certificates: every one reported at once, in order.
    @Test func everyProblemIsReportedAtOnce() throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let dir = certs.directory
        let o = Self.origin
        let listener = Self.listener([
            certs.a, certs.expired, .init(cert: "\(dir)/missing.crt", key: "\(dir)/missing.key"), certs.mismatched, certs.notYetValid,
        ])
        let expected = [
            "TLS certificate \(certs.expired.cert) (\(o)): expired on 2021-01-01T00:00:00Z",
            "TLS certificate \(dir)/missing.crt (\(o)): cannot read: no such file or directory",
            "TLS key \(dir)/missing.key (\(o)): cannot read: no such file or directory",
            "TLS key \(certs.mismatched.key) (\(o)): does not match certificate \(certs.a.cert)",
            "TLS certificate \(certs.notYetValid.cert) (\(o)): not valid before 2099-01-01T00:00:00Z",
        ]
        #expect(TLSListener.check(listener) == expected)
        #expect(throws: TLSCertificateErrors(messages: expected)) {
            try TLSListener(listener: listener, metrics: ProxyMetrics(), logger: Self.logger)
        }
        #expect(TLSListener.check(Self.listener([certs.a, certs.b, certs.wildcard])) == [])
        #expect(TLSListener.check(Listener(Self.address)) == [])
    }

    /// RSA keys load, and an RSA key that is not the certificate's is found.
    @Test func rsaKeysAreCheckedToo() throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let rsa = try certs.issue(names: ["rsa.example.test"], key: .rsa2048)
        let otherRSA = try certs.issue(names: ["rsa2.example.test"], key: .rsa2048)
        #expect(TLSListener.check(Self.listener([rsa])) == [])
        #expect(
            TLSListener.check(Self.listener([.init(cert: rsa.cert, key: otherRSA.key)]))
                == ["TLS key \(otherRSA.key) (\(Self.origin)): does not match certificate \(rsa.cert)"]
        )
    }

    // MARK: - Reload

    /// A good new certificate: new handshakes get it; a connection made before keeps working on
    /// the old one; counted ok. Reloading again without a change is `unchanged` and not counted.
    @Test func reloadServesTheNewCertificateAndKeepsEstablishedConnections() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let live = TestCertificates.Files(cert: "\(certs.directory)/live.crt", key: "\(certs.directory)/live.key")
        try Self.copy(certs.a, to: live)
        let metrics = ProxyMetrics()
        let tls = try TLSListener(listener: Self.listener([live]), metrics: metrics, logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let before = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: certs.ca.cert)
        #expect(try await before.handshake.get().names == ["a.example.test"])
        try await before.channel.executeThenClose { inbound, outbound in
            var reader = LineReader(inbound)
            #expect(try await reader.read(until: "\n") == "event:h2\n")

            try Self.copy(certs.b, to: live)
            #expect(tls.reload() == .reloaded)
            let after = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: certs.ca.cert)
            #expect(try await after.handshake.get().names == ["b.example.test"])
            try await after.channel.executeThenClose { _, _ in }

            try await outbound.write(ByteBuffer(string: "still here"))
            #expect(try await reader.read(until: "still here") == "still here")
        }
        #expect(tls.certificateSummaries.map(\.names) == [["b.example.test"]])
        #expect(tls.reload() == .unchanged)
        let ok = ["listener": "127.0.0.1:0", "result": "ok"]
        #expect(MetricsText(metrics).value("sluice_tls_certificate_reloads_total", ok) == 1)
        // The expiry series follows the names: a's gone, b's there.
        let text = MetricsText(metrics)
        #expect(text.value("sluice_tls_certificate_expiry_timestamp_seconds", ["listener": "127.0.0.1:0", "name": "a.example.test"]) == nil)
        #expect(text.value("sluice_tls_certificate_expiry_timestamp_seconds", ["listener": "127.0.0.1:0", "name": "b.example.test"]) != nil)
    }

    /// A bad new certificate: the old one stays in use, the reload fails with the message and is
    /// counted as an error.
    @Test func badReloadKeepsTheOldCertificate() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let live = TestCertificates.Files(cert: "\(certs.directory)/live.crt", key: "\(certs.directory)/live.key")
        try Self.copy(certs.a, to: live)
        let metrics = ProxyMetrics()
        let tls = try TLSListener(listener: Self.listener([live]), metrics: metrics, logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        // b's certificate with a's key still in place.
        try FileManager.default.removeItem(atPath: live.cert)
        try FileManager.default.copyItem(atPath: certs.b.cert, toPath: live.cert)
        let result = tls.reload()
        #expect(result == .failed(TLSCertificateErrors(messages: ["TLS key \(live.key) (\(Self.origin)): does not match certificate \(live.cert)"])))
        let client = try await TLSTestClient.connect(port: server.port, serverName: "b.example.test", ca: certs.ca.cert)
        #expect(try await client.handshake.get().names == ["a.example.test"])
        try await client.channel.executeThenClose { _, _ in }
        #expect(tls.certificateSummaries.map(\.names) == [["a.example.test"]])
        #expect(MetricsText(metrics).value("sluice_tls_certificate_reloads_total", ["listener": "127.0.0.1:0", "result": "error"]) == 1)
        #expect(MetricsText(metrics).value("sluice_tls_certificate_reloads_total", ["listener": "127.0.0.1:0", "result": "ok"]) == 0)
    }

    /// New settings on a config reload: another certificate list and min-version 1.3 apply to new
    /// handshakes.
    @Test func reloadWithNewSettingsAppliesThem() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let tls = try TLSListener(listener: Self.listener([certs.a]), metrics: ProxyMetrics(), logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let settings = Self.listener([certs.b, certs.a], minVersion: .v1_3, alpn: ["http/1.1"]).tls!
        #expect(tls.reload(settings: settings) == .reloaded)
        #expect(tls.settings == settings)
        let client = try await TLSTestClient.connect(port: server.port, serverName: "unknown.test", ca: certs.ca.cert)
        let handshake = try await client.handshake.get()
        #expect(handshake.names == ["b.example.test"])
        #expect(handshake.alpn == "http/1.1")
        try await client.channel.executeThenClose { _, _ in }
        let old = try await TLSTestClient.connect(port: server.port, serverName: nil, ca: certs.ca.cert, maxVersion: .tlsv12)
        await #expect(throws: (any Error).self) { try await old.handshake.get() }
        try? await old.channel.executeThenClose { _, _ in }
    }

    // MARK: - Watcher

    /// A Kubernetes Secret volume's update: `..data` swapped to a new timestamped directory. The
    /// watcher (200 ms) reloads, and the next handshake gets the new certificate.
    @Test func watcherReloadsOnASecretVolumeSymlinkSwap() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let volume = "\(certs.directory)/volume"
        try SecretVolume.create(at: volume, with: certs.a)
        let files = TestCertificates.Files(cert: "\(volume)/tls.crt", key: "\(volume)/tls.key")
        let tls = try TLSListener(listener: Self.listener([files]), metrics: ProxyMetrics(), logger: Self.logger)
        let server = try await TLSEchoServer.start(tls)
        defer { Task { await server.stop() } }

        let (events, continuation) = AsyncStream.makeStream(of: TLSReloadResult.self)
        let watcher = CertificateWatcher(
            listeners: [tls], interval: .milliseconds(200), eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Self.logger
        ) { _, result in continuation.yield(result) }
        watcher.start()
        defer { watcher.stop() }

        for (round, next) in [certs.b, certs.a, certs.wildcard].enumerated() {
            let swapped = ContinuousClock.now
            try SecretVolume.swap(at: volume, to: next, generation: round + 1)
            let result = try await Self.first(of: events, within: .seconds(10))
            #expect(result == .reloaded)
            #expect(ContinuousClock.now - swapped < .seconds(5))
            let expected = try X509.Certificate(pemEncoded: String(contentsOfFile: next.cert, encoding: .utf8))
            let client = try await TLSTestClient.connect(port: server.port, serverName: "a.example.test", ca: certs.ca.cert)
            #expect(try await client.handshake.get().names == TLSCertificateStore.names(expected))
            try await client.channel.executeThenClose { _, _ in }
        }
    }

    /// A watched file rewritten in place (same path, new bytes) is a change too; a bad write is
    /// reported once, and the good write after it reloads.
    @Test func watcherReloadsOnInPlaceWritesAndReportsABadOneOnce() async throws {
        let certs = try TestCertificates.make()
        defer { certs.remove() }
        let live = TestCertificates.Files(cert: "\(certs.directory)/live.crt", key: "\(certs.directory)/live.key")
        try Self.copy(certs.a, to: live)
        let tls = try TLSListener(listener: Self.listener([live]), metrics: ProxyMetrics(), logger: Self.logger)
        let (events, continuation) = AsyncStream.makeStream(of: TLSReloadResult.self)
        let watcher = CertificateWatcher(
            listeners: [tls], interval: .milliseconds(200), eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: Self.logger
        ) { _, result in continuation.yield(result) }
        watcher.start()
        defer { watcher.stop() }

        try "garbage\n".write(toFile: live.cert, atomically: false, encoding: .utf8)
        let bad = try await Self.first(of: events, within: .seconds(10))
        #expect(bad == .failed(TLSCertificateErrors(messages: ["TLS certificate \(live.cert) (\(Self.origin)): not a PEM certificate"])))
        try Self.copy(certs.b, to: live)
        #expect(try await Self.first(of: events, within: .seconds(10)) == .reloaded)
        #expect(tls.certificateSummaries.map(\.names) == [["b.example.test"]])
    }

    // MARK: - Helpers

    /// Writes `files`' bytes over `target`'s (in place, no new inode).
    static func copy(_ files: TestCertificates.Files, to target: TestCertificates.Files) throws {
        try Data(contentsOf: URL(fileURLWithPath: files.cert)).write(to: URL(fileURLWithPath: target.cert))
        try Data(contentsOf: URL(fileURLWithPath: files.key)).write(to: URL(fileURLWithPath: target.key))
    }

    struct TimedOut: Error {}

    /// The next element of `stream`, or `TimedOut` after `timeout`.
    static func first<T: Sendable>(of stream: AsyncStream<T>, within timeout: Duration) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                for await element in stream { return element }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let element = first else { throw TimedOut() }
            return element
        }
    }
}

/// A Kubernetes Secret volume's layout: `tls.crt -> ..data/tls.crt`, `..data -> ..<generation>`,
/// updated by writing a new generation directory and renaming a new `..data` link over the old.
enum SecretVolume {
    static func create(at volume: String, with files: TestCertificates.Files) throws {
        try FileManager.default.createDirectory(atPath: volume, withIntermediateDirectories: true)
        try self.writeGeneration(at: volume, files: files, generation: 0)
        try FileManager.default.createSymbolicLink(atPath: "\(volume)/..data", withDestinationPath: "..2026_12_03_gen0")
        try FileManager.default.createSymbolicLink(atPath: "\(volume)/tls.crt", withDestinationPath: "..data/tls.crt")
        try FileManager.default.createSymbolicLink(atPath: "\(volume)/tls.key", withDestinationPath: "..data/tls.key")
    }

    static func swap(at volume: String, to files: TestCertificates.Files, generation: Int) throws {
        try self.writeGeneration(at: volume, files: files, generation: generation)
        try FileManager.default.createSymbolicLink(atPath: "\(volume)/..data_tmp", withDestinationPath: "..2026_12_03_gen\(generation)")
        guard rename("\(volume)/..data_tmp", "\(volume)/..data") == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    }

    private static func writeGeneration(at volume: String, files: TestCertificates.Files, generation: Int) throws {
        let directory = "\(volume)/..2026_12_03_gen\(generation)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: files.cert, toPath: "\(directory)/tls.crt")
        try FileManager.default.copyItem(atPath: files.key, toPath: "\(directory)/tls.key")
    }
}

/// A server whose pipeline is a TLS listener's handlers, then a handler that writes
/// `event:<alpn>\n` when `TLSUserEvent.handshakeCompleted` reaches it and echoes what it reads.
struct TLSEchoServer: Sendable {
    let channel: any Channel
    var port: Int { self.channel.localAddress!.port! }

    static func start(_ listener: TLSListener) async throws -> TLSEchoServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try listener.addHandlers(to: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return TLSEchoServer(channel: channel)
    }

    func stop() async {
        try? await self.channel.close()
    }

    final class EchoHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? TLSUserEvent, case .handshakeCompleted(let alpn) = event {
                context.writeAndFlush(Self.wrapOutboundOut(ByteBuffer(string: "event:\(alpn ?? "none")\n")), promise: nil)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(data, promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// A TLS client on loopback that trusts `ca` (without checking the name, so that the test sees
/// whichever certificate the server picks) and reports what the handshake gave.
struct TLSTestClient: Sendable {
    struct Handshake: Sendable {
        var names: [String]
        var alpn: String?
        var version: TLSVersion?
        var chainLength: Int
    }

    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    let handshake: EventLoopFuture<Handshake>

    static func connect(
        port: Int, serverName: String?, ca: String, alpn: [String] = ["h2", "http/1.1"], maxVersion: TLSVersion? = nil,
        captureChain: Bool = false
    ) async throws -> TLSTestClient {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        configuration.certificateVerification = .noHostnameVerification
        configuration.applicationProtocols = alpn
        configuration.maximumTLSVersion = maxVersion
        let context = try NIOSSLContext(configuration: configuration)
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let chain = NIOLockedValueBox(0)
                    let tls: NIOSSLClientHandler
                    if captureChain {
                        // Records the chain the server presented; accepts it unverified.
                        tls = try NIOSSLClientHandler(context: context, serverHostname: serverName) { certificates, promise in
                            chain.withLockedValue { $0 = certificates.count }
                            promise.succeed(.certificateVerified)
                        }
                    } else {
                        tls = try NIOSSLClientHandler(context: context, serverHostname: serverName)
                    }
                    let waiter = HandshakeWaiter(tls: tls, chain: chain, promise: channel.eventLoop.makePromise())
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(waiter)
                    return TLSTestClient(channel: try NIOAsyncChannel(wrappingChannelSynchronously: channel), handshake: waiter.promise.futureResult)
                }
            }
    }

    final class HandshakeWaiter: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let tls: NIOSSLClientHandler
        let chain: NIOLockedValueBox<Int>
        let promise: EventLoopPromise<Handshake>

        init(tls: NIOSSLClientHandler, chain: NIOLockedValueBox<Int>, promise: EventLoopPromise<Handshake>) {
            self.tls = tls
            self.chain = chain
            self.promise = promise
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? TLSUserEvent, case .handshakeCompleted(let alpn) = event {
                var names: [String] = []
                if let der = try? self.tls.peerCertificate?.toDERBytes(), let certificate = try? X509.Certificate(derEncoded: der) {
                    names = TLSCertificateStore.names(certificate)
                }
                let chain = self.chain.withLockedValue { $0 }
                self.promise.succeed(Handshake(names: names, alpn: alpn, version: self.tls.tlsVersion, chainLength: chain))
            }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.promise.fail(error)
            context.fireErrorCaught(error)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.promise.fail(ChannelError.eof)
            context.fireChannelInactive()
        }
    }
}

/// A plain TCP connection (for clients that do not speak TLS, or nothing at all).
enum RawTCP {
    static func connect(port: Int) async throws -> any Channel {
        try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get()
    }
}

/// Reads an async channel's inbound bytes until a text appears.
struct LineReader {
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    var buffered = ""

    init(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>) {
        self.iterator = inbound.makeAsyncIterator()
    }

    /// Everything up to and including the first `marker`, the rest kept for the next read.
    mutating func read(until marker: String) async throws -> String {
        while true {
            if let range = self.buffered.range(of: marker) {
                let text = String(self.buffered[..<range.upperBound])
                self.buffered = String(self.buffered[range.upperBound...])
                return text
            }
            guard let chunk = try await self.iterator.next() else { return self.buffered }
            self.buffered += String(buffer: chunk)
        }
    }
}

/// The Prometheus text of a `ProxyMetrics`, for reading one series' value.
struct MetricsText {
    let text: String

    init(_ metrics: ProxyMetrics) {
        self.text = metrics.registry.emitToString()
    }

    /// The value of the series `name` whose labels are exactly `labels`; nil when absent.
    func value(_ name: String, _ labels: [String: String]) -> Double? {
        for line in self.text.split(separator: "\n") where line.hasPrefix(name + "{") {
            guard let close = line.lastIndex(of: "}") else { continue }
            let inner = line[line.index(line.startIndex, offsetBy: name.count + 1)..<close]
            var found: [String: String] = [:]
            for pair in inner.split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2 else { continue }
                found[String(parts[0])] = String(parts[1].dropFirst().dropLast())
            }
            if found == labels { return Double(line[line.index(after: close)...].trimmingCharacters(in: .whitespaces)) }
        }
        return nil
    }
}
