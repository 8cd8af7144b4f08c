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
///
/// Upgrades (RFC 9110 §7.8): when the handler forwards an upgrade request it says so with
/// ``AwaitUpgrade`` (an outbound user event) while the request's head is being delivered. Parsing
/// then pauses after that request's end, and reading with it, until its final response head is
/// written: a `101` switches the connection to a tunnel (bytes in pass on as `.body` parts, unparsed;
/// `.body` parts out are written as they are; `.end` out closes the output, a half-close); any other
/// status resumes HTTP. Bytes that arrived behind the upgrade request are delivered once that is known.
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

    /// Sent by the handler (`triggerUserOutboundEvent`) while the head of an upgrade request it
    /// forwards is delivered: HTTP stops after this request until its response says what follows.
    struct AwaitUpgrade: Sendable {}

    private enum Upgrade {
        case none
        /// The request in delivery is an upgrade: pause after its `.end`.
        case requested
        /// Paused after the upgrade request, until its final response head is written.
        case awaitingAnswer
        /// The connection is a tunnel.
        case tunnel
    }
    private var upgrade = Upgrade.none
    /// A `read()` held while paused.
    private var pendingRead = false
    /// In a tunnel: where bytes read go, bypassing the handlers behind (``attachTunnel(_:)``).
    private weak var tunnelReceiver: (any HTTP1TunnelReceiver)?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// After the `101`: bytes read go to `receiver` as they are, not as `.body` parts.
    func attachTunnel(_ receiver: any HTTP1TunnelReceiver) {
        self.tunnelReceiver = receiver
    }

    /// In a tunnel: writes bytes as they are, from the codec's place in the pipeline (the same as a
    /// `.body` part written through it, without the part).
    func writeTunnelBytes(_ bytes: ByteBuffer) {
        self.context?.write(self.wrapOutboundOut(bytes), promise: nil)
    }

    init(maxHeadBytes: Int) {
        self.input = HTTP1Input(HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: maxHeadBytes)))
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The enum first: a weak load costs a runtime call on every read of every HTTP connection.
        if case .tunnel = self.upgrade, let receiver = self.tunnelReceiver, !self.input.hasUnparsedBytes {
            return receiver.tunnelBytes(self.unwrapInboundIn(data), fromUpstream: false)
        }
        guard self.input.receive(self.unwrapInboundIn(data)) else { return }
        self.deliver(context: context)
    }

    private func deliver(context: ChannelHandlerContext) {
        if case .awaitingAnswer = self.upgrade {
            // Held until the upgrade's answer; `receive` already kept the bytes.
            self.input.endDelivery()
            return
        }
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
                if case .requested = self.upgrade {
                    self.upgrade = .awaitingAnswer
                    return
                }
            case .error(let error):
                context.fireErrorCaught(error)
            case .needMore, .responseHead, .interimHead:
                preconditionFailure("a request parser yields no response heads, and the input no needMore")
            }
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        if event is AwaitUpgrade {
            self.upgrade = .requested
            promise?.succeed()
            return
        }
        context.triggerUserOutboundEvent(event, promise: promise)
    }

    func read(context: ChannelHandlerContext) {
        if case .awaitingAnswer = self.upgrade {
            self.pendingRead = true
            return
        }
        context.read()
    }

    /// The upgrade request's final response head went out: a tunnel or HTTP again. Bytes held
    /// behind the request are delivered on the next loop tick, not from inside this write.
    private func upgradeAnswered(switching: Bool, context: ChannelHandlerContext) {
        if switching {
            self.upgrade = .tunnel
            self.input.switchToTunnel()
        } else {
            self.upgrade = .none
        }
        if self.input.hasUnparsedBytes {
            context.eventLoop.assumeIsolated().execute {
                guard self.input.receive(ByteBuffer()) else { return }
                self.deliver(context: context)
                // As after a socket read: the handler flushes what these parts wrote upstream.
                context.fireChannelReadComplete()
            }
        }
        if self.pendingRead {
            self.pendingRead = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .tunnel = self.upgrade {
            // A tunnel's end of input is not an HTTP error: the handler passes the half-close on.
            return context.fireUserInboundEventTriggered(event)
        }
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
            if code == 101, case .awaitingAnswer = self.upgrade {
                // The upgrade is accepted: from here the connection is a tunnel, its bytes go out as they are.
                _ = self.pendingMethods.popFirst()
                let (buffer, _) = HTTP1Serializer.responseHead(head, suppressBody: true, into: &self.heads)
                self.body.framing = .raw
                context.write(self.wrapOutboundOut(buffer), promise: promise)
                return self.upgradeAnswered(switching: true, context: context)
            }
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
            if !interim, case .awaitingAnswer = self.upgrade {
                // The upgrade was declined (or failed): the connection stays HTTP.
                self.upgradeAnswered(switching: false, context: context)
            }
        case .body(let body):
            self.body.write(body, context: context, promise: promise)
        case .end(let trailers):
            if case .tunnel = self.upgrade {
                // The upstream ended its side of the tunnel: a half-close, passed on.
                return context.close(mode: .output, promise: promise)
            }
            self.body.writeEnd(trailers: trailers, context: context, promise: promise)
        }
    }
}
