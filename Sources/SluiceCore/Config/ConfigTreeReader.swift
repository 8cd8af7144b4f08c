/// Reads typed values out of a ``ConfigNode`` tree, collecting every problem with its path instead of
/// stopping at the first: `upstreams.api.health.interval: "2x" is not a duration (500ms, 5s, 1m30s)`.
///
/// Each reading function returns `nil` after recording an error, so callers keep their default and
/// carry on; ``errors`` holds everything wrong, in the order it was found (the file's order).
struct TreeReader {
    var errors: [ConfigError] = []

    mutating func error(_ path: ConfigPath, _ problem: String) {
        self.errors.append(ConfigError("\(path): \(problem)"))
    }

    /// The entries of a mapping whose keys are all `known`; an unknown key, or a key given twice, is
    /// an error (and dropped). `nil`, with an error, when `node` is not a mapping.
    mutating func mapping(_ node: ConfigNode, at path: ConfigPath, known: [String], example: String) -> [ConfigNode.Entry]? {
        guard let entries = node.entries else {
            self.error(path, "expected a mapping such as \(example), not \(node.kind)")
            return nil
        }
        var seen: Set<String> = []
        var kept: [ConfigNode.Entry] = []
        for entry in entries {
            guard known.contains(entry.key) else {
                let guess = ParsedCommandLine.closest(to: entry.key, among: known).map { " (did you mean \($0)?)" } ?? ""
                self.error(path.key(entry.key), "unknown key\(guess); known keys: \(known.joined(separator: ", "))")
                continue
            }
            guard seen.insert(entry.key).inserted else {
                self.error(path.key(entry.key), "given twice")
                continue
            }
            kept.append(entry)
        }
        return kept
    }

    /// The text of a scalar; a list or a mapping is an error.
    mutating func scalar(_ node: ConfigNode, at path: ConfigPath) -> String? {
        guard let text = node.text else {
            self.error(path, "expected a value, not \(node.kind)")
            return nil
        }
        return text.trimmingWhitespace()
    }

    /// A scalar as a one-element list (an empty one as an empty list), or a list of scalars.
    mutating func scalars(_ node: ConfigNode, at path: ConfigPath) -> [(text: String, path: ConfigPath)]? {
        switch node {
        case .scalar(let text):
            let text = text.trimmingWhitespace()
            return text.isEmpty ? [] : [(text, path)]
        case .list(let items):
            var texts: [(text: String, path: ConfigPath)] = []
            for (index, item) in items.enumerated() {
                if let text = self.scalar(item, at: path.index(index)) { texts.append((text, path.index(index))) }
            }
            return texts
        case .mapping:
            self.error(path, "expected a list of values, not a mapping")
            return nil
        }
    }

    static let durationExamples = "(500ms, 5s, 1m30s)"

    /// A duration; with `positive`, zero is refused too.
    mutating func duration(_ node: ConfigNode, at path: ConfigPath, positive: Bool = true) -> Duration? {
        guard let text = self.scalar(node, at: path) else { return nil }
        guard let duration = DurationParser.parse(text) else {
            self.error(path, "\"\(text)\" is not a duration \(Self.durationExamples)")
            return nil
        }
        if positive && duration == .zero {
            self.error(path, "\"\(text)\" is too short: must be greater than zero")
            return nil
        }
        return duration
    }

    /// A whole number within `range`.
    mutating func integer(_ node: ConfigNode, at path: ConfigPath, in range: ClosedRange<Int>) -> Int? {
        guard let text = self.scalar(node, at: path) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            self.error(path, "\"\(text)\" is not a whole number from \(range.lowerBound) to \(range.upperBound)")
            return nil
        }
        return value
    }

    /// A byte size: `65536`, `64KiB`, `10MiB`.
    mutating func size(_ node: ConfigNode, at path: ConfigPath) -> Int? {
        guard let text = self.scalar(node, at: path) else { return nil }
        guard let value = ByteSizeParser.parse(text) else {
            self.error(path, "\"\(text)\" is not a size (32768, 64KiB, 1MiB)")
            return nil
        }
        return value
    }

    /// `true` or `false` (also `yes`/`no`, `on`/`off`, any case, as YAML 1.1 writes them).
    mutating func bool(_ node: ConfigNode, at path: ConfigPath) -> Bool? {
        guard let text = self.scalar(node, at: path) else { return nil }
        guard let value = Self.bool(text) else {
            self.error(path, "\"\(text)\" is not true or false")
            return nil
        }
        return value
    }

    static func bool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on": true
        case "false", "no", "off": false
        default: nil
        }
    }

    /// `50%`: a whole percentage from 0 to 100.
    mutating func percentage(_ node: ConfigNode, at path: ConfigPath) -> Int? {
        guard let text = self.scalar(node, at: path) else { return nil }
        guard text.hasSuffix("%"), let value = Int(text.dropLast().trimmingWhitespace()), (0...100).contains(value) else {
            self.error(path, "\"\(text)\" is not a percentage from 0% to 100% (50%)")
            return nil
        }
        return value
    }

    /// `200-399` or `200`: statuses from 100 to 599.
    mutating func statusRange(_ node: ConfigNode, at path: ConfigPath) -> ClosedRange<Int>? {
        guard let text = self.scalar(node, at: path) else { return nil }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingWhitespace()) }
        let statuses = 100...599
        switch parts.count {
        case 1:
            if let status = parts[0], statuses.contains(status) { return status...status }
        case 2:
            if let low = parts[0], let high = parts[1], statuses.contains(low), statuses.contains(high), low <= high { return low...high }
        default:
            break
        }
        self.error(path, "\"\(text)\" is not a status or a range of statuses from 100 to 599 (200, 200-399)")
        return nil
    }

    /// The error for a name that should be one of `groups`.
    mutating func unknownGroup(_ name: String, at path: ConfigPath, groups: [String]) {
        self.error(path, "\"\(name)\" is not a group; groups: \(groups.isEmpty ? "none" : groups.joined(separator: ", "))")
    }
}
