import SluiceCore
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// Reads the YAML config file into the flat key → values form ``ConfigSources`` takes.
///
/// The file is a mapping of flag names to scalars or lists of scalars:
/// ```yaml
/// listen: ["0.0.0.0:8080"]
/// upstream: [http://app-a:3000, http://app-b:3000]
/// drain-delay: 5s
/// ```
enum ConfigFile {
    static func load(path: String) throws(ConfigError) -> [String: [String]] {
        guard let text = Self.read(path: path) else {
            throw ConfigError("cannot read config file \(path): \(String(cString: strerror(errno)))")
        }
        return try Self.parse(text, name: path)
    }

    static func parse(_ text: String, name: String) throws(ConfigError) -> [String: [String]] {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw ConfigError("config file \(name) is not valid YAML: \(error)")
        }
        guard let node else { return [:] }
        guard let mapping = node.mapping else {
            throw ConfigError("config file \(name) must be a mapping of settings, e.g. \"drain-delay: 5s\"")
        }
        var result: [String: [String]] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { throw ConfigError("config file \(name) has a non-text key") }
            switch value {
            case .scalar(let scalar):
                result[key] = [scalar.string]
            case .sequence(let sequence):
                var values: [String] = []
                for item in sequence {
                    guard let scalar = item.scalar else {
                        throw ConfigError("\(key) in \(name) must be a list of plain values")
                    }
                    values.append(scalar.string)
                }
                result[key] = values
            case .mapping, .alias:
                throw ConfigError("\(key) in \(name) must be a value or a list of values, not a mapping")
            }
        }
        return result
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
