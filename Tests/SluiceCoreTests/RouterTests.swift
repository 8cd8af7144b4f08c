import SluiceCore
import Testing

@Suite struct RouterTests {
    /// The routes of the DESIGN.md §5 example, and a few more to tell the cases apart.
    let router = Router(routes: [
        Route(host: .exact("api.example.com"), path: .prefix("/v1/"), upstream: "api"),  // 0
        Route(host: .wildcard(suffix: ".example.com"), upstream: "grpc"),  // 1
        Route(host: .exact("[::1]"), upstream: "loopback6"),  // 2
        Route(host: .exact("fqdn.test."), upstream: "fqdn"),  // 3
        Route(path: .exact("/healthz"), upstream: "health"),  // 4
        Route(path: .prefix("/static"), upstream: "static"),  // 5
    ])

    // MARK: - Host

    /// An exact host matches that name, in any case, with or without a port.
    @Test(arguments: [
        "api.example.com", "API.Example.COM", "api.example.com:8443", "api.example.com.", "Api.Example.Com.:443",
    ])
    func exactHostMatchesWhateverItsCaseAndPort(host: String) {
        #expect(router.match(host: host, path: "/v1/users") == 0)
    }

    /// A wildcard matches one or more labels in front of its suffix, never the bare suffix.
    @Test func wildcardMatchesSubdomainsButNotTheDomainItself() {
        #expect(router.match(host: "a.example.com", path: "/x") == 1)
        #expect(router.match(host: "a.b.example.com", path: "/x") == 1)
        #expect(router.match(host: "A.B.EXAMPLE.COM:8080", path: "/x") == 1)
        #expect(router.match(host: "a.example.com.", path: "/x") == 1)
        #expect(router.match(host: "example.com", path: "/x") == nil)
        #expect(router.match(host: "example.com", path: "/static/a.css") == 5)
        #expect(router.match(host: "aexample.com", path: "/x") == nil)
        #expect(router.match(host: ".example.com", path: "/x") == nil)
        #expect(router.match(host: "a.example.com.evil.net", path: "/x") == nil)
    }

    /// The exact host's route does not take its other paths: they fall through to the wildcard.
    @Test func exactHostWithAnotherPathFallsThroughToTheWildcard() {
        #expect(router.match(host: "api.example.com", path: "/v2/users") == 1)
    }

    /// An IPv6 literal matches with its brackets, with or without a port, and without them in the route.
    @Test func ipv6LiteralHostIgnoresItsPortAndBrackets() {
        #expect(router.match(host: "[::1]", path: "/x") == 2)
        #expect(router.match(host: "[::1]:8080", path: "/x") == 2)
        #expect(router.match(host: "[::2]:8080", path: "/x") == nil)
        let bare = Router(routes: [Route(host: .exact("::1"), upstream: "a")])
        #expect(bare.match(host: "[::1]:8080", path: "/") == 0)
        #expect(bare.match(host: "[::1", path: "/") == nil)
    }

    /// A trailing dot is ignored in the route as in the request.
    @Test func trailingDotIsIgnoredOnBothSides() {
        #expect(router.match(host: "fqdn.test", path: "/x") == 3)
        #expect(router.match(host: "fqdn.test.", path: "/x") == 3)
        #expect(router.match(host: "FQDN.test.:80", path: "/x") == 3)
    }

    /// A route without a host matches any host, and a request without one; a request without a
    /// host matches no route that names one.
    @Test func routeWithoutHostMatchesAnyHostAndNone() {
        #expect(router.match(host: nil, path: "/healthz") == 4)
        #expect(router.match(host: "", path: "/healthz") == 4)
        #expect(router.match(host: "anything.else:1", path: "/healthz") == 4)
        #expect(router.match(host: nil, path: "/v1/users") == nil)
    }

    /// Non-ASCII bytes compare as they are; only ASCII letters fold.
    @Test func onlyASCIILettersFoldCase() {
        let router = Router(routes: [Route(host: .exact("xn--bcher-kva.example"), upstream: "a")])
        #expect(router.match(host: "XN--BCHER-KVA.EXAMPLE", path: "/") == 0)
        #expect(router.match(host: "bücher.example", path: "/") == nil)
    }

    // MARK: - Path

    /// `/v1/` and `/v1` as prefixes both match on segment boundaries: `/v1`, `/v1/`, `/v1/x`, not `/v10`.
    @Test(arguments: ["/v1", "/v1/"])
    func prefixMatchesOnSegmentBoundaries(prefix: String) {
        let router = Router(routes: [Route(path: .prefix(prefix), upstream: "v1")])
        #expect(router.match(host: nil, path: "/v1") == 0)
        #expect(router.match(host: nil, path: "/v1/") == 0)
        #expect(router.match(host: nil, path: "/v1/users/7") == 0)
        #expect(router.match(host: nil, path: "/v1?x=1") == 0)
        #expect(router.match(host: nil, path: "/v1/?x=1") == 0)
        #expect(router.match(host: nil, path: "/v10") == nil)
        #expect(router.match(host: nil, path: "/v10/users") == nil)
        #expect(router.match(host: nil, path: "/v") == nil)
        #expect(router.match(host: nil, path: "/") == nil)
        #expect(router.match(host: nil, path: "/V1") == nil)
    }

    /// The query is not part of the path: a `/` inside it does not make a segment.
    @Test func queryIsNotPartOfThePath() {
        let router = Router(routes: [Route(path: .prefix("/v1"), upstream: "v1"), Route(path: .exact("/a"), upstream: "a")])
        #expect(router.match(host: nil, path: "/v10?next=/v1/x") == nil)
        #expect(router.match(host: nil, path: "/a?b") == 1)
        #expect(router.match(host: nil, path: "/a?") == 1)
    }

    /// The prefix `/` matches every origin-form path, but not the asterisk form or nothing.
    @Test func rootPrefixMatchesEveryOriginFormPath() {
        let router = Router(routes: [Route(upstream: "all")])
        for path in ["/", "/x", "/x/y?z", "/?q", "//double"] {
            #expect(router.match(host: "h", path: path) == 0, "\(path)")
        }
        #expect(router.match(host: "h", path: "*") == nil)
        #expect(router.match(host: "h", path: "") == nil)
    }

    /// `path:` matches that path only, with any query, without a trailing slash.
    @Test func exactPathMatchesOnlyThatPath() {
        #expect(router.match(host: nil, path: "/healthz") == 4)
        #expect(router.match(host: nil, path: "/healthz?verbose") == 4)
        #expect(router.match(host: nil, path: "/healthz/") == nil)
        #expect(router.match(host: nil, path: "/healthz/x") == nil)
        #expect(router.match(host: nil, path: "/health") == nil)
    }

    /// Percent-encoding and dot segments are matched as sent, never decoded.
    @Test func percentEncodingAndDotSegmentsAreNotInterpreted() {
        let router = Router(routes: [Route(path: .prefix("/v1"), upstream: "v1")])
        #expect(router.match(host: nil, path: "/v%31/users") == nil)
        #expect(router.match(host: nil, path: "/v1%2Fusers") == nil)
        #expect(router.match(host: nil, path: "/v1/../admin") == 0)
    }

    // MARK: - Order and no match

    /// The first matching route wins, even when a later one is more specific.
    @Test func firstMatchWins() {
        let router = Router(routes: [
            Route(path: .prefix("/api"), upstream: "broad"),
            Route(host: .exact("a.test"), path: .prefix("/api/v2"), upstream: "narrow"),
            Route(upstream: "rest"),
        ])
        #expect(router.match(host: "a.test", path: "/api/v2/x") == 0)
        #expect(router.match(host: "a.test", path: "/other") == 2)
    }

    /// No route is no match, and the 404 body says what was asked for in one line.
    @Test func noMatchGivesNilAndAOneLineBody() {
        #expect(Router(routes: []).match(host: "a", path: "/") == nil)
        #expect(router.match(host: "other.test", path: "/v2/x?y") == nil)
        #expect(Router.notFoundBody(host: "other.test", path: "/v2/x?y") == "no route for host other.test path /v2/x?y\n")
        #expect(Router.notFoundBody(host: nil, path: "/") == "no route for host - path /\n")
        let long = String(repeating: "a", count: 5000)
        #expect(Router.notFoundBody(host: long, path: "/" + long).utf8.count < 450)
    }

    /// The byte entry point agrees with the string one.
    @Test func matchingRawBytesAgreesWithStrings() {
        let host = Array("API.example.com:443".utf8)
        let path = Array("/v1/x?y".utf8)
        let index = host.withUnsafeBytes { host in path.withUnsafeBytes { path in router.match(host: host, path: path) } }
        #expect(index == 0)
        let noHost = path.withUnsafeBytes { router.match(host: nil, path: $0) }
        #expect(noHost == nil)
    }

    // MARK: - strip-prefix

    /// Stripping a prefix keeps the target origin-form and its query.
    @Test(arguments: [
        ("/v1/", "/v1/users?x=1", "/users?x=1"),
        ("/v1", "/v1/users?x=1", "/users?x=1"),
        ("/v1/", "/v1", "/"),
        ("/v1", "/v1/", "/"),
        ("/v1", "/v1?x", "/?x"),
        ("/v1/", "/v1/?x", "/?x"),
        ("/a/b", "/a/b/c/d", "/c/d"),
        ("/", "/users?x", "/users?x"),
        ("/v1", "/v10", "/v10"),
        ("/v1", "/other", "/other"),
    ])
    func stripPrefixGivesTheUpstreamTarget(prefix: String, target: String, upstream: String) {
        #expect(Router.stripPrefix(prefix, from: target) == upstream)
    }

    /// The upstream target follows the matched route's `strip-prefix` setting.
    @Test func upstreamTargetFollowsTheRoutesStripPrefix() {
        var stripping = Route(path: .prefix("/v1/"), upstream: "api")
        stripping.stripPrefix = true
        var exact = Route(path: .exact("/v2"), upstream: "api")
        exact.stripPrefix = true
        let router = Router(routes: [stripping, Route(path: .prefix("/keep"), upstream: "api"), exact])
        #expect(router.upstreamTarget(route: 0, target: "/v1/users?x=1") == "/users?x=1")
        #expect(router.upstreamTarget(route: 1, target: "/keep/x") == "/keep/x")
        #expect(router.upstreamTarget(route: 2, target: "/v2") == "/v2")
    }
}
