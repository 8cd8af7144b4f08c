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
    /// Which of the names the rules act on are present, in one pass over the fields. The default
    /// asks ``contains(name:)`` once per name; NIO's `HTTPHeaders` walks its fields once.
    func presentNames() -> HeaderNamesPresent
}

extension HeaderFields {
    public func presentNames() -> HeaderNamesPresent {
        var present: HeaderNamesPresent = []
        for (name, flag) in HeaderNamesPresent.all where self.contains(name: name) { present.insert(flag) }
        return present
    }
}

/// The header names the request and header rules look at, as a set found in one pass over the
/// fields, so a request without any of them (the common case) costs one pass instead of one per
/// name. The rules only skip work on a name's absence; when it is present they look as before.
public struct HeaderNamesPresent: OptionSet, Sendable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let host = HeaderNamesPresent(rawValue: 1 << 0)
    public static let contentLength = HeaderNamesPresent(rawValue: 1 << 1)
    public static let transferEncoding = HeaderNamesPresent(rawValue: 1 << 2)
    public static let connection = HeaderNamesPresent(rawValue: 1 << 3)
    public static let expect = HeaderNamesPresent(rawValue: 1 << 4)
    public static let xForwardedFor = HeaderNamesPresent(rawValue: 1 << 5)
    public static let xForwardedProto = HeaderNamesPresent(rawValue: 1 << 6)
    public static let xForwardedHost = HeaderNamesPresent(rawValue: 1 << 7)
    public static let via = HeaderNamesPresent(rawValue: 1 << 8)
    /// A hop-by-hop name other than `Connection` and `Transfer-Encoding` (`Keep-Alive`, `TE`, ...).
    public static let otherHopByHop = HeaderNamesPresent(rawValue: 1 << 9)
    /// Exactly one `Host` field. Set only by an implementation that counts fields (NIO's
    /// `HTTPHeaders`); without it the rules look at every `Host` field.
    public static let hostOnce = HeaderNamesPresent(rawValue: 1 << 10)
    /// `Upgrade` (also counted in ``otherHopByHop``): the request may ask to switch protocols.
    public static let upgrade = HeaderNamesPresent(rawValue: 1 << 11)
    /// Every hop-by-hop name of ``HeaderRules/hopByHop``.
    public static let hopByHop: HeaderNamesPresent = [.connection, .transferEncoding, .otherHopByHop, .upgrade]

    /// Each lower-cased name with its flag.
    public static let all: [(String, HeaderNamesPresent)] = [
        ("host", .host), ("content-length", .contentLength), ("transfer-encoding", .transferEncoding),
        ("connection", .connection), ("expect", .expect), ("x-forwarded-for", .xForwardedFor),
        ("x-forwarded-proto", .xForwardedProto), ("x-forwarded-host", .xForwardedHost), ("via", .via),
        ("keep-alive", .otherHopByHop), ("proxy-connection", .otherHopByHop), ("te", .otherHopByHop),
        ("trailer", .otherHopByHop), ("upgrade", [.otherHopByHop, .upgrade]), ("proxy-authenticate", .otherHopByHop),
        ("proxy-authorization", .otherHopByHop),
    ]

    /// The flag of one field name (any case), or none.
    @inlinable
    public static func flag(forName name: String) -> HeaderNamesPresent {
        let utf8 = name.utf8
        switch utf8.count {
        case 2: return Self.equal(utf8, "te") ? .otherHopByHop : []
        case 3: return Self.equal(utf8, "via") ? .via : []
        case 4: return Self.equal(utf8, "host") ? .host : []
        case 6: return Self.equal(utf8, "expect") ? .expect : []
        case 7:
            if Self.equal(utf8, "upgrade") { return [.otherHopByHop, .upgrade] }
            return Self.equal(utf8, "trailer") ? .otherHopByHop : []
        case 10:
            if Self.equal(utf8, "connection") { return .connection }
            return Self.equal(utf8, "keep-alive") ? .otherHopByHop : []
        case 14: return Self.equal(utf8, "content-length") ? .contentLength : []
        case 15: return Self.equal(utf8, "x-forwarded-for") ? .xForwardedFor : []
        case 16:
            if Self.equal(utf8, "x-forwarded-host") { return .xForwardedHost }
            return Self.equal(utf8, "proxy-connection") ? .otherHopByHop : []
        case 17:
            if Self.equal(utf8, "transfer-encoding") { return .transferEncoding }
            return Self.equal(utf8, "x-forwarded-proto") ? .xForwardedProto : []
        case 18: return Self.equal(utf8, "proxy-authenticate") ? .otherHopByHop : []
        case 19: return Self.equal(utf8, "proxy-authorization") ? .otherHopByHop : []
        default: return []
        }
    }

    /// ASCII case-insensitive equality with a lower-case name of the same length.
    @inlinable
    static func equal(_ name: String.UTF8View, _ lower: StaticString) -> Bool {
        lower.withUTF8Buffer { lower in
            var index = 0
            for byte in name {
                let folded = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
                if folded != lower[index] { return false }
                index += 1
            }
            return index == lower.count
        }
    }
}

/// What a proxy does to headers as a message crosses it (RFC 9110 §7.6).
///
/// 1. Hop-by-hop headers are removed: `Connection` and every header it names, `Keep-Alive`,
///    `Proxy-Connection`, `TE`, `Trailer`, `Upgrade`, `Proxy-Authenticate`, `Proxy-Authorization`;
///    `Transfer-Encoding` is removed and the framing re-declared (`chunked` stays chunked).
/// 2. Requests: `X-Forwarded-For` gets the client address appended; `X-Forwarded-Proto` and
///    `X-Forwarded-Host` are set when absent (an earlier hop, such as a TLS-terminating ingress,
///    knows the client's scheme and host better than we do); `Via` gets `1.1 sluice` appended
///    (`2 sluice` for a message received over HTTP/2: RFC 9110 §7.6.3 names the received protocol);
///    `Host` is kept as the client sent it (and set to the upstream's authority for an HTTP/1.0
///    request without one).
/// 3. Responses: `Via` gets `1.1 sluice` (or `2 sluice`) appended.
public enum HeaderRules {
    /// The hop-by-hop headers of RFC 9110 §7.6.1 and RFC 2616 §13.5.1, lower-cased.
    public static let hopByHop: [String] = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authenticate", "proxy-authorization",
    ]

    public static let viaValue = "1.1 sluice"
    /// The `Via` entry for a message Sluice received over HTTP/2.
    public static let viaValueHTTP2 = "2 sluice"

    /// The `Via` entry for a message received with HTTP major version `major`.
    @inlinable
    public static func via(receivedMajorVersion major: Int) -> String { major == 2 ? Self.viaValueHTTP2 : Self.viaValue }

    /// Removes hop-by-hop headers. Returns whether the message was chunked, so the caller can
    /// re-declare the framing it will use.
    @discardableResult
    @inlinable
    public static func removeHopByHop<H: HeaderFields>(_ headers: inout H) -> (chunked: Bool, connectionTokens: [Substring]) {
        Self.removeHopByHop(&headers, present: headers.presentNames())
    }

    /// ``removeHopByHop(_:)`` given the names `headers` holds (``HeaderFields/presentNames()``).
    @discardableResult
    @inlinable
    public static func removeHopByHop<H: HeaderFields>(_ headers: inout H, present: HeaderNamesPresent) -> (chunked: Bool, connectionTokens: [Substring]) {
        guard !present.isDisjoint(with: .hopByHop) else { return (false, []) }
        let chunked =
            present.contains(.transferEncoding)
            ? headers.tokens(name: "transfer-encoding").last.map { $0.lowercased() == "chunked" } ?? false
            : false
        let connectionTokens = present.contains(.connection) ? headers.tokens(name: "connection") : []
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
    ///   - scheme: the scheme of the listener the request arrived on (`X-Forwarded-Proto`).
    ///   - upstreamAuthority: used as `Host` when the request has none (HTTP/1.0).
    @inlinable
    public static func rewriteRequest<H: HeaderFields>(
        _ headers: inout H, clientAddress: String?, scheme: URIScheme, upstreamAuthority: String, via: String = Self.viaValue
    ) {
        Self.rewriteRequest(
            &headers, present: headers.presentNames(), clientAddress: clientAddress, scheme: scheme, upstreamAuthority: upstreamAuthority, via: via)
    }

    /// ``rewriteRequest(_:clientAddress:scheme:upstreamAuthority:via:)`` given the names `headers` holds
    /// (``HeaderFields/presentNames()``).
    @inlinable
    public static func rewriteRequest<H: HeaderFields>(
        _ headers: inout H,
        present: HeaderNamesPresent,
        clientAddress: String?,
        scheme: URIScheme,
        upstreamAuthority: String,
        via: String = Self.viaValue
    ) {
        var present = present
        let (chunked, connectionTokens) = Self.removeHopByHop(&headers, present: present)
        // `Connection` may have named (and so removed) any other header.
        if !connectionTokens.isEmpty { present = headers.presentNames() }
        if chunked { headers.replaceOrAdd(name: "transfer-encoding", value: "chunked") }
        let clientHost = present.contains(.host) ? headers.first(name: "host") : nil
        if clientHost == nil { headers.add(name: "host", value: upstreamAuthority) }
        if let clientAddress {
            if present.contains(.xForwardedFor), let existing = headers.first(name: "x-forwarded-for") {
                let all = headers.tokens(name: "x-forwarded-for")
                let joined = all.isEmpty ? existing : all.joined(separator: ", ")
                headers.replaceOrAdd(name: "x-forwarded-for", value: joined + ", " + clientAddress)
            } else {
                headers.add(name: "x-forwarded-for", value: clientAddress)
            }
        }
        if !present.contains(.xForwardedProto) { headers.add(name: "x-forwarded-proto", value: scheme.rawValue) }
        if !present.contains(.xForwardedHost), let clientHost {
            headers.add(name: "x-forwarded-host", value: clientHost)
        }
        Self.appendVia(&headers, present: present, via: via)
    }

    /// The protocols an HTTP/1.1 request asks to switch to (RFC 9110 §7.8): its `Upgrade` value when
    /// `Connection` lists `upgrade`, else `nil` (an `Upgrade` that `Connection` does not name is only
    /// a hop-by-hop field to drop). HTTP/1.0 requests never upgrade (§7.8: ignored). Call with the
    /// headers as received, before ``rewriteRequest(_:present:clientAddress:scheme:upstreamAuthority:via:)``.
    @inlinable
    public static func upgradeRequested<H: HeaderFields>(_ headers: H, present: HeaderNamesPresent, versionMinor: Int) -> String? {
        guard present.contains(.upgrade), present.contains(.connection), versionMinor >= 1 else { return nil }
        guard headers.tokens(name: "connection").contains(where: { Self.equalsIgnoringCase($0, "upgrade") }) else { return nil }
        let protocols = headers.tokens(name: "upgrade")
        guard !protocols.isEmpty else { return nil }
        return protocols.joined(separator: ", ")
    }

    /// Puts the upgrade pair back after the hop-by-hop fields were removed: `Connection: upgrade` and
    /// `Upgrade: protocols` (request or `101` response).
    @inlinable
    public static func keepUpgrade<H: HeaderFields>(_ headers: inout H, protocols: String) {
        headers.replaceOrAdd(name: "connection", value: "upgrade")
        headers.replaceOrAdd(name: "upgrade", value: protocols)
    }

    /// ASCII case-insensitive equality of a token with a lower-case word.
    @inlinable
    public static func equalsIgnoringCase(_ token: Substring, _ lower: String) -> Bool {
        token.utf8.count == lower.utf8.count && zip(token.utf8, lower.utf8).allSatisfy { ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 }
    }

    /// Rewrites a response head's headers for the client. Returns whether the upstream asked to close.
    @inlinable
    public static func rewriteResponse<H: HeaderFields>(_ headers: inout H, via: String = Self.viaValue) -> Bool {
        var present = headers.presentNames()
        let (chunked, tokens) = Self.removeHopByHop(&headers, present: present)
        if !tokens.isEmpty { present = headers.presentNames() }
        if chunked {
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3): the length goes.
            headers.remove(name: "content-length")
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
        }
        Self.appendVia(&headers, present: present, via: via)
        return tokens.contains { $0.lowercased() == "close" }
    }

    @inlinable
    static func appendVia<H: HeaderFields>(_ headers: inout H, present: HeaderNamesPresent, via: String) {
        if present.contains(.via), let existing = headers.first(name: "via") {
            let all = headers.tokens(name: "via").joined(separator: ", ")
            headers.replaceOrAdd(name: "via", value: (all.isEmpty ? existing : all) + ", " + via)
        } else {
            headers.add(name: "via", value: via)
        }
    }
}
