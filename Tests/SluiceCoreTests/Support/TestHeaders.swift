import SluiceCore
import Testing

/// A plain header list for the header and request rules, behaving like NIO's `HTTPHeaders`:
/// names compare case-insensitively, ``tokens(name:)`` splits every value on commas and trims it,
/// ``replaceOrAdd(name:value:)`` removes every field of that name and appends one at the end.
///
/// Written and read as `"Name: value"` lines so a test can assert the whole list at once.
struct TestHeaders: HeaderFields, Equatable, CustomStringConvertible {
    private var fields: [(name: String, value: String)]

    init(_ lines: [String] = []) {
        self.fields = lines.map { line in
            guard let colon = line.firstIndex(of: ":") else { preconditionFailure("a header line has a colon: \(line)") }
            let value = line[line.index(after: colon)...].drop { $0 == " " }
            return (String(line[..<colon]), String(value))
        }
    }

    /// Every field as `"Name: value"`, in order.
    var lines: [String] { self.fields.map { "\($0.name): \($0.value)" } }

    var description: String { self.lines.description }

    static func == (lhs: TestHeaders, rhs: TestHeaders) -> Bool { lhs.lines == rhs.lines }

    func contains(name: String) -> Bool {
        self.fields.contains { $0.name.lowercased() == name.lowercased() }
    }

    func tokens(name: String) -> [Substring] {
        self.fields
            .filter { $0.name.lowercased() == name.lowercased() }
            .flatMap { $0.value.split(separator: ",").map { Self.trimmed($0) } }
    }

    func first(name: String) -> String? {
        self.fields.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    mutating func add(name: String, value: String) {
        self.fields.append((name, value))
    }

    mutating func replaceOrAdd(name: String, value: String) {
        self.remove(name: name)
        self.add(name: name, value: value)
    }

    mutating func remove(name: String) {
        self.fields.removeAll { $0.name.lowercased() == name.lowercased() }
    }

    private static func trimmed(_ text: Substring) -> Substring {
        var text = text
        while let first = text.first, first == " " || first == "\t" { text.removeFirst() }
        while let last = text.last, last == " " || last == "\t" { text.removeLast() }
        return text
    }
}

/// The test headers behave as the rules expect, so a rule test failing points at the rule.
@Suite struct TestHeadersTests {
    /// Lookups ignore case, tokens are split on commas and trimmed, replaceOrAdd leaves one field at the end.
    @Test func behavesLikeNIOHTTPHeaders() {
        var headers = TestHeaders(["Via: 1.0 a ,  1.1 b", "Host: x", "via: 2.0 c"])
        #expect(headers.contains(name: "VIA"))
        #expect(headers.tokens(name: "via") == ["1.0 a", "1.1 b", "2.0 c"])
        #expect(headers.first(name: "VIA") == "1.0 a ,  1.1 b")
        headers.replaceOrAdd(name: "via", value: "z")
        #expect(headers.lines == ["Host: x", "via: z"])
        headers.remove(name: "HOST")
        #expect(headers.lines == ["via: z"])
        #expect(headers.tokens(name: "missing").isEmpty)
        #expect(headers.first(name: "missing") == nil)
    }
}
