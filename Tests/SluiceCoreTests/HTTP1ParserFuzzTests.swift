import SluiceCore
import Testing

/// Robustness tests for ``HTTP1Parser``: seeded random and mutated input, fed in random slices the
/// way the channel handlers feed it, with the calling contract checked on every call. The parser
/// reads untrusted bytes in the proxy, so a trap, an out-of-bounds read or a hang would take down
/// every connection; these tests look for one. Every test is bounded and deterministic (fixed seeds).
@Suite struct HTTP1ParserFuzzTests {
    typealias Framing = HTTP1Parser.Framing

    // MARK: - Recorded events

    struct Field: Equatable, CustomStringConvertible {
        var name: String
        var value: String
        var description: String { "\(self.name): \(self.value)" }
    }

    /// One event in a comparable form; consecutive body events are merged, so feeds split
    /// differently compare equal.
    enum Recorded: Equatable, CustomStringConvertible {
        case request(String, String, Int, Int, [Field], Framing)
        case response(Int, String, Int, Int, [Field], Framing)
        case interim(Int, [Field])
        case body([UInt8])
        case end([Field]?)
        case error(HTTP1ParseError)

        var description: String {
            switch self {
            case .request(let m, let t, let ma, let mi, let f, let fr): "request(\(m) \(t) \(ma).\(mi) \(f) \(fr))"
            case .response(let s, let r, let ma, let mi, let f, let fr): "response(\(s) \(r) \(ma).\(mi) \(f) \(fr))"
            case .interim(let s, let f): "interim(\(s) \(f))"
            case .body(let b): "body(\(b.count) bytes)"
            case .end(let t): "end(\(t.map { $0.description } ?? "nil"))"
            case .error(let e): "error(\(e.kind) \(e.detail))"
            }
        }
    }

    static func fields(_ pairs: [(String, String)]) -> [Field] { pairs.map { Field(name: $0.0, value: $0.1) } }

    /// `bytes` readable in a failure message: printable ASCII as is, the rest escaped, cut at 600 bytes.
    static func show(_ bytes: [UInt8]) -> String {
        var out = ""
        for b in bytes.prefix(600) {
            switch b {
            case 0x0D: out += "\\r"
            case 0x0A: out += "\\n"
            case 0x09: out += "\\t"
            case 0x5C: out += "\\\\"
            case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                let hex = String(b, radix: 16)
                out += "\\x" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        if bytes.count > 600 { out += "... (\(bytes.count) bytes)" }
        return out
    }

    // MARK: - The checking caller

    /// A caller like the channel handlers: a pending buffer, appended to, `next` called until
    /// `.needMore` or `.error`, consumed bytes dropped from the front. On every call it checks the
    /// contract (consumed within the bytes; a body range non-empty, within the bytes and consumed;
    /// errors sticky and consuming nothing; progress) and the message structure (head, bodies that
    /// fit the framing, end; HEAD, 204 and 304 responses without a body). The first violation is
    /// kept in `violation` and stops the checks.
    struct Harness {
        let kind: HTTP1Parser.Kind
        var parser: HTTP1Parser
        var pending: [UInt8] = []
        var recorded: [Recorded] = []
        var violation: String?
        /// The error the parser reported; every later call must return it.
        var error: HTTP1ParseError?
        /// `inputEnded()` returned `.needMore` or `.end`: every later call returns `.needMore`, consumed 0.
        var inputHasEnded = false
        /// The framing of the message whose head was returned and whose `.end` was not yet.
        var message: Framing?
        var bodyCount = 0
        /// Responses: which final responses (by index) answer a HEAD request.
        let headPlan: [Bool]
        var messagesEnded = 0
        var expectingHEAD = false
        var calls = 0

        init(_ kind: HTTP1Parser.Kind, maxHeadBytes: Int, maxChunkLineBytes: Int, headPlan: [Bool] = []) {
            self.kind = kind
            self.parser = HTTP1Parser(kind: kind, limits: .init(maxHeadBytes: maxHeadBytes, maxChunkLineBytes: maxChunkLineBytes))
            self.headPlan = kind == .response ? headPlan : []
            self.planHEAD()
        }

        var failed: Bool { self.violation != nil }

        mutating func fail(_ message: String) {
            if self.violation == nil { self.violation = message }
        }

        /// Tells the parser the next response answers a HEAD request, when the plan says so.
        mutating func planHEAD() {
            if self.messagesEnded < self.headPlan.count && self.headPlan[self.messagesEnded] {
                self.parser.expectResponseToHEAD()
                self.expectingHEAD = true
            }
        }

        mutating func record(_ event: Recorded) {
            if case .body(let more) = event, case .body(let before)? = self.recorded.last {
                self.recorded[self.recorded.count - 1] = .body(before + more)
            } else {
                self.recorded.append(event)
            }
        }

        /// One call of `next` on `bytes`: the event, consumed, and the body bytes (when the range is valid).
        mutating func call(_ bytes: [UInt8]) -> (event: HTTP1Parser.Event, consumed: Int, body: [UInt8]) {
            self.calls += 1
            var parser = self.parser
            let result = bytes.withUnsafeBytes { raw -> (HTTP1Parser.Event, Int, [UInt8]) in
                let (event, consumed) = parser.next(raw)
                var body: [UInt8] = []
                if case .body(let range) = event, range.lowerBound >= 0, range.upperBound <= raw.count {
                    body = Array(raw[range])
                }
                return (event, consumed, body)
            }
            self.parser = parser
            return result
        }

        /// Appends `chunk` and parses as far as it goes.
        mutating func feed<C: Collection<UInt8>>(_ chunk: C) {
            guard !self.failed else { return }
            self.pending.append(contentsOf: chunk)
            self.pump()
        }

        mutating func pump() {
            var events = 0
            var lastWasZeroEnd = false
            while !self.failed {
                events += 1
                if events > 10_000 {
                    self.fail("no progress: more than 10000 events for one append")
                    return
                }
                let available = self.pending.count
                let (event, consumed, body) = self.call(self.pending)
                guard consumed >= 0 && consumed <= available else {
                    self.fail("consumed \(consumed) of \(available) bytes, event \(event)")
                    return
                }
                if let error = self.error {
                    guard case .error(let again) = event, again == error, consumed == 0 else {
                        self.fail("after error \(error): \(event), consumed \(consumed)")
                        return
                    }
                    return
                }
                if self.inputHasEnded {
                    guard case .needMore = event, consumed == 0 else {
                        self.fail("after inputEnded: \(event), consumed \(consumed)")
                        return
                    }
                    return
                }
                var isZeroEnd = false
                switch event {
                case .needMore:
                    break
                case .requestHead(let head, let framing):
                    guard self.kind == .request else { return self.fail("request head from a response parser") }
                    guard self.message == nil else { return self.fail("request head inside a message") }
                    guard consumed > 0 else { return self.fail("request head consumed 0") }
                    switch framing {
                    case .untilClose: return self.fail("request framed until close")
                    case .contentLength(let n) where n < 0: return self.fail("negative Content-Length \(n)")
                    default: break
                    }
                    self.message = framing
                    self.bodyCount = 0
                    self.record(.request(head.method, head.target, head.versionMajor, head.versionMinor, HTTP1ParserFuzzTests.fields(head.fields), framing))
                case .interimHead(let head):
                    guard self.kind == .response else { return self.fail("interim head from a request parser") }
                    guard self.message == nil else { return self.fail("interim head inside a message") }
                    guard consumed > 0 else { return self.fail("interim head consumed 0") }
                    guard (100...199).contains(head.status), head.status != 101 else { return self.fail("interim status \(head.status)") }
                    self.record(.interim(head.status, HTTP1ParserFuzzTests.fields(head.fields)))
                case .responseHead(let head, let framing):
                    guard self.kind == .response else { return self.fail("response head from a request parser") }
                    guard self.message == nil else { return self.fail("response head inside a message") }
                    guard consumed > 0 else { return self.fail("response head consumed 0") }
                    guard head.status >= 200 && head.status <= 999 else { return self.fail("status \(head.status) returned") }
                    if self.expectingHEAD || head.status == 204 || head.status == 304, framing != .none {
                        return self.fail("response \(head.status) (HEAD: \(self.expectingHEAD)) framed \(framing)")
                    }
                    if case .contentLength(let n) = framing, n < 0 { return self.fail("negative Content-Length \(n)") }
                    self.expectingHEAD = false
                    self.message = framing
                    self.bodyCount = 0
                    self.record(.response(head.status, head.reason, head.versionMajor, head.versionMinor, HTTP1ParserFuzzTests.fields(head.fields), framing))
                case .body(let range):
                    guard !range.isEmpty && range.lowerBound >= 0 && range.upperBound <= consumed else {
                        return self.fail("body range \(range) with consumed \(consumed) of \(available)")
                    }
                    guard let framing = self.message, framing != .none else {
                        return self.fail("body outside a message with a body (\(String(describing: self.message)))")
                    }
                    self.bodyCount += range.count
                    if case .contentLength(let n) = framing, self.bodyCount > n {
                        return self.fail("\(self.bodyCount) body bytes for Content-Length \(n)")
                    }
                    self.record(.body(body))
                case .end(let trailers):
                    if consumed == 0 && lastWasZeroEnd { return self.fail("two .end events in a row consumed 0") }
                    isZeroEnd = consumed == 0
                    guard let framing = self.message else { return self.fail(".end outside a message") }
                    switch framing {
                    case .none, .contentLength:
                        let expected: Int
                        if case .contentLength(let n) = framing { expected = n } else { expected = 0 }
                        guard self.bodyCount == expected, trailers == nil, consumed == 0 else {
                            return self.fail(".end(\(String(describing: trailers))) consumed \(consumed) after \(self.bodyCount) of \(expected) body bytes")
                        }
                    case .chunked:
                        if let trailers, trailers.isEmpty { return self.fail("empty trailers instead of nil") }
                    case .untilClose, .tunnel:
                        return self.fail(".end from next for a body delimited by close")
                    }
                    self.message = nil
                    self.messagesEnded += 1
                    self.record(.end(trailers.map(HTTP1ParserFuzzTests.fields)))
                    self.planHEAD()
                case .error(let error):
                    guard consumed == 0 else { return self.fail("error \(error) consumed \(consumed)") }
                    guard error.kind != .truncated else { return self.fail("next returned \(error)") }
                    self.error = error
                    self.record(.error(error))
                    self.checkSticky()
                    return
                }
                lastWasZeroEnd = isZeroEnd
                self.pending.removeFirst(consumed)
                if case .needMore = event { return }
            }
        }

        /// After an error: the same bytes, no bytes, more bytes and `inputEnded()` all give it again.
        mutating func checkSticky() {
            guard let error = self.error else { return }
            for bytes in [self.pending, [], self.pending + Array("\r\n\r\nGET / HTTP/1.1\r\n\r\n".utf8)] {
                let (event, consumed, _) = self.call(bytes)
                guard case .error(let again) = event, again == error, consumed == 0 else {
                    return self.fail("after error \(error): \(event), consumed \(consumed)")
                }
            }
            guard case .error(let again) = self.parser.inputEnded(), again == error else {
                return self.fail("after error \(error): inputEnded did not return it")
            }
        }

        /// The input ended: checks what `inputEnded()` says against what the parser has seen, and
        /// that the parser is then inert.
        mutating func endInput() {
            guard !self.failed else { return }
            let event = self.parser.inputEnded()
            if let error = self.error {
                guard case .error(let again) = event, again == error else { return self.fail("after error \(error): inputEnded gave \(event)") }
                return
            }
            if self.inputHasEnded {
                guard case .needMore = event else { return self.fail("inputEnded twice gave \(event)") }
                return
            }
            let onlyEmptyLines = self.pending.allSatisfy { $0 == 0x0D || $0 == 0x0A }
            var complete = false
            switch self.message {
            case .untilClose?, .tunnel?: complete = true
            case Framing.none?: complete = self.bodyCount == 0
            case .contentLength(let n)?: complete = self.bodyCount == n
            case .chunked?, nil: complete = false
            }
            switch event {
            case .needMore:
                guard self.message == nil, onlyEmptyLines else {
                    return self.fail("inputEnded gave .needMore inside a message (\(String(describing: self.message)), \(self.pending.count) pending)")
                }
                self.inputHasEnded = true
            case .end(let trailers):
                guard trailers == nil, complete else {
                    return self.fail("inputEnded gave .end in \(String(describing: self.message)) after \(self.bodyCount) body bytes")
                }
                self.message = nil
                self.messagesEnded += 1
                self.inputHasEnded = true
                self.record(.end(nil))
            case .error(let error):
                guard error == .truncated, !complete else { return self.fail("inputEnded gave \(error) in \(String(describing: self.message))") }
                if self.kind == .request && self.message == nil && onlyEmptyLines {
                    return self.fail("inputEnded gave \(error) between requests")
                }
                self.error = error
                self.record(.error(error))
            default:
                return self.fail("inputEnded gave \(event)")
            }
            // Inert afterwards.
            let (after, consumed, _) = self.call(self.pending + [0x47])
            if let error = self.error {
                guard case .error(let again) = after, again == error, consumed == 0 else { return self.fail("after inputEnded error: \(after)") }
            } else {
                guard case .needMore = after, consumed == 0 else { return self.fail("after inputEnded: \(after), consumed \(consumed)") }
                guard case .needMore = self.parser.inputEnded() else { return self.fail("inputEnded twice did not give .needMore") }
            }
        }
    }

    // MARK: - Generators

    /// Random choices from a seeded ``SplitMix64``.
    struct Gen {
        var rng: SplitMix64
        /// Whether "valid" messages sometimes carry extreme framing values (huge chunk sizes,
        /// odd Content-Lengths); off for the tests that need valid input.
        var extremes = true
        /// How many messages the last ``messages(_:headPlan:)`` made.
        var lastMessageCount = 0

        init(seed: UInt64) { self.rng = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 0x1234_5678) }

        mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self.rng) }
        mutating func chance(_ oneIn: Int) -> Bool { self.int(1...oneIn) == 1 }
        mutating func pick<T>(_ items: [T]) -> T { items[self.int(0...(items.count - 1))] }

        static let digits = Array("0123456789".utf8)
        static let hexLetters = Array("abcdefABCDEF".utf8)
        static let letters = Array("GETPOSHTacdehklnortuxz".utf8)
        static let tchars = Array("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)

        /// A byte weighted toward the ones HTTP/1 syntax turns on.
        mutating func fuzzByte() -> UInt8 {
            switch self.int(0...99) {
            case 0..<12: 0x0D
            case 12..<24: 0x0A
            case 24..<32: 0x20
            case 32..<35: 0x09
            case 35..<40: UInt8(ascii: ":")
            case 40..<43: UInt8(ascii: ";")
            case 43..<45: UInt8(ascii: ",")
            case 45..<47: UInt8(ascii: "/")
            case 47..<49: UInt8(ascii: ".")
            case 49..<60: self.pick(Self.digits)
            case 60..<66: self.pick(Self.hexLetters)
            case 66..<80: self.pick(Self.letters)
            case 80..<85: self.pick(Self.tchars)
            case 85..<87: 0x00
            case 87..<89: 0x7F
            case 89..<95: UInt8(self.int(0x80...0xFF))
            default: UInt8(self.int(0...0xFF))
            }
        }

        mutating func fuzzBytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in self.fuzzByte() } }

        mutating func token(_ maxLength: Int) -> [UInt8] { (0..<self.int(1...maxLength)).map { _ in self.pick(Self.tchars) } }
        mutating func eol() -> [UInt8] { self.chance(5) ? [0x0A] : [0x0D, 0x0A] }
        mutating func ows() -> [UInt8] { self.pick([[], [], [0x20], [0x09], [0x20, 0x09]]) }

        mutating func value() -> [UInt8] {
            var bytes: [UInt8] = (0..<self.int(0...16)).map { _ in
                self.chance(8) ? 0x20 : (self.chance(30) ? UInt8(self.int(0x80...0xFF)) : UInt8(self.int(0x21...0x7E)))
            }
            while bytes.first == 0x20 { bytes.removeFirst() }
            while bytes.last == 0x20 { bytes.removeLast() }
            return bytes
        }

        /// Field lines with names that are not framing fields, sometimes many, sometimes long.
        mutating func fieldLines(_ count: Int) -> [UInt8] {
            var wire: [UInt8] = []
            for _ in 0..<count {
                var name = self.token(12)
                if name.count == 14 || name.count == 17 { name.append(UInt8(ascii: "x")) }
                var value = self.value()
                if self.chance(12) { value = Array(repeating: UInt8(ascii: "v"), count: self.int(40...600)) }
                wire += name + [UInt8(ascii: ":")] + self.ows() + value + self.ows() + self.eol()
            }
            return wire
        }

        mutating func fieldCount() -> Int { self.chance(10) ? self.int(20...60) : self.int(0...6) }

        /// A Content-Length value: mostly `length`; sometimes an edge case (long digit runs, lists, signs).
        mutating func contentLength(_ length: Int) -> [UInt8] {
            if self.extremes && self.chance(6) {
                return Array(self.pick([
                    "\(length), \(length)", "0000000000\(length)", "99999999999999999", "999999999999999999",
                    "9999999999999999999", "18446744073709551616", String(repeating: "9", count: 40), "-1", "+\(length)",
                    "\(length) \(length)", "\(length),", ",\(length)", "0x10", "", "\(length), \(length + 1)",
                ]).utf8)
            }
            return Array("\(length)".utf8)
        }

        /// A chunk-size line for `size`: hex in random case, leading zeros, extensions; sometimes huge.
        mutating func chunkSizeLine(_ size: Int) -> [UInt8] {
            var text = String(size, radix: 16, uppercase: self.chance(2))
            if self.chance(4) { text = String(repeating: "0", count: self.int(1...10)) + text }
            if self.extremes && self.chance(20) {
                text = self.pick(["ffffffffffffffff", "fffffffffffffff", "7fffffffffffffff", "10000000000000000", "FFFFFFFFFFFFFFFFFFFF", "000000000000000001"])
            }
            var line = Array(text.utf8)
            if self.chance(4) { line += self.ows() + Array(";name=\"v a\";x".utf8) }
            if self.chance(30) { line += [UInt8(ascii: ";")] + Array(repeating: UInt8(ascii: "e"), count: self.int(4...80)) }
            return line + self.eol()
        }

        /// A body of `length` bytes in random chunks, the last chunk and trailers.
        mutating func chunkedBody(_ body: [UInt8]) -> [UInt8] {
            var wire: [UInt8] = []
            var rest = body[...]
            while !rest.isEmpty {
                let size = min(rest.count, self.int(1...70))
                wire += self.chunkSizeLine(size) + rest.prefix(size) + self.eol()
                rest = rest.dropFirst(size)
            }
            wire += Array(String(repeating: "0", count: self.int(1...3)).utf8) + self.eol()
            wire += self.fieldLines(self.chance(3) ? self.int(1...4) : 0) + self.eol()
            return wire
        }

        mutating func body() -> [UInt8] { self.fuzzBytes(self.chance(4) ? 0 : self.int(1...200)) }

        /// A valid request (framing none, Content-Length or chunked).
        mutating func request() -> [UInt8] {
            let method = self.chance(3) ? self.token(7) : Array(self.pick(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"]).utf8)
            let target = [UInt8(ascii: "/")] + (0..<self.int(0...24)).map { _ in UInt8(self.int(0x21...0x7E)) }
            let minor = self.int(0...1)
            var wire = (self.chance(8) ? self.eol() : []) + method + [0x20] + target + Array(" HTTP/1.\(minor)".utf8) + self.eol()
            wire += self.fieldLines(self.fieldCount())
            // HTTP/1.0 has no chunked framing (RFC 9112 §6.1).
            switch self.int(0...(minor == 0 ? 1 : 2)) {
            case 0:
                wire += self.eol()
            case 1:
                let body = self.body()
                wire += Array("Content-Length:".utf8) + self.ows() + self.contentLength(body.count) + self.ows() + self.eol()
                wire += self.fieldLines(self.int(0...2)) + self.eol() + body
            default:
                wire += Array(self.pick(["Transfer-Encoding: chunked", "transfer-encoding:\tChunked ", "TRANSFER-ENCODING: CHUNKED"]).utf8) + self.eol()
                wire += self.fieldLines(self.int(0...2)) + self.eol() + self.chunkedBody(self.body())
            }
            return wire
        }

        /// A valid response, with interim heads before it sometimes; `toHEAD`: no body whatever the
        /// framing fields; `last`: it may be delimited by the end of the input.
        mutating func response(toHEAD: Bool, last: Bool) -> [UInt8] {
            var wire: [UInt8] = []
            for _ in 0..<(self.chance(5) ? self.int(1...2) : 0) {
                wire += Array("HTTP/1.1 1\(self.pick(["00 Continue", "02 Processing", "03 Early Hints"]))".utf8) + self.eol()
                wire += self.fieldLines(self.int(0...2)) + self.eol()
            }
            let status = self.chance(4) ? self.pick([204, 304]) : self.pick([200, 201, 206, 301, 404, 500, self.int(200...999)])
            let reason: [UInt8] = self.pick([Array(" OK".utf8), [0x20], [], Array(" Not\tFound \u{e9}".utf8)])
            let minor = self.int(0...1)
            wire += Array("HTTP/1.\(minor) \(status)".utf8) + reason + self.eol()
            wire += self.fieldLines(self.fieldCount())
            let noBody = toHEAD || status == 204 || status == 304
            var body = self.body()
            switch self.int(last ? 0...(minor == 0 ? 1 : 3) : 1...(minor == 0 ? 1 : 3)) {
            case 0:
                // Until close (or no body at all).
                if !noBody && minor == 1 && self.chance(2) { wire += Array("Transfer-Encoding: gzip".utf8) + self.eol() }
                wire += self.eol()
                if noBody { body = [] }
                wire += body
            case 1:
                wire += Array("Content-Length: \(body.count)".utf8) + self.eol() + self.eol()
                if !noBody { wire += body }
            default:
                wire += Array(self.pick(["Transfer-Encoding: chunked", "Transfer-Encoding: gzip, chunked"]).utf8) + self.eol() + self.eol()
                if !noBody { wire += self.chunkedBody(body) }
            }
            return wire
        }

        /// 1–4 pipelined valid messages of `kind`; the plan says which responses answer HEAD.
        mutating func messages(_ kind: HTTP1Parser.Kind, headPlan: [Bool]) -> [UInt8] {
            let count = self.int(1...4)
            self.lastMessageCount = count
            var wire: [UInt8] = []
            for k in 0..<count {
                wire += kind == .request ? self.request() : self.response(toHEAD: headPlan[k], last: k == count - 1)
            }
            return wire
        }

        mutating func headPlan() -> [Bool] { (0..<8).map { _ in self.chance(4) } }

        /// One to four random edits of `bytes`; `other` is spliced in sometimes.
        mutating func mutate(_ input: [UInt8], other: [UInt8]) -> [UInt8] {
            var bytes = input
            for _ in 0..<self.int(1...4) {
                let at = self.int(0...bytes.count)
                switch self.int(0...11) {
                case 0 where !bytes.isEmpty:  // change a byte
                    bytes[min(at, bytes.count - 1)] = self.fuzzByte()
                case 1:  // insert bytes
                    bytes.insert(contentsOf: self.fuzzBytes(self.int(1...4)), at: at)
                case 2 where !bytes.isEmpty:  // delete bytes
                    let end = min(bytes.count, at + self.int(1...4))
                    bytes.removeSubrange(min(at, end)..<end)
                case 3:  // duplicate a range
                    let start = self.int(0...bytes.count)
                    let end = min(bytes.count, start + self.int(1...40))
                    bytes.insert(contentsOf: Array(bytes[start..<end]), at: self.int(0...bytes.count))
                case 4:  // truncate
                    bytes.removeSubrange(at...)
                case 5:  // splice: this message's start, the other's end
                    bytes = Array(bytes[..<at]) + Array(other[self.int(0...other.count)...])
                case 6:  // every CRLF to LF
                    bytes = Self.replacingLineEnds(bytes, with: [0x0A], every: true, at: 0)
                case 7:  // one CRLF to LF or CR
                    bytes = Self.replacingLineEnds(bytes, with: self.pick([[0x0A], [0x0D], [0x0D, 0x0D, 0x0A], [0x0A, 0x0D]]), every: false, at: at)
                case 8:  // a long run of one byte (near and over the limits)
                    bytes.insert(contentsOf: Array(repeating: self.pick([UInt8(ascii: "a"), UInt8(ascii: "0"), UInt8(ascii: "f"), 0x20, 0x0A]), count: self.int(30...700)), at: at)
                case 9:  // framing fields where they may conflict
                    let line = self.pick([
                        "Content-Length: 5", "Content-Length: 99999999999999999999", "Transfer-Encoding: chunked",
                        "Transfer-Encoding: gzip", "Content-Length: 0", "content-length:1,1", "Transfer-Encoding: ,chunked",
                    ])
                    bytes.insert(contentsOf: Array(line.utf8) + [0x0D, 0x0A], at: Self.lineStart(bytes, near: at))
                case 10:  // a huge or odd chunk size at a line start
                    let size = self.pick(["ffffffffffffffff\r\n", "fffffffffffffff\r\n", "0\r\n\r\n", "1\r\nx\r\n", "10000000000000000;x\r\n", "g\r\n"])
                    bytes.insert(contentsOf: Array(size.utf8), at: Self.lineStart(bytes, near: at))
                default:  // flip a bit
                    if !bytes.isEmpty { bytes[min(at, bytes.count - 1)] ^= UInt8(1) << UInt8(self.int(0...7)) }
                }
            }
            return bytes
        }

        /// The offset after the first LF at or after `near` (or the end).
        static func lineStart(_ bytes: [UInt8], near: Int) -> Int {
            var i = near
            while i < bytes.count && bytes[i] != 0x0A { i += 1 }
            return min(bytes.count, i + 1)
        }

        static func replacingLineEnds(_ bytes: [UInt8], with replacement: [UInt8], every: Bool, at: Int) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(bytes.count)
            var done = false
            var i = 0
            while i < bytes.count {
                if bytes[i] == 0x0D && i + 1 < bytes.count && bytes[i + 1] == 0x0A && !done && (every || i >= at) {
                    out += replacement
                    i += 2
                    if !every { done = true }
                } else {
                    out.append(bytes[i])
                    i += 1
                }
            }
            return out
        }

        /// A slice size: often one byte, sometimes none (the same bytes passed again), sometimes all.
        mutating func sliceSize(_ remaining: Int) -> Int {
            switch self.int(0...9) {
            case 0: 0
            case 1, 2, 3: 1
            case 4, 5: self.int(1...8)
            case 6, 7: self.int(1...64)
            case 8: self.int(1...512)
            default: remaining
            }
        }

        mutating func limits() -> (maxHeadBytes: Int, maxChunkLineBytes: Int) { (self.int(64...512), self.int(8...64)) }
    }

    /// Feeds `input` to `harness` in random slices, ending the input at a random point sometimes
    /// (and feeding on afterwards), and at the end when `endAtEnd`.
    static func drive(_ harness: inout Harness, _ input: [UInt8], _ gen: inout Gen, randomEnds: Bool = true, endAtEnd: Bool = true) {
        var offset = 0
        var steps = 0
        while offset < input.count && !harness.failed {
            let size = min(input.count - offset, gen.sliceSize(input.count - offset))
            harness.feed(input[offset..<(offset + size)])
            offset += size
            steps += 1
            if steps > 4 * input.count + 64 { break }  // only zero-size slices: bounded anyway
            if randomEnds && gen.chance(40) { harness.endInput() }
        }
        if endAtEnd { harness.endInput() }
    }

    static func check(_ harness: Harness, _ input: [UInt8], _ context: String, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        guard let violation = harness.violation else { return true }
        Issue.record("\(violation)\n\(context), input (\(input.count) bytes): \"\(Self.show(input))\"", sourceLocation: sourceLocation)
        return false
    }

    /// `events` without a body event right before a final error.
    static func droppingBodyBeforeError(_ events: [Recorded]) -> [Recorded] {
        guard events.count >= 2, case .error = events[events.count - 1], case .body = events[events.count - 2] else { return events }
        var out = events
        out.remove(at: events.count - 2)
        return out
    }

    static let kinds: [(HTTP1Parser.Kind, Bool)] = [(.request, false), (.response, false), (.response, true)]

    // MARK: - Tests

    /// Random bytes over an HTTP-weighted alphabet, for requests and responses (with and without a
    /// HEAD request pending), small limits, random slices and random ends of input: no trap, no
    /// hang, and the calling contract holds on every call.
    @Test(arguments: 0..<4 as Range<UInt64>)
    func randomBytes(_ seed: UInt64) {
        var gen = Gen(seed: seed)
        for iteration in 0..<400 {
            let (kind, toHEAD) = gen.pick(Self.kinds)
            let limits = gen.limits()
            let input = gen.fuzzBytes(gen.chance(4) ? gen.int(300...900) : gen.int(0...120))
            var harness = Harness(kind, maxHeadBytes: limits.maxHeadBytes, maxChunkLineBytes: limits.maxChunkLineBytes, headPlan: toHEAD ? [true] : gen.headPlan())
            Self.drive(&harness, input, &gen)
            guard Self.check(harness, input, "seed \(seed) iteration \(iteration) \(kind) limits \(limits)") else { return }
        }
    }

    /// Random bytes after a valid prefix (a start line, a head, a head opening a chunked or a
    /// sized body, an interim response), so the fuzz reaches field lines, chunk lines, chunk
    /// data, trailers and the message after: the contract holds on every call.
    @Test(arguments: 0..<4 as Range<UInt64>)
    func randomBytesAfterValidPrefix(_ seed: UInt64) {
        let requestPrefixes = [
            "GET / HTTP/1.1\r\n", "POST /p HTTP/1.1\r\nHost: h\r\n", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            "PUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "GET / HTTP/1.1\r\n\r\n", "\r\n\r\n",
        ]
        let responsePrefixes = [
            "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na;x=y\r\n0123456789\r\n0\r\n", "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 ",
        ]
        var gen = Gen(seed: seed &+ 1000)
        for iteration in 0..<400 {
            let (kind, toHEAD) = gen.pick(Self.kinds)
            let limits = gen.limits()
            let prefix = Array(gen.pick(kind == .request ? requestPrefixes : responsePrefixes).utf8)
            let input = prefix + gen.fuzzBytes(gen.int(0...200))
            var harness = Harness(kind, maxHeadBytes: limits.maxHeadBytes, maxChunkLineBytes: limits.maxChunkLineBytes, headPlan: toHEAD ? [true] : gen.headPlan())
            Self.drive(&harness, input, &gen)
            guard Self.check(harness, input, "seed \(seed) iteration \(iteration) \(kind) limits \(limits)") else { return }
        }
    }

    /// Valid pipelined requests and responses with one to four random edits each (changed,
    /// inserted, deleted and duplicated bytes, truncation, splices of two messages, CRLF turned
    /// into LF or CR, long runs, conflicting framing fields, huge chunk sizes, long Content-Length
    /// digit runs, many and long fields), small limits, random slices: the contract holds on every call.
    @Test(arguments: 0..<6 as Range<UInt64>)
    func mutatedMessages(_ seed: UInt64) {
        var gen = Gen(seed: seed &+ 2000)
        for iteration in 0..<300 {
            let (kind, _) = gen.pick(Self.kinds)
            let plan = gen.headPlan()
            let limits = gen.chance(4) ? (maxHeadBytes: 4096, maxChunkLineBytes: 4096) : gen.limits()
            let input = gen.mutate(gen.messages(kind, headPlan: plan), other: gen.messages(kind, headPlan: plan))
            var harness = Harness(kind, maxHeadBytes: limits.maxHeadBytes, maxChunkLineBytes: limits.maxChunkLineBytes, headPlan: plan)
            Self.drive(&harness, input, &gen)
            guard Self.check(harness, input, "seed \(seed) iteration \(iteration) \(kind) limits \(limits)") else { return }
        }
    }

    /// Valid pipelined messages (generous limits) parse without error, one head per message, and
    /// give the same events (heads field by field, concatenated body bytes, trailers, the end of
    /// input) whether fed whole, one byte at a time, or in random slices.
    @Test(arguments: 0..<4 as Range<UInt64>)
    func validInputSameEventsHoweverSplit(_ seed: UInt64) {
        var gen = Gen(seed: seed &+ 3000)
        gen.extremes = false
        for iteration in 0..<60 {
            let (kind, _) = gen.pick(Self.kinds)
            let plan = gen.headPlan()
            let input = gen.messages(kind, headPlan: plan)
            let context = "seed \(seed) iteration \(iteration) \(kind)"

            var whole = Harness(kind, maxHeadBytes: 1 << 16, maxChunkLineBytes: 4096, headPlan: plan)
            whole.feed(input)
            whole.endInput()
            guard Self.check(whole, input, context + " whole") else { return }
            #expect(!whole.recorded.contains { if case .error = $0 { true } else { false } }, "\(context): \(whole.recorded)")
            #expect(whole.messagesEnded == gen.lastMessageCount, "\(context): \(whole.recorded)")

            var bytewise = Harness(kind, maxHeadBytes: 1 << 16, maxChunkLineBytes: 4096, headPlan: plan)
            for byte in input { bytewise.feed(CollectionOfOne(byte)) }
            bytewise.endInput()
            guard Self.check(bytewise, input, context + " byte at a time") else { return }

            var sliced = Harness(kind, maxHeadBytes: 1 << 16, maxChunkLineBytes: 4096, headPlan: plan)
            Self.drive(&sliced, input, &gen, randomEnds: false, endAtEnd: false)
            sliced.endInput()
            guard Self.check(sliced, input, context + " sliced") else { return }

            #expect(bytewise.recorded == whole.recorded, "\(context) byte at a time, input \"\(Self.show(input))\"")
            #expect(sliced.recorded == whole.recorded, "\(context) sliced, input \"\(Self.show(input))\"")
            if bytewise.recorded != whole.recorded || sliced.recorded != whole.recorded { return }
        }
    }

    /// Mutated messages with small limits give the same events, errors included, whether fed
    /// whole or one byte at a time: where the parser fails does not depend on how the bytes arrive.
    /// One difference is allowed: body bytes just before an error (fed whole, a chunk whose data
    /// is not followed by CRLF fails at once; fed a byte at a time, its data is given first).
    @Test(arguments: 0..<4 as Range<UInt64>)
    func mutatedInputSameEventsWholeOrByteAtATime(_ seed: UInt64) {
        var gen = Gen(seed: seed &+ 4000)
        for iteration in 0..<80 {
            let (kind, _) = gen.pick(Self.kinds)
            let plan = gen.headPlan()
            let limits = gen.limits()
            let input = gen.mutate(gen.messages(kind, headPlan: plan), other: gen.messages(kind, headPlan: plan))
            let context = "seed \(seed) iteration \(iteration) \(kind) limits \(limits)"

            var whole = Harness(kind, maxHeadBytes: limits.maxHeadBytes, maxChunkLineBytes: limits.maxChunkLineBytes, headPlan: plan)
            whole.feed(input)
            whole.endInput()
            guard Self.check(whole, input, context + " whole") else { return }

            var bytewise = Harness(kind, maxHeadBytes: limits.maxHeadBytes, maxChunkLineBytes: limits.maxChunkLineBytes, headPlan: plan)
            for byte in input { bytewise.feed(CollectionOfOne(byte)) }
            bytewise.endInput()
            guard Self.check(bytewise, input, context + " byte at a time") else { return }

            let (a, b) = (Self.droppingBodyBeforeError(bytewise.recorded), Self.droppingBodyBeforeError(whole.recorded))
            #expect(a == b, "\(context), input \"\(Self.show(input))\"")
            if a != b { return }
        }
    }

    /// Heads, trailer sections and chunk-size lines of exactly their limit parse, one byte more is
    /// refused (`.headTooLarge`, "chunk line too long"), for random small limits and random slices.
    @Test(arguments: 0..<2 as Range<UInt64>)
    func limitEdges(_ seed: UInt64) {
        var gen = Gen(seed: seed &+ 5000)
        for iteration in 0..<40 {
            let (maxHeadBytes, maxChunkLineBytes) = gen.limits()
            for delta in -2...2 {
                // A request head (after a leading empty line sometimes) of maxHeadBytes + delta bytes.
                let lead = gen.chance(3) ? "\r\n" : ""
                let fixed = lead + "GET / HTTP/1.1\r\nX-Pad: \r\n\r\n"
                let head = lead + "GET / HTTP/1.1\r\nX-Pad: " + String(repeating: "p", count: maxHeadBytes + delta - fixed.utf8.count) + "\r\n\r\n"
                // A chunked response whose trailer section is maxHeadBytes + delta bytes.
                let trailerFixed = "T: \r\n\r\n"
                let trailers = "T: " + String(repeating: "t", count: maxHeadBytes + delta - trailerFixed.utf8.count) + "\r\n\r\n"
                let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n" + trailers
                // A chunk-size line of maxChunkLineBytes + delta bytes.
                let lineFixed = "1;\r\n"
                let line = "1;" + String(repeating: "e", count: max(0, maxChunkLineBytes + delta - lineFixed.utf8.count)) + "\r\n"
                let chunkLine = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + line + "x\r\n0\r\n\r\n"
                let context = "seed \(seed) iteration \(iteration) limits \(maxHeadBytes)/\(maxChunkLineBytes) delta \(delta)"

                for (kind, text, tooLarge) in [
                    (HTTP1Parser.Kind.request, head, HTTP1ParseError.headTooLarge),
                    (.response, chunked, .headTooLarge),
                    (.request, chunkLine, .malformed("chunk line too long")),
                ] {
                    let input = Array(text.utf8)
                    var harness = Harness(kind, maxHeadBytes: maxHeadBytes, maxChunkLineBytes: maxChunkLineBytes)
                    Self.drive(&harness, input, &gen, randomEnds: false, endAtEnd: false)
                    guard Self.check(harness, input, context) else { return }
                    let failed = harness.recorded.contains { $0 == .error(tooLarge) }
                    let ended = harness.messagesEnded == 1 && harness.error == nil
                    if delta <= 0 {
                        #expect(ended, "\(context): \(harness.recorded) for \"\(Self.show(input))\"")
                    } else {
                        #expect(failed, "\(context): \(harness.recorded) for \"\(Self.show(input))\"")
                    }
                }
            }
        }
    }

    /// Extreme framing values, fed whole and one byte at a time: chunk sizes of 15 hexadecimal
    /// digits wait for their data, 16 or more are refused, as are Content-Lengths of 19 or more
    /// digits and every malformed one; none traps.
    @Test func extremeFramingValues() {
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        let cases: [(String, Recorded?)] = [
            (chunked + "fffffffffffffff\r\nabc", nil),
            (chunked + "7FFFFFFFFFFFFFF;ext\r\nabc", nil),
            (chunked + "ffffffffffffffff\r\n", .error(.malformed("invalid chunk size"))),
            (chunked + "0000000000000000\r\n\r\n", .error(.malformed("invalid chunk size"))),
            (chunked + "10000000000000000\r\n", .error(.malformed("invalid chunk size"))),
            (chunked + String(repeating: "f", count: 200) + "\r\n", .error(.malformed("chunk line too long"))),
            ("PUT / HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\nabc", nil),
            ("PUT / HTTP/1.1\r\nContent-Length: 9999999999999999999\r\n\r\n", .error(.malformed("invalid Content-Length"))),
            ("PUT / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n", .error(.malformed("invalid Content-Length"))),
            ("PUT / HTTP/1.1\r\nContent-Length: " + String(repeating: "9", count: 100) + "\r\n\r\n", .error(.malformed("invalid Content-Length"))),
            ("PUT / HTTP/1.1\r\nContent-Length: 1, 9999999999999999999\r\n\r\n", .error(.malformed("invalid Content-Length"))),
            ("PUT / HTTP/1.1\r\nContent-Length: 00000000000000000001\r\n\r\n", .error(.malformed("invalid Content-Length"))),
            ("HTTP/1.1 200 OK\r\nContent-Length: 9999999999999999999\r\n\r\n", .error(.malformed("invalid Content-Length"))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\nabc", nil),
            ("HTTP/1.1 999 X\r\nContent-Length: 1\r\n\r\nx", nil),
            ("HTTP/9.9 000 X\r\n\r\n", .error(.malformed("invalid status line"))),
        ]
        for (text, expectedLast) in cases {
            let input = Array(text.utf8)
            let kind: HTTP1Parser.Kind = text.hasPrefix("HTTP/") ? .response : .request
            var results: [[Recorded]] = []
            for bytewise in [false, true] {
                var harness = Harness(kind, maxHeadBytes: 4096, maxChunkLineBytes: 64)
                if bytewise {
                    for byte in input { harness.feed(CollectionOfOne(byte)) }
                } else {
                    harness.feed(input)
                }
                guard Self.check(harness, input, bytewise ? "byte at a time" : "whole") else { return }
                if let expectedLast {
                    #expect(harness.recorded.last == expectedLast, "\(harness.recorded) for \"\(Self.show(input))\"")
                } else {
                    #expect(harness.error == nil, "\(harness.recorded) for \"\(Self.show(input))\"")
                }
                results.append(harness.recorded)
            }
            #expect(results[0] == results[1], "\"\(Self.show(input))\"")
        }
    }
}
