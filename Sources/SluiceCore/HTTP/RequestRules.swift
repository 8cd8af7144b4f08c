/// Checks a request head before anything is sent upstream, and says how to answer a bad one.
///
/// Sluice is a reverse proxy, never an open forward proxy: `CONNECT` is refused, and an
/// absolute-form target (`GET http://host/path`) is accepted only for the host the request's
/// `Host` header names, and then forwarded in origin form.
public enum RequestRules {
    public struct Head: Sendable {
        public var method: String
        public var uri: String
        public var versionMajor: Int
        public var versionMinor: Int
        public init(method: String, uri: String, versionMajor: Int, versionMinor: Int) {
            self.method = method
            self.uri = uri
            self.versionMajor = versionMajor
            self.versionMinor = versionMinor
        }
    }

    public struct Limits: Sendable {
        public var maxHeaderBytes: Int
        public var maxBodyBytes: Int?
        public init(maxHeaderBytes: Int, maxBodyBytes: Int?) {
            self.maxHeaderBytes = maxHeaderBytes
            self.maxBodyBytes = maxBodyBytes
        }
    }

    /// What to do with a request that passed.
    public struct Accepted: Equatable, Sendable {
        /// The target to send upstream when it differs from the client's (absolute form made origin form).
        public var rewrittenURI: String?
        /// The client sent `Expect: 100-continue`: answer `100 Continue` ourselves and strip the header.
        public var expectsContinue: Bool
        /// `Content-Length`, when declared.
        public var contentLength: Int?

        @inlinable
        public init(rewrittenURI: String?, expectsContinue: Bool, contentLength: Int?) {
            self.rewrittenURI = rewrittenURI
            self.expectsContinue = expectsContinue
            self.contentLength = contentLength
        }
    }

    /// Checks the head. `headerBytes` is the size of the head as received (or a close estimate).
    /// Inlinable so the proxy's call is specialised for NIO's header type.
    @inlinable
    public static func check<H: HeaderFields>(
        _ head: Head,
        headers: H,
        headerBytes: Int,
        limits: Limits
    ) -> Result<Accepted, ProxyError> {
        Self.check(head, headers: headers, present: headers.presentNames(), headerBytes: headerBytes, limits: limits)
    }

    /// ``check(_:headers:headerBytes:limits:)`` given the names `headers` holds
    /// (``HeaderFields/presentNames()``), for a caller that has them already.
    @inlinable
    public static func check<H: HeaderFields>(
        _ head: Head,
        headers: H,
        present: HeaderNamesPresent,
        headerBytes: Int,
        limits: Limits
    ) -> Result<Accepted, ProxyError> {
        if headerBytes > limits.maxHeaderBytes {
            return .failure(.headersTooLarge(limit: limits.maxHeaderBytes))
        }
        if head.method == "CONNECT" {
            return .failure(.connectRefused)
        }
        guard head.versionMajor == 1 else { return .failure(.badRequest("unsupported HTTP version")) }
        let (hostCount, host) = Self.hosts(headers, present: present)
        if head.versionMinor >= 1 && hostCount != 1 {
            return .failure(.badRequest(hostCount == 0 ? "missing Host header" : "more than one Host header"))
        }
        if hostCount > 1 { return .failure(.badRequest("more than one Host header")) }
        var accepted = Accepted(rewrittenURI: nil, expectsContinue: false, contentLength: nil)
        if !head.uri.hasPrefix("/") {
            if head.uri == "*" {
                guard head.method == "OPTIONS" else { return .failure(.badRequest("asterisk-form target is only for OPTIONS")) }
            } else {
                guard let (authority, path) = Self.splitAbsoluteForm(head.uri) else {
                    return .failure(.badRequest("malformed request target"))
                }
                guard let host, host.lowercased() == authority.lowercased() else {
                    return .failure(.foreignAbsoluteTarget)
                }
                accepted.rewrittenURI = path
            }
        }
        let lengths = present.contains(.contentLength) ? headers.tokens(name: "content-length") : []
        if !lengths.isEmpty {
            if present.contains(.transferEncoding) {
                return .failure(.badRequest("both Content-Length and Transfer-Encoding"))
            }
            guard lengths[0].allSatisfy({ ("0"..."9").contains($0) }), let length = Int(lengths[0]), lengths.allSatisfy({ $0 == lengths[0] }) else {
                return .failure(.badRequest("invalid Content-Length"))
            }
            accepted.contentLength = length
            if let max = limits.maxBodyBytes, length > max { return .failure(.bodyTooLarge(limit: max)) }
        }
        let expectations = present.contains(.expect) ? headers.tokens(name: "expect") : []
        if !expectations.isEmpty {
            guard expectations.count == 1, expectations[0].lowercased() == "100-continue" else {
                return .failure(.expectationFailed)
            }
            accepted.expectsContinue = head.versionMinor >= 1
        }
        return .success(accepted)
    }

    /// How many `Host` values there are, and the first: without splitting or an array when the one
    /// `Host` value is a plain authority (no comma, no surrounding whitespace), as nearly all are.
    @inlinable
    static func hosts<H: HeaderFields>(_ headers: H, present: HeaderNamesPresent) -> (count: Int, first: Substring?) {
        guard present.contains(.host) else { return (0, nil) }
        if present.contains(.hostOnce), let host = headers.first(name: "host"), Self.isPlainToken(host) {
            return (1, host[...])
        }
        let tokens = headers.tokens(name: "host")
        return (tokens.count, tokens.first)
    }

    @inlinable
    static func isPlainToken(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard let first = utf8.first, let last = utf8.last else { return false }
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
        if first == space || first == tab || last == space || last == tab { return false }
        return !utf8.contains(UInt8(ascii: ","))
    }

    /// `http://Host:port/path?q` → (`Host:port`, `/path?q`).
    @usableFromInline
    static func splitAbsoluteForm(_ uri: String) -> (authority: Substring, path: String)? {
        let lower = uri.prefix(8).lowercased()
        let rest: Substring
        if lower.hasPrefix("http://") {
            rest = uri.dropFirst(7)
        } else if lower.hasPrefix("https://") {
            rest = uri.dropFirst(8)
        } else {
            return nil
        }
        let end = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<end]
        guard !authority.isEmpty, !authority.contains("@") else { return nil }
        var path = String(rest[end...])
        if path.isEmpty || path.hasPrefix("?") { path = "/" + path }
        return (authority, path)
    }

    /// Methods RFC 9110 §9.2.2 calls idempotent: safe to retry when the request never reached the upstream.
    public static func isIdempotent(_ method: String) -> Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE": true
        default: false
        }
    }
}
