import Logging
import NIOCore
import NIOSSL
import NIOTLS
import SluiceCore
import X509

#if canImport(Glibc)
import Glibc
#endif

/// The TLS contexts of one `https://` group (``UpstreamTLS``), built once when the group's
/// connections are set up (per group and event loop, at start-up and when a reload changes the
/// group), never per connection.
///
/// 1. Trust: the group's `ca` file, else the system CA bundle; full verification (chain and name).
/// 2. TLS 1.2 and 1.3 only, the library's default ciphers.
/// 3. The client certificate and key (`cert`, `key`) for mTLS, when set.
/// 4. Two ALPN offers: ``negotiating`` (`h2`, `http/1.1`), for the connection that learns what the
///    endpoint speaks and for HTTP/2 connections, and ``http1Only`` (`http/1.1`), for HTTP/1.1
///    connections (so a request that must switch protocols, a WebSocket, gets HTTP/1.1) and health checks.
///
/// ```swift
/// let client = try UpstreamTLSClient(group: config)      // reads ca, cert, key
/// let connector = UpstreamConnector(endpoint: url, eventLoop: loop, connectTimeout: .seconds(1),
///                                   tls: .init(client: .success(client), offer: .negotiate, serverName: "api.internal"))
/// ```
final class UpstreamTLSClient: Sendable {
    /// ALPN `h2`, `http/1.1`.
    let negotiating: NIOSSLContext
    /// ALPN `http/1.1`.
    let http1Only: NIOSSLContext

    /// The ALPN protocol names, in preference order.
    static let alpnNegotiate = ["h2", "http/1.1"]
    static let alpnHTTP1 = ["http/1.1"]

    init(settings: UpstreamTLS) throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        configuration.trustRoots = settings.ca.map { .file($0) } ?? .default
        if let cert = settings.cert, let key = settings.key {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        }
        configuration.applicationProtocols = Self.alpnNegotiate
        self.negotiating = try NIOSSLContext(configuration: configuration)
        configuration.applicationProtocols = Self.alpnHTTP1
        self.http1Only = try NIOSSLContext(configuration: configuration)
    }

    /// The contexts of `group` (an https group), or why they cannot be built: a connect then fails
    /// with that reason (start-up validation, ``UpstreamTLS/check(group:)``, normally catches it first).
    static func make(for group: UpstreamGroup) -> Result<UpstreamTLSClient, UpstreamTLSFailure>? {
        guard let settings = group.effectiveTLS else { return nil }
        do {
            return .success(try UpstreamTLSClient(settings: settings))
        } catch {
            let problems = UpstreamTLS.check(group: group)
            let detail = problems.isEmpty ? "\(error)" : problems.joined(separator: "; ")
            return .failure(UpstreamTLSFailure(reason: .other, detail: "TLS settings unusable: \(detail)"))
        }
    }
}

/// Why a TLS connection to an upstream failed: the reason label of
/// `sluice_upstream_tls_handshake_failures_total{group,reason}` and the text of the log line and the
/// 502's detail.
struct UpstreamTLSFailure: Error, CustomStringConvertible, Equatable {
    enum Reason: String, Sendable {
        /// The upstream's certificate was refused: unknown CA, expired, not yet valid, wrong name.
        case verify
        /// The handshake failed otherwise: no common version or cipher, an alert from the upstream
        /// (it refused our client certificate), the connection closed or timed out mid-handshake.
        case handshake
        /// Anything else (the group's TLS files could not be loaded, an I/O error).
        case other
    }

    var reason: Reason
    /// `certificate has expired (not valid after 2026-01-01T00:00:00Z)`.
    var detail: String

    var description: String {
        switch self.reason {
        case .verify: "TLS verification failed: \(self.detail)"
        case .handshake: "TLS handshake failed: \(self.detail)"
        case .other: self.detail
        }
    }

    /// What an error fired during a handshake means. `peerCertificate`: the upstream's leaf
    /// certificate when it sent one (BoringSSL keeps it after a failed verification), which tells an
    /// expired or not-yet-valid certificate from an untrusted one; `serverName`: the name checked.
    static func classify(_ error: any Error, peerCertificate: NIOSSLCertificate?, serverName: String?, now: time_t = time(nil)) -> UpstreamTLSFailure {
        if let error = error as? UpstreamTLSFailure { return error }
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            let name = serverName.map { "name \($0)" } ?? "address"
            return UpstreamTLSFailure(reason: .verify, detail: "hostname mismatch: the certificate is not valid for the \(name)")
        }
        if let sslError = error as? NIOSSLError {
            switch sslError {
            case .handshakeFailed(let boring):
                let reasons = Self.reasonNames(boring)
                if reasons.contains("CERTIFICATE_VERIFY_FAILED") {
                    return UpstreamTLSFailure(reason: .verify, detail: Self.diagnose(peerCertificate, now: now))
                }
                if case .sslError(let stack) = boring, stack.contains(.eofDuringHandshake) {
                    return UpstreamTLSFailure(reason: .handshake, detail: "the upstream closed the connection during the handshake")
                }
                let text = reasons.isEmpty ? "\(boring)" : reasons.map(Self.readable).joined(separator: ", ")
                return UpstreamTLSFailure(reason: .handshake, detail: text)
            case .uncleanShutdown:
                return UpstreamTLSFailure(reason: .handshake, detail: "the upstream closed the connection during the handshake")
            case .noCertificateToValidate:
                return UpstreamTLSFailure(reason: .verify, detail: "the upstream sent no certificate")
            default:
                return UpstreamTLSFailure(reason: .other, detail: "\(sslError)")
            }
        }
        if let boring = error as? BoringSSLError {
            let reasons = Self.reasonNames(boring)
            return UpstreamTLSFailure(reason: .handshake, detail: reasons.isEmpty ? "\(boring)" : reasons.map(Self.readable).joined(separator: ", "))
        }
        return UpstreamTLSFailure(reason: .other, detail: "\(error)")
    }

    /// `nil` when `certificate`'s DNS names (subjectAltName) include `serverName` (`*.example.com`
    /// covers one label), else the failure that says which names it has.
    static func nameMismatch(_ certificate: NIOSSLCertificate, serverName: String) -> UpstreamTLSFailure? {
        var names: [String] = []
        if let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der),
            let alternatives = try? parsed.extensions.subjectAlternativeNames
        {
            for name in alternatives {
                if case .dnsName(let dns) = name { names.append(dns) }
            }
        }
        if names.contains(where: { Self.name($0, covers: serverName) }) { return nil }
        let named = names.isEmpty ? "no DNS name" : names.joined(separator: ", ")
        return UpstreamTLSFailure(reason: .verify, detail: "hostname mismatch: the certificate is not valid for the name \(serverName) (it names \(named))")
    }

    /// Case-insensitive; a trailing dot is ignored; `*.` matches exactly one leftmost label.
    static func name(_ pattern: String, covers host: String) -> Bool {
        func normal(_ text: String) -> String { String((text.hasSuffix(".") ? text.dropLast() : Substring(text)).lowercased()) }
        let pattern = normal(pattern)
        let host = normal(host)
        if pattern == host { return true }
        guard pattern.hasPrefix("*."), let dot = host.firstIndex(of: "."), dot > host.startIndex else { return false }
        return host[dot...] == pattern.dropFirst()
    }

    /// A verification failure with the leaf in hand: its dates say expired or not yet valid;
    /// otherwise the chain does not lead to a trusted CA.
    private static func diagnose(_ certificate: NIOSSLCertificate?, now: time_t) -> String {
        if let certificate {
            if certificate.notValidAfter < now {
                return "certificate has expired (not valid after \(Self.iso8601(certificate.notValidAfter)))"
            }
            if certificate.notValidBefore > now {
                return "certificate is not yet valid (not valid before \(Self.iso8601(certificate.notValidBefore)))"
            }
        }
        return "unknown CA: the certificate chain does not lead to a trusted CA (certificate verify failed)"
    }

    /// BoringSSL's reason names in an error stack (`CERTIFICATE_VERIFY_FAILED`,
    /// `TLSV1_ALERT_UNKNOWN_CA`): the field after `OPENSSL_internal:` of each entry's text.
    static func reasonNames(_ error: BoringSSLError) -> [String] {
        let stack: [BoringSSLInternalError]
        switch error {
        case .sslError(let errors), .unknownError(let errors), .invalidSNIName(let errors), .failedToSetALPN(let errors): stack = errors
        default: return []
        }
        return stack.compactMap { entry in
            let fields = entry.description.split(separator: ":", omittingEmptySubsequences: false)
            guard let library = fields.firstIndex(of: "OPENSSL_internal"), library + 1 < fields.count else { return nil }
            return String(fields[library + 1].prefix { $0 != " " })
        }
    }

    /// `TLSV1_ALERT_UNKNOWN_CA` → `tlsv1 alert unknown ca`.
    static func readable(_ name: String) -> String { String(name.lowercased().map { $0 == "_" ? " " : $0 }) }

    /// `2026-01-01T00:00:00Z`.
    static func iso8601(_ time: time_t) -> String {
        var value = time
        var parts = tm()
        gmtime_r(&value, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }
}

/// Waits for the TLS handshake of an upstream connection, then sets the connection up for the
/// protocol ALPN chose and leaves the pipeline.
///
/// 1. It sits behind `NIOSSLClientHandler`. On `TLSUserEvent.handshakeCompleted` it calls
///    `initialize` with the negotiated protocol (which adds the HTTP handlers behind it), removes
///    itself and succeeds `promise`: the connect is complete only now, so a failed handshake or
///    verification is a failed connect. Bytes the upstream sent with its last handshake flight
///    reach the new handlers (NIOSSL delivers them after the event).
/// 2. The handshake has `timeout` (the group's connect timeout) from the moment TCP is up; past it
///    the connection is closed and the connect fails.
/// 3. An error before the handshake completed is classified once (``UpstreamTLSFailure``), and the
///    promise fails with it when the channel closes.
final class UpstreamTLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let serverName: String?
    private let timeout: Duration
    private var promise: EventLoopPromise<Void>?
    private let initialize: @Sendable (any Channel, String?) throws -> Void
    private var failure: UpstreamTLSFailure?
    private var timer: Scheduled<Void>?

    init(serverName: String?, timeout: Duration, promise: EventLoopPromise<Void>, initialize: @escaping @Sendable (any Channel, String?) throws -> Void) {
        self.serverName = serverName
        self.timeout = timeout
        self.promise = promise
        self.initialize = initialize
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.startTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.startTimer(context: context)
        context.fireChannelActive()
    }

    private func startTimer(context: ChannelHandlerContext) {
        guard self.timer == nil, self.promise != nil else { return }
        let timeout = self.timeout
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout.timeAmount) { [self] in
            self.timer = nil
            guard self.promise != nil else { return }
            self.record(UpstreamTLSFailure(reason: .handshake, detail: "timed out after \(DurationParser.format(timeout))"))
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case TLSUserEvent.handshakeCompleted(let negotiated) = event, let promise = self.promise else {
            return context.fireUserInboundEventTriggered(event)
        }
        self.promise = nil
        self.timer?.cancel()
        self.timer = nil
        if let serverName = self.serverName,
            let peer = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate,
            let problem = UpstreamTLSFailure.nameMismatch(peer, serverName: serverName)
        {
            // NIOSSL also accepts a certificate that names the connected IP address; with a name to
            // check, the certificate must name it.
            promise.fail(problem)
            context.close(promise: nil)
            return
        }
        do {
            try self.initialize(context.channel, negotiated)
        } catch {
            promise.fail(error)
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        promise.succeed()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard self.promise != nil else { return context.fireErrorCaught(error) }
        let peer = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
        self.record(UpstreamTLSFailure.classify(error, peerCertificate: peer, serverName: self.serverName))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.fail()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.fail()
    }

    /// The first problem is the reason (a close after an alert says less than the alert).
    private func record(_ failure: UpstreamTLSFailure) {
        if self.failure == nil { self.failure = failure }
    }

    private func fail() {
        self.timer?.cancel()
        self.timer = nil
        guard let promise = self.promise else { return }
        self.promise = nil
        promise.fail(self.failure ?? UpstreamTLSFailure(reason: .handshake, detail: "the connection closed during the handshake"))
    }
}

extension UpstreamConnector {
    /// TLS to an https endpoint: the group's contexts (or why it has none), which ALPN offer, and the
    /// name for SNI and the certificate check (`nil`: no SNI, the certificate must name the address).
    struct TLS {
        enum Offer {
            /// `h2`, `http/1.1`.
            case negotiate
            /// `http/1.1` only.
            case http1Only
        }

        let client: Result<UpstreamTLSClient, UpstreamTLSFailure>
        let offer: Offer
        let serverName: String?
        /// The group's name, for the log line (and the metric's label).
        let group: String
        /// Where failures are counted (`sluice_upstream_tls_handshake_failures_total`); `nil` in tests
        /// that build pools alone.
        var metrics: ProxyMetrics? = nil
    }

    /// Logs a failed connect: a TLS failure as `upstream TLS verification failed` or `upstream TLS
    /// handshake failed` with its reason, anything else as `upstream connect failed`.
    func logConnectFailure(_ error: any Error, logger: Logger) {
        Self.logConnectFailure(error, endpoint: self.endpoint, group: self.tls?.group ?? "", logger: logger, metrics: self.tls?.metrics)
    }

    static func logConnectFailure(_ error: any Error, endpoint: UpstreamURL, group: String, logger: Logger, metrics: ProxyMetrics? = nil) {
        if let failure = error as? UpstreamTLSFailure {
            metrics?.upstreamTLSHandshakeFailed(group: group, reason: failure.reason.metricReason)
            let message: Logger.Message
            switch failure.reason {
            case .verify: message = "upstream TLS verification failed: \(failure.detail)"
            case .handshake: message = "upstream TLS handshake failed: \(failure.detail)"
            case .other: message = "upstream TLS failed: \(failure.detail)"
            }
            logger.warning(message, metadata: ["upstream": "\(endpoint)", "group": "\(group)", "reason": "\(failure.reason.rawValue)"])
        } else if let mismatch = error as? UpstreamALPNMismatch {
            logger.notice("upstream changed its protocol: learning it again", metadata: ["upstream": "\(endpoint)", "alpn": "\(mismatch.negotiated ?? "none")"])
        } else {
            logger.warning("upstream connect failed", metadata: ["upstream": "\(endpoint)", "error": "\(error)"])
        }
    }
}

/// An HTTP/2 connection to an `https://` endpoint whose handshake chose another protocol (the
/// endpoint stopped offering `h2`): the connect fails and the endpoint's ``HTTPSEndpointPool``
/// learns its protocol again.
struct UpstreamALPNMismatch: Error, CustomStringConvertible {
    var negotiated: String?
    var description: String { "the upstream chose \(self.negotiated ?? "no protocol") by ALPN, not h2" }
}

extension UpstreamTLSFailure.Reason {
    /// The `reason` label of `sluice_upstream_tls_handshake_failures_total`.
    var metricReason: ProxyMetrics.UpstreamTLSFailureReason {
        switch self {
        case .verify: .verify
        case .handshake: .handshake
        case .other: .other
        }
    }
}
