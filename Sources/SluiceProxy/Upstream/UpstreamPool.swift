import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore

/// Asks for an upstream connection and hears back when it is ready.
protocol UpstreamLeaseRequester: AnyObject {
    /// The connection is up. Returns `false` if the requester no longer wants it (the pool parks it).
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool
    func upstreamConnectFailed(_ error: ProxyError, upstream: Int)
}

/// One event loop's upstream connections: the executor of ``UpstreamPoolStateMachine``.
///
/// Every connection is created on this loop (`ClientBootstrap(group: eventLoop)`), so a request
/// and its upstream connection never leave their loop.
final class UpstreamPool {
    enum LeaseResult {
        case ready(any UpstreamExchange)
        case connecting(upstream: Int)
    }

    private var machine: UpstreamPoolStateMachine<MonotonicInstant>
    private var connections: [ConnectionID: UpstreamHTTP1Handler] = [:]
    let upstreams: [UpstreamURL]
    /// `Host` for a request that has none (HTTP/1.0): the first upstream's authority, formatted once.
    let fallbackHost: String
    private let addresses: [SocketAddress?]
    private let eventLoop: any EventLoop
    private let settings: SluiceConfig.Upstream
    private let logger: Logger
    private(set) var connectErrors = 0

    init(eventLoop: any EventLoop, loopIndex: Int, upstreams: [UpstreamURL], settings: SluiceConfig.Upstream, logger: Logger) {
        self.eventLoop = eventLoop
        self.upstreams = upstreams
        self.fallbackHost = upstreams[0].authority
        self.settings = settings
        self.logger = logger
        // IP literals are resolved once here; host names are resolved per new connection.
        self.addresses = upstreams.map { try? SocketAddress(ipAddress: $0.host, port: $0.port) }
        self.machine = UpstreamPoolStateMachine(
            upstreamCount: upstreams.count,
            maxIdle: settings.maxIdle,
            idleTimeout: settings.idleTimeout,
            idGenerator: ConnectionID.Generator(loopIndex: loopIndex)
        )
    }

    /// A connection for `requester`: an idle one at once, or a new one reported later.
    func lease(for requester: any UpstreamLeaseRequester, upstream: Int? = nil, now: MonotonicInstant) -> LeaseResult {
        self.eventLoop.assertInEventLoop()
        while true {
            let action = upstream.map { self.machine.lease(upstream: $0, now: now) } ?? self.machine.lease(now: now)
            switch action {
            case .useIdle(let id, _):
                guard let connection = self.connections[id], connection.isUsable else {
                    // Closed while parked and not yet reported: forget it and try again.
                    self.forget(id)
                    continue
                }
                return .ready(connection)
            case .connect(let id, let index):
                self.connect(id: id, upstream: index, for: requester)
                return .connecting(upstream: index)
            }
        }
    }

    func upstream(after index: Int) -> Int { self.machine.upstream(after: index) }

    /// Parks a connection made elsewhere, as if a request had just released it (handler tests on
    /// `EmbeddedChannel`, where `ClientBootstrap` cannot connect).
    func adoptIdle(upstream index: Int, now: MonotonicInstant, _ make: (ConnectionID) -> UpstreamHTTP1Handler) -> UpstreamHTTP1Handler {
        guard case .connect(let id, _) = self.machine.lease(upstream: index, now: now) else {
            preconditionFailure("adoptIdle is for a pool with no idle connection to that upstream")
        }
        let connection = make(id)
        connection.pool = self
        self.connections[id] = connection
        _ = self.machine.release(id, reusable: true, now: now)
        return connection
    }

    /// The request is done with `connection`.
    func release(_ connection: UpstreamHTTP1Handler, reusable: Bool, now: MonotonicInstant) {
        self.eventLoop.assertInEventLoop()
        guard self.connections[connection.id] != nil else {
            // Already closed and forgotten (its close ran before this release).
            connection.close()
            return
        }
        let reusable = reusable && connection.isUsable && connection.responseKeepAlive
        switch self.machine.release(connection.id, reusable: reusable, now: now) {
        case .park:
            connection.delegate = nil
        case .close:
            self.connections[connection.id] = nil
            connection.close()
        }
    }

    /// The connection closed (either side): forget it.
    func connectionClosed(_ connection: UpstreamHTTP1Handler) {
        self.forget(connection.id)
    }

    /// Closes idle connections past their idle timeout and fails requests past the response-header timeout.
    func sweep(now: MonotonicInstant) {
        for id in self.machine.sweep(now: now) {
            self.connections.removeValue(forKey: id)?.close()
        }
        let limit = self.settings.responseHeaderTimeout
        var timedOut: [UpstreamHTTP1Handler] = []
        for connection in self.connections.values {
            if let since = connection.awaitingHeadSince, since.duration(to: now) >= limit { timedOut.append(connection) }
        }
        for connection in timedOut {
            self.logger.warning("upstream response head timeout", metadata: ["upstream": "\(self.upstreams[connection.upstreamIndex])"])
            connection.responseHeadTimedOut()
        }
    }

    /// Stops parking and closes idle connections.
    func shutdown() {
        for id in self.machine.shutdown() {
            self.connections.removeValue(forKey: id)?.close()
        }
    }

    func counts() -> [(idle: Int, busy: Int)] { self.machine.counts() }

    private func forget(_ id: ConnectionID) {
        self.machine.connectionClosed(id)
        self.connections[id] = nil
    }

    private func connect(id: ConnectionID, upstream index: Int, for requester: any UpstreamLeaseRequester) {
        let upstream = self.upstreams[index]
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(self.settings.connectTimeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Request heads come from NIO's parser (already valid) or from Sluice.
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(enableOutboundHeaderValidation: false)
                    try channel.pipeline.syncOperations.addHandler(UpstreamHTTP1Handler(id: id, upstreamIndex: index))
                }
            }
        let future: EventLoopFuture<any Channel>
        if let address = self.addresses[index] {
            future = bootstrap.connect(to: address)
        } else {
            future = bootstrap.connect(host: upstream.host, port: upstream.port)
        }
        future.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                guard let connection = try? channel.pipeline.syncOperations.handler(type: UpstreamHTTP1Handler.self) else {
                    preconditionFailure("the initializer adds the upstream handler")
                }
                connection.pool = self
                self.connections[id] = connection
                if !channel.isActive {
                    self.forget(id)
                    requester.upstreamConnectFailed(.upstreamConnectFailed("closed during connect"), upstream: index)
                } else if !requester.upstreamConnected(connection) {
                    self.release(connection, reusable: true, now: .now())
                }
            case .failure(let error):
                self.forget(id)
                self.connectErrors += 1
                self.logger.warning("upstream connect failed", metadata: ["upstream": "\(upstream)", "error": "\(error)"])
                requester.upstreamConnectFailed(.upstreamConnectFailed("\(upstream): \(error)"), upstream: index)
            }
        }
    }
}
