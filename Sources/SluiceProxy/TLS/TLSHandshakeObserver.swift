import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// Watches one connection's TLS handshake, right after the `NIOSSLServerHandler`, and leaves the
/// pipeline once it is over, so requests never pass through it.
///
/// 1. Handshake completed: counts `sluice_tls_handshakes_total` with the version and the ALPN
///    protocol, passes `TLSUserEvent.handshakeCompleted` on (protocol detection reacts to it),
///    then removes itself.
/// 2. An error before completion: counts `sluice_tls_handshake_failures_total` with the reason
///    (``TLSHandshakeFailureReason``), logs at debug, passes the error on.
/// 3. Closed before completion without an error: counts `eof`.
/// 4. Not completed within the timeout: counts `timeout` and closes the connection.
/// Only the first of 2–4 counts.
final class TLSHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private enum State {
        case handshaking
        case done
    }

    private var state = State.handshaking
    private var timeoutTask: Scheduled<Void>?
    /// The handler that does the handshake, asked for the negotiated version.
    private let tlsHandler: NIOSSLServerHandler
    private let metrics: TLSListenerMetrics
    private let timeout: TimeAmount
    private let logger: Logger

    init(tlsHandler: NIOSSLServerHandler, metrics: TLSListenerMetrics, timeout: TimeAmount, logger: Logger) {
        self.tlsHandler = tlsHandler
        self.metrics = metrics
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.startTimer(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timeoutTask?.cancel()
        self.timeoutTask = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.startTimer(context: context)
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshaking = self.state, let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted(let alpn) = tlsEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        self.state = .done
        self.timeoutTask?.cancel()
        self.timeoutTask = nil
        self.metrics.handshakeCompleted(tls13: self.tlsHandler.tlsVersion == .tlsv13, alpn: alpn)
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .handshaking = self.state {
            self.failed(Self.reason(error), error: error, context: context)
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .handshaking = self.state {
            self.failed(.eof, error: nil, context: context)
        }
        context.fireChannelInactive()
    }

    private func startTimer(context: ChannelHandlerContext) {
        guard self.timeoutTask == nil, case .handshaking = self.state else { return }
        self.timeoutTask = context.eventLoop.assumeIsolated().scheduleTask(in: self.timeout) {
            guard case .handshaking = self.state else { return }
            self.failed(.timeout, error: nil, context: context)
            context.close(promise: nil)
        }
    }

    private func failed(_ reason: TLSHandshakeFailureReason, error: (any Error)?, context: ChannelHandlerContext) {
        self.state = .done
        self.timeoutTask?.cancel()
        self.timeoutTask = nil
        self.metrics.handshakeFailed(reason)
        var metadata: Logger.Metadata = ["reason": "\(reason.rawValue)"]
        if let error { metadata["error"] = "\(error)" }
        if let remote = context.channel.remoteAddress { metadata["client"] = "\(remote)" }
        self.logger.debug("TLS handshake failed", metadata: metadata)
    }

    /// The failure reason of a handshake error, from BoringSSL's reason codes in the error text
    /// (`NIOSSLError.handshakeFailed` carries them as strings).
    static func reason(_ error: any Error) -> TLSHandshakeFailureReason {
        if let error = error as? NIOSSLError, case .uncleanShutdown = error { return .eof }
        if error is ChannelError || error is IOError { return .eof }
        let text = "\(error)".uppercased()
        if text.contains("EOF DURING HANDSHAKE") || text.contains("UNEXPECTED_EOF") { return .eof }
        if text.contains("HTTP_REQUEST") || text.contains("HTTPS_PROXY_REQUEST") || text.contains("WRONG_VERSION_NUMBER")
            || text.contains("RECORD_TOO_LARGE") || text.contains("WRONG_SSL_VERSION")
        {
            return .notTLS
        }
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("PROTOCOL_VERSION") {
            return .protocolVersion
        }
        if text.contains("NO_SHARED_CIPHER") || text.contains("NO_SHARED_GROUP") || text.contains("NO_COMMON_SIGNATURE_ALGORITHMS")
            || text.contains("HANDSHAKE_FAILURE_ON_CLIENT_HELLO")
        {
            return .noSharedCipher
        }
        if text.contains("BAD_CERTIFICATE") || text.contains("UNKNOWN_CA") || text.contains("CERTIFICATE_UNKNOWN")
            || text.contains("CERTIFICATE_EXPIRED") || text.contains("UNSUPPORTED_CERTIFICATE") || text.contains("CERTIFICATE_REVOKED")
            || text.contains("ALERT_DECRYPT_ERROR")
        {
            return .badCertificate
        }
        return .other
    }
}
