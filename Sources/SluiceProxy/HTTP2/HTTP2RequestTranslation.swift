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
///    limits apply), then ``HeaderRules/rewriteRequest(_:clientAddress:upstreamAuthority:)``.
/// 4. Framing for HTTP/1: a request with a body and no `content-length` goes chunked, and so does one
///    that announces trailers (`trailer`), so they can be forwarded; one without a body whose method
///    usually has one gets `content-length: 0`.
enum HTTP2RequestTranslation {
    struct Translated: Equatable {
        var head: HTTPRequestHead
        /// The client sent `expect: 100-continue` (removed from `head`): answer 100 when forwarding starts.
        var expectsContinue: Bool
    }

    enum Rejection: Error, Equatable {
        /// Malformed (RFC 9113 §8.1.1): reset the stream with `PROTOCOL_ERROR`.
        case malformed(String)
        /// Answer with the error's status.
        case refused(ProxyError)
    }

    /// The fields RFC 9113 §8.2.2 forbids in HTTP/2.
    static let connectionSpecific: Set<String> = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]

    static func translate(
        _ request: HTTP2RequestHead,
        endStream: Bool,
        clientAddress: String?,
        upstreamAuthority: String,
        limits: RequestRules.Limits,
        upstreamIsHTTP2: Bool = false
    ) -> Result<Translated, Rejection> {
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
                // Hop-by-hop: HTTP/1 upstreams never see it; HTTP/2 ones (gRPC) need it, added below.
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
        HeaderRules.rewriteRequest(&headers, clientAddress: clientAddress, upstreamAuthority: upstreamAuthority, via: HeaderRules.viaValueHTTP2)
        if acceptsTrailers && upstreamIsHTTP2 { headers.add(name: "te", value: "trailers") }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: accepted.rewrittenURI ?? path, headers: headers)
        return .success(Translated(head: head, expectsContinue: accepted.expectsContinue && !endStream))
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
