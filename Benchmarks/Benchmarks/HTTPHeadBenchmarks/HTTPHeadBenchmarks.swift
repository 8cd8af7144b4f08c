// What the proxy pays per HTTP/1 request head: Sluice's parser (and NIO's, which it replaced, for
// comparison), Sluice's request checks, and the header rewrites in both directions, on NIO's
// `HTTPHeaders` (as SluiceProxy runs them).
//
// Each benchmark runs its operation `benchmark.scaledIterations` times per sample; the table shows
// time and mallocs per operation. Only `mallocCountTotal` has checked-in thresholds
// (Benchmarks/Thresholds/): allocation counts are deterministic, timings on a shared machine are not.

import Benchmark
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SluiceBenchmarkSupport
import SluiceCore
import SluiceProxy

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .sluiceMicro(scalingFactor: .kilo)

    parsingBenchmarks()
    requestRulesBenchmarks()
    headerRulesBenchmarks()
}

// MARK: - Typical heads

/// A browser's navigation request, as Chrome sends it (17 headers, about 800 bytes).
let browserRequest = """
    GET /account/orders?page=2&sort=date HTTP/1.1\r
    Host: shop.example.com\r
    Connection: keep-alive\r
    Cache-Control: max-age=0\r
    sec-ch-ua: "Chromium";v="130", "Google Chrome";v="130", "Not?A_Brand";v="99"\r
    sec-ch-ua-mobile: ?0\r
    sec-ch-ua-platform: "Linux"\r
    Upgrade-Insecure-Requests: 1\r
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36\r
    Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8\r
    Sec-Fetch-Site: same-origin\r
    Sec-Fetch-Mode: navigate\r
    Sec-Fetch-User: ?1\r
    Sec-Fetch-Dest: document\r
    Referer: https://shop.example.com/account\r
    Accept-Encoding: gzip, deflate, br, zstd\r
    Accept-Language: en-GB,en;q=0.9,de;q=0.8\r
    Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1\r
    \r

    """

/// The same request's headers as NIO's decoder hands them to the proxy.
let browserHeaders: HTTPHeaders = {
    var headers = HTTPHeaders()
    let lines = browserRequest.split(separator: "\r\n").dropFirst()
    for line in lines {
        guard let colon = line.firstIndex(of: ":") else { continue }
        let value = line[line.index(after: colon)...].drop { $0 == " " }
        headers.add(name: String(line[..<colon]), value: String(value))
    }
    return headers
}()

/// The same request after a TLS-terminating ingress: it already carries forwarding headers.
let ingressHeaders: HTTPHeaders = {
    var headers = browserHeaders
    headers.add(name: "X-Forwarded-For", value: "203.0.113.7")
    headers.add(name: "X-Forwarded-Proto", value: "https")
    headers.add(name: "X-Forwarded-Host", value: "shop.example.com")
    headers.add(name: "Via", value: "1.1 ingress")
    return headers
}()

/// A typical dynamic HTML response from an application server behind the proxy.
let appResponseHeaders: HTTPHeaders = [
    "Date": "Sat, 28 Nov 2026 12:00:00 GMT",
    "Content-Type": "text/html; charset=utf-8",
    "Content-Length": "18342",
    "Connection": "keep-alive",
    "Keep-Alive": "timeout=5",
    "Cache-Control": "private, no-cache",
    "ETag": "W/\"47a6-2c1b3f0a\"",
    "Vary": "Accept-Encoding, Cookie",
    "Set-Cookie": "session=8f14e45fceea167a5a36dedd4bea2543; Path=/; HttpOnly; Secure; SameSite=Lax",
    "X-Request-Id": "4bf92f3577b34da6a3ce929d0e0e4736",
]

/// A streamed response the upstream chunks, with a hop-by-hop header it names in `Connection`.
let chunkedResponseHeaders: HTTPHeaders = [
    "Date": "Sat, 28 Nov 2026 12:00:00 GMT",
    "Content-Type": "application/json",
    "Transfer-Encoding": "chunked",
    "Connection": "keep-alive, X-Upstream-Trace",
    "X-Upstream-Trace": "node-3",
    "Cache-Control": "no-store",
]

// MARK: - Parsing

/// Consumes the decoder's output, so nothing queues in the `EmbeddedChannel`.
final class DiscardingHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    var heads = 0
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = self.unwrapInboundIn(data) { self.heads += 1 }
    }
}

func parsingBenchmarks() {
    /// Sluice's parser turning one request's bytes into a head (fields as strings) and its end,
    /// then into NIO's `HTTPHeaders`, as `HTTP1ServerCodec` does per request.
    Benchmark("HTTP1Parser.browserGET") { benchmark in
        var parser = HTTP1Parser(kind: .request, limits: .init(maxHeadBytes: 33 * 1024))
        let bytes = Array(browserRequest.utf8)
        var heads = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            bytes.withUnsafeBytes { raw in
                var offset = 0
                while true {
                    let (event, consumed) = parser.next(UnsafeRawBufferPointer(rebasing: raw[offset...]))
                    offset += consumed
                    switch event {
                    case .requestHead(let head, _):
                        blackHole(HTTPHeaders(head.fields))
                        heads += 1
                    case .end:
                        return
                    case .needMore, .responseHead, .interimHead, .body, .error:
                        preconditionFailure("a whole GET parses to a head and an end: \(event)")
                    }
                }
            }
        }
        benchmark.stopMeasurement()
        precondition(heads == benchmark.scaledIterations.count, "every request parsed: \(heads)")
    }

    /// NIO's llhttp-based decoder turning one request's bytes into head and end (what the proxy
    /// used before its own parser; the buffer the socket read into is not counted).
    Benchmark("HTTP1Decoder.browserGET") { benchmark in
        let channel = EmbeddedChannel()
        let sink = DiscardingHandler()
        do {
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
            try channel.pipeline.syncOperations.addHandler(sink)
        } catch {
            benchmark.error("pipeline setup failed: \(error)")
            return
        }
        let bytes = ByteBuffer(string: browserRequest)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            channel.pipeline.fireChannelRead(bytes)
        }
        benchmark.stopMeasurement()
        precondition(sink.heads == benchmark.scaledIterations.count, "every request parsed: \(sink.heads)")
        _ = try? channel.finish()
    }
}

// MARK: - RequestRules

func requestRulesBenchmarks() {
    /// The checks every request head passes before anything goes upstream.
    Benchmark("RequestRules.check.browserGET") { benchmark in
        let head = RequestRules.Head(method: "GET", uri: "/account/orders?page=2&sort=date", versionMajor: 1, versionMinor: 1)
        let defaults = SluiceConfig().http
        let limits = RequestRules.Limits(maxHeaderBytes: defaults.maxHeaderBytes, maxBodyBytes: defaults.maxBodyBytes)
        for _ in benchmark.scaledIterations {
            blackHole(RequestRules.check(head, headers: browserHeaders, headerBytes: 808, limits: limits))
        }
    }
}

// MARK: - HeaderRules

func headerRulesBenchmarks() {
    /// The request head rewrite for the upstream: hop-by-hop removal, `X-Forwarded-*`, `Via`.
    /// Includes the copy-on-write of the headers, as the proxy pays it (`var headers = head.headers`).
    Benchmark("HeaderRules.rewriteRequest.browserGET") { benchmark in
        for _ in benchmark.scaledIterations {
            var headers = browserHeaders
            HeaderRules.rewriteRequest(&headers, clientAddress: "198.51.100.23", scheme: .http, upstreamAuthority: "10.0.0.5:8080")
            blackHole(headers)
        }
    }

    /// The same behind an ingress: `X-Forwarded-For` and `Via` are appended to, not added.
    Benchmark("HeaderRules.rewriteRequest.behindIngress") { benchmark in
        for _ in benchmark.scaledIterations {
            var headers = ingressHeaders
            HeaderRules.rewriteRequest(&headers, clientAddress: "10.1.2.3", scheme: .http, upstreamAuthority: "10.0.0.5:8080")
            blackHole(headers)
        }
    }

    /// The response head rewrite for the client: hop-by-hop removal and `Via`.
    Benchmark("HeaderRules.rewriteResponse.keepAlive200") { benchmark in
        for _ in benchmark.scaledIterations {
            var headers = appResponseHeaders
            blackHole(HeaderRules.rewriteResponse(&headers))
            blackHole(headers)
        }
    }

    /// A chunked response naming an extra hop-by-hop header in `Connection`.
    Benchmark("HeaderRules.rewriteResponse.chunked") { benchmark in
        for _ in benchmark.scaledIterations {
            var headers = chunkedResponseHeaders
            blackHole(HeaderRules.rewriteResponse(&headers))
            blackHole(headers)
        }
    }
}
