/// The proxy's command line, read into the key → values form ``ConfigSources`` takes, with everything
/// that was wrong with it.
///
/// 1. `--name VALUE` and `--name=VALUE` both give a value; the word after a flag is its value even
///    when it starts with a single dash (`--upstream-max-idle -1`), so the reader can say why it is wrong.
/// 2. A flag followed by nothing, or by another `--flag`, is missing its value.
/// 3. An unknown flag is an error that suggests the flag it is most likely a typo of, or else lists
///    the known ones; a word after it is taken as its value, so it is not reported a second time.
/// 4. A word that is not a flag's value is an error.
/// 5. Everything after `--` is kept, unread, as ``appArguments``.
/// 6. Values are not checked and repetition is not counted here: ``SluiceConfig/read(_:defaultThreads:)``
///    does both, for every source alike.
///
/// ```swift
/// let parsed = ParsedCommandLine(["--upstream", "http://127.0.0.1:3000", "--drain-dely", "5s"])
/// parsed.flags   // ["upstream": ["http://127.0.0.1:3000"]]
/// parsed.errors  // [unknown flag --drain-dely; did you mean --drain-delay?]
/// ```
public struct ParsedCommandLine: Sendable, Equatable {
    /// The values of each flag, keyed by its name without dashes, in the order given.
    public var flags: [String: [String]] = [:]
    /// What followed `--`, or `nil` when there was no `--`.
    public var appArguments: [String]?
    /// Everything wrong with the command line, in the order it appeared.
    public var errors: [ConfigError] = []

    /// Reads `arguments` (without the program and subcommand names) against `known` flags.
    public init(_ arguments: [String], known: [SluiceConfig.Setting] = SluiceConfig.commandLineSettings) {
        let byName = Dictionary(known.map { ($0.name, $0) }) { first, _ in first }
        var index = arguments.startIndex
        /// The next argument when it can be a value: present and not a `--flag` (nor `--`).
        func nextValue() -> String? {
            guard index < arguments.endIndex, !arguments[index].hasPrefix("--") else { return nil }
            defer { index += 1 }
            return arguments[index]
        }
        while index < arguments.endIndex {
            let argument = arguments[index]
            index += 1
            if argument == "--" {
                self.appArguments = Array(arguments[index...])
                return
            }
            guard argument.hasPrefix("-"), argument != "-" else {
                self.errors.append(ConfigError("unexpected argument \"\(argument)\": settings are flags, e.g. --upstream URL"))
                continue
            }
            let equals = argument.firstIndex(of: "=")
            let flag = String(argument[..<(equals ?? argument.endIndex)])
            let attached = equals.map { String(argument[argument.index(after: $0)...]) }
            let name = String(flag.dropFirst(2))
            guard flag.hasPrefix("--"), let setting = byName[name] else {
                if attached == nil { _ = nextValue() }
                self.errors.append(Self.unknown(flag, known: known))
                continue
            }
            guard let value = attached ?? nextValue() else {
                self.errors.append(ConfigError("\(flag) needs a value: \(flag) \(setting.value)"))
                continue
            }
            self.flags[name, default: []].append(value)
        }
    }

    /// The error for an unknown `flag`: the likely intended flag, or else every known one.
    static func unknown(_ flag: String, known: [SluiceConfig.Setting]) -> ConfigError {
        let name = String(flag.drop { $0 == "-" }).lowercased()
        if let guess = Self.closest(to: name, among: known.map(\.name)) {
            return ConfigError("unknown flag \(flag); did you mean --\(guess)?")
        }
        return ConfigError("unknown flag \(flag); known flags: \(known.map { "--\($0.name)" }.joined(separator: ", "))")
    }

    /// The known name `name` is most likely a typo of: within two edits (one for short names), or the
    /// only known name it is the start of. `nil` when nothing is that close.
    static func closest(to name: String, among known: [String]) -> String? {
        let typed = name.replacingUnderscoresWithDashes()
        guard !typed.isEmpty else { return nil }
        let allowed = typed.count < 5 ? 1 : 2
        let nearest = known.map { (name: $0, distance: Self.editDistance(typed, $0)) }.min { $0.distance < $1.distance }
        if let nearest, nearest.distance <= allowed { return nearest.name }
        let extended = known.filter { $0.hasPrefix(typed) }
        return typed.count >= 3 && extended.count == 1 ? extended[0] : nil
    }

    /// Levenshtein distance: the fewest insertions, deletions and substitutions from `a` to `b`.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let b = Array(b)
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1]
            for (j, y) in b.enumerated() {
                current.append(Swift.min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}

extension String {
    func replacingUnderscoresWithDashes() -> String { String(self.map { $0 == "_" ? "-" : $0 }) }
}
