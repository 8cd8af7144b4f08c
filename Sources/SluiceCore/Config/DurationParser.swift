/// Parses and prints the durations Sluice accepts at its configuration boundary.
///
/// Accepted forms:
/// 1. a bare number of seconds: `5`, `0.5`;
/// 2. one or more `<number><unit>` groups, largest unit first: `500ms`, `5s`, `1m30s`, `1h`, `250us`.
///
/// Units: `h`, `m`, `s`, `ms`, `us`, `ns`. Negative values and empty strings are rejected.
///
/// ```swift
/// DurationParser.parse("1m30s") // .seconds(90)
/// ```
public enum DurationParser {
    /// What the accepted forms are, for error messages.
    public static let accepted = "a duration such as 500ms, 5s, 1m30s or a bare number of seconds"

    public static func parse(_ text: String) -> Duration? {
        let text = text.trimmingWhitespace()
        guard !text.isEmpty else { return nil }
        if let seconds = Double(text), !text.hasPrefix("+") {
            let nanos = (seconds * 1_000_000_000).rounded()
            guard nanos.isFinite, nanos >= 0, nanos < 9e18 else { return nil }
            return .nanoseconds(Int64(nanos))
        }
        var total: Int64 = 0
        var index = text.startIndex
        var lastUnitRank = Int.max
        while index < text.endIndex {
            let numberStart = index
            while index < text.endIndex, text[index].isASCIIDigitOrDot { index = text.index(after: index) }
            guard numberStart < index, let value = Double(text[numberStart..<index]) else { return nil }
            let unitStart = index
            while index < text.endIndex, text[index].isLetter { index = text.index(after: index) }
            let unit = text[unitStart..<index]
            let (nanosPerUnit, rank): (Double, Int)
            switch unit {
            case "h": (nanosPerUnit, rank) = (3_600_000_000_000, 6)
            case "m": (nanosPerUnit, rank) = (60_000_000_000, 5)
            case "s": (nanosPerUnit, rank) = (1_000_000_000, 4)
            case "ms": (nanosPerUnit, rank) = (1_000_000, 3)
            case "us", "µs": (nanosPerUnit, rank) = (1_000, 2)
            case "ns": (nanosPerUnit, rank) = (1, 1)
            default: return nil
            }
            guard rank < lastUnitRank else { return nil }
            lastUnitRank = rank
            let nanos = value * nanosPerUnit
            guard nanos.isFinite, nanos < 9e18 else { return nil }
            let (sum, overflow) = total.addingReportingOverflow(Int64(nanos.rounded()))
            guard !overflow else { return nil }
            total = sum
        }
        return .nanoseconds(total)
    }

    /// Prints a duration the way it is accepted back: `1m30s`, `500ms`, `0s`.
    public static func format(_ duration: Duration) -> String {
        let nanos = duration.nanosecondsClamped
        if nanos == 0 { return "0s" }
        if nanos % 1_000_000_000 != 0 {
            if nanos % 1_000_000 == 0 { return "\(nanos / 1_000_000)ms" }
            if nanos % 1_000 == 0 { return "\(nanos / 1_000)us" }
            return "\(nanos)ns"
        }
        var seconds = nanos / 1_000_000_000
        var out = ""
        if seconds >= 3600 { out += "\(seconds / 3600)h"; seconds %= 3600 }
        if seconds >= 60 { out += "\(seconds / 60)m"; seconds %= 60 }
        if seconds > 0 { out += "\(seconds)s" }
        return out
    }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `Int64`.
    @inlinable
    public var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = self.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product + attoseconds / 1_000_000_000
    }

    /// The duration in seconds as a `Double`, for logs and JSON.
    public var secondsDouble: Double { Double(self.nanosecondsClamped) / 1e9 }
}

extension Character {
    fileprivate var isASCIIDigitOrDot: Bool { self == "." || ("0"..."9").contains(self) }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}
