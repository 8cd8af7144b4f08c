import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import SluiceHTTP2

/// Asks for an upstream connection and hears back when it is ready.
protocol UpstreamLeaseRequester: AnyObject {
    /// The connection is up. Returns `false` if the requester no longer wants it (the pool parks it).
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool
    func upstreamConnectFailed(_ error: ProxyError, upstream: Int)
}

/// One event loop's upstream connections: the executor of ``UpstreamPoolStateMachine`` for http://
/// upstreams (a connection per request in flight) and of ``HTTP2UpstreamPoolStateMachine`` for
/// h2c:// upstreams (a stream per request, multiplexed on a few connections).
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
    let eventLoop: any EventLoop
    /// The h2c side, when the upstreams are h2c://.
    private var http2: HTTP2UpstreamPoolStateMachine<MonotonicInstant>?
    private var http2Connections: [ConnectionID: UpstreamHTTP2Connection] = [:]
    /// Requests waiting for an h2c connection being opened, by connection.
    private var http2Pending: [ConnectionID: (upstream: Int, waiters: [any UpstreamLeaseRequester])] = [:]
    /// At most this many h2c connections per upstream and event loop; past it, streams queue in
    /// libnghttp2 until the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` allows them.
    static let http2MaxConnectionsPerUpstream = 4
    /// The largest response head accepted from an upstream (status line and fields); a larger one is a 502.
    static let maxResponseHeadBytes = 64 * 1024
    private let settings: SluiceConfig.Upstream
    private let logger: Logger
    private(set) var connectErrors = 0
    /// Connections closed because the upstream sent bytes no request asked for.
    private(set) var unsolicitedBytesCloses = 0

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
        if upstreams[0].scheme == .h2c {
            self.http2 = HTTP2UpstreamPoolStateMachine(
                upstreamCount: upstreams.count,
                maxConnectionsPerUpstream: Self.http2MaxConnectionsPerUpstream,
                idleTimeout: settings.idleTimeout,
                // Its own ID space (odd loop halves would collide with the HTTP/1 machine's otherwise unused IDs).
                idGenerator: ConnectionID.Generator(loopIndex: loopIndex)
            )
        }
    }

    /// Whether the upstreams speak HTTP/2 (h2c://).
    var isHTTP2: Bool { self.http2 != nil }

    /// A connection for `requester`: an idle one at once, or a new one reported later.
    func lease(for requester: any UpstreamLeaseRequester, upstream: Int? = nil, now: MonotonicInstant) -> LeaseResult {
        self.eventLoop.assertInEventLoop()
        if self.http2 != nil { return self.leaseStream(for: requester, upstream: upstream, now: now) }
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

    func upstream(after index: Int) -> Int { self.http2?.upstream(after: index) ?? self.machine.upstream(after: index) }

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

    /// The upstream sent bytes that answer no request on `connection` (it is closed, never reused).
    func unsolicitedBytesSeen(on connection: UpstreamHTTP1Handler) {
        self.unsolicitedBytesCloses += 1
        self.logger.warning(
            "upstream sent bytes no request asked for; closing the connection",
            metadata: ["upstream": "\(self.upstreams[connection.upstreamIndex])"]
        )
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
        guard self.http2 != nil else { return }
        for id in self.http2!.sweep(now: now) {
            self.http2Connections.removeValue(forKey: id)?.close()
        }
        for connection in self.http2Connections.values {
            for stream in connection.streamsAwaitingHead(since: limit, now: now) {
                self.logger.warning("upstream response head timeout", metadata: ["upstream": "\(self.upstreams[connection.upstreamIndex])"])
                stream.responseHeadTimedOut()
            }
        }
    }

    /// Stops parking and closes idle connections.
    func shutdown() {
        for id in self.machine.shutdown() {
            self.connections.removeValue(forKey: id)?.close()
        }
        for id in self.http2?.shutdown() ?? [] {
            self.http2Connections.removeValue(forKey: id)?.close()
        }
    }

    /// Idle and busy connections per upstream (for h2c: connections without streams, and the rest).
    func counts() -> [(idle: Int, busy: Int)] { self.http2?.counts() ?? self.machine.counts() }

    private func forget(_ id: ConnectionID) {
        self.machine.connectionClosed(id)
        self.connections[id] = nil
    }

    /// Connects to upstream `index` on this loop (TCP_NODELAY, the connect timeout), with the pipeline
    /// `initialize` sets up.
    private func connect(upstream index: Int, initialize: @escaping @Sendable (any Channel) throws -> Void) -> EventLoopFuture<any Channel> {
        let upstream = self.upstreams[index]
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            // One receive buffer (up to 64 KiB) per read event: with NIO's default of 4, 64 KiB
            // responses kept up to four buffers per connection queued behind a slower client (peak
            // RSS 44.5 -> 30.5 MiB in the 64k load scenario).
            .channelOption(.maxMessagesPerRead, value: 1)
            .connectTimeout(self.settings.connectTimeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try initialize(channel) }
            }
        if let address = self.addresses[index] {
            return bootstrap.connect(to: address)
        }
        return bootstrap.connect(host: upstream.host, port: upstream.port)
    }

    private func connect(id: ConnectionID, upstream index: Int, for requester: any UpstreamLeaseRequester) {
        let upstream = self.upstreams[index]
        let future = self.connect(upstream: index) { channel in
            try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec(maxHeadBytes: Self.maxResponseHeadBytes))
            try channel.pipeline.syncOperations.addHandler(UpstreamHTTP1Handler(id: id, upstreamIndex: index))
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

// MARK: - h2c upstreams

extension UpstreamPool {
    private func leaseStream(for requester: any UpstreamLeaseRequester, upstream: Int?, now: MonotonicInstant) -> LeaseResult {
        let action = upstream.map { self.http2!.lease(upstream: $0, now: now) } ?? self.http2!.lease(now: now)
        switch action {
        case .use(let id):
            guard let connection = self.http2Connections[id] else { preconditionFailure("the machine leased an unknown connection \(id)") }
            return .ready(connection.makeStream())
        case .wait(let id):
            guard self.http2Pending[id] != nil else { preconditionFailure("the machine waits on an unknown connect \(id)") }
            self.http2Pending[id]!.waiters.append(requester)
            return .connecting(upstream: self.http2Pending[id]!.upstream)
        case .connect(let id, let index):
            self.http2Pending[id] = (index, [requester])
            self.connectHTTP2(id: id, upstream: index)
            return .connecting(upstream: index)
        }
    }

    private func connectHTTP2(id: ConnectionID, upstream index: Int) {
        let upstream = self.upstreams[index]
        let connection = UpstreamHTTP2Connection(id: id, upstreamIndex: index, eventLoop: self.eventLoop)
        connection.pool = self
        let bound = NIOLoopBound(connection, eventLoop: self.eventLoop)
        let future = self.connect(upstream: index) { channel in
            let handler = try HTTP2ClientConnectionHandler(delegate: bound.value)
            bound.value.attach(handler)
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        future.assumeIsolated().whenComplete { result in
            let waiters = self.http2Pending.removeValue(forKey: id)?.waiters ?? []
            switch result {
            case .success(let channel) where channel.isActive && !connection.isClosed:
                self.http2Connections[id] = connection
                self.http2!.connected(id, maxConcurrentStreams: HTTP2UpstreamPoolStateMachine<MonotonicInstant>.assumedMaxConcurrentStreams, now: .now())
                for requester in waiters {
                    let stream = connection.makeStream()
                    if !requester.upstreamConnected(stream) { stream.release(reusable: false, now: .now()) }
                }
            case .success:
                self.http2!.connectionClosed(id)
                for requester in waiters { requester.upstreamConnectFailed(.upstreamConnectFailed("closed during connect"), upstream: index) }
            case .failure(let error):
                self.http2!.connectionClosed(id)
                self.connectErrors += 1
                self.logger.warning("upstream connect failed", metadata: ["upstream": "\(upstream)", "error": "\(error)"])
                for requester in waiters { requester.upstreamConnectFailed(.upstreamConnectFailed("\(upstream): \(error)"), upstream: index) }
            }
        }
    }

    /// A request is done with its stream on `connection`.
    func http2StreamReleased(on connection: UpstreamHTTP2Connection) {
        guard self.http2 != nil else { return }
        switch self.http2!.streamClosed(connection.id, now: .now()) {
        case .close:
            self.http2Connections[connection.id] = nil
            connection.close()
        case .keep:
            break
        }
    }

    func http2SettingsReceived(on connection: UpstreamHTTP2Connection, maxConcurrentStreams: Int) {
        self.http2?.maxConcurrentStreamsChanged(connection.id, to: maxConcurrentStreams)
    }

    func http2GoAwayReceived(on connection: UpstreamHTTP2Connection) {
        guard self.http2 != nil else { return }
        self.logger.debug("upstream sent GOAWAY", metadata: ["upstream": "\(self.upstreams[connection.upstreamIndex])"])
        switch self.http2!.goAwayReceived(connection.id) {
        case .close:
            self.http2Connections[connection.id] = nil
            connection.close()
        case .keep:
            break
        }
    }

    func http2ConnectionClosed(_ connection: UpstreamHTTP2Connection) {
        // A connect still pending hears about it from its future.
        guard self.http2Pending[connection.id] == nil else { return }
        self.http2?.connectionClosed(connection.id)
        self.http2Connections[connection.id] = nil
    }
}
