/// Which requests go to which group (`routes:`), in order: the first that matches wins (``Router``).
/// The flags' short form is one route, `/` to ``UpstreamGroup/defaultName``.
public struct Route: Sendable, Equatable {
    /// `host:`; `nil` matches every host.
    public var host: HostPattern?
    /// `path-prefix:` or `path:`. Default: the prefix `/`, every path.
    public var path: PathMatch = .prefix("/")
    /// `upstream:`, the name of a group.
    public var upstream: String
    /// `strip-prefix: true`: the matched path prefix is removed before the request goes upstream
    /// (`/v1/users` with prefix `/v1/` goes as `/users`). Default false.
    public var stripPrefix = false
    /// `host-rewrite:`: the `Host` the upstream gets. Default: the client's.
    public var hostRewrite: String? = nil
    /// `retry-on-5xx: true`: a 502 or 503 from the upstream may be retried (within the group's
    /// retries and budget). Default false.
    public var retryOn5xx = false
    /// `max-body-size:`: overrides `--max-body-size` for this route; `nil` keeps it.
    public var maxBodyBytes: Int? = nil

    public init(host: HostPattern? = nil, path: PathMatch = .prefix("/"), upstream: String) {
        self.host = host
        self.path = path
        self.upstream = upstream
    }
}

/// A route's `host:`; the request's port is ignored, names compare without regard to case.
public enum HostPattern: Sendable, Equatable, CustomStringConvertible {
    /// `api.example.com`, stored lower-cased.
    case exact(String)
    /// `*.example.com`, stored as the suffix `.example.com`, lower-cased: it matches
    /// `a.example.com` and `a.b.example.com`, not `example.com`.
    case wildcard(suffix: String)

    public var description: String {
        switch self {
        case .exact(let name): name
        case .wildcard(let suffix): "*" + suffix
        }
    }
}

/// A route's path condition.
public enum PathMatch: Sendable, Equatable, CustomStringConvertible {
    /// `path-prefix:`, on segment boundaries: `/v1` and `/v1/` both match `/v1` and `/v1/users`,
    /// never `/v10`.
    case prefix(String)
    /// `path:`: exactly this path (the query is not part of it).
    case exact(String)

    public var description: String {
        switch self {
        case .prefix(let prefix): "path-prefix \(prefix)"
        case .exact(let path): "path \(path)"
        }
    }
}
