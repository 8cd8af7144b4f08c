import NIOHTTP1
import SluiceCore

/// The admin listener's reload documents: the answer to `POST /reload` and the `config` and
/// `routes` members of `/status`.
enum ReloadDocument {
    /// The status and JSON body `POST /reload` answers with:
    /// 1. applied: 200 `{"result":"ok","generation":N}`;
    /// 2. invalid (unreadable file, bad values, a listener that cannot be bound): 422
    ///    `{"result":"error","errors":["...", ...]}`: nothing changed;
    /// 3. refused (the drain has begun): 409 `{"result":"refused","errors":["..."]}`.
    static func answer(_ outcome: ReloadOutcome) -> (HTTPResponseStatus, String) {
        switch outcome {
        case .applied(let generation):
            return (.ok, "{\"result\":\"ok\",\"generation\":\(generation)}\n")
        case .invalid(let errors):
            return (.unprocessableEntity, "{\"result\":\"error\",\"errors\":[\(errors.map(JSONText.quoted).joined(separator: ","))]}\n")
        case .refused(let reason):
            return (.conflict, "{\"result\":\"refused\",\"errors\":[\(JSONText.quoted(reason))]}\n")
        }
    }

    /// `"config":{"generation":N,"loaded_at":S,"last_reload_error":null|"..."},"routes":[{"host":...,"path":...,"match":"prefix"|"exact","upstream":...}]`
    static func statusMembers(_ state: ConfigState) -> String {
        let routes = state.config.routes.map { route in
            let path: (String, String)
            switch route.path {
            case .prefix(let prefix): path = (prefix, "prefix")
            case .exact(let exact): path = (exact, "exact")
            }
            let host = route.host.map { JSONText.quoted($0.description) } ?? "null"
            return "{\"host\":\(host),\"path\":\(JSONText.quoted(path.0)),\"match\":\"\(path.1)\",\"upstream\":\(JSONText.quoted(route.upstream))}"
        }
        return "\"config\":{\"generation\":\(state.generation),\"loaded_at\":\(state.loadedAt),\"last_reload_error\":\(state.lastError.map(JSONText.quoted) ?? "null")},"
            + "\"routes\":[\(routes.joined(separator: ","))]"
    }
}

/// JSON string literals.
enum JSONText {
    /// `text` as a JSON string, quotes included (RFC 8259 §7: `"`, `\` and control characters escaped).
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
