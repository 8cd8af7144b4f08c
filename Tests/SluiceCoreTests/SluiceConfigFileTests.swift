import SluiceCore
import Testing

/// The config file's full schema (DESIGN.md §5): listeners, upstream groups, routes, `ready-requires`,
/// validated as a whole, every error with its path.
@Suite struct SluiceConfigFileTests {
    /// The messages for a file (and optional flags), or `[]` when the configuration is valid.
    func messages(_ file: ConfigNode, flags: [String: [String]] = [:]) -> [String] {
        do {
            _ = try SluiceConfig.read(ConfigSources(flags: flags, file: file, fileName: "sluice.yaml"), defaultThreads: 2)
            return []
        } catch {
            return error.errors.map(\.message)
        }
    }

    func read(_ file: ConfigNode, flags: [String: [String]] = [:], environment: [String: String] = [:]) throws -> SluiceConfig {
        try SluiceConfig.read(ConfigSources(flags: flags, environment: environment, file: file, fileName: "sluice.yaml"), defaultThreads: 2)
    }

    /// The example file of DESIGN.md §5, without its two `tls:` blocks (TLS is a later issue).
    static let example: ConfigNode = [
        "listen": ["0.0.0.0:8080", ["address": "0.0.0.0:8443"]],
        "admin": "0.0.0.0:9901",
        "drain-delay": "5s",
        "drain-timeout": "20s",
        "termination-grace": "30s",
        "upstreams": [
            "api": [
                "endpoints": ["http://api.default.svc:3000", "http://10.0.0.7:3000"],
                "balance": "least-request",
                "retries": "1",
                "retry-buffer": "64KiB",
                "health": ["path": "/healthz", "interval": "2s", "timeout": "1s", "healthy-after": "2", "unhealthy-after": "3", "expect": "200-399"],
                "outlier": ["consecutive-failures": "5", "base-ejection": "30s", "max-ejected": "50%"],
                "connect-timeout": "1s",
                "response-header-timeout": "30s",
                "idle-timeout": "4s",
                "max-idle": "512",
                "dns-refresh": "5s",
            ],
            "grpc": ["endpoints": ["h2c://grpc.default.svc:50051"]],
        ],
        "routes": [
            [
                "host": "api.example.com", "path-prefix": "/v1/", "upstream": "api", "strip-prefix": "true", "host-rewrite": "api.internal",
                "retry-on-5xx": "true", "max-body-size": "10MiB",
            ],
            ["host": "*.example.com", "upstream": "grpc"],
            ["path-prefix": "/", "upstream": "api"],
        ],
        "ready-requires": ["api"],
    ]

    static let tlsListener: ConfigNode = [
        "address": "0.0.0.0:8443",
        "tls": ["certificates": [["cert": "/etc/tls/site/tls.crt", "key": "/etc/tls/site/tls.key"]], "min-version": "1.2", "alpn": ["h2", "http/1.1"]],
    ]

    /// A configuration with `entries` replaced (or added) at the top level of ``example``.
    static func example(replacing entries: [String: ConfigNode]) -> ConfigNode {
        guard case .mapping(var all) = Self.example else { preconditionFailure("the example is a mapping") }
        for (key, value) in entries.sorted(by: { $0.key < $1.key }) {
            if let index = all.firstIndex(where: { $0.key == key }) { all[index].value = value } else { all.append(.init(key, value)) }
        }
        return .mapping(all)
    }

    // MARK: - The whole schema

    /// The §5 example reads into two groups with their settings and three routes in order.
    @Test func designExampleReadsIntoGroupsAndRoutes() throws {
        let config = try read(Self.example)
        #expect(config.listen.map(\.address) == [HostPort(host: "0.0.0.0", port: 8080), HostPort(host: "0.0.0.0", port: 8443)])

        var api = UpstreamGroup(name: "api", endpoints: [UpstreamURL(host: "api.default.svc", port: 3000), UpstreamURL(host: "10.0.0.7", port: 3000)])
        api.balance = .leastRequest
        api.health = HealthCheck()
        api.connection.connectTimeout = .seconds(1)
        api.connection.responseHeaderTimeout = .seconds(30)
        var grpc = UpstreamGroup(name: "grpc", endpoints: [UpstreamURL(scheme: .h2c, host: "grpc.default.svc", port: 50051)])
        grpc.connection = SluiceConfig.Upstream()
        #expect(config.groups == [api, grpc])
        #expect(config.groups.map(\.scheme) == [.http, .h2c])

        var first = Route(host: .exact("api.example.com"), path: .prefix("/v1/"), upstream: "api")
        first.stripPrefix = true
        first.hostRewrite = "api.internal"
        first.retryOn5xx = true
        first.maxBodyBytes = 10 << 20
        #expect(config.routes == [first, Route(host: .wildcard(suffix: ".example.com"), upstream: "grpc"), Route(upstream: "api")])
        #expect(config.readyRequires == ["api"])
        // `upstreams` is the short form's list only: a file that names groups leaves it empty.
        #expect(config.upstreams.isEmpty)
    }

    /// The §5 example as written, `tls:` blocks included: the listener's is read; the group's, put on a
    /// group of `http://` endpoints, is refused for that.
    @Test func designExampleWithTLSIsRefusedForItsTLSBlocksOnly() {
        guard case .mapping(var entries) = Self.example(replacing: ["listen": ["0.0.0.0:8080", Self.tlsListener]]),
            let upstreams = entries.firstIndex(where: { $0.key == "upstreams" }), case .mapping(var groups) = entries[upstreams].value,
            case .mapping(var api) = groups[0].value
        else { preconditionFailure("the example is a mapping") }
        api.append(.init("tls", ["ca": "/etc/ssl/internal-ca.pem", "sni": "api.internal"]))
        groups[0].value = .mapping(api)
        entries[upstreams].value = .mapping(groups)
        #expect(
            messages(.mapping(entries)) == [
                "upstreams.api.tls: only for https:// endpoints; this group's endpoints are http:// (write https://HOST:PORT to connect with TLS)"
            ])
    }

    /// A group's connection settings default to the global flags; its own keys override them one by one.
    @Test func groupsInheritTheGlobalConnectionSettings() throws {
        let file: ConfigNode = [
            "upstream-connect-timeout": "2s",
            "upstreams": [
                "a": ["endpoints": ["http://a:1"]],
                "b": ["endpoints": ["http://b:1"], "idle-timeout": "9s"],
            ],
            "routes": [["path": "/b", "upstream": "b"], ["upstream": "a"]],
        ]
        let config = try read(file, flags: ["response-header-timeout": ["45s"], "upstream-max-idle": ["7"]])
        #expect(config.groups.map(\.connection.connectTimeout) == [.seconds(2), .seconds(2)])
        #expect(config.groups.map(\.connection.responseHeaderTimeout) == [.seconds(45), .seconds(45)])
        #expect(config.groups.map(\.connection.idleTimeout) == [.seconds(4), .seconds(9)])
        #expect(config.groups.map(\.connection.maxIdle) == [7, 7])
        #expect(config.routes.map(\.path) == [.exact("/b"), .prefix("/")])
    }

    /// Unset group keys have their documented defaults; `outlier: off` disables detection, `health: {}` is
    /// checks with every default.
    @Test func unsetGroupKeysHaveTheirDefaults() throws {
        let config = try read(["upstreams": ["api": ["endpoints": "http://a:1", "outlier": "off", "health": [:]]]])
        let group = try #require(config.groups.first)
        #expect(group.endpoints == [UpstreamURL(host: "a", port: 1)])
        #expect(group.balance == .roundRobin)
        #expect(group.retries == 1)
        #expect(group.retryBuffer == 64 << 10)
        #expect(group.health == HealthCheck())
        #expect(group.outlier == nil)
        #expect(group.dnsRefresh == .seconds(5))
        #expect(group.connection == SluiceConfig.Upstream())
        #expect(try read(["upstreams": ["api": ["endpoints": ["http://a:1"], "outlier": "false"]]]).groups[0].outlier == nil)
        #expect(try read(["upstreams": ["api": ["endpoints": ["http://a:1"]]]]).groups[0].outlier == OutlierDetection())
        #expect(try read(["upstreams": ["api": ["endpoints": ["http://a:1"]]]]).groups[0].health == nil)
    }

    /// `balance: hash` with each kind of key; header names are lower-cased, `expect: 200` is one status.
    @Test func hashKeysAndSingleStatusAreRead() throws {
        func group(_ entries: ConfigNode) throws -> UpstreamGroup {
            guard case .mapping(var all) = entries else { preconditionFailure() }
            all.insert(.init("endpoints", ["http://a:1"]), at: 0)
            return try read(["upstreams": ["g": .mapping(all)]]).groups[0]
        }
        #expect(try group(["balance": "hash", "hash-on": "header:X-User-Id"]).balance == .hash(.header("x-user-id")))
        #expect(try group(["balance": "hash", "hash-on": "cookie:session"]).balance == .hash(.cookie("session")))
        #expect(try group(["balance": "HASH", "hash-on": "client-ip"]).balance == .hash(.clientIP))
        #expect(try group(["balance": "random"]).balance == .random)
        #expect(try group(["health": ["expect": "200"]]).health?.expect == 200...200)
        #expect(try group(["outlier": ["max-ejected": "100%"]]).outlier?.maxEjectedPercent == 100)
    }

    /// Route hosts are lower-cased; `*.example.com` is a suffix; `path:` is an exact path.
    @Test func routeHostsAndPathsAreNormalised() throws {
        let file: ConfigNode = [
            "upstreams": ["api": ["endpoints": ["http://a:1"]]],
            "routes": [["host": "API.Example.COM", "path": "/exact", "upstream": "api"], ["host": "*.Example.com", "upstream": "api"]],
        ]
        let config = try read(file)
        #expect(config.routes.map(\.host) == [.exact("api.example.com"), .wildcard(suffix: ".example.com")])
        #expect(config.routes.map(\.path) == [.exact("/exact"), .prefix("/")])
    }

    /// One group and no routes: one route `/` to it. `ready-requires` may be a single name.
    @Test func oneGroupWithoutRoutesGetsTheCatchAllRoute() throws {
        let config = try read(["upstreams": ["web": ["endpoints": ["http://a:1"]]], "ready-requires": "web"])
        #expect(config.routes == [Route(upstream: "web")])
        #expect(config.readyRequires == ["web"])
    }

    // MARK: - The flags' short form

    /// `--upstream` is one group `default` with the global connection settings, and one route `/` to it.
    @Test func upstreamFlagIsOneDefaultGroupAndOneRoute() throws {
        let config = try SluiceConfig.read(
            ConfigSources(flags: ["upstream": ["http://10.0.0.1:3000", "http://10.0.0.2:3000"], "upstream-connect-timeout": ["2s"]]),
            defaultThreads: 1
        )
        var group = UpstreamGroup(name: "default", endpoints: [UpstreamURL(host: "10.0.0.1", port: 3000), UpstreamURL(host: "10.0.0.2", port: 3000)])
        group.connection.connectTimeout = .seconds(2)
        #expect(config.groups == [group])
        #expect(config.routes == [Route(upstream: "default")])
        #expect(config.upstreams == group.endpoints)
    }

    /// The short form from the environment or the file's `upstream:` works the same, and routes may name `default`.
    @Test func shortFormFromEnvironmentOrFileAndRoutesToDefault() throws {
        let fromEnvironment = try read(["routes": [["path-prefix": "/api", "upstream": "default"]]], environment: ["SLUICE_UPSTREAM": "h2c://g:1"])
        #expect(fromEnvironment.groups.map(\.name) == ["default"])
        #expect(fromEnvironment.groups[0].scheme == .h2c)
        #expect(fromEnvironment.routes == [Route(path: .prefix("/api"), upstream: "default")])
        let fromFile = try read(["upstream": ["http://a:1"]])
        #expect(fromFile.groups.map(\.name) == ["default"])
        #expect(fromFile.routes == [Route(upstream: "default")])
    }

    // MARK: - Every message

    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var file: ConfigNode
        var flags: [String: [String]] = [:]
        var messages: [String]
    }

    static let api: ConfigNode = ["endpoints": ["http://a:1"]]
    static let groupKeys =
        "endpoints, balance, hash-on, retries, retry-buffer, health, outlier, connect-timeout, response-header-timeout, idle-timeout, max-idle, dns-refresh, tls"
    static let routeKeys = "host, path-prefix, path, upstream, strip-prefix, host-rewrite, retry-on-5xx, max-body-size"

    /// A file with the one group `api` holding `entries` besides its endpoint.
    static func group(_ entries: ConfigNode) -> ConfigNode {
        guard case .mapping(let all) = entries else { preconditionFailure() }
        return ["upstreams": ["api": .mapping([.init("endpoints", ["http://a:1"])] + all)]]
    }

    /// A file with groups `api` and `grpc` and `routes`.
    static func routes(_ routes: ConfigNode) -> ConfigNode {
        ["upstreams": ["api": api, "grpc": ["endpoints": ["h2c://g:1"]]], "routes": routes]
    }

    static let cases: [Case] = [
        // Listeners.
        Case(
            testDescription: "listener with tls", file: ["upstream": ["http://a:1"], "listen": ["0.0.0.0:8080", tlsListener]],
            messages: []),
        Case(
            testDescription: "listener mapping without address", file: ["upstream": ["http://a:1"], "listen": [["tls": [:]]]],
            messages: [
                "listen[0].tls.certificates: missing; e.g. certificates: [{cert: /etc/tls/tls.crt, key: /etc/tls/tls.key}]",
                "listen[0].address: missing; e.g. address: 0.0.0.0:8080",
            ]),
        Case(
            testDescription: "tls with empty certificates, a bad version and bad alpn",
            file: [
                "upstream": ["http://a:1"],
                "listen": [["address": "0.0.0.0:8443", "tls": ["certificates": [], "min-version": "1.1", "alpn": ["h3", "h2", "H2"]]]],
            ],
            messages: [
                "listen[0].tls.certificates: empty; a TLS listener needs at least one {cert: FILE, key: FILE}",
                "listen[0].tls.min-version: \"1.1\" is not a TLS version Sluice accepts; use \"1.2\" or \"1.3\"",
                "listen[0].tls.alpn[0]: \"h3\" is not a protocol Sluice serves; use h2 and/or http/1.1",
                "listen[0].tls.alpn[2]: \"H2\" is listed twice",
            ]),
        Case(
            testDescription: "tls certificate without a key, and an unknown key",
            file: [
                "upstream": ["http://a:1"],
                "listen": [["address": "0.0.0.0:8443", "tls": ["certificates": [["cert": "/c.pem", "chain": "/x"]]]]],
            ],
            messages: [
                "listen[0].tls.certificates[0].chain: unknown key; known keys: cert, key",
                "listen[0].tls.certificates[0].key: missing; e.g. key: /etc/tls/tls.key",
            ]),
        Case(
            testDescription: "tls short form alone, and on a plaintext listener's address",
            file: ["upstream": ["http://a:1"], "tls-cert": "/c.pem"],
            messages: [
                "tls-cert in sluice.yaml given alone: a TLS listener needs all three of --listen-tls HOST:PORT, --tls-cert FILE and --tls-key FILE"
            ]),
        Case(
            testDescription: "tls short form on a plaintext listener's address",
            file: ["upstream": ["http://a:1"], "listen": ["0.0.0.0:8443"], "listen-tls": "0.0.0.0:8443", "tls-cert": "/c.pem", "tls-key": "/k.pem"],
            messages: ["listen-tls in sluice.yaml 0.0.0.0:8443 is also a plaintext listener; one address serves one of them"]),
        Case(
            testDescription: "listener mapping with a bad address", file: ["upstream": ["http://a:1"], "listen": [["address": "nowhere"]]],
            messages: ["listen[0].address: \"nowhere\" is not HOST:PORT (0.0.0.0:8080, [::1]:8080; port 0-65535)"]),
        Case(
            testDescription: "listener mapping with an unknown key", file: ["upstream": ["http://a:1"], "listen": [["address": "0.0.0.0:1", "port": "2"]]],
            messages: ["listen[0].port: unknown key; known keys: address, tls"]),
        // The file's top level.
        Case(
            testDescription: "flat key holding a mapping", file: ["upstream": ["http://a:1"], "drain-delay": ["seconds": "5"]],
            messages: ["drain-delay in sluice.yaml must be a value or a list of values, not a mapping"]),
        Case(
            testDescription: "flat key holding a list of lists", file: ["upstream": [["http://a:1"]]],
            messages: [
                "upstream in sluice.yaml must be a list of plain values",
                "no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to a URL such as http://127.0.0.1:3000, https://api.internal or h2c://127.0.0.1:50051 (scheme http, https or h2c, no path)",
            ]),
        Case(
            testDescription: "file that is a list", file: ["a", "b"], flags: ["upstream": ["http://a:1"]],
            messages: ["config file sluice.yaml must be a mapping of settings, e.g. \"drain-delay: 5s\""]),
        Case(
            testDescription: "flat key given twice", file: .mapping([.init("upstream", ["http://a:1"]), .init("threads", "2"), .init("threads", "3")]),
            messages: ["threads in sluice.yaml is given twice"]),
        // The short form and groups together.
        Case(
            testDescription: "--upstream and upstreams", file: ["upstreams": ["api": api]], flags: ["upstream": ["http://a:1"]],
            messages: [
                "--upstream and upstreams in sluice.yaml are both given: use one (--upstream is the short form of one group \"default\"; upstreams: names groups)"
            ]),
        Case(
            testDescription: "upstream and upstreams in the file", file: ["upstream": ["http://a:1"], "upstreams": ["api": api]],
            messages: [
                "upstream in sluice.yaml and upstreams in sluice.yaml are both given: use one (--upstream is the short form of one group \"default\"; upstreams: names groups)"
            ]),
        // Groups.
        Case(
            testDescription: "upstreams as a list", file: ["upstreams": ["http://a:1"]],
            messages: ["upstreams: expected a mapping of group names to groups, such as {api: {endpoints: [http://10.0.0.7:3000]}}, not a list"]),
        Case(
            testDescription: "upstreams empty", file: ["upstreams": [:]],
            messages: ["upstreams: no group given; e.g. upstreams: {api: {endpoints: [http://10.0.0.7:3000]}}"]),
        Case(
            testDescription: "group name with a space", file: ["upstreams": ["my group": api]],
            messages: ["upstreams.\"my group\": a group name may hold only letters, digits, - and _"]),
        Case(
            testDescription: "group that is a list", file: ["upstreams": ["api": ["http://a:1"]]],
            messages: ["upstreams.api: expected a mapping such as {endpoints: [http://10.0.0.7:3000]}, not a list"]),
        Case(
            testDescription: "unknown group key", file: group(["helth": ["path": "/"]]),
            messages: ["upstreams.api.helth: unknown key (did you mean health?); known keys: \(groupKeys)"]),
        Case(
            testDescription: "group key given twice", file: group(.mapping([.init("retries", "1"), .init("retries", "2")])),
            messages: ["upstreams.api.retries: given twice"]),
        Case(
            testDescription: "group without endpoints", file: ["upstreams": ["api": ["retries": "1"]]],
            messages: ["upstreams.api.endpoints: missing; a group needs at least one, e.g. endpoints: [http://10.0.0.7:3000]"]),
        Case(
            testDescription: "group with no endpoint", file: ["upstreams": ["api": ["endpoints": []]]],
            messages: ["upstreams.api.endpoints: empty; a group needs at least one endpoint, e.g. [http://10.0.0.7:3000]"]),
        Case(
            testDescription: "bad endpoint", file: ["upstreams": ["api": ["endpoints": ["http://a:1", "tcp://b:2"]]]],
            messages: ["upstreams.api.endpoints[1]: \"tcp://b:2\" is not an endpoint URL (http://HOST:PORT, https://HOST:PORT or h2c://HOST:PORT, no path)"]),
        Case(
            testDescription: "endpoints of two schemes", file: ["upstreams": ["api": ["endpoints": ["http://a:1", "h2c://b:2"]]]],
            messages: ["upstreams.api.endpoints: mixes schemes (http://a:1 and h2c://b:2); all endpoints of a group must be http:// or all h2c://"]),
        Case(
            testDescription: "unknown balance policy", file: group(["balance": "fastest"]),
            messages: ["upstreams.api.balance: \"fastest\" is not a balance policy (round-robin, least-request, random, hash)"]),
        Case(
            testDescription: "hash without hash-on", file: group(["balance": "hash"]),
            messages: ["upstreams.api.hash-on: missing; balance: hash needs it (header:NAME, cookie:NAME or client-ip)"]),
        Case(
            testDescription: "hash-on without hash", file: group(["hash-on": "client-ip"]),
            messages: ["upstreams.api.hash-on: only used with balance: hash (this group's balance is round-robin)"]),
        Case(
            testDescription: "bad hash key", file: group(["balance": "hash", "hash-on": "ip"]),
            messages: ["upstreams.api.hash-on: \"ip\" is not a hash key (header:NAME, cookie:NAME or client-ip)"]),
        Case(
            testDescription: "retries out of range", file: group(["retries": "11"]),
            messages: ["upstreams.api.retries: \"11\" is not a whole number from 0 to 10"]),
        Case(
            testDescription: "retries as a list", file: group(["retries": ["1"]]),
            messages: ["upstreams.api.retries: expected a value, not a list"]),
        Case(
            testDescription: "bad retry buffer", file: group(["retry-buffer": "lots"]),
            messages: ["upstreams.api.retry-buffer: \"lots\" is not a size (32768, 64KiB, 1MiB)"]),
        Case(
            testDescription: "health check interval that is not a duration", file: group(["health": ["interval": "2x"]]),
            messages: ["upstreams.api.health.interval: \"2x\" is not a duration (500ms, 5s, 1m30s)"]),
        Case(
            testDescription: "health check timeout longer than its interval", file: group(["health": ["interval": "2s", "timeout": "3s"]]),
            messages: ["upstreams.api.health.timeout: 3s is longer than interval 2s; a check must end before the next one starts"]),
        Case(
            testDescription: "health check path without a slash", file: group(["health": ["path": "healthz"]]),
            messages: ["upstreams.api.health.path: \"healthz\" must be a path starting with /"]),
        Case(
            testDescription: "health check threshold of zero", file: group(["health": ["healthy-after": "0"]]),
            messages: ["upstreams.api.health.healthy-after: \"0\" is not a whole number from 1 to 100"]),
        Case(
            testDescription: "health check expecting 2xx", file: group(["health": ["expect": "2xx"]]),
            messages: ["upstreams.api.health.expect: \"2xx\" is not a status or a range of statuses from 100 to 599 (200, 200-399)"]),
        Case(
            testDescription: "health check range upside down", file: group(["health": ["expect": "399-200"]]),
            messages: ["upstreams.api.health.expect: \"399-200\" is not a status or a range of statuses from 100 to 599 (200, 200-399)"]),
        Case(
            testDescription: "health as a list", file: group(["health": ["/healthz"]]),
            messages: ["upstreams.api.health: expected a mapping such as {path: /healthz, interval: 2s} or off, not a list"]),
        Case(
            testDescription: "outlier max-ejected that is not a percentage", file: group(["outlier": ["max-ejected": "half"]]),
            messages: ["upstreams.api.outlier.max-ejected: \"half\" is not a percentage from 0% to 100% (50%)"]),
        Case(
            testDescription: "outlier base ejection of zero", file: group(["outlier": ["base-ejection": "0s"]]),
            messages: ["upstreams.api.outlier.base-ejection: \"0s\" is too short: must be greater than zero"]),
        Case(
            testDescription: "outlier with an unknown key", file: group(["outlier": ["failures": "3"]]),
            messages: ["upstreams.api.outlier.failures: unknown key; known keys: consecutive-failures, base-ejection, max-ejected"]),
        Case(
            testDescription: "outlier as a word", file: group(["outlier": "sometimes"]),
            messages: [
                "upstreams.api.outlier: expected a mapping such as {consecutive-failures: 5, base-ejection: 30s, max-ejected: 50%} or off, not a value"
            ]),
        Case(
            testDescription: "connect timeout that is not a duration", file: group(["connect-timeout": "soon"]),
            messages: ["upstreams.api.connect-timeout: \"soon\" is not a duration (500ms, 5s, 1m30s)"]),
        Case(
            testDescription: "negative max-idle", file: group(["max-idle": "-1"]),
            messages: ["upstreams.api.max-idle: \"-1\" is not a whole number from 0 to 100000"]),
        Case(
            testDescription: "dns refresh of zero", file: group(["dns-refresh": "0"]),
            messages: ["upstreams.api.dns-refresh: \"0\" is too short: must be greater than zero"]),
        Case(
            testDescription: "group tls", file: group(["tls": ["ca": "/ca.pem"]]),
            messages: ["upstreams.api.tls: only for https:// endpoints; this group's endpoints are http:// (write https://HOST:PORT to connect with TLS)"]),
        // Routes.
        Case(
            testDescription: "several groups without routes", file: ["upstreams": ["api": api, "grpc": ["endpoints": ["h2c://g:1"]]]],
            messages: ["routes: missing; with several groups (api, grpc) say which requests go where, e.g. routes: [{path-prefix: /, upstream: api}]"]),
        Case(
            testDescription: "routes as a mapping", file: routes(["upstream": "api"]),
            messages: ["routes: expected a list of routes such as [{path-prefix: /, upstream: api}], not a mapping"]),
        Case(
            testDescription: "routes empty", file: routes([]),
            messages: ["routes: empty; no request would reach a group, e.g. routes: [{path-prefix: /, upstream: api}]"]),
        Case(
            testDescription: "route that is a value", file: routes(["api"]),
            messages: ["routes[0]: expected a mapping such as {path-prefix: /, upstream: api}, not a value"]),
        Case(
            testDescription: "route without upstream", file: routes([["path-prefix": "/"]]),
            messages: ["routes[0].upstream: missing; name a group: api, grpc"]),
        Case(
            testDescription: "route to a group that does not exist",
            file: routes([["path": "/a", "upstream": "api"], ["path": "/b", "upstream": "grpc"], ["upstream": "apii"]]),
            messages: ["routes[2].upstream: \"apii\" is not a group; groups: api, grpc"]),
        Case(
            testDescription: "route host with a port", file: routes([["host": "api.example.com:443", "upstream": "api"]]),
            messages: ["routes[0].host: \"api.example.com:443\" has a port; leave it out (a route's host matches any port)"]),
        Case(
            testDescription: "route host with an inner wildcard", file: routes([["host": "api.*.com", "upstream": "api"]]),
            messages: ["routes[0].host: \"api.*.com\": only a whole first label may be a wildcard, as in *.example.com"]),
        Case(
            testDescription: "route host that is not a name", file: routes([["host": "api..com", "upstream": "api"]]),
            messages: ["routes[0].host: \"api..com\" is not a host name such as api.example.com, or *.example.com"]),
        Case(
            testDescription: "route with path-prefix and path", file: routes([["path-prefix": "/a", "path": "/a/b", "upstream": "api"]]),
            messages: ["routes[0]: path-prefix and path are both given; use one"]),
        Case(
            testDescription: "route prefix without a slash", file: routes([["path-prefix": "v1/", "upstream": "api"]]),
            messages: ["routes[0].path-prefix: \"v1/\" must start with /"]),
        Case(
            testDescription: "route path with a query", file: routes([["path": "/a?b=1", "upstream": "api"]]),
            messages: ["routes[0].path: \"/a?b=1\" must be a path alone, without spaces, ? or #"]),
        Case(
            testDescription: "strip-prefix without path-prefix", file: routes([["path": "/a", "strip-prefix": "true", "upstream": "api"]]),
            messages: ["routes[0].strip-prefix: only with path-prefix"]),
        Case(
            testDescription: "retry-on-5xx that is not a boolean", file: routes([["retry-on-5xx": "maybe", "upstream": "api"]]),
            messages: ["routes[0].retry-on-5xx: \"maybe\" is not true or false"]),
        Case(
            testDescription: "bad host rewrite", file: routes([["host-rewrite": "a/b", "upstream": "api"]]),
            messages: ["routes[0].host-rewrite: \"a/b\" is not a host (api.internal or api.internal:8080)"]),
        Case(
            testDescription: "bad route body limit", file: routes([["max-body-size": "big", "upstream": "api"]]),
            messages: ["routes[0].max-body-size: \"big\" is not a size (32768, 64KiB, 1MiB)"]),
        Case(
            testDescription: "unknown route key", file: routes([["path-prefx": "/a", "upstream": "api"]]),
            messages: ["routes[0].path-prefx: unknown key (did you mean path-prefix?); known keys: \(routeKeys)"]),
        // ready-requires.
        Case(
            testDescription: "ready-requires naming no group", file: ["upstreams": ["api": api, "grpc": ["endpoints": ["h2c://g:1"]]], "routes": [["upstream": "api"]], "ready-requires": ["api", "apii"]],
            messages: ["ready-requires[1]: \"apii\" is not a group; groups: api, grpc"]),
        Case(
            testDescription: "ready-requires as a mapping", file: ["upstreams": ["api": api], "ready-requires": ["api": "yes"]],
            messages: ["ready-requires: expected a list of values, not a mapping"]),
    ]

    /// Each problem is reported alone, with its path and its exact message.
    @Test(arguments: cases)
    func eachProblemHasItsExactMessage(_ check: Case) {
        #expect(messages(check.file, flags: check.flags) == check.messages)
    }

    /// Many problems in one file are all reported, in the file's order, flat settings first; a route to a
    /// group whose own settings are wrong is not reported a second time.
    @Test func everyProblemInTheFileIsReportedAtOnce() {
        let file: ConfigNode = [
            "drain-delay": "soon",
            "upstreams": [
                "api": ["endpoints": ["http://a:1"], "health": ["interval": "2x"], "balance": "fastest"],
                "grpc": ["endpoints": ["tcp://g:1"]],
            ],
            "routes": [["host": "*.example.com", "upstream": "grpc"], ["path-prefix": "v1", "upstream": "apii"]],
            "ready-requires": ["grpc", "web"],
            "colour": "blue",
        ]
        #expect(
            messages(file) == [
                "unknown setting \"colour\" in sluice.yaml; known settings: listen, listen-tls, tls-cert, tls-key, upstream, admin, threads, drain-delay, drain-timeout, termination-grace, drain-quiet, drain-delay-min, drain-report, drain-idle-quiet, request-header-timeout, idle-timeout, max-header-size, max-body-size, request-body-timeout, stream-stall-timeout, tunnel-idle-timeout, max-connections, upstream-connect-timeout, response-header-timeout, upstream-idle-timeout, upstream-max-idle, app-ready-path, app-stop-signal, app-forward-signals, log-level, log-format, upstreams, routes, ready-requires",
                "invalid drain-delay in sluice.yaml \"soon\": expected a duration such as 500ms, 5s, 1m30s or a bare number of seconds",
                "upstreams.api.balance: \"fastest\" is not a balance policy (round-robin, least-request, random, hash)",
                "upstreams.api.health.interval: \"2x\" is not a duration (500ms, 5s, 1m30s)",
                "upstreams.grpc.endpoints[0]: \"tcp://g:1\" is not an endpoint URL (http://HOST:PORT, https://HOST:PORT or h2c://HOST:PORT, no path)",
                "routes[1].upstream: \"apii\" is not a group; groups: api, grpc",
                "routes[1].path-prefix: \"v1\" must start with /",
                "ready-requires[1]: \"web\" is not a group; groups: api, grpc",
            ])
    }

    // MARK: - check-config's output

    /// The effective configuration names every setting with the file's keys, the groups with their
    /// inherited settings, and the routes; the budget line adds the margin and says what is left.
    @Test func effectiveConfigurationListsEverySettingGroupAndRoute() throws {
        let config = try read(Self.example, flags: ["threads": ["2"]])
        #expect(
            config.effectiveYAML == """
                listen:
                  - 0.0.0.0:8080
                  - 0.0.0.0:8443
                admin: 0.0.0.0:9901
                threads: 2
                drain-delay: 5s
                drain-timeout: 20s
                termination-grace: 30s
                drain-delay-min: 2s
                drain-idle-quiet: 250ms
                request-header-timeout: 30s
                idle-timeout: 1m
                max-header-size: 32KiB
                max-body-size: unlimited
                request-body-timeout: 30s
                stream-stall-timeout: 30s
                tunnel-idle-timeout: 1h
                max-connections: auto
                upstream-connect-timeout: 5s
                response-header-timeout: 1m
                upstream-idle-timeout: 4s
                upstream-max-idle: 512
                log-level: info
                log-format: text
                upstreams:
                  api:
                    endpoints: [http://api.default.svc:3000, http://10.0.0.7:3000]
                    balance: least-request
                    retries: 1
                    retry-buffer: 64KiB
                    health: {path: /healthz, interval: 2s, timeout: 1s, healthy-after: 2, unhealthy-after: 3, expect: 200-399}
                    outlier: {consecutive-failures: 5, base-ejection: 30s, max-ejected: 50%}
                    connect-timeout: 1s
                    response-header-timeout: 30s
                    idle-timeout: 4s
                    max-idle: 512
                    dns-refresh: 5s
                  grpc:
                    endpoints: [h2c://grpc.default.svc:50051]
                    balance: round-robin
                    retries: 1
                    retry-buffer: 64KiB
                    health: off
                    outlier: {consecutive-failures: 5, base-ejection: 30s, max-ejected: 50%}
                    connect-timeout: 5s
                    response-header-timeout: 1m
                    idle-timeout: 4s
                    max-idle: 512
                    dns-refresh: 5s
                routes:
                  - host: api.example.com
                    path-prefix: /v1/
                    upstream: api
                    strip-prefix: true
                    host-rewrite: api.internal
                    retry-on-5xx: true
                    max-body-size: 10MiB
                  - host: "*.example.com"
                    path-prefix: /
                    upstream: grpc
                  - path-prefix: /
                    upstream: api
                ready-requires: [api]

                """)
        #expect(config.drainBudgetSummary == "drain-delay 5s + drain-timeout 20s + margin 1s = 26s of termination-grace 30s (4s to spare)")
    }

    /// A setting given in two sources with different values is a warning naming both and the winner.
    @Test func overriddenSettingsAreWarnings() {
        let sources = ConfigSources(
            flags: ["drain-delay": ["5s"], "upstream": ["http://a:1"]],
            environment: ["SLUICE_DRAIN_DELAY": "7s", "SLUICE_UPSTREAM": "http://a:1"],
            file: ["drain-delay": "9s", "drain-timeout": "20s"],
            fileName: "sluice.yaml"
        )
        #expect(
            SluiceConfig.overriddenSettings(in: sources) == [
                "drain-delay: --drain-delay 5s overrides SLUICE_DRAIN_DELAY 7s",
                "drain-delay: --drain-delay 5s overrides drain-delay in sluice.yaml 9s",
            ])
    }

    /// A grace period shorter than the budget, or than termination-grace, makes the check fail with both
    /// reasons; the JSON report carries the numbers the deployment lint reads.
    @Test func gracePeriodIsCheckedAndReportedAsJSON() {
        let sources = ConfigSources(flags: ["upstream": ["http://a:1"], "admin": ["0.0.0.0:9902"]])
        let short = ConfigCheck(sources, defaultThreads: 1, gracePeriod: .seconds(25))
        #expect(
            short.errors.map(\.message) == [
                "drain budget does not fit the grace period: drain-delay 5s + drain-timeout 20s + margin 1s = 26s exceeds the grace period 25s; Sluice would be killed while draining",
                "termination-grace 30s is longer than the grace period 25s: Sluice would plan with time it does not have; set them equal",
            ])
        let fits = ConfigCheck(sources, defaultThreads: 1, gracePeriod: .seconds(30))
        #expect(fits.isValid)
        #expect(
            fits.json == """
                {"valid": true, "errors": [], "warnings": [], "grace_period_seconds": 30, "config": {"listen": ["0.0.0.0:8080"], "listeners": [{"address": "0.0.0.0:8080", "scheme": "http", "tls": null}], "admin": "0.0.0.0:9902", "admin_port": 9902, "drain": {"delay": "5s", "delay_seconds": 5, "timeout": "20s", "timeout_seconds": 20, "margin": "1s", "margin_seconds": 1, "budget": "26s", "budget_seconds": 26, "termination_grace": "30s", "termination_grace_seconds": 30, "quiet": null, "quiet_seconds": null, "delay_min": "2s", "delay_min_seconds": 2, "report": null}, "tunnel_idle_timeout": "1h", "tunnel_idle_timeout_seconds": 3600, "groups": [{"name": "default", "scheme": "http", "endpoints": ["http://a:1"], "tls": null}], "routes": [{"host": null, "path": "path-prefix /", "upstream": "default"}], "app": null}}

                """)
        let invalid = ConfigCheck(ConfigSources(flags: ["drain-delay": ["9.5s"]]), defaultThreads: 1)
        #expect(
            invalid.json == """
                {"valid": false, "errors": ["no upstream configured: set --upstream (or SLUICE_UPSTREAM, or upstream in the config file) to a URL such as http://127.0.0.1:3000, https://api.internal or h2c://127.0.0.1:50051 (scheme http, https or h2c, no path)", "drain budget does not fit: drain-delay 9500ms + drain-timeout 20s + margin 1s = 30500ms exceeds termination-grace 30s; shorten drain-delay or drain-timeout, or raise termination-grace together with the pod's terminationGracePeriodSeconds"], "warnings": [], "grace_period_seconds": null, "config": null}

                """)
    }
}

/// TLS listeners in the file and by the short form (issue 12).
@Suite struct TLSListenerConfigTests {
    static func read(_ file: ConfigNode, flags: [String: [String]] = [:]) throws -> SluiceConfig {
        try SluiceConfig.read(ConfigSources(flags: flags, file: file, fileName: "sluice.yaml"), defaultThreads: 1)
    }

    /// A TLS listener beside a plaintext one, with several certificates, a minimum version and ALPN.
    @Test func fileListenersCarryTheirTLSSettings() throws {
        let config = try Self.read([
            "upstream": ["http://a:1"],
            "listen": [
                "0.0.0.0:8080",
                [
                    "address": "0.0.0.0:8443",
                    "tls": [
                        "certificates": [["cert": "/a.crt", "key": "/a.key"], ["cert": "/b.crt", "key": "/b.key"]],
                        "min-version": "1.3", "alpn": ["http/1.1"],
                    ],
                ],
            ],
        ])
        #expect(
            config.listen == [
                Listener(HostPort(host: "0.0.0.0", port: 8080)),
                Listener(
                    HostPort(host: "0.0.0.0", port: 8443),
                    tls: TLSSettings(certificates: [.init(cert: "/a.crt", key: "/a.key"), .init(cert: "/b.crt", key: "/b.key")], minVersion: .v1_3, alpn: ["http/1.1"])),
            ])
        #expect(config.listen.map(\.scheme) == [.http, .https])
        // The defaults: TLS 1.2 and both protocols, h2 first.
        let defaults = try Self.read(["upstream": ["http://a:1"], "listen": [["address": "0.0.0.0:8443", "tls": ["certificates": [["cert": "/a", "key": "/b"]]]]]])
        #expect(defaults.listen[0].tls == TLSSettings(certificates: [.init(cert: "/a", key: "/b")], minVersion: .v1_2, alpn: ["h2", "http/1.1"]))
    }

    /// `--listen-tls` adds one TLS listener after the plaintext ones, from flags or the file's flat keys.
    @Test func theShortFormAddsOneTLSListener() throws {
        let config = try Self.read(
            ["upstream": ["http://a:1"], "listen": ["0.0.0.0:8080"]],
            flags: ["listen-tls": ["127.0.0.1:8443"], "tls-cert": ["/c.pem"], "tls-key": ["/k.pem"]])
        #expect(config.listen.map(\.description) == ["0.0.0.0:8080", "127.0.0.1:8443 (tls)"])
        #expect(config.listen[1].tls?.certificates == [.init(cert: "/c.pem", key: "/k.pem")])
    }

    /// Two listeners on one address (port 0 included) are an error: a listener is known by its address.
    @Test func twoListenersMayNotShareAnAddress() {
        #expect(throws: ConfigErrors(errors: [ConfigError("listen 127.0.0.1:0 is given twice; each listener needs an address of its own")])) {
            try Self.read(["upstream": ["http://a:1"], "listen": ["127.0.0.1:0", ["address": "127.0.0.1:0", "tls": ["certificates": [["cert": "/c", "key": "/k"]]]]]])
        }
    }

    /// The drain and supervisor settings print only when set (the app's command as a comment).
    @Test func effectiveYAMLRoundTripsDrainAndSupervisorSettings() throws {
        let sources = ConfigSources(
            flags: [
                "upstream": ["http://127.0.0.1:3000"], "drain-quiet": ["1s"], "drain-report": ["/var/run/drain report.json"],
                "app-ready-path": ["/healthz"], "app-forward-signals": ["USR1"],
            ],
            appCommand: ["node", "server.js"])
        let config = try SluiceConfig.read(sources, defaultThreads: 1)
        let yaml = config.effectiveYAML
        #expect(yaml.contains("\ndrain-quiet: 1s\ndrain-delay-min: 2s\ndrain-report: /var/run/drain report.json\n"), "\(yaml)")
        #expect(yaml.contains("\n# supervisor mode: -- node server.js\napp-ready-path: /healthz\napp-stop-signal: TERM\napp-forward-signals: [USR1]\n"))
        #expect(!SluiceConfig().effectiveYAML.contains("drain-quiet") && !SluiceConfig().effectiveYAML.contains("app-"))
        let json = ConfigCheck(sources, defaultThreads: 1, gracePeriod: nil).json
        #expect(json.contains("\"quiet\": \"1s\", \"quiet_seconds\": 1, \"delay_min\": \"2s\", \"delay_min_seconds\": 2, \"report\": \"/var/run/drain report.json\"}"), "\(json)")
        #expect(
            json.hasSuffix(
                "\"app\": {\"command\": [\"node\", \"server.js\"], \"ready_path\": \"/healthz\", \"stop_signal\": \"TERM\", \"forward_signals\": [\"USR1\"]}}}\n"),
            "\(json)")
    }

    /// check-config's YAML writes a TLS listener as the file would, and reads back to the same listeners.
    @Test func effectiveYAMLRoundTripsTLSListeners() throws {
        var config = SluiceConfig()
        config.listen = [
            Listener(HostPort(host: "0.0.0.0", port: 8080)),
            Listener(HostPort(host: "0.0.0.0", port: 8443), tls: TLSSettings(certificates: [.init(cert: "/a.crt", key: "/a.key")], minVersion: .v1_3)),
        ]
        config.upstreams = [UpstreamURL(host: "a", port: 1)]
        config.applyShortForm()
        let yaml = config.effectiveYAML
        #expect(
            yaml.hasPrefix(
                """
                listen:
                  - 0.0.0.0:8080
                  - address: 0.0.0.0:8443
                    tls:
                      certificates:
                        - {cert: /a.crt, key: /a.key}
                      min-version: "1.3"
                      alpn: [h2, http/1.1]
                admin:
                """))
    }
}
