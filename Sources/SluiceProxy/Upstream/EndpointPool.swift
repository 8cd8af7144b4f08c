import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SluiceCore

/// Asks for an upstream connection and hears back when it is ready.
protocol UpstreamLeaseRequester: AnyObject {
    /// The connection is up. Returns `false` if the requester no longer wants it (the pool parks it).
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool
    /// The connection could not be made; the requester knows which endpoint it asked.
    func upstreamConnectFailed(_ error: ProxyError)
    /// The request asks to switch protocols (an HTTP/1.1 `Upgrade`, a WebSocket; an RFC 8441
    /// CONNECT made into one): it needs an HTTP/1.1 connection, which an `https://` endpoint that
    /// speaks HTTP/2 gives it too (``HTTPSEndpointPool``). Default `false`.
    var needsHTTP1: Bool { get }
}

extension UpstreamLeaseRequester {
    var needsHTTP1: Bool { false }
}

/// What a pool answers a lease.
enum UpstreamLease {
    /// A connection (HTTP/1.1) or a stream slot (h2c) to use now.
    case ready(any UpstreamExchange)
    /// A connection is being made; the requester hears ``UpstreamLeaseRequester/upstreamConnected(_:)``
    /// or ``UpstreamLeaseRequester/upstreamConnectFailed(_:)``.
    case connecting
}

/// The connections of one event loop to one endpoint of one group (DESIGN.md §3: one pool per
/// group, endpoint and event loop). Which endpoint a request goes to is the group's balancer's
/// decision (``LoopUpstreamGroup``); the pool only decides which of its connections carries it.
///
/// Three kinds stand behind this interface, chosen by the group's scheme: ``HTTP1EndpointPool``
/// (`http://`: a connection per request in flight), ``HTTP2EndpointPool`` (`h2c://`: a stream
/// per request, multiplexed on a few connections) and ``HTTPSEndpointPool`` (`https://`: one of
/// the other two over TLS, as the endpoint's ALPN answer says).
protocol EndpointPool: AnyObject {
    var endpoint: UpstreamURL { get }
    /// A connection or stream for `requester`: ready now, or reported later.
    func lease(for requester: any UpstreamLeaseRequester, now: MonotonicInstant) -> UpstreamLease
    /// Closes connections idle past the group's idle timeout and fails requests whose response
    /// head is later than the group's response-header timeout.
    func sweep(now: MonotonicInstant)
    /// Drains the endpoint on the upstream side (the loop shuts down, or the endpoint or its group
    /// was removed): nothing is parked any more, idle connections close now, busy ones when their
    /// request ends. A request still leasing gets a connection.
    func shutdown()
    /// Idle and busy connections, for `/status`.
    func counts() -> (idle: Int, busy: Int)
    var stats: EndpointPoolStats { get }
}

/// What a pool counts, summed for `/status` and `/metrics`.
struct EndpointPoolStats: Sendable {
    var connectErrors = 0
    /// Connections closed because the upstream sent bytes no request asked for (response desync).
    var unsolicitedBytesCloses = 0

    static func + (lhs: EndpointPoolStats, rhs: EndpointPoolStats) -> EndpointPoolStats {
        EndpointPoolStats(
            connectErrors: lhs.connectErrors + rhs.connectErrors,
            unsolicitedBytesCloses: lhs.unsolicitedBytesCloses + rhs.unsolicitedBytesCloses
        )
    }
}

/// Opens connections to one endpoint on one event loop, with the options every upstream connection
/// gets: TCP, and for an `https://` endpoint TLS on top. Shared by every pool kind and the health checks.
///
/// 1. TCP_NODELAY, one read per event, the connect timeout.
/// 2. With ``tls``: `NIOSSLClientHandler` (the group's context, built once; SNI and the
///    certificate check against ``TLS/serverName``) and ``UpstreamTLSHandshakeHandler``. The
///    returned future completes only after the handshake, so a refused certificate is a failed
///    connect (``UpstreamTLSFailure``), and `initialize` learns the protocol ALPN chose.
struct UpstreamConnector {
    let endpoint: UpstreamURL
    let eventLoop: any EventLoop
    let connectTimeout: Duration
    let tls: TLS?
    /// An IP literal is parsed once; a host name is resolved per new connection.
    private let address: SocketAddress?

    init(endpoint: UpstreamURL, eventLoop: any EventLoop, connectTimeout: Duration, tls: TLS? = nil) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.tls = tls
        self.address = try? SocketAddress(ipAddress: endpoint.host, port: endpoint.port)
    }

    /// Connects on this loop with the pipeline `initialize` sets up (the protocol is `nil`: no TLS,
    /// or the upstream chose none by ALPN).
    func connect(initialize: @escaping @Sendable (any Channel) throws -> Void) -> EventLoopFuture<any Channel> {
        self.connect { channel, _ in try initialize(channel) }
    }

    /// Connects on this loop; `initialize` gets the protocol ALPN chose (`h2`, `http/1.1`, or `nil`).
    func connect(initialize: @escaping @Sendable (any Channel, _ negotiatedProtocol: String?) throws -> Void) -> EventLoopFuture<any Channel> {
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            // One receive buffer (up to 64 KiB) per read event: with NIO's default of 4, 64 KiB
            // responses kept up to four buffers per connection queued behind a slower client (peak
            // RSS 44.5 -> 30.5 MiB in the 64k load scenario).
            .channelOption(.maxMessagesPerRead, value: 1)
            .connectTimeout(self.connectTimeout.timeAmount)
        guard let tls = self.tls else {
            return self.connect(
                bootstrap.channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try initialize(channel, nil) }
                })
        }
        let context: NIOSSLContext
        switch tls.client {
        case .failure(let failure):
            return self.eventLoop.makeFailedFuture(failure)
        case .success(let client):
            context = tls.offer == .negotiate ? client.negotiating : client.http1Only
        }
        let handshake = self.eventLoop.makePromise(of: Void.self)
        let serverName = tls.serverName
        let timeout = self.connectTimeout
        let connected = self.connect(
            bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
                    try sync.addHandler(UpstreamTLSHandshakeHandler(serverName: serverName, timeout: timeout, promise: handshake, initialize: initialize))
                }
            })
        // A failed TCP connect never reaches the handshake handler (a second completion is ignored).
        connected.whenFailure { handshake.fail($0) }
        return connected.flatMap { channel in handshake.futureResult.map { channel } }
    }

    private func connect(_ bootstrap: ClientBootstrap) -> EventLoopFuture<any Channel> {
        if let address = self.address {
            return bootstrap.connect(to: address)
        }
        return bootstrap.connect(host: self.endpoint.host, port: self.endpoint.port)
    }
}
