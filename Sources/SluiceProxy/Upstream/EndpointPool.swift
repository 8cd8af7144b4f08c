import Logging
import NIOCore
import NIOPosix
import SluiceCore

/// Asks for an upstream connection and hears back when it is ready.
protocol UpstreamLeaseRequester: AnyObject {
    /// The connection is up. Returns `false` if the requester no longer wants it (the pool parks it).
    func upstreamConnected(_ connection: any UpstreamExchange) -> Bool
    /// The connection could not be made; the requester knows which endpoint it asked.
    func upstreamConnectFailed(_ error: ProxyError)
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
/// Two kinds stand behind this interface, chosen by the group's scheme: ``HTTP1EndpointPool``
/// (`http://`: a connection per request in flight) and ``HTTP2EndpointPool`` (`h2c://`: a stream
/// per request, multiplexed on a few connections).
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

/// Opens TCP connections to one endpoint on one event loop, with the options every upstream
/// connection gets. Shared by both pool kinds.
struct UpstreamConnector {
    let endpoint: UpstreamURL
    let eventLoop: any EventLoop
    let connectTimeout: Duration
    /// An IP literal is parsed once; a host name is resolved per new connection.
    private let address: SocketAddress?

    init(endpoint: UpstreamURL, eventLoop: any EventLoop, connectTimeout: Duration) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.connectTimeout = connectTimeout
        self.address = try? SocketAddress(ipAddress: endpoint.host, port: endpoint.port)
    }

    /// Connects on this loop (TCP_NODELAY, the connect timeout) with the pipeline `initialize` sets up.
    func connect(initialize: @escaping @Sendable (any Channel) throws -> Void) -> EventLoopFuture<any Channel> {
        let bootstrap = ClientBootstrap(group: self.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            // One receive buffer (up to 64 KiB) per read event: with NIO's default of 4, 64 KiB
            // responses kept up to four buffers per connection queued behind a slower client (peak
            // RSS 44.5 -> 30.5 MiB in the 64k load scenario).
            .channelOption(.maxMessagesPerRead, value: 1)
            .connectTimeout(self.connectTimeout.timeAmount)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try initialize(channel) }
            }
        if let address = self.address {
            return bootstrap.connect(to: address)
        }
        return bootstrap.connect(host: self.endpoint.host, port: self.endpoint.port)
    }
}
