import SluiceCore
import Testing

@Suite struct HostPortTests {
    struct Parsed: Sendable, CustomTestStringConvertible {
        var text: String
        var host: String
        var port: Int
        var testDescription: String { "\"\(self.text)\"" }
    }

    /// IPv4, names, bracketed IPv6 and the port range ends parse to host and port.
    @Test(arguments: [
        Parsed(text: "0.0.0.0:8080", host: "0.0.0.0", port: 8080),
        Parsed(text: "[::1]:8080", host: "::1", port: 8080),
        Parsed(text: "[fe80::1%eth0]:443", host: "fe80::1%eth0", port: 443),
        Parsed(text: "localhost:0", host: "localhost", port: 0),
        Parsed(text: "example.com:65535", host: "example.com", port: 65535),
        Parsed(text: " 127.0.0.1:80 ", host: "127.0.0.1", port: 80),
    ])
    func hostPortParsesToHostAndPort(_ example: Parsed) {
        #expect(HostPort(parsing: example.text) == HostPort(host: example.host, port: example.port))
    }

    /// Unbracketed IPv6, a missing host or port, ports out of range and stray characters are rejected.
    @Test(arguments: [
        "", "::1:8080", "::1", "0.0.0.0", ":8080", "host:", "host:65536", "host:-1", "host:80a", "host:http",
        "[::1]", "[::1]8080", "[]:80", "[::1:80", "a b:80", "a/b:80", "[::1]:80:90",
    ])
    func malformedHostPortIsRejected(_ text: String) {
        #expect(HostPort(parsing: text) == nil)
    }

    /// IPv6 hosts are printed in brackets, others as HOST:PORT, so the text parses back.
    @Test func descriptionBracketsIPv6AndParsesBack() {
        #expect(HostPort(host: "::1", port: 8080).description == "[::1]:8080")
        #expect(HostPort(host: "0.0.0.0", port: 8080).description == "0.0.0.0:8080")
        for value in [HostPort(host: "::1", port: 1), HostPort(host: "example.com", port: 0)] {
            #expect(HostPort(parsing: value.description) == value)
        }
    }
}

@Suite struct UpstreamURLTests {
    struct Parsed: Sendable, CustomTestStringConvertible {
        var text: String
        var host: String
        var port: Int
        var testDescription: String { "\"\(self.text)\"" }
    }

    /// http URLs with and without a port (80 by default), with a trailing slash, and with bracketed IPv6 parse.
    @Test(arguments: [
        Parsed(text: "http://127.0.0.1:3000", host: "127.0.0.1", port: 3000),
        Parsed(text: "http://example.com", host: "example.com", port: 80),
        Parsed(text: "http://example.com/", host: "example.com", port: 80),
        Parsed(text: "http://example.com:8080/", host: "example.com", port: 8080),
        Parsed(text: "HTTP://Example.com:81", host: "Example.com", port: 81),
        Parsed(text: "http://[::1]:3000", host: "::1", port: 3000),
        Parsed(text: "http://[::1]", host: "::1", port: 80),
        Parsed(text: "http://[::1]/", host: "::1", port: 80),
        Parsed(text: " http://app:65535 ", host: "app", port: 65535),
    ])
    func upstreamURLParsesToHostAndPort(_ example: Parsed) {
        #expect(UpstreamURL(parsing: example.text) == UpstreamURL(scheme: .http, host: example.host, port: example.port))
    }

    /// Other schemes, missing scheme or host, a path, query, fragment or user info, unbracketed IPv6 and port 0 are rejected.
    @Test(arguments: [
        "h2://example.com:80", "https://example.com/path", "h2c://example.com/grpc", "ftp://example.com", "127.0.0.1:3000", "example.com", "http:/example.com",
        "http//example.com", "http://", "http:///", "http://example.com/path", "http://example.com:3000/api/",
        "http://example.com//", "http://example.com?x=1", "http://example.com/?x=1", "http://example.com#top",
        "http://user@example.com", "http://user:pw@example.com:3000", "http://::1", "http://::1:3000",
        "http://example.com:0", "http://[::1]:0", "http://example.com:65536", "http://example.com:abc", "http://exa mple.com",
    ])
    func malformedUpstreamURLIsRejected(_ text: String) {
        #expect(UpstreamURL(parsing: text) == nil)
    }

    /// h2c URLs parse with their scheme; the default port is 80 as for http.
    @Test func h2cURLKeepsItsScheme() {
        #expect(UpstreamURL(parsing: "h2c://127.0.0.1:50051") == UpstreamURL(scheme: .h2c, host: "127.0.0.1", port: 50051))
        #expect(UpstreamURL(parsing: "H2C://[::1]") == UpstreamURL(scheme: .h2c, host: "::1", port: 80))
        #expect(UpstreamURL(parsing: "h2c://grpc:9000")?.description == "h2c://grpc:9000")
    }

    /// An unbalanced or trailing-garbage bracket host is rejected.
    ///
    /// Regression (found by these tests, since fixed): the port-less fallback in `UpstreamURL.init(parsing:)` only checks that the host contains
    /// a colon exactly when the authority starts with `[`, so `http://[::1` becomes host `[::1` and
    /// `http://[::1]x` becomes host `[::1]x`, port 80.
    @Test(arguments: ["http://[::1", "http://[::1]x", "http://[::1]]"])
    func unbalancedBracketHostIsRejected(_ text: String) {
        #expect(UpstreamURL(parsing: text) == nil)
    }

    /// authority is what goes into Host and Via; description is the URL as accepted back.
    @Test func authorityAndDescriptionUseTheHostPortForm() {
        let v6 = UpstreamURL(host: "::1", port: 3000)
        #expect(v6.authority == "[::1]:3000")
        #expect(v6.description == "http://[::1]:3000")
        let named = UpstreamURL(parsing: "http://example.com")
        #expect(named?.authority == "example.com:80")
        #expect(named?.description == "http://example.com:80")
        #expect(UpstreamURL(parsing: v6.description) == v6)
    }
}
