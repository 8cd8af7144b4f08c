import SluiceCore
import Testing

@Suite struct HeaderRulesTests {
    // MARK: - Hop-by-hop

    /// Every hop-by-hop header and every header named in Connection is removed; end-to-end ones stay in order.
    @Test func removesEveryHopByHopHeaderAndThoseNamedInConnection() {
        var headers = TestHeaders([
            "Host: example.com", "Connection: keep-alive, X-Secret, Upgrade", "Keep-Alive: timeout=5",
            "Proxy-Connection: keep-alive", "TE: trailers", "Trailer: Expires", "Upgrade: websocket",
            "Proxy-Authenticate: Basic", "Proxy-Authorization: Basic abc", "X-Secret: 1", "Accept: */*", "x-secret: 2",
            "Content-Length: 5",
        ])
        let result = HeaderRules.removeHopByHop(&headers)
        #expect(!result.chunked)
        #expect(result.connectionTokens == ["keep-alive", "X-Secret", "Upgrade"])
        #expect(headers.lines == ["Host: example.com", "Accept: */*", "Content-Length: 5"])
    }

    /// Each name the rules act on is recognised in any case, and only that name; every
    /// hop-by-hop name of the list is among them.
    @Test func presentNamesRecogniseEachNameInAnyCase() {
        for (name, flag) in HeaderNamesPresent.all {
            #expect(HeaderNamesPresent.flag(forName: name) == flag, "\(name)")
            #expect(HeaderNamesPresent.flag(forName: name.uppercased()) == flag, "\(name)")
            #expect(HeaderNamesPresent.flag(forName: String(name.dropLast()) + "_") == [], "\(name)")
            #expect(HeaderNamesPresent.flag(forName: name + "s") == [], "\(name)")
        }
        for name in HeaderRules.hopByHop {
            #expect(HeaderNamesPresent.hopByHop.contains(HeaderNamesPresent.flag(forName: name)), "\(name)")
        }
        let headers = TestHeaders(["HOST: a", "Via: x", "Accept: */*", "te: trailers"])
        #expect(headers.presentNames() == [.host, .via, .otherHopByHop])
    }

    /// `Connection` naming a forwarding header removes it, and the request is then rewritten as if
    /// the client had never sent it (the names present are looked at again).
    @Test func connectionNamingAForwardingHeaderIsRewrittenAsAbsent() {
        var headers = TestHeaders(["Host: a", "Connection: Via, X-Forwarded-For", "Via: 1.0 other", "X-Forwarded-For: 9.9.9.9"])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "up")
        #expect(headers.lines == ["Host: a", "x-forwarded-for: 10.0.0.1", "x-forwarded-proto: http", "x-forwarded-host: a", "via: 1.1 sluice"])
    }

    /// The hop-by-hop list is the RFC's, lower-cased.
    @Test func hopByHopListIsTheRFCList() {
        #expect(
            HeaderRules.hopByHop == [
                "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                "proxy-authenticate", "proxy-authorization",
            ])
        #expect(HeaderRules.viaValue == "1.1 sluice")
    }

    /// Connection can never strip Content-Length or Host, whatever their case.
    @Test func connectionNeverStripsContentLengthOrHost() {
        var headers = TestHeaders(["Connection: Content-Length, HOST, close", "Content-Length: 5", "Host: a"])
        let result = HeaderRules.removeHopByHop(&headers)
        #expect(result.connectionTokens == ["Content-Length", "HOST", "close"])
        #expect(headers.lines == ["Content-Length: 5", "Host: a"])
    }

    struct Framing: Sendable, CustomTestStringConvertible {
        var lines: [String]
        var chunked: Bool
        var testDescription: String { self.lines.description }
    }

    /// The message counts as chunked exactly when chunked is the last transfer coding, in any case.
    @Test(arguments: [
        Framing(lines: ["Transfer-Encoding: chunked"], chunked: true),
        Framing(lines: ["Transfer-Encoding: Chunked"], chunked: true),
        Framing(lines: ["Transfer-Encoding: gzip, chunked"], chunked: true),
        Framing(lines: ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"], chunked: true),
        Framing(lines: ["Transfer-Encoding: chunked, gzip"], chunked: false),
        Framing(lines: ["Transfer-Encoding: gzip"], chunked: false),
        Framing(lines: ["Content-Length: 3"], chunked: false),
        Framing(lines: [], chunked: false),
    ])
    func chunkedIsDetectedFromTheLastTransferCoding(_ framing: Framing) {
        var headers = TestHeaders(framing.lines)
        #expect(HeaderRules.removeHopByHop(&headers).chunked == framing.chunked)
        #expect(!headers.contains(name: "transfer-encoding"))
    }

    /// A chunked message whose Connection header names Transfer-Encoding is still reported as chunked,
    /// so the framing is re-declared.
    ///
    /// Regression (found by these tests, since fixed): `removeHopByHop` removes the headers named in Connection (skipping only content-length
    /// and host) before it reads Transfer-Encoding, so `Connection: transfer-encoding` makes a chunked
    /// message look unframed and `rewriteRequest`/`rewriteResponse` drop the chunked declaration.
    @Test func chunkedMessageNamingTransferEncodingInConnectionStaysChunked() {
        var headers = TestHeaders(["Host: a", "Connection: transfer-encoding", "Transfer-Encoding: chunked"])
        #expect(HeaderRules.removeHopByHop(&headers).chunked)
        var request = TestHeaders(["Host: a", "Connection: Transfer-Encoding", "Transfer-Encoding: chunked"])
        HeaderRules.rewriteRequest(&request, clientAddress: nil, scheme: .http, upstreamAuthority: "app:80")
        #expect(request.tokens(name: "transfer-encoding") == ["chunked"])
    }

    // MARK: - Requests

    /// A request loses its hop-by-hop headers and gains X-Forwarded-For/-Proto/-Host and Via.
    @Test func requestGetsForwardingHeadersAndLosesHopByHop() {
        var headers = TestHeaders([
            "Host: example.com", "Connection: keep-alive, X-Secret", "Keep-Alive: timeout=5", "X-Secret: 1", "Accept: */*",
        ])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "127.0.0.1:3000")
        #expect(
            headers.lines == [
                "Host: example.com", "Accept: */*", "x-forwarded-for: 10.0.0.1", "x-forwarded-proto: http",
                "x-forwarded-host: example.com", "via: 1.1 sluice",
            ])
    }

    /// A request that arrived on a TLS listener says so in X-Forwarded-Proto; one set by an earlier hop stays.
    @Test func forwardedProtoIsTheListenersScheme() {
        var headers = TestHeaders(["Host: example.com"])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .https, upstreamAuthority: "127.0.0.1:3000")
        #expect(headers.lines == ["Host: example.com", "x-forwarded-for: 10.0.0.1", "x-forwarded-proto: https", "x-forwarded-host: example.com", "via: 1.1 sluice"])
        var behindIngress = TestHeaders(["Host: example.com", "X-Forwarded-Proto: https"])
        HeaderRules.rewriteRequest(&behindIngress, clientAddress: nil, scheme: .http, upstreamAuthority: "127.0.0.1:3000")
        #expect(behindIngress.lines.filter { $0.lowercased().hasPrefix("x-forwarded-proto") } == ["X-Forwarded-Proto: https"])
    }

    /// The client address is appended to an existing X-Forwarded-For list, spread over several lines,
    /// as one field.
    @Test func clientAddressIsAppendedToAnExistingForwardedForList() {
        var headers = TestHeaders(["Host: a", "X-Forwarded-For: 1.1.1.1, 2.2.2.2", "Accept: */*", "X-Forwarded-For: 3.3.3.3"])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "app:80")
        #expect(
            headers.lines == [
                "Host: a", "Accept: */*", "x-forwarded-for: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1", "x-forwarded-proto: http",
                "x-forwarded-host: a", "via: 1.1 sluice",
            ])
    }

    /// Without a known client address X-Forwarded-For is left as it came.
    @Test func unknownClientAddressLeavesForwardedForAlone() {
        var headers = TestHeaders(["Host: a", "X-Forwarded-For: 1.1.1.1"])
        HeaderRules.rewriteRequest(&headers, clientAddress: nil, scheme: .http, upstreamAuthority: "app:80")
        #expect(headers.lines == ["Host: a", "X-Forwarded-For: 1.1.1.1", "x-forwarded-proto: http", "x-forwarded-host: a", "via: 1.1 sluice"])
    }

    /// X-Forwarded-Proto and -Host from an earlier hop are kept; Via gets our hop appended.
    @Test func forwardedProtoAndHostFromAnEarlierHopAreKept() {
        var headers = TestHeaders([
            "Host: internal", "X-Forwarded-Proto: https", "X-Forwarded-Host: shop.example.com", "Via: 1.1 ingress",
        ])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "app:80")
        #expect(
            headers.lines == [
                "Host: internal", "X-Forwarded-Proto: https", "X-Forwarded-Host: shop.example.com", "x-forwarded-for: 10.0.0.1",
                "via: 1.1 ingress, 1.1 sluice",
            ])
    }

    /// A chunked request body is re-declared as plain chunked.
    @Test func chunkedRequestIsReDeclaredChunked() {
        var headers = TestHeaders(["Host: a", "Transfer-Encoding: chunked", "Content-Type: text/plain"])
        HeaderRules.rewriteRequest(&headers, clientAddress: nil, scheme: .http, upstreamAuthority: "app:80")
        #expect(
            headers.lines == [
                "Host: a", "Content-Type: text/plain", "transfer-encoding: chunked", "x-forwarded-proto: http", "x-forwarded-host: a",
                "via: 1.1 sluice",
            ])
    }

    /// An HTTP/1.0 request without Host gets the upstream's authority as Host.
    @Test func requestWithoutHostGetsTheUpstreamAuthority() {
        var headers = TestHeaders(["Accept: */*"])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "127.0.0.1:3000")
        #expect(headers.first(name: "host") == "127.0.0.1:3000")
        #expect(headers.tokens(name: "host") == ["127.0.0.1:3000"])
        #expect(headers.first(name: "x-forwarded-for") == "10.0.0.1")
        #expect(headers.first(name: "via") == "1.1 sluice")
    }

    /// X-Forwarded-Host carries only a host the client sent, never the upstream's own authority.
    ///
    /// Regression (found by these tests, since fixed): `rewriteRequest` adds the fallback `Host` (the upstream authority) before it sets
    /// `X-Forwarded-Host` from `Host`, so an HTTP/1.0 request without Host reaches the app claiming the
    /// client asked for `127.0.0.1:3000`.
    @Test func requestWithoutHostGetsNoForwardedHost() {
        var headers = TestHeaders(["Accept: */*"])
        HeaderRules.rewriteRequest(&headers, clientAddress: "10.0.0.1", scheme: .http, upstreamAuthority: "127.0.0.1:3000")
        #expect(!headers.contains(name: "x-forwarded-host"))
    }

    // MARK: - Responses

    /// A chunked response asking to close loses Connection, stays chunked, gains Via, and reports the close.
    @Test func chunkedResponseAskingToCloseIsReportedAndStaysChunked() {
        var headers = TestHeaders(["Content-Type: text/plain", "Connection: close", "Transfer-Encoding: chunked"])
        #expect(HeaderRules.rewriteResponse(&headers))
        #expect(headers.lines == ["Content-Type: text/plain", "transfer-encoding: chunked", "via: 1.1 sluice"])
    }

    /// A keep-alive response with a length keeps the length, loses Keep-Alive, and appends to Via.
    @Test func keepAliveResponseKeepsItsLengthAndAppendsVia() {
        var headers = TestHeaders(["Content-Length: 5", "Connection: Keep-Alive", "Keep-Alive: timeout=5", "Via: 1.1 app"])
        #expect(!HeaderRules.rewriteResponse(&headers))
        #expect(headers.lines == ["Content-Length: 5", "via: 1.1 app, 1.1 sluice"])
    }

    /// A message received over HTTP/2 gets `2 sluice` in Via, in requests and responses alike.
    @Test func viaNamesTheReceivedProtocol() {
        #expect(HeaderRules.via(receivedMajorVersion: 1) == "1.1 sluice")
        #expect(HeaderRules.via(receivedMajorVersion: 2) == "2 sluice")
        var response = TestHeaders(["Via: 1.1 app"])
        _ = HeaderRules.rewriteResponse(&response, via: HeaderRules.viaValueHTTP2)
        #expect(response.lines == ["via: 1.1 app, 2 sluice"])
        var request = TestHeaders(["Host: a"])
        HeaderRules.rewriteRequest(&request, clientAddress: nil, scheme: .http, upstreamAuthority: "up", via: HeaderRules.viaValueHTTP2)
        #expect(request.lines.last == "via: 2 sluice")
    }

    /// Close is recognised in any case and among other tokens.
    @Test(arguments: ["Close", "CLOSE", "keep-alive, close", "x-a, Close"])
    func closeTokenIsRecognisedInAnyCase(_ value: String) {
        var headers = TestHeaders(["Connection: \(value)", "Content-Length: 0"])
        #expect(HeaderRules.rewriteResponse(&headers))
    }

    /// Via lines from several hops are joined into one field with ours last.
    @Test func viaFromSeveralHopsIsJoinedWithOursLast() {
        var headers = TestHeaders(["Via: 1.0 a", "Content-Length: 0", "via: 1.1 b, 1.1 c"])
        _ = HeaderRules.rewriteResponse(&headers)
        #expect(headers.lines == ["Content-Length: 0", "via: 1.0 a, 1.1 b, 1.1 c, 1.1 sluice"])
    }

    /// A response with both Content-Length and chunked framing is forwarded chunked, without the length
    /// (RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, which an intermediary must remove).
    ///
    /// Regression (found by these tests, since fixed): `rewriteResponse` keeps `Content-Length` and drops the chunked declaration, so the body
    /// (decoded as chunked) would be sent with a length that need not match it.
    @Test func responseWithLengthAndChunkedIsForwardedChunked() {
        var headers = TestHeaders(["Content-Length: 5", "Transfer-Encoding: chunked"])
        _ = HeaderRules.rewriteResponse(&headers)
        #expect(headers.lines == ["transfer-encoding: chunked", "via: 1.1 sluice"])
    }
}
