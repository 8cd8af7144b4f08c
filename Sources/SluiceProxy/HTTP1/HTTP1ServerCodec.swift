import NIOCore
import NIOHTTP1
import SluiceCore

/// The HTTP/1 codec of a downstream connection: bytes in, request parts out; response parts in,
/// bytes out. One handler in place of NIO's `HTTPRequestDecoder` (behind a `ByteToMessageHandler`)
/// and `HTTPResponseEncoder`.
///
/// Parsing is ``HTTP1Parser`` (pure, strict); this handler only holds the bytes, slices body parts
/// out of the received buffers without copying, and writes response heads and chunk framing with
/// ``HTTP1Serializer``. A parse error is fired as an ``HTTP1ParseError`` through `errorCaught`,
/// and nothing more is parsed on the connection.
///
/// A response to `HEAD`, and a successful (2xx) response to `CONNECT`, carry no body whatever their
/// headers say (RFC 9110 §9.3.2, §9.3.6); any other response to `CONNECT`, such as Sluice's 405,
/// has its body. The methods of the requests parsed are queued, and each final response head takes one.
final class HTTP1ServerCodec: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = ByteBuffer

    /// The parser and the received bytes not parsed yet (the start of a head, or a pipelined
    /// request behind the one being delivered).
    private var input: HTTP1Input
    /// For each request parsed and not answered yet, what its method says of the response's body.
    private var pendingMethods = CircularBuffer<BodyRule>(initialCapacity: 4)

    private enum BodyRule {
        case asFramed
        /// `HEAD`: never a body.
        case never
        /// `CONNECT`: no body when successful (the connection would become a tunnel).
        case noneIfSuccessful
    }
    private var body = HTTP1BodyWriter()
    private var heads = HTTP1HeadBuffer()

    init(maxHeadBytes: Int) {
        self.input = HTTP1Input(HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: maxHeadBytes)))
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard self.input.receive(self.unwrapInboundIn(data)) else { return }
        defer { self.input.endDelivery() }
        while let (event, body) = self.input.next() {
            switch event {
            case .requestHead(let head, _):
                self.pendingMethods.append(head.method == "HEAD" ? .never : head.method == "CONNECT" ? .noneIfSuccessful : .asFramed)
                context.fireChannelRead(self.wrapInboundOut(.head(Self.makeHead(head))))
            case .body:
                context.fireChannelRead(self.wrapInboundOut(.body(body!)))
            case .end(let trailers):
                context.fireChannelRead(self.wrapInboundOut(.end(trailers.map { HTTPHeaders($0) })))
            case .error(let error):
                context.fireErrorCaught(error)
            case .needMore, .responseHead, .interimHead:
                preconditionFailure("a request parser yields no response heads, and the input no needMore")
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // Half-close: a request cut short is an error; a clean end between requests is not.
            if case .error(let error) = self.input.inputEnded() {
                context.fireErrorCaught(error)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    static func makeHead(_ head: HTTP1Parser.RequestHead) -> HTTPRequestHead {
        HTTPRequestHead(
            version: HTTPVersion(major: head.versionMajor, minor: head.versionMinor),
            method: HTTPMethod(rawValue: head.method),
            uri: head.target,
            headers: HTTPHeaders(head.fields)
        )
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.unwrapOutboundIn(data) {
        case .head(let head):
            let code = head.status.code
            let interim = code >= 100 && code < 200 && code != 101
            // A 1xx (but 101) is followed by the final response to the same request.
            let suppress: Bool
            switch interim ? .asFramed : (self.pendingMethods.popFirst() ?? .asFramed) {
            case .asFramed: suppress = false
            case .never: suppress = true
            case .noneIfSuccessful: suppress = code >= 200 && code < 300
            }
            let (buffer, framing) = HTTP1Serializer.responseHead(head, suppressBody: suppress, into: &self.heads)
            if !interim { self.body.framing = framing }
            context.write(self.wrapOutboundOut(buffer), promise: promise)
        case .body(let body):
            self.body.write(body, context: context, promise: promise)
        case .end(let trailers):
            self.body.writeEnd(trailers: trailers, context: context, promise: promise)
        }
    }
}
