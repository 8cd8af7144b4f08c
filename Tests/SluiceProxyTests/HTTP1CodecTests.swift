import NIOCore
import NIOEmbedded
import NIOHTTP1
import SluiceCore
import Testing

@testable import SluiceProxy

/// The two HTTP/1 codecs on `EmbeddedChannel`s: the parts they deliver for given bytes, and the
/// exact bytes they write for given parts (framing corrected as NIO's encoders did).
@Suite("HTTP/1 codecs")
struct HTTP1CodecTests {
    // MARK: Helpers

    static func server() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTP1ServerCodec(maxHeadBytes: 4096))
        return channel
    }

    static func client() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec(maxHeadBytes: 4096))
        return channel
    }

    static func written(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    static func requestParts(_ channel: EmbeddedChannel) throws -> [String] {
        var parts: [String] = []
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) {
            switch part {
            case .head(let head):
                parts.append("head \(head.method.rawValue) \(head.uri) \(head.version) \(head.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ","))")
            case .body(let body): parts.append("body \(String(buffer: body))")
            case .end(let trailers): parts.append("end \(trailers.map { $0.map { "\($0.name)=\($0.value)" }.joined(separator: ",") } ?? "-")")
            }
        }
        return parts
    }

    static func responseParts(_ channel: EmbeddedChannel) throws -> [String] {
        var parts: [String] = []
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head(let head):
                parts.append("head \(head.status.code) \(head.version) \(head.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ","))")
            case .body(let body): parts.append("body \(String(buffer: body))")
            case .end(let trailers): parts.append("end \(trailers.map { $0.map { "\($0.name)=\($0.value)" }.joined(separator: ",") } ?? "-")")
            }
        }
        return parts
    }

    static func response(_ status: HTTPResponseStatus, version: HTTPVersion = .http1_1, _ headers: [(String, String)] = []) -> HTTPServerResponsePart {
        .head(HTTPResponseHead(version: version, status: status, headers: HTTPHeaders(headers)))
    }

    // MARK: Server codec: requests in

    /// A request head and its end come out as parts; names keep their case, values are trimmed.
    @Test func requestHeadIsDelivered() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET /a?b HTTP/1.1\r\nHost: x\r\nX-Thing:  v \r\n\r\n"))
        #expect(try Self.requestParts(channel) == ["head GET /a?b HTTP/1.1 Host=x,X-Thing=v", "end -"])
    }

    /// A body split over reads arrives in order and whole; a second request in the same read follows it.
    @Test func bodiesAcrossReadsAndPipelinedRequests() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"))
        try channel.writeInbound(ByteBuffer(string: "worldGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HT"))
        try channel.writeInbound(ByteBuffer(string: "TP/1.1\r\nHost: x\r\n\r\n"))
        #expect(
            try Self.requestParts(channel) == [
                "head POST / HTTP/1.1 Host=x,Content-Length=10", "body hello", "body world", "end -",
                "head GET /2 HTTP/1.1 Host=x", "end -",
                "head GET /3 HTTP/1.1 Host=x", "end -",
            ]
        )
    }

    /// A chunked request body comes out de-chunked, with its trailers on the end.
    @Test func chunkedRequestWithTrailers() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n"))
        #expect(try Self.requestParts(channel) == ["head POST / HTTP/1.1 Host=x,Transfer-Encoding=chunked", "body hello", "end X-Sum=1"])
    }

    /// Malformed input is an `HTTP1ParseError` in `errorCaught`; nothing after it is parsed.
    @Test func malformedRequestIsAnErrorAndStopsParsing() throws {
        let channel = try Self.server()
        #expect(throws: HTTP1ParseError.self) {
            try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost : x\r\n\r\n"))
        }
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(try Self.requestParts(channel) == [])
    }

    /// A head over the limit is `headTooLarge`, also while it is still arriving.
    @Test func headOverTheLimit() throws {
        let channel = try Self.server()
        do {
            try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 5000))"))
            Issue.record("no error")
        } catch let error as HTTP1ParseError {
            #expect(error.kind == .headTooLarge)
        }
    }

    // MARK: Server codec: responses out

    /// A response with a length is written as it is; body bytes go out unframed.
    @Test func responseWithLength() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try channel.writeOutbound(Self.response(.ok, [("content-length", "5"), ("via", "1.1 sluice")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(channel) == "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nvia: 1.1 sluice\r\n\r\nhello")
    }

    /// Without a length an HTTP/1.1 response goes chunked, trailers in the last chunk; empty parts are not chunks.
    @Test func responseWithoutLengthIsChunked() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try channel.writeOutbound(Self.response(.ok, [("content-type", "text/plain")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello"))))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer())))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: String(repeating: "z", count: 300)))))
        try channel.writeOutbound(HTTPServerResponsePart.end(HTTPHeaders([("grpc-status", "0")])))
        #expect(
            try Self.written(channel)
                == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n12c\r\n\(String(repeating: "z", count: 300))\r\n0\r\ngrpc-status: 0\r\n\r\n"
        )
    }

    /// An HTTP/1.0 response without a length is written unframed (the connection's close ends it).
    @Test func http10ResponseWithoutLengthIsRaw() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.0\r\n\r\n"))
        try channel.writeOutbound(Self.response(.ok, version: .http1_0, [("connection", "close")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hi"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(channel) == "HTTP/1.0 200 OK\r\nconnection: close\r\n\r\nhi")
    }

    /// A response to HEAD keeps its framing headers but no body; the next response (pipelined GET) has its body.
    @Test func headResponseHasNoBody() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try channel.writeOutbound(Self.response(.ok, [("content-length", "5")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        try channel.writeOutbound(Self.response(.ok, [("content-length", "5")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(channel) == "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    }

    /// A refused CONNECT keeps its body; a successful one would have none (it would become a tunnel).
    @Test func connectResponsesHaveABodyOnlyWhenRefused() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nCONNECT b:443 HTTP/1.1\r\nHost: b:443\r\n\r\n"))
        try channel.writeOutbound(Self.response(.methodNotAllowed, [("content-length", "2")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "no"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        try channel.writeOutbound(Self.response(.ok, [("content-length", "2")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(channel) == "HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    }

    /// `100 Continue` does not take the request's place: the final response to a HEAD still has no body.
    @Test func interimResponseKeepsTheRequestsMethod() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try channel.writeOutbound(Self.response(.continue))
        try channel.writeOutbound(Self.response(.ok, [("content-length", "5")]))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hello"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(channel) == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    }

    /// 204 and 304 lose their framing headers.
    @Test(arguments: [HTTPResponseStatus.noContent, .notModified])
    func bodylessStatusesLoseFraming(_ status: HTTPResponseStatus) throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try channel.writeOutbound(Self.response(status, [("content-length", "5"), ("etag", "\"a\"")]))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(channel) == "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\netag: \"a\"\r\n\r\n")
    }

    /// Heads written before a flush each keep their bytes: the reused head buffer is not
    /// overwritten while NIO still holds the previous head (pipelined responses, one flush).
    @Test func headsQueuedBeforeAFlushAreNotOverwritten() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"))
        channel.write(Self.response(.ok, [("content-length", "0"), ("x-n", "first")]), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.write(Self.response(.notFound, [("content-length", "0"), ("x-n", "second")]), promise: nil)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.flush()
        #expect(
            try Self.written(channel)
                == "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-n: first\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-n: second\r\n\r\n"
        )
    }

    /// A promise on the end completes even when nothing is written for it.
    @Test func endPromiseCompletes() throws {
        let channel = try Self.server()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        try channel.writeOutbound(Self.response(.ok, [("content-length", "0")]))
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: promise)
        try promise.futureResult.wait()
    }

    // MARK: Client codec

    /// Request heads are written as NIO's encoder wrote them; a POST without a length goes chunked.
    @Test func requestSerialisation() throws {
        let channel = try Self.client()
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/up", headers: HTTPHeaders([("Host", "x")]))
        try channel.writeOutbound(HTTPClientRequestPart.head(head))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "abc"))))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        #expect(try Self.written(channel) == "POST /up HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

        head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("Host", "x"), ("Content-Length", "2")]))
        try channel.writeOutbound(HTTPClientRequestPart.head(head))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "ok"))))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        #expect(try Self.written(channel) == "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    }

    struct RequestFramingCase: Sendable, CustomTestStringConvertible {
        var method: HTTPMethod
        var headers: [(String, String)]
        var wire: String
        var testDescription: String { "\(self.method.rawValue) \(self.headers.map(\.0))" }
    }

    static let requestFramings: [RequestFramingCase] = [
        // TRACE has no body: its framing headers go.
        .init(method: .TRACE, headers: [("Content-Length", "3")], wire: "TRACE / HTTP/1.1\r\n\r\nabc"),
        // A length wins over Transfer-Encoding, which goes.
        .init(method: .PUT, headers: [("Content-Length", "3"), ("Transfer-Encoding", "chunked")], wire: "PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        // A method where a body is unlikely is chunked only when it says so.
        .init(method: .DELETE, headers: [("transfer-encoding", "chunked")], wire: "DELETE / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        .init(method: .GET, headers: [], wire: "GET / HTTP/1.1\r\n\r\nabc"),
    ]

    /// Each request's framing headers are corrected as NIO's encoder did, and the body framed to match.
    @Test(arguments: Self.requestFramings)
    func requestFraming(_ framing: RequestFramingCase) throws {
        let channel = try Self.client()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: framing.method, uri: "/", headers: HTTPHeaders(framing.headers))))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "abc"))))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        #expect(try Self.written(channel) == framing.wire)
    }

    /// A chunked response comes out de-chunked with its trailers; a 100 Continue before it is passed
    /// on as a head of its own (the handler decides what to forward).
    @Test func chunkedResponse() throws {
        let channel = try Self.client()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n"))
        #expect(try Self.responseParts(channel) == ["head 100 HTTP/1.1 ", "head 200 HTTP/1.1 Transfer-Encoding=chunked", "body abc", "end grpc-status=0"])
    }

    /// Bytes behind a complete response are announced before its end (so the connection is not
    /// reused) and never parsed; bytes with no request outstanding are an error. Neither becomes a response.
    @Test func bytesNoRequestAskedForAreNeverAResponse() throws {
        let channel = try Self.client()
        let events = UserEventRecorder()
        try channel.pipeline.syncOperations.addHandler(events)
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nX"))
        #expect(try Self.responseParts(channel) == ["head 200 HTTP/1.1 Content-Length=2", "body ok", "end -"])
        #expect(events.events == ["unsolicited after response", "read"])
        let idle = try Self.client()
        #expect(throws: HTTP1ClientCodec.UnsolicitedBytes(afterResponse: false)) { try idle.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n")) }
        #expect(try Self.responseParts(idle) == [])
    }

    /// The response to HEAD has no body whatever its length says, and the next response parses after it.
    @Test func headResponseThenNext() throws {
        let channel = try Self.client()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/")))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
        #expect(
            try Self.responseParts(channel) == [
                "head 200 HTTP/1.1 Content-Length=5", "end -",
                "head 200 HTTP/1.1 Content-Length=5", "body hello", "end -",
            ]
        )
    }

    /// A response without a length ends when the connection closes, and says `connection: close`.
    @Test func responseUntilClose() throws {
        let channel = try Self.client()
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\nall of it"))
        #expect(try Self.responseParts(channel) == ["head 200 HTTP/1.1 connection=close", "body all of it"])
        channel.pipeline.fireChannelInactive()
        #expect(try Self.responseParts(channel) == ["end -"])
    }

    /// A malformed response is an `HTTP1ParseError`.
    @Test func malformedResponse() throws {
        let channel = try Self.client()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        #expect(throws: HTTP1ParseError.self) {
            try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"))
        }
    }
}

/// Records the user events and reads that pass it, in order (after ``HTTP1ClientCodec``).
private final class UserEventRecorder: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    var events: [String] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = self.unwrapInboundIn(data) { self.events.append("read") }
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? HTTP1ClientCodec.UnsolicitedBytes {
            self.events.append(event.afterResponse ? "unsolicited after response" : "unsolicited")
        }
        context.fireUserInboundEventTriggered(event)
    }
}
