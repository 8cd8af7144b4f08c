import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import SluiceHTTP2

#if canImport(Glibc)
import Glibc
#endif

/// The proxy's I/O: one NIOPosix event loop per thread, each with its own listener (SO_REUSEPORT),
/// connection table and upstream pool, plus the admin listener.
///
/// 1. ``start()`` binds every listener and the admin listener and returns their real addresses
///    (port 0 binds a free port, shared by every loop).
/// 2. ``carryOut(_:)`` carries the drain machine's actions to every loop (see `ProxyServer+Drain.swift`);
///    the loops report back through `events` when they have drained.
/// 3. ``reload(trigger:)`` (SIGHUP, `POST /reload`) re-reads the configuration from the
///    ``ConfigSource`` and applies it on every loop; ``reload(to:)`` applies a given one
///    (see `ProxyServer+Reload.swift`).
/// 4. ``shutdown()`` closes what is left and stops the loops.
///
/// ```swift
/// let server = ProxyServer(config: config, logger: logger)
/// let bound = try await server.start()
/// ```
public final class ProxyServer: Sendable {
    public struct BoundAddresses: Sendable {
        public var listeners: [SocketAddress]
        public var admin: SocketAddress
    }

    /// The configuration the process started with; settings a reload does not apply are read here.
    /// The one in force, with its generation, is ``configState``.
    let config: SluiceConfig
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let loops: [NIOLoopBound<LoopContext>]
    let phase: NIOLockedValueBox<PhaseState>
    let metrics: ProxyMetrics
    private let adminChannel = NIOLockedValueBox<(any Channel)?>(nil)
    /// The most downstream connections served at once, over every listener and loop
    /// (`--max-connections`, or derived from ``descriptorLimit``; see ``ConnectionLimit``).
    public let maxConnections: Int
    /// The open-file limit when the server was created.
    public let descriptorLimit: Int
    let budget: ConnectionBudget
    private let acceptLogs = AcceptGate.Logs()
    /// Loop events for the drain coordinator.
    let events: AsyncStream<LoopEvent>
    private let eventsContinuation: AsyncStream<LoopEvent>.Continuation
    /// `POST /drain/rehearse` requests, for the drain coordinator.
    let rehearsals = RehearsalQueue()
    /// `GET /drain/wait` requests waiting for the drain's end.
    let drainWaiters = DrainWaiters()
    /// Health checks and name re-resolution of the upstream groups (started by ``start()``).
    let upstreamServices: UpstreamServices
    /// Where ``reload(trigger:)`` reads the configuration again; `nil`: reloads are refused.
    let configSource: ConfigSource?
    /// The configuration in force, its generation and the last reload's error (for `/status`).
    let configState: NIOLockedValueBox<ConfigState>
    /// Reloads run one at a time, in the order they were asked for.
    let reloads = ReloadQueue()
    /// The address each configured listen address is bound to (port 0 resolved).
    let boundListeners = NIOLockedValueBox<[HostPort: SocketAddress]>([:])
    /// The TLS listeners in force, by configured address (see `ProxyServer+TLS.swift`).
    let tlsListeners = NIOLockedValueBox<[HostPort: TLSListenerInForce]>([:])

    /// The drain as the admin endpoints see it, published by the ``DrainCoordinator`` from the drain
    /// machine after every event it handles (see `ProxyServer+Drain.swift`); nothing else writes it.
    struct PhaseState: Sendable {
        var phase: DrainPhase = .starting
        var deadline: MonotonicInstant?
        var startedAt: MonotonicInstant = .now()
        /// Supervisor mode: the app has answered (``setAppReady()``); always true without an app.
        var appReady = true
        /// While a drain or rehearsal runs: what has arrived since it began.
        var timeline: DrainTimeline<MonotonicInstant>?
    }

    /// - Parameter configSource: reads the configuration again on reload exactly as at start-up (the
    ///   same flags and environment, the file re-read); `nil`: ``reload(trigger:)`` is refused.
    public convenience init(config: SluiceConfig, logger: Logger, metrics: ProxyMetrics = ProxyMetrics(), configSource: ConfigSource? = nil) {
        self.init(config: config, logger: logger, metrics: metrics, configSource: configSource, resolver: SystemEndpointResolver())
    }

    /// - Parameter resolver: resolves upstream names (tests inject answers that change).
    init(
        config: SluiceConfig, logger: Logger, metrics: ProxyMetrics = ProxyMetrics(), configSource: ConfigSource? = nil,
        resolver: any EndpointResolving
    ) {
        self.config = config
        self.logger = logger
        self.metrics = metrics
        self.configSource = configSource
        self.configState = NIOLockedValueBox(ConfigState(config: config, generation: 1, loadedAt: UnixTime.now(), lastError: nil))
        var phase = PhaseState()
        phase.appReady = config.app == nil
        self.phase = NIOLockedValueBox(phase)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: config.threads)
        self.descriptorLimit = DescriptorLimit.current
        self.maxConnections = ConnectionLimit.effective(configured: config.http.maxConnections, descriptorLimit: self.descriptorLimit, threads: config.threads)
        self.budget = ConnectionBudget(limit: self.maxConnections)
        (self.events, self.eventsContinuation) = AsyncStream.makeStream(of: LoopEvent.self)
        let continuation = self.eventsContinuation
        var loops: [NIOLoopBound<LoopContext>] = []
        for (index, eventLoop) in self.group.makeIterator().enumerated() {
            let context = try! eventLoop.submit {
                NIOLoopBound(
                    LoopContext(index: index, eventLoop: eventLoop, config: config, logger: logger, metrics: metrics) { continuation.yield($0) },
                    eventLoop: eventLoop
                )
            }.wait()
            loops.append(context)
        }
        self.loops = loops
        self.upstreamServices = UpstreamServices(
            loops: LoopRoutingAccess(loops: loops.map { loop in .init(eventLoop: loop.eventLoop) { loop.value.routing } }),
            resolver: resolver, logger: logger)
    }

    public var loopCount: Int { self.loops.count }

    /// Binds the listeners (one per loop and address) and the admin listener.
    public func start() async throws -> BoundAddresses {
        // Upstream names resolved (bounded wait) and health checks running before the first request.
        // Every certificate and key is loaded and checked before anything starts; every problem is
        // reported at once.
        let tls = try self.loadTLS(self.config.listen, groups: self.config.groups)
        await self.upstreamServices.start(groups: self.config.groups)
        var bound: [SocketAddress] = []
        for listener in self.config.listen {
            let (local, channels) = try await self.bindEverywhere(listener, tls: tls[listener.address])
            for (loop, channel) in zip(self.loops, channels) {
                try await loop.eventLoop.submit { loop.value.addListener(channel, address: listener.address) }.get()
            }
            self.boundListeners.withLockedValue { $0[listener.address] = local }
            bound.append(local)
        }
        self.adoptTLS(tls)
        let admin = try await ListenError.naming(self.config.admin) { try await self.bindAdmin() }
        for loop in self.loops {
            try await loop.eventLoop.submit { loop.value.startSweeping() }.get()
        }
        return BoundAddresses(listeners: bound, admin: admin)
    }

    /// Fails with `EADDRINUSE` when something listens on `host:port`. A bare `bind(2)` that never
    /// listens: the probe used to be a `ServerBootstrap` bind, which listens, and a client connecting
    /// in that moment was accepted onto the probe's handler-less child channel and hung there
    /// (seen as a restart test's request getting no response). With `SO_REUSEADDR`, connections in
    /// TIME_WAIT from a previous run do not stop a restart; a live listener does.
    static func probeBind(host: String, port: Int) throws {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let fd = socket(address.protocol.rawValue, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        defer { close(fd) }
        var one: Int32 = 1
        guard setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw IOError(errnoCode: errno, reason: "setsockopt")
        }
        let result: Int32
        switch address {
        case .v4(let v4):
            var raw = v4.address
            result = withUnsafePointer(to: &raw) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(let v6):
            var raw = v6.address
            result = withUnsafePointer(to: &raw) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        case .unixDomainSocket:
            return
        }
        guard result == 0 else { throw IOError(errnoCode: errno, reason: "bind") }
    }

    /// Binds `listener` on every loop (SO_REUSEPORT; port 0 becomes one free port shared by every
    /// loop) and returns the bound address and the loops' channels, in loop order, not yet added to
    /// their loops. On failure, closes what it bound and throws a ``ListenError``.
    func bindEverywhere(_ listener: Listener, tls: TLSListener?) async throws -> (SocketAddress, [any Channel]) {
        let address = listener.address
        var channels: [any Channel] = []
        do {
            if address.port != 0 {
                // A plain bind first, without SO_REUSEPORT: it fails if anyone else holds the port
                // (a second Sluice would otherwise silently join the group and take half the traffic).
                // Port 0 needs no probe: Linux never hands a port-0 bind a port another group uses.
                try await ListenError.naming(address) { try Self.probeBind(host: address.host, port: address.port) }
            }
            var port = address.port
            for loop in self.loops {
                let channel = try await ListenError.naming(address) {
                    try await self.bindListener(listener, port: port, tls: tls, loop: loop)
                }
                if channels.isEmpty { port = channel.localAddress?.port ?? port }
                channels.append(channel)
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return (channels[0].localAddress!, channels)
    }

    private func bindListener(_ listener: Listener, port: Int, tls: TLSListener?, loop: NIOLoopBound<LoopContext>) async throws -> any Channel {
        let pipeline = ListenerPipeline(
            listener: listener, tls: tls, http2: HTTP2ServerConnectionHandler.Configuration.sluice(http: self.config.http),
            // The parser's bound leaves room for the request line; RequestRules applies the exact limit (431).
            maxHeadBytes: self.config.http.maxHeaderBytes + 1024)
        let gate = self.acceptShared(budget: self.budget)
        return try await ServerBootstrap(group: loop.eventLoop)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(ChannelOptions.Types.SocketOption(level: .socket, name: .init(rawValue: SO_REUSEPORT)), value: 1)
            // Pauses accepting at --max-connections and backs off when descriptors run out.
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptGate(role: "proxy", shared: gate))
                }
            }
            // TCP_NODELAY is set on the listener: Linux accepted sockets inherit it, so there is no
            // setsockopt per connection. Child options are set synchronously in the initializer (the
            // bootstrap applies child options through a chain of futures per accept).
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try pipeline.initialize(channel, loop: loop.value) }
            }
            .bind(host: listener.address.host, port: port)
            .get()
    }

    /// The largest admin request head (request line included); larger is answered with 431.
    static let adminMaxHeadBytes = 16 << 10

    /// Descriptors the admin listener keeps on `/dev/null` to accept with when the process has none.
    static let adminReservedDescriptors = 3

    private func bindAdmin() async throws -> SocketAddress {
        let server = self
        let gate = self.acceptShared(budget: nil)
        let idleTimeout = self.config.http.requestHeaderTimeout.timeAmount
        let channel = try await ServerBootstrap(group: self.group.next())
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Probes must get through when the proxy has run out of descriptors: the admin
            // listener holds a few in reserve and frees one to accept (DescriptorReserve).
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let reserve = DescriptorReserve(capacity: Self.adminReservedDescriptors)
                    try channel.pipeline.syncOperations.addHandler(AcceptGate(role: "admin", shared: gate, reserve: reserve))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Sluice's own strict codec, as on the proxy port: NIO's server pipeline answered a
                    // parse error with a 400 saying `Connection: close` and left the connection open.
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(HTTP1ServerCodec(maxHeadBytes: Self.adminMaxHeadBytes))
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(server: server))
                }
            }
            .bind(host: self.config.admin.host, port: self.config.admin.port)
            .get()
        self.adminChannel.withLockedValue { $0 = channel }
        return channel.localAddress!
    }

    /// What every listener's ``AcceptGate`` shares; `budget` `nil` for the admin listener.
    private func acceptShared(budget: ConnectionBudget?) -> AcceptGate.Shared {
        AcceptGate.Shared(budget: budget, logger: self.logger, logs: self.acceptLogs) { [weak self] in self?.wakeListeners() }
    }

    /// A connection closed while some listener was paused: every loop's gates look at the slots again.
    private func wakeListeners() {
        for loop in self.loops {
            loop.eventLoop.execute {
                for listener in loop.value.listeners where listener.channel.isActive {
                    (try? listener.channel.pipeline.syncOperations.handler(type: AcceptGate.self))?.slotFreed()
                }
            }
        }
    }

    /// The connection table's counts and the request counters, summed over loops.
    func snapshot() -> EventLoopFuture<LoopSnapshot> {
        let futures = self.loops.map { loop in loop.eventLoop.submit { loop.value.snapshot() } }
        return EventLoopFuture.reduce(into: LoopSnapshot?.none, futures, on: self.group.next()) { sum, next in
            sum = sum.map { $0 + next } ?? next
        }.map { $0! }
    }

    /// While a drain runs: one line with the phase, time left and what is still open; `nil` while serving.
    public func drainProgressLine() async -> String? {
        let phase = self.phase.withLockedValue { $0 }
        guard phase.phase > .serving, let snapshot = try? await self.snapshot().get() else { return nil }
        let left = phase.deadline.map { max(0, MonotonicInstant.now().duration(to: $0).secondsDouble) }
        let leftText = left.map { " \(Int(($0 * 10).rounded()) / 10).\(Int(($0 * 10).rounded()) % 10)s left," } ?? ""
        return "[drain] \(phase.phase.rawValue):\(leftText) \(snapshot.connections.total) connections, \(snapshot.connections.requestsInFlight) requests in flight"
    }

    /// Closes the admin listener and stops the event loops.
    public func shutdown() async {
        self.upstreamServices.stop()
        self.stopTLS()
        self.eventsContinuation.finish()
        self.rehearsals.close()
        await self.drainWaiters.finish("deadline")
        for loop in self.loops {
            try? await loop.eventLoop.submit { loop.value.stopSweeping() }.get()
        }
        if let admin = self.adminChannel.withLockedValue({ $0 }) { try? await admin.close() }
        try? await self.group.shutdownGracefully()
    }
}

extension HTTP2ServerConnectionHandler.Configuration {
    /// HTTP/2 downstream settings: 100 concurrent streams, 64 KiB stream windows that reopen only as
    /// the upstream takes the bytes, a 1 MiB connection window, the header limit of HTTP/1; at most
    /// 64 KiB of response queued per stream and 1 MiB per connection (plus one upstream read per
    /// stream), and streams stalled on the client's flow control reset after `stream-stall-timeout`.
    static func sluice(http: SluiceConfig.HTTP) -> HTTP2ServerConnectionHandler.Configuration {
        var configuration = HTTP2ServerConnectionHandler.Configuration()
        configuration.session.maxHeaderListSize = UInt32(clamping: http.maxHeaderBytes)
        configuration.streamStallTimeout = http.streamStallTimeout
        return configuration
    }
}

/// A listener could not be bound; says which address and why, in words.
public struct ListenError: Error, CustomStringConvertible {
    public var address: HostPort
    public var reason: String

    public var description: String { "cannot listen on \(self.address): \(self.reason)" }

    static func naming<T>(_ address: HostPort, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as IOError {
            throw ListenError(address: address, reason: String(cString: strerror(error.errnoCode)).lowercased() + " (errno \(error.errnoCode))")
        } catch {
            throw ListenError(address: address, reason: "\(error)")
        }
    }
}
