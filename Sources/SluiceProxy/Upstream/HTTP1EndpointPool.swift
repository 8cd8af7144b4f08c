import Logging
import NIOCore
import SluiceCore

/// One event loop's HTTP/1.1 connections to one `http://` endpoint (or, inside an
/// ``HTTPSEndpointPool``, to an `https://` one over TLS, ALPN `http/1.1`): the executor of
/// ``UpstreamPoolStateMachine`` (a connection per request in flight, idle ones parked LIFO).
///
/// Every connection is created on this loop (`ClientBootstrap(group: eventLoop)`), so a request
/// and its upstream connection never leave their loop.
final class HTTP1EndpointPool: EndpointPool {
    /// The largest response head accepted from an upstream (status line and fields); a larger one is a 502.
    static let maxResponseHeadBytes = 64 * 1024

    let endpoint: UpstreamURL
    private var machine: UpstreamPoolStateMachine<MonotonicInstant>
    private var connections: [ConnectionID: UpstreamHTTP1Handler] = [:]
    private let connector: UpstreamConnector
    private let responseHeaderTimeout: Duration
    private let logger: Logger
    private(set) var stats = EndpointPoolStats()

    init(
        endpoint: UpstreamURL, eventLoop: any EventLoop, settings: SluiceConfig.Upstream, idGenerator: ConnectionID.Generator, logger: Logger,
        tls: UpstreamConnector.TLS? = nil
    ) {
        self.endpoint = endpoint
        self.connector = UpstreamConnector(endpoint: endpoint, eventLoop: eventLoop, connectTimeout: settings.connectTimeout, tls: tls)
        self.responseHeaderTimeout = settings.responseHeaderTimeout
        self.logger = logger
        self.machine = UpstreamPoolStateMachine(maxIdle: settings.maxIdle, idleTimeout: settings.idleTimeout, idGenerator: idGenerator)
    }

    func lease(for requester: any UpstreamLeaseRequester, now: MonotonicInstant) -> UpstreamLease {
        self.connector.eventLoop.assertInEventLoop()
        while true {
            switch self.machine.lease(now: now) {
            case .useIdle(let id):
                guard let connection = self.connections[id], connection.isUsable else {
                    // Closed while parked and not yet reported: forget it and try again.
                    self.forget(id)
                    continue
                }
                return .ready(connection)
            case .connect(let id):
                self.connect(id: id, for: requester)
                return .connecting
            }
        }
    }

    /// Parks a connection made elsewhere, as if a request had just released it (handler tests on
    /// `EmbeddedChannel`, where `ClientBootstrap` cannot connect).
    func adoptIdle(now: MonotonicInstant, _ make: (ConnectionID) -> UpstreamHTTP1Handler) -> UpstreamHTTP1Handler {
        guard case .connect(let id) = self.machine.lease(now: now) else {
            preconditionFailure("adoptIdle is for a pool with no idle connection")
        }
        let connection = make(id)
        connection.pool = self
        self.connections[id] = connection
        _ = self.machine.release(id, reusable: true, now: now)
        return connection
    }

    /// The request is done with `connection`.
    func release(_ connection: UpstreamHTTP1Handler, reusable: Bool, now: MonotonicInstant) {
        self.connector.eventLoop.assertInEventLoop()
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
        self.stats.unsolicitedBytesCloses += 1
        self.logger.warning("upstream sent bytes no request asked for; closing the connection", metadata: ["upstream": "\(self.endpoint)"])
    }

    /// The connection closed (either side): forget it.
    func connectionClosed(_ connection: UpstreamHTTP1Handler) {
        self.forget(connection.id)
    }

    func sweep(now: MonotonicInstant) {
        for id in self.machine.sweep(now: now) {
            self.connections.removeValue(forKey: id)?.close()
        }
        var timedOut: [UpstreamHTTP1Handler] = []
        for connection in self.connections.values {
            if let since = connection.awaitingHeadSince, since.duration(to: now) >= self.responseHeaderTimeout { timedOut.append(connection) }
        }
        for connection in timedOut {
            self.logger.warning("upstream response head timeout", metadata: ["upstream": "\(self.endpoint)"])
            connection.responseHeadTimedOut()
        }
    }

    func shutdown() {
        for id in self.machine.shutdown() {
            self.connections.removeValue(forKey: id)?.close()
        }
    }

    func counts() -> (idle: Int, busy: Int) { self.machine.counts() }

    private func forget(_ id: ConnectionID) {
        self.machine.connectionClosed(id)
        self.connections[id] = nil
    }

    private func connect(id: ConnectionID, for requester: any UpstreamLeaseRequester) {
        let future = self.connector.connect { channel in
            try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec(maxHeadBytes: Self.maxResponseHeadBytes))
            try channel.pipeline.syncOperations.addHandler(UpstreamHTTP1Handler(id: id))
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
                    requester.upstreamConnectFailed(.upstreamConnectFailed("\(self.endpoint): closed during connect"))
                } else if !requester.upstreamConnected(connection) {
                    self.release(connection, reusable: true, now: .now())
                }
            case .failure(let error):
                self.forget(id)
                self.stats.connectErrors += 1
                self.connector.logConnectFailure(error, logger: self.logger)
                requester.upstreamConnectFailed(.upstreamConnectFailed("\(self.endpoint): \(error)"))
            }
        }
    }
}
