import NIOCore
import NIOHTTP1
import SluiceCore

/// The HTTP/1 codec of an upstream connection: request parts in, bytes out; bytes in, response
/// parts out. One handler in place of NIO's `HTTPRequestEncoder` and `HTTPResponseDecoder`
/// (behind a `ByteToMessageHandler`, which also had to observe every outbound part to learn of
/// `HEAD` requests).
///
/// Parsing is ``HTTP1Parser``; an interim 1xx response is passed on as a `.head` with its 1xx
/// status, before the final head. A response delimited by the connection's close (no length) ends
/// when the input does, and its head says `connection: close` so that the connection is not parked
/// for reuse. A parse error is fired as an ``HTTP1ParseError`` through `errorCaught`, and nothing
/// more is parsed on the connection.
///
/// Bytes no request asked for (RFC 9112 §6.3: a client must not forward them as a response) make
/// the connection unusable, so that they can never answer the next request, another client's:
/// - bytes left over after a complete response: ``UnsolicitedBytes`` is fired as an inbound user
///   event before the response's `.end`, so the connection is closed rather than reused;
/// - bytes that arrive while no request is outstanding: ``UnsolicitedBytes`` is fired through
///   `errorCaught`.
/// Either way the bytes are dropped unparsed and nothing more is read from the connection.
///
/// Upgrades: a request written after ``ExpectUpgrade`` (an outbound user event) may be answered
/// with a `101` (otherwise an error). After it the connection is a tunnel: bytes in pass on as
/// `.body` parts until the input ends (then `.end`, also on a half-close); `.body` parts out are
/// written as they are, and `.end` out closes the output (a half-close).
final class HTTP1ClientCodec: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = ByteBuffer

    private var input: HTTP1Input
    private var body = HTTP1BodyWriter()
    private var heads = HTTP1HeadBuffer()
    /// Requests written whose response has not ended (0 or 1: Sluice does not pipeline upstream).
    private var outstanding = 0
    /// A `101` switched the connection to a tunnel.
    private var tunnel = false
    /// In a tunnel: where bytes read go, bypassing the handler behind (``attachTunnel(_:)``).
    private weak var tunnelReceiver: (any HTTP1TunnelReceiver)?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// After the `101`: bytes read go to `receiver` as they are, not as `.body` parts (the end of
    /// input and the close still go to the handler behind).
    func attachTunnel(_ receiver: any HTTP1TunnelReceiver) {
        precondition(self.tunnel, "a tunnel is attached after the 101")
        self.tunnelReceiver = receiver
    }

    /// In a tunnel: writes bytes as they are, from the codec's place in the pipeline.
    func writeTunnelBytes(_ bytes: ByteBuffer) {
        self.context?.write(self.wrapOutboundOut(bytes), promise: nil)
    }

    /// Sent before the head of a request that asks for an upgrade: a `101` to it is the switch.
    struct ExpectUpgrade: Sendable {}

    /// The upstream sent bytes no request asked for (see the type's documentation).
    struct UnsolicitedBytes: Error, Equatable {
        /// After a complete response (a user event), or with no request outstanding (an error).
        var afterResponse: Bool
    }

    init(maxHeadBytes: Int, maxInterimResponses: Int = UpstreamLimits.maxInterimResponses) {
        self.input = HTTP1Input(HTTP1Parser(kind: .response, limits: .init(maxHeadBytes: maxHeadBytes, maxInterimResponses: maxInterimResponses)))
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The flag first: a weak load costs a runtime call on every read of every HTTP connection.
        if self.tunnel, let receiver = self.tunnelReceiver, !self.input.hasUnparsedBytes {
            return receiver.tunnelBytes(self.unwrapInboundIn(data), fromUpstream: true)
        }
        if self.outstanding == 0, !self.input.failed {
            self.input.fail()
            context.fireErrorCaught(UnsolicitedBytes(afterResponse: false))
            return
        }
        guard self.input.receive(self.unwrapInboundIn(data)) else { return }
        defer { self.input.endDelivery() }
        while let (event, body) = self.input.next() {
            self.handle(event, body: body, context: context)
        }
    }

    private func handle(_ event: HTTP1Parser.Event, body: ByteBuffer?, context: ChannelHandlerContext) {
        switch event {
        case .needMore:
            break
        case .responseHead(let head, let framing):
            if framing == .tunnel { self.tunnel = true }
            var headers = HTTPHeaders(head.fields)
            if framing == .untilClose {
                // The connection ends the body: it cannot carry another exchange.
                headers.replaceOrAdd(name: "connection", value: "close")
            }
            let response = HTTPResponseHead(
                version: HTTPVersion(major: head.versionMajor, minor: head.versionMinor),
                status: HTTPResponseStatus(statusCode: head.status, reasonPhrase: head.reason),
                headers: headers
            )
            context.fireChannelRead(self.wrapInboundOut(.head(response)))
        case .interimHead(let head):
            let response = HTTPResponseHead(
                version: HTTPVersion(major: head.versionMajor, minor: head.versionMinor),
                status: HTTPResponseStatus(statusCode: head.status, reasonPhrase: head.reason),
                headers: HTTPHeaders(head.fields)
            )
            context.fireChannelRead(self.wrapInboundOut(.head(response)))
        case .body:
            context.fireChannelRead(self.wrapInboundOut(.body(body!)))
        case .end(let trailers):
            self.outstanding = max(0, self.outstanding - 1)
            if self.input.hasUnparsedBytes {
                // More bytes behind a complete response: whatever they look like, they answer
                // nothing. Said before the `.end`, so the connection is not parked for reuse.
                self.input.fail()
                context.fireUserInboundEventTriggered(UnsolicitedBytes(afterResponse: true))
            }
            context.fireChannelRead(self.wrapInboundOut(.end(trailers.map { HTTPHeaders($0) })))
        case .requestHead:
            preconditionFailure("a response parser yields no request heads")
        case .error(let error):
            context.fireErrorCaught(error)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if self.tunnel, let event = event as? ChannelEvent, case .inputClosed = event {
            // The upstream half-closed its side of the tunnel (half-closure is allowed once it is one).
            if case .end = self.input.inputEnded() {
                self.handle(.end(trailers: nil), body: nil, context: context)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is ExpectUpgrade {
            self.input.expectUpgrade()
            promise?.succeed()
            return
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A body delimited by the close ends here; a response cut short is left to the handler,
        // which sees the connection close before the end.
        if case .end = self.input.inputEnded() {
            self.handle(.end(trailers: nil), body: nil, context: context)
        }
        context.fireChannelInactive()
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.unwrapOutboundIn(data) {
        case .head(let head):
            self.outstanding += 1
            if head.method == .HEAD { self.input.expectResponseToHEAD() }
            let (buffer, framing) = HTTP1Serializer.requestHead(head, into: &self.heads)
            self.body.framing = framing
            context.write(self.wrapOutboundOut(buffer), promise: promise)
        case .body(let body):
            self.body.write(body, context: context, promise: promise)
        case .end(let trailers):
            if self.tunnel {
                // The client ended its side of the tunnel: a half-close, passed on.
                return context.close(mode: .output, promise: promise)
            }
            self.body.writeEnd(trailers: trailers, context: context, promise: promise)
        }
    }
}
