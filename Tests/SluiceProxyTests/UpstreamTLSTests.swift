import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import SluiceCore
import SluiceHTTP2
import Synchronization
import Testing

@testable import SluiceProxy

/// TLS to `https://` upstreams over loopback: verification, SNI, mTLS, ALPN h2, health checks and
/// the start-up check of a group's TLS files. Certificates are made by the openssl CLI per run.
@Suite("TLS to upstreams", .serialized)
struct UpstreamTLSTests {
    // MARK: Through the proxy

    /// A certificate from the group's CA that names the configured SNI: 200 with the upstream's exact
    /// body, and the upstream saw that SNI.
    @Test func verifiedUpstreamAnswersWithItsBodyAndSeesTheConfiguredSNI() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki)
        let proxy = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"))
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let (status, body) = try await Self.get(proxy.url + "/hello?x=1")
        #expect(status == 200)
        #expect(body == "tls upstream http/1.1: GET /hello?x=1")
        // The probe that learned the protocol, then the connection that carried the request.
        #expect(upstream.serverNames == ["upstream.test", "upstream.test"])
    }

    /// An endpoint given by IP with no `sni`: no SNI is sent and the certificate's IP name is checked.
    @Test func ipEndpointWithoutSNIIsVerifiedAgainstTheAddress() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki)
        let proxy = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert))
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let (status, body) = try await Self.get(proxy.url + "/ip")
        #expect(status == 200)
        #expect(body == "tls upstream http/1.1: GET /ip")
        #expect(upstream.serverNames == ["-", "-"])
    }

    /// A name endpoint (`localhost`) without `sni`: its host name is the SNI.
    @Test func nameEndpointSendsItsHostAsSNI() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki)
        let proxy = try await Self.proxy(upstream, host: "localhost", tls: UpstreamTLS(ca: pki.caCert))
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let (status, _) = try await Self.get(proxy.url + "/name")
        #expect(status == 200)
        #expect(upstream.serverNames == ["localhost", "localhost"])
    }

    /// A certificate from a CA the group does not trust, or one that does not name the SNI (though it
    /// names the connected IP address, which NIOSSL alone would accept): 502, and the upstream never
    /// sees a request.
    @Test(arguments: ["unknown CA", "hostname mismatch", "system CA bundle"])
    func unverifiedUpstreamIs502(_ scenario: String) async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, certificate: scenario == "unknown CA" ? pki.otherServer : pki.server)
        let tls: UpstreamTLS
        switch scenario {
        case "unknown CA": tls = UpstreamTLS(ca: pki.caCert, sni: "upstream.test")
        case "hostname mismatch": tls = UpstreamTLS(ca: pki.caCert, sni: "elsewhere.test")
        default: tls = UpstreamTLS(sni: "upstream.test")  // the test CA is in no system bundle
        }
        let proxy = try await Self.proxy(upstream, tls: tls)
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let (status, _) = try await Self.get(proxy.url + "/")
        #expect(status == 502)
        #expect(upstream.requests == 0)
    }

    /// An upstream that requires a client certificate from the CA accepts the group's `cert`/`key`
    /// (200), and refuses a group without one (502).
    @Test func mutualTLSNeedsTheClientCertificate() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, requireClientCertificate: true)
        let withCert = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test", cert: pki.client.cert, key: pki.client.key))
        let without = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"))
        defer { Task { await withCert.stop(); await without.stop(); await upstream.stop() } }

        let (status, body) = try await Self.get(withCert.url + "/mtls")
        #expect(status == 200)
        #expect(body == "tls upstream http/1.1: GET /mtls")
        let (refused, _) = try await Self.get(without.url + "/mtls")
        #expect(refused == 502)
        #expect(upstream.requests == 1)
    }

    /// An upstream that picks h2 by ALPN is spoken to over HTTP/2: it sees HTTP/2 streams (two
    /// requests, one connection for both after the probe).
    @Test func upstreamChoosingH2IsSpokenToOverHTTP2() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, alpn: ["h2", "http/1.1"])
        let proxy = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"))
        defer { Task { await proxy.stop(); await upstream.stop() } }

        for path in ["/one", "/two"] {
            let (status, body) = try await Self.get(proxy.url + path)
            #expect(status == 200)
            #expect(body == "tls upstream h2: GET \(path)")
        }
        // The probe that learned h2, then the one HTTP/2 connection both requests shared.
        #expect(upstream.handshakes == 2)
    }

    /// An upstream that offers only http/1.1 is spoken to over HTTP/1.1.
    @Test func upstreamChoosingHTTP1IsSpokenToOverHTTP1() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, alpn: ["http/1.1"])
        let proxy = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"))
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let (status, body) = try await Self.get(proxy.url + "/h1")
        #expect(status == 200)
        #expect(body == "tls upstream http/1.1: GET /h1")
    }

    /// Health checks of an https group go over TLS: a trusted upstream becomes healthy, one the group
    /// cannot verify unhealthy.
    @Test(arguments: [true, false])
    func healthChecksGoOverTLS(trusted: Bool) async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, certificate: trusted ? pki.server : pki.otherServer)
        var health = HealthCheck()
        health.path = "/healthz"
        health.interval = .milliseconds(300)
        health.timeout = .milliseconds(250)
        health.healthyAfter = 1
        health.unhealthyAfter = 1
        let proxy = try await Self.proxy(upstream, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"), health: health)
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let want: EndpointHealth = trusted ? .healthy : .unhealthy
        let reached = await ProxyHarness.eventually {
            proxy.server.upstreamServices.health.status()["api"]?.health["127.0.0.1:\(upstream.port)"] == want
        }
        #expect(reached)
        if trusted { #expect(upstream.requestPaths.contains("/healthz")) } else { #expect(upstream.requests == 0) }
    }

    // MARK: The connector and pool directly

    /// A failed verification is a failed connect whose reason says why, as BoringSSL and the
    /// upstream's certificate tell it.
    @Test func verificationFailuresAreClassifiedWithTheirReason() async throws {
        let pki = try TestPKI.shared()
        let cases: [(certificate: TestPKI.Pair, sni: String?, reason: UpstreamTLSFailure.Reason, detail: String)] = [
            (pki.otherServer, "upstream.test", .verify, "unknown CA: the certificate chain does not lead to a trusted CA (certificate verify failed)"),
            (pki.server, "elsewhere.test", .verify, "hostname mismatch: the certificate is not valid for the name elsewhere.test (it names upstream.test, localhost)"),
            (pki.expiredServer, "upstream.test", .verify, "certificate has expired (not valid after 2020-01-02T00:00:00Z)"),
        ]
        for item in cases {
            let upstream = try await TLSUpstream.start(pki: pki, certificate: item.certificate)
            defer { Task { await upstream.stop() } }
            let error = await Self.connectError(port: upstream.port, tls: UpstreamTLS(ca: pki.caCert, sni: item.sni))
            #expect(error == UpstreamTLSFailure(reason: item.reason, detail: item.detail))
        }
    }

    /// A server that wants a client certificate and gets none: with TLS 1.2 the handshake itself fails.
    @Test func missingClientCertificateFailsTheTLS12Handshake() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, requireClientCertificate: true, maxVersion: .tlsv12)
        defer { Task { await upstream.stop() } }
        let error = await Self.connectError(port: upstream.port, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"))
        #expect(error?.reason == .handshake)
    }

    /// An upstream that accepts TCP and never answers the ClientHello: the handshake times out after
    /// the connect timeout, a failed connect.
    @Test func silentUpstreamTimesTheHandshakeOut() async throws {
        let pki = try TestPKI.shared()
        let silent = try await TestServer.start { _ in }
        defer { Task { await silent.stop() } }
        let error = await Self.connectError(port: silent.port, tls: UpstreamTLS(ca: pki.caCert, sni: "upstream.test"), timeout: .milliseconds(200))
        #expect(error == UpstreamTLSFailure(reason: .handshake, detail: "timed out after 200ms"))
    }

    /// A request that must switch protocols gets an HTTP/1.1 connection from an endpoint that speaks
    /// HTTP/2; other requests get HTTP/2 streams.
    @Test func upgradeRequestsGetHTTP1FromAnH2Endpoint() async throws {
        let pki = try TestPKI.shared()
        let upstream = try await TLSUpstream.start(pki: pki, alpn: ["h2", "http/1.1"])
        defer { Task { await upstream.stop() } }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var group = UpstreamGroup(name: "api", endpoints: [UpstreamURL(scheme: .https, host: "127.0.0.1", port: upstream.port)])
        group.tls = UpstreamTLS(ca: pki.caCert, sni: "upstream.test")
        let config = group
        let keeper = NIOLoopBoundBox.makeEmptyBox(valueType: HTTPSEndpointPool.self, eventLoop: loop)
        let (plain, upgrade) = try await loop.submit {
            let pool = HTTPSEndpointPool(
                endpoint: config.endpoints[0], eventLoop: loop, settings: config.connection, idGenerator: ConnectionID.Generator(loopIndex: 0x8000),
                logger: Logger(label: "test"), group: "api", client: UpstreamTLSClient.make(for: config)!, serverName: "upstream.test")
            keeper.value = pool
            let plain = RecordingRequester(needsHTTP1: false, promise: loop.makePromise())
            let upgrade = RecordingRequester(needsHTTP1: true, promise: loop.makePromise())
            _ = pool.lease(for: plain, now: .now())
            _ = pool.lease(for: upgrade, now: .now())
            return (plain.promise.futureResult, upgrade.promise.futureResult)
        }.get()
        #expect(try await plain.get() == "h2")
        #expect(try await upgrade.get() == "http/1.1")
        let learned = try await loop.submit {
            defer { keeper.value?.shutdown() }
            return keeper.value?.learnedProtocol
        }.get()
        #expect(learned == .http2)
    }

    // MARK: Start-up check of the files

    /// Every problem with a group's TLS files, each named with the file and the reason, all at once.
    @Test func checkReportsEveryFileProblem() throws {
        let pki = try TestPKI.shared()
        func group(_ tls: UpstreamTLS) -> UpstreamGroup {
            var group = UpstreamGroup(name: "api", endpoints: [UpstreamURL(scheme: .https, host: "api.internal", port: 443)])
            group.tls = tls
            return group
        }
        let place = "(upstreams.api.tls)"
        #expect(UpstreamTLS.check(group: group(UpstreamTLS(ca: pki.caCert, cert: pki.client.cert, key: pki.client.key))) == [])
        #expect(UpstreamTLS.check(group: UpstreamGroup(name: "plain", endpoints: [UpstreamURL(host: "a", port: 1)])) == [])
        let missing = pki.dir + "/missing.pem"
        #expect(
            UpstreamTLS.check(group: group(UpstreamTLS(ca: missing, cert: missing, key: missing))) == [
                "TLS CA file \(missing) \(place): cannot read: no such file or directory",
                "TLS certificate \(missing) \(place): cannot read: no such file or directory",
                "TLS key \(missing) \(place): cannot read: no such file or directory",
            ])
        #expect(
            UpstreamTLS.check(group: group(UpstreamTLS(ca: pki.notPEM, cert: pki.notPEM, key: pki.notPEM))) == [
                "TLS CA file \(pki.notPEM) \(place): holds no PEM certificate",
                "TLS certificate \(pki.notPEM) \(place): not a PEM certificate",
                "TLS key \(pki.notPEM) \(place): not a PEM private key",
            ])
        #expect(
            UpstreamTLS.check(group: group(UpstreamTLS(cert: pki.client.cert, key: pki.server.key))) == [
                "TLS key \(pki.server.key) \(place): does not match certificate \(pki.client.cert)"
            ])
        #expect(
            UpstreamTLS.check(group: group(UpstreamTLS(cert: pki.expiredServer.cert, key: pki.expiredServer.key))) == [
                "TLS certificate \(pki.expiredServer.cert) \(place): expired on 2020-01-02T00:00:00Z"
            ])
    }

    // MARK: Helpers

    static func proxy(_ upstream: TLSUpstream, host: String = "127.0.0.1", tls: UpstreamTLS, health: HealthCheck? = nil) async throws -> ProxyHarness {
        try await ProxyHarness.start(upstreams: []) { config in
            var group = UpstreamGroup(name: "api", endpoints: [UpstreamURL(scheme: .https, host: host, port: upstream.port)])
            group.tls = tls
            group.health = health
            group.retries = 0
            group.outlier = nil
            config.groups = [group]
            config.routes = [Route(upstream: "api")]
        }
    }

    static func get(_ url: String) async throws -> (Int, String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), String(buffer: body))
    }

    /// The failure of a TLS connect to 127.0.0.1:`port`, or `nil` if it connected.
    static func connectError(port: Int, tls settings: UpstreamTLS, timeout: Duration = .seconds(5)) async -> UpstreamTLSFailure? {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let endpoint = UpstreamURL(scheme: .https, host: "127.0.0.1", port: port)
        let connector = UpstreamConnector(
            endpoint: endpoint, eventLoop: loop, connectTimeout: timeout,
            tls: .init(client: .success(try! UpstreamTLSClient(settings: settings)), offer: .negotiate, serverName: settings.serverName(for: endpoint), group: "api"))
        do {
            let channel = try await connector.connect { _, _ in }.get()
            try? await channel.close()
            return nil
        } catch {
            return error as? UpstreamTLSFailure ?? UpstreamTLSFailure(reason: .other, detail: "not a TLS failure: \(error)")
        }
    }
}

/// Records what kind of exchange a lease got: `h2` (a stream) or `http/1.1` (a connection).
final class RecordingRequester: UpstreamLeaseRequester {
    let needsHTTP1: Bool
    let promise: EventLoopPromise<String>
    private var exchange: (any UpstreamExchange)?

    init(needsHTTP1: Bool, promise: EventLoopPromise<String>) {
        self.needsHTTP1 = needsHTTP1
        self.promise = promise
    }

    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool {
        self.exchange = connection
        self.promise.succeed(connection is UpstreamHTTP2Stream ? "h2" : connection is UpstreamHTTP1Handler ? "http/1.1" : "other")
        return true
    }

    func upstreamConnectFailed(_ error: ProxyError) { self.promise.succeed("failed: \(error.detail)") }
}

// MARK: - A TLS upstream

/// A TLS server on 127.0.0.1 (port 0) that answers every request `200` with
/// `tls upstream PROTOCOL: METHOD TARGET`, over HTTP/1.1 or, when ALPN chose `h2`, HTTP/2. It
/// records the SNI of each handshake (`-` for none), the completed handshakes and the requests.
final class TLSUpstream: Sendable {
    let server: TestServer
    private let state: Mutex<(serverNames: [String], handshakes: Int, paths: [String])>

    var port: Int { self.server.port }
    var serverNames: [String] { self.state.withLock { $0.serverNames } }
    var handshakes: Int { self.state.withLock { $0.handshakes } }
    var requests: Int { self.state.withLock { $0.paths.count } }
    var requestPaths: [String] { self.state.withLock { $0.paths } }

    private init(server: TestServer) {
        self.server = server
        self.state = Mutex(([], 0, []))
    }

    func stop() async { await self.server.stop() }

    static func start(
        pki: TestPKI, certificate: TestPKI.Pair? = nil, alpn: [String] = ["http/1.1"], requireClientCertificate: Bool = false,
        maxVersion: TLSVersion? = nil
    ) async throws -> TLSUpstream {
        let pair = certificate ?? pki.server
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(pair.cert).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: pair.key, format: .pem)))
        configuration.applicationProtocols = alpn
        if let maxVersion { configuration.maximumTLSVersion = maxVersion }
        if requireClientCertificate {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .file(pki.caCert)
        }
        let recorder = Recorder()
        configuration.sslContextCallback = { values, promise in
            recorder.names.withLock { $0.append(values.serverHostname ?? "-") }
            promise.succeed(NIOSSLContextConfigurationOverride())
        }
        let context = try NIOSSLContext(configuration: configuration)
        let upstream = Box()
        let server = try await TestServer.start { channel in
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
            try channel.pipeline.syncOperations.addHandler(ProtocolSwitch(upstream: upstream))
        }
        let made = TLSUpstream(server: server)
        upstream.set(made, recorder: recorder)
        return made
    }

    fileprivate func handshakeCompleted() { self.state.withLock { $0.handshakes += 1 } }
    fileprivate func requested(_ path: String) { self.state.withLock { $0.paths.append(path) } }
    fileprivate func setServerNames(_ names: [String]) { self.state.withLock { $0.serverNames = names } }

    /// The SNI names the context callback saw (it runs before the instance exists).
    fileprivate final class Recorder: Sendable {
        let names = Mutex<[String]>([])
    }

    /// The instance, for the handlers made before it exists.
    fileprivate final class Box: Sendable {
        private let value = Mutex<(TLSUpstream?, Recorder?)>((nil, nil))
        func set(_ upstream: TLSUpstream, recorder: Recorder) { self.value.withLock { $0 = (upstream, recorder) } }
        func handshake() {
            let (upstream, recorder) = self.value.withLock { $0 }
            upstream?.handshakeCompleted()
            if let recorder { upstream?.setServerNames(recorder.names.withLock { $0 }) }
        }
        func requested(_ path: String) { self.value.withLock { $0.0 }?.requested(path) }
    }

    /// After the handshake: the HTTP/1.1 or HTTP/2 responder, as ALPN chose.
    private final class ProtocolSwitch: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        let upstream: Box
        init(upstream: Box) { self.upstream = upstream }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            guard case TLSUserEvent.handshakeCompleted(let negotiated) = event else { return context.fireUserInboundEventTriggered(event) }
            self.upstream.handshake()
            let sync = context.pipeline.syncOperations
            do {
                if negotiated == "h2" {
                    try sync.addHandler(HTTP2ServerConnectionHandler(delegate: H2Responder(upstream: self.upstream)))
                } else {
                    try sync.configureHTTPServerPipeline()
                    try sync.addHandler(HTTP1Responder(upstream: self.upstream))
                }
            } catch {
                context.close(promise: nil)
            }
            sync.removeHandler(context: context, promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    private final class HTTP1Responder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let upstream: Box
        private var head: HTTPRequestHead?
        init(upstream: Box) { self.upstream = upstream }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch Self.unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head = self.head else { return }
                self.upstream.requested(head.uri)
                let body = "tls upstream http/1.1: \(head.method.rawValue) \(head.uri)"
                let response = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "\(body.utf8.count)"])
                context.write(Self.wrapOutboundOut(.head(response)), promise: nil)
                context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    private final class H2Responder: HTTP2StreamDelegate {
        let upstream: Box
        private var heads: [HTTP2StreamID: HTTP2RequestHead] = [:]
        init(upstream: Box) { self.upstream = upstream }

        func streamOpened(_ streamID: HTTP2StreamID, head: HTTP2RequestHead, endStream: Bool, on connection: HTTP2ServerConnectionHandler) {
            self.heads[streamID] = head
            if endStream { self.respond(streamID, on: connection) }
        }

        func streamDataReceived(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ServerConnectionHandler) {
            connection.consumed(streamID: streamID, bytes: data.readableBytes)
        }

        func streamEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ServerConnectionHandler) {
            self.respond(streamID, on: connection)
        }

        func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
            self.heads[streamID] = nil
        }

        func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler) {}

        private func respond(_ streamID: HTTP2StreamID, on connection: HTTP2ServerConnectionHandler) {
            guard let head = self.heads[streamID] else { return }
            self.upstream.requested(head.path ?? "-")
            let body = "tls upstream h2: \(head.method) \(head.path ?? "-")"
            connection.sendResponseHead(
                streamID: streamID, status: 200, headers: [HTTP2HeaderField(name: "content-length", value: "\(body.utf8.count)")], endStream: false)
            connection.sendData(streamID: streamID, ByteBuffer(string: body), endStream: true)
        }
    }
}

// MARK: - Test certificates

/// A CA, server certificates (`upstream.test`, `localhost`, IP `127.0.0.1`) from it, one from
/// another CA, an expired one (2020-01-01 to 2020-01-02), and a client certificate, made once per
/// test run with the openssl CLI in a temporary directory (private keys never leave it).
struct TestPKI: Sendable {
    struct Pair: Sendable {
        var cert: String
        var key: String
    }

    let dir: String
    let caCert: String
    let server: Pair
    let otherServer: Pair
    let expiredServer: Pair
    let client: Pair
    /// A file that is not PEM.
    let notPEM: String

    private static let made = Mutex<Result<TestPKI, TestPKIError>?>(nil)

    struct TestPKIError: Error, CustomStringConvertible {
        var description: String
    }

    static func shared() throws -> TestPKI {
        try self.made.withLock { made in
            if made == nil { made = Result { try TestPKI.make() }.mapError { TestPKIError(description: "\($0)") } }
            return try made!.get()
        }
    }

    private static func make() throws -> TestPKI {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-upstream-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        func path(_ name: String) -> String { dir + "/" + name }
        func write(_ name: String, _ text: String) throws { try text.write(toFile: path(name), atomically: true, encoding: .utf8) }
        let newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

        func ca(_ name: String) throws {
            try openssl(
                ["req", "-x509"] + newKey + [
                    "-keyout", path("\(name).key"), "-out", path("\(name).crt"), "-days", "2", "-subj", "/CN=Sluice test \(name)",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                ])
        }
        func request(_ name: String, cn: String) throws {
            try openssl(["req"] + newKey + ["-keyout", path("\(name).key"), "-out", path("\(name).csr"), "-subj", "/CN=\(cn)"])
        }
        func sign(_ name: String, ca: String, extensions: String) throws {
            try write("\(name).ext", extensions)
            try openssl([
                "x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(ca).crt"), "-CAkey", path("\(ca).key"), "-CAcreateserial",
                "-out", path("\(name).crt"), "-days", "2", "-extfile", path("\(name).ext"),
            ])
        }
        let serverExtensions = "subjectAltName=DNS:upstream.test,DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        try ca("ca")
        try ca("other-ca")
        try request("server", cn: "upstream.test")
        try sign("server", ca: "ca", extensions: serverExtensions)
        try request("other-server", cn: "upstream.test")
        try sign("other-server", ca: "other-ca", extensions: serverExtensions)
        try request("client", cn: "sluice client")
        try sign("client", ca: "ca", extensions: "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        // Expired: `openssl ca` sets explicit dates (x509 -req in OpenSSL 3.0 cannot).
        try request("expired", cn: "upstream.test")
        try write("expired.ext", serverExtensions)
        try write("index.txt", "")
        try write("serial", "1000\n")
        try write(
            "ca.cnf",
            """
            [ca]
            default_ca = test
            [test]
            database = \(path("index.txt"))
            new_certs_dir = \(dir)
            serial = \(path("serial"))
            default_md = sha256
            policy = any
            [any]
            commonName = supplied

            """)
        try openssl([
            "ca", "-batch", "-config", path("ca.cnf"), "-cert", path("ca.crt"), "-keyfile", path("ca.key"), "-in", path("expired.csr"),
            "-out", path("expired.crt"), "-notext", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", path("expired.ext"),
        ])
        try write("not.pem", "this is not PEM\n")
        return TestPKI(
            dir: dir, caCert: path("ca.crt"), server: Pair(cert: path("server.crt"), key: path("server.key")),
            otherServer: Pair(cert: path("other-server.crt"), key: path("other-server.key")),
            expiredServer: Pair(cert: path("expired.crt"), key: path("expired.key")), client: Pair(cert: path("client.crt"), key: path("client.key")),
            notPEM: path("not.pem"))
    }

    private static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestPKIError(description: "openssl \(arguments.joined(separator: " ")): \(String(decoding: message, as: UTF8.self))")
        }
    }
}
