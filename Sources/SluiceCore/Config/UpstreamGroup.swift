/// A named set of endpoints that serve the same thing, and how requests are spread over them
/// (DESIGN.md §5, `upstreams:`). `--upstream` given as flags makes one group, ``defaultName``.
///
/// The scheme belongs to the group: every endpoint of a group is `http://`, every one `https://`,
/// or every one `h2c://` (``scheme``); groups of different schemes live side by side.
public struct UpstreamGroup: Sendable, Equatable {
    /// The name the flags' group gets, and the group the flags' one route points to.
    public static let defaultName = "default"

    /// The key under `upstreams:`; routes and `ready-requires` name it.
    public var name: String
    /// As configured; a name is resolved at start-up and again every ``dnsRefresh``, each A/AAAA
    /// record an endpoint of its own. Never empty once validated.
    public var endpoints: [UpstreamURL]
    /// Default ``BalancePolicy/roundRobin``.
    public var balance: BalancePolicy = .roundRobin
    /// Further attempts after the first, each on another endpoint. Default 1.
    public var retries: Int = 1
    /// A request body up to this size is kept so that it can be replayed on a retry. Default 64 KiB.
    public var retryBuffer: Int = 64 << 10
    /// Active health checks; `nil` (the default): none, every endpoint counts as healthy.
    public var health: HealthCheck? = nil
    /// Passive outlier detection; `nil`: off.
    public var outlier: OutlierDetection? = OutlierDetection()
    /// Per-group connection settings (the flags `--upstream-connect-timeout` and the like set the defaults).
    public var connection = SluiceConfig.Upstream()
    /// Endpoint names are resolved again this often. Default 5 s.
    public var dnsRefresh: Duration = .seconds(5)
    /// `tls:` of an `https://` group; `nil`: the defaults (``UpstreamTLS/init()``: the system CA
    /// bundle, SNI the endpoint's host name, no client certificate). Only https groups have one.
    public var tls: UpstreamTLS? = nil

    public init(name: String, endpoints: [UpstreamURL]) {
        self.name = name
        self.endpoints = endpoints
    }

    /// The group's scheme (validation makes every endpoint share it).
    public var scheme: UpstreamURL.Scheme { self.endpoints.first?.scheme ?? .http }

    /// The TLS settings connections to this group use: ``tls`` or the defaults for an `https://`
    /// group, `nil` for a plaintext one.
    public var effectiveTLS: UpstreamTLS? { self.scheme == .https ? (self.tls ?? UpstreamTLS()) : nil }
}

/// TLS to a group's `https://` endpoints (`tls: {ca, sni, cert, key}`, DESIGN.md §5).
///
/// 1. **Trust.** The upstream's certificate chain must lead to a CA of ``ca`` (a PEM bundle), or of
///    the system CA bundle when it is `nil`. TLS 1.2 and 1.3 only.
/// 2. **Name.** The name sent in SNI and checked against the certificate is ``sni``, else the
///    endpoint's configured host name (``UpstreamURL/tlsServerName``, kept across DNS
///    re-resolution). An endpoint given by IP literal with no ``sni`` sends no SNI, and its
///    certificate must name that IP address.
/// 3. **Client certificate (mTLS).** ``cert`` and ``key`` together, or neither.
/// 4. **Protocol.** ALPN offers `h2` and `http/1.1`: an upstream that picks `h2` is spoken to over
///    HTTP/2, any other over HTTP/1.1.
///
/// The files are read when the group's connections are set up (start-up, reload); checking that
/// they exist and hold what they should is the proxy's business (`UpstreamTLS.check(group:)`), not
/// the config reader's, which does no file I/O.
public struct UpstreamTLS: Sendable, Hashable {
    /// PEM file of the CA certificates to trust; `nil`: the system CA bundle.
    public var ca: String? = nil
    /// The TLS server name (SNI and certificate check); `nil`: the endpoint's host name.
    public var sni: String? = nil
    /// PEM client certificate (chain) for mTLS; set together with ``key``.
    public var cert: String? = nil
    /// PEM private key of ``cert``.
    public var key: String? = nil

    public init(ca: String? = nil, sni: String? = nil, cert: String? = nil, key: String? = nil) {
        self.ca = ca
        self.sni = sni
        self.cert = cert
        self.key = key
    }

    /// The name TLS uses for `endpoint`: ``sni``, else the endpoint's host name, else none (an IP literal).
    public func serverName(for endpoint: UpstreamURL) -> String? { self.sni ?? endpoint.tlsServerName }
}

/// How a group's ``Balancer`` picks an endpoint (`balance:`).
public enum BalancePolicy: Sendable, Equatable, CustomStringConvertible {
    /// In turn (`round-robin`).
    case roundRobin
    /// The less loaded of two endpoints picked at random, by requests in flight (`least-request`).
    case leastRequest
    /// Uniformly at random (`random`).
    case random
    /// Consistent hashing on a key of the request (`hash`, with `hash-on`): a key keeps its endpoint
    /// while other endpoints come and go.
    case hash(HashKey)

    public var description: String {
        switch self {
        case .roundRobin: "round-robin"
        case .leastRequest: "least-request"
        case .random: "random"
        case .hash(let key): "hash on \(key)"
        }
    }
}

/// What `balance: hash` hashes (`hash-on:`).
public enum HashKey: Sendable, Equatable, CustomStringConvertible {
    /// `header:NAME`; the name is stored lower-cased.
    case header(String)
    /// `cookie:NAME`.
    case cookie(String)
    /// `client-ip`: the downstream peer's address.
    case clientIP

    public var description: String {
        switch self {
        case .header(let name): "header:\(name)"
        case .cookie(let name): "cookie:\(name)"
        case .clientIP: "client-ip"
        }
    }
}

/// Active health checks of a group's endpoints (`health:`).
public struct HealthCheck: Sendable, Equatable {
    /// `GET` this path on each endpoint. Default `/healthz`.
    public var path: String = "/healthz"
    /// Between two checks of one endpoint (jittered). Default 2 s.
    public var interval: Duration = .seconds(2)
    /// A check without a response head within this is a failure. Default 1 s.
    public var timeout: Duration = .seconds(1)
    /// Consecutive passes that make an unhealthy endpoint healthy. Default 2.
    public var healthyAfter: Int = 2
    /// Consecutive failures that make a healthy endpoint unhealthy. Default 3.
    public var unhealthyAfter: Int = 3
    /// The statuses that pass (`expect: 200-399`). Default 200–399.
    public var expect: ClosedRange<Int> = 200...399

    public init() {}
}

/// Passive outlier detection (`outlier:`): an endpoint that fails requests in a row is ejected
/// for a while, longer each time.
public struct OutlierDetection: Sendable, Equatable {
    /// Connect errors, resets and 5xx responses in a row that eject an endpoint. Default 5.
    public var consecutiveFailures: Int = 5
    /// An ejection lasts this × the number of ejections so far. Default 30 s.
    public var baseEjection: Duration = .seconds(30)
    /// At most this percentage of a group's endpoints is ejected at once (at least one endpoint may
    /// be). Default 50.
    public var maxEjectedPercent: Int = 50

    public init() {}
}
