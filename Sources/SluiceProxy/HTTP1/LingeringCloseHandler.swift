import NIOCore

/// Closes a connection whose client may still be sending, without losing the response to a TCP
/// reset (RFC 9112 §9.6, nginx's `lingering_close`).
///
/// Closing a socket with unread bytes in its receive buffer, or with bytes still arriving, makes
/// the kernel send an RST, and the client's kernel then drops the response it had not read yet: a
/// 413 or 431 sent while the client still uploads would never be seen. So, once the response is
/// written:
/// 1. writing is shut down (the client reads the response, then EOF);
/// 2. what the client still sends is read and dropped, for at most ``maxTime``, until it has
///    been quiet for ``quietTime``, or at most ``maxBytes``;
/// 3. then, or when the client closes its side, the connection is closed.
///
/// Added at the front of the pipeline by ``install(on:)``, so no handler behind it sees another byte.
final class LingeringCloseHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    /// The longest a connection lingers.
    static let maxTime: TimeAmount = .seconds(5)
    /// A client quiet this long has sent what it was sending.
    static let quietTime: TimeAmount = .seconds(1)
    /// Past this many dropped bytes the connection is closed at once.
    static let maxBytes = 1 << 20

    private var dropped = 0
    private var deadline: Scheduled<Void>?
    private var quiet: Scheduled<Void>?
    private var closed = false

    /// Writes are done (the caller waits for the response's last write): shut down output and linger.
    static func install(on context: ChannelHandlerContext) {
        let handler = LingeringCloseHandler()
        do {
            try context.pipeline.syncOperations.addHandler(handler, position: .first)
        } catch {
            context.close(promise: nil)
        }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return self.close(context) }
        context.close(mode: .output, promise: nil)
        let loop = context.eventLoop.assumeIsolated()
        self.deadline = loop.scheduleTask(in: Self.maxTime) { self.close(context) }
        self.armQuietTimer(context)
        // Reading may have been held (back-pressure): drain the socket regardless.
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.dropped += self.unwrapInboundIn(data).readableBytes
        if self.dropped > Self.maxBytes { return self.close(context) }
        self.armQuietTimer(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The client has sent all it will: nothing more can provoke a reset.
            return self.close(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.cancelTimers()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.close(context)
    }

    private func armQuietTimer(_ context: ChannelHandlerContext) {
        self.quiet?.cancel()
        self.quiet = context.eventLoop.assumeIsolated().scheduleTask(in: Self.quietTime) { self.close(context) }
    }

    private func cancelTimers() {
        self.deadline?.cancel()
        self.quiet?.cancel()
        self.deadline = nil
        self.quiet = nil
    }

    private func close(_ context: ChannelHandlerContext) {
        guard !self.closed else { return }
        self.closed = true
        self.cancelTimers()
        context.close(promise: nil)
    }
}
