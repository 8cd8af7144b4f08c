import NIOCore
import SluiceCore
import SluiceHTTP2

/// How an accepted connection's pipeline is assembled for one listener: the listener seam
/// (after hummingbird's `ServerChildChannel` and `HummingbirdTLS/TLSChannel`).
///
/// 1. A TLS listener puts its ``TLSListener`` handlers first (certificates chosen by SNI, ALPN,
///    handshake metrics); what follows sees plaintext.
/// 2. ``ProtocolDetectionHandler`` registers the connection in the loop's table at once, then decides
///    HTTP/2 or HTTP/1: by the first bytes on a plaintext listener (h2c prior knowledge), by ALPN on a
///    TLS one.
/// 3. It installs the front end, which gets the listener's scheme: HTTP/1 (``HTTP1ServerCodec`` and
///    ``DownstreamHTTP1Handler``) or HTTP/2 (``HTTP2ServerConnectionHandler`` with an
///    ``HTTP2ProxyConnection``).
///
/// No HTTP handler knows whether TLS is there: the scheme is all they are told.
struct ListenerPipeline: Sendable {
    let listener: Listener
    /// Present exactly when ``listener`` has TLS settings.
    let tls: TLSListener?
    let http2: HTTP2ServerConnectionHandler.Configuration
    /// The HTTP/1 parser's bound on a request head.
    let maxHeadBytes: Int

    /// Builds `channel`'s pipeline, on its event loop, inside the child channel initializer.
    func initialize(_ channel: any Channel, loop: LoopContext) throws {
        let sync = channel.pipeline.syncOperations
        try channel.syncOptions?.setOption(.maxMessagesPerRead, value: 16)
        if let tls = self.tls { try tls.addHandlers(to: sync) }
        let maxHeadBytes = self.maxHeadBytes
        let scheme = self.listener.scheme
        // Over TLS, the client's EOF ends the connection: a half-closed TLS connection would leave
        // NIOSSL waiting out its shutdown timeout on a close Sluice already began (seen as a drain
        // that ended 5 s late), and clients end TLS with close_notify and a full close anyway.
        let allowHalfClosure = self.tls == nil
        let detector = ProtocolDetectionHandler(loop: loop, http2Configuration: self.http2, scheme: scheme, decidesByALPN: self.tls != nil) {
            sync, entry in
            // An HTTP/1 client may half-close after its last request and still read the response.
            if allowHalfClosure { try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true) }
            // Sluice's own codec (HTTP1ServerCodec); pipelining is queued by the handler itself.
            try sync.addHandler(HTTP1ServerCodec(maxHeadBytes: maxHeadBytes))
            try sync.addHandler(DownstreamHTTP1Handler(loop: loop, adopting: entry, scheme: scheme))
        }
        try sync.addHandler(detector)
    }
}
