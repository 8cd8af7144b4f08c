import NIOCore
import NIOTLS
import SluiceCore
import SluiceHTTP2

/// First in a connection's pipeline after TLS (if any): tells HTTP/2 from HTTP/1, then replaces itself
/// with the right front end and hands it every byte it read.
///
/// - On a plaintext listener the first bytes tell: HTTP/2 with prior knowledge (h2c) or HTTP/1
///   (``StateMachine``).
/// - On a TLS listener ALPN tells, once the handshake completes (`TLSUserEvent.handshakeCompleted`):
///   `h2` is HTTP/2, anything else (`http/1.1`, or no ALPN) HTTP/1.1.
///
/// 1. From accept until the decision the connection is in the loop's table as HTTP/1 (so the
///    header timeout and the drain see it), with this handler as its ``DownstreamConnection``.
/// 2. HTTP/1: the pipeline is installed (``installHTTP1``) and its handler takes over this
///    registration (one table entry per connection, never a gap in which a drain sees it missing).
/// 3. HTTP/2: an ``HTTP2ServerConnectionHandler`` with an ``HTTP2ProxyConnection`` delegate takes over
///    this registration as `.http2` (``LoopContext/adopt(_:connection:protocol:)``), which also sends
///    it the drain's GOAWAY at once if the drain has begun.
final class ProtocolDetectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let loop: LoopContext
    /// Installs the HTTP/1 pipeline; its handler takes over this connection's table entry (if any).
    private let installHTTP1: (ChannelPipeline.SynchronousOperations, (id: ConnectionID, peerAddress: String?)?) throws -> Void
    private let http2Configuration: HTTP2ServerConnectionHandler.Configuration
    /// The listener's scheme, handed to the front end (`X-Forwarded-Proto`, `:scheme` upstream).
    private let scheme: URIScheme
    /// Whether ALPN decides (a TLS listener) rather than the first bytes.
    private let decidesByALPN: Bool
    private var machine = StateMachine()
    private var buffered: ByteBuffer?
    private var id: ConnectionID?
    private var context: ChannelHandlerContext?
    private var peerAddress: String?

    /// - Parameter decidesByALPN: a TLS listener's connection: wait for the handshake's ALPN.
    init(
        loop: LoopContext,
        http2Configuration: HTTP2ServerConnectionHandler.Configuration,
        scheme: URIScheme,
        decidesByALPN: Bool,
        installHTTP1: @escaping (ChannelPipeline.SynchronousOperations, (id: ConnectionID, peerAddress: String?)?) throws -> Void
    ) {
        self.loop = loop
        self.http2Configuration = http2Configuration
        self.scheme = scheme
        self.decidesByALPN = decidesByALPN
        self.installHTTP1 = installHTTP1
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { self.register(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        self.register(context: context)
        context.fireChannelActive()
    }

    private func register(context: ChannelHandlerContext) {
        guard self.id == nil else { return }
        let peer = context.channel.remoteAddress
        self.peerAddress = peer?.ipAddress
        self.id = self.loop.register(self, protocol: .http1, peer: peer?.description ?? "unknown")
        // A TLS handshake is under way: the header timeout runs from accept, and the drain treats the
        // connection as one with a partial head (closed after a grace), not as an idle one.
        if self.decidesByALPN, let id = self.id { self.loop.table.requestHeadBegan(id, now: .now()) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let id = self.id {
            self.id = nil
            self.loop.unregister(id)
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = Self.unwrapInboundIn(data)
        if self.buffered == nil {
            self.buffered = bytes
        } else {
            self.buffered!.writeBuffer(&bytes)
        }
        // TLS delivers application bytes only after the handshake event, which decides; kept if not.
        guard !self.decidesByALPN else { return }
        switch self.machine.bytesReceived(bytes) {
        case .needMoreBytes:
            // Part of a request head (or of the preface): the header timeout runs, and the drain does
            // not take the connection for an idle one.
            if let id = self.id { self.loop.table.requestHeadBegan(id, now: .now()) }
        case .http1: self.switchToHTTP1(context: context)
        case .http2: self.switchToHTTP2(context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard self.decidesByALPN, let event = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        context.fireUserInboundEventTriggered(event)
        if negotiated == "h2" {
            self.switchToHTTP2(context: context)
        } else {
            self.switchToHTTP1(context: context)
        }
    }

    private func switchToHTTP1(context: ChannelHandlerContext) {
        let bytes = self.buffered.take()
        // The HTTP/1 handler takes over the table entry: from here on it unregisters it.
        let handover = self.id.map { (id: $0, peerAddress: self.peerAddress) }
        self.id = nil
        do {
            try self.installHTTP1(context.pipeline.syncOperations, handover)
        } catch {
            self.loop.logger.warning("HTTP/1 pipeline setup failed", metadata: ["error": "\(error)"])
            if let handover { self.loop.unregister(handover.id) }
            context.close(promise: nil)
            return
        }
        if let bytes { context.fireChannelRead(Self.wrapInboundOut(bytes)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func switchToHTTP2(context: ChannelHandlerContext) {
        let bytes = self.buffered.take()
        guard let id = self.id else {
            context.close(promise: nil)
            return
        }
        let connection = HTTP2ProxyConnection(loop: self.loop, id: id, peerAddress: self.peerAddress, scheme: self.scheme)
        do {
            let handler = try HTTP2ServerConnectionHandler(configuration: self.http2Configuration, delegate: connection)
            try context.pipeline.syncOperations.addHandler(handler)
            connection.attach(handler)
        } catch {
            self.loop.logger.warning("HTTP/2 setup failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        self.id = nil
        self.loop.adopt(id, connection: connection, protocol: .http2)
        if let bytes { context.fireChannelRead(Self.wrapInboundOut(bytes)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

extension ProtocolDetectionHandler: DownstreamConnection {
    /// Before the decision: the header timeout, an idle close of the drain, or a forced close.
    func close() {
        self.context?.close(promise: nil)
    }
}

extension Optional {
    /// The value, leaving `nil` behind.
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}
