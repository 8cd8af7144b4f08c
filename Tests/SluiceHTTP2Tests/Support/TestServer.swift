import NIOCore
import NIOPosix
import SluiceHTTP2

/// An HTTP/2 server on 127.0.0.1 (port chosen by the kernel) serving ``TestDelegate``.
struct TestServer {
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    var port: Int { self.channel.localAddress!.port! }
    var url: String { "http://127.0.0.1:\(self.port)" }

    static func start(
        threads: Int = 2,
        configuration: HTTP2ServerConnectionHandler.Configuration = .init()
    ) async throws -> TestServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let handler = try HTTP2ServerConnectionHandler(
                            configuration: configuration,
                            delegate: TestDelegate(eventLoop: channel.eventLoop)
                        )
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .bind(host: "127.0.0.1", port: 0)
                .get()
            return TestServer(group: group, channel: channel)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    func stop() async {
        try? await self.channel.close()
        try? await self.group.shutdownGracefully()
    }
}
