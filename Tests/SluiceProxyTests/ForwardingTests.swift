import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

@Suite("Forwarding over loopback")
struct ForwardingTests {
    /// A GET reaches the upstream with forwarding headers set and hop-by-hop headers removed, and
    /// the response comes back with `Via`.
    @Test func getIsForwardedWithRewrittenHeaders() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        var request = HTTPClientRequest(url: proxy.url + "/headers?x=1")
        request.headers.add(name: "Connection", value: "keep-alive, X-Secret")
        request.headers.add(name: "X-Secret", value: "hop")
        request.headers.add(name: "Keep-Alive", value: "timeout=5")
        request.headers.add(name: "X-Forwarded-For", value: "203.0.113.7")
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        #expect(response.status == .ok)
        #expect(response.headers["via"] == ["1.1 sluice"])
        let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
        let lines = Set(body.split(separator: "\n").map(String.init))
        #expect(body.hasPrefix("GET /headers?x=1 HTTP/1.1\n"))
        #expect(lines.contains("host: 127.0.0.1:\(proxy.port)"))
        #expect(lines.contains("x-forwarded-for: 203.0.113.7, 127.0.0.1"))
        #expect(lines.contains("x-forwarded-proto: http"))
        #expect(lines.contains("x-forwarded-host: 127.0.0.1:\(proxy.port)"))
        #expect(lines.contains("via: 1.1 sluice"))
        #expect(!body.contains("x-secret"))
        #expect(!body.contains("keep-alive"))
    }

    /// 8 MiB streams up and back unchanged (Content-Length framing), through one keep-alive connection.
    @Test func largeBodiesStreamBothWaysExactly() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let payload = patternBytes(8 << 20, offset: 7)
        var request = HTTPClientRequest(url: proxy.url + "/echo")
        request.method = .POST
        request.body = .bytes(ByteBuffer(bytes: payload))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        #expect(response.status == .ok)
        let echoed = try await response.body.collect(upTo: 16 << 20)
        #expect(echoed.readableBytes == payload.count)
        #expect(Array(echoed.readableBytesView) == payload)

        let big = try await HTTPClient.shared.execute(HTTPClientRequest(url: proxy.url + "/big?bytes=5000000"), timeout: .seconds(30))
        let bigBody = try await big.body.collect(upTo: 8 << 20)
        #expect(Array(bigBody.readableBytesView) == patternBytes(5_000_000))
    }

    /// A chunked upload of unknown length (curl, `Transfer-Encoding: chunked`) arrives whole.
    @Test func chunkedUploadWithCurlArrivesWhole() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let payload = patternBytes(3 << 20, offset: 3)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-upload-\(UUID()).bin")
        try Data(payload).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try await Curl.run(["-sS", "-H", "Transfer-Encoding: chunked", "--data-binary", "@\(file.path)", proxy.url + "/digest"])
        let expectedSum = payload.reduce(UInt64(0)) { $0 &+ UInt64($1) }
        #expect(result.exitCode == 0)
        #expect(result.stdout == "bytes=\(payload.count) sum=\(expectedSum)")
    }

    /// A 64 MiB upload while the upstream reads slowly: the proxy holds reads instead of buffering,
    /// and every byte arrives.
    @Test func uploadIsStreamedWithBackPressure() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let chunk = patternBytes(1 << 20)
        let chunks = 64
        var request = HTTPClientRequest(url: proxy.url + "/digest")
        request.method = .POST
        let sequence = AsyncStream<ByteBuffer> { continuation in
            for _ in 0..<chunks { continuation.yield(ByteBuffer(bytes: chunk)) }
            continuation.finish()
        }
        request.body = .stream(sequence, length: .known(Int64(chunk.count * chunks)))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
        let body = String(buffer: try await response.body.collect(upTo: 1024))
        let sum = chunk.reduce(UInt64(0)) { $0 &+ UInt64($1) } &* UInt64(chunks)
        #expect(body == "bytes=\(chunk.count * chunks) sum=\(sum)")
    }

    /// Two pipelined requests in one write get two responses, in order, on the same connection.
    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, closed) = try await client.exchange(
            "GET /slow-head?ms=100 HTTP/1.1\r\nHost: a\r\n\r\nGET /hello HTTP/1.1\r\nHost: a\r\n\r\n"
        ) { $0.hasCompleteResponses(2) }
        #expect(!closed)
        let first = try #require(text.range(of: "slow"))
        let second = try #require(text.range(of: "hello"))
        #expect(first.lowerBound < second.lowerBound)
        #expect(text.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
    }

    /// A pipelined POST with a body and the GET behind it are both answered, in order: the second
    /// request waits in the queue while the first one's body streams upstream.
    @Test func pipelinedRequestWithABodyIsAnsweredBeforeTheNext() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange(
            "POST /digest HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /hello HTTP/1.1\r\nHost: a\r\n\r\n"
        ) { $0.hasCompleteResponses(2) }
        let digest = try #require(text.range(of: "bytes=3 sum=294"))
        let hello = try #require(text.range(of: "hello"))
        #expect(digest.lowerBound < hello.lowerBound)
    }

    /// A client that half-closes right after its request (as `nc` does) still gets the whole
    /// response, then the connection closes.
    @Test func halfClosedClientStillGetsItsResponse() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        try await client.send("GET /slow-head?ms=200 HTTP/1.1\r\nHost: a\r\n\r\n")
        try await client.closeOutput()
        let text = try await client.waitForClose()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.hasSuffix("\r\n\r\nslow"))
    }

    /// `Expect: 100-continue`: Sluice answers `100 Continue` itself, then forwards the body.
    @Test func expectContinueIsAnsweredBeforeTheBody() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (interim, _) = try await client.exchange(
            "POST /digest HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        ) { $0.contains("\r\n\r\n") }
        #expect(interim == "HTTP/1.1 100 Continue\r\n\r\n")
        let (final, _) = try await client.exchange("hello") { $0.hasCompleteResponses(1) }
        #expect(final.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(final.hasSuffix("bytes=5 sum=532"))
    }

    /// An HTTP/1.0 client gets an HTTP/1.0 response and the connection closes after it.
    @Test func http10ClientIsServedAndClosed() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        let (text, closed) = try await client.exchange("GET /hello HTTP/1.0\r\n\r\n") { _ in false }
        #expect(closed)
        #expect(text.hasPrefix("HTTP/1.0 200 OK\r\n"))
        #expect(text.lowercased().contains("connection: close\r\n"))
        #expect(text.hasSuffix("\r\n\r\nhello"))
    }

    /// Requests are spread round-robin over the upstreams.
    @Test func upstreamsAreUsedRoundRobin() async throws {
        let a = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let b = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [a.url, b.url])
        defer { Task { await proxy.stop(); await a.stop(); await b.stop() } }

        var seen: [String] = []
        for _ in 0..<4 {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: proxy.url + "/headers"), timeout: .seconds(10))
            let body = String(buffer: try await response.body.collect(upTo: 1 << 16))
            _ = body
            seen.append(response.status.code == 200 ? "ok" : "fail")
        }
        #expect(seen == ["ok", "ok", "ok", "ok"])
        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.contains("\"url\":\"\(a.url)\""))
        #expect(status.contains("\"url\":\"\(b.url)\""))
        #expect(status.contains("\"2xx\":4"))
    }
}
