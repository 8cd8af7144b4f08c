import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SluiceCore

/// The active health checks of every group with `health:`: the executor of
/// ``HealthCheckStateMachine``, one ``GroupHealthChecker`` per group.
///
/// 1. Each group's checks run on one event loop (group index modulo the loops), so the machine
///    needs no lock; the results are published to every loop as the group's
///    `[key: EndpointHealth]` (``LoopUpstreamGroup/setHealth(_:)``, through `execute`: nothing is
///    locked on the request path).
/// 2. ``update(groups:endpoints:)`` takes a configuration generation's groups: a group whose
///    `health:`, scheme and `tls:` are unchanged keeps its checker (and its endpoints' states), a new one
///    starts, a removed one (or one whose `health:` went away) stops. ``setEndpoints(group:_:)``
///    follows a DNS answer: endpoints that stay keep their state.
/// 3. ``status()`` is the last published state of every group, for `/readyz` (`ready-requires`),
///    `/status` and `/metrics`; it is read under a lock by the admin listener only.
///
/// ```swift
/// let checkers = HealthCheckers(loops: access, logger: logger)
/// checkers.update(groups: config.groups) { group in resolver.endpoints(of: group) }
/// checkers.stop()                                // at shutdown
/// ```
final class HealthCheckers: Sendable {
    /// What the admin listener knows of one group's checks.
    struct GroupStatus: Sendable {
        /// Each endpoint's health, by key (`host:port`).
        var health: [String: EndpointHealth] = [:]
        /// Health changes since the process started (kept across reloads while the group keeps checks).
        var changes = 0
        /// Whether an endpoint passed its checks: what `ready-requires` waits for.
        var hasHealthyEndpoint: Bool { self.health.values.contains(.healthy) }
    }

    private struct Running: Sendable {
        var config: UpstreamGroup
        var checker: NIOLoopBoundBox<GroupHealthChecker>
    }

    private let loops: LoopRoutingAccess
    private let logger: Logger
    private let running = NIOLockedValueBox<[String: Running]>([:])
    private let statuses = NIOLockedValueBox<[String: GroupStatus]>([:])

    init(loops: LoopRoutingAccess, logger: Logger) {
        self.loops = loops
        self.logger = logger
    }

    /// The groups with checks, as last published.
    func status() -> [String: GroupStatus] { self.statuses.withLockedValue { $0 } }

    /// A configuration generation's groups (see the type's documentation); `endpoints` gives each
    /// group's endpoints now (resolved names). Every running checker republishes its state, so a
    /// loop's new ``LoopRouting`` learns it.
    func update(groups: [UpstreamGroup], endpoints: (UpstreamGroup) -> [UpstreamURL]) {
        let withChecks = groups.enumerated().filter { $0.element.health != nil }
        let (stopped, kept, started) = self.running.withLockedValue { running in
            var next: [String: Running] = [:]
            var kept: [Running] = []
            var started: [(Running, [UpstreamURL])] = []
            for (index, group) in withChecks {
                if let existing = running.removeValue(forKey: group.name) {
                    if existing.config.health == group.health, existing.config.scheme == group.scheme,
                        existing.config.tls == group.tls
                    {
                        next[group.name] = existing
                        kept.append(existing)
                        continue
                    }
                    running[group.name] = existing  // stopped below
                }
                let eventLoop = self.loops.eventLoop(forGroupIndex: index)
                let checker = GroupHealthChecker.make(
                    group: group, eventLoop: eventLoop, loops: self.loops, logger: self.logger, statuses: self.statuses)
                let entry = Running(config: group, checker: checker)
                next[group.name] = entry
                started.append((entry, endpoints(group)))
            }
            let stopped = Array(running.values)
            running = next
            return (stopped, kept, started)
        }
        for entry in stopped {
            entry.checker.eventLoop.execute { entry.checker.value.stop() }
        }
        let names = Set(withChecks.map(\.element.name))
        self.statuses.withLockedValue { statuses in
            for name in statuses.keys where !names.contains(name) { statuses[name] = nil }
        }
        for (entry, urls) in started {
            entry.checker.eventLoop.execute { entry.checker.value.start(endpoints: urls) }
        }
        for entry in kept {
            entry.checker.eventLoop.execute { entry.checker.value.publish() }
        }
    }

    /// A DNS answer changed a group's endpoints.
    func setEndpoints(group: String, _ endpoints: [UpstreamURL]) {
        guard let entry = self.running.withLockedValue({ $0[group] }) else { return }
        entry.checker.eventLoop.execute { entry.checker.value.setEndpoints(endpoints) }
    }

    /// Stops every checker (shutdown, forced close).
    func stop() {
        let entries = self.running.withLockedValue { running in
            defer { running = [:] }
            return Array(running.values)
        }
        for entry in entries {
            entry.checker.eventLoop.execute { entry.checker.value.stop() }
        }
    }
}

/// One group's checks on one event loop: runs its ``HealthCheckStateMachine`` (`tick` when
/// `nextDeadline` passes, by a scheduled task), sends each check, feeds the results back, and on
/// every health change logs one line, counts it and publishes the group's health to every loop.
///
/// A check of an `http://` group is `GET <path>` on a fresh HTTP/1.1 connection
/// (`Connection: close`, `Host` the endpoint's authority, `User-Agent: sluice-health-check`) made
/// with ``UpstreamConnector`` and ``HTTP1ClientCodec`` on this loop; the first final response
/// head's status is the result. A check of an `h2c://` group is a plain TCP connect: an h2c
/// endpoint need not speak HTTP/1.1, and a connect that succeeds within the timeout passes (as the
/// lowest status of `expect`); the path is not requested. A check of an `https://` group is the
/// `http://` check over TLS with the group's settings (its own contexts, ALPN `http/1.1`): a
/// refused certificate or a failed handshake is a failed check.
final class GroupHealthChecker {
    typealias Machine = HealthCheckStateMachine<String, MonotonicInstant>

    private let group: UpstreamGroup
    private let eventLoop: any EventLoop
    private let loops: LoopRoutingAccess
    private let logger: Logger
    private let statuses: NIOLockedValueBox<[String: HealthCheckers.GroupStatus]>
    private var machine: Machine
    private var endpoints: [String: UpstreamURL] = [:]
    /// The endpoints' keys in the order of the group's endpoints (for stable publishing).
    private var order: [String] = []
    private var probes: [Machine.CheckID: HealthProbe] = [:]
    private var timer: Scheduled<Void>?
    private var random: SplitMix64
    private var stopped = false
    /// Endpoints were set: a late ``start(endpoints:)`` (with an older list) is ignored.
    private var started = false
    /// An https group's TLS contexts, built once for the checker.
    private let tlsClient: Result<UpstreamTLSClient, UpstreamTLSFailure>?

    private init(group: UpstreamGroup, eventLoop: any EventLoop, loops: LoopRoutingAccess, logger: Logger, statuses: NIOLockedValueBox<[String: HealthCheckers.GroupStatus]>) {
        self.group = group
        self.eventLoop = eventLoop
        self.loops = loops
        self.logger = logger
        self.statuses = statuses
        self.machine = Machine(check: group.health!)
        self.tlsClient = UpstreamTLSClient.make(for: group)
        var seed = SystemRandomNumberGenerator()
        self.random = SplitMix64(seed: seed.next())
    }

    /// Made on `eventLoop` (where it lives), returned bound to it.
    static func make(
        group: UpstreamGroup, eventLoop: any EventLoop, loops: LoopRoutingAccess, logger: Logger,
        statuses: NIOLockedValueBox<[String: HealthCheckers.GroupStatus]>
    ) -> NIOLoopBoundBox<GroupHealthChecker> {
        // Made off the loop and sent into the box: from here on it is only touched on its loop.
        NIOLoopBoundBox.makeBoxSendingValue(
            GroupHealthChecker(group: group, eventLoop: eventLoop, loops: loops, logger: logger, statuses: statuses), eventLoop: eventLoop)
    }

    func start(endpoints: [UpstreamURL]) {
        self.eventLoop.assertInEventLoop()
        guard !self.started else { return }
        self.setEndpoints(endpoints)
    }

    /// The group's endpoints are now `endpoints`: new ones start unknown, removed ones are forgotten.
    func setEndpoints(_ endpoints: [UpstreamURL]) {
        self.eventLoop.assertInEventLoop()
        guard !self.stopped else { return }
        self.started = true
        let now = MonotonicInstant.now()
        var next: [String: UpstreamURL] = [:]
        var order: [String] = []
        for endpoint in endpoints where next[endpoint.authority] == nil {
            next[endpoint.authority] = endpoint
            order.append(endpoint.authority)
        }
        for key in self.order where next[key] == nil {
            switch self.machine.endpointRemoved(key) {
            case .cancelCheck(let id): self.probes.removeValue(forKey: id)?.cancel()
            case .removed, .unknownEndpoint: break
            }
        }
        for key in order {
            _ = self.machine.endpointAdded(key, now: now, using: &self.random)
        }
        self.endpoints = next
        self.order = order
        self.publish()
        self.schedule()
    }

    func stop() {
        self.eventLoop.assertInEventLoop()
        self.stopped = true
        self.timer?.cancel()
        self.timer = nil
        for probe in self.probes.values { probe.cancel() }
        self.probes.removeAll()
    }

    // MARK: Checks

    private func schedule() {
        self.timer?.cancel()
        self.timer = nil
        guard !self.stopped, let deadline = self.machine.nextDeadline else { return }
        let delay = max(.zero, MonotonicInstant.now().duration(to: deadline))
        self.timer = self.eventLoop.assumeIsolated().scheduleTask(in: delay.timeAmount) { [self] in
            self.timer = nil
            self.tick()
        }
    }

    private func tick() {
        guard !self.stopped else { return }
        var changed = false
        for action in self.machine.tick(now: .now(), using: &self.random) {
            switch action {
            case .startCheck(let start):
                self.startCheck(start)
            case .cancelCheck(let id):
                self.probes.removeValue(forKey: id)?.cancel()
            case .healthChanged(let change):
                self.healthChanged(change)
                changed = true
            }
        }
        if changed { self.publish() }
        self.schedule()
    }

    private func startCheck(_ start: Machine.CheckStart) {
        guard let endpoint = self.endpoints[start.endpoint] else {
            preconditionFailure("the machine checks only endpoints the checker added")
        }
        let timeout = MonotonicInstant.now().duration(to: start.deadline)
        let tls = self.tlsClient.map { client in
            UpstreamConnector.TLS(client: client, offer: .http1Only, serverName: self.group.effectiveTLS?.serverName(for: endpoint), group: self.group.name)
        }
        let probe = HealthProbe(
            endpoint: endpoint, path: self.group.health!.path, eventLoop: self.eventLoop, timeout: max(timeout, .milliseconds(1)),
            passStatus: self.group.health!.expect.lowerBound, tls: tls
        ) { [self] result in
            self.checkCompleted(start.id, result: result)
        }
        self.probes[start.id] = probe
        probe.run()
    }

    private func checkCompleted(_ id: Machine.CheckID, result: Machine.CheckResult) {
        guard !self.stopped, self.probes.removeValue(forKey: id) != nil else { return }
        switch self.machine.checkCompleted(id, result: result, now: .now(), using: &self.random) {
        case .recorded, .ignored:
            break
        case .healthChanged(let change):
            self.healthChanged(change)
            self.publish()
        }
        self.schedule()
    }

    private func healthChanged(_ change: Machine.HealthChange) {
        switch change {
        case .becameHealthy(let key):
            self.logger.notice("upstream endpoint health changed", metadata: ["group": "\(self.group.name)", "endpoint": "\(key)", "health": "healthy"])
        case .becameUnhealthy(let key, let reason):
            self.logger.warning(
                "upstream endpoint health changed", metadata: ["group": "\(self.group.name)", "endpoint": "\(key)", "health": "unhealthy", "reason": "\(reason)"])
        }
        self.statuses.withLockedValue { $0[self.group.name, default: .init()].changes += 1 }
    }

    /// Sends the group's health to every loop and to the admin listener's view.
    func publish() {
        self.eventLoop.assertInEventLoop()
        guard !self.stopped else { return }
        var health: [String: EndpointHealth] = [:]
        for key in self.order { health[key] = self.machine.health(of: key) }
        let published = health
        self.statuses.withLockedValue { $0[self.group.name, default: .init()].health = published }
        self.loops.forEachGroup(named: self.group.name) { group in group.setHealth(published) }
    }
}

/// One check: connect (over TLS for https), `GET path` (HTTP/1.1, `Connection: close`) or nothing
/// (h2c: the connect is the check), and report the first final status, a connect failure or another failure, once.
/// Confined to its loop; ``cancel()`` closes what it opened and reports nothing.
final class HealthProbe {
    typealias Result = HealthCheckStateMachine<String, MonotonicInstant>.CheckResult

    private let endpoint: UpstreamURL
    private let path: String
    private let eventLoop: any EventLoop
    private let timeout: Duration
    private let passStatus: Int
    private let tls: UpstreamConnector.TLS?
    private var report: ((Result) -> Void)?
    private var channel: (any Channel)?

    init(
        endpoint: UpstreamURL, path: String, eventLoop: any EventLoop, timeout: Duration, passStatus: Int, tls: UpstreamConnector.TLS? = nil,
        report: @escaping (Result) -> Void
    ) {
        self.endpoint = endpoint
        self.tls = tls
        self.path = path
        self.eventLoop = eventLoop
        self.timeout = timeout
        self.passStatus = passStatus
        self.report = report
    }

    func run() {
        let connector = UpstreamConnector(endpoint: self.endpoint, eventLoop: self.eventLoop, connectTimeout: self.timeout, tls: self.tls)
        let isHTTP = self.endpoint.scheme != .h2c
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: self.path)
        head.headers.add(name: "host", value: self.endpoint.authority)
        head.headers.add(name: "user-agent", value: "sluice-health-check")
        head.headers.add(name: "connection", value: "close")
        let request = head
        connector.connect { channel in
            guard isHTTP else { return }
            try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec(maxHeadBytes: HTTP1EndpointPool.maxResponseHeadBytes))
            try channel.pipeline.syncOperations.addHandler(HealthProbeHandler(request: request))
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .failure(let error):
                self.finish(.connectFailed("\(error)"))
            case .success(let channel):
                guard self.report != nil else {
                    channel.close(promise: nil)  // cancelled while connecting
                    return
                }
                guard isHTTP else {
                    self.finish(.response(status: self.passStatus))
                    channel.close(promise: nil)
                    return
                }
                self.channel = channel
                guard let handler = try? channel.pipeline.syncOperations.handler(type: HealthProbeHandler.self) else {
                    preconditionFailure("the initializer adds the probe handler")
                }
                handler.onResult { [self] result in
                    self.finish(result)
                    channel.close(promise: nil)
                }
            }
        }
    }

    /// The machine timed the check out, or the endpoint left: close, report nothing.
    func cancel() {
        self.report = nil
        self.channel?.close(promise: nil)
        self.channel = nil
    }

    private func finish(_ result: Result) {
        guard let report = self.report else { return }
        self.report = nil
        self.channel = nil
        report(result)
    }
}

/// Sends the check's request when the connection is up and hears the first final response head.
final class HealthProbeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let request: HTTPRequestHead
    private var result: HealthProbe.Result?
    private var callback: ((HealthProbe.Result) -> Void)?

    init(request: HTTPRequestHead) { self.request = request }

    /// `callback` hears the result once, now if it is already known.
    func onResult(_ callback: @escaping (HealthProbe.Result) -> Void) {
        self.callback = callback
        self.deliver()
    }

    /// Over TLS the handler is added after the handshake, on an active channel: it sends then.
    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { self.send(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        self.send(context: context)
        context.fireChannelActive()
    }

    private var sent = false

    private func send(context: ChannelHandlerContext) {
        guard !self.sent else { return }
        self.sent = true
        context.write(self.wrapOutboundOut(.head(self.request)), promise: nil)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = self.unwrapInboundIn(data), head.status.code >= 200 {
            self.set(.response(status: Int(head.status.code)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.set(.failed("connection closed before a response head"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.set(.failed("\(error)"))
        context.close(promise: nil)
    }

    private func set(_ result: HealthProbe.Result) {
        guard self.result == nil else { return }
        self.result = result
        self.deliver()
    }

    private func deliver() {
        guard let result = self.result, let callback = self.callback else { return }
        self.callback = nil
        callback(result)
    }
}
