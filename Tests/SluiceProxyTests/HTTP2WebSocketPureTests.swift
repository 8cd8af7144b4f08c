import NIOCore
import NIOHTTP1
import SluiceCore
import SluiceHTTP2
import Testing

@testable import SluiceProxy

@Suite("HTTP/2 WebSocket (RFC 8441) translation")
struct HTTP2WebSocketTranslationTests {
    static let limits = RequestRules.Limits(maxHeaderBytes: 8192, maxBodyBytes: nil)

    static func connect(
        _ headers: [(String, String)] = [("sec-websocket-version", "13")], method: String = "CONNECT", protocol extendedProtocol: String? = "websocket",
        path: String? = "/chat?room=1"
    ) -> HTTP2RequestHead {
        HTTP2RequestHead(
            method: method, scheme: "http", authority: "example.com", path: path, extendedProtocol: extendedProtocol,
            headers: headers.map { HTTP2HeaderField(name: $0.0, value: $0.1) }
        )
    }

    static func translate(
        _ head: HTTP2RequestHead, upstreamIsHTTP2: Bool = false, key: String = "AAAAAAAAAAAAAAAAAAAAAA=="
    ) -> (Result<HTTP2RequestTranslation.Translated, HTTP2RequestTranslation.Rejection>, keysMade: Int) {
        var made = 0
        let result = HTTP2RequestTranslation.translateExtendedConnect(
            head, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "app:3000", limits: Self.limits, upstreamIsHTTP2: upstreamIsHTTP2,
            makeKey: {
                made += 1
                return key
            }
        )
        return (result, made)
    }

    /// RFC 8441 §5 with RFC 6455 §4.1: the extended CONNECT becomes `GET :path` with `Host` from
    /// `:authority`, `Connection: upgrade`, `Upgrade: websocket`, Sluice's own key, the client's version,
    /// subprotocols, extensions and other fields, and the proxy fields; the client's key is replaced.
    @Test func extendedConnectBecomesAnHTTP1Upgrade() throws {
        let (result, keys) = Self.translate(
            Self.connect([
                ("sec-websocket-version", "13"), ("sec-websocket-protocol", "chat, superchat"), ("sec-websocket-extensions", "permessage-deflate"),
                ("origin", "http://example.com"), ("cookie", "a=1"), ("cookie", "b=2"), ("sec-websocket-key", "client-sent-this"),
                ("content-length", "0"),
            ])
        )
        let translated = try result.get()
        let head = translated.head
        #expect(keys == 1)
        #expect(translated.webSocketKey == "AAAAAAAAAAAAAAAAAAAAAA==")
        #expect(!translated.expectsContinue)
        #expect(head.method == .GET)
        #expect(head.uri == "/chat?room=1")
        #expect(head.version == .http1_1)
        #expect(head.headers["host"] == ["example.com"])
        #expect(head.headers["connection"] == ["upgrade"])
        #expect(head.headers["upgrade"] == ["websocket"])
        #expect(head.headers["sec-websocket-key"] == ["AAAAAAAAAAAAAAAAAAAAAA=="])
        #expect(head.headers["sec-websocket-version"] == ["13"])
        #expect(head.headers["sec-websocket-protocol"] == ["chat, superchat"])
        #expect(head.headers["sec-websocket-extensions"] == ["permessage-deflate"])
        #expect(head.headers["origin"] == ["http://example.com"])
        #expect(head.headers["cookie"] == ["a=1; b=2"])
        #expect(head.headers["x-forwarded-for"] == ["10.0.0.1"])
        #expect(head.headers["x-forwarded-proto"] == ["http"])
        #expect(head.headers["x-forwarded-host"] == ["example.com"])
        #expect(head.headers["via"] == ["2 sluice"])
        #expect(!head.headers.contains(name: "content-length"))
        #expect(!head.headers.contains(name: "transfer-encoding"))
    }

    /// A client that names no version gets 13, the one RFC 6455 defines; `:protocol` is matched
    /// case-insensitively (it is a token).
    @Test func versionDefaultsTo13() throws {
        let head = try Self.translate(Self.connect([], protocol: "WebSocket")).0.get().head
        #expect(head.headers["sec-websocket-version"] == ["13"])
        let eight = try Self.translate(Self.connect([("sec-websocket-version", "8")])).0.get().head
        #expect(eight.headers["sec-websocket-version"] == ["8"], "passed on: the upstream answers 426 itself")
    }

    /// Another `:protocol`, or a WebSocket to an HTTP/2 upstream, is a 501 and no key is made.
    @Test func otherProtocolsAndHTTP2UpstreamsAreNotImplemented() {
        let (other, otherKeys) = Self.translate(Self.connect(protocol: "connect-udp"))
        guard case .failure(.notImplemented(let reason)) = other else { Issue.record("\(other)"); return }
        #expect(reason.contains("connect-udp"))
        #expect(otherKeys == 0)
        let (h2, h2Keys) = Self.translate(Self.connect(), upstreamIsHTTP2: true)
        guard case .failure(.notImplemented) = h2 else { Issue.record("\(h2)"); return }
        #expect(h2Keys == 0)
    }

    /// The checks of every request still apply: `:protocol` outside CONNECT (libnghttp2 stops it
    /// first) and connection-specific fields are malformed; a `host` that differs from `:authority`
    /// is a 400; a plain CONNECT (no `:protocol`) through the ordinary translation is still a 405.
    @Test func requestChecksStillApply() {
        #expect(Self.translate(Self.connect(method: "GET")).0 == .failure(.malformed(":protocol outside an extended CONNECT")))
        #expect(Self.translate(Self.connect(path: nil)).0 == .failure(.malformed(":protocol outside an extended CONNECT")))
        #expect(Self.translate(Self.connect([("upgrade", "websocket")])).0 == .failure(.malformed("connection-specific header field upgrade")))
        #expect(Self.translate(Self.connect([("host", "other.example")])).0 == .failure(.refused(.badRequest("host header differs from :authority"))))
        let plain = HTTP2RequestTranslation.translate(
            HTTP2RequestHead(method: "CONNECT", authority: "example.com:443"), endStream: false, clientAddress: nil, scheme: .http, upstreamAuthority: "app",
            limits: Self.limits
        )
        #expect(plain == .failure(.refused(.connectRefused)))
    }

    /// RFC 6455 §1.3's example: the key "dGhlIHNhbXBsZSBub25jZQ==" is accepted with "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
    @Test func acceptOfTheRFCExampleKey() {
        #expect(WebSocketHandshake.accept(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    static func response(
        _ status: HTTPResponseStatus = .switchingProtocols, accept: [String] = ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="], upgrade: String? = "websocket"
    ) -> HTTPResponseHead {
        var headers: HTTPHeaders = ["connection": "Upgrade", "sec-websocket-protocol": "chat", "sec-websocket-extensions": "permessage-deflate"]
        if let upgrade { headers.add(name: "upgrade", value: upgrade) }
        for value in accept { headers.add(name: "sec-websocket-accept", value: value) }
        headers.add(name: "set-cookie", value: "s=1")
        return HTTPResponseHead(version: .http1_1, status: status, headers: headers)
    }

    /// A valid 101 becomes the 200's fields: subprotocol, extensions and other end-to-end fields, no
    /// connection-specific fields, no `sec-websocket-accept`. A wrong, doubled or missing accept, a
    /// missing `Upgrade: websocket`, or a 2xx (the upgrade ignored) is invalid (502); other statuses
    /// are refusals, passed on.
    @Test func upgradeAnswersAreChecked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        guard case .accepted(let fields) = HTTP2RequestTranslation.webSocketAnswer(Self.response(), key: key) else {
            Issue.record("a valid 101 is accepted")
            return
        }
        let names = fields.map { $0.name.lowercased() }
        #expect(fields.contains(HTTP2HeaderField(name: "sec-websocket-protocol", value: "chat")))
        #expect(fields.contains(HTTP2HeaderField(name: "sec-websocket-extensions", value: "permessage-deflate")))
        #expect(fields.contains(HTTP2HeaderField(name: "set-cookie", value: "s=1")))
        #expect(!names.contains("sec-websocket-accept"))
        #expect(!names.contains("connection"))
        #expect(!names.contains("upgrade"))
        func isInvalid(_ answer: HTTP2RequestTranslation.WebSocketAnswer) -> Bool {
            if case .invalid = answer { true } else { false }
        }
        #expect(HTTP2RequestTranslation.webSocketAnswer(Self.response(upgrade: "WebSocket"), key: key) == .accepted(fields))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(), key: "AAAAAAAAAAAAAAAAAAAAAA==")))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(accept: ["nope"]), key: key)))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(accept: []), key: key)))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(accept: ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]), key: key)))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(upgrade: nil), key: key)))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(upgrade: "h2c"), key: key)))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(.ok), key: key)))
        #expect(isInvalid(HTTP2RequestTranslation.webSocketAnswer(Self.response(.noContent), key: key)))
        #expect(HTTP2RequestTranslation.webSocketAnswer(Self.response(.notFound), key: key) == .refused)
        #expect(HTTP2RequestTranslation.webSocketAnswer(Self.response(.upgradeRequired), key: key) == .refused)
        #expect(HTTP2RequestTranslation.webSocketAnswer(Self.response(.found), key: key) == .refused)
    }
}

/// The forwarding machine of a WebSocket stream (`opensTunnel`), every event in every state. The
/// events whose misuse is a `preconditionFailure` (a second connection for a stream that has one; a
/// `101` for a stream that asked for no upgrade, or after its final head) are left out.
@Suite("HTTP/2 WebSocket tunnel forwarding state machine")
struct HTTP2StreamForwarderTunnelStateMachineTests {
    typealias Machine = HTTP2StreamForwarder.StateMachine

    /// Where a WebSocket stream can be.
    enum Phase: CaseIterable {
        /// Waiting for an upstream connection.
        case leasing
        /// The upgrade head went out; no answer yet.
        case awaitingUpgrade
        /// The upstream answered with something other than a 101 (an ordinary response).
        case refused
        /// The tunnel is open.
        case tunnel
        /// The tunnel is open and the upstream ended its side.
        case upstreamEnded
        /// The tunnel broke (upstream failure).
        case done
        /// The stream closed.
        case closed
    }

    /// A machine in `phase` (the body limit of 10 bytes shows tunnel bytes count against none).
    static func machine(in phase: Phase, requestEnded: Bool = false) -> Machine {
        var machine = Machine(requestEnded: requestEnded, expectsContinue: true, maxBodyBytes: 10, opensTunnel: true)
        if phase == .leasing { return machine }
        _ = machine.upstreamConnected()
        switch phase {
        case .leasing, .awaitingUpgrade: break
        case .refused: _ = machine.responseHead()
        case .tunnel: _ = machine.responseHead(opensTunnel: true)
        case .upstreamEnded:
            _ = machine.responseHead(opensTunnel: true)
            _ = machine.responseEnd()
        case .done:
            _ = machine.responseHead(opensTunnel: true)
            _ = machine.upstreamFailed(retry: true)
        case .closed:
            _ = machine.responseHead(opensTunnel: true)
            _ = machine.streamClosed()
        }
        return machine
    }

    /// Client DATA queues until the 101 (no body limit), flows in the tunnel, and is dropped after a
    /// refusal or the end.
    @Test func dataReceivedInEveryState() {
        let expected: [Phase: Machine.DataReceivedAction] = [
            .leasing: .queue, .awaitingUpgrade: .queue, .refused: .discard, .tunnel: .forward, .upstreamEnded: .forward, .done: .discard, .closed: .discard,
        ]
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.dataReceived(bytes: 100) == expected[phase], "\(phase)")
        }
    }

    /// Client END_STREAM waits for the 101, half-closes the upstream in the tunnel, and means nothing after.
    @Test func endReceivedInEveryState() {
        let expected: [Phase: Machine.RequestEndedAction] = [
            .leasing: .queueEnd, .awaitingUpgrade: .queueEnd, .refused: .none, .tunnel: .sendEnd, .upstreamEnded: .sendEnd, .done: .none, .closed: .none,
        ]
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.endReceived() == expected[phase], "\(phase)")
            #expect(machine.requestEnded)
        }
    }

    /// A connection sends the upgrade head alone (never `100 Continue`); a stream that ended declines it.
    @Test func upstreamConnectedInEveryState() {
        let expected: [Phase: Machine.UpstreamConnectedAction] = [.leasing: .sendUpgrade, .done: .decline, .closed: .decline]
        for phase in Phase.allCases where expected[phase] != nil {
            var machine = Self.machine(in: phase)
            #expect(machine.upstreamConnected() == expected[phase], "\(phase)")
        }
        var ended = Self.machine(in: .leasing, requestEnded: true)
        #expect(ended.upstreamConnected() == .sendUpgrade)
    }

    /// A failed connect is retried (or answered) while leasing only.
    @Test func upstreamConnectFailedInEveryState() {
        for phase in Phase.allCases {
            var retrying = Self.machine(in: phase)
            #expect(retrying.upstreamConnectFailed(retry: true) == (phase == .leasing ? .retry : .none), "\(phase)")
            var failing = Self.machine(in: phase)
            #expect(failing.upstreamConnectFailed(retry: false) == (phase == .leasing ? .fail(.respond(releaseUpstream: false)) : .none), "\(phase)")
        }
        var retried = Self.machine(in: .leasing)
        _ = retried.upstreamConnectFailed(retry: true)
        #expect(retried.upstreamConnected() == .sendUpgrade)
    }

    /// Interim heads are passed on only while the upgrade's answer is awaited.
    @Test func interimResponseInEveryState() {
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.interimResponse() == (phase == .awaitingUpgrade ? .forward : .none), "\(phase)")
        }
    }

    /// A valid 101 opens the tunnel (with the client's queued end, if any); another answer is an
    /// ordinary response that drops what the client sent; nothing after.
    @Test func responseHeadInEveryState() {
        let expected: [Phase: Machine.ResponseHeadAction] = [
            .leasing: .none, .awaitingUpgrade: .sendDroppingQueued, .refused: .sendDroppingQueued, .tunnel: .none, .upstreamEnded: .none, .done: .none,
            .closed: .none,
        ]
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.responseHead() == expected[phase], "\(phase)")
        }
        for phase in Phase.allCases where phase != .refused && phase != .awaitingUpgrade {
            var machine = Self.machine(in: phase)
            #expect(machine.responseHead(opensTunnel: true) == .none, "\(phase)")
        }
        var open = Self.machine(in: .awaitingUpgrade)
        #expect(open.responseHead(opensTunnel: true) == .openTunnel(sendEnd: false))
        #expect(open.isTunnel && open.responseStarted)
        var ended = Self.machine(in: .awaitingUpgrade)
        #expect(ended.endReceived() == .queueEnd)
        #expect(ended.responseHead(opensTunnel: true) == .openTunnel(sendEnd: true))
    }

    /// The upstream's end finishes a refusal's response (reusable: the upgrade request had no body) and
    /// ends the tunnel's downstream side once.
    @Test func responseEndInEveryState() {
        let expected: [Phase: Machine.ResponseEndAction] = [
            .leasing: .none, .awaitingUpgrade: .finish(reusable: true), .refused: .finish(reusable: true), .tunnel: .endTunnel, .upstreamEnded: .none,
            .done: .none, .closed: .none,
        ]
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.responseEnd() == expected[phase], "\(phase)")
        }
        var tunnel = Self.machine(in: .tunnel)
        _ = tunnel.responseEnd()
        #expect(tunnel.isTunnel && tunnel.upstreamEnded)
    }

    /// Before the 101 a failure is retried as for any request (or answered, 502); after a refusal's
    /// head it resets the stream; in the tunnel it resets with CANCEL and is never retried, unless the
    /// upstream had ended its side (its connection closing then is no failure: nothing is reset).
    @Test func upstreamFailedInEveryState() {
        let retry: [Phase: Machine.RetryOrFailAction] = [
            .leasing: .none, .awaitingUpgrade: .retry, .refused: .fail(.reset(releaseUpstream: true)), .tunnel: .fail(.resetTunnel),
            .upstreamEnded: .fail(.dropTunnelUpstream), .done: .none, .closed: .none,
        ]
        let noRetry: [Phase: Machine.RetryOrFailAction] = [
            .leasing: .none, .awaitingUpgrade: .fail(.respond(releaseUpstream: true)), .refused: .fail(.reset(releaseUpstream: true)),
            .tunnel: .fail(.resetTunnel), .upstreamEnded: .fail(.dropTunnelUpstream), .done: .none, .closed: .none,
        ]
        for phase in Phase.allCases {
            var retrying = Self.machine(in: phase)
            #expect(retrying.upstreamFailed(retry: true) == retry[phase], "\(phase)")
            var failing = Self.machine(in: phase)
            #expect(failing.upstreamFailed(retry: false) == noRetry[phase], "\(phase)")
        }
        var broken = Self.machine(in: .tunnel)
        _ = broken.upstreamFailed(retry: true)
        #expect(!broken.isTunnel)
        #expect(broken.dataReceived(bytes: 1) == .discard)
        #expect(broken.streamClosed() == .none)
    }

    /// The stream's close ends the tunnel (its upstream connection closes); an exchange still in
    /// progress releases its upstream as a client abort.
    @Test func streamClosedInEveryState() {
        let expected: [Phase: Machine.StreamClosedAction] = [
            .leasing: .none, .awaitingUpgrade: .releaseUpstream, .refused: .releaseUpstream, .tunnel: .closeTunnel, .upstreamEnded: .closeTunnel,
            .done: .none, .closed: .none,
        ]
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.streamClosed() == expected[phase], "\(phase)")
            #expect(machine.isClosed)
            #expect(machine.upstreamConnected() == .decline)
        }
    }

    /// The drain ends an open tunnel once: END_STREAM unless the upstream's EOF sent it; then what
    /// the client sends is dropped and the stream's close has nothing left to release.
    @Test func closeTunnelInEveryState() {
        let expected: [Phase: Machine.CloseTunnelAction] = [
            .leasing: .none, .awaitingUpgrade: .none, .refused: .none, .tunnel: .closeBothSides(sendEndStream: true),
            .upstreamEnded: .closeBothSides(sendEndStream: false), .done: .none, .closed: .none,
        ]
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            #expect(machine.closeTunnel() == expected[phase], "\(phase)")
            #expect(!machine.isTunnel)
        }
        var closed = Self.machine(in: .tunnel)
        _ = closed.closeTunnel()
        #expect(closed.closeTunnel() == .none)
        #expect(closed.dataReceived(bytes: 5) == .discard)
        #expect(closed.endReceived() == .none)
        #expect(closed.responseEnd() == .none)
        #expect(closed.upstreamFailed(retry: false) == .none)
        #expect(closed.streamClosed() == .none)
    }

    /// An ordinary stream is unchanged: it never sends an upgrade, and its body limit applies.
    @Test func ordinaryStreamsOpenNoTunnel() {
        var machine = Machine(requestEnded: false, expectsContinue: false, maxBodyBytes: 10)
        #expect(!machine.opensTunnel)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false))
        #expect(machine.responseHead() == .send)
        #expect(machine.dataReceived(bytes: 100) == .fail(.reset(releaseUpstream: true), limit: 10))
    }
}
