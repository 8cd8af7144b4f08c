/// `routes:` and `ready-requires:` read into ``Route``s and group names (DESIGN.md §5).
///
/// ```yaml
/// routes:                          # first match wins
///   - host: api.example.com        # exact or *.example.com, lower-cased, no port
///     path-prefix: /v1/            # or path: for an exact path; neither means every path
///     upstream: api                # a group's name
///     strip-prefix: true           # only with path-prefix
///     host-rewrite: api.internal
///     retry-on-5xx: true
///     max-body-size: 10MiB
/// ready-requires: [api]
/// ```
///
/// Without `routes:`, one group gets one route `/`; several groups without routes are an error.
extension Route {
    /// The keys of a route, in the order messages list them.
    public static let keys = ["host", "path-prefix", "path", "upstream", "strip-prefix", "host-rewrite", "retry-on-5xx", "max-body-size"]
}

extension HostPattern {
    public static let accepted = "a host name such as api.example.com, or *.example.com"

    /// Why `text` is not a route's host, or the pattern it is (lower-cased).
    static func parse(_ text: String) -> Result<HostPattern, HostPatternError> {
        let name = text.lowercased()
        if name.contains(":") && !name.hasPrefix("[") { return .failure(.port) }
        var wildcard = false
        var rest = Substring(name)
        if rest.hasPrefix("*.") {
            wildcard = true
            rest = rest.dropFirst()  // keeps the leading dot: the suffix
        }
        if rest.contains("*") { return .failure(.wildcard) }
        let labels = (wildcard ? rest.dropFirst() : rest).split(separator: ".", omittingEmptySubsequences: false)
        let valid =
            !labels.isEmpty
            && labels.allSatisfy { label in
                !label.isEmpty && label.count <= 63 && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            }
        guard valid else { return .failure(.invalid) }
        return .success(wildcard ? .wildcard(suffix: String(rest)) : .exact(String(rest)))
    }

    enum HostPatternError: Error {
        case port, wildcard, invalid
    }
}

extension TreeReader {
    /// The routes of `routes:`, or the default route when there is none and exactly one group.
    mutating func routes(_ node: ConfigNode?, groups: [String]) -> [Route] {
        let path = ConfigPath.key(SluiceConfig.routesKey)
        let example = "[{path-prefix: /, upstream: \(groups.first ?? "api")}]"
        guard let node else {
            if groups.count > 1 {
                self.error(
                    path,
                    "missing; with several groups (\(groups.joined(separator: ", "))) say which requests go where, e.g. routes: \(example)"
                )
            }
            return groups.count == 1 ? [Route(upstream: groups[0])] : []
        }
        guard case .list(let items) = node else {
            self.error(path, "expected a list of routes such as \(example), not \(node.kind)")
            return []
        }
        guard !items.isEmpty else {
            self.error(path, "empty; no request would reach a group, e.g. routes: \(example)")
            return []
        }
        var routes: [Route] = []
        for (index, item) in items.enumerated() {
            let before = self.errors.count
            if let route = self.route(item, at: path.index(index), groups: groups), self.errors.count == before { routes.append(route) }
        }
        return routes
    }

    mutating func route(_ node: ConfigNode, at path: ConfigPath, groups: [String]) -> Route? {
        let example = "{path-prefix: /, upstream: \(groups.first ?? "api")}"
        guard let entries = self.mapping(node, at: path, known: Route.keys, example: example) else { return nil }
        var route = Route(upstream: "")
        if let node = entries["upstream"] {
            if let name = self.scalar(node, at: path.key("upstream")) {
                if groups.contains(name) { route.upstream = name } else { self.unknownGroup(name, at: path.key("upstream"), groups: groups) }
            }
        } else {
            self.error(path.key("upstream"), "missing; name a group: \(groups.isEmpty ? "none" : groups.joined(separator: ", "))")
        }
        if let node = entries["host"], let text = self.scalar(node, at: path.key("host")) {
            switch HostPattern.parse(text) {
            case .success(let pattern): route.host = pattern
            case .failure(.port): self.error(path.key("host"), "\"\(text)\" has a port; leave it out (a route's host matches any port)")
            case .failure(.wildcard): self.error(path.key("host"), "\"\(text)\": only a whole first label may be a wildcard, as in *.example.com")
            case .failure(.invalid): self.error(path.key("host"), "\"\(text)\" is not \(HostPattern.accepted)")
            }
        }
        let prefix = entries["path-prefix"]
        let exact = entries["path"]
        if prefix != nil && exact != nil {
            self.error(path, "path-prefix and path are both given; use one")
        } else if let prefix, let text = self.routePath(prefix, at: path.key("path-prefix")) {
            route.path = .prefix(text)
        } else if let exact, let text = self.routePath(exact, at: path.key("path")) {
            route.path = .exact(text)
        }
        if let node = entries["strip-prefix"], let value = self.bool(node, at: path.key("strip-prefix")) {
            if value && prefix == nil {
                self.error(path.key("strip-prefix"), "only with path-prefix")
            }
            route.stripPrefix = value
        }
        if let node = entries["host-rewrite"], let text = self.scalar(node, at: path.key("host-rewrite")) {
            let host = text.split(separator: ":", maxSplits: 1).first.map(String.init) ?? ""
            if case .success(.exact) = HostPattern.parse(host), HostPort(parsing: text) != nil || !text.contains(":") {
                route.hostRewrite = text
            } else {
                self.error(path.key("host-rewrite"), "\"\(text)\" is not a host (api.internal or api.internal:8080)")
            }
        }
        if let node = entries["retry-on-5xx"], let value = self.bool(node, at: path.key("retry-on-5xx")) { route.retryOn5xx = value }
        if let node = entries["max-body-size"], let value = self.size(node, at: path.key("max-body-size")) { route.maxBodyBytes = value }
        return route
    }

    /// A route's `path-prefix:` or `path:`: starts with `/`, no spaces, no query.
    mutating func routePath(_ node: ConfigNode, at path: ConfigPath) -> String? {
        guard let text = self.scalar(node, at: path) else { return nil }
        guard text.hasPrefix("/") else {
            self.error(path, "\"\(text)\" must start with /")
            return nil
        }
        guard !text.contains(where: { $0.isWhitespace || $0 == "?" || $0 == "#" }) else {
            self.error(path, "\"\(text)\" must be a path alone, without spaces, ? or #")
            return nil
        }
        return text
    }

    /// `ready-requires:` one group name or a list of them.
    mutating func readyRequires(_ node: ConfigNode, groups: [String]) -> [String] {
        let path = ConfigPath.key(SluiceConfig.readyRequiresKey)
        guard let texts = self.scalars(node, at: path) else { return [] }
        var names: [String] = []
        for (name, at) in texts {
            if groups.contains(name) { names.append(name) } else { self.unknownGroup(name, at: at, groups: groups) }
        }
        return names
    }
}
