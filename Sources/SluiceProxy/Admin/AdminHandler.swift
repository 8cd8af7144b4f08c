import NIOCore
import NIOHTTP1
import SluiceCore

/// The admin listener's endpoints:
/// 1. `GET /livez`: 200 `ok` while the process runs;
/// 2. `GET /readyz`: 200 `ready` only in `serving`, else 503 with the phase;
/// 3. `GET /status`: JSON with the phase, seconds left in it, connections by state and protocol,
///    requests in flight and the upstream pools;
/// 4. `GET /metrics`: Prometheus text;
/// 5. `POST /reload`: reads the configuration again and applies it (``ProxyServer/reload(trigger:)``),
///    answering once every loop has it, or it was refused (``ReloadDocument/answer(_:)``); from
///    loopback peers only (403 otherwise), other methods 405.
///
/// 6. `GET /drain/wait`: answered `drained` or `deadline` when the drain ends (a preStop hook's
///    rendezvous; ``DrainWaiters``);
/// 7. `POST /drain/rehearse?for=10s`: readiness fails for the window and nothing else changes; the
///    answer is the rehearsal's report of arrivals (loopback peers only).
///
/// Only `/reload` and `/drain/rehearse` change state, and they are for loopback peers only.
///
/// Behind Sluice's own ``HTTP1ServerCodec``, as on the proxy port: every response is framed
/// (`Content-Length`), a request that cannot be parsed gets 400 (431 when its head is too large)
/// and the connection closes, as it does after `CONNECT` (405) and after a request that asks to
/// close. ``AdminConnectionStateMachine`` decides the order and the closes.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    typealias Machine = AdminConnectionStateMachine<HTTPRequestHead>

    private let server: ProxyServer
    private var request: HTTPRequestHead?
    private var machine = Machine()
    /// A `/drain/wait` or `/drain/rehearse` answer is pending: the idle timeout does not apply.
    private var longPolling = false

    init(server: ProxyServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head): self.request = head
        case .body: break
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            self.run(self.machine.requestReceived(head, keepAlive: head.isKeepAlive, isConnect: head.method == .CONNECT), context: context)
        }
    }

    /// The connection has received nothing for `request-header-timeout` (``IdleStateHandler`` ahead of
    /// the codec): a client holding an admin connection open, idle or mid-head, is let go, so a few slow
    /// clients cannot keep the probes' listener busy. A client waiting for a long-poll answer is not idle.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            if self.longPolling { return }
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTP1ParseError else {
            context.close(promise: nil)
            return
        }
        switch parseError.kind {
        case .truncated: self.run(self.machine.inputTruncated(), context: context)
        case .headTooLarge: self.run(self.machine.parseFailed(.headTooLarge), context: context)
        case .malformed: self.run(self.machine.parseFailed(.malformed(parseError.detail)), context: context)
        }
    }

    private func run(_ action: Machine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .answer(let head, let close):
            self.route(head, close: close, context: context)
        case .fail(.malformed(let detail)):
            self.respond(context, nil, status: .badRequest, body: "bad request: \(detail)\n", close: true)
        case .fail(.headTooLarge):
            self.respond(context, nil, status: .requestHeaderFieldsTooLarge, body: "request head too large\n", close: true)
        case .close:
            context.close(promise: nil)
        }
    }

    private func route(_ head: HTTPRequestHead, close: Bool, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        if path == "/reload" { return self.reload(head, close: close, context: context) }
        if path == "/drain/rehearse" { return self.rehearse(head, close: close, context: context) }
        guard head.method == .GET || head.method == .HEAD else {
            return self.respond(
                context, head, status: .methodNotAllowed, body: "only GET and HEAD are supported\n", close: close, extra: [("allow", "GET, HEAD")]
            )
        }
        let phase = self.server.phase.withLockedValue { $0 }
        switch path {
        case "/livez":
            self.respond(context, head, status: .ok, body: "ok\n", close: close)
        case "/readyz":
            switch self.server.readiness(phase) {
            case .ready:
                self.respond(context, head, status: .ok, body: "ready\n", close: close)
            case .notReady(let reason):
                self.respond(context, head, status: .serviceUnavailable, body: "not ready: \(reason)\n", close: close)
            }
        case "/status":
            let groups = self.server.upstreamServices.loops.snapshot(on: context.eventLoop)
            self.server.snapshot().hop(to: context.eventLoop).and(groups).assumeIsolated().whenSuccess { snapshot, groups in
                let limits = StatusDocument.Limits(maxConnections: self.server.maxConnections, pausedListeners: self.server.budget.pausedListeners)
                let ready = self.server.readiness(phase) == .ready
                let configState = self.server.currentConfig()
                let body = StatusDocument.render(
                    phase: phase, snapshot: snapshot, config: configState.config, limits: limits, configState: configState, ready: ready, groups: groups,
                    listeners: self.server.listenerStatuses(configState.config))
                self.respond(context, head, status: .ok, body: body, close: close, contentType: "application/json")
            }
        case "/drain/wait":
            let written = context.eventLoop.makePromise(of: Void.self)
            self.longPolling = true
            self.server.drainWaiters.wait(on: context.eventLoop, written: written).assumeIsolated().whenSuccess { result in
                self.longPolling = false
                self.respond(context, head, status: .ok, body: result + "\n", close: close, written: written)
            }
        case "/metrics":
            let groups = self.server.upstreamServices.loops.snapshot(on: context.eventLoop)
            self.server.snapshot().hop(to: context.eventLoop).and(groups).assumeIsolated().whenSuccess { snapshot, groups in
                let changes = self.server.upstreamServices.health.status().mapValues(\.changes)
                let body = self.server.metrics.render(snapshot, groups: groups, healthChanges: changes)
                self.respond(context, head, status: .ok, body: body, close: close, contentType: "text/plain; version=0.0.4")
            }
        default:
            self.respond(context, head, status: .notFound, body: "not found; try /livez, /readyz, /status, /metrics or /drain/wait\n", close: close)
        }
    }

    /// `POST /reload` from a loopback peer: answered when the reload has been applied on every loop
    /// or refused.
    private func reload(_ head: HTTPRequestHead, close: Bool, context: ChannelHandlerContext) {
        guard head.method == .POST else {
            return self.respond(context, head, status: .methodNotAllowed, body: "only POST is supported\n", close: close, extra: [("allow", "POST")])
        }
        guard AdminAccess.isLoopback(context.channel.remoteAddress) else {
            return self.respond(context, head, status: .forbidden, body: "forbidden: /reload is for loopback peers only\n", close: close)
        }
        let server = self.server
        context.eventLoop.makeFutureWithTask { await server.reload(trigger: .admin) }.assumeIsolated().whenSuccess { outcome in
            let (status, body) = ReloadDocument.answer(outcome)
            self.respond(context, head, status: status, body: body, close: close, contentType: "application/json")
        }
    }

    /// `POST /drain/rehearse?for=10s` from a loopback peer: readiness fails for the window, then the
    /// rehearsal's report (``DrainTimeline/rehearsalJSON(window:outcome:now:)``) is the answer.
    private func rehearse(_ head: HTTPRequestHead, close: Bool, context: ChannelHandlerContext) {
        guard head.method == .POST else {
            return self.respond(context, head, status: .methodNotAllowed, body: "only POST is supported\n", close: close, extra: [("allow", "POST")])
        }
        guard AdminAccess.isLoopback(context.channel.remoteAddress) else {
            return self.respond(context, head, status: .forbidden, body: "forbidden: /drain/rehearse is for loopback peers only\n", close: close)
        }
        let window: Duration
        switch Self.rehearsalWindow(uri: head.uri) {
        case .success(let duration): window = duration
        case .failure(let problem): return self.respond(context, head, status: .badRequest, body: problem.message + "\n", close: close)
        }
        let answer = context.eventLoop.makePromise(of: (HTTPResponseStatus, String).self)
        self.server.rehearsals.submit(RehearsalRequest(window: window, answer: answer))
        self.longPolling = true
        answer.futureResult.assumeIsolated().whenSuccess { status, body in
            self.longPolling = false
            let type = "application/json"
            self.respond(context, head, status: status, body: body, close: close, contentType: type)
        }
    }

    /// The `for` query parameter: default 10 s, from 100 ms to 5 min.
    static func rehearsalWindow(uri: String) -> Result<Duration, ConfigError> {
        let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        var value: Substring?
        for pair in query.split(separator: "&") where pair.hasPrefix("for=") { value = pair.dropFirst(4) }
        guard let value else { return .success(.seconds(10)) }
        guard let duration = DurationParser.parse(String(value)), duration >= .milliseconds(100), duration <= .seconds(300) else {
            return .failure(ConfigError("bad rehearsal window for=\(value): expected a duration from 100ms to 5m, e.g. for=10s"))
        }
        return .success(duration)
    }

    /// Writes one framed response; `request` is nil for an answer to bytes that did not parse.
    private func respond(
        _ context: ChannelHandlerContext,
        _ request: HTTPRequestHead?,
        status: HTTPResponseStatus,
        body: String,
        close: Bool,
        contentType: String = "text/plain; charset=utf-8",
        extra: [(String, String)] = [],
        written: EventLoopPromise<Void>? = nil
    ) {
        var headers = HTTPHeaders([("content-type", contentType), ("content-length", String(body.utf8.count)), ("cache-control", "no-store")])
        headers.add(contentsOf: extra)
        if close { headers.add(name: "connection", value: "close") }
        // An HTTP/1.0 request gets an HTTP/1.0 status line; anything else, and bytes that did not parse, 1.1.
        let version = request?.version == .http1_0 ? HTTPVersion.http1_0 : .http1_1
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if request?.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            written?.succeed()
            if close {
                context.close(promise: nil)
            } else {
                self.run(self.machine.answerSent(), context: context)
            }
        }
    }
}

/// The `/status` JSON document.
enum StatusDocument {
    struct Limits {
        var maxConnections: Int
        /// Listeners not accepting now (at the connection limit, or out of descriptors).
        var pausedListeners: Int
    }

    static func render(
        phase: ProxyServer.PhaseState, snapshot: LoopSnapshot, config: SluiceConfig, limits: Limits, configState: ConfigState, ready: Bool? = nil,
        groups: [GroupSnapshot] = [], listeners: [ListenerStatus] = []
    ) -> String {
        let now = MonotonicInstant.now()
        let left = phase.deadline.map { max(0, now.duration(to: $0).secondsDouble) }
        let counts = snapshot.connections
        var byState: [String] = []
        for state in ConnectionTable<MonotonicInstant>.State.allCases {
            byState.append("\"\(state.rawValue)\":\(counts.byState[state] ?? 0)")
        }
        var byProtocol: [String] = []
        for proto in ConnectionProtocol.allCases {
            byProtocol.append("\"\(proto.rawValue)\":\(counts.byProtocol[proto] ?? 0)")
        }
        var tunnels: [String] = []
        for proto in ConnectionProtocol.allCases {
            tunnels.append("\"\(proto.rawValue)\":\(counts.tunnelsByProtocol[proto] ?? 0)")
        }
        var upstreams: [String] = []
        for pool in snapshot.upstreams {
            upstreams.append("{\"url\":\"\(pool.endpoint)\",\"group\":\"\(pool.group)\",\"idle\":\(pool.idle),\"busy\":\(pool.busy)}")
        }
        let stats = snapshot.stats
        let http2Errors = stats.http2ConnectionErrors.sorted(by: { $0.key < $1.key }).map { "\"\($0.key)\":\($0.value)" }
        let responses = zip(["other", "1xx", "2xx", "3xx", "4xx", "5xx"], stats.responsesByClass).map { "\"\($0)\":\($1)" }
        return """
            {"phase":"\(phase.phase.rawValue)","ready":\(ready ?? phase.phase.isReady),"phase_seconds_left":\(left.map { String($0) } ?? "null"),\
            "uptime_seconds":\(phase.startedAt.duration(to: now).secondsDouble),\
            "connections":{"total":\(counts.total),"by_state":{\(byState.joined(separator: ","))},"by_protocol":{\(byProtocol.joined(separator: ","))},"tunnels":{\(tunnels.joined(separator: ","))}},\
            "requests_in_flight":\(counts.requestsInFlight),\
            "responses":{\(responses.joined(separator: ","))},\
            "forced_closes":\(stats.forcedCloses),"upstream_connect_errors":\(stats.upstreamConnectErrors),"upstream_unsolicited_bytes":\(stats.upstreamUnsolicitedBytes),"http2_stream_stall_resets":\(stats.http2StreamStallResets),"retries":\(stats.retries),\
            "http2_connection_errors":{\(http2Errors.joined(separator: ","))},\
            "upstreams":[\(upstreams.joined(separator: ","))],\
            "groups":[\(groups.map(Self.render(group:)).joined(separator: ","))],\
            "listeners":[\(listeners.map(Self.render(listener:)).joined(separator: ","))],\
            "drain":\(phase.timeline?.statusJSON(now: now) ?? "null"),\
            \(ReloadDocument.statusMembers(configState)),\
            "max_connections":\(limits.maxConnections),"listeners_paused":\(limits.pausedListeners)}

            """
    }

    /// One group: `{"name":..,"scheme":..,"balance":..,"endpoints":[{"url":..,"health":..,"ejected":..,"idle":..,"busy":..}]}`;
    /// an endpoint removed by a DNS answer and still draining also says `"draining":true`.
    static func render(group: GroupSnapshot) -> String {
        let endpoints = group.endpoints.map { endpoint in
            let draining = endpoint.draining ? ",\"draining\":true" : ""
            return "{\"url\":\"\(endpoint.url)\",\"health\":\"\((endpoint.health ?? .unknown).rawValue)\",\"ejected\":\(endpoint.ejected),"
                + "\"idle\":\(endpoint.idle),\"busy\":\(endpoint.busy)\(draining)}"
        }
        return "{\"name\":\"\(Self.escape(group.name))\",\"scheme\":\"\(group.scheme.rawValue)\",\"balance\":\"\(Self.escape(group.balance.description))\","
            + "\"endpoints\":[\(endpoints.joined(separator: ","))]}"
    }

    /// One listener: `{"address":"0.0.0.0:8443","bound":"0.0.0.0:8443","scheme":"https","certificates":[{"names":[..],"file":..,"not_after":..}]}`
    /// (`bound` is the real address when the configured port is 0; `certificates` empty for plaintext).
    static func render(listener status: ListenerStatus) -> String {
        let bound = status.bound.flatMap { address in address.ipAddress.map { ($0, address.port ?? 0) } }.map {
            "\"" + HostPort(host: $0.0, port: $0.1).description + "\""
        }
        let certificates = status.certificates.map { certificate in
            "{\"names\":[\(certificate.names.map { "\"\(Self.escape($0))\"" }.joined(separator: ","))],\"file\":\"\(Self.escape(certificate.file))\","
                + "\"not_after\":\(certificate.notAfter)}"
        }
        return "{\"address\":\"\(status.listener.address)\",\"bound\":\(bound ?? "null"),\"scheme\":\"\(status.listener.scheme.rawValue)\","
            + "\"certificates\":[\(certificates.joined(separator: ","))]}"
    }

    /// A string for a JSON string literal (group names and hash keys come from the config file).
    static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
