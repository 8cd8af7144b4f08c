/// Decides which route a request takes: the one home of that decision (DESIGN.md §3).
///
/// Built once per configuration generation from the `routes:` list, immutable, and shared by every
/// event loop; ``match(host:path:)`` runs on every request and allocates nothing.
///
/// 1. Routes are tried in order; the first whose host and path both match wins. No match is a 404
///    whose one-line body is ``notFoundBody(host:path:)``.
/// 2. **Host.** A route without `host:` matches every request, including one without a `Host`.
///    `api.example.com` matches that name exactly; `*.example.com` matches any name that ends in
///    `.example.com` with at least one more character in front (`a.example.com`,
///    `a.b.example.com`, never `example.com`). Names compare without regard to ASCII case. The
///    request's port is ignored (`api.example.com:8443`, `[::1]:8080`), IPv6 literals compare
///    without their brackets (a route may say `"[::1]"` or `"::1"`), and one trailing dot
///    (`example.com.`, the fully qualified form) is ignored on both sides.
/// 3. **Path.** Only the path of the request target counts: it ends at the first `?`.
///    `path-prefix` matches on segment boundaries: `/v1` and `/v1/` both match `/v1`, `/v1/` and
///    `/v1/users`, never `/v10`; `/` matches every origin-form path. `path` matches exactly that
///    path. Paths compare case-sensitively (RFC 3986 §6.2.2.1).
/// 4. **Percent-encoding and dot segments are not interpreted**: the target is matched as the
///    client sent it, and forwarded as sent. `/v%31/users` does not match the prefix `/v1`, and
///    `/v1/../admin` does match it. This is what the upstream receives too, so the route and the
///    upstream see the same bytes; but a route must not be the only guard of a path that an
///    upstream would reach through another spelling (use the upstream's own authorisation).
/// 5. **Target forms.** The caller passes the origin-form target (`/path?query`). An
///    absolute-form target (`GET http://host/path`, RFC 9112 §3.2.2) is the caller's to split: its
///    authority is the host and its path the target. The asterisk form (`OPTIONS *`) starts with no
///    `/`, so it matches no route (every route has a path condition): it is answered 404 unless the
///    caller maps it to `/` first.
///
/// Matching is a linear scan over the routes, each a byte comparison against names and paths
/// lower-cased and normalised once, here, into one byte array: at the tens of routes an edge proxy
/// has, this is faster than any index would be.
///
/// ```swift
/// let router = Router(routes: config.routes)
/// guard let index = router.match(host: head.host, path: head.target) else {
///     respond(404, body: Router.notFoundBody(host: head.host, path: head.target))
///     return
/// }
/// let route = router.routes[index]
/// let target = router.upstreamTarget(route: index, target: head.target)
/// ```
public struct Router: Sendable {
    /// The routes as configured, in order; ``match(host:path:)`` returns an index into this.
    public let routes: [Route]

    /// Every route's host and path, normalised, one after another: one buffer, so that a match
    /// borrows it once and compares bytes.
    private let bytes: [UInt8]
    private let compiled: [CompiledRoute]
    /// The first route takes every origin-form request (no host, the prefix `/`): the sidecar's
    /// one route, answered without looking at the request's bytes.
    private let firstTakesAll: Bool

    /// A route's conditions as ranges of ``bytes``.
    private struct CompiledRoute: Sendable {
        var host: HostKind
        /// The host name (exact) or suffix (wildcard, with its leading dot), lower-cased, without
        /// brackets or a trailing dot.
        var hostStart: Int
        var hostCount: Int
        var pathIsExact: Bool
        /// The exact path; or the prefix without its trailing `/` (so `/` is empty).
        var pathStart: Int
        var pathCount: Int
    }

    private enum HostKind: Sendable {
        /// No `host:`: every request, with or without a `Host`.
        case any
        /// `host: api.example.com`.
        case exact
        /// `host: "*.example.com"`.
        case wildcard
    }

    public init(routes: [Route]) {
        self.routes = routes
        var bytes: [UInt8] = []
        var compiled: [CompiledRoute] = []
        compiled.reserveCapacity(routes.count)
        for route in routes {
            let hostKind: HostKind
            var host: [UInt8]
            switch route.host {
            case .none:
                hostKind = .any
                host = []
            case .exact(let name):
                hostKind = .exact
                host = Array(name.utf8)
                if host.first == UInt8(ascii: "["), host.last == UInt8(ascii: "]") {
                    host = Array(host.dropFirst().dropLast())
                }
            case .wildcard(let suffix):
                hostKind = .wildcard
                host = Array(suffix.utf8)
                if host.first != UInt8(ascii: ".") { host.insert(UInt8(ascii: "."), at: 0) }
            }
            if host.count > 1, host.last == UInt8(ascii: ".") { host.removeLast() }
            let hostStart = bytes.count
            bytes.append(contentsOf: host.map(Router.lowercased))

            let pathIsExact: Bool
            var path: [UInt8]
            switch route.path {
            case .exact(let exact):
                pathIsExact = true
                path = Array(exact.utf8)
            case .prefix(let prefix):
                pathIsExact = false
                path = Array(prefix.utf8)
                while path.last == UInt8(ascii: "/") { path.removeLast() }
            }
            let pathStart = bytes.count
            bytes.append(contentsOf: path)
            compiled.append(
                CompiledRoute(
                    host: hostKind, hostStart: hostStart, hostCount: host.count,
                    pathIsExact: pathIsExact, pathStart: pathStart, pathCount: path.count))
        }
        self.bytes = bytes
        self.compiled = compiled
        self.firstTakesAll = compiled.first.map { $0.host == .any && !$0.pathIsExact && $0.pathCount == 0 } ?? false
    }

    // MARK: - Matching

    /// The index in ``routes`` of the first route that matches, or `nil` (answer 404).
    ///
    /// - Parameters:
    ///   - host: the `Host` field (HTTP/1.1) or `:authority` (HTTP/2) as received, port and all;
    ///     `nil` or empty when the request has none.
    ///   - path: the origin-form request target as received, query and all.
    public func match(host: String?, path: String) -> Int? {
        if self.firstTakesAll, path.utf8.first == UInt8(ascii: "/") { return 0 }
        return Router.withBytes(host ?? "") { hostBytes in
            Router.withBytes(path) { pathBytes in
                self.match(hostBytes: hostBytes, targetBytes: pathBytes)
            }
        }
    }

    /// ``match(host:path:)`` on raw bytes, for a caller that holds the head in a buffer.
    public func match(host: UnsafeRawBufferPointer?, path: UnsafeRawBufferPointer) -> Int? {
        let host = host.map { $0.assumingMemoryBound(to: UInt8.self) } ?? UnsafeBufferPointer(start: nil, count: 0)
        return self.match(hostBytes: host, targetBytes: path.assumingMemoryBound(to: UInt8.self))
    }

    private func match(hostBytes: UnsafeBufferPointer<UInt8>, targetBytes: UnsafeBufferPointer<UInt8>) -> Int? {
        let host = Router.hostName(hostBytes)
        let path = Router.pathRange(targetBytes)
        return self.bytes.withUnsafeBufferPointer { table in
            for (index, route) in self.compiled.enumerated() {
                if Router.hostMatches(route, table: table, host: host, request: hostBytes),
                    Router.pathMatches(route, table: table, target: targetBytes, pathCount: path)
                {
                    return index
                }
            }
            return nil
        }
    }

    private static func hostMatches(
        _ route: CompiledRoute, table: UnsafeBufferPointer<UInt8>, host: Range<Int>, request: UnsafeBufferPointer<UInt8>
    ) -> Bool {
        switch route.host {
        case .any:
            return true
        case .exact:
            guard host.count == route.hostCount else { return false }
            return Router.equalIgnoringCase(request, from: host.lowerBound, table, from: route.hostStart, count: route.hostCount)
        case .wildcard:
            // At least one character in front of the suffix's dot: `*.example.com` is not `example.com`.
            guard host.count > route.hostCount else { return false }
            return Router.equalIgnoringCase(
                request, from: host.upperBound - route.hostCount, table, from: route.hostStart, count: route.hostCount)
        }
    }

    private static func pathMatches(
        _ route: CompiledRoute, table: UnsafeBufferPointer<UInt8>, target: UnsafeBufferPointer<UInt8>, pathCount: Int
    ) -> Bool {
        if route.pathIsExact {
            guard pathCount == route.pathCount else { return false }
        } else {
            // The prefix is stored without its trailing `/`: the path must continue with `/` or end.
            guard pathCount >= route.pathCount else { return false }
            if pathCount > route.pathCount, target[route.pathCount] != UInt8(ascii: "/") { return false }
            // The empty prefix (`/`) still needs an origin-form path: not `*`, not empty.
            if route.pathCount == 0, pathCount == 0 { return false }
        }
        for offset in 0..<route.pathCount where target[offset] != table[route.pathStart + offset] {
            return false
        }
        return true
    }

    // MARK: - Normalising the request's host and path

    /// The name part of a `Host` value: without the port, the brackets of an IPv6 literal and one
    /// trailing dot. An unterminated `[` leaves the value whole (it then matches no name).
    private static func hostName(_ host: UnsafeBufferPointer<UInt8>) -> Range<Int> {
        var start = 0
        var end = host.count
        if end > 0, host[0] == UInt8(ascii: "[") {
            if let close = host.firstIndex(of: UInt8(ascii: "]")) {
                start = 1
                end = close
            }
        } else if let colon = host.firstIndex(of: UInt8(ascii: ":")) {
            end = colon
        }
        if end - start > 1, host[end - 1] == UInt8(ascii: ".") { end -= 1 }
        return start..<end
    }

    /// The length of the target's path: up to the first `?`.
    private static func pathRange(_ target: UnsafeBufferPointer<UInt8>) -> Int {
        target.firstIndex(of: UInt8(ascii: "?")) ?? target.count
    }

    private static func equalIgnoringCase(
        _ request: UnsafeBufferPointer<UInt8>, from requestStart: Int, _ table: UnsafeBufferPointer<UInt8>, from tableStart: Int,
        count: Int
    ) -> Bool {
        for offset in 0..<count where Router.lowercased(request[requestStart + offset]) != table[tableStart + offset] {
            return false
        }
        return true
    }

    /// ASCII lower case; other bytes (UTF-8 included) as they are.
    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
    }

    /// A native string's UTF-8 without a copy; a bridged or otherwise non-contiguous one (which
    /// the parsers never produce) is copied once.
    private static func withBytes<Result>(_ string: String, _ body: (UnsafeBufferPointer<UInt8>) -> Result) -> Result {
        if let result = string.utf8.withContiguousStorageIfAvailable(body) { return result }
        var copy = string
        return copy.withUTF8(body)
    }

    // MARK: - Upstream target and the 404 answer

    /// The target the upstream gets for a request that matched route `route`: with `strip-prefix`,
    /// ``stripPrefix(_:from:)`` of the route's prefix; otherwise `target` unchanged.
    public func upstreamTarget(route: Int, target: String) -> String {
        let route = self.routes[route]
        guard route.stripPrefix, case .prefix(let prefix) = route.path else { return target }
        return Router.stripPrefix(prefix, from: target)
    }

    /// `target` without the path prefix `prefix` that it matched on a segment boundary, always
    /// still origin-form: `/v1/users?x=1` with `/v1/` (or `/v1`) is `/users?x=1`; `/v1` is `/`;
    /// `/v1?x` is `/?x`. The prefix `/` leaves the target as it is. A target that does not start
    /// with the prefix (a caller's mistake) is returned unchanged.
    public static func stripPrefix(_ prefix: String, from target: String) -> String {
        var prefixBytes = prefix.utf8[...]
        while prefixBytes.last == UInt8(ascii: "/") { prefixBytes = prefixBytes.dropLast() }
        guard !prefixBytes.isEmpty, target.utf8.starts(with: prefixBytes) else { return target }
        let rest = target.utf8.dropFirst(prefixBytes.count)
        switch rest.first {
        case UInt8(ascii: "/"):
            return String(Substring(rest))
        case nil, UInt8(ascii: "?"):
            return "/" + Substring(rest)
        default:
            // Not a segment boundary (`/v10` for `/v1`): not a prefix match; leave it.
            return target
        }
    }

    /// The one-line body of the 404 for a request that matched no route:
    /// `no route for host api.example.com path /v2/users`. The host is `-` when the request had
    /// none; each value is cut at 200 characters so the answer stays one short line.
    public static func notFoundBody(host: String?, path: String) -> String {
        let host = host.flatMap { $0.isEmpty ? nil : $0 } ?? "-"
        return "no route for host \(host.prefix(200)) path \(path.prefix(200))\n"
    }
}
