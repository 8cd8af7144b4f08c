import Logging
import NIOCore
import SluiceCore
import SluiceHTTP2

/// One event loop's h2c connections to one `h2c://` endpoint (or, inside an ``HTTPSEndpointPool``,
/// HTTP/2 connections over TLS to an `https://` one whose ALPN answer was `h2`): the executor of
/// ``HTTP2UpstreamPoolStateMachine`` (a stream per request, multiplexed on up to
/// ``maxConnections`` connections).
final class HTTP2EndpointPool: EndpointPool {
    /// At most this many h2c connections per endpoint and event loop; past it, streams queue in
    /// libnghttp2 until the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` allows them.
    static let maxConnections = 4

    let endpoint: UpstreamURL
    private var machine: HTTP2UpstreamPoolStateMachine<MonotonicInstant>
    private var connections: [ConnectionID: UpstreamHTTP2Connection] = [:]
    /// Requests waiting for a connection being opened, by connection.
    private var pending: [ConnectionID: [any UpstreamLeaseRequester]] = [:]
    private let connector: UpstreamConnector
    private let responseHeaderTimeout: Duration
    private let logger: Logger
    private(set) var stats = EndpointPoolStats()

    /// Over TLS: called when a handshake chose another protocol than `h2` (``UpstreamALPNMismatch``).
    var protocolChanged: (() -> Void)?

    init(
        endpoint: UpstreamURL, eventLoop: any EventLoop, settings: SluiceConfig.Upstream, idGenerator: ConnectionID.Generator, logger: Logger,
        tls: UpstreamConnector.TLS? = nil
    ) {
        self.endpoint = endpoint
        self.connector = UpstreamConnector(endpoint: endpoint, eventLoop: eventLoop, connectTimeout: settings.connectTimeout, tls: tls)
        self.responseHeaderTimeout = settings.responseHeaderTimeout
        self.logger = logger
        self.machine = HTTP2UpstreamPoolStateMachine(maxConnections: Self.maxConnections, idleTimeout: settings.idleTimeout, idGenerator: idGenerator)
    }

    func lease(for requester: any UpstreamLeaseRequester, now: MonotonicInstant) -> UpstreamLease {
        self.connector.eventLoop.assertInEventLoop()
        switch self.machine.lease(now: now) {
        case .use(let id):
            guard let connection = self.connections[id] else { preconditionFailure("the machine leased an unknown connection \(id)") }
            return .ready(connection.makeStream())
        case .wait(let id):
            guard self.pending[id] != nil else { preconditionFailure("the machine waits on an unknown connect \(id)") }
            self.pending[id]!.append(requester)
            return .connecting
        case .connect(let id):
            self.pending[id] = [requester]
            self.connect(id: id)
            return .connecting
        }
    }

    private func connect(id: ConnectionID) {
        let connection = UpstreamHTTP2Connection(id: id, eventLoop: self.connector.eventLoop)
        connection.pool = self
        let bound = NIOLoopBound(connection, eventLoop: self.connector.eventLoop)
        let overTLS = self.connector.tls != nil
        let future = self.connector.connect { channel, negotiated in
            // Over TLS only a handshake that chose h2 carries HTTP/2.
            if overTLS, negotiated != "h2" { throw UpstreamALPNMismatch(negotiated: negotiated) }
            let handler = try HTTP2ClientConnectionHandler(delegate: bound.value)
            bound.value.attach(handler)
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        future.assumeIsolated().whenComplete { result in
            let waiters = self.pending.removeValue(forKey: id) ?? []
            switch result {
            case .success(let channel) where channel.isActive && !connection.isClosed:
                self.connections[id] = connection
                self.machine.connected(id, maxConcurrentStreams: HTTP2UpstreamPoolStateMachine<MonotonicInstant>.assumedMaxConcurrentStreams, now: .now())
                for requester in waiters {
                    let stream = connection.makeStream()
                    if !requester.upstreamConnected(stream) { stream.release(reusable: false, now: .now()) }
                }
            case .success:
                self.machine.connectionClosed(id)
                for requester in waiters { requester.upstreamConnectFailed(.upstreamConnectFailed("\(self.endpoint): closed during connect")) }
            case .failure(let error):
                self.machine.connectionClosed(id)
                self.stats.connectErrors += 1
                self.connector.logConnectFailure(error, logger: self.logger)
                if error is UpstreamALPNMismatch { self.protocolChanged?() }
                for requester in waiters { requester.upstreamConnectFailed(.upstreamConnectFailed("\(self.endpoint): \(error)")) }
            }
        }
    }

    /// A request is done with its stream on `connection`.
    func streamReleased(on connection: UpstreamHTTP2Connection) {
        switch self.machine.streamClosed(connection.id, now: .now()) {
        case .close:
            self.connections[connection.id] = nil
            connection.close()
        case .keep:
            break
        }
    }

    func settingsReceived(on connection: UpstreamHTTP2Connection, maxConcurrentStreams: Int) {
        self.machine.maxConcurrentStreamsChanged(connection.id, to: maxConcurrentStreams)
    }

    func goAwayReceived(on connection: UpstreamHTTP2Connection) {
        self.logger.debug("upstream sent GOAWAY", metadata: ["upstream": "\(self.endpoint)"])
        switch self.machine.goAwayReceived(connection.id) {
        case .close:
            self.connections[connection.id] = nil
            connection.close()
        case .keep:
            break
        }
    }

    func connectionClosed(_ connection: UpstreamHTTP2Connection) {
        // A connect still pending hears about it from its future.
        guard self.pending[connection.id] == nil else { return }
        self.machine.connectionClosed(connection.id)
        self.connections[connection.id] = nil
    }

    func sweep(now: MonotonicInstant) {
        for id in self.machine.sweep(now: now) {
            self.connections.removeValue(forKey: id)?.close()
        }
        for connection in self.connections.values {
            for stream in connection.streamsAwaitingHead(since: self.responseHeaderTimeout, now: now) {
                self.logger.warning("upstream response head timeout", metadata: ["upstream": "\(self.endpoint)"])
                stream.responseHeadTimedOut()
            }
        }
    }

    func shutdown() {
        for id in self.machine.shutdown() {
            self.connections.removeValue(forKey: id)?.close()
        }
    }

    func counts() -> (idle: Int, busy: Int) { self.machine.counts() }
}
