/// One HTTP/2 header field (a regular header, never a pseudo-header).
///
/// 1. Received names are lowercase: libnghttp2 rejects uppercase names with a stream error.
/// 2. Names given to the session for sending are lowercased as they are encoded, and the
///    connection-specific fields HTTP/2 forbids (`connection`, `keep-alive`, `proxy-connection`,
///    `transfer-encoding`, `upgrade`; RFC 9113 §8.2.2) are dropped, so an HTTP/1 header block can
///    be forwarded as it is.
/// 3. ``neverIndex`` marks a sensitive value (`authorization`, cookies) that HPACK must not add
///    to its dynamic table (RFC 7541 §7.1.3).
public struct HTTP2HeaderField: Hashable, Sendable, CustomStringConvertible {
    public var name: String
    public var value: String
    /// Encode with the "never indexed" representation.
    public var neverIndex: Bool

    public init(name: String, value: String, neverIndex: Bool = false) {
        self.name = name
        self.value = value
        self.neverIndex = neverIndex
    }

    public var description: String { "\(self.name): \(self.value)" }
}

/// The head of a request received on a server session: the pseudo-headers and the regular fields.
///
/// libnghttp2's HTTP messaging checks have already run: the pseudo-headers are present as
/// RFC 9113 §8.3.1 requires (`:scheme` and `:path` may be absent only for `CONNECT`), no pseudo-header
/// follows a regular one, and no connection-specific field is present.
public struct HTTP2RequestHead: Hashable, Sendable {
    /// `:method`.
    public var method: String
    /// `:scheme`, absent for `CONNECT`.
    public var scheme: String?
    /// `:authority`; the `host` field, if any, stays in ``headers``.
    public var authority: String?
    /// `:path`, absent for `CONNECT`.
    public var path: String?
    /// `:protocol` of an extended CONNECT (RFC 8441), e.g. `websocket`.
    public var extendedProtocol: String?
    /// The regular fields in the order received.
    public var headers: [HTTP2HeaderField]

    public init(
        method: String,
        scheme: String? = nil,
        authority: String? = nil,
        path: String? = nil,
        extendedProtocol: String? = nil,
        headers: [HTTP2HeaderField] = []
    ) {
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path
        self.extendedProtocol = extendedProtocol
        self.headers = headers
    }

    /// The first value of the regular field `name` (lowercase).
    public subscript(first name: String) -> String? {
        self.headers.first(where: { $0.name == name })?.value
    }
}

/// The head of a response received on a client session.
public struct HTTP2ResponseHead: Hashable, Sendable {
    /// `:status`.
    public var status: Int
    /// The regular fields in the order received.
    public var headers: [HTTP2HeaderField]

    public init(status: Int, headers: [HTTP2HeaderField] = []) {
        self.status = status
        self.headers = headers
    }
}
