import NIOCore
import NIOHTTP1
import SluiceCore
import SluiceHTTP2
import Testing

@testable import SluiceProxy

@Suite("h2c prior-knowledge detection")
struct HTTP2ProtocolDetectorTests {
    static let preface = ProtocolDetectionHandler.StateMachine.preface

    /// The whole preface in one read is HTTP/2.
    @Test func wholePrefaceIsHTTP2() {
        var machine = ProtocolDetectionHandler.StateMachine()
        #expect(machine.bytesReceived(ByteBuffer(bytes: Self.preface + [0, 0, 0])) == .http2)
    }

    /// The preface split at every possible point, and byte by byte, is still HTTP/2, decided only
    /// when its last byte arrives.
    @Test func splitPrefaceIsHTTP2() {
        for split in 1..<Self.preface.count {
            var machine = ProtocolDetectionHandler.StateMachine()
            #expect(machine.bytesReceived(ByteBuffer(bytes: Self.preface[..<split])) == .needMoreBytes)
            #expect(machine.bytesReceived(ByteBuffer(bytes: Self.preface[split...])) == .http2)
        }
        var machine = ProtocolDetectionHandler.StateMachine()
        for (index, byte) in Self.preface.enumerated() {
            let decision = machine.bytesReceived(ByteBuffer(bytes: [byte]))
            #expect(decision == (index == Self.preface.count - 1 ? .http2 : .needMoreBytes))
        }
        #expect(!machine.isUndecided)
    }

    /// HTTP/1 is decided on the first byte unless it is `P`; `POST`, `PUT` and `PATCH` on their second.
    @Test func http1IsDecidedAsEarlyAsPossible() {
        for method in ["GET", "HEAD", "DELETE", "OPTIONS"] {
            var machine = ProtocolDetectionHandler.StateMachine()
            #expect(machine.bytesReceived(ByteBuffer(string: String(method.prefix(1)))) == .http1)
        }
        for method in ["POST /", "PUT /", "PATCH /"] {
            var machine = ProtocolDetectionHandler.StateMachine()
            #expect(machine.bytesReceived(ByteBuffer(string: "P")) == .needMoreBytes)
            #expect(machine.bytesReceived(ByteBuffer(string: String(method.dropFirst()))) == .http1)
        }
        var machine = ProtocolDetectionHandler.StateMachine()
        #expect(machine.bytesReceived(ByteBuffer(string: "PRI * HTTP/1.1\r\n")) == .http1)
        // Once decided, later bytes do not matter.
        #expect(machine.bytesReceived(ByteBuffer(bytes: Self.preface)) == .http1)
    }
}

@Suite("HTTP/2 request and response translation")
struct HTTP2RequestTranslationTests {
    static let limits = RequestRules.Limits(maxHeaderBytes: 8192, maxBodyBytes: nil)

    static func translate(_ head: HTTP2RequestHead, endStream: Bool = true) -> Result<HTTP2RequestTranslation.Translated, HTTP2RequestTranslation.Rejection> {
        HTTP2RequestTranslation.translate(head, endStream: endStream, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "app:3000", limits: Self.limits)
    }

    static func get(_ headers: [(String, String)] = [], method: String = "GET", authority: String? = "example.com", path: String? = "/p?q=1") -> HTTP2RequestHead {
        HTTP2RequestHead(method: method, scheme: "http", authority: authority, path: path, headers: headers.map { HTTP2HeaderField(name: $0.0, value: $0.1) })
    }

    /// Pseudo-headers become the request line and Host; the proxy headers are added; cookies are joined.
    @Test func pseudoHeadersBecomeRequestLineAndHost() throws {
        let translated = try Self.translate(Self.get([("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")])).get()
        let head = translated.head
        #expect(head.method == .GET)
        #expect(head.uri == "/p?q=1")
        #expect(head.version == .http1_1)
        #expect(head.headers["host"] == ["example.com"])
        #expect(head.headers["cookie"] == ["a=1; b=2"])
        #expect(head.headers["accept"] == ["*/*"])
        #expect(head.headers["x-forwarded-for"] == ["10.0.0.1"])
        #expect(head.headers["x-forwarded-host"] == ["example.com"])
        #expect(head.headers["via"] == ["2 sluice"])  // received over HTTP/2 (RFC 9110 §7.6.3)
        #expect(!head.headers.contains(name: "content-length"))
        #expect(!head.headers.contains(name: "transfer-encoding"))
        #expect(translated.expectsContinue == false)
    }

    /// RFC 9113 §8.3.1: userinfo in `:authority` makes the request malformed.
    @Test func userinfoInAuthorityIsMalformed() {
        #expect(Self.translate(Self.get(authority: "user:pw@example.com")) == .failure(.malformed("userinfo in :authority")))
    }

    /// `te: trailers` goes to an HTTP/2 (gRPC) upstream only, after the proxy's own header rewriting.
    @Test func teTrailersIsKeptForHTTP2UpstreamsOnly() throws {
        let head = Self.get([("te", "trailers"), ("content-type", "application/grpc")], method: "POST", path: "/svc/Method")
        let http1 = try Self.translate(head).get().head
        #expect(!http1.headers.contains(name: "te"))
        let http2 = try HTTP2RequestTranslation.translate(
            head, endStream: true, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "app:3000", limits: Self.limits, upstreamIsHTTP2: true
        ).get().head
        #expect(http2.headers["te"] == ["trailers"])
        #expect(http2.headers["content-type"] == ["application/grpc"])
    }

    /// A request that announces trailers goes chunked to an HTTP/1.1 upstream even with a Content-Length,
    /// since HTTP/1.1 carries trailers only in the chunked coding; trailers lose hop-by-hop fields.
    @Test func announcedTrailersMakeTheHTTP1RequestChunked() throws {
        let head = Self.get([("content-length", "3"), ("trailer", "x-checksum")], method: "POST")
        let translated = try Self.translate(head, endStream: false).get().head
        #expect(!translated.headers.contains(name: "content-length"))
        #expect(translated.headers["transfer-encoding"] == ["chunked"])
        let plain = try Self.translate(Self.get([("content-length", "3")], method: "POST"), endStream: false).get().head
        #expect(plain.headers["content-length"] == ["3"])
        #expect(!plain.headers.contains(name: "transfer-encoding"))
        let trailers = HTTP2RequestTranslation.trailerHeaders([
            HTTP2HeaderField(name: "x-checksum", value: "abc"), HTTP2HeaderField(name: "connection", value: "close"),
            HTTP2HeaderField(name: "te", value: "trailers"),
        ])
        #expect(trailers.map { "\($0.name): \($0.value)" } == ["x-checksum: abc"])
    }

    /// An HTTP/1-shaped head becomes an HTTP/2 request for an h2c upstream: Host is `:authority`, the
    /// target is `:path`, connection-specific fields go, `te: trailers` stays.
    @Test func http1HeadBecomesAnHTTP2RequestForH2CUpstreams() {
        var headers = HTTPHeaders([("Host", "app.example:8080"), ("Content-Type", "application/grpc"), ("Connection", "keep-alive")])
        headers.add(name: "Transfer-Encoding", value: "chunked")
        headers.add(name: "TE", value: "trailers")
        headers.add(name: "Keep-Alive", value: "timeout=5")
        let head = UpstreamHTTP2Stream.translate(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/svc/M?x=1", headers: headers), scheme: .http)
        #expect(head.method == "POST")
        #expect(head.scheme == "http")
        #expect(head.authority == "app.example:8080")
        #expect(head.path == "/svc/M?x=1")
        #expect(head.headers == [HTTP2HeaderField(name: "content-type", value: "application/grpc"), HTTP2HeaderField(name: "te", value: "trailers")])
    }

    /// Without `:authority` the `host` field is used; with neither the request is a 400.
    @Test func hostFieldWithoutAuthority() throws {
        let translated = try Self.translate(Self.get([("host", "h.example")], authority: nil)).get()
        #expect(translated.head.headers["host"] == ["h.example"])
        #expect(Self.translate(Self.get(authority: nil)) == .failure(.refused(.badRequest("missing Host header"))))
        // A host field naming another authority than :authority.
        guard case .failure(.refused(let error)) = Self.translate(Self.get([("host", "other.example")])) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(error.status == 400)
        // The same authority is fine (and not duplicated).
        #expect(try Self.translate(Self.get([("host", "EXAMPLE.com")])).get().head.headers["host"] == ["example.com"])
    }

    /// Connection-specific fields and `te` other than `trailers` make the request malformed.
    @Test func connectionSpecificFieldsAreMalformed() throws {
        for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"] {
            guard case .failure(.malformed) = Self.translate(Self.get([(name, "x")])) else {
                Issue.record("\(name) was not rejected")
                continue
            }
        }
        guard case .failure(.malformed) = Self.translate(Self.get([("te", "gzip")])) else {
            Issue.record("te: gzip was not rejected")
            return
        }
        let trailers = try Self.translate(Self.get([("te", "trailers")])).get()
        #expect(!trailers.head.headers.contains(name: "te"))
    }

    /// CONNECT (and extended CONNECT) is refused with 405, as on HTTP/1; a too large head with 431.
    @Test func requestRulesApply() {
        #expect(Self.translate(Self.get(method: "CONNECT", path: nil)) == .failure(.refused(.connectRefused)))
        let big = Self.get([("x-big", String(repeating: "a", count: 9000))])
        #expect(Self.translate(big) == .failure(.refused(.headersTooLarge(limit: 8192))))
        let bodyLimit = HTTP2RequestTranslation.translate(
            Self.get([("content-length", "100")], method: "POST"), endStream: false, clientAddress: nil, scheme: .http, upstreamAuthority: "a",
            limits: .init(maxHeaderBytes: 8192, maxBodyBytes: 10)
        )
        #expect(bodyLimit == .failure(.refused(.bodyTooLarge(limit: 10))))
    }

    /// HTTP/1 framing: a body without a length goes chunked; a POST without a body declares 0;
    /// a declared length is kept; `expect: 100-continue` is answered by the proxy and removed.
    @Test func framingForHTTP1() throws {
        let chunked = try Self.translate(Self.get(method: "POST"), endStream: false).get()
        #expect(chunked.head.headers["transfer-encoding"] == ["chunked"])
        let empty = try Self.translate(Self.get(method: "POST"), endStream: true).get()
        #expect(empty.head.headers["content-length"] == ["0"])
        let sized = try Self.translate(Self.get([("content-length", "5")], method: "PUT"), endStream: false).get()
        #expect(sized.head.headers["content-length"] == ["5"])
        #expect(!sized.head.headers.contains(name: "transfer-encoding"))
        let expecting = try Self.translate(Self.get([("content-length", "5"), ("expect", "100-continue")], method: "PUT"), endStream: false).get()
        #expect(expecting.expectsContinue)
        #expect(!expecting.head.headers.contains(name: "expect"))
    }

    /// Response fields lose the hop-by-hop headers and gain Via (naming the protocol the response was
    /// received with); trailers lose hop-by-hop fields.
    @Test func responseFields() {
        let headers = HTTPHeaders([("Content-Type", "text/plain"), ("Connection", "keep-alive, x-private"), ("Keep-Alive", "timeout=5"), ("X-Private", "1"), ("Set-Cookie", "a=1")])
        let fields = HTTP2RequestTranslation.responseFields(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))
        #expect(fields.map(\.name) == ["Content-Type", "Set-Cookie", "via"])
        #expect(fields.last?.value == "1.1 sluice")
        let fromHTTP2 = HTTP2RequestTranslation.responseFields(HTTPResponseHead(version: HTTPVersion(major: 2, minor: 0), status: .ok))
        #expect(fromHTTP2 == [HTTP2HeaderField(name: "via", value: "2 sluice")])
        let trailers = HTTP2RequestTranslation.trailerFields(HTTPHeaders([("grpc-status", "0"), ("Connection", "close")]))
        #expect(trailers == [HTTP2HeaderField(name: "grpc-status", value: "0")])
    }
}

@Suite("HTTP/2 stream forwarding state machine")
struct HTTP2StreamForwarderStateMachineTests {
    /// A GET: leased, forwarded, finished with a reusable upstream connection, then closed.
    @Test func getLifecycle() {
        var machine = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false))
        #expect(machine.responseHead() == .send)
        #expect(machine.responseEnd() == .finish(reusable: true))
        #expect(machine.streamClosed() == .none)
        #expect(machine.isClosed)
    }

    /// Body bytes queue while leasing and are forwarded after; `100 Continue` is sent only if the
    /// client still waits for it; an unfinished request makes the connection not reusable.
    @Test func bodyQueuesThenForwards() {
        var machine = HTTP2StreamForwarder.StateMachine(requestEnded: false, expectsContinue: true, maxBodyBytes: nil)
        #expect(machine.dataReceived(bytes: 10) == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: true))
        #expect(machine.dataReceived(bytes: 10) == .forward)
        #expect(machine.responseHead() == .send)
        #expect(machine.responseEnd() == .finish(reusable: false))
        #expect(machine.dataReceived(bytes: 10) == .discard)
        #expect(machine.endReceived() == .none)

        var ended = HTTP2StreamForwarder.StateMachine(requestEnded: false, expectsContinue: true, maxBodyBytes: nil)
        #expect(ended.endReceived() == .queueEnd)
        #expect(ended.upstreamConnected() == .startForwarding(sendContinue: false))
    }

    /// A connect failure is retried while the retry policy allows, then answered locally.
    @Test func connectFailureRetriesWhileThePolicyAllowsThenResponds() {
        var machine = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        #expect(machine.upstreamConnectFailed(retry: true) == .retry)
        #expect(machine.upstreamConnectFailed(retry: false) == .fail(.respond(releaseUpstream: false)))
        #expect(machine.upstreamConnected() == .decline)
    }

    /// Upstream failures: before the response, a failure the retry policy allows is retried (and a
    /// `100 Continue` is not sent twice), anything else answered (502/504); after the response
    /// began, the stream is reset whatever the policy says.
    @Test func upstreamFailures() {
        var retried = HTTP2StreamForwarder.StateMachine(requestEnded: false, expectsContinue: true, maxBodyBytes: nil)
        #expect(retried.upstreamConnected() == .startForwarding(sendContinue: true))
        #expect(retried.upstreamFailed(retry: true) == .retry)
        #expect(retried.upstreamConnected() == .startForwarding(sendContinue: false))
        #expect(retried.upstreamFailed(retry: false) == .fail(.respond(releaseUpstream: true)))

        var refused = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        _ = refused.upstreamConnected()
        #expect(refused.upstreamFailed(retry: false) == .fail(.respond(releaseUpstream: true)))

        var midResponse = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        _ = midResponse.upstreamConnected()
        _ = midResponse.responseHead()
        #expect(midResponse.upstreamFailed(retry: true) == .fail(.reset(releaseUpstream: true)))
        #expect(midResponse.dataReceived(bytes: 1) == .discard)
    }

    /// The client resets: a forwarding stream releases its upstream; a leasing one declines the
    /// connection when it arrives.
    @Test func clientReset() {
        var forwarding = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        _ = forwarding.upstreamConnected()
        #expect(forwarding.streamClosed() == .releaseUpstream)
        #expect(forwarding.upstreamFailed(retry: true) == .none)

        var leasing = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        #expect(leasing.streamClosed() == .none)
        #expect(leasing.upstreamConnected() == .decline)
    }

    /// Issue 14 item 6: interim (1xx) heads are forwarded and do not start the response: a failure
    /// after them (the upstream side's cap) is answered with a status (502), not a reset; after the
    /// final head they are ignored.
    @Test func interimResponsesAreForwardedAndDoNotStartTheResponse() {
        var machine = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        #expect(machine.interimResponse() == .none)  // no upstream yet
        _ = machine.upstreamConnected()
        #expect(machine.interimResponse() == .forward)
        #expect(machine.interimResponse() == .forward)
        #expect(!machine.responseStarted)
        #expect(machine.upstreamFailed(retry: false) == .fail(.respond(releaseUpstream: true)))

        var hinted = HTTP2StreamForwarder.StateMachine(requestEnded: true, expectsContinue: false, maxBodyBytes: nil)
        _ = hinted.upstreamConnected()
        #expect(hinted.interimResponse() == .forward)
        #expect(hinted.responseHead() == .send)
        #expect(hinted.interimResponse() == .none)
        #expect(hinted.responseEnd() == .finish(reusable: true))
    }

    /// A body over the limit is answered with 413 before the response, and discarded after.
    @Test func bodyLimit() {
        var machine = HTTP2StreamForwarder.StateMachine(requestEnded: false, expectsContinue: false, maxBodyBytes: 15)
        #expect(machine.dataReceived(bytes: 10) == .queue)
        #expect(machine.dataReceived(bytes: 10) == .fail(.respond(releaseUpstream: false), limit: 15))
        #expect(machine.dataReceived(bytes: 10) == .discard)
    }
}
