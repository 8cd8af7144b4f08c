import Foundation
import Logging
import SluiceCore

/// Bootstraps swift-log once per process: text lines, or one JSON object per line, on standard error.
enum LogSetup {
    private static let once: Void = ()

    static func bootstrap(_ settings: SluiceConfig.Logging) {
        let level = Logger.Level(rawValue: settings.level.rawValue) ?? .info
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler
            switch settings.format {
            case .text: handler = StreamLogHandler.standardError(label: label)
            case .json: handler = JSONLogHandler(label: label)
            }
            handler.logLevel = level
            return handler
        }
    }
}

/// One JSON object per log line: `{"ts":"…","level":"notice","label":"sluice","message":"phase","phase":"draining",…}`.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", event.level.rawValue), ("label", self.label), ("message", event.message.description),
        ]
        let merged = self.metadata.merging(event.metadata ?? [:]) { $1 }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        var line = "{"
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { line += "," }
            // Counts and durations are numbers in the JSON, so log queries can compare them.
            line += Self.quote(key) + ":" + (index >= 4 && Self.isJSONNumber(value) ? value : Self.quote(value))
        }
        line += "}\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func isJSONNumber(_ string: String) -> Bool {
        guard let first = string.utf8.first, first == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first),
            string.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "e") }),
            let number = Double(string), number.isFinite
        else { return false }
        return !(string.hasPrefix("0") && string.count > 1 && !string.hasPrefix("0."))
    }

    static func quote(_ string: String) -> String { JSONText.string(string) }

    private static func timestamp() -> String {
        let now = Date()
        return now.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}
