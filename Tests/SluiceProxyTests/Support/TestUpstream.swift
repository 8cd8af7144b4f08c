import NIOCore
import NIOHTTP1
import NIOPosix

/// An upstream app on 127.0.0.1 with behaviours chosen by path:
/// - `GET /hello` → 200 `hello`
/// - `GET /headers` → 200, the request line and headers as the body (`name: value` lines)
/// - `POST /echo` → the body streamed back (same Content-Length, or chunked)
/// - `POST /digest` → `bytes=N sum=S` of the body (S: sum of all bytes mod 2^64)
/// - `GET /big?bytes=N` → N bytes of a repeating pattern, chunked
/// - `GET /slow-head?ms=N` → the head after N ms
/// - `GET /reset-mid-body` → a head promising 100000 bytes, 1000 of them, then a close
/// - `GET /close` → 200 with `Connection: close`, then a close
enum TestUpstream {
    static func start(group: any EventLoopGroup) async throws -> TestServer {
        try await TestServer.startHTTP1(group: group) { TestUpstreamHandler() }
    }
}

/// A test server on 127.0.0.1, port 0: the upstreams of the proxy's tests.
final class TestServer: Sendable {
    let port: Int
    private let channel: any Channel

    /// Each accepted connection gets the pipeline `initialize` sets up.
    static func start(
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ initialize: @escaping @Sendable (any Channel) throws -> Void
    ) async throws -> TestServer {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try initialize(channel) }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return TestServer(port: channel.localAddress!.port!, channel: channel)
    }

    /// An HTTP/1.1 server: NIO's server pipeline, then the handler `makeHandler` returns.
    static func startHTTP1(
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        _ makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) async throws -> TestServer {
        try await Self.start(group: group) { channel in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(makeHandler())
        }
    }

    private init(port: Int, channel: any Channel) {
        self.port = port
        self.channel = channel
    }

    var url: String { "http://127.0.0.1:\(self.port)" }

    func stop() async { try? await self.channel.close() }
}

/// The repeating pattern `/big` sends: byte i is `i % 251`.
func patternBytes(_ count: Int, offset: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8((offset + $0) % 251) }
}

final class TestUpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?
    private var mode: Mode = .none
    private var count = 0
    private var sum: UInt64 = 0

    private enum Mode { case none, echo, digest }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            self.count = 0
            self.sum = 0
            let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
            if path == "/echo" {
                self.mode = .echo
                var headers = HTTPHeaders()
                if let length = head.headers.first(name: "content-length") { headers.add(name: "content-length", value: length) }
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            } else if path == "/digest" {
                self.mode = .digest
            } else {
                self.mode = .none
            }
        case .body(let buffer):
            switch self.mode {
            case .echo: context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            case .digest:
                self.count += buffer.readableBytes
                buffer.withUnsafeReadableBytes { for byte in $0 { self.sum &+= UInt64(byte) } }
            case .none: break
            }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            switch self.mode {
            case .echo:
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            case .digest:
                self.send(context, "bytes=\(self.count) sum=\(self.sum)")
            case .none:
                self.respond(head, context: context)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) { context.flush() }

    private func respond(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let parts = head.uri.split(separator: "?", maxSplits: 1)
        let path = String(parts[0])
        let query = parts.count > 1 ? String(parts[1]) : ""
        func value(_ name: String) -> Int {
            for pair in query.split(separator: "&") where pair.hasPrefix(name + "=") { return Int(pair.dropFirst(name.count + 1)) ?? 0 }
            return 0
        }
        switch path {
        case "/hello":
            self.send(context, "hello")
        case "/headers":
            var body = "\(head.method.rawValue) \(head.uri) HTTP/\(head.version.major).\(head.version.minor)\n"
            for (name, value) in head.headers { body += "\(name.lowercased()): \(value)\n" }
            self.send(context, body)
        case "/big":
            let total = value("bytes")
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok))), promise: nil)
            var sent = 0
            while sent < total {
                let size = min(65536, total - sent)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: patternBytes(size, offset: sent))))), promise: nil)
                sent += size
            }
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        case "/slow-head":
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(value("ms")))) {
                self.send(context, "slow")
            }
        case "/reset-mid-body":
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-length", "100000")])))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: patternBytes(1000)))))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        case "/close":
            let headers = HTTPHeaders([("content-length", "5"), ("connection", "close")])
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "close")))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        default:
            self.send(context, "no such path", status: .notFound)
        }
    }

    private func send(_ context: ChannelHandlerContext, _ body: String, status: HTTPResponseStatus = .ok) {
        let headers = HTTPHeaders([("content-length", String(body.utf8.count)), ("content-type", "text/plain")])
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }
}
