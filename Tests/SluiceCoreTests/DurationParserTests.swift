import SluiceCore
import Testing

@Suite struct DurationParserTests {
    struct Accepted: Sendable, CustomTestStringConvertible {
        var text: String
        var duration: Duration
        var testDescription: String { "\"\(self.text)\"" }
    }

    static let acceptedForms: [Accepted] = [
        Accepted(text: "500ms", duration: .milliseconds(500)),
        Accepted(text: "5s", duration: .seconds(5)),
        Accepted(text: "1m30s", duration: .seconds(90)),
        Accepted(text: "1h", duration: .seconds(3600)),
        Accepted(text: "250us", duration: .microseconds(250)),
        Accepted(text: "250µs", duration: .microseconds(250)),
        Accepted(text: "7ns", duration: .nanoseconds(7)),
        Accepted(text: "5", duration: .seconds(5)),
        Accepted(text: "0.5", duration: .milliseconds(500)),
        Accepted(text: "0", duration: .zero),
        Accepted(text: "0s", duration: .zero),
        Accepted(text: "1.5s", duration: .milliseconds(1500)),
        Accepted(text: "1.5h", duration: .seconds(5400)),
        Accepted(text: "2h0m5s", duration: .seconds(7205)),
        Accepted(text: "1h1m1s1ms1us1ns", duration: .nanoseconds(3_661_001_001_001)),
        Accepted(text: "  20s\t", duration: .seconds(20)),
        Accepted(text: "90m", duration: .seconds(5400)),
    ]

    /// Every documented form parses to its exact duration.
    @Test(arguments: acceptedForms)
    func acceptedFormParsesToItsExactDuration(_ form: Accepted) {
        #expect(DurationParser.parse(form.text) == form.duration)
    }

    /// Empty, negative, unknown-unit, wrong-order, unit-first, unit-less trailing groups and huge values are rejected.
    @Test(arguments: [
        "", "   ", "-5", "-5s", "+5", "+5s", "5x", "5S", "1s1m", "1ms1s", "1s1s", "ms5", "s", "5 s", "1m30",
        "1..5s", "1h-5m", "inf", "nan", "99999999999h", "9999999999999999999ms",
    ])
    func malformedOrNegativeOrHugeDurationIsRejected(_ text: String) {
        #expect(DurationParser.parse(text) == nil)
    }

    /// A bare number of seconds too large for the nanosecond count is rejected, not a crash.
    ///
    /// Regression (found by these tests, since fixed): `Int64((seconds * 1e9).rounded())` traps for anything above about 9.2e9 seconds.
    @Test func hugeBareNumberOfSecondsIsRejectedInsteadOfCrashing() async {
        await #expect(processExitsWith: .success) {
            precondition(DurationParser.parse("10000000000") == nil)
        }
    }

    /// Groups that are each in range but overflow together are rejected, not a crash.
    ///
    /// Regression (found by these tests, since fixed): `total += Int64(nanos.rounded())` overflows Int64 and traps.
    @Test func groupsWhoseSumOverflowsAreRejectedInsteadOfCrashing() async {
        await #expect(processExitsWith: .success) {
            precondition(DurationParser.parse("2499999h149999999m") == nil)
        }
    }

    struct Formatted: Sendable, CustomTestStringConvertible {
        var duration: Duration
        var text: String
        var testDescription: String { self.text }
    }

    static let formatted: [Formatted] = [
        Formatted(duration: .zero, text: "0s"),
        Formatted(duration: .seconds(5), text: "5s"),
        Formatted(duration: .seconds(90), text: "1m30s"),
        Formatted(duration: .seconds(60), text: "1m"),
        Formatted(duration: .seconds(3600), text: "1h"),
        Formatted(duration: .seconds(3661), text: "1h1m1s"),
        Formatted(duration: .seconds(7205), text: "2h5s"),
        Formatted(duration: .seconds(86400), text: "24h"),
        Formatted(duration: .milliseconds(500), text: "500ms"),
        Formatted(duration: .milliseconds(1500), text: "1500ms"),
        Formatted(duration: .milliseconds(90_250), text: "90250ms"),
        Formatted(duration: .microseconds(250), text: "250us"),
        Formatted(duration: .nanoseconds(1_000_000_001), text: "1000000001ns"),
    ]

    /// format prints the expected text, and that text parses back to the same duration.
    @Test(arguments: formatted)
    func formatPrintsTheExpectedTextAndRoundTrips(_ example: Formatted) {
        #expect(DurationParser.format(example.duration) == example.text)
        #expect(DurationParser.parse(example.text) == example.duration)
    }

    /// Every duration parsed from an accepted form (100µs and up) formats to text that parses back to it.
    @Test(arguments: acceptedForms.filter { $0.duration == .zero || $0.duration >= .microseconds(100) })
    func parsedDurationRoundTripsThroughFormat(_ form: Accepted) {
        let duration = DurationParser.parse(form.text)
        #expect(duration.flatMap { DurationParser.parse(DurationParser.format($0)) } == duration)
    }

    /// Sub-100µs durations that are not whole milliseconds are printed so they parse back.
    ///
    /// Regression (found by these tests, since fixed): format prints `Double(nanos) / 1e9` with Swift's description, which switches to
    /// exponent notation below 1e-4 (`5e-05s`, `1e-09s`), and parse does not accept exponents with a unit.
    @Test(arguments: [Duration.microseconds(50), .nanoseconds(1), .nanoseconds(1500)])
    func tinyDurationRoundTripsThroughFormat(_ duration: Duration) {
        #expect(DurationParser.parse(DurationParser.format(duration)) == duration)
    }

    /// nanosecondsClamped is exact in range and clamps at Int64's ends; secondsDouble is its value in seconds.
    @Test func nanosecondsClampedIsExactInRangeAndClampsOutside() {
        #expect(Duration.milliseconds(1500).nanosecondsClamped == 1_500_000_000)
        #expect(Duration.nanoseconds(-7).nanosecondsClamped == -7)
        #expect(Duration.seconds(Int64.max).nanosecondsClamped == .max)
        #expect(Duration.seconds(Int64.min).nanosecondsClamped == .min)
        #expect(Duration.milliseconds(1500).secondsDouble == 1.5)
    }

    /// The text used in error messages names the accepted forms.
    @Test func acceptedTextNamesTheForms() {
        #expect(DurationParser.accepted == "a duration such as 500ms, 5s, 1m30s or a bare number of seconds")
    }
}
