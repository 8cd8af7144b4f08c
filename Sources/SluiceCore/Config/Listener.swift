/// A listener: an address, and TLS settings for a TLS listener (DESIGN.md §5, `listen:`).
///
/// The listener decides the scheme of every request that arrives on it: `X-Forwarded-Proto` and an
/// HTTP/2 upstream's `:scheme` come from here, never from a literal.
///
/// ```yaml
/// listen:
///   - 0.0.0.0:8080                          # plaintext: HTTP/1.1, or h2c with prior knowledge
///   - address: 0.0.0.0:8443                 # TLS: ALPN chooses HTTP/2 or HTTP/1.1
///     tls:
///       certificates:
///         - {cert: /etc/tls/site/tls.crt, key: /etc/tls/site/tls.key}
///       min-version: "1.2"
///       alpn: [h2, http/1.1]
/// ```
public struct Listener: Sendable, Hashable, CustomStringConvertible {
    public var address: HostPort
    /// `nil`: a plaintext listener.
    public var tls: TLSSettings?

    public init(_ address: HostPort, tls: TLSSettings? = nil) {
        self.address = address
        self.tls = tls
    }

    /// The scheme of requests received here.
    public var scheme: URIScheme { self.tls == nil ? .http : .https }

    /// `0.0.0.0:8443 (tls)`, or the address alone for a plaintext listener.
    public var description: String { self.tls == nil ? self.address.description : "\(self.address) (tls)" }
}

/// The scheme a request arrived with: what `X-Forwarded-Proto` and `:scheme` say.
public enum URIScheme: String, Sendable, Hashable {
    case http
    case https
}

/// A TLS listener's settings (`listen[].tls`, or `--listen-tls` with `--tls-cert` and `--tls-key`).
public struct TLSSettings: Sendable, Hashable {
    /// One certificate chain (PEM, leaf first) and its private key (PEM), as file paths.
    public struct CertificateFiles: Sendable, Hashable {
        public var cert: String
        public var key: String

        public init(cert: String, key: String) {
            self.cert = cert
            self.key = key
        }
    }

    /// The lowest TLS version accepted (`min-version`). Versions below 1.2 are never accepted.
    public enum Version: String, Sendable, Hashable, CaseIterable {
        case v1_2 = "1.2"
        case v1_3 = "1.3"
    }

    /// The protocols ALPN may select (`alpn`), in the server's order of preference.
    public static let alpnProtocols = ["h2", "http/1.1"]

    /// At least one. SNI picks a certificate by its names (wildcards included); a client that sends no
    /// name, or a name no certificate has, gets the first.
    public var certificates: [CertificateFiles]
    /// Default 1.2.
    public var minVersion: Version = .v1_2
    /// Default `[h2, http/1.1]`. A client that offers none of these (or no ALPN) speaks HTTP/1.1.
    public var alpn: [String] = TLSSettings.alpnProtocols

    public init(certificates: [CertificateFiles], minVersion: Version = .v1_2, alpn: [String] = TLSSettings.alpnProtocols) {
        self.certificates = certificates
        self.minVersion = minVersion
        self.alpn = alpn
    }
}

extension TLSSettings {
    /// The keys of `tls:` under a listener, in the order messages list them.
    public static let keys = ["certificates", "min-version", "alpn"]
}

extension TreeReader {
    /// `listen[i].tls`: `{certificates: [{cert, key}, ...], min-version, alpn}`.
    mutating func tlsSettings(_ node: ConfigNode, at path: ConfigPath) -> TLSSettings? {
        let example = "{certificates: [{cert: /etc/tls/tls.crt, key: /etc/tls/tls.key}], min-version: \"1.2\", alpn: [h2, http/1.1]}"
        guard let entries = self.mapping(node, at: path, known: TLSSettings.keys, example: example) else { return nil }
        let errorsBefore = self.errors.count
        var settings = TLSSettings(certificates: [])
        if let node = entries["certificates"] {
            settings.certificates = self.certificateFiles(node, at: path.key("certificates"))
        } else {
            self.error(path.key("certificates"), "missing; e.g. certificates: [{cert: /etc/tls/tls.crt, key: /etc/tls/tls.key}]")
        }
        if let node = entries["min-version"], let text = self.scalar(node, at: path.key("min-version")) {
            if let version = TLSSettings.Version(rawValue: text) {
                settings.minVersion = version
            } else {
                self.error(path.key("min-version"), "\"\(text)\" is not a TLS version Sluice accepts; use \"1.2\" or \"1.3\"")
            }
        }
        if let node = entries["alpn"], let items = self.scalars(node, at: path.key("alpn")) {
            var protocols: [String] = []
            for (text, at) in items {
                let name = text.lowercased()
                if !TLSSettings.alpnProtocols.contains(name) {
                    self.error(at, "\"\(text)\" is not a protocol Sluice serves; use h2 and/or http/1.1")
                } else if protocols.contains(name) {
                    self.error(at, "\"\(text)\" is listed twice")
                } else {
                    protocols.append(name)
                }
            }
            if items.isEmpty { self.error(path.key("alpn"), "empty; list h2 and/or http/1.1") }
            settings.alpn = protocols
        }
        return self.errors.count == errorsBefore ? settings : nil
    }

    /// `certificates:`: a non-empty list of `{cert: FILE, key: FILE}`.
    private mutating func certificateFiles(_ node: ConfigNode, at path: ConfigPath) -> [TLSSettings.CertificateFiles] {
        guard case .list(let items) = node else {
            self.error(path, "expected a list of {cert: FILE, key: FILE}, not \(node.kind)")
            return []
        }
        if items.isEmpty { self.error(path, "empty; a TLS listener needs at least one {cert: FILE, key: FILE}") }
        var files: [TLSSettings.CertificateFiles] = []
        for (index, item) in items.enumerated() {
            let at = path.index(index)
            guard let entries = self.mapping(item, at: at, known: ["cert", "key"], example: "{cert: /etc/tls/tls.crt, key: /etc/tls/tls.key}") else {
                continue
            }
            var cert: String?
            var key: String?
            for name in ["cert", "key"] {
                guard let value = entries[name] else {
                    self.error(at.key(name), "missing; e.g. \(name): /etc/tls/tls.\(name == "cert" ? "crt" : "key")")
                    continue
                }
                guard let text = self.scalar(value, at: at.key(name)) else { continue }
                if text.isEmpty {
                    self.error(at.key(name), "empty; give the path of a PEM file")
                } else if name == "cert" {
                    cert = text
                } else {
                    key = text
                }
            }
            if let cert, let key { files.append(.init(cert: cert, key: key)) }
        }
        return files
    }
}
