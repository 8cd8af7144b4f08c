/// Parses byte sizes at the configuration boundary: `32768`, `32KiB`, `32k`, `1MiB`, `1m`, `2GiB`.
///
/// (`unlimited`, where a setting allows it, is the config reader's business.)
///
/// `k`, `KB`, `KiB` all mean 1024 bytes: sizes here are buffer limits, not disk marketing.
public enum ByteSizeParser {
    public static let accepted = "a size such as 32768, 32KiB, 1MiB or 2GiB"

    public static func parse(_ text: String) -> Int? {
        let text = text.trimmingWhitespace()
        var digitsEnd = text.startIndex
        while digitsEnd < text.endIndex, ("0"..."9").contains(text[digitsEnd]) { digitsEnd = text.index(after: digitsEnd) }
        guard digitsEnd > text.startIndex, let value = Int(text[..<digitsEnd]) else { return nil }
        let multiplier: Int
        switch text[digitsEnd...].trimmingWhitespace().lowercased() {
        case "", "b": multiplier = 1
        case "k", "kb", "kib": multiplier = 1 << 10
        case "m", "mb", "mib": multiplier = 1 << 20
        case "g", "gb", "gib": multiplier = 1 << 30
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// Prints a size the way it is accepted back: `64KiB`, `10MiB`, `1000` (bytes).
    public static func format(_ bytes: Int) -> String {
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes != 0 && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return String(bytes)
    }
}
