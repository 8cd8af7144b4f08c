/// `upstreams:` read into ``UpstreamGroup``s (DESIGN.md §5).
///
/// ```yaml
/// upstreams:
///   api:
///     endpoints: [http://api.default.svc:3000]      # required; one scheme per group: http, https or h2c
///     balance: least-request                         # round-robin | least-request | random | hash
///     hash-on: header:x-user-id                      # only, and required, with balance: hash
///     retries: 1                                     # 0-10
///     retry-buffer: 64KiB
///     health: {path: /healthz, interval: 2s, timeout: 1s, healthy-after: 2, unhealthy-after: 3, expect: 200-399}
///     outlier: {consecutive-failures: 5, base-ejection: 30s, max-ejected: 50%}   # or off
///     connect-timeout: 1s                            # these four default to the global flags
///     response-header-timeout: 30s
///     idle-timeout: 4s
///     max-idle: 512
///     dns-refresh: 5s
///     tls: {ca: /etc/ssl/internal-ca.pem, sni: api.internal, cert: /etc/tls/client.crt, key: /etc/tls/client.key}
///                                                    # https:// groups only; every key optional, cert and key together
/// ```
extension UpstreamGroup {
    /// The keys of a group, in the order messages list them.
    public static let keys = [
        "endpoints", "balance", "hash-on", "retries", "retry-buffer", "health", "outlier", "connect-timeout",
        "response-header-timeout", "idle-timeout", "max-idle", "dns-refresh", "tls",
    ]

    /// A group name: letters, digits, `-` and `_`.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
    }
}

extension UpstreamTLS {
    public static let keys = ["ca", "sni", "cert", "key"]
}

extension HealthCheck {
    public static let keys = ["path", "interval", "timeout", "healthy-after", "unhealthy-after", "expect"]
}

extension OutlierDetection {
    public static let keys = ["consecutive-failures", "base-ejection", "max-ejected"]
}

extension BalancePolicy {
    /// The names `balance:` takes.
    public static let names = ["round-robin", "least-request", "random", "hash"]
}

extension HashKey {
    public static let accepted = "header:NAME, cookie:NAME or client-ip"

    /// `header:x-user-id` (stored lower-case), `cookie:session`, `client-ip`.
    public init?(parsing text: String) {
        let text = text.trimmingWhitespace()
        if text.lowercased() == "client-ip" {
            self = .clientIP
            return
        }
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let kind = text[..<colon].lowercased()
        let name = String(text[text.index(after: colon)...])
        guard !name.isEmpty else { return nil }
        switch kind {
        case "header":
            // An HTTP field name is a token (RFC 9110 §5.6.2).
            guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "!#$%&'*+-.^_`|~".contains($0)) }) else { return nil }
            self = .header(name.lowercased())
        case "cookie":
            guard name.allSatisfy({ $0.isASCII && !$0.isWhitespace && !"=;,\"".contains($0) }) else { return nil }
            self = .cookie(name)
        default:
            return nil
        }
    }
}

extension TreeReader {
    /// Every group of `upstreams:`; a group with errors is left out (its errors are recorded).
    mutating func groups(_ node: ConfigNode, defaults: SluiceConfig.Upstream) -> [UpstreamGroup] {
        let path = ConfigPath.key(SluiceConfig.upstreamsKey)
        guard let entries = node.entries else {
            self.error(path, "expected a mapping of group names to groups, such as {api: {endpoints: [http://10.0.0.7:3000]}}, not \(node.kind)")
            return []
        }
        guard !entries.isEmpty else {
            self.error(path, "no group given; e.g. upstreams: {api: {endpoints: [http://10.0.0.7:3000]}}")
            return []
        }
        var groups: [UpstreamGroup] = []
        var seen: Set<String> = []
        for entry in entries {
            let at = path.key(entry.key)
            guard seen.insert(entry.key).inserted else {
                self.error(at, "given twice")
                continue
            }
            let before = self.errors.count
            if !UpstreamGroup.isValidName(entry.key) {
                self.error(at, "a group name may hold only letters, digits, - and _")
            }
            let group = self.group(entry.key, entry.value, at: at, defaults: defaults)
            if let group, self.errors.count == before { groups.append(group) }
        }
        return groups
    }

    /// One group; `nil` when it cannot be read at all (every problem is recorded either way).
    mutating func group(_ name: String, _ node: ConfigNode, at path: ConfigPath, defaults: SluiceConfig.Upstream) -> UpstreamGroup? {
        guard let entries = self.mapping(node, at: path, known: UpstreamGroup.keys, example: "{endpoints: [http://10.0.0.7:3000]}") else {
            return nil
        }
        var group = UpstreamGroup(name: name, endpoints: [])
        group.connection = defaults

        if let endpoints = entries["endpoints"] {
            group.endpoints = self.endpoints(endpoints, at: path.key("endpoints"))
        } else {
            self.error(path.key("endpoints"), "missing; a group needs at least one, e.g. endpoints: [http://10.0.0.7:3000]")
        }

        var balanceName = "round-robin"
        if let balance = entries["balance"], let text = self.scalar(balance, at: path.key("balance")) {
            if BalancePolicy.names.contains(text.lowercased()) {
                balanceName = text.lowercased()
            } else {
                self.error(path.key("balance"), "\"\(text)\" is not a balance policy (\(BalancePolicy.names.joined(separator: ", ")))")
                balanceName = ""
            }
        }
        var hashKey: HashKey?
        if let hashOn = entries["hash-on"], let text = self.scalar(hashOn, at: path.key("hash-on")) {
            if let key = HashKey(parsing: text) {
                hashKey = key
                if balanceName != "hash" && !balanceName.isEmpty {
                    self.error(path.key("hash-on"), "only used with balance: hash (this group's balance is \(balanceName))")
                }
            } else {
                self.error(path.key("hash-on"), "\"\(text)\" is not a hash key (\(HashKey.accepted))")
            }
        }
        switch balanceName {
        case "round-robin": group.balance = .roundRobin
        case "least-request": group.balance = .leastRequest
        case "random": group.balance = .random
        case "hash":
            if let hashKey {
                group.balance = .hash(hashKey)
            } else if entries["hash-on"] == nil {
                self.error(path.key("hash-on"), "missing; balance: hash needs it (\(HashKey.accepted))")
            }
        default: break  // already reported
        }

        if let node = entries["retries"], let value = self.integer(node, at: path.key("retries"), in: 0...10) { group.retries = value }
        if let node = entries["retry-buffer"], let value = self.size(node, at: path.key("retry-buffer")) { group.retryBuffer = value }
        if let node = entries["health"] { group.health = self.health(node, at: path.key("health")) }
        if let node = entries["outlier"] { group.outlier = self.outlier(node, at: path.key("outlier")) }
        if let node = entries["connect-timeout"], let value = self.duration(node, at: path.key("connect-timeout")) {
            group.connection.connectTimeout = value
        }
        if let node = entries["response-header-timeout"], let value = self.duration(node, at: path.key("response-header-timeout")) {
            group.connection.responseHeaderTimeout = value
        }
        if let node = entries["idle-timeout"], let value = self.duration(node, at: path.key("idle-timeout")) {
            group.connection.idleTimeout = value
        }
        if let node = entries["max-idle"], let value = self.integer(node, at: path.key("max-idle"), in: 0...100_000) {
            group.connection.maxIdle = value
        }
        if let node = entries["dns-refresh"], let value = self.duration(node, at: path.key("dns-refresh")) { group.dnsRefresh = value }
        if let node = entries["tls"] {
            if let first = group.endpoints.first, first.scheme != .https {
                self.error(
                    path.key("tls"),
                    "only for https:// endpoints; this group's endpoints are \(first.scheme.rawValue):// (write https://HOST:PORT to connect with TLS)")
            } else {
                group.tls = self.upstreamTLS(node, at: path.key("tls"))
            }
        }
        return group
    }

    /// `tls:` of an https group: a mapping of optional keys (``UpstreamTLS``); `cert` and `key` together.
    mutating func upstreamTLS(_ node: ConfigNode, at path: ConfigPath) -> UpstreamTLS? {
        let example = "{ca: /etc/ssl/internal-ca.pem, sni: api.internal, cert: /etc/tls/client.crt, key: /etc/tls/client.key}"
        guard let entries = self.mapping(node, at: path, known: UpstreamTLS.keys, example: example) else { return nil }
        var tls = UpstreamTLS()
        func file(_ key: String, _ what: String) -> String? {
            guard let node = entries[key], let text = self.scalar(node, at: path.key(key)) else { return nil }
            guard !text.isEmpty else {
                self.error(path.key(key), "empty; give the path of \(what)")
                return nil
            }
            return text
        }
        tls.ca = file("ca", "a PEM file of CA certificates")
        tls.cert = file("cert", "the PEM client certificate")
        tls.key = file("key", "the PEM private key of the client certificate")
        if let node = entries["sni"], let text = self.scalar(node, at: path.key("sni")) {
            if text.isEmpty || text.count > 253 || text.hasPrefix(".") || text.hasSuffix(".")
                || !text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") })
            {
                self.error(path.key("sni"), "\"\(text)\" is not a host name (letters, digits, - and . such as api.internal)")
            } else if UpstreamURL.isIPLiteral(text) {
                self.error(path.key("sni"), "\"\(text)\" is an IP address; SNI carries host names only (leave sni out to check the certificate against the endpoint's IP)")
            } else {
                tls.sni = text
            }
        }
        switch (entries["cert"] != nil, entries["key"] != nil) {
        case (true, false):
            self.error(path.key("key"), "missing; a client certificate (cert) needs its private key (key)")
        case (false, true):
            self.error(path.key("cert"), "missing; a private key (key) needs its client certificate (cert)")
        case (true, true), (false, false):
            break
        }
        return tls
    }

    /// `endpoints:`: URLs of one scheme, http, https or h2c.
    mutating func endpoints(_ node: ConfigNode, at path: ConfigPath) -> [UpstreamURL] {
        guard let texts = self.scalars(node, at: path) else { return [] }
        guard !texts.isEmpty else {
            self.error(path, "empty; a group needs at least one endpoint, e.g. [http://10.0.0.7:3000]")
            return []
        }
        var endpoints: [UpstreamURL] = []
        for (text, at) in texts {
            if let url = UpstreamURL(parsing: text) {
                endpoints.append(url)
            } else {
                self.error(at, "\"\(text)\" is not an endpoint URL (http://HOST:PORT, https://HOST:PORT or h2c://HOST:PORT, no path)")
            }
        }
        if let first = endpoints.first, let other = endpoints.first(where: { $0.scheme != first.scheme }) {
            if first.scheme == .https || other.scheme == .https {
                self.error(path, "mixes schemes (\(first) and \(other)); all endpoints of a group must be https:// (TLS) or none")
            } else {
                self.error(path, "mixes schemes (\(first) and \(other)); all endpoints of a group must be http:// or all h2c://")
            }
        }
        return endpoints
    }

    /// `health:` a mapping (unset keys keep their defaults), or `off`/`false` for no checks.
    mutating func health(_ node: ConfigNode, at path: ConfigPath) -> HealthCheck? {
        if let text = node.text, TreeReader.bool(text) == false { return nil }
        let example = "{path: /healthz, interval: 2s} or off"
        guard let entries = self.mapping(node, at: path, known: HealthCheck.keys, example: example) else { return nil }
        var health = HealthCheck()
        if let node = entries["path"], let text = self.scalar(node, at: path.key("path")) {
            if text.hasPrefix("/") && !text.contains(where: \.isWhitespace) {
                health.path = text
            } else {
                self.error(path.key("path"), "\"\(text)\" must be a path starting with /")
            }
        }
        var intervalValid = true
        if let node = entries["interval"] {
            if let value = self.duration(node, at: path.key("interval")) { health.interval = value } else { intervalValid = false }
        }
        if let node = entries["timeout"], let value = self.duration(node, at: path.key("timeout")) {
            health.timeout = value
            if intervalValid && value > health.interval {
                self.error(
                    path.key("timeout"),
                    "\(DurationParser.format(value)) is longer than interval \(DurationParser.format(health.interval)); a check must end before the next one starts"
                )
            }
        }
        if let node = entries["healthy-after"], let value = self.integer(node, at: path.key("healthy-after"), in: 1...100) {
            health.healthyAfter = value
        }
        if let node = entries["unhealthy-after"], let value = self.integer(node, at: path.key("unhealthy-after"), in: 1...100) {
            health.unhealthyAfter = value
        }
        if let node = entries["expect"], let value = self.statusRange(node, at: path.key("expect")) { health.expect = value }
        return health
    }

    /// `outlier:` a mapping (unset keys keep their defaults), `on`/`true` for the defaults, or
    /// `off`/`false` to disable it.
    mutating func outlier(_ node: ConfigNode, at path: ConfigPath) -> OutlierDetection? {
        if let text = node.text, let on = TreeReader.bool(text) { return on ? OutlierDetection() : nil }
        let example = "{consecutive-failures: 5, base-ejection: 30s, max-ejected: 50%} or off"
        guard let entries = self.mapping(node, at: path, known: OutlierDetection.keys, example: example) else { return nil }
        var outlier = OutlierDetection()
        if let node = entries["consecutive-failures"], let value = self.integer(node, at: path.key("consecutive-failures"), in: 1...1000) {
            outlier.consecutiveFailures = value
        }
        if let node = entries["base-ejection"], let value = self.duration(node, at: path.key("base-ejection")) { outlier.baseEjection = value }
        if let node = entries["max-ejected"], let value = self.percentage(node, at: path.key("max-ejected")) { outlier.maxEjectedPercent = value }
        return outlier
    }
}
