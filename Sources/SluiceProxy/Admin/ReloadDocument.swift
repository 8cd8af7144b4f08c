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
            return (.unprocessableEntity, "{\"result\":\"error\",\"errors\":[\(errors.map(JSONText.string).joined(separator: ","))]}\n")
        case .refused(let reason):
            return (.conflict, "{\"result\":\"refused\",\"errors\":[\(JSONText.string(reason))]}\n")
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
            let host = route.host.map { JSONText.string($0.description) } ?? "null"
            return "{\"host\":\(host),\"path\":\(JSONText.string(path.0)),\"match\":\"\(path.1)\",\"upstream\":\(JSONText.string(route.upstream))}"
        }
        return "\"config\":{\"generation\":\(state.generation),\"loaded_at\":\(state.loadedAt),\"last_reload_error\":\(state.lastError.map(JSONText.string) ?? "null")},"
            + "\"routes\":[\(routes.joined(separator: ","))]"
    }
}
