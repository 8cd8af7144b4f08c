import SluiceCore
import Testing

@Suite struct ProxyErrorTests {
    struct Mapping: Sendable, CustomTestStringConvertible {
        var name: String
        var error: ProxyError
        var status: Int?
        var source: ProxyError.Source
        var closesConnection: Bool
        var detail: String
        var testDescription: String { self.name }
    }

    static let mappings: [Mapping] = [
        Mapping(name: "badRequest", error: .badRequest("missing Host header"), status: 400, source: .downstream, closesConnection: true, detail: "missing Host header"),
        Mapping(name: "headersTooLarge", error: .headersTooLarge(limit: 32768), status: 431, source: .downstream, closesConnection: true, detail: "request header fields exceed 32768 bytes"),
        Mapping(name: "bodyTooLarge", error: .bodyTooLarge(limit: 10), status: 413, source: .downstream, closesConnection: true, detail: "request body exceeds 10 bytes"),
        Mapping(name: "connectRefused", error: .connectRefused, status: 405, source: .downstream, closesConnection: true, detail: "CONNECT is not supported: Sluice is a reverse proxy"),
        Mapping(
            name: "foreignAbsoluteTarget", error: .foreignAbsoluteTarget, status: 403, source: .downstream, closesConnection: true,
            detail: "absolute-form target for another host: Sluice is not a forward proxy"),
        Mapping(name: "expectationFailed", error: .expectationFailed, status: 417, source: .downstream, closesConnection: true, detail: "only Expect: 100-continue is supported"),
        Mapping(
            name: "requestTimeout", error: .requestTimeout("request body stalled for 30s"), status: 408, source: .downstream, closesConnection: true,
            detail: "request body stalled for 30s"),
        Mapping(
            name: "noRoute", error: .noRoute(host: "api.example.com", path: "/v2/x"), status: 404, source: .downstream, closesConnection: false,
            detail: "no route for host api.example.com path /v2/x"),
        Mapping(
            name: "upstreamConnectFailed", error: .upstreamConnectFailed("connection refused"), status: 502, source: .upstream, closesConnection: false,
            detail: "upstream connect failed: connection refused"),
        Mapping(
            name: "upstreamResetBeforeResponse", error: .upstreamResetBeforeResponse("reset"), status: 502, source: .upstream, closesConnection: false,
            detail: "upstream closed before responding: reset"),
        Mapping(
            name: "upstreamRefusedStream", error: .upstreamRefusedStream("REFUSED_STREAM"), status: 502, source: .upstream, closesConnection: false,
            detail: "upstream refused the stream: REFUSED_STREAM"),
        Mapping(name: "upstreamTimeout", error: .upstreamTimeout, status: 504, source: .upstream, closesConnection: false, detail: "upstream did not send a response head in time"),
        Mapping(
            name: "upstreamFailedMidResponse", error: .upstreamFailedMidResponse("eof"), status: nil, source: .upstream, closesConnection: true,
            detail: "upstream failed mid-response: eof"),
        Mapping(
            name: "upstreamBadResponse", error: .upstreamBadResponse("bad chunk"), status: 502, source: .upstream, closesConnection: false,
            detail: "upstream sent an invalid response: bad chunk"),
    ]

    /// Every error maps to its status (none once the response began), its source, whether the
    /// connection closes, its detail, a body of the detail and a newline, and a description naming the source.
    @Test(arguments: mappings)
    func errorMapsToItsStatusSourceAndClose(_ mapping: Mapping) {
        #expect(mapping.error.status == mapping.status)
        #expect(mapping.error.source == mapping.source)
        #expect(mapping.error.closesConnection == mapping.closesConnection)
        #expect(mapping.error.detail == mapping.detail)
        #expect(mapping.error.responseBody == mapping.detail + "\n")
        #expect(mapping.error.description == "\(mapping.source.rawValue) error: \(mapping.detail)")
    }

    /// What each error says about a retry, as pingora's `RetryType`: a failed connect always (nothing
    /// was sent), a refused stream if the body can be replayed (not processed), a reset before the
    /// response only for idempotent requests (it may have reached the app), everything else never.
    static let retryability: [String: ProxyError.Retryability] = [
        "badRequest": .never, "headersTooLarge": .never, "bodyTooLarge": .never, "connectRefused": .never,
        "foreignAbsoluteTarget": .never, "expectationFailed": .never, "requestTimeout": .never, "noRoute": .never,
        "upstreamConnectFailed": .always,
        "upstreamResetBeforeResponse": .ifIdempotent,
        "upstreamRefusedStream": .ifReplayable,
        "upstreamTimeout": .never, "upstreamFailedMidResponse": .never, "upstreamBadResponse": .never,
    ]

    /// Every error says whether it may be retried (and the table names every error).
    @Test(arguments: mappings)
    func everyErrorSaysWhetherItMayBeRetried(_ mapping: Mapping) {
        #expect(mapping.error.retry == Self.retryability[mapping.name])
    }

    /// The retry table has a row for every error and no other.
    @Test func theRetryTableCoversEveryError() {
        #expect(Set(Self.retryability.keys) == Set(Self.mappings.map(\.name)))
    }

    /// Errors are equal when kind and detail are equal, and differ otherwise.
    @Test func errorsAreEqualByKindAndDetail() {
        #expect(ProxyError.badRequest("a") == .badRequest("a"))
        #expect(ProxyError.badRequest("a") != .badRequest("b"))
        #expect(ProxyError.headersTooLarge(limit: 1) != .headersTooLarge(limit: 2))
        #expect(ProxyError.upstreamConnectFailed("x") != .upstreamResetBeforeResponse("x"))
        #expect(Set(Self.mappings.map(\.error)).count == Self.mappings.count)
    }

    /// Sources have stable names for logs and metrics.
    @Test func sourcesHaveStableNames() {
        #expect([ProxyError.Source.downstream, .upstream, .internal].map(\.rawValue) == ["downstream", "upstream", "internal"])
    }
}
