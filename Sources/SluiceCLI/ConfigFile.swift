import SluiceCore
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// Reads the YAML config file into the YAML-free tree ``ConfigSources`` takes (``ConfigNode``):
/// scalars as the text written (`null` as empty text), lists, and mappings with their keys in order.
/// What the keys mean, and whether the values are right, is ``SluiceConfig/read(_:defaultThreads:)``'s
/// business.
///
/// ```yaml
/// listen: ["0.0.0.0:8080"]
/// upstreams:
///   api: {endpoints: [http://app-a:3000, http://app-b:3000]}
/// drain-delay: 5s
/// ```
enum ConfigFile {
    static func load(path: String) throws(ConfigError) -> ConfigNode? {
        guard let text = Self.read(path: path) else {
            throw ConfigError("cannot read config file \(path): \(String(cString: strerror(errno)))")
        }
        return try Self.parse(text, name: path)
    }

    /// The file's tree; `nil` for an empty file.
    static func parse(_ text: String, name: String) throws(ConfigError) -> ConfigNode? {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError("config file \(name) is not valid YAML: \(error)")
        }
        guard let node else { return nil }
        return try Self.tree(node, name: name)
    }

    static func tree(_ node: Node, name: String) throws(ConfigError) -> ConfigNode {
        switch node {
        case .scalar(let scalar):
            return .scalar(node.tag.rawValue == Tag.Name.null.rawValue ? "" : scalar.string)
        case .sequence(let sequence):
            var items: [ConfigNode] = []
            for item in sequence { items.append(try Self.tree(item, name: name)) }
            return .list(items)
        case .mapping(let mapping):
            var entries: [ConfigNode.Entry] = []
            for (key, value) in mapping {
                guard let text = key.scalar?.string else {
                    throw ConfigError("config file \(name) has a key that is not text (line \(key.mark?.line ?? 0))")
                }
                entries.append(ConfigNode.Entry(text, try Self.tree(value, name: name)))
            }
            return .mapping(entries)
        case .alias:
            // Yams.compose resolves aliases into the nodes they name; one left over is a bug there.
            throw ConfigError("config file \(name) has an alias that does not resolve (line \(node.mark?.line ?? 0))")
        }
    }

    private static func read(path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count > 0 { bytes += chunk[0..<count] }
            if count < chunk.count { break }
        }
        if ferror(file) != 0 { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
