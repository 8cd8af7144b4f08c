import NIOHTTP1
import SluiceCore
import SluiceHTTP2

/// Turns an HTTP/2 request head into the HTTP/1.1 request head sent upstream, and an HTTP/1.1
/// response head into the HTTP/2 fields sent to the client. Pure.
///
/// Requests:
/// 1. A connection-specific field (`connection`, `keep-alive`, `proxy-connection`,
///    `transfer-encoding`, `upgrade`) or a `te` other than `trailers` makes the request malformed:
///    a stream error `PROTOCOL_ERROR` (RFC 9113 §8.2.2). libnghttp2 checks this too; this is the
///    proxy's own guarantee that no such field reaches an HTTP/1 upstream. So does an `:authority` with
///    userinfo (`user@host`) for an `http` or `https` request (RFC 9113 §8.3.1), which libnghttp2 lets through.
/// 2. `:authority` becomes `Host` (RFC 9113 §8.3.1); a `host` field that names another authority is
///    a 400. Split `cookie` fields are joined with `; ` (RFC 9113 §8.2.3).
/// 3. ``RequestRules/check(_:headers:headerBytes:limits:)`` runs as for HTTP/1 (CONNECT is refused,
///    limits apply), then ``HeaderRules/rewriteRequest(_:clientAddress:scheme:upstreamAuthority:via:)``.
/// 4. Framing for HTTP/1: a request with a body and no `content-length` goes chunked, and so does one
///    that announces trailers (`trailer`), so they can be forwarded; one without a body whose method
///    usually has one gets `content-length: 0`.
/// 5. An extended CONNECT (RFC 8441, `:protocol`; libnghttp2 accepts it only on CONNECT, with `:scheme`
///    and `:path`, because the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL) with `:protocol
///    websocket` becomes the HTTP/1.1 WebSocket upgrade of RFC 6455 §4.1 (RFC 8441 §5): `GET :path`,
///    `Connection: Upgrade`, `Upgrade: websocket`, a fresh `Sec-WebSocket-Key` (the HTTP/2 client sends
///    none), the client's `Sec-WebSocket-Version` (13 if it sent none), `-Protocol`, `-Extensions` and
///    other end-to-end fields, and the usual proxy fields. Any other `:protocol` is a 501: Sluice
///    tunnels WebSockets only, and says so rather than pretending the resource is missing. So is a
///    WebSocket to an HTTP/2 (h2c) upstream group, which would need extended CONNECT upstream too.
enum HTTP2RequestTranslation {
    struct Translated: Equatable {
        var head: HTTPRequestHead
        /// The client sent `expect: 100-continue` (removed from `head`): answer 100 when forwarding starts.
        var expectsContinue: Bool
        /// An extended CONNECT for a WebSocket: the `Sec-WebSocket-Key` sent upstream, whose
        /// `Sec-WebSocket-Accept` the upstream's `101` must carry.
        var webSocketKey: String? = nil
    }

    enum Rejection: Error, Equatable {
        /// Malformed (RFC 9113 §8.1.1): reset the stream with `PROTOCOL_ERROR`.
        case malformed(String)
        /// Answer with the error's status.
        case refused(ProxyError)
        /// Answer 501 Not Implemented with this reason (an extended CONNECT Sluice does not tunnel).
        case notImplemented(String)
    }

    /// The `:protocol` Sluice tunnels (RFC 8441 §4, the token registered by RFC 6455 §11.2).
    static let webSocketProtocol = "websocket"
    /// The WebSocket version Sluice speaks to upstreams (RFC 6455 §4.1) when the client names none.
    static let webSocketVersion = "13"

    /// The fields RFC 9113 §8.2.2 forbids in HTTP/2.
    static let connectionSpecific: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]

    static func translate(
        _ request: HTTP2RequestHead,
        endStream: Bool,
        clientAddress: String?,
        scheme: URIScheme,
        upstreamAuthority: String,
        limits: RequestRules.Limits,
        upstreamIsHTTP2: Bool = false
    ) -> Result<Translated, Rejection> {
        let fields: Fields
        switch Self.fields(of: request) {
        case .success(let value): fields = value
        case .failure(let rejection): return .failure(rejection)
        }
        var headers = fields.headers
        let headerBytes = fields.headerBytes
        let acceptsTrailers = fields.acceptsTrailers

        let path = request.path ?? request.authority ?? "/"
        let check = RequestRules.check(
            RequestRules.Head(method: request.method, uri: path, versionMajor: 1, versionMinor: 1),
            headers: headers,
            headerBytes: headerBytes,
            limits: limits
        )
        let accepted: RequestRules.Accepted
        switch check {
        case .success(let value): accepted = value
        case .failure(let error): return .failure(.refused(error))
        }
        let method = HTTPMethod(rawValue: request.method)
        if accepted.expectsContinue { headers.remove(name: "expect") }
        if accepted.contentLength != nil, !endStream, !upstreamIsHTTP2, headers.contains(name: "trailer") {
            // Trailers are announced: HTTP/1.1 carries them only in the chunked coding (RFC 9112 §7.1.2).
            headers.remove(name: "content-length")
            headers.add(name: "transfer-encoding", value: "chunked")
        } else if accepted.contentLength == nil {
            if !endStream {
                if method == .TRACE { return .failure(.refused(.badRequest("TRACE with a body"))) }
                headers.add(name: "transfer-encoding", value: "chunked")
            } else if method == .POST || method == .PUT || method == .PATCH {
                headers.add(name: "content-length", value: "0")
            }
        }
        HeaderRules.rewriteRequest(
            &headers, clientAddress: clientAddress, scheme: scheme, upstreamAuthority: upstreamAuthority, via: HeaderRules.viaValueHTTP2)
        if acceptsTrailers && upstreamIsHTTP2 { headers.add(name: "te", value: "trailers") }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: accepted.rewrittenURI ?? path, headers: headers)
        return .success(Translated(head: head, expectsContinue: accepted.expectsContinue && !endStream))
    }

    /// The fields of an HTTP/2 request head as HTTP/1 headers: `host` from `:authority`, cookies joined.
    struct Fields {
        var headers: HTTPHeaders
        /// The head's size, close to what it would take as HTTP/1, for the header limit.
        var headerBytes: Int
        /// The client sent `te: trailers` (removed from ``headers``).
        var acceptsTrailers: Bool
    }

    /// Items 1 and 2: the checks every request head goes through, and its fields for HTTP/1.
    static func fields(of request: HTTP2RequestHead) -> Result<Fields, Rejection> {
        if let authority = request.authority, authority.utf8.contains(UInt8(ascii: "@")),
            let scheme = request.scheme?.lowercased(), scheme == "http" || scheme == "https"
        {
            // RFC 9113 §8.3.1: ":authority MUST NOT include the deprecated userinfo subcomponent for
            // "http" or "https" schemed URIs"; an invalid pseudo-header field makes the request malformed (§8.3).
            return .failure(.malformed("userinfo in :authority"))
        }
        var headers = HTTPHeaders()
        headers.reserveCapacity(request.headers.count + 6)
        if let authority = request.authority { headers.add(name: "host", value: authority) }
        var cookies: [String] = []
        var acceptsTrailers = false
        var headerBytes = (request.path?.utf8.count ?? 1) + request.method.utf8.count + 16
        for field in request.headers {
            let name = field.name
            headerBytes += name.utf8.count + field.value.utf8.count + 4
            if Self.connectionSpecific.contains(name) {
                return .failure(.malformed("connection-specific header field \(name)"))
            }
            switch name {
            case "te":
                guard field.value.lowercased() == "trailers" else { return .failure(.malformed("te other than trailers")) }
                // Hop-by-hop: HTTP/1 upstreams never see it; HTTP/2 ones (gRPC) need it, added by the caller.
                acceptsTrailers = true
                continue
            case "cookie":
                cookies.append(field.value)
                continue
            case "host":
                if let authority = request.authority {
                    guard field.value.lowercased() == authority.lowercased() else {
                        return .failure(.refused(.badRequest("host header differs from :authority")))
                    }
                    continue
                }
            default:
                break
            }
            headers.add(name: name, value: field.value)
        }
        if !cookies.isEmpty { headers.add(name: "cookie", value: cookies.joined(separator: "; ")) }
        return .success(Fields(headers: headers, headerBytes: headerBytes, acceptsTrailers: acceptsTrailers))
    }

    /// Item 5: an extended CONNECT (`request.extendedProtocol` set) as the HTTP/1.1 WebSocket upgrade
    /// sent upstream. `makeKey` is called once the request is accepted, for its `Sec-WebSocket-Key`
    /// (16 random bytes, base64: RFC 6455 §4.1).
    static func translateExtendedConnect(
        _ request: HTTP2RequestHead,
        clientAddress: String?,
        scheme: URIScheme,
        upstreamAuthority: String,
        limits: RequestRules.Limits,
        upstreamIsHTTP2: Bool,
        makeKey: () -> String
    ) -> Result<Translated, Rejection> {
        // libnghttp2 checks this already (RFC 8441 §4); it is the proxy's own guarantee too.
        guard request.method == "CONNECT", let extendedProtocol = request.extendedProtocol, request.path != nil, request.scheme != nil else {
            return .failure(.malformed(":protocol outside an extended CONNECT"))
        }
        guard extendedProtocol.lowercased() == Self.webSocketProtocol else {
            return .failure(.notImplemented("extended CONNECT for \(extendedProtocol) is not supported: Sluice tunnels websocket only"))
        }
        guard !upstreamIsHTTP2 else {
            return .failure(.notImplemented("WebSockets to an HTTP/2 upstream are not supported"))
        }
        let fields: Fields
        switch Self.fields(of: request) {
        case .success(let value): fields = value
        case .failure(let rejection): return .failure(rejection)
        }
        var headers = fields.headers
        // The tunnel's bytes are DATA frames, not a body: no framing, no `expect`. The client's key (an
        // HTTP/2 client has no reason to send one) is replaced by ours, which Sluice checks the answer against.
        for name in ["content-length", "expect", "sec-websocket-key", "sec-websocket-accept"] where headers.contains(name: name) {
            headers.remove(name: name)
        }
        let path = request.path ?? "/"
        let check = RequestRules.check(
            RequestRules.Head(method: "GET", uri: path, versionMajor: 1, versionMinor: 1),
            headers: headers,
            headerBytes: fields.headerBytes,
            limits: limits
        )
        let accepted: RequestRules.Accepted
        switch check {
        case .success(let value): accepted = value
        case .failure(let error): return .failure(.refused(error))
        }
        HeaderRules.rewriteRequest(
            &headers, clientAddress: clientAddress, scheme: scheme, upstreamAuthority: upstreamAuthority, via: HeaderRules.viaValueHTTP2)
        let key = makeKey()
        headers.add(name: "connection", value: "upgrade")
        headers.add(name: "upgrade", value: Self.webSocketProtocol)
        headers.add(name: "sec-websocket-key", value: key)
        if !headers.contains(name: "sec-websocket-version") { headers.add(name: "sec-websocket-version", value: Self.webSocketVersion) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: accepted.rewrittenURI ?? path, headers: headers)
        return .success(Translated(head: head, expectsContinue: false, webSocketKey: key))
    }

    /// How the upstream answered a WebSocket upgrade (item 5), as the client is to hear it.
    enum WebSocketAnswer: Equatable {
        /// A valid `101`: the client's `200` carries these fields.
        case accepted([HTTP2HeaderField])
        /// A refusal (a 3xx, 4xx, 5xx: a redirect, 401, 404, 426…): passed on as an ordinary response.
        case refused
        /// Not an answer to this upgrade: a 502.
        case invalid(String)
    }

    /// Classifies the upstream's final answer to a WebSocket upgrade sent with `key`.
    ///
    /// A `101` must carry `Upgrade: websocket` and the `Sec-WebSocket-Accept` of the key (RFC 6455
    /// §4.1): it becomes the client's `200` (RFC 8441 §5) with the end-to-end fields
    /// (`sec-websocket-protocol`, `sec-websocket-extensions`, cookies…), without `sec-websocket-accept`,
    /// which answers a key the client never sent, and without framing fields, which a 2xx to CONNECT
    /// must not carry (RFC 9110 §9.3.6). Any other 2xx is invalid: the upstream ignored the upgrade,
    /// and passing its 2xx on would tell the client the WebSocket is open.
    static func webSocketAnswer(_ head: HTTPResponseHead, key: String) -> WebSocketAnswer {
        switch head.status.code {
        case 101:
            guard head.headers["upgrade"].contains(where: WebSocketHandshake.namesWebSocket) else {
                return .invalid("101 without Upgrade: websocket")
            }
            let accepts = head.headers["sec-websocket-accept"]
            guard accepts.count == 1, accepts[0] == WebSocketHandshake.accept(forKey: key) else {
                return .invalid("101 whose Sec-WebSocket-Accept does not answer the key sent")
            }
            let fields = Self.responseFields(head).filter { field in
                let name = field.name.lowercased()
                return name != "sec-websocket-accept" && name != "content-length"
            }
            return .accepted(fields)
        case 200..<300:
            return .invalid("\(head.status.code) to a WebSocket upgrade: the upstream did not switch protocols")
        default:
            return .refused
        }
    }

    /// The upstream's response fields for the client: hop-by-hop fields removed. The HTTP/2 handler
    /// lowercases names as it encodes them and drops the connection-specific fields (the
    /// `transfer-encoding: chunked` that ``HeaderRules/rewriteResponse(_:)`` keeps for HTTP/1 clients).
    static func responseFields(_ head: HTTPResponseHead) -> [HTTP2HeaderField] {
        var headers = head.headers
        _ = HeaderRules.rewriteResponse(&headers, via: HeaderRules.via(receivedMajorVersion: head.version.major))
        var fields: [HTTP2HeaderField] = []
        fields.reserveCapacity(headers.count)
        for (name, value) in headers { fields.append(HTTP2HeaderField(name: name, value: value)) }
        return fields
    }

    /// Request trailers from the client, for the upstream (hop-by-hop fields removed).
    static func trailerHeaders(_ fields: [HTTP2HeaderField]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count)
        for field in fields where !Self.connectionSpecific.contains(field.name) && !HeaderRules.hopByHop.contains(field.name) {
            headers.add(name: field.name, value: field.value)
        }
        return headers
    }

    /// Trailers from the upstream's chunked response, for the client.
    static func trailerFields(_ headers: HTTPHeaders) -> [HTTP2HeaderField] {
        var fields: [HTTP2HeaderField] = []
        fields.reserveCapacity(headers.count)
        for (name, value) in headers {
            let lower = name.lowercased()
            if Self.connectionSpecific.contains(lower) || HeaderRules.hopByHop.contains(lower) { continue }
            fields.append(HTTP2HeaderField(name: lower, value: value))
        }
        return fields
    }
}
