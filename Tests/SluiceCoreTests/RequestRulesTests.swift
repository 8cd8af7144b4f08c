import SluiceCore
import Testing

@Suite struct RequestRulesTests {
    typealias Outcome = Result<RequestRules.Accepted, ProxyError>

    func check(
        _ method: String = "GET",
        _ uri: String = "/",
        version: (major: Int, minor: Int) = (1, 1),
        _ lines: [String] = ["Host: example.com"],
        headerBytes: Int = 200,
        maxHeaderBytes: Int = 1024,
        maxBodyBytes: Int? = 100
    ) -> Outcome {
        RequestRules.check(
            RequestRules.Head(method: method, uri: uri, versionMajor: version.major, versionMinor: version.minor),
            headers: TestHeaders(lines),
            headerBytes: headerBytes,
            limits: RequestRules.Limits(maxHeaderBytes: maxHeaderBytes, maxBodyBytes: maxBodyBytes)
        )
    }

    func accepted(_ outcome: Outcome) -> RequestRules.Accepted? {
        if case .success(let accepted) = outcome { return accepted }
        return nil
    }

    func failure(_ outcome: Outcome) -> ProxyError? {
        if case .failure(let error) = outcome { return error }
        return nil
    }

    // MARK: - Accepted requests

    /// Told that there is exactly one `Host` field (as NIO's headers tell), the check decides as it
    /// does when it splits every `Host` value: for plain, padded, empty and comma-separated values.
    @Test(arguments: ["a", "a:8080", " a", "a ", "a\t", "", "a,b", "a, b", ",", " , "])
    func oneHostFieldDecidesAsSplittingEveryValue(_ value: String) {
        let lines = ["Host: " + value]
        let headers = TestHeaders(lines)
        let head = RequestRules.Head(method: "GET", uri: "http://a/x", versionMajor: 1, versionMinor: 1)
        let limits = RequestRules.Limits(maxHeaderBytes: 1024, maxBodyBytes: nil)
        let told = RequestRules.check(head, headers: headers, present: headers.presentNames().union(.hostOnce), headerBytes: 10, limits: limits)
        let split = RequestRules.check(head, headers: headers, headerBytes: 10, limits: limits)
        #expect(told == split)
    }

    /// An ordinary origin-form GET passes unchanged, with no length and no 100-continue.
    @Test func ordinaryGetPassesUnchanged() {
        let ok = accepted(check())
        #expect(ok?.rewrittenURI == nil)
        #expect(ok?.expectsContinue == false)
        #expect(ok?.contentLength == nil)
    }

    /// A declared length is reported; a length equal to the limit passes; without a limit any length passes.
    @Test func declaredLengthIsReportedUpToTheLimit() {
        #expect(accepted(check("POST", "/", ["Host: a", "Content-Length: 100"]))?.contentLength == 100)
        #expect(accepted(check("POST", "/", ["Host: a", "Content-Length: 0"]))?.contentLength == 0)
        #expect(accepted(check("POST", "/", ["Host: a", "Content-Length: 1000000000000"], maxBodyBytes: nil))?.contentLength == 1_000_000_000_000)
    }

    /// The same length repeated (in one line or several) is one length.
    @Test(arguments: [["Content-Length: 5, 5"], ["Content-Length: 5", "Content-Length: 5"]])
    func repeatedIdenticalLengthIsAccepted(_ lengths: [String]) {
        #expect(accepted(check("POST", "/", ["Host: a"] + lengths))?.contentLength == 5)
    }

    /// A chunked request without a length passes with no length.
    @Test func chunkedRequestWithoutLengthPasses() {
        #expect(accepted(check("POST", "/", ["Host: a", "Transfer-Encoding: chunked"]))?.contentLength == nil)
    }

    /// An HTTP/1.0 request may omit Host.
    @Test func http10RequestMayOmitHost() {
        #expect(accepted(check(version: (1, 0), [])) != nil)
    }

    struct AbsoluteForm: Sendable, CustomTestStringConvertible {
        var uri: String
        var host: String
        var rewritten: String
        var testDescription: String { self.uri }
    }

    /// An absolute-form target for the Host the request names is forwarded in origin form.
    @Test(arguments: [
        AbsoluteForm(uri: "http://example.com/path?q=1", host: "example.com", rewritten: "/path?q=1"),
        AbsoluteForm(uri: "HTTP://EXAMPLE.com/x", host: "example.com", rewritten: "/x"),
        AbsoluteForm(uri: "http://example.com", host: "Example.COM", rewritten: "/"),
        AbsoluteForm(uri: "http://example.com?q", host: "example.com", rewritten: "/?q"),
        AbsoluteForm(uri: "https://example.com/a/b", host: "example.com", rewritten: "/a/b"),
        AbsoluteForm(uri: "http://example.com:8080/a", host: "example.com:8080", rewritten: "/a"),
        AbsoluteForm(uri: "http://[::1]:8080/a", host: "[::1]:8080", rewritten: "/a"),
    ])
    func absoluteFormForTheSameHostIsRewrittenToOriginForm(_ form: AbsoluteForm) {
        #expect(accepted(check("GET", form.uri, ["Host: \(form.host)"]))?.rewrittenURI == form.rewritten)
    }

    /// OPTIONS * passes as it is.
    @Test func optionsAsteriskPasses() {
        let ok = accepted(check("OPTIONS", "*"))
        #expect(ok != nil)
        #expect(ok?.rewrittenURI == nil)
    }

    /// Expect: 100-continue (any case) is answered by us on HTTP/1.1 and ignored on HTTP/1.0.
    @Test func expectContinueIsAnsweredOnHTTP11Only() {
        #expect(accepted(check("POST", "/", ["Host: a", "Expect: 100-continue", "Content-Length: 5"]))?.expectsContinue == true)
        #expect(accepted(check("POST", "/", ["Host: a", "Expect: 100-Continue"]))?.expectsContinue == true)
        #expect(accepted(check("POST", "/", version: (1, 0), ["Expect: 100-continue"]))?.expectsContinue == false)
    }

    // MARK: - Refused requests

    /// CONNECT is refused with 405: Sluice is not a forward proxy.
    @Test func connectIsRefusedWith405() {
        let error = failure(check("CONNECT", "example.com:443", ["Host: example.com:443"]))
        #expect(error == .connectRefused)
        #expect(error?.status == 405)
    }

    /// An absolute-form target for another host is refused with 403.
    @Test(arguments: [
        AbsoluteForm(uri: "http://evil.com/x", host: "example.com", rewritten: ""),
        AbsoluteForm(uri: "http://example.com:8080/", host: "example.com", rewritten: ""),
        AbsoluteForm(uri: "http://example.com.evil.com/", host: "example.com", rewritten: ""),
        AbsoluteForm(uri: "http://example.com/", host: "example.com:80", rewritten: ""),
    ])
    func absoluteFormForAnotherHostIsRefusedWith403(_ form: AbsoluteForm) {
        let error = failure(check("GET", form.uri, ["Host: \(form.host)"]))
        #expect(error == .foreignAbsoluteTarget)
        #expect(error?.status == 403)
    }

    /// An HTTP/1.0 absolute-form request without Host names no host to match, so it is refused with 403.
    @Test func absoluteFormWithoutHostIsRefusedWith403() {
        #expect(failure(check("GET", "http://example.com/", version: (1, 0), [])) == .foreignAbsoluteTarget)
    }

    /// A target that is neither origin, absolute nor asterisk form, or carries user info, is a 400.
    @Test(arguments: ["example.com/x", "ftp://example.com/", "http:///x", "http://user@example.com/", "http:/x", "", "%2F"])
    func malformedTargetIsA400(_ uri: String) {
        let error = failure(check("GET", uri))
        #expect(error == .badRequest("malformed request target"))
        #expect(error?.status == 400)
    }

    /// The asterisk form is for OPTIONS only.
    @Test(arguments: ["GET", "POST", "options"])
    func asteriskFormIsA400ForOtherMethods(_ method: String) {
        #expect(failure(check(method, "*")) == .badRequest("asterisk-form target is only for OPTIONS"))
    }

    /// HTTP/1.1 without Host is a 400.
    @Test func missingHostIsA400() {
        let error = failure(check("GET", "/", []))
        #expect(error == .badRequest("missing Host header"))
        #expect(error?.status == 400)
        #expect(error?.detail == "missing Host header")
    }

    /// Two Host values (two lines, or one line with a comma) are a 400 on HTTP/1.1 and HTTP/1.0.
    @Test(arguments: [["Host: a", "Host: b"], ["Host: a, b"], ["Host: a", "host: a"]])
    func duplicateHostIsA400(_ lines: [String]) {
        #expect(failure(check("GET", "/", lines)) == .badRequest("more than one Host header"))
        #expect(failure(check("GET", "/", version: (1, 0), lines)) == .badRequest("more than one Host header"))
    }

    /// Any major version other than 1 is a 400.
    @Test(arguments: [(0, 9), (2, 0), (3, 0)])
    func otherHTTPVersionIsA400(_ major: Int, _ minor: Int) {
        #expect(failure(check(version: (major, minor))) == .badRequest("unsupported HTTP version"))
    }

    /// Content-Length together with Transfer-Encoding is a 400 (request smuggling).
    @Test func lengthAndTransferEncodingTogetherAreA400() {
        let error = failure(check("POST", "/", ["Host: a", "Content-Length: 5", "Transfer-Encoding: chunked"]))
        #expect(error == .badRequest("both Content-Length and Transfer-Encoding"))
        #expect(error?.closesConnection == true)
    }

    /// A length that is not a non-negative integer, or two different lengths, is a 400.
    @Test(arguments: [
        ["Content-Length: abc"], ["Content-Length: -1"], ["Content-Length: 1.5"], ["Content-Length: 0x10"],
        ["Content-Length: 5, 6"], ["Content-Length: 5", "Content-Length: 6"], ["Content-Length: 5, 05"],
        ["Content-Length: 99999999999999999999"],
    ])
    func invalidOrConflictingLengthIsA400(_ lengths: [String]) {
        #expect(failure(check("POST", "/", ["Host: a"] + lengths)) == .badRequest("invalid Content-Length"))
    }

    /// A length with a sign is a 400: Content-Length is digits only (RFC 9110 §8.6).
    ///
    /// Regression (found by these tests, since fixed): `RequestRules.check` parses the length with `Int(_:)`, which accepts a leading `+`,
    /// so `Content-Length: +5` passes and is forwarded as written.
    @Test func signedLengthIsA400() {
        #expect(failure(check("POST", "/", ["Host: a", "Content-Length: +5"])) == .badRequest("invalid Content-Length"))
    }

    /// A declared body over the limit is a 413 naming the limit.
    @Test func bodyOverTheLimitIsA413() {
        let error = failure(check("POST", "/", ["Host: a", "Content-Length: 101"]))
        #expect(error == .bodyTooLarge(limit: 100))
        #expect(error?.status == 413)
        #expect(error?.detail == "request body exceeds 100 bytes")
    }

    /// A head over the limit is a 431 naming the limit, checked before anything else; exactly the limit passes.
    @Test func headOverTheLimitIsA431BeforeAnyOtherCheck() {
        let error = failure(check("GET", "/", headerBytes: 1025))
        #expect(error == .headersTooLarge(limit: 1024))
        #expect(error?.status == 431)
        #expect(error?.detail == "request header fields exceed 1024 bytes")
        #expect(failure(check("CONNECT", "x:443", [], headerBytes: 1025)) == .headersTooLarge(limit: 1024))
        #expect(accepted(check("GET", "/", headerBytes: 1024)) != nil)
    }

    /// Any expectation other than a single 100-continue is a 417.
    @Test(arguments: [["Expect: something"], ["Expect: 100-continue, foo"], ["Expect: 100-continue", "Expect: 100-continue"], ["Expect: 200-ok"]])
    func otherExpectationIsA417(_ lines: [String]) {
        let error = failure(check("POST", "/", ["Host: a"] + lines))
        #expect(error == .expectationFailed)
        #expect(error?.status == 417)
    }

    // MARK: - Idempotency

    /// GET, HEAD, OPTIONS, TRACE, PUT and DELETE are idempotent; POST, PATCH, CONNECT and lower-case names are not.
    @Test func idempotentMethodsAreTheRFCs() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] { #expect(RequestRules.isIdempotent(method), "\(method)") }
        for method in ["POST", "PATCH", "CONNECT", "get", "PROPFIND", ""] { #expect(!RequestRules.isIdempotent(method), "\(method)") }
    }
}
