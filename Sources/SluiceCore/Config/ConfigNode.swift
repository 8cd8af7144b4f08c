/// A configuration file as a tree, with no YAML left in it: what ``SluiceConfig/read(_:defaultThreads:)``
/// validates, and what the YAML reader in `SluiceCLI` produces.
///
/// 1. Every leaf is text (`scalar`): YAML's `5`, `true` and `5s` all arrive as they were written, and
///    the reader decides what each key's text means, so `retries: "1"` and `retries: 1` are the same.
/// 2. A mapping keeps its keys in the order they were written (messages follow the file).
/// 3. Tests write trees as literals:
///
/// ```swift
/// let file: ConfigNode = [
///     "upstreams": ["api": ["endpoints": ["http://10.0.0.7:3000"], "retries": "2"]],
///     "routes": [["path-prefix": "/", "upstream": "api"]],
/// ]
/// ```
public indirect enum ConfigNode: Sendable, Equatable {
    /// A plain value; YAML's `null` (an empty value) is the empty text.
    case scalar(String)
    /// `[a, b]` or a block list.
    case list([ConfigNode])
    /// `{key: value}` or a block mapping, keys in the order written.
    case mapping([Entry])

    /// One key of a mapping and its value.
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: ConfigNode

        public init(_ key: String, _ value: ConfigNode) {
            self.key = key
            self.value = value
        }
    }

    /// The text of a scalar; `nil` for a list or a mapping.
    public var text: String? {
        switch self {
        case .scalar(let text): text
        case .list, .mapping: nil
        }
    }

    /// The entries of a mapping; `nil` for a scalar or a list.
    public var entries: [Entry]? {
        switch self {
        case .mapping(let entries): entries
        case .scalar, .list: nil
        }
    }

    /// The value under `key` in a mapping (the first one, should a key appear twice).
    public subscript(key: String) -> ConfigNode? {
        self.entries?.first { $0.key == key }?.value
    }

    /// What kind of node this is, for messages: "a value", "a list", "a mapping".
    var kind: String {
        switch self {
        case .scalar: "a value"
        case .list: "a list"
        case .mapping: "a mapping"
        }
    }
}

extension ConfigNode: ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral value: String) { self = .scalar(value) }

    public init(arrayLiteral elements: ConfigNode...) { self = .list(elements) }

    public init(dictionaryLiteral elements: (String, ConfigNode)...) { self = .mapping(elements.map { Entry($0.0, $0.1) }) }
}

/// Where a value sits in the file, as messages name it: `upstreams.api.health.interval`, `routes[2].upstream`.
public struct ConfigPath: Sendable, Equatable, CustomStringConvertible {
    enum Component: Sendable, Equatable {
        case key(String)
        case index(Int)
    }

    var components: [Component]

    init(_ components: [Component] = []) { self.components = components }

    /// The path one key further down.
    public func key(_ key: String) -> ConfigPath { ConfigPath(self.components + [.key(key)]) }

    /// The path of one element of a list.
    public func index(_ index: Int) -> ConfigPath { ConfigPath(self.components + [.index(index)]) }

    public static func key(_ key: String) -> ConfigPath { ConfigPath().key(key) }

    /// `upstreams.api.health`, `routes[0].host`, `upstreams."my group".endpoints` (a key that is not a
    /// plain name is quoted).
    public var description: String {
        var out = ""
        for component in self.components {
            switch component {
            case .key(let key):
                if !out.isEmpty { out += "." }
                let plain = !key.isEmpty && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
                out += plain ? key : "\"" + key + "\""
            case .index(let index):
                out += "[\(index)]"
            }
        }
        return out
    }
}
