/// A `HOST:PORT` pair as given to `--listen` and `--admin`.
///
/// IPv6 hosts are written in brackets: `[::1]:8080`. The host is kept as text; resolving it is the
/// listener's business.
public struct HostPort: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public static let accepted = "HOST:PORT, e.g. 0.0.0.0:8080 or [::1]:8080, port 0-65535"

    public init?(parsing text: String) {
        let text = text.trimmingWhitespace()
        let hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portPart = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            if hostPart.contains(":") { return nil }  // unbracketed IPv6
        }
        guard !hostPart.isEmpty, !hostPart.contains(where: { $0.isWhitespace || $0 == "/" }),
            portPart.allSatisfy({ ("0"..."9").contains($0) }), let port = Int(portPart), (0...65535).contains(port)
        else { return nil }
        self.host = String(hostPart)
        self.port = port
    }

    public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }
}

/// An upstream as given to `--upstream`: `http://HOST:PORT`, `http://HOST` (port 80),
/// `https://HOST[:PORT]` (TLS, port 443 by default), or `h2c://HOST:PORT` for an upstream that
/// speaks HTTP/2 without TLS (gRPC servers).
///
/// A path, query or user info in the URL is rejected rather than silently ignored.
public struct UpstreamURL: Hashable, Sendable, CustomStringConvertible {
    public enum Scheme: String, Sendable {
        /// HTTP/1.1, a pooled connection per request in flight.
        case http
        /// HTTP/2 with prior knowledge (no TLS, no upgrade), streams multiplexed on few connections.
        case h2c
        /// TLS (the group's ``UpstreamTLS``); HTTP/2 when the upstream picks `h2` by ALPN, else HTTP/1.1.
        case https

        /// The port a URL of this scheme without one gets: 443 for https, else 80.
        public var defaultPort: Int { self == .https ? 443 : 80 }
    }

    public var scheme: Scheme
    public var host: String
    public var port: Int
    /// The name this endpoint's address was resolved from (DNS re-resolution turns `api.internal`
    /// into one endpoint per address); `nil` for an endpoint as configured. Not part of the text.
    public var resolvedFrom: String?

    public init(scheme: Scheme = .http, host: String, port: Int, resolvedFrom: String? = nil) {
        self.scheme = scheme
        self.host = host
        self.port = port
        self.resolvedFrom = resolvedFrom
    }

    public static let accepted =
        "a URL such as http://127.0.0.1:3000, https://api.internal or h2c://127.0.0.1:50051 (scheme http, https or h2c, no path)"

    public init?(parsing text: String) {
        let text = text.trimmingWhitespace()
        guard let colon = text.firstIndex(of: ":"), text[colon...].hasPrefix("://") else { return nil }
        guard let scheme = Scheme(rawValue: text[..<colon].lowercased()) else { return nil }
        var authority = text[text.index(colon, offsetBy: 3)...]
        if authority.hasSuffix("/") { authority = authority.dropLast() }
        guard !authority.contains("/"), !authority.contains("@"), !authority.contains("?"), !authority.contains("#") else {
            return nil
        }
        if let hostPort = HostPort(parsing: String(authority)) {
            guard hostPort.port > 0 else { return nil }
            self.init(scheme: scheme, host: hostPort.host, port: hostPort.port)
        } else {
            var host = String(authority)
            let bracketed = host.hasPrefix("[")
            if bracketed {
                guard host.hasSuffix("]") else { return nil }
                host = String(host.dropFirst().dropLast())
            }
            guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "[" || $0 == "]" }), host.contains(":") == bracketed else {
                return nil
            }
            self.init(scheme: scheme, host: host, port: scheme.defaultPort)
        }
    }

    /// Whether ``host`` is an IPv4 or IPv6 literal rather than a name.
    public var hostIsIPLiteral: Bool { Self.isIPLiteral(self.host) }

    /// The name TLS sends (SNI) and checks the certificate against when the group sets no `sni`: the
    /// configured name (also after it was resolved to addresses); `nil` for an IP literal, whose
    /// certificate must then name the address.
    public var tlsServerName: String? {
        if let name = self.resolvedFrom { return name }
        return self.hostIsIPLiteral ? nil : self.host
    }

    /// `10.0.0.7` (four decimal parts 0-255) or an IPv6 literal (any text with a colon: a host name
    /// has none).
    public static func isIPLiteral(_ host: String) -> Bool {
        if host.contains(":") { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4
            && parts.allSatisfy { part in
                !part.isEmpty && part.count <= 3 && part.allSatisfy { ("0"..."9").contains($0) } && Int(part).map { $0 <= 255 } == true
            }
    }

    /// The authority as written in a `Host` header or a `Via` hop: `127.0.0.1:3000`.
    public var authority: String { HostPort(host: self.host, port: self.port).description }

    public var description: String { "\(self.scheme.rawValue)://\(self.authority)" }
}
