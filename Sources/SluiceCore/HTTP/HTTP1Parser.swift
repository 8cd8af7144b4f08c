/// An incremental, strict HTTP/1.x parser for one direction of one connection: requests on a
/// downstream connection, responses on an upstream connection.
///
/// It is pure: it reads bytes it is shown and returns one ``Event`` at a time, with offsets into
/// those bytes, so the caller (a channel handler holding a `ByteBuffer`) slices bodies without
/// copying them. It does no I/O, allocates only for a head's strings, and keeps no reference to
/// the bytes between calls.
///
/// The calling convention, per read:
/// ```
/// loop {
///     let (event, consumed) = bytes.withUnsafeReadableBytes { parser.next($0) }
///     // act on `event` (a `.body(range)` is `bytes[range]`, relative to the bytes passed in)
///     bytes.moveReaderIndex(forwardBy: consumed)
///     if case .needMore = event { break }
/// }
/// ```
/// Bytes not consumed must be passed again, first, on the next call (with more appended). A head
/// that is not complete yet is not consumed; the parser remembers how far it has scanned, so a head
/// that arrives a byte at a time is scanned once, not once per byte.
///
/// Strictness (what a proxy must not let through: RFC 9112, and the request-smuggling cases):
/// - Lines end in CRLF; a bare LF is accepted as a line end in heads and chunk lines (RFC 9112
///   §2.2); a bare CR is an error.
/// - Request line: `method SP request-target SP HTTP/d.d`, method a token, target without
///   controls or spaces. Status line: `HTTP/d.d SP 3DIGIT SP reason` (reason may be empty).
/// - Field names are tokens, with no whitespace before the colon; values lose surrounding
///   spaces and tabs and hold no control characters other than tab. Obsolete line folding is an error.
/// - Framing (RFC 9112 §6): see ``Framing``. For requests: `Transfer-Encoding` other than exactly
///   `chunked`, `Content-Length` that is not digits, differing `Content-Length`s, or both headers
///   together are errors. For responses: `Transfer-Encoding` wins over `Content-Length`. For both,
///   `Transfer-Encoding` in an HTTP/1.0 message is an error (RFC 9112 §6.1), and repeated equal
///   `Content-Length`s are passed on as one field.
/// - Chunked bodies: hexadecimal sizes (overflow is an error), extensions are skipped (bounded by
///   ``Limits/maxChunkLineBytes``), the CRLF after each chunk's data is required, trailers are
///   field lines as in a head.
///
/// Strings (method, target, reason, field names and values) are decoded as UTF-8 once per item;
/// obs-text bytes (0x80–0xFF) that are not valid UTF-8 become U+FFFD.
public struct HTTP1Parser: Sendable {
    /// Which messages this parser reads.
    public enum Kind: Sendable, Equatable {
        case request
        case response
    }

    public struct Limits: Sendable, Equatable {
        /// The most bytes a head may take (request or status line, fields, and the empty line);
        /// also the limit for a chunked body's trailer section.
        public var maxHeadBytes: Int
        /// The most bytes a chunk-size line may take, extensions and the line end included.
        public var maxChunkLineBytes: Int
        /// Responses: the most interim (1xx) heads one response may have; one more is an error.
        public var maxInterimResponses: Int

        public init(maxHeadBytes: Int, maxChunkLineBytes: Int = 4096, maxInterimResponses: Int = 32) {
            self.maxHeadBytes = maxHeadBytes
            self.maxChunkLineBytes = maxChunkLineBytes
            self.maxInterimResponses = maxInterimResponses
        }
    }

    /// How a message's body is delimited (RFC 9112 §6.3).
    public enum Framing: Sendable, Equatable {
        /// No body: a request with neither `Content-Length` nor `Transfer-Encoding`; a response to
        /// `HEAD`; a 204 or 304 response. `.end` follows the head at once.
        case none
        /// Exactly this many bytes (`Content-Length`; 0 is reported as `.contentLength(0)`).
        case contentLength(Int)
        /// `Transfer-Encoding: chunked`.
        case chunked
        /// Responses only: the body runs until the connection closes (no length, or a transfer
        /// coding other than chunked); see ``inputEnded()``.
        case untilClose
        /// Responses only: a `101 Switching Protocols` to a request that asked for an upgrade
        /// (``expectUpgrade()``). Every byte after the head belongs to the new protocol: it is passed
        /// on as body, unparsed, until the input ends (the `.end` then comes from ``inputEnded()``).
        case tunnel
    }

    public struct RequestHead: Sendable {
        /// As received, case preserved (methods are case-sensitive).
        public var method: String
        public var target: String
        public var versionMajor: Int
        public var versionMinor: Int
        /// Field lines in order, names as received (case preserved), values trimmed.
        public var fields: [(String, String)]

        public init(method: String, target: String, versionMajor: Int, versionMinor: Int, fields: [(String, String)]) {
            self.method = method
            self.target = target
            self.versionMajor = versionMajor
            self.versionMinor = versionMinor
            self.fields = fields
        }
    }

    public struct ResponseHead: Sendable {
        public var status: Int
        public var reason: String
        public var versionMajor: Int
        public var versionMinor: Int
        public var fields: [(String, String)]

        public init(status: Int, reason: String, versionMajor: Int, versionMinor: Int, fields: [(String, String)]) {
            self.status = status
            self.reason = reason
            self.versionMajor = versionMajor
            self.versionMinor = versionMinor
            self.fields = fields
        }
    }

    public enum Event: Sendable {
        /// Nothing more can be parsed from the bytes passed; call again with more.
        case needMore
        /// A request head (``Kind/request`` only), complete and valid.
        case requestHead(RequestHead, Framing)
        /// An interim (1xx) response head (``Kind/response`` only): no body, and the final head of the
        /// same response follows. More than ``Limits/maxInterimResponses`` of them is an error. A 101
        /// is never interim: it is a final head with framing ``Framing/tunnel`` when the request asked
        /// for an upgrade (``expectUpgrade()``), and an error otherwise.
        case interimHead(ResponseHead)
        /// A final response head (``Kind/response`` only).
        case responseHead(ResponseHead, Framing)
        /// Body bytes: these offsets of the bytes passed in (never empty).
        case body(Range<Int>)
        /// The message is complete; `trailers` are a chunked body's trailer fields, `nil` when there were none.
        case end(trailers: [(String, String)]?)
        /// The input is not HTTP/1 or breaks a rule above; the connection cannot continue.
        /// After an error every call returns the same error.
        case error(HTTP1ParseError)
    }

    // MARK: - State

    /// Where the parser is in the current message. Legal transitions:
    /// - `head` → `bodyLength` / `untilClose` / `chunkSize` when a head is parsed (after an
    ///   interim 1xx head it stays in `head`);
    /// - `bodyLength(n)` → `bodyLength(m < n)` per body event, `bodyLength(0)` → `head` on `.end`;
    /// - `chunkSize` → `chunkData` → `chunkDataEnd` → `chunkSize` ..., `chunkSize` (size 0) →
    ///   `trailers` → `head` on `.end`;
    /// - `untilClose` → `inputEnded` (via ``inputEnded()``);
    /// - any state → `error` (sticky); `head` / `bodyLength(0)` / `untilClose` → `inputEnded`.
    private enum State: Sendable {
        /// Waiting for (the rest of) a head; ``headScan`` says how far it has been scanned.
        case head
        /// A body of known length, this many bytes still to come; `0`: `.end` is the next event
        /// (also used for ``Framing/none``).
        case bodyLength(remaining: Int)
        /// A response body delimited by the end of the input.
        case untilClose
        /// Waiting for a complete chunk-size line; ``lineScanned`` says how far it has been scanned.
        case chunkSize
        /// Inside a chunk's data, this many bytes still to come (never 0).
        case chunkData(remaining: Int)
        /// A chunk's data is complete; its CRLF (or LF) comes next.
        case chunkDataEnd
        /// After the last chunk: waiting for the complete trailer section (which may be just the
        /// empty line); ``lineScanned`` says how far it has been scanned.
        case trailers
        /// ``inputEnded()`` was called and the input ended cleanly: nothing more to parse.
        case inputEnded
        /// Sticky: every call returns this error.
        case error(HTTP1ParseError)
    }

    private let kind: Kind
    private let limits: Limits
    private var state: State = .head
    /// Head: how many bytes (from the start of the bytes passed) have been scanned for the end of
    /// the head. Chunk-size line and trailers: the same, for their end.
    private var lineScanned = 0
    /// Head: the offset of the start line after skipped leading empty lines; -1 while only empty
    /// lines (or nothing) have been seen.
    private var headStart = -1
    /// Responses: the next response head answers a HEAD request.
    private var nextResponseIsToHEAD = false
    /// Responses: the request the next response answers asked for an upgrade (a 101 may come).
    private var nextResponseMayUpgrade = false
    /// Responses: interim (1xx) heads of the current exchange so far; once there is one, the
    /// exchange has begun even though no byte of the final head has arrived.
    private var interimHeads = 0

    public init(kind: Kind, limits: Limits) {
        self.kind = kind
        self.limits = limits
    }

    /// Responses: the request that the next response answers is a `HEAD` (its response has no body
    /// whatever its framing headers say). Call before the request is sent; it applies to the
    /// next response head only (interim 1xx heads do not use it up). Requests: has no effect.
    public mutating func expectResponseToHEAD() {
        self.nextResponseIsToHEAD = true
    }

    /// Responses: the request that the next response answers asks for an upgrade (`Connection:
    /// upgrade` and `Upgrade`), so a `101` to it switches the connection to another protocol (framing
    /// ``Framing/tunnel``) instead of being an error. It applies to the next final head only.
    public mutating func expectUpgrade() {
        self.nextResponseMayUpgrade = true
    }

    /// Requests: the connection switched protocols after the last request (its upgrade was answered
    /// with a `101`): every byte from here on is passed on as body, unparsed, until the input ends.
    /// Call between messages, after the upgrade request's `.end`.
    public mutating func switchToTunnel() {
        self.resetForNextMessage()
        self.state = .untilClose
    }

    /// Parses from the start of `bytes`. Returns one event and how many bytes it consumed.
    ///
    /// - A head is consumed whole with its event, never in part: `.needMore` with consumed 0
    ///   while it is incomplete. Leading empty lines before a head count towards
    ///   ``Limits/maxHeadBytes`` and are consumed with the head.
    /// - Chunked bodies: chunk framing (size lines, the CRLF after the data) is consumed as it is
    ///   parsed, so `.needMore` may come with consumed > 0; a `.body` event's consumed covers its
    ///   data and the framing before and after it.
    /// - After the last byte of a `Content-Length` body (and right after a head with framing
    ///   ``Framing/none`` or `.contentLength(0)`), the next call returns `.end(trailers: nil)`
    ///   with consumed 0, whatever bytes it is shown.
    /// - After `.end`, the parser reads the next message: bytes left over are its start.
    /// - After an error, every call returns it with consumed 0; after ``inputEnded()``, every call
    ///   returns `.needMore` (or the error) with consumed 0.
    public mutating func next(_ bytes: UnsafeRawBufferPointer) -> (event: Event, consumed: Int) {
        switch self.state {
        case .error(let error):
            return (.error(error), 0)
        case .inputEnded:
            return (.needMore, 0)
        case .head:
            return self.nextHead(bytes)
        case .bodyLength(let remaining):
            if remaining == 0 {
                self.resetForNextMessage()
                return (.end(trailers: nil), 0)
            }
            if bytes.count == 0 { return (.needMore, 0) }
            let n = min(remaining, bytes.count)
            self.state = .bodyLength(remaining: remaining - n)
            return (.body(0..<n), n)
        case .untilClose:
            if bytes.count == 0 { return (.needMore, 0) }
            return (.body(0..<bytes.count), bytes.count)
        case .chunkSize, .chunkData, .chunkDataEnd, .trailers:
            return self.nextChunked(bytes)
        }
    }

    /// The connection's input ended (EOF or half-close). Returns `.end(trailers: nil)` when that
    /// completes an ``Framing/untilClose`` body, `.needMore` when no message had begun (a clean
    /// end between messages), and `.error(.truncated)` when a message was cut short.
    ///
    /// Also `.end(trailers: nil)` when the message was complete but its `.end` not yet returned
    /// by ``next(_:)`` (a `Content-Length` body's last byte, or framing ``Framing/none``). Only empty
    /// lines before a request count as no message. After this returns `.end` or `.needMore`,
    /// ``next(_:)`` returns `.needMore` and this returns `.needMore`; after `.error`, both return
    /// the error.
    public mutating func inputEnded() -> Event {
        switch self.state {
        case .error(let error):
            return .error(error)
        case .inputEnded:
            return .needMore
        case .head:
            if self.headStart < 0 && self.interimHeads == 0 {
                self.state = .inputEnded
                return .needMore
            }
            return self.failed(.truncated)
        case .bodyLength(let remaining):
            if remaining == 0 {
                self.state = .inputEnded
                return .end(trailers: nil)
            }
            return self.failed(.truncated)
        case .untilClose:
            self.state = .inputEnded
            return .end(trailers: nil)
        case .chunkSize, .chunkData, .chunkDataEnd, .trailers:
            return self.failed(.truncated)
        }
    }

    // MARK: - Transitions

    private mutating func failed(_ error: HTTP1ParseError) -> Event {
        self.state = .error(error)
        return .error(error)
    }

    private mutating func fail(_ error: HTTP1ParseError) -> (event: Event, consumed: Int) {
        (self.failed(error), 0)
    }

    private mutating func resetForNextMessage() {
        self.state = .head
        self.lineScanned = 0
        self.headStart = -1
        self.interimHeads = 0
    }

    // MARK: - Heads

    private mutating func nextHead(_ p: UnsafeRawBufferPointer) -> (event: Event, consumed: Int) {
        let count = p.count
        let limit = min(count, self.limits.maxHeadBytes)
        var i = self.lineScanned
        if self.headStart < 0 {
            // Leading empty lines (RFC 9112 §2.2).
            while i < limit {
                let b = p[i]
                if b == Byte.lf {
                    i += 1
                } else if b == Byte.cr {
                    if i + 1 >= count { break }
                    if p[i + 1] != Byte.lf { return self.fail(.malformed("bare CR")) }
                    i += 2
                } else {
                    self.headStart = i
                    break
                }
            }
        }
        var end = -1
        if self.headStart >= 0 {
            let start = self.headStart
            // The start line is not empty, so the end is at start + 1 at the earliest.
            if i <= start { i = start + 1 }
            while i < limit {
                if p[i] == Byte.lf && Self.endsEmptyLine(p, lf: i, sectionStart: start) {
                    end = i
                    break
                }
                i += 1
            }
        }
        if end < 0 {
            self.lineScanned = max(0, min(i, count))
            if count > self.limits.maxHeadBytes { return self.fail(.headTooLarge) }
            return (.needMore, 0)
        }

        let start = self.headStart
        switch self.kind {
        case .request:
            switch Self.parseRequestHead(p, start: start, end: end) {
            case .failure(let error):
                return self.fail(error)
            case .success(let (head, framing)):
                self.enterBody(framing)
                return (.requestHead(head, framing), end + 1)
            }
        case .response:
            switch Self.parseResponseHead(p, start: start, end: end) {
            case .failure(let error):
                return self.fail(error)
            case .success(let (head, framing)):
                if head.status == 101 {
                    guard self.nextResponseMayUpgrade, !self.nextResponseIsToHEAD else {
                        return self.fail(.malformed("unexpected 101 Switching Protocols"))
                    }
                    self.nextResponseMayUpgrade = false
                    self.enterBody(.tunnel)
                    return (.responseHead(head, .tunnel), end + 1)
                }
                if head.status < 200 {
                    // Interim response: no body; the next head belongs to the same response.
                    guard self.interimHeads < self.limits.maxInterimResponses else {
                        return self.fail(.malformed("more than \(self.limits.maxInterimResponses) interim (1xx) responses"))
                    }
                    self.interimHeads += 1
                    self.lineScanned = 0
                    self.headStart = -1
                    return (.interimHead(head), end + 1)
                }
                let final: Framing
                if self.nextResponseIsToHEAD || head.status == 204 || head.status == 304 {
                    final = .none
                } else {
                    final = framing
                }
                self.nextResponseIsToHEAD = false
                self.nextResponseMayUpgrade = false
                self.enterBody(final)
                return (.responseHead(head, final), end + 1)
            }
        }
    }

    private mutating func enterBody(_ framing: Framing) {
        self.lineScanned = 0
        self.headStart = -1
        self.interimHeads = 0
        switch framing {
        case .none: self.state = .bodyLength(remaining: 0)
        case .contentLength(let n): self.state = .bodyLength(remaining: n)
        case .chunked: self.state = .chunkSize
        case .untilClose, .tunnel: self.state = .untilClose
        }
    }

    /// Whether the LF at `lf` ends an empty line, in a section that starts at `sectionStart`.
    @inline(__always)
    private static func endsEmptyLine(_ p: UnsafeRawBufferPointer, lf: Int, sectionStart: Int) -> Bool {
        if lf == sectionStart { return true }
        let b = p[lf - 1]
        if b == Byte.lf { return true }
        if b == Byte.cr { return lf - 1 == sectionStart || p[lf - 2] == Byte.lf }
        return false
    }

    /// Parses a complete request head: `start` is the request line's first byte, `end` the LF of
    /// the empty line.
    private static func parseRequestHead(
        _ p: UnsafeRawBufferPointer,
        start: Int,
        end: Int
    ) -> Result<(RequestHead, Framing), HTTP1ParseError> {
        // method SP
        var i = start
        while Self.isTokenByte(p[i]) { i += 1 }
        if p[i] != Byte.sp || i == start {
            let b = p[i]
            let structural = b == Byte.sp || b == Byte.cr || b == Byte.lf
            return .failure(.malformed(structural ? "invalid request line" : "invalid method"))
        }
        let methodEnd = i
        i += 1
        // request-target SP
        let targetStart = i
        while true {
            let b = p[i]
            if b <= Byte.sp || b == Byte.del { break }
            i += 1
        }
        if p[i] != Byte.sp || i == targetStart {
            let b = p[i]
            let structural = b == Byte.sp || b == Byte.cr || b == Byte.lf
            return .failure(.malformed(structural ? "invalid request line" : "invalid request target"))
        }
        let targetEnd = i
        i += 1
        // HTTP-version CRLF
        guard let (major, minor) = Self.parseVersion(p, at: i) else {
            return .failure(.malformed("invalid HTTP version"))
        }
        i += 8
        switch Self.lineEnd(p, at: i) {
        case 0: return .failure(.malformed("invalid HTTP version"))
        case -1: return .failure(.malformed("bare CR"))
        case let n: i += n
        }

        var fields: [(String, String)] = []
        fields.reserveCapacity(16)
        var scan = FramingScan()
        if let error = Self.parseFields(p, from: i, end: end, into: &fields, framing: &scan) {
            return .failure(error)
        }
        if let error = scan.error { return .failure(error) }
        let framing: Framing
        if scan.transferEncodingElements > 0 {
            if major == 1 && minor == 0 {
                // RFC 9112 §6.1: framing an HTTP/1.0 recipient may not understand is faulty.
                return .failure(.malformed("Transfer-Encoding in an HTTP/1.0 request"))
            }
            if scan.contentLength >= 0 {
                return .failure(.malformed("both Content-Length and Transfer-Encoding"))
            }
            guard scan.transferEncodingElements == 1, scan.lastTransferCodingIsChunked, !scan.emptyTransferCoding else {
                return .failure(.malformed("unsupported Transfer-Encoding"))
            }
            framing = .chunked
        } else if scan.contentLength >= 0 {
            framing = .contentLength(scan.contentLength)
        } else {
            framing = .none
        }
        let head = RequestHead(
            method: Self.string(p, start, methodEnd),
            target: Self.string(p, targetStart, targetEnd),
            versionMajor: major,
            versionMinor: minor,
            fields: fields
        )
        return .success((head, framing))
    }

    /// Parses a complete response head: `start` is the status line's first byte, `end` the LF of
    /// the empty line. The framing returned is from the fields only (HEAD, 204 and 304 are the caller's).
    private static func parseResponseHead(
        _ p: UnsafeRawBufferPointer,
        start: Int,
        end: Int
    ) -> Result<(ResponseHead, Framing), HTTP1ParseError> {
        var i = start
        guard let (major, minor) = Self.parseVersion(p, at: i) else {
            return .failure(.malformed("invalid HTTP version"))
        }
        i += 8
        guard p[i] == Byte.sp else {
            let b = p[i]
            return .failure(.malformed(b == Byte.cr || b == Byte.lf ? "invalid status line" : "invalid HTTP version"))
        }
        i += 1
        var status = 0
        for _ in 0..<3 {
            let d = p[i] &- Byte.zero
            guard d <= 9 else { return .failure(.malformed("invalid status line")) }
            status = status * 10 + Int(d)
            i += 1
        }
        guard status >= 100 else { return .failure(.malformed("invalid status line")) }
        var reasonStart = i
        var reasonEnd = i
        if p[i] == Byte.sp {
            i += 1
            reasonStart = i
            while true {
                let b = p[i]
                if b == Byte.lf || b == Byte.cr { break }
                guard b >= Byte.sp && b != Byte.del || b == Byte.htab else {
                    return .failure(.malformed("invalid status line"))
                }
                i += 1
            }
            reasonEnd = i
        }
        switch Self.lineEnd(p, at: i) {
        case 0: return .failure(.malformed("invalid status line"))
        case -1: return .failure(.malformed("bare CR"))
        case let n: i += n
        }

        var fields: [(String, String)] = []
        fields.reserveCapacity(16)
        var scan = FramingScan()
        if let error = Self.parseFields(p, from: i, end: end, into: &fields, framing: &scan) {
            return .failure(error)
        }
        if let error = scan.error { return .failure(error) }
        let framing: Framing
        if scan.transferEncodingElements > 0 {
            if major == 1 && minor == 0 {
                // RFC 9112 §6.1: as for requests, this framing is faulty.
                return .failure(.malformed("Transfer-Encoding in an HTTP/1.0 response"))
            }
            framing = scan.lastTransferCodingIsChunked ? .chunked : .untilClose
        } else if scan.contentLength >= 0 {
            framing = .contentLength(scan.contentLength)
        } else {
            framing = .untilClose
        }
        let head = ResponseHead(
            status: status,
            reason: Self.string(p, reasonStart, reasonEnd),
            versionMajor: major,
            versionMinor: minor,
            fields: fields
        )
        return .success((head, framing))
    }

    /// `HTTP/` DIGIT `.` DIGIT at `i`, or nil. Never reads past a line's LF (no byte it
    /// matches is an LF, and it stops at the first mismatch).
    @inline(__always)
    private static func parseVersion(_ p: UnsafeRawBufferPointer, at i: Int) -> (Int, Int)? {
        guard p[i] == UInt8(ascii: "H"), p[i + 1] == UInt8(ascii: "T"), p[i + 2] == UInt8(ascii: "T"),
            p[i + 3] == UInt8(ascii: "P"), p[i + 4] == UInt8(ascii: "/")
        else { return nil }
        let major = p[i + 5] &- Byte.zero
        guard major <= 9, p[i + 6] == UInt8(ascii: ".") else { return nil }
        let minor = p[i + 7] &- Byte.zero
        guard minor <= 9 else { return nil }
        return (Int(major), Int(minor))
    }

    /// The length of the line end at `i` (1 for LF, 2 for CRLF), 0 when there is none, -1 for a bare CR.
    @inline(__always)
    private static func lineEnd(_ p: UnsafeRawBufferPointer, at i: Int) -> Int {
        let b = p[i]
        if b == Byte.lf { return 1 }
        if b == Byte.cr { return p[i + 1] == Byte.lf ? 2 : -1 }
        return 0
    }

    /// What the field lines say about framing, gathered while they are parsed.
    private struct FramingScan {
        /// The Content-Length value, -1 when there is none.
        var contentLength = -1
        /// The first framing error (invalid or differing Content-Length).
        var error: HTTP1ParseError?
        /// Whether a Content-Length field held a list (`3, 3`) rather than one value.
        var contentLengthIsList = false
        /// How many transfer-coding list elements (empty ones included) all TE fields held.
        var transferEncodingElements = 0
        var emptyTransferCoding = false
        /// Whether the last non-empty transfer coding is `chunked`.
        var lastTransferCodingIsChunked = false
    }

    /// Parses field lines from `from` (the first field line, or the empty line) to `end` (the
    /// LF of the empty line), appending to `fields`. `framing` gathers Content-Length and
    /// Transfer-Encoding; trailers pass a scan they ignore.
    private static func parseFields(
        _ p: UnsafeRawBufferPointer,
        from: Int,
        end: Int,
        into fields: inout [(String, String)],
        framing scan: inout FramingScan
    ) -> HTTP1ParseError? {
        var i = from
        while i < end {
            let first = p[i]
            if first == Byte.cr {
                // The empty line (CRLF at end - 1), or a bare CR.
                if p[i + 1] == Byte.lf { break }
                return .malformed("bare CR")
            }
            if first == Byte.sp || first == Byte.htab { return .malformed("obsolete line folding") }
            // field-name ":"
            let nameStart = i
            while Self.isTokenByte(p[i]) { i += 1 }
            let stop = p[i]
            if stop != Byte.colon {
                if stop == Byte.sp || stop == Byte.htab { return .malformed("whitespace before colon") }
                if stop == Byte.cr || stop == Byte.lf { return .malformed("missing colon in field line") }
                return .malformed("invalid character in field name")
            }
            if i == nameStart { return .malformed("empty field name") }
            let nameEnd = i
            i += 1
            // OWS field-value OWS
            while p[i] == Byte.sp || p[i] == Byte.htab { i += 1 }
            let valueStart = i
            var valueEnd = i
            while true {
                let b = p[i]
                if b > Byte.sp && b != Byte.del {
                    i += 1
                    valueEnd = i
                } else if b == Byte.sp || b == Byte.htab {
                    i += 1
                } else if b == Byte.lf {
                    i += 1
                    break
                } else if b == Byte.cr {
                    if p[i + 1] != Byte.lf { return .malformed("bare CR") }
                    i += 2
                    break
                } else {
                    return .malformed("invalid character in field value")
                }
            }
            let nameLength = nameEnd - nameStart
            if nameLength == 14 && Self.equalsLowercased(p, nameStart, "content-length") {
                let repeated = scan.contentLength >= 0
                Self.scanContentLength(p, valueStart, valueEnd, into: &scan)
                // Equal values (two fields, or a list `3, 3`) are one length (RFC 9110 §8.6): exactly
                // one `Content-Length` field goes on, so no parser behind Sluice sees the repeat.
                if repeated { continue }
                if scan.contentLengthIsList {
                    fields.append((Self.string(p, nameStart, nameEnd), String(scan.contentLength)))
                    continue
                }
            } else if nameLength == 17 && Self.equalsLowercased(p, nameStart, "transfer-encoding") {
                Self.scanTransferEncoding(p, valueStart, valueEnd, into: &scan)
            }
            fields.append((Self.string(p, nameStart, nameEnd), Self.string(p, valueStart, valueEnd)))
        }
        return nil
    }

    /// `Content-Length = 1*DIGIT`, as a list of identical values at most (RFC 9110 §8.6).
    private static func scanContentLength(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, into scan: inout FramingScan) {
        if scan.error != nil { return }
        var i = start
        while true {
            // One element: OWS 1*DIGIT OWS
            while i < end && (p[i] == Byte.sp || p[i] == Byte.htab) { i += 1 }
            var value = 0
            var digits = 0
            while i < end {
                let d = p[i] &- Byte.zero
                if d > 9 { break }
                digits += 1
                if digits > 18 {
                    scan.error = .malformed("invalid Content-Length")
                    return
                }
                value = value * 10 + Int(d)
                i += 1
            }
            while i < end && (p[i] == Byte.sp || p[i] == Byte.htab) { i += 1 }
            guard digits > 0, i == end || p[i] == Byte.comma else {
                scan.error = .malformed("invalid Content-Length")
                return
            }
            if scan.contentLength >= 0 && scan.contentLength != value {
                scan.error = .malformed("differing Content-Length values")
                return
            }
            scan.contentLength = value
            if i == end { return }
            scan.contentLengthIsList = true
            i += 1  // the comma
        }
    }

    /// `Transfer-Encoding = #transfer-coding`: counts the elements and notes whether the last is `chunked`.
    private static func scanTransferEncoding(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int, into scan: inout FramingScan) {
        var i = start
        while true {
            while i < end && (p[i] == Byte.sp || p[i] == Byte.htab) { i += 1 }
            let elementStart = i
            var elementEnd = i
            while i < end && p[i] != Byte.comma {
                if p[i] != Byte.sp && p[i] != Byte.htab { elementEnd = i + 1 }
                i += 1
            }
            scan.transferEncodingElements += 1
            if elementEnd == elementStart {
                scan.emptyTransferCoding = true
            } else {
                scan.lastTransferCodingIsChunked =
                    elementEnd - elementStart == 7 && Self.equalsLowercased(p, elementStart, "chunked")
            }
            if i == end { return }
            i += 1  // the comma
        }
    }

    // MARK: - Chunked bodies

    private mutating func nextChunked(_ p: UnsafeRawBufferPointer) -> (event: Event, consumed: Int) {
        let count = p.count
        var pos = 0
        while true {
            switch self.state {
            case .chunkSize:
                let limit = min(count, pos + self.limits.maxChunkLineBytes)
                var i = pos + self.lineScanned
                while i < limit && p[i] != Byte.lf { i += 1 }
                if i >= limit {
                    if count - pos >= self.limits.maxChunkLineBytes {
                        return self.fail(.malformed("chunk line too long"))
                    }
                    self.lineScanned = i - pos
                    return (.needMore, pos)
                }
                let size: Int
                switch Self.parseChunkSizeLine(p, start: pos, lf: i) {
                case .failure(let error): return self.fail(error)
                case .success(let n): size = n
                }
                pos = i + 1
                self.lineScanned = 0
                self.state = size == 0 ? .trailers : .chunkData(remaining: size)

            case .chunkData(let remaining):
                if pos == count { return (.needMore, pos) }
                let n = min(remaining, count - pos)
                let range = pos..<(pos + n)
                pos += n
                if n < remaining {
                    self.state = .chunkData(remaining: remaining - n)
                    return (.body(range), pos)
                }
                self.state = .chunkDataEnd
                // Consume the CRLF after the data too, if it is here already.
                switch Self.chunkDataEnd(p, at: pos) {
                case -1: return self.fail(.malformed("missing CRLF after chunk data"))
                case 0: break
                case let n:
                    pos += n
                    self.state = .chunkSize
                }
                return (.body(range), pos)

            case .chunkDataEnd:
                switch Self.chunkDataEnd(p, at: pos) {
                case -1: return self.fail(.malformed("missing CRLF after chunk data"))
                case 0: return (.needMore, pos)
                case let n:
                    pos += n
                    self.state = .chunkSize
                }

            case .trailers:
                let limit = min(count, pos + self.limits.maxHeadBytes)
                var i = pos + self.lineScanned
                var end = -1
                while i < limit {
                    if p[i] == Byte.lf && Self.endsEmptyLine(p, lf: i, sectionStart: pos) {
                        end = i
                        break
                    }
                    i += 1
                }
                if end < 0 {
                    self.lineScanned = i - pos
                    if count - pos > self.limits.maxHeadBytes { return self.fail(.headTooLarge) }
                    return (.needMore, pos)
                }
                var trailers: [(String, String)] = []
                var ignored = FramingScan()
                if let error = Self.parseFields(p, from: pos, end: end, into: &trailers, framing: &ignored) {
                    return self.fail(error)
                }
                self.resetForNextMessage()
                return (.end(trailers: trailers.isEmpty ? nil : trailers), end + 1)

            case .head, .bodyLength, .untilClose, .inputEnded, .error:
                preconditionFailure("nextChunked is called in chunked-body states only, not \(self.state)")
            }
        }
    }

    /// The CRLF (or LF) after a chunk's data at `i`: its length, 0 when more bytes are needed,
    /// -1 when something else is there.
    @inline(__always)
    private static func chunkDataEnd(_ p: UnsafeRawBufferPointer, at i: Int) -> Int {
        if i >= p.count { return 0 }
        let b = p[i]
        if b == Byte.lf { return 1 }
        guard b == Byte.cr else { return -1 }
        if i + 1 >= p.count { return 0 }
        return p[i + 1] == Byte.lf ? 2 : -1
    }

    /// `chunk-size [BWS] [; chunk-ext] CRLF` from `start` to the LF at `lf`: the size.
    private static func parseChunkSizeLine(_ p: UnsafeRawBufferPointer, start: Int, lf: Int) -> Result<Int, HTTP1ParseError> {
        var lineEnd = lf
        if lineEnd > start && p[lineEnd - 1] == Byte.cr { lineEnd -= 1 }
        var i = start
        var size = 0
        while i < lineEnd {
            let digit = Self.hexValue(p[i])
            if digit < 0 { break }
            // 15 hexadecimal digits are at most 2^60 - 1, which cannot overflow.
            if i - start == 15 { return .failure(.malformed("invalid chunk size")) }
            size = size << 4 | digit
            i += 1
        }
        if i == start { return .failure(.malformed("invalid chunk size")) }
        while i < lineEnd && (p[i] == Byte.sp || p[i] == Byte.htab) { i += 1 }
        if i == lineEnd { return .success(size) }
        if p[i] == Byte.cr { return .failure(.malformed("bare CR")) }
        guard p[i] == Byte.semicolon else { return .failure(.malformed("invalid chunk size")) }
        i += 1
        while i < lineEnd {
            let b = p[i]
            if b == Byte.cr { return .failure(.malformed("bare CR")) }
            guard b >= Byte.sp && b != Byte.del || b == Byte.htab else {
                return .failure(.malformed("invalid chunk extension"))
            }
            i += 1
        }
        return .success(size)
    }

    @inline(__always)
    private static func hexValue(_ b: UInt8) -> Int {
        let d = b &- Byte.zero
        if d <= 9 { return Int(d) }
        let l = (b | 0x20) &- UInt8(ascii: "a")
        if l <= 5 { return Int(l) + 10 }
        return -1
    }

    // MARK: - Bytes

    private enum Byte {
        static let htab: UInt8 = 0x09
        static let lf: UInt8 = 0x0A
        static let cr: UInt8 = 0x0D
        static let sp: UInt8 = 0x20
        static let comma: UInt8 = 0x2C
        static let zero: UInt8 = 0x30
        static let colon: UInt8 = 0x3A
        static let semicolon: UInt8 = 0x3B
        static let del: UInt8 = 0x7F
    }

    /// tchar (RFC 9110 §5.6.2) as bit sets: bytes 0–63 and 64–127 (none above 127 is a tchar).
    /// `!#$%&'*+-.` and digits; letters and `^_`|~`.
    private static let tokenBitsLow: UInt64 = 0x03FF_6CFA_0000_0000
    private static let tokenBitsHigh: UInt64 = 0x57FF_FFFF_C7FF_FFFE

    @inline(__always)
    static func isTokenByte(_ b: UInt8) -> Bool {
        if b < 64 { return (Self.tokenBitsLow >> UInt64(b)) & 1 == 1 }
        if b < 128 { return (Self.tokenBitsHigh >> UInt64(b &- 64)) & 1 == 1 }
        return false
    }

    /// Whether the bytes at `start` equal `lowercase` (ASCII letters, digits and `-`),
    /// ignoring ASCII case; the caller has checked the length and that the bytes are tchar.
    @inline(__always)
    private static func equalsLowercased(_ p: UnsafeRawBufferPointer, _ start: Int, _ lowercase: StaticString) -> Bool {
        let expected = lowercase.utf8Start
        for k in 0..<lowercase.utf8CodeUnitCount where p[start + k] | 0x20 != expected[k] {
            return false
        }
        return true
    }

    @inline(__always)
    private static func string(_ p: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String {
        if start == end { return "" }
        return String(decoding: UnsafeRawBufferPointer(rebasing: p[start..<end]), as: UTF8.self)
    }
}

/// Why the bytes could not be parsed.
public struct HTTP1ParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// The head (or a trailer section) is larger than ``HTTP1Parser/Limits/maxHeadBytes``.
        case headTooLarge
        /// The input ended in the middle of a message.
        case truncated
        /// Anything else; ``detail`` says what, for the log and a 400's body.
        case malformed
    }

    public var kind: Kind
    /// A short lower-case phrase: "invalid character in field name", "invalid chunk size", ...
    public var detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public static func malformed(_ detail: String) -> HTTP1ParseError { HTTP1ParseError(.malformed, detail) }
    public static let headTooLarge = HTTP1ParseError(.headTooLarge, "head too large")
    public static let truncated = HTTP1ParseError(.truncated, "input ended mid-message")

    public var description: String { self.detail }
}
