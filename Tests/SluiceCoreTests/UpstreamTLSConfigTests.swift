import SluiceCore
import Testing

/// `https://` endpoints and a group's `tls: {ca, sni, cert, key}` (DESIGN.md §5): parsing, defaults,
/// every error message, and what `check-config` prints.
@Suite struct UpstreamTLSConfigTests {
    func messages(_ file: ConfigNode) -> [String] {
        do {
            _ = try SluiceConfig.read(ConfigSources(file: file, fileName: "sluice.yaml"), defaultThreads: 2)
            return []
        } catch {
            return error.errors.map(\.message)
        }
    }

    func read(_ file: ConfigNode) throws -> SluiceConfig {
        try SluiceConfig.read(ConfigSources(file: file, fileName: "sluice.yaml"), defaultThreads: 2)
    }

    /// A file with the https group `api` holding `entries` besides its endpoint.
    static func https(_ entries: ConfigNode = [:], endpoints: ConfigNode = ["https://api.internal:8443"]) -> ConfigNode {
        guard case .mapping(let all) = entries else { preconditionFailure() }
        return ["upstreams": ["api": .mapping([.init("endpoints", endpoints)] + all)]]
    }

    // MARK: URLs

    /// https URLs parse with port 443 by default, or their own; the text round-trips.
    @Test func httpsURLsParseWithPort443ByDefault() {
        #expect(UpstreamURL(parsing: "https://api.internal") == UpstreamURL(scheme: .https, host: "api.internal", port: 443))
        #expect(UpstreamURL(parsing: "HTTPS://api.internal:8443/") == UpstreamURL(scheme: .https, host: "api.internal", port: 8443))
        #expect(UpstreamURL(parsing: "https://[::1]") == UpstreamURL(scheme: .https, host: "::1", port: 443))
        #expect(UpstreamURL(parsing: "http://api.internal")?.port == 80)
        #expect(UpstreamURL(parsing: "h2c://api.internal")?.port == 80)
        #expect(UpstreamURL(scheme: .https, host: "api.internal", port: 443).description == "https://api.internal:443")
        #expect(UpstreamURL(parsing: "https://api.internal/v1") == nil)
        #expect(UpstreamURL(parsing: "https://user@api.internal") == nil)
        #expect(UpstreamURL.accepted == "a URL such as http://127.0.0.1:3000, https://api.internal or h2c://127.0.0.1:50051 (scheme http, https or h2c, no path)")
    }

    /// The TLS name of an endpoint: its host name, the name it was resolved from, none for an IP
    /// literal; the group's `sni` wins over all.
    @Test func serverNameIsSNIElseTheConfiguredHostName() {
        let name = UpstreamURL(scheme: .https, host: "api.internal", port: 443)
        let resolved = UpstreamURL(scheme: .https, host: "10.0.0.7", port: 443, resolvedFrom: "api.internal")
        let ipv4 = UpstreamURL(scheme: .https, host: "10.0.0.7", port: 443)
        let ipv6 = UpstreamURL(scheme: .https, host: "fd00::7", port: 443)
        #expect(name.tlsServerName == "api.internal")
        #expect(resolved.tlsServerName == "api.internal")
        #expect(resolved.description == "https://10.0.0.7:443")
        #expect(ipv4.tlsServerName == nil)
        #expect(ipv6.tlsServerName == nil)
        #expect(UpstreamTLS().serverName(for: name) == "api.internal")
        #expect(UpstreamTLS(sni: "other.internal").serverName(for: ipv4) == "other.internal")
        #expect(UpstreamURL.isIPLiteral("256.1.1.1") == false)
        #expect(UpstreamURL.isIPLiteral("1.2.3") == false)
        #expect(UpstreamURL.isIPLiteral("10.0.0.7.nip.io") == false)
    }

    // MARK: tls:

    /// An https group without `tls:` uses the defaults; every key is read as given.
    @Test func tlsKeysAreReadAndDefaultsApply() throws {
        let plain = try read(Self.https()).groups[0]
        #expect(plain.scheme == .https)
        #expect(plain.tls == nil)
        #expect(plain.effectiveTLS == UpstreamTLS())
        let full = try read(
            Self.https(["tls": ["ca": "/etc/ssl/internal-ca.pem", "sni": "api.internal", "cert": "/etc/tls/client.crt", "key": "/etc/tls/client.key"]])
        ).groups[0]
        #expect(full.tls == UpstreamTLS(ca: "/etc/ssl/internal-ca.pem", sni: "api.internal", cert: "/etc/tls/client.crt", key: "/etc/tls/client.key"))
        #expect(try read(Self.https(["tls": ["sni": "API-1.internal"]])).groups[0].tls == UpstreamTLS(sni: "API-1.internal"))
        #expect(try read(["upstreams": ["api": ["endpoints": ["http://a:1"]]]]).groups[0].effectiveTLS == nil)
    }

    /// The §5 example's `tls:` block on an https group is valid.
    @Test func designExampleTLSBlockIsValidOnAnHTTPSGroup() {
        #expect(messages(Self.https(["tls": ["ca": "/etc/ssl/internal-ca.pem", "sni": "api.internal", "cert": "/etc/tls/client.crt", "key": "/etc/tls/client.key"]])) == [])
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var file: ConfigNode
        var messages: [String]
    }

    /// Each mistake has its message, with its path.
    @Test(arguments: [
        Case(
            testDescription: "tls on an http group", file: ["upstreams": ["api": ["endpoints": ["http://a:1"], "tls": ["ca": "/ca.pem"]]]],
            messages: ["upstreams.api.tls: only for https:// endpoints; this group's endpoints are http:// (write https://HOST:PORT to connect with TLS)"]),
        Case(
            testDescription: "tls on an h2c group", file: ["upstreams": ["api": ["endpoints": ["h2c://a:1"], "tls": ["sni": "a"]]]],
            messages: ["upstreams.api.tls: only for https:// endpoints; this group's endpoints are h2c:// (write https://HOST:PORT to connect with TLS)"]),
        Case(
            testDescription: "https mixed with http", file: https(endpoints: ["https://a:443", "http://b:80"]),
            messages: ["upstreams.api.endpoints: mixes schemes (https://a:443 and http://b:80); all endpoints of a group must be https:// (TLS) or none"]),
        Case(
            testDescription: "h2c mixed with https", file: https(endpoints: ["h2c://a:1", "https://b"]),
            messages: ["upstreams.api.endpoints: mixes schemes (h2c://a:1 and https://b:443); all endpoints of a group must be https:// (TLS) or none"]),
        Case(
            testDescription: "cert without key", file: https(["tls": ["cert": "/c.pem"]]),
            messages: ["upstreams.api.tls.key: missing; a client certificate (cert) needs its private key (key)"]),
        Case(
            testDescription: "key without cert", file: https(["tls": ["key": "/k.pem"]]),
            messages: ["upstreams.api.tls.cert: missing; a private key (key) needs its client certificate (cert)"]),
        Case(
            testDescription: "unknown tls key", file: https(["tls": ["ca-file": "/ca.pem"]]),
            messages: ["upstreams.api.tls.ca-file: unknown key; known keys: ca, sni, cert, key"]),
        Case(
            testDescription: "tls as a word", file: https(["tls": "on"]),
            messages: [
                "upstreams.api.tls: expected a mapping such as {ca: /etc/ssl/internal-ca.pem, sni: api.internal, cert: /etc/tls/client.crt, key: /etc/tls/client.key}, not a value"
            ]),
        Case(
            testDescription: "empty ca", file: https(["tls": ["ca": ""]]),
            messages: ["upstreams.api.tls.ca: empty; give the path of a PEM file of CA certificates"]),
        Case(
            testDescription: "sni that is an IP", file: https(["tls": ["sni": "10.0.0.7"]]),
            messages: [
                "upstreams.api.tls.sni: \"10.0.0.7\" is an IP address; SNI carries host names only (leave sni out to check the certificate against the endpoint's IP)"
            ]),
        Case(
            testDescription: "sni with a space", file: https(["tls": ["sni": "api internal"]]),
            messages: ["upstreams.api.tls.sni: \"api internal\" is not a host name (letters, digits, - and . such as api.internal)"]),
        Case(
            testDescription: "sni as a list", file: https(["tls": ["sni": ["a", "b"]]]),
            messages: ["upstreams.api.tls.sni: expected a value, not a list"]),
    ])
    func tlsMistakesHaveTheirMessages(_ example: Case) {
        #expect(messages(example.file) == example.messages)
    }

    // MARK: check-config

    /// check-config's YAML shows the group's tls settings (set ones as keys, defaults in a comment)
    /// (valid YAML); its JSON has a `tls` object (null for plaintext groups).
    @Test func checkConfigShowsTLSSettings() throws {
        let full = try read(Self.https(["tls": ["ca": "/etc/ssl/ca.pem", "sni": "api.internal", "cert": "/c.pem", "key": "/k.pem"]]))
        #expect(full.effectiveYAML.contains("\n    tls: {ca: /etc/ssl/ca.pem, sni: api.internal, cert: /c.pem, key: /k.pem}\n"))
        let defaults = try read(Self.https())
        #expect(defaults.effectiveYAML.contains("\n    tls: {}  # ca: the system CA bundle; sni: each endpoint's host name; no client certificate\n"))
        let plain = try read(["upstreams": ["api": ["endpoints": ["http://a:1"]]]])
        #expect(!plain.effectiveYAML.contains("tls:"))

        func json(_ file: ConfigNode) -> String { ConfigCheck(ConfigSources(file: file, fileName: "sluice.yaml"), defaultThreads: 2).json }
        #expect(json(Self.https(["tls": ["ca": "/etc/ssl/ca.pem", "sni": "api.internal", "cert": "/c.pem", "key": "/k.pem"]])).contains(
            #""endpoints": ["https://api.internal:8443"], "tls": {"ca": "/etc/ssl/ca.pem", "sni": "api.internal", "cert": "/c.pem", "key": "/k.pem"}"#))
        #expect(json(Self.https()).contains(#""tls": {"ca": null, "sni": null, "cert": null, "key": null}"#))
        #expect(json(["upstreams": ["api": ["endpoints": ["http://a:1"]]]]).contains(#""endpoints": ["http://a:1"], "tls": null"#))
    }
}
