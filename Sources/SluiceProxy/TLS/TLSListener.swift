import CoreMetrics
import FoundationEssentials
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import SluiceCore

/// How ``TLSListener/reload(settings:)`` ended.
public enum TLSReloadResult: Sendable, Hashable {
    /// The settings and every file's bytes are what is in use: nothing done, nothing counted.
    case unchanged
    /// The new certificates are in use for new handshakes.
    case reloaded
    /// The old certificates stay in use; the messages say why.
    case failed(TLSCertificateErrors)
}

/// One TLS listener's certificates and settings.
///
/// 1. `init` loads and checks every certificate and key; every problem at once, or it throws.
/// 2. ``addHandlers(to:)`` runs once per accepted connection, in the child channel initializer:
///    it reads the current ``TLSCertificateSet`` (one lock, no file I/O) and adds the
///    `NIOSSLServerHandler` and the ``TLSHandshakeObserver``.
/// 3. ``reload(settings:)`` re-reads the files (the ``CertificateWatcher``, SIGHUP, a config reload):
///    a good load replaces the set for new handshakes; connections already accepted keep the
///    context they started with. A bad load leaves the set alone, logs a warning and counts.
public final class TLSListener: Sendable {
    /// The listener's configured HOST:PORT, the `listener` label.
    public let address: HostPort
    /// `listen HOST:PORT`, as the error messages name the listener.
    let origin: String
    private let metrics: ProxyMetrics
    private let counters: TLSListenerMetrics
    private let logger: Logger
    /// How long a client has to complete the handshake (``TLSHandshakeFailureReason/timeout``).
    let handshakeTimeout: TimeAmount
    /// What new handshakes use; read once per accepted connection.
    private let current: NIOLockedValueBox<TLSCertificateSet>
    /// Serialises reloads (file I/O outside `current`'s lock), and the expiry gauges of the set in use.
    private let reloading: NIOLockedValueBox<[CoreMetrics.Gauge]>

    /// Loads and checks every certificate and key of `listener.tls` (which must be non-nil):
    /// unreadable file, not PEM, expired or not yet valid, key not matching its certificate —
    /// every problem at once. Starts nothing.
    public init(
        listener: Listener, metrics: ProxyMetrics, logger: Logger, handshakeTimeout: TimeAmount = .seconds(10)
    ) throws(TLSCertificateErrors) {
        guard let settings = listener.tls else {
            preconditionFailure("TLSListener made for \(listener.address), a listener without TLS settings")
        }
        self.address = listener.address
        self.origin = "listen \(listener.address)"
        self.metrics = metrics
        self.counters = metrics.tlsListener("\(listener.address)")
        self.handshakeTimeout = handshakeTimeout
        var logger = logger
        logger[metadataKey: "listener"] = "\(listener.address)"
        self.logger = logger
        let set: TLSCertificateSet
        switch TLSCertificateStore.load(settings, origin: self.origin) {
        case .success(let loaded): set = loaded
        case .failure(let errors): throw errors
        }
        self.current = NIOLockedValueBox(set)
        self.reloading = NIOLockedValueBox([])
        self.reloading.withLockedValue { $0 = self.recordExpiry(set, replacing: []) }
    }

    /// Validates `listener`'s TLS settings without a listener (`sluice check-config`): every
    /// message, or none. A listener without TLS has none.
    public static func check(_ listener: Listener) -> [String] {
        guard let settings = listener.tls else { return [] }
        switch TLSCertificateStore.load(settings, origin: "listen \(listener.address)") {
        case .success: return []
        case .failure(let errors): return errors.messages
        }
    }

    /// Adds the TLS server handler (the current certificates) and the handshake observer, which
    /// passes `TLSUserEvent.handshakeCompleted(negotiatedProtocol:)` on and then leaves the
    /// pipeline. Call it on the child channel's event loop, in the child channel initializer,
    /// before the protocol detection.
    public func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        let set = self.current.withLockedValue { $0 }
        let handler = NIOSSLServerHandler(context: set.context)
        try pipeline.addHandler(handler)
        try pipeline.addHandler(
            TLSHandshakeObserver(tlsHandler: handler, metrics: self.counters, timeout: self.handshakeTimeout, logger: self.logger)
        )
    }

    /// Re-reads the certificate files, with `settings` instead of the current ones when given (a
    /// config reload that changed this listener's TLS settings).
    ///
    /// 1. Same settings and the same bytes in every file: ``TLSReloadResult/unchanged``, nothing counted.
    /// 2. All load: new handshakes use them, established connections are untouched; counts
    ///    `result=ok`, logs at notice.
    /// 3. Any fails: the old ones stay in use; logs the messages at warning, counts `result=error`.
    @discardableResult
    public func reload(settings: TLSSettings? = nil) -> TLSReloadResult {
        self.reloading.withLockedValue { gauges in
            let old = self.current.withLockedValue { $0 }
            let wanted = settings ?? old.settings
            if TLSCertificateStore.isUnchanged(wanted, current: old) {
                self.logger.debug("TLS certificates unchanged")
                return .unchanged
            }
            switch TLSCertificateStore.load(wanted, origin: self.origin) {
            case .success(let set):
                self.current.withLockedValue { $0 = set }
                gauges = self.recordExpiry(set, replacing: gauges)
                self.counters.certificatesReloaded(ok: true)
                self.logger.notice(
                    "TLS certificates reloaded",
                    metadata: ["certificates": "\(set.certificates.map { "\($0.files.cert) (\($0.names.joined(separator: ", ")))" })"]
                )
                return .reloaded
            case .failure(let errors):
                self.counters.certificatesReloaded(ok: false)
                self.logger.warning(
                    "TLS certificate reload failed; the old certificates stay in use",
                    metadata: ["errors": "\(errors.messages.joined(separator: "; "))"]
                )
                return .failed(errors)
            }
        }
    }

    /// For `/status`: each certificate in use, its names, file and notAfter (Unix seconds).
    public var certificateSummaries: [TLSCertificateSummary] {
        self.current.withLockedValue { $0 }.certificates.map(\.summary)
    }

    /// The settings in use (the last good load's).
    public var settings: TLSSettings {
        self.current.withLockedValue { $0 }.settings
    }

    /// The certificate and key files in use, for the ``CertificateWatcher``.
    var watchedFiles: [String] {
        self.settings.certificates.flatMap { [$0.cert, $0.key] }
    }

    /// Sets the expiry gauges of `set` and removes those of names it no longer has.
    private func recordExpiry(_ set: TLSCertificateSet, replacing old: [CoreMetrics.Gauge]) -> [CoreMetrics.Gauge] {
        let listener = "\(self.address)"
        var names: Set<String> = []
        var gauges: [CoreMetrics.Gauge] = []
        for certificate in set.certificates where names.insert(certificate.metricName).inserted {
            gauges.append(self.metrics.tlsCertificateExpiry(listener: listener, name: certificate.metricName, notAfter: certificate.notAfter))
        }
        for gauge in old where !names.contains(Self.nameDimension(gauge)) {
            self.metrics.removeTLSCertificateExpiry(gauge)
        }
        return gauges
    }

    private static func nameDimension(_ gauge: CoreMetrics.Gauge) -> String {
        gauge.dimensions.first(where: { $0.0 == "name" })?.1 ?? ""
    }
}
