import SluiceCore
import Testing

@Suite struct ByteSizeParserTests {
    struct Accepted: Sendable, CustomTestStringConvertible {
        var text: String
        var bytes: Int
        var testDescription: String { "\"\(self.text)\"" }
    }

    /// Bare bytes and every k/m/g spelling, in any case and with a space before the unit, are powers of 1024.
    @Test(arguments: [
        Accepted(text: "32768", bytes: 32768),
        Accepted(text: "0", bytes: 0),
        Accepted(text: "10b", bytes: 10),
        Accepted(text: "10B", bytes: 10),
        Accepted(text: "32KiB", bytes: 32768),
        Accepted(text: "32k", bytes: 32768),
        Accepted(text: "32KB", bytes: 32768),
        Accepted(text: "32 kib", bytes: 32768),
        Accepted(text: "1MiB", bytes: 1_048_576),
        Accepted(text: "1m", bytes: 1_048_576),
        Accepted(text: "1MB", bytes: 1_048_576),
        Accepted(text: "2GiB", bytes: 2_147_483_648),
        Accepted(text: "2g", bytes: 2_147_483_648),
        Accepted(text: "2gb", bytes: 2_147_483_648),
        Accepted(text: " 64KiB ", bytes: 65536),
    ])
    func sizeParsesToItsExactByteCount(_ form: Accepted) {
        #expect(ByteSizeParser.parse(form.text) == form.bytes)
    }

    /// Empty, signed, fractional, unit-only, unknown-unit, `unlimited` and overflowing sizes are rejected.
    @Test(arguments: [
        "", " ", "-1", "+1", "1.5MiB", "KiB", "1T", "1TiB", "1kk", "1 k b", "unlimited", "99999999999999999999",
        "9000000000000000000g", "8589934592GiB",
    ])
    func malformedOrOverflowingSizeIsRejected(_ text: String) {
        #expect(ByteSizeParser.parse(text) == nil)
    }

    /// The largest gigabyte count that fits is accepted exactly.
    @Test func largestGigabyteCountThatFitsIsAccepted() {
        #expect(ByteSizeParser.parse("8589934591GiB") == 8_589_934_591 << 30)
    }
}
