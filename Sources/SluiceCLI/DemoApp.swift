import NIOCore
import NIOHTTP1
import NIOPosix

/// The app behind `sluice demo`, on its own event loop:
/// 1. `GET /` answers `hello from the demo app`;
/// 2. `GET /slow?ms=N` answers after N milliseconds (at most 60 s);
/// 3. `GET /stream?chunks=N&interval_ms=M` streams N numbered lines, M ms apart, chunked;
/// 4. `POST /echo` streams the request body back.
final class DemoApp: Sendable {
    let port: Int
    private let channel: any Channel
    private let group: MultiThreadedEventLoopGroup

    private init(port: Int, channel: any Channel, group: MultiThreadedEventLoopGroup) {
        self.port = port
        self.channel = channel
        self.group = group
    }

    static func start(host: String, port: Int) async throws -> DemoApp {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(DemoAppHandler())
                }
            }
            .bind(host: host, port: port)
            .get()
        return DemoApp(port: channel.localAddress?.port ?? port, channel: channel, group: group)
    }

    func stop() async {
        try? await self.channel.close()
        try? await self.group.shutdownGracefully()
    }
}

final class DemoAppHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?
    private var echoing = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            if head.method == .POST, head.uri.hasPrefix("/echo") {
                self.echoing = true
                var headers = HTTPHeaders([("content-type", "application/octet-stream")])
                if let length = head.headers.first(name: "content-length") { headers.add(name: "content-length", value: length) }
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            }
        case .body(let buffer):
            if self.echoing { context.write(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            if self.echoing {
                self.echoing = false
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            self.respond(to: head, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let (path, query) = Self.split(head.uri)
        switch path {
        case "/":
            self.send(context, "hello from the demo app\n")
        case "/slow":
            let ms = min(60_000, max(0, Int(query["ms"] ?? "1000") ?? 1000))
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(ms))) {
                self.send(context, "slow response after \(ms) ms\n")
            }
        case "/stream":
            let chunks = min(10_000, max(1, Int(query["chunks"] ?? "10") ?? 10))
            let interval = min(10_000, max(0, Int(query["interval_ms"] ?? "200") ?? 200))
            context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-type", "text/plain")])))), promise: nil)
            self.streamChunk(1, of: chunks, every: interval, context: context)
        default:
            self.send(context, "not found\n", status: .notFound)
        }
    }

    private func streamChunk(_ index: Int, of total: Int, every interval: Int, context: ChannelHandlerContext) {
        guard index <= total else {
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: "chunk \(index) of \(total)\n")))), promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(interval))) {
            self.streamChunk(index + 1, of: total, every: interval, context: context)
        }
    }

    private func send(_ context: ChannelHandlerContext, _ body: String, status: HTTPResponseStatus = .ok) {
        let headers = HTTPHeaders([("content-type", "text/plain; charset=utf-8"), ("content-length", String(body.utf8.count))])
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    static func split(_ uri: String) -> (String, [String: String]) {
        let parts = uri.split(separator: "?", maxSplits: 1)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                query[String(kv[0])] = kv.count == 2 ? String(kv[1]) : ""
            }
        }
        return (parts.first.map(String.init) ?? "/", query)
    }
}
