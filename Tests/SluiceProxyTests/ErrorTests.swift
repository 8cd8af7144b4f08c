import AsyncHTTPClient
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import Testing

@testable import SluiceProxy

@Suite("Errors and timeouts over loopback")
struct ErrorTests {
    /// A port on 127.0.0.1 that refuses connections for as long as the returned socket is open:
    /// bound but not listening, so no other test can be handed the same port meanwhile.
    static func refusingPort() throws -> (port: Int, socket: Int32) {
        let fd = LoopbackSocket.make()
        guard let port = LoopbackSocket.bind(fd, port: 0) else { preconditionFailure("bind() failed") }
        return (port, fd)
    }

    /// Upstream refuses the connection: 502 with a plain-text body, and the client connection stays usable.
    @Test func refusedUpstreamGives502() async throws {
        let (port, holder) = try Self.refusingPort()
        defer { close(holder) }
        let proxy = try await ProxyHarness.start(upstreams: ["http://127.0.0.1:\(port)"])
        defer { Task { await proxy.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, closed) = try await client.exchange("GET / HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(!closed)
        #expect(text.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
        #expect(text.contains("content-type: text/plain; charset=utf-8\r\n"))
        #expect(text.contains("upstream connect failed: http://127.0.0.1:\(port)"))
        let (again, _) = try await client.exchange("GET / HTTP/1.1\r\nHost: a\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(again.hasPrefix("HTTP/1.1 502 Bad Gateway\r\n"))
    }

    /// One dead and one live upstream: the connect failure is retried on the other upstream, so every request succeeds.
    @Test func refusedConnectIsRetriedOnAnotherUpstream() async throws {
        let (dead, holder) = try Self.refusingPort()
        defer { close(holder) }
        let live = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: ["http://127.0.0.1:\(dead)", live.url])
        defer { Task { await proxy.stop(); await live.stop() } }

        for _ in 0..<6 {
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: proxy.url + "/hello"), timeout: .seconds(10))
            #expect(response.status == .ok)
            #expect(String(buffer: try await response.body.collect(upTo: 100)) == "hello")
        }
    }

    /// The upstream is slower than the response-header timeout: 504.
    @Test func slowUpstreamGives504() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.upstream.responseHeaderTimeout = .milliseconds(300) }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: proxy.url + "/slow-head?ms=3000"), timeout: .seconds(10))
        #expect(response.status == .gatewayTimeout)
        #expect(String(buffer: try await response.body.collect(upTo: 1000)) == "upstream did not send a response head in time\n")
    }

    /// The upstream dies after sending part of a body: the client's connection is aborted, never
    /// handed a truncated body as complete (curl reports a transfer closed with bytes outstanding).
    @Test func upstreamResetMidBodyAbortsTheClientConnection() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let result = try await Curl.run(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", proxy.url + "/reset-mid-body"])
        #expect(result.exitCode == 18)  // CURLE_PARTIAL_FILE
        #expect(result.stdout == "200 1000")
    }

    /// A client that sends half a request head and stalls is disconnected at the header timeout.
    @Test func slowClientIsDisconnectedAtTheHeaderTimeout() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.http.requestHeaderTimeout = .milliseconds(1500) }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        let start = ContinuousClock.now
        try await client.send("GET /hello HTTP/1.1\r\nHo")
        let text = try await client.waitForClose(timeout: .seconds(5))
        // Nothing of a response had gone out: the client is told why (408), then the connection closes.
        let body = "request head not received within 1500ms\n"
        #expect(text == "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\nconnection: close\r\n\r\n\(body)")
        #expect(ContinuousClock.now - start >= .milliseconds(1400))

        // A connection that sends nothing at all is closed the same way.
        let silent = try await RawClient.connect(port: proxy.port)
        #expect(try await silent.waitForClose(timeout: .seconds(5)) == "")
    }

    struct BadRequestCase: Sendable, CustomTestStringConvertible {
        var name: String
        var request: String
        var status: String
        var body: String
        var testDescription: String { self.name }
    }

    static let badRequests: [BadRequestCase] = [
        .init(name: "malformed request line", request: "GET\r\n\r\n", status: "400 Bad Request", body: "malformed request"),
        .init(name: "HTTP/2.0 request line", request: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", status: "400 Bad Request", body: "unsupported HTTP version\n"),
        .init(name: "space before colon", request: "GET / HTTP/1.1\r\nHost : a\r\n\r\n", status: "400 Bad Request", body: "malformed request: whitespace before colon\n"),
        .init(name: "obsolete line folding", request: "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", status: "400 Bad Request", body: "malformed request: obsolete line folding\n"),
        .init(
            name: "chunked twice", request: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", status: "400 Bad Request",
            body: "malformed request: unsupported Transfer-Encoding\n"
        ),
        .init(
            name: "HTTP/1.0 with Transfer-Encoding", request: "POST /digest HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            status: "400 Bad Request", body: "malformed request: Transfer-Encoding in an HTTP/1.0 request\n"
        ),
        .init(name: "signed Content-Length", request: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", status: "400 Bad Request", body: "malformed request: invalid Content-Length\n"),
        .init(
            name: "chunk data without its CRLF", request: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            status: "400 Bad Request", body: "malformed request: missing CRLF after chunk data\n"
        ),
        .init(name: "missing Host", request: "GET / HTTP/1.1\r\n\r\n", status: "400 Bad Request", body: "missing Host header\n"),
        .init(name: "two Host headers", request: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", status: "400 Bad Request", body: "more than one Host header\n"),
        .init(
            name: "headers over the limit", request: "GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: 40000))\r\n\r\n",
            status: "431 Request Header Fields Too Large", body: "request header fields exceed 32768 bytes\n"
        ),
        .init(
            name: "declared body over the limit", request: "POST /digest HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n",
            status: "413 Payload Too Large", body: "request body exceeds 1024 bytes\n"
        ),
        .init(
            name: "chunked body over the limit",
            request: "POST /digest HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n\(String(repeating: "b", count: 2048))\r\n0\r\n\r\n",
            status: "413 Payload Too Large", body: "request body exceeds 1024 bytes\n"
        ),
        .init(name: "CONNECT", request: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", status: "405 Method Not Allowed", body: "CONNECT is not supported: Sluice is a reverse proxy\n"),
        .init(
            name: "absolute form for another host", request: "GET http://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", status: "403 Forbidden",
            body: "absolute-form target for another host: Sluice is not a forward proxy\n"
        ),
        .init(name: "unsupported Expect", request: "GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", status: "417 Expectation Failed", body: "only Expect: 100-continue is supported\n"),
        .init(
            name: "Content-Length with Transfer-Encoding", request: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            status: "400 Bad Request", body: ""
        ),
    ]

    /// Each kind of bad request gets its status, a short plain-text body, and `Connection: close`.
    @Test(arguments: Self.badRequests)
    func badRequestsGetTheirStatus(_ bad: BadRequestCase) async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url]) { $0.http.maxBodyBytes = 1024 }
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange(bad.request) { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 \(bad.status)\r\n"), "\(text.prefix(200))")
        #expect(text.contains("connection: close\r\n"))
        #expect(text.contains("content-type: text/plain; charset=utf-8\r\n"))
        if !bad.body.isEmpty {
            let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            #expect(body.hasPrefix(bad.body), "\(body)")
        }
        // The client connection is closed after an error response to bad input.
        let rest = try await client.waitForClose(timeout: .seconds(5))
        #expect(rest == "")
    }

    /// An absolute-form target naming the Host header's own host is forwarded in origin form.
    @Test func absoluteFormForTheSameHostIsForwarded() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        let client = try await RawClient.connect(port: proxy.port)
        defer { Task { await client.close() } }
        let (text, _) = try await client.exchange("GET http://a.example/headers?q=1 HTTP/1.1\r\nHost: a.example\r\n\r\n") { $0.hasCompleteResponses(1) }
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("GET /headers?q=1 HTTP/1.1\n"))
    }
}
