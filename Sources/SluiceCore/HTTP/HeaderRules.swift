/// The header operations the rules need; NIO's `HTTPHeaders` conforms in SluiceProxy, tests use a plain list.
///
/// Names are compared case-insensitively, as HTTP requires.
public protocol HeaderFields {
    func contains(name: String) -> Bool
    /// Every value of `name`, each comma-separated element on its own, trimmed.
    func tokens(name: String) -> [Substring]
    func first(name: String) -> String?
    mutating func add(name: String, value: String)
    mutating func replaceOrAdd(name: String, value: String)
    mutating func remove(name: String)
}

/// What a proxy does to headers as a message crosses it (RFC 9110 §7.6).
///
/// 1. Hop-by-hop headers are removed: `Connection` and every header it names, `Keep-Alive`,
///    `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`;
///    `Transfer-Encoding` is removed and the framing re-declared (`chunked` stays chunked).
/// 2. Requests: `X-Forwarded-For` gets the client address appended; `X-Forwarded-Proto` and
///    `X-Forwarded-Host` are set when absent (an earlier hop, such as a TLS-terminating ingress,
///    knows the client's scheme and host better than we do); `Via` gets `1.1 sluice` appended;
///    `Host` is kept as the client sent it (and set to the upstream's authority for an HTTP/1.0
///    request without one).
/// 3. Responses: `Via` gets `1.1 sluice` appended.
public enum HeaderRules {
    /// The hop-by-hop headers of RFC 9110 §7.6.1 and RFC 2616 §13.5.1, lower-cased.
    public static let hopByHop: [String] = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    ]

    public static let viaValue = "1.1 sluice"

    /// Removes hop-by-hop headers. Returns whether the message was chunked, so the caller can
    /// re-declare the framing it will use.
    @discardableResult
    @inlinable
    public static func removeHopByHop<H: HeaderFields>(_ headers: inout H) -> (chunked: Bool, connectionTokens: [Substring]) {
        let chunked = headers.tokens(name: "transfer-encoding").last.map { $0.lowercased() == "chunked" } ?? false
        let connectionTokens = headers.tokens(name: "connection")
        for token in connectionTokens {
            let name = token.lowercased()
            // Never let `Connection` strip the framing or forwarding headers we rely on.
            if name == "content-length" || name == "host" || name == "transfer-encoding" { continue }
            headers.remove(name: name)
        }
        for name in Self.hopByHop {
            if headers.contains(name: name) { headers.remove(name: name) }
        }
        return (chunked, connectionTokens)
    }

    /// Rewrites a request head's headers for the upstream.
    ///
    /// - Parameters:
    ///   - clientAddress: the downstream peer's IP, without port.
    ///   - upstreamAuthority: used as `Host` when the request has none (HTTP/1.0).
    @inlinable
    public static func rewriteRequest<H: HeaderFields>(_ headers: inout H, clientAddress: String?, upstreamAuthority: String) {
        let (chunked, _) = Self.removeHopByHop(&headers)
        if chunked { headers.replaceOrAdd(name: "transfer-encoding", value: "chunked") }
        let clientHost = headers.first(name: "host")
        if clientHost == nil { headers.add(name: "host", value: upstreamAuthority) }
        if let clientAddress {
            if let existing = headers.first(name: "x-forwarded-for") {
                let all = headers.tokens(name: "x-forwarded-for")
                let joined = all.isEmpty ? existing : all.joined(separator: ", ")
                headers.replaceOrAdd(name: "x-forwarded-for", value: joined + ", " + clientAddress)
            } else {
                headers.add(name: "x-forwarded-for", value: clientAddress)
            }
        }
        if !headers.contains(name: "x-forwarded-proto") { headers.add(name: "x-forwarded-proto", value: "http") }
        if !headers.contains(name: "x-forwarded-host"), let clientHost {
            headers.add(name: "x-forwarded-host", value: clientHost)
        }
        Self.appendVia(&headers)
    }

    /// Rewrites a response head's headers for the client. Returns whether the upstream asked to close.
    @inlinable
    public static func rewriteResponse<H: HeaderFields>(_ headers: inout H) -> Bool {
        let (chunked, tokens) = Self.removeHopByHop(&headers)
        if chunked {
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3): the length goes.
            headers.remove(name: "content-length")
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
        }
        Self.appendVia(&headers)
        return tokens.contains { $0.lowercased() == "close" }
    }

    @inlinable
    static func appendVia<H: HeaderFields>(_ headers: inout H) {
        if let existing = headers.first(name: "via") {
            let all = headers.tokens(name: "via").joined(separator: ", ")
            headers.replaceOrAdd(name: "via", value: (all.isEmpty ? existing : all) + ", " + Self.viaValue)
        } else {
            headers.add(name: "via", value: Self.viaValue)
        }
    }
}
