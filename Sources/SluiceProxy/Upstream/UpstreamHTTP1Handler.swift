import NIOCore
import NIOHTTP1
import SluiceCore

/// Receives one upstream response for the downstream connection that leased the upstream connection.
///
/// Called on the shared event loop, in order: head, body*, end; or `upstreamFailed` once.
protocol UpstreamResponseDelegate: AnyObject {
    /// An interim (1xx, never 101) response before the final head; at most
    /// ``UpstreamLimits/maxInterimResponses`` of them (past it the exchange fails with a 502).
    func upstreamInterimResponse(_ head: HTTPResponseHead)
    func upstreamResponseHead(_ head: HTTPResponseHead)
    func upstreamResponseBody(_ body: ByteBuffer)
    func upstreamResponseEnd(_ trailers: HTTPHeaders?)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
    /// The connection failed or timed out before the response ended.
    func upstreamFailed(_ error: ProxyError)
    /// Whether the downstream can take more response bytes; reading from the upstream pauses while it cannot.
    var downstreamIsWritable: Bool { get }
}

/// The thin end of an upstream HTTP/1.1 connection: passes request parts out, response parts to
/// the leasing delegate, and mirrors the downstream's writability into `read()` (back-pressure).
///
/// It sits behind ``HTTP1ClientCodec``. Between leases it has no
/// delegate; an idle connection that receives a response or closes tells its pool.
final class UpstreamHTTP1Handler: ChannelDuplexHandler, UpstreamExchange {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    let id: ConnectionID
    /// Set by the pool once the connection is up.
    weak var pool: HTTP1EndpointPool?
    private(set) var context: ChannelHandlerContext?
    /// The request now using this connection.
    var delegate: (any UpstreamResponseDelegate)?
    /// Requests completed on this connection; a failure on a reused connection may be a keep-alive race.
    private(set) var responsesCompleted = 0
    /// When the current request head was sent, until the response head arrives (response-header timeout).
    private(set) var awaitingHeadSince: MonotonicInstant?
    /// Whether the last response allows reuse.
    private(set) var responseKeepAlive = true
    private var pendingRead = false
    private var closed = false
    /// A `101` switched the connection to a tunnel: it is never reused, and its delegate stays until
    /// it closes (the upstream's half-close is reported, and so is the close after it).
    private(set) var isTunnel = false

    init(id: ConnectionID) {
        self.id = id
    }

    var isReused: Bool { self.responsesCompleted > 0 }
    var isWritable: Bool { self.context?.channel.isWritable ?? false }
    var isUsable: Bool { !self.closed && self.context?.channel.isActive == true }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: Requests out

    func sendHead(_ head: HTTPRequestHead, scheme: URIScheme, now: MonotonicInstant, upgrade: Bool) {
        self.awaitingHeadSince = now
        self.responseKeepAlive = true
        if upgrade { self.context?.triggerUserOutboundEvent(HTTP1ClientCodec.ExpectUpgrade(), promise: nil) }
        self.context?.write(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    func sendBody(_ buffer: ByteBuffer) {
        self.context?.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    func sendEnd(trailers: HTTPHeaders?) {
        self.context?.write(self.wrapOutboundOut(.end(trailers)), promise: nil)
    }

    func release(reusable: Bool, now: MonotonicInstant) {
        if let pool = self.pool {
            pool.release(self, reusable: reusable, now: now)
        } else {
            self.delegate = nil
            self.close()
        }
    }

    func flush() { self.context?.flush() }

    /// The downstream became writable again: resume reading the response.
    func resumeReading() {
        guard self.pendingRead, let context else { return }
        self.pendingRead = false
        context.read()
    }

    /// After the `101`: the connection's codec hands tunnel bytes to `receiver` directly and writes
    /// the ones given to it (see ``HTTP1TunnelReceiver``); returns that codec, `nil` if not a tunnel.
    func attachTunnel(_ receiver: any HTTP1TunnelReceiver) -> HTTP1ClientCodec? {
        guard self.isTunnel, let context = self.context,
            let codec = try? context.pipeline.syncOperations.handler(type: HTTP1ClientCodec.self)
        else { return nil }
        codec.attachTunnel(receiver)
        return codec
    }

    func close() {
        guard !self.closed else { return }
        self.closed = true
        self.context?.close(promise: nil)
    }

    /// The response head did not arrive in time.
    func responseHeadTimedOut() {
        self.awaitingHeadSince = nil
        let delegate = self.delegate
        self.delegate = nil
        self.close()
        delegate?.upstreamFailed(.upstreamTimeout)
    }

    // MARK: Responses in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head) where head.status.code < 200 && head.status.code != 101:
            // Interim (the codec's parser caps how many): the response-header timeout keeps running.
            guard let delegate = self.delegate else { return self.unexpectedResponse() }
            delegate.upstreamInterimResponse(head)
        case .head(let head):
            self.awaitingHeadSince = nil
            self.responseKeepAlive = head.isKeepAlive
            guard let delegate = self.delegate else { return self.unexpectedResponse() }
            if head.status.code == 101 {
                // The codec only passes a 101 that answers an upgrade. The upstream may now half-close
                // its side of the tunnel and still read ours.
                self.isTunnel = true
                self.responseKeepAlive = false
                try? context.channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            }
            delegate.upstreamResponseHead(head)
        case .body(let buffer):
            guard let delegate = self.delegate else { return self.unexpectedResponse() }
            delegate.upstreamResponseBody(buffer)
        case .end(let trailers):
            self.responsesCompleted += 1
            guard let delegate = self.delegate else { return self.unexpectedResponse() }
            // A tunnel's end is the upstream's half-close: its delegate still hears of the close.
            if !self.isTunnel { self.delegate = nil }
            delegate.upstreamResponseEnd(trailers)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if let delegate = self.delegate, !delegate.downstreamIsWritable {
            self.pendingRead = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTP1ClientCodec.UnsolicitedBytes {
            // Bytes behind the response that is ending: this connection is never reused.
            self.responseKeepAlive = false
            self.pool?.unsolicitedBytesSeen(on: self)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.delegate?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.closed = true
        self.pool?.connectionClosed(self)
        if let delegate = self.delegate {
            self.delegate = nil
            delegate.upstreamFailed(.upstreamResetBeforeResponse("connection closed"))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is HTTP1ClientCodec.UnsolicitedBytes { self.pool?.unsolicitedBytesSeen(on: self) }
        let delegate = self.delegate
        self.delegate = nil
        self.close()
        if let delegate {
            if let error = error as? HTTP1ParseError, error.kind != .truncated {
                delegate.upstreamFailed(.upstreamBadResponse("\(error)"))
            } else {
                delegate.upstreamFailed(.upstreamResetBeforeResponse("\(error)"))
            }
        }
    }

    /// Bytes from the upstream when no request is waiting: the connection is unusable.
    private func unexpectedResponse() {
        self.close()
    }
}
