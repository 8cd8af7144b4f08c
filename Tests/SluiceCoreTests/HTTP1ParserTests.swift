import SluiceCore
import Testing

@Suite struct HTTP1ParserTests {
    typealias Framing = HTTP1Parser.Framing

    /// One parser event in a comparable form: fields as `"Name: value"` lines, body bytes copied
    /// out of the ranges, consecutive body events merged (so a split feed compares with a whole one).
    enum Recorded: Equatable, CustomStringConvertible {
        case request(String, String, Int, Int, [String], Framing)
        case response(Int, String, Int, Int, [String], Framing)
        case interim(Int, [String])
        case body([UInt8])
        case end([String]?)
        case error(HTTP1ParseError)

        var description: String {
            switch self {
            case .request(let m, let t, let ma, let mi, let f, let fr): "request(\(m) \(t) \(ma).\(mi) \(f) \(fr))"
            case .response(let s, let r, let ma, let mi, let f, let fr): "response(\(s) \(r) \(ma).\(mi) \(f) \(fr))"
            case .interim(let s, let f): "interim(\(s) \(f))"
            case .body(let b): "body(\(String(decoding: b, as: UTF8.self).debugDescription))"
            case .end(let t): "end(\(t.map { $0.description } ?? "nil"))"
            case .error(let e): "error(\(e.kind) \(e.detail))"
            }
        }
    }

    static func lines(_ fields: [(String, String)]) -> [String] { fields.map { "\($0.0): \($0.1)" } }

    static func request(
        _ method: String = "GET",
        _ target: String = "/",
        _ fields: [String] = [],
        _ framing: Framing = .none,
        version: (Int, Int) = (1, 1)
    ) -> Recorded {
        .request(method, target, version.0, version.1, fields, framing)
    }

    static func response(
        _ status: Int = 200,
        _ reason: String = "OK",
        _ fields: [String] = [],
        _ framing: Framing,
        version: (Int, Int) = (1, 1)
    ) -> Recorded {
        .response(status, reason, version.0, version.1, fields, framing)
    }

    static func body(_ text: String) -> Recorded { .body(Array(text.utf8)) }
    static func malformed(_ detail: String) -> Recorded { .error(.malformed(detail)) }

    /// A caller as the channel handlers are: it keeps a buffer, appends each chunk that arrives,
    /// calls `next` until `.needMore` and drops what was consumed. It checks the calling contract
    /// on every call (consumed within the bytes, body ranges non-empty and consumed, errors consume nothing).
    struct Driver {
        var parser: HTTP1Parser
        var buffer: [UInt8] = []
        var recorded: [Recorded] = []
        var calls = 0

        init(_ kind: HTTP1Parser.Kind, maxHeadBytes: Int = 1024, maxChunkLineBytes: Int = 4096) {
            self.parser = HTTP1Parser(kind: kind, limits: .init(maxHeadBytes: maxHeadBytes, maxChunkLineBytes: maxChunkLineBytes))
        }

        mutating func record(_ event: Recorded) {
            if case .body(let more) = event, case .body(let before)? = self.recorded.last {
                self.recorded[self.recorded.count - 1] = .body(before + more)
            } else {
                self.recorded.append(event)
            }
        }

        mutating func feed(_ chunk: [UInt8]) {
            self.buffer += chunk
            while true {
                self.calls += 1
                precondition(self.calls < 1_000_000, "the parser makes no progress")
                var parser = self.parser
                let (event, consumed, bodyBytes) = self.buffer.withUnsafeBytes { bytes in
                    let (event, consumed) = parser.next(bytes)
                    var body: [UInt8] = []
                    if case .body(let range) = event, range.lowerBound >= 0, range.upperBound <= bytes.count {
                        body = Array(bytes[range])
                    }
                    return (event, consumed, body)
                }
                self.parser = parser
                #expect(consumed >= 0 && consumed <= self.buffer.count)
                switch event {
                case .needMore:
                    break
                case .requestHead(let head, let framing):
                    self.record(.request(head.method, head.target, head.versionMajor, head.versionMinor, HTTP1ParserTests.lines(head.fields), framing))
                case .responseHead(let head, let framing):
                    self.record(.response(head.status, head.reason, head.versionMajor, head.versionMinor, HTTP1ParserTests.lines(head.fields), framing))
                case .interimHead(let head):
                    self.record(.interim(head.status, HTTP1ParserTests.lines(head.fields)))
                case .body(let range):
                    #expect(!range.isEmpty && range.lowerBound >= 0 && range.upperBound <= consumed)
                    self.record(.body(bodyBytes))
                case .end(let trailers):
                    self.record(.end(trailers.map(HTTP1ParserTests.lines)))
                case .error(let error):
                    #expect(consumed == 0)
                    self.record(.error(error))
                    return
                }
                self.buffer.removeFirst(consumed)
                if case .needMore = event { return }
            }
        }

        mutating func end() {
            switch self.parser.inputEnded() {
            case .needMore: break
            case .end(let trailers): self.record(.end(trailers.map(HTTP1ParserTests.lines)))
            case .error(let error): self.record(.error(error))
            case let other: Issue.record("inputEnded returned \(other)")
            }
        }
    }

    /// Parses `text` fed as the given pieces (whole when none), then ends the input when `end`.
    static func parse(
        _ kind: HTTP1Parser.Kind,
        _ pieces: [String],
        maxHeadBytes: Int = 1024,
        maxChunkLineBytes: Int = 4096,
        end: Bool = false
    ) -> [Recorded] {
        var driver = Driver(kind, maxHeadBytes: maxHeadBytes, maxChunkLineBytes: maxChunkLineBytes)
        for piece in pieces { driver.feed(Array(piece.utf8)) }
        if end { driver.end() }
        return driver.recorded
    }

    static func requests(_ text: String, maxHeadBytes: Int = 1024, end: Bool = false) -> [Recorded] {
        parse(.request, [text], maxHeadBytes: maxHeadBytes, end: end)
    }

    static func responses(_ text: String, end: Bool = false) -> [Recorded] {
        parse(.response, [text], end: end)
    }

    /// Feeds `bytes` split in two at every offset, and one byte at a time, and checks each gives `expected`.
    static func checkEverySplit(
        _ kind: HTTP1Parser.Kind,
        _ bytes: [UInt8],
        _ expected: [Recorded],
        maxHeadBytes: Int = 1024,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for k in 0...bytes.count {
            var driver = Driver(kind, maxHeadBytes: maxHeadBytes)
            driver.feed(Array(bytes[..<k]))
            driver.feed(Array(bytes[k...]))
            #expect(driver.recorded == expected, "split at \(k)", sourceLocation: sourceLocation)
        }
        var driver = Driver(kind, maxHeadBytes: maxHeadBytes)
        for byte in bytes { driver.feed([byte]) }
        #expect(driver.recorded == expected, "a byte at a time", sourceLocation: sourceLocation)
    }

    /// The first call's event and consumed count on a fresh parser.
    static func first(_ kind: HTTP1Parser.Kind, _ text: String, maxHeadBytes: Int = 1024) -> (event: HTTP1Parser.Event, consumed: Int) {
        first(kind, Array(text.utf8), maxHeadBytes: maxHeadBytes)
    }

    static func first(_ kind: HTTP1Parser.Kind, _ bytes: [UInt8], maxHeadBytes: Int = 1024) -> (event: HTTP1Parser.Event, consumed: Int) {
        var parser = HTTP1Parser(kind: kind, limits: .init(maxHeadBytes: maxHeadBytes))
        return bytes.withUnsafeBytes { parser.next($0) }
    }

    /// `text` without its last `n` bytes (`String.dropLast` would drop a CRLF as one character).
    static func dropping(_ n: Int, _ text: String) -> [UInt8] { Array(Array(text.utf8).dropLast(n)) }

    static func isNeedMore(_ event: HTTP1Parser.Event) -> Bool {
        if case .needMore = event { return true }
        return false
    }

    // MARK: - Request heads

    /// A simple GET gives its head with every field in order, framing none, consumes exactly the
    /// head, then `.end` with consumed 0, then `.needMore`.
    @Test func simpleGet() {
        let text = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Empty:\r\n\r\n"
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 1024))
        let bytes = Array(text.utf8)
        bytes.withUnsafeBytes { raw in
            let (event, consumed) = parser.next(raw)
            #expect(consumed == bytes.count)
            guard case .requestHead(let head, let framing) = event else {
                Issue.record("expected a request head, got \(event)")
                return
            }
            #expect(head.method == "GET")
            #expect(head.target == "/index.html?q=1")
            #expect(head.versionMajor == 1 && head.versionMinor == 1)
            #expect(Self.lines(head.fields) == ["Host: example.com", "Accept: */*", "X-Empty: "])
            #expect(framing == .none)
            let rest = UnsafeRawBufferPointer(rebasing: raw[consumed...])
            let (end, endConsumed) = parser.next(rest)
            guard case .end(nil) = end else {
                Issue.record("expected end, got \(end)")
                return
            }
            #expect(endConsumed == 0)
            let (more, moreConsumed) = parser.next(rest)
            #expect(Self.isNeedMore(more) && moreConsumed == 0)
        }
    }

    /// Names keep their case; values lose surrounding spaces and tabs but keep inner ones;
    /// obs-text bytes are allowed in values.
    @Test func fieldNamesAndValues() {
        let text = "GET / HTTP/1.1\r\nX-MiXeD: \t a  b\tc \t\r\nx-tab:\tv\r\nX-Obs: caf\u{E9}\r\n\r\n"
        #expect(Self.requests(text) == [Self.request("GET", "/", ["X-MiXeD: a  b\tc", "x-tab: v", "X-Obs: caf\u{E9}"]), .end(nil)])
    }

    /// A head fed as growing prefixes of the same bytes gives `.needMore` with consumed 0 until it
    /// is complete, then the same head as a one-shot parse, consuming exactly the head.
    @Test func headSplitAtEveryOffset() {
        let text = "\r\nPOST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nX-A: 1\n\r\nabc"
        let bytes = Array(text.utf8)
        let headLength = bytes.count - 3
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 1024))
        for k in 0..<headLength {
            let (event, consumed) = Array(bytes[..<k]).withUnsafeBytes { parser.next($0) }
            #expect(Self.isNeedMore(event), "prefix \(k): \(event)")
            #expect(consumed == 0)
        }
        let (event, consumed) = bytes.withUnsafeBytes { parser.next($0) }
        #expect(consumed == headLength)
        guard case .requestHead(let head, let framing) = event else {
            Issue.record("expected a head, got \(event)")
            return
        }
        #expect(head.method == "POST" && head.target == "/upload")
        #expect(Self.lines(head.fields) == ["Host: a", "Content-Length: 3", "X-A: 1"])
        #expect(framing == .contentLength(3))
        Self.checkEverySplit(.request, bytes, Self.requests(text))
    }

    /// Several requests in one buffer are parsed one after the other, each body to its own length.
    @Test func pipelinedRequests() {
        let text =
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
            + "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            + "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            + "HEAD /d HTTP/1.0\r\n\r\n"
        let expected: [Recorded] = [
            Self.request("GET", "/a", ["Host: a"]), .end(nil),
            Self.request("POST", "/b", ["Content-Length: 5"], .contentLength(5)), Self.body("hello"), .end(nil),
            Self.request("PUT", "/c", ["Transfer-Encoding: chunked"], .chunked), Self.body("abc"), .end(nil),
            Self.request("HEAD", "/d", [], version: (1, 0)), .end(nil),
        ]
        #expect(Self.requests(text) == expected)
        Self.checkEverySplit(.request, Array(text.utf8), expected)
    }

    /// A content-length body in one buffer: the head, one body range right after it, `.end` with
    /// consumed 0; the next request's bytes are left for the next call.
    @Test func contentLengthBodyInOneBuffer() {
        let bytes = Array("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET".utf8)
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 1024))
        bytes.withUnsafeBytes { raw in
            let (head, headConsumed) = parser.next(raw)
            guard case .requestHead(_, .contentLength(5)) = head else {
                Issue.record("expected a head with length 5, got \(head)")
                return
            }
            #expect(headConsumed == 38)
            let rest = UnsafeRawBufferPointer(rebasing: raw[38...])
            let (body, bodyConsumed) = parser.next(rest)
            guard case .body(let range) = body else {
                Issue.record("expected a body, got \(body)")
                return
            }
            #expect(range == 0..<5)
            #expect(bodyConsumed == 5)
            let after = UnsafeRawBufferPointer(rebasing: raw[43...])
            let (end, endConsumed) = parser.next(after)
            guard case .end(nil) = end else {
                Issue.record("expected end, got \(end)")
                return
            }
            #expect(endConsumed == 0)
            let (more, moreConsumed) = parser.next(after)
            #expect(Self.isNeedMore(more) && moreConsumed == 0)
        }
    }

    /// A content-length body across calls: each call gives what is there, never beyond the length.
    @Test func contentLengthBodyAcrossCalls() {
        let pieces = ["POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab", "cde", "", "fghij", "GET / HTTP/1.1\r\n\r\n"]
        #expect(
            Self.parse(.request, pieces) == [
                Self.request("POST", "/", ["Content-Length: 10"], .contentLength(10)), Self.body("abcdefghij"), .end(nil),
                Self.request(), .end(nil),
            ])
        var driver = Driver(.request)
        driver.feed(Array("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab".utf8))
        driver.feed(Array("cde".utf8))
        #expect(driver.recorded == [Self.request("POST", "/", ["Content-Length: 10"], .contentLength(10)), Self.body("abcde")])
    }

    /// `Content-Length: 0` is reported as `.contentLength(0)` and `.end` follows at once.
    @Test func zeroContentLength() {
        #expect(
            Self.requests("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n") == [
                Self.request("POST", "/", ["Content-Length: 0"], .contentLength(0)), .end(nil), Self.request(), .end(nil),
            ])
    }

    /// Valid length forms: identical repeated fields, an identical list with OWS, any name case,
    /// leading zeros, 18 digits. A repeat is passed on as one field.
    @Test func validContentLengths() {
        func framing(_ lines: String) -> Recorded? {
            Self.requests("POST / HTTP/1.1\r\n\(lines)\r\n").first
        }
        #expect(framing("Content-Length: 5\r\ncontent-length: 5\r\n") == Self.request("POST", "/", ["Content-Length: 5"], .contentLength(5)))
        #expect(framing("CONTENT-LENGTH: 5, 5,5\r\n") == Self.request("POST", "/", ["CONTENT-LENGTH: 5"], .contentLength(5)))
        #expect(framing("Content-Length: 007\r\n") == Self.request("POST", "/", ["Content-Length: 007"], .contentLength(7)))
        #expect(
            framing("Content-Length: 999999999999999999\r\n")
                == Self.request("POST", "/", ["Content-Length: 999999999999999999"], .contentLength(999_999_999_999_999_999)))
    }

    /// Leading empty lines (CRLF or LF) before a request line are skipped and consumed with the head.
    @Test func leadingEmptyLinesAreSkipped() {
        #expect(Self.requests("\r\n\r\n\nGET / HTTP/1.1\r\n\r\n") == [Self.request(), .end(nil)])
        #expect(Self.requests("GET / HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n") == [Self.request(), .end(nil), Self.request("GET", "/2"), .end(nil)])
        let (event, consumed) = Self.first(.request, "\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        #expect(consumed == 22)
        guard case .requestHead = event else {
            Issue.record("expected a head, got \(event)")
            return
        }
        // Empty lines alone are no message: needMore, consumed 0.
        let (alone, aloneConsumed) = Self.first(.request, "\r\n\r\n\r")
        #expect(Self.isNeedMore(alone) && aloneConsumed == 0)
        #expect(Self.requests("\r\rGET / HTTP/1.1\r\n\r\n") == [Self.malformed("bare CR")])
    }

    /// Bare LF line ends are accepted everywhere in heads and chunked framing.
    @Test func bareLineFeedsAreLineEnds() {
        let text = "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n3;x=y\nabc\n0\nT: 1\n\nGET / HTTP/1.1\r\n\r\n"
        let expected: [Recorded] = [
            Self.request("POST", "/", ["Host: a", "Transfer-Encoding: chunked"], .chunked), Self.body("abc"), .end(["T: 1"]),
            Self.request(), .end(nil),
        ]
        #expect(Self.requests(text) == expected)
        Self.checkEverySplit(.request, Array(text.utf8), expected)
    }

    /// Methods are tokens, case preserved; a method with a non-token byte, or no method, is an error.
    @Test func methodTokenRules() {
        for method in ["GET", "get", "M-SEARCH", "PROPFIND", "X!#$%&'*+-.^_`|~9"] {
            #expect(Self.requests("\(method) / HTTP/1.1\r\n\r\n") == [Self.request(method, "/"), .end(nil)], "\(method)")
        }
        #expect(Self.requests("GE(T / HTTP/1.1\r\n\r\n") == [Self.malformed("invalid method")])
        #expect(Self.requests("GET\t/ HTTP/1.1\r\n\r\n") == [Self.malformed("invalid method")])
        #expect(Self.requests("G\u{7F}T / HTTP/1.1\r\n\r\n") == [Self.malformed("invalid method")])
        #expect(Self.requests(" GET / HTTP/1.1\r\n\r\n") == [Self.malformed("invalid request line")])
        #expect(Self.requests("GET\r\n\r\n") == [Self.malformed("invalid request line")])
    }

    /// The request line is `method SP target SP version`, single spaces, target without controls or spaces.
    @Test func requestLineRules() {
        #expect(Self.requests("GET http://a/x%20y?\u{E9} HTTP/1.1\r\n\r\n") == [Self.request("GET", "http://a/x%20y?\u{E9}"), .end(nil)])
        #expect(Self.requests("OPTIONS * HTTP/1.1\r\n\r\n") == [Self.request("OPTIONS", "*"), .end(nil)])
        #expect(Self.requests("GET  / HTTP/1.1\r\n\r\n") == [Self.malformed("invalid request line")])
        #expect(Self.requests("GET /  HTTP/1.1\r\n\r\n") == [Self.malformed("invalid HTTP version")])
        #expect(Self.requests("GET /\r\n\r\n") == [Self.malformed("invalid request line")])
        #expect(Self.requests("GET /\tx HTTP/1.1\r\n\r\n") == [Self.malformed("invalid request target")])
        #expect(Self.requests("GET /\u{7F} HTTP/1.1\r\n\r\n") == [Self.malformed("invalid request target")])
        #expect(Self.requests("GET /\u{0} HTTP/1.1\r\n\r\n") == [Self.malformed("invalid request target")])
        #expect(Self.requests("GET /\rx HTTP/1.1\r\n\r\n") == [Self.malformed("invalid request line")])
        #expect(Self.requests("GET / HTTP/1.1\rX: y\r\n\r\n") == [Self.malformed("bare CR")])
    }

    /// Every byte in a target: accepted exactly when it is 0x21–0x7E or 0x80–0xFF.
    @Test func everyTargetByte() {
        for b in 0...255 {
            let byte = UInt8(b)
            guard byte != 0x0A, byte != 0x0D, byte != 0x20 else { continue }
            var driver = Driver(.request)
            driver.feed(Array("GET /".utf8) + [byte] + Array(" HTTP/1.1\r\n\r\n".utf8))
            let accepted = (0x21...0x7E).contains(byte) || byte >= 0x80
            if accepted {
                guard case .request(_, let target, _, _, _, _)? = driver.recorded.first else {
                    Issue.record("byte \(b): \(driver.recorded)")
                    continue
                }
                #expect(target == String(decoding: [0x2F, byte], as: UTF8.self), "byte \(b)")
            } else {
                #expect(driver.recorded == [Self.malformed("invalid request target")], "byte \(b)")
            }
        }
    }

    /// The version is exactly `HTTP/` DIGIT `.` DIGIT, reported as numbers; anything else on the line is an error.
    @Test func versionRules() {
        #expect(Self.requests("GET / HTTP/1.0\r\n\r\n") == [Self.request(version: (1, 0)), .end(nil)])
        #expect(Self.requests("GET / HTTP/2.0\r\n\r\n") == [Self.request(version: (2, 0)), .end(nil)])
        #expect(Self.requests("GET / HTTP/0.9\r\n\r\n") == [Self.request(version: (0, 9)), .end(nil)])
        for bad in ["HTTP/1.1x", "HTTP/11", "HTTP/1.", "HTTP/1", "http/1.1", "HTTP/1.1 ", "HTTP/a.1", "HTTP/1.10", "HTTP 1.1", "HTTP/1,1", "HTTP/"] {
            #expect(Self.requests("GET / \(bad)\r\n\r\n") == [Self.malformed("invalid HTTP version")], "\(bad)")
        }
    }

    // MARK: - Field lines

    /// Every byte in a field name: accepted exactly when it is a tchar (RFC 9110 §5.6.2).
    @Test func everyFieldNameByte() {
        let tchars = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for b in 0...255 {
            let byte = UInt8(b)
            guard byte != 0x0A, byte != 0x0D, byte != 0x3A, byte != 0x20, byte != 0x09 else { continue }
            var driver = Driver(.request)
            driver.feed(Array("GET / HTTP/1.1\r\nA".utf8) + [byte] + Array("b: v\r\n\r\n".utf8))
            if tchars.contains(byte) {
                #expect(driver.recorded == [Self.request("GET", "/", ["A\(Character(Unicode.Scalar(byte)))b: v"]), .end(nil)], "byte \(b)")
            } else {
                #expect(driver.recorded == [Self.malformed("invalid character in field name")], "byte \(b)")
            }
        }
    }

    /// Every byte in a field value: accepted exactly when it is HTAB, SP, visible ASCII or obs-text.
    @Test func everyFieldValueByte() {
        for b in 0...255 {
            let byte = UInt8(b)
            guard byte != 0x0A, byte != 0x0D else { continue }
            var driver = Driver(.request)
            driver.feed(Array("GET / HTTP/1.1\r\nA: x".utf8) + [byte] + Array("y\r\n\r\n".utf8))
            let accepted = byte == 0x09 || (0x20...0x7E).contains(byte) || byte >= 0x80
            if accepted {
                guard case .request(_, _, _, _, let fields, _)? = driver.recorded.first else {
                    Issue.record("byte \(b): \(driver.recorded)")
                    continue
                }
                #expect(fields == ["A: " + String(decoding: [0x78, byte, 0x79], as: UTF8.self)], "byte \(b)")
            } else {
                #expect(driver.recorded == [Self.malformed("invalid character in field value")], "byte \(b)")
            }
        }
    }

    /// Field line errors: whitespace before the colon, no colon, empty name, obs-fold (also on
    /// the first field line), bare CR, NUL in a value, DEL in a name.
    @Test(arguments: [
        ("Transfer-Encoding : chunked\r\n", "whitespace before colon"),
        ("Host\t: a\r\n", "whitespace before colon"),
        ("Host a\r\n", "whitespace before colon"),
        ("Host\r\n", "missing colon in field line"),
        (": a\r\n", "empty field name"),
        (" Host: a\r\n", "obsolete line folding"),
        ("\tHost: a\r\n", "obsolete line folding"),
        ("Host: a\r\n folded\r\n", "obsolete line folding"),
        ("Host: a\r\n\tfolded\r\n", "obsolete line folding"),
        ("Host: a\rb\r\n", "bare CR"),
        ("Host: a\r\r\n", "bare CR"),
        ("Host: a\r\n\r\r\n", "bare CR"),
        ("Host: a\u{0}b\r\n", "invalid character in field value"),
        ("Host: a\u{B}\r\n", "invalid character in field value"),
        ("Host: a\u{7F}\r\n", "invalid character in field value"),
        ("Ho\u{7F}st: a\r\n", "invalid character in field name"),
        ("Ho\u{0}st: a\r\n", "invalid character in field name"),
        ("H\u{E9}st: a\r\n", "invalid character in field name"),
    ])
    func fieldLineErrors(_ line: String, _ detail: String) {
        let text = "GET / HTTP/1.1\r\n\(line)\r\n"
        #expect(Self.requests(text) == [Self.malformed(detail)])
        #expect(Self.requests("GET / HTTP/1.1\r\nX: 1\r\n\(line)\r\n") == [Self.malformed(detail)])
    }

    // MARK: - Limits

    /// A head of exactly `maxHeadBytes` (leading empty lines, request line, fields and the empty
    /// line) passes; one byte more fails with headTooLarge, complete or not.
    @Test func headLimitIsExact() {
        let head = "\r\nGET / HTTP/1.1\r\nHost: example\r\n\r\n"
        let size = head.utf8.count
        #expect(Self.requests(head, maxHeadBytes: size) == [Self.request("GET", "/", ["Host: example"]), .end(nil)])
        #expect(Self.requests(head, maxHeadBytes: size - 1) == [.error(.headTooLarge)])
        // Incomplete: as many bytes as the limit is not yet too large; one more is.
        let partial = Self.dropping(1, head)
        let (atLimit, atLimitConsumed) = Self.first(.request, partial, maxHeadBytes: size - 1)
        #expect(Self.isNeedMore(atLimit) && atLimitConsumed == 0)
        let (over, overConsumed) = Self.first(.request, partial, maxHeadBytes: size - 2)
        guard case .error(let error) = over else {
            Issue.record("expected headTooLarge, got \(over)")
            return
        }
        #expect(error == .headTooLarge && error.kind == .headTooLarge && overConsumed == 0)
        // Fed a byte at a time, it fails as soon as it is one byte over.
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 10))
        let bytes = Array("GET /aaaaaaaaaaaa HTTP/1.1\r\n\r\n".utf8)
        for k in 0...10 {
            let (event, _) = Array(bytes[..<k]).withUnsafeBytes { parser.next($0) }
            #expect(Self.isNeedMore(event), "prefix \(k)")
        }
        let (event, _) = Array(bytes[..<11]).withUnsafeBytes { parser.next($0) }
        guard case .error(.headTooLarge) = event else {
            Issue.record("expected headTooLarge, got \(event)")
            return
        }
    }

    /// The body after a head of exactly the limit does not count towards the head.
    @Test func headLimitIgnoresBody() {
        let head = "POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\n"
        let text = head + String(repeating: "x", count: 20)
        #expect(
            Self.requests(text, maxHeadBytes: head.utf8.count) == [
                Self.request("POST", "/", ["Content-Length: 20"], .contentLength(20)), Self.body(String(repeating: "x", count: 20)), .end(nil),
            ])
    }

    /// The trailer section has the same limit as a head: exactly the limit passes, one more fails.
    @Test func trailerLimitIsExact() {
        // The head (without the last chunk) is shorter than the trailer section, so one limit tests both.
        let shortHead = "P / HTTP/1.1\r\nTransfer-Encoding:chunked\r\n\r\n0\r\n"
        let longTrailers = "T: " + String(repeating: "v", count: 60) + "\r\n\r\n"
        let trailerSize = longTrailers.utf8.count
        #expect(shortHead.utf8.count - 3 < trailerSize - 3)
        #expect(
            Self.requests(shortHead + longTrailers, maxHeadBytes: trailerSize) == [
                Self.request("P", "/", ["Transfer-Encoding: chunked"], .chunked), .end(["T: " + String(repeating: "v", count: 60)]),
            ])
        #expect(
            Self.requests(shortHead + longTrailers, maxHeadBytes: trailerSize - 1) == [
                Self.request("P", "/", ["Transfer-Encoding: chunked"], .chunked), .error(.headTooLarge),
            ])
        var incomplete = Driver(.request, maxHeadBytes: trailerSize - 3)
        incomplete.feed(Self.dropping(2, shortHead + longTrailers))
        #expect(incomplete.recorded == [Self.request("P", "/", ["Transfer-Encoding: chunked"], .chunked), .error(.headTooLarge)])
        var atLimit = Driver(.request, maxHeadBytes: trailerSize - 2)
        atLimit.feed(Self.dropping(2, shortHead + longTrailers))
        #expect(atLimit.recorded == [Self.request("P", "/", ["Transfer-Encoding: chunked"], .chunked)])
    }

    // MARK: - Chunked bodies

    static let chunkedRequest =
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + "5;name=value;q=\"a b\"\r\nhello\r\n"
        + "1A \t; ext\r\n" + String(repeating: "z", count: 26) + "\r\n"
        + "00000001\r\n!\r\n"
        + "0;last\r\nTrailer-One: 1\r\ntrailer-two:  two \r\n\r\n"
        + "GET /next HTTP/1.1\r\n\r\n"

    static let chunkedExpected: [Recorded] = [
        request("POST", "/c", ["Host: a", "Transfer-Encoding: chunked"], .chunked),
        body("hello" + String(repeating: "z", count: 26) + "!"),
        .end(["Trailer-One: 1", "trailer-two: two"]),
        request("GET", "/next"), .end(nil),
    ]

    /// A chunked body with extensions, BWS before `;`, leading zeros and trailers gives exactly
    /// the data bytes and the trailers, whole and split at every byte offset.
    @Test func chunkedBodySplitAtEveryOffset() {
        #expect(Self.requests(Self.chunkedRequest) == Self.chunkedExpected)
        Self.checkEverySplit(.request, Array(Self.chunkedRequest.utf8), Self.chunkedExpected)
    }

    /// In one buffer, each chunk's data is one body event whose consumed count covers the
    /// size line before it and the CRLF after it; the last chunk and trailers give `.end`.
    @Test func chunkedEventsConsumeTheirFraming() {
        let bytes = Array("4\r\nwiki\r\n5;x\r\npedia\r\n0\r\n\r\n".utf8)
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 1024))
        _ = Array("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".utf8).withUnsafeBytes { parser.next($0) }
        var offset = 0
        var results: [(String, Int)] = []
        for _ in 0..<4 {
            let rest = Array(bytes[offset...])
            let (event, consumed) = rest.withUnsafeBytes { parser.next($0) }
            switch event {
            case .body(let range): results.append(("body \(range)", consumed))
            case .end(let trailers): results.append(("end \(trailers == nil)", consumed))
            default: results.append(("\(event)", consumed))
            }
            offset += consumed
        }
        #expect(results.map(\.0) == ["body 3..<7", "body 5..<10", "end true", "needMore"])
        #expect(results.map(\.1) == [9, 12, 5, 0])
    }

    /// A partial chunk gives the data there is; the rest follows in later calls.
    @Test func partialChunkData() {
        let pieces = ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n012", "3456", "789\r", "\n0\r\n", "\r\n"]
        var driver = Driver(.request)
        driver.feed(Array(pieces[0].utf8))
        #expect(driver.recorded == [Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), Self.body("012")])
        for piece in pieces.dropFirst() { driver.feed(Array(piece.utf8)) }
        #expect(driver.recorded == [Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), Self.body("0123456789"), .end(nil)])
    }

    /// Chunk errors: sizes that are not plain hexadecimal, overflow, whitespace before the size,
    /// a missing CRLF after the data, controls in extensions, bare CRs.
    @Test(arguments: [
        ("0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ("-5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ("+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (" 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ("\r\n", "invalid chunk size"),
        (";x\r\n", "invalid chunk size"),
        ("5 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ("g\r\n", "invalid chunk size"),
        ("ffffffffffffffffff\r\n", "invalid chunk size"),
        ("1000000000000000\r\n", "invalid chunk size"),
        ("5\r\nhelloX\r\n0\r\n\r\n", "missing CRLF after chunk data"),
        ("5\r\nhello\rX0\r\n\r\n", "missing CRLF after chunk data"),
        ("5\r\nhello0\r\n\r\n", "missing CRLF after chunk data"),
        ("5;a\u{1}b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"),
        ("5;a\u{7F}\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"),
        ("5\rhello\r\n0\r\n\r\n", "bare CR"),
        ("5;a\rb\r\nhello\r\n0\r\n\r\n", "bare CR"),
        ("0\r\nT: a\rb\r\n\r\n", "bare CR"),
        ("0\r\nT : a\r\n\r\n", "whitespace before colon"),
        ("0\r\nT: a\r\n folded\r\n\r\n", "obsolete line folding"),
        ("0\r\n T: a\r\n\r\n", "obsolete line folding"),
    ])
    func chunkErrors(_ chunks: String, _ detail: String) {
        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        let recorded = Self.requests(head + chunks)
        #expect(recorded.first == Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked))
        #expect(recorded.last == Self.malformed(detail))
    }

    /// Chunk sizes up to 15 hexadecimal digits and tab or space before `;` are accepted; a chunk
    /// line of exactly `maxChunkLineBytes` passes, one byte longer fails, complete or not.
    @Test func chunkSizeLimits() {
        var driver = Driver(.request)
        driver.feed(Array("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000F\t ;x\r\n".utf8))
        #expect(driver.recorded == [Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked)])
        driver.feed(Array("0123456789abcde\r\n0\r\n\r\n".utf8))
        #expect(driver.recorded == [Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), Self.body("0123456789abcde"), .end(nil)])
        // A length of 2^60 - 1 is accepted as a size (the data never comes here).
        var big = Driver(.request)
        big.feed(Array("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\nab".utf8))
        #expect(big.recorded == [Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), Self.body("ab")])

        let head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        let line = "3;" + String(repeating: "e", count: 12) + "\r\n"  // 16 bytes
        #expect(line.utf8.count == 16)
        func run(_ text: String, maxChunkLineBytes: Int) -> [Recorded] {
            Self.parse(.request, [text], maxChunkLineBytes: maxChunkLineBytes)
        }
        func run(_ bytes: [UInt8], maxChunkLineBytes: Int) -> [Recorded] {
            var driver = Driver(.request, maxChunkLineBytes: maxChunkLineBytes)
            driver.feed(bytes)
            return driver.recorded
        }
        let chunked = Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked)
        #expect(run(head + line + "abc\r\n0\r\n\r\n", maxChunkLineBytes: 16) == [chunked, Self.body("abc"), .end(nil)])
        #expect(run(head + line + "abc\r\n0\r\n\r\n", maxChunkLineBytes: 15) == [chunked, Self.malformed("chunk line too long")])
        #expect(run(Self.dropping(2, head + line), maxChunkLineBytes: 15) == [chunked])
        #expect(run(Self.dropping(1, head + line), maxChunkLineBytes: 15) == [chunked, Self.malformed("chunk line too long")])
        #expect(run(Self.dropping(1, head + line), maxChunkLineBytes: 16) == [chunked])
    }

    // MARK: - Request framing and smuggling

    /// Every framing a proxy must refuse (request smuggling): each is an error with this detail.
    @Test(arguments: [
        ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "both Content-Length and Transfer-Encoding"),
        ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "both Content-Length and Transfer-Encoding"),
        ("Transfer-Encoding: chunked, chunked\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: gzip, chunked\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: identity\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: \r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: chunked,\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: ,chunked\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: chunked x\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: chunkedx\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: chunke\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: \"chunked\"\r\n", "unsupported Transfer-Encoding"),
        ("Transfer-Encoding: chunked\u{B}\r\n", "invalid character in field value"),
        ("Transfer-Encoding:\u{B}chunked\r\n", "invalid character in field value"),
        ("Transfer-Encoding : chunked\r\n", "whitespace before colon"),
        ("Transfer-Encoding\t: chunked\r\n", "whitespace before colon"),
        ("Transfer-Encoding: gzip\r\n chunked\r\n", "obsolete line folding"),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "differing Content-Length values"),
        ("Content-Length: 5, 6\r\n", "differing Content-Length values"),
        ("Content-Length: +5\r\n", "invalid Content-Length"),
        ("Content-Length: -5\r\n", "invalid Content-Length"),
        ("Content-Length: 0x5\r\n", "invalid Content-Length"),
        ("Content-Length: 5 5\r\n", "invalid Content-Length"),
        ("Content-Length: 5a\r\n", "invalid Content-Length"),
        ("Content-Length: \r\n", "invalid Content-Length"),
        ("Content-Length: 5,\r\n", "invalid Content-Length"),
        ("Content-Length: ,5\r\n", "invalid Content-Length"),
        ("Content-Length: 5,,5\r\n", "invalid Content-Length"),
        ("Content-Length: 5.0\r\n", "invalid Content-Length"),
        ("Content-Length: \u{661}\r\n", "invalid Content-Length"),
        ("Content-Length: 1234567890123456789\r\n", "invalid Content-Length"),
        ("Content-Length: 99999999999999999999999\r\n", "invalid Content-Length"),
        ("Content-Length: 5\r\nContent-Length: x\r\n", "invalid Content-Length"),
        ("Content-Length : 5\r\n", "whitespace before colon"),
    ])
    func smugglingFramingIsRefused(_ fields: String, _ detail: String) {
        #expect(Self.requests("POST / HTTP/1.1\r\nHost: a\r\n\(fields)\r\n") == [Self.malformed(detail)])
    }

    /// `chunked` is matched without regard to case or surrounding whitespace, and so are the names.
    @Test(arguments: ["Transfer-Encoding: chunked", "transfer-encoding: CHUNKED", "TRANSFER-ENCODING:\t Chunked \t"])
    func chunkedIsRecognised(_ line: String) {
        let recorded = Self.requests("POST / HTTP/1.1\r\n\(line)\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        guard case .request(_, _, _, _, _, let framing)? = recorded.first else {
            Issue.record("\(recorded)")
            return
        }
        #expect(framing == .chunked)
        #expect(Array(recorded.dropFirst()) == [Self.body("abc"), .end(nil)])
    }

    /// An HTTP/1.0 request or response with Transfer-Encoding has faulty framing (RFC 9112 §6.1): an
    /// error, whatever else it says.
    @Test func transferEncodingInHTTP10IsAnError() {
        #expect(
            Self.requests("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                == [Self.malformed("Transfer-Encoding in an HTTP/1.0 request")])
        #expect(
            Self.requests("POST / HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
                == [Self.malformed("Transfer-Encoding in an HTTP/1.0 request")])
        #expect(
            Self.responses("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
                == [Self.malformed("Transfer-Encoding in an HTTP/1.0 response")])
        // HTTP/1.1 is unchanged.
        #expect(Self.requests("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == [Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), .end(nil)])
    }

    /// Repeated equal Content-Lengths (two fields, or a list) frame the message and are passed on as
    /// exactly one field, so no parser downstream sees the repeat; requests and responses alike.
    @Test(arguments: [
        ("Content-Length: 3\r\nContent-Length: 3\r\n", ["Content-Length: 3"]),
        ("Content-Length: 3, 3\r\n", ["Content-Length: 3"]),
        ("content-length: 3,3\r\nX-A: 1\r\nCONTENT-LENGTH: 3\r\n", ["content-length: 3", "X-A: 1"]),
        ("X-B: 2\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n", ["X-B: 2", "Content-Length: 3"]),
    ])
    func equalContentLengthsArePassedOnAsOne(_ fields: String, _ expected: [String]) {
        #expect(Self.requests("POST / HTTP/1.1\r\n\(fields)\r\nabc") == [Self.request("POST", "/", expected, .contentLength(3)), Self.body("abc"), .end(nil)])
        #expect(Self.responses("HTTP/1.1 200 OK\r\n\(fields)\r\nabc") == [Self.response(200, "OK", expected, .contentLength(3)), Self.body("abc"), .end(nil)])
    }

    /// Names that merely resemble the framing fields do not frame the request.
    @Test func lookalikeNamesDoNotFrame() {
        let text = "POST / HTTP/1.1\r\nContent-Length-X: 5\r\nX-Transfer-Encoding: chunked\r\nContent_Length: 7\r\nTransfer-Encodings: gzip\r\n\r\n"
        #expect(
            Self.requests(text) == [
                Self.request("POST", "/", ["Content-Length-X: 5", "X-Transfer-Encoding: chunked", "Content_Length: 7", "Transfer-Encodings: gzip"]),
                .end(nil),
            ])
    }

    // MARK: - Responses

    /// A 200 with Content-Length: the head with its reason, the body, `.end`, then the next response.
    @Test func responseWithContentLength() {
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        let expected: [Recorded] = [
            Self.response(200, "OK", ["Content-Length: 5"], .contentLength(5)), Self.body("hello"), .end(nil),
            Self.response(404, "Not Found", ["Content-Length: 0"], .contentLength(0), version: (1, 0)), .end(nil),
        ]
        #expect(Self.responses(text) == expected)
        Self.checkEverySplit(.response, Array(text.utf8), expected)
    }

    /// A chunked response with trailers, whole and split at every offset.
    @Test func chunkedResponseWithTrailers() {
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nServer-Timing: db;dur=53\r\n\r\n"
        let expected: [Recorded] = [
            Self.response(200, "OK", ["Transfer-Encoding: chunked"], .chunked), Self.body("abc"), .end(["Server-Timing: db;dur=53"]),
        ]
        #expect(Self.responses(text) == expected)
        Self.checkEverySplit(.response, Array(text.utf8), expected)
    }

    /// 204 and 304 have no body whatever their headers say; the next response follows at once.
    @Test func noContentAndNotModifiedHaveNoBody() {
        #expect(
            Self.responses("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx") == [
                Self.response(204, "No Content", ["Content-Length: 10"], .none), .end(nil),
                Self.response(304, "Not Modified", ["Content-Length: 99", "Transfer-Encoding: chunked"], .none), .end(nil),
                Self.response(200, "OK", ["Content-Length: 1"], .contentLength(1)), Self.body("x"), .end(nil),
            ])
    }

    /// A response to HEAD has no body despite Content-Length: 1000; the next response parses right
    /// after it with its own framing, since the HEAD expectation is used up.
    @Test func responseToHEAD() {
        var driver = Driver(.response)
        driver.parser.expectResponseToHEAD()
        driver.feed(Array("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi".utf8))
        #expect(
            driver.recorded == [
                .interim(100, []),
                Self.response(200, "OK", ["Content-Length: 1000"], .none), .end(nil),
                Self.response(200, "OK", ["Content-Length: 2"], .contentLength(2)), Self.body("hi"), .end(nil),
            ])
        var chunked = Driver(.response)
        chunked.parser.expectResponseToHEAD()
        chunked.feed(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
        #expect(chunked.recorded == [Self.response(200, "OK", ["Transfer-Encoding: chunked"], .none), .end(nil)])
    }

    /// Interim 1xx responses (100, 103) are reported, each with its fields, before the final head
    /// of the same response, in one buffer and split at every offset (a proxy forwards them: RFC 9110 §15.2).
    @Test func interimResponsesAreReportedBeforeTheFinalHead() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        let expected: [Recorded] = [
            .interim(100, []), .interim(103, ["Link: </a.css>; rel=preload"]),
            Self.response(200, "OK", ["Content-Length: 2"], .contentLength(2)), Self.body("ok"), .end(nil),
        ]
        #expect(Self.responses(text) == expected)
        Self.checkEverySplit(.response, Array(text.utf8), expected)
        // An interim head alone is consumed with its event.
        let (event, consumed) = Self.first(.response, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2")
        guard case .interimHead(let head) = event else {
            Issue.record("\(event)")
            return
        }
        #expect(head.status == 100 && consumed == 25)
    }

    /// A response may have 32 interim heads; the 33rd is an error (an upstream cannot send them forever).
    @Test func interimResponsesPastTheLimitAreAnError() {
        let interim = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        let final = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        let atLimit = Self.responses(String(repeating: interim, count: 32) + final)
        #expect(atLimit.count == 34)
        #expect(atLimit.suffix(2) == [Self.response(200, "OK", ["Content-Length: 0"], .contentLength(0)), .end(nil)])
        let past = Self.responses(String(repeating: interim, count: 33) + final)
        #expect(past.count == 33)
        #expect(past.last == Self.malformed("more than 32 interim (1xx) responses"))
        // The count is per response: 32 before each of two responses is fine.
        let two = Self.responses(String(repeating: interim, count: 32) + final + String(repeating: interim, count: 32) + final)
        #expect(two.count == 68 && two.last == .end(nil))
    }

    /// A 101 is an error: Sluice never forwards an upgrade.
    @Test func switchingProtocolsIsAnError() {
        #expect(Self.responses("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n") == [Self.malformed("unexpected 101 Switching Protocols")])
        #expect(Self.responses("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n") == [.interim(100, []), Self.malformed("unexpected 101 Switching Protocols")])
    }

    /// Without a length the body runs until the input ends, which gives `.end`.
    @Test func responseUntilClose() {
        var driver = Driver(.response)
        driver.feed(Array("HTTP/1.0 200 OK\r\nServer: x\r\n\r\nsome".utf8))
        driver.feed(Array(" bytes".utf8))
        driver.end()
        #expect(driver.recorded == [Self.response(200, "OK", ["Server: x"], .untilClose, version: (1, 0)), Self.body("some bytes"), .end(nil)])
        // Afterwards: needMore from both.
        let (event, consumed) = [UInt8]().withUnsafeBytes { driver.parser.next($0) }
        #expect(Self.isNeedMore(event) && consumed == 0)
        #expect(Self.isNeedMore(driver.parser.inputEnded()))
    }

    /// Response framing: a transfer coding other than a final chunked is until-close; chunked last
    /// wins over Content-Length; an invalid or differing Content-Length is an error.
    @Test func responseFraming() {
        func framing(_ fields: String) -> Recorded? { Self.responses("HTTP/1.1 200 OK\r\n\(fields)\r\n").first }
        #expect(framing("Transfer-Encoding: gzip\r\n") == Self.response(200, "OK", ["Transfer-Encoding: gzip"], .untilClose))
        #expect(framing("Transfer-Encoding: chunked, gzip\r\n") == Self.response(200, "OK", ["Transfer-Encoding: chunked, gzip"], .untilClose))
        #expect(framing("Transfer-Encoding: gzip, chunked\r\n") == Self.response(200, "OK", ["Transfer-Encoding: gzip, chunked"], .chunked))
        #expect(framing("Transfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n") == Self.response(200, "OK", ["Transfer-Encoding: gzip", "Transfer-Encoding: Chunked"], .chunked))
        #expect(
            framing("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")
                == Self.response(200, "OK", ["Transfer-Encoding: chunked", "Content-Length: 5"], .chunked))
        #expect(framing("Content-Length: 5, 5\r\n") == Self.response(200, "OK", ["Content-Length: 5"], .contentLength(5)))
        #expect(framing("") == Self.response(200, "OK", [], .untilClose))
        #expect(framing("Content-Length: 5\r\nContent-Length: 6\r\n") == Self.malformed("differing Content-Length values"))
        #expect(framing("Content-Length: five\r\n") == Self.malformed("invalid Content-Length"))
        #expect(framing("Content-Length: -1\r\n") == Self.malformed("invalid Content-Length"))
    }

    /// Status lines: the reason may be missing, empty, or hold spaces, tabs and obs-text; other
    /// shapes are errors.
    @Test func statusLineRules() {
        #expect(Self.responses("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").first == Self.response(200, "", ["Content-Length: 0"], .contentLength(0)))
        #expect(Self.responses("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n").first == Self.response(200, "", ["Content-Length: 0"], .contentLength(0)))
        #expect(Self.responses("HTTP/1.1 599 a  b\tc \u{E9}\r\n\r\n").first == Self.response(599, "a  b\tc \u{E9}", [], .untilClose))
        #expect(Self.responses("HTTP/1.1 200 OK\nContent-Length: 0\n\n").first == Self.response(200, "OK", ["Content-Length: 0"], .contentLength(0)))
        #expect(Self.responses("\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").first == Self.response(200, "OK", ["Content-Length: 0"], .contentLength(0)))
        for bad in ["HTTP/1.1 2000 OK", "HTTP/1.1 20 OK", "HTTP/1.1 20", "HTTP/1.1 099 X", "HTTP/1.1  200 OK", "HTTP/1.1 200\tOK", "HTTP/1.1 200 O\u{0}K", "HTTP/1.1 200 O\u{7F}", "HTTP/1.1 abc OK", "HTTP/1.1"] {
            #expect(Self.responses("\(bad)\r\n\r\n") == [Self.malformed("invalid status line")], "\(bad.debugDescription)")
        }
        for bad in ["HTTP/1.1x 200 OK", "HTTP/11 200 OK", "HTTPS/1.1 200 OK", "ICY 200 OK", "http/1.1 200 OK"] {
            #expect(Self.responses("\(bad)\r\n\r\n") == [Self.malformed("invalid HTTP version")], "\(bad.debugDescription)")
        }
        #expect(Self.responses("HTTP/1.1 200 OK\rX\r\n\r\n") == [Self.malformed("bare CR")])
    }

    // MARK: - End of input

    /// The input ending between messages is clean; mid-head, mid-body or mid-chunk is truncated.
    @Test func inputEnded() {
        #expect(Self.parse(.response, [], end: true) == [])
        #expect(Self.parse(.request, ["\r\n"], end: true) == [])
        #expect(Self.parse(.request, ["GET / HTTP/1.1\r\n\r\n"], end: true) == [Self.request(), .end(nil)])
        #expect(Self.parse(.response, ["HTTP/1.1 200 OK\r\nContent-Le"], end: true) == [.error(.truncated)])
        #expect(Self.parse(.request, ["G"], end: true) == [.error(.truncated)])
        #expect(
            Self.parse(.response, ["HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"], end: true) == [
                Self.response(200, "OK", ["Content-Length: 5"], .contentLength(5)), Self.body("hel"), .error(.truncated),
            ])
        #expect(
            Self.parse(.request, ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"], end: true) == [
                Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), Self.body("abc"), .error(.truncated),
            ])
        #expect(
            Self.parse(.request, ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\r\n"], end: true) == [
                Self.request("POST", "/", ["Transfer-Encoding: chunked"], .chunked), .error(.truncated),
            ])
        // After an interim response the final one is owed.
        #expect(Self.parse(.response, ["HTTP/1.1 100 Continue\r\n\r\n"], end: true) == [.interim(100, []), .error(.truncated)])
        #expect(HTTP1ParseError.truncated.kind == .truncated)
    }

    /// A body complete but whose `.end` was not yet fetched ends cleanly.
    @Test func inputEndedAfterCompleteBody() {
        var parser = HTTP1Parser(kind: .response, limits: .init(maxHeadBytes: 1024))
        let bytes = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".utf8)
        let consumed = bytes.withUnsafeBytes { parser.next($0).consumed }
        let (body, _) = Array(bytes[consumed...]).withUnsafeBytes { parser.next($0) }
        guard case .body(0..<2) = body else {
            Issue.record("expected the body, got \(body)")
            return
        }
        guard case .end(nil) = parser.inputEnded() else {
            Issue.record("expected end")
            return
        }
        #expect(Self.isNeedMore(parser.inputEnded()))
    }

    /// After an error every call returns the same error, consuming nothing, whatever it is shown.
    @Test func errorsAreSticky() {
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 1024))
        let bad = Array("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".utf8)
        let good = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        for bytes in [bad, good, [], bad] {
            let (event, consumed) = bytes.withUnsafeBytes { parser.next($0) }
            guard case .error(let error) = event else {
                Issue.record("expected the error, got \(event)")
                return
            }
            #expect(error == .malformed("invalid Content-Length") && error.kind == .malformed && consumed == 0)
        }
        guard case .error(.malformed("invalid Content-Length")) = parser.inputEnded() else {
            Issue.record("expected the error from inputEnded")
            return
        }
        var truncated = HTTP1Parser(kind: .response, limits: .init(maxHeadBytes: 1024))
        _ = Array("HTTP/1.1 2".utf8).withUnsafeBytes { truncated.next($0) }
        guard case .error(.truncated) = truncated.inputEnded(), case .error(.truncated) = truncated.inputEnded() else {
            Issue.record("expected truncated twice")
            return
        }
        let (event, consumed) = good.withUnsafeBytes { truncated.next($0) }
        guard case .error(.truncated) = event else {
            Issue.record("expected truncated from next")
            return
        }
        #expect(consumed == 0)
    }

    // MARK: - Randomised round trip

    /// Random valid requests (random methods, targets, fields, bodies by length or in random chunks
    /// with extensions and trailers), pipelined and fed split at random points, come back exactly:
    /// every field and every body byte.
    @Test(arguments: 0..<8 as Range<UInt64>)
    func randomRequestsRoundTrip(_ seed: UInt64) {
        var rng = SplitMix64(seed: seed &* 0x9E37_79B9 &+ 17)
        let tchars = Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        let valueBytes = Array((0x21...0x7E).map { UInt8($0) })
        func token(_ maxLength: Int) -> [UInt8] {
            (0..<Int.random(in: 1...maxLength, using: &rng)).map { _ in tchars.randomElement(using: &rng)! }
        }
        func value() -> [UInt8] {
            let count = Int.random(in: 0...12, using: &rng)
            var bytes: [UInt8] = (0..<count).map { _ in
                Int.random(in: 0..<6, using: &rng) == 0 ? 0x20 : valueBytes.randomElement(using: &rng)!
            }
            while bytes.first == 0x20 { bytes.removeFirst() }
            while bytes.last == 0x20 { bytes.removeLast() }
            return bytes
        }
        func eol() -> [UInt8] { Bool.random(using: &rng) ? [0x0D, 0x0A] : [0x0A] }
        func ows() -> [UInt8] { [[], [0x20], [0x09], [0x20, 0x09, 0x20]].randomElement(using: &rng)! }
        func isFraming(_ name: [UInt8]) -> Bool {
            let lower = String(decoding: name, as: UTF8.self).lowercased()
            return lower == "content-length" || lower == "transfer-encoding"
        }
        func fields(_ count: Int) -> (wire: [UInt8], lines: [String]) {
            var wire: [UInt8] = []
            var lines: [String] = []
            for _ in 0..<count {
                var name = token(12)
                while isFraming(name) { name = token(12) }
                let v = value()
                wire += name + [0x3A] + ows() + v + ows() + eol()
                lines.append(String(decoding: name, as: UTF8.self) + ": " + String(decoding: v, as: UTF8.self))
            }
            return (wire, lines)
        }

        var wire: [UInt8] = []
        var expected: [Recorded] = []
        for _ in 0..<Int.random(in: 1...6, using: &rng) {
            let method = String(decoding: token(8), as: UTF8.self)
            let target = "/" + String(decoding: (0..<Int.random(in: 0...20, using: &rng)).map { _ in valueBytes.randomElement(using: &rng)! }, as: UTF8.self)
            let minor = Int.random(in: 0...1, using: &rng)
            var head = Array("\(method) \(target) HTTP/1.\(minor)".utf8) + eol()
            let (fieldWire, fieldLines) = fields(Int.random(in: 0...8, using: &rng))
            head += fieldWire
            let bodyLength = Int.random(in: 0...300, using: &rng)
            let body = (0..<bodyLength).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // HTTP/1.0 has no chunked framing (RFC 9112 §6.1).
            switch Int.random(in: 0..<(minor == 0 ? 2 : 3), using: &rng) {
            case 0:
                wire += head + eol()
                expected += [.request(method, target, 1, minor, fieldLines, .none), .end(nil)]
            case 1:
                let framing = "Content-Length:" + String(decoding: ows(), as: UTF8.self) + "\(bodyLength)"
                wire += head + Array(framing.utf8) + eol() + eol() + body
                expected.append(.request(method, target, 1, minor, fieldLines + ["Content-Length: \(bodyLength)"], .contentLength(bodyLength)))
                if bodyLength > 0 { expected.append(.body(body)) }
                expected.append(.end(nil))
            default:
                wire += head + Array("Transfer-Encoding: chunked".utf8) + eol() + eol()
                var rest = body[...]
                while !rest.isEmpty {
                    let size = min(rest.count, Int.random(in: 1...80, using: &rng))
                    var sizeText = String(size, radix: 16, uppercase: Bool.random(using: &rng))
                    if Bool.random(using: &rng) { sizeText = "0" + sizeText }
                    wire += Array(sizeText.utf8)
                    if Bool.random(using: &rng) { wire += ows() + Array(";ext=\"v \(size)\";x".utf8) }
                    wire += eol() + rest.prefix(size) + eol()
                    rest = rest.dropFirst(size)
                }
                wire += Array("0".utf8) + eol()
                let (trailerWire, trailerLines) = fields(Int.random(in: 0...3, using: &rng))
                wire += trailerWire + eol()
                expected.append(.request(method, target, 1, minor, fieldLines + ["Transfer-Encoding: chunked"], .chunked))
                if bodyLength > 0 { expected.append(.body(body)) }
                expected.append(.end(trailerLines.isEmpty ? nil : trailerLines))
            }
        }

        for _ in 0..<20 {
            var driver = Driver(.request, maxHeadBytes: 4096)
            var offset = 0
            while offset < wire.count {
                let size = Int.random(in: 0...min(64, wire.count - offset), using: &rng)
                driver.feed(Array(wire[offset..<(offset + size)]))
                offset += size
            }
            driver.end()
            #expect(driver.recorded == expected)
            if driver.recorded != expected { break }
        }
    }
}
