import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SluiceCore
import Testing

@testable import SluiceProxy

/// `DownstreamHTTP1Handler` between two `EmbeddedChannel`s: the client side (`HTTP1ServerCodec` in
/// front of the handler) and one parked upstream connection (`HTTP1ClientCodec` behind
/// `UpstreamHTTP1Handler`), as in production. Every byte on both wires is asserted; no sockets, no clock waits.
@Suite("Downstream handler on EmbeddedChannel")
struct DownstreamHandlerTests {
    final class Harness {
        let loop = EmbeddedEventLoop()
        let context: LoopContext
        let client: EmbeddedChannel
        let upstream: EmbeddedChannel

        init(_ configure: (inout SluiceConfig) -> Void = { _ in }) throws {
            var config = SluiceConfig()
            config.upstreams = [UpstreamURL(host: "127.0.0.1", port: 3000)]
            config.drain.idleQuietPeriod = .zero
            configure(&config)
            config.applyShortForm()
            self.context = LoopContext(index: 0, eventLoop: self.loop, config: config, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }) { _ in }

            self.upstream = EmbeddedChannel(loop: self.loop)
            try self.upstream.pipeline.syncOperations.addHandler(HTTP1ClientCodec(maxHeadBytes: HTTP1EndpointPool.maxResponseHeadBytes))
            let context = self.context
            let upstreamChannel = self.upstream
            _ = (context.routing.groups[0].pools[0] as! HTTP1EndpointPool).adoptIdle(now: .now()) { id in
                let handler = UpstreamHTTP1Handler(id: id)
                try! upstreamChannel.pipeline.syncOperations.addHandler(handler)
                return handler
            }
            _ = context
            try self.upstream.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 3000)).wait()

            self.client = EmbeddedChannel(loop: self.loop)
            try self.client.pipeline.syncOperations.addHandler(HTTP1ServerCodec(maxHeadBytes: config.http.maxHeaderBytes + 1024))
            // As in production: the connection is registered at accept (by the protocol detector there)
            // and the HTTP/1 handler takes over the entry.
            let id = self.context.register(AcceptedConnection(), protocol: .http1, peer: "10.0.0.7:40000")
            try self.client.pipeline.syncOperations.addHandler(DownstreamHTTP1Handler(loop: self.context, adopting: (id, "10.0.0.7"), scheme: .http))
            try self.client.connect(to: SocketAddress(ipAddress: "10.0.0.7", port: 40000)).wait()
        }

        func clientSends(_ text: String) throws { try self.client.writeInbound(ByteBuffer(string: text)) }
        func upstreamSends(_ text: String) throws { try self.upstream.writeInbound(ByteBuffer(string: text)) }
        func clientReceived() throws -> String { try Self.drain(self.client) }
        func upstreamReceived() throws -> String { try Self.drain(self.upstream) }

        static func drain(_ channel: EmbeddedChannel) throws -> String {
            var text = ""
            while let data = try channel.readOutbound(as: IOData.self) {
                guard case .byteBuffer(let buffer) = data else { preconditionFailure("no file regions here") }
                text += String(buffer: buffer)
            }
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }

        /// The one endpoint's pool of the one group.
        var pool: HTTP1EndpointPool { self.context.routing.groups[0].pools[0] as! HTTP1EndpointPool }

        var idleUpstreams: Int { self.pool.counts().idle }
    }

    /// A keep-alive exchange: the request goes upstream rewritten, the response comes back with
    /// `Via`, both connections stay open and the upstream connection is parked again.
    @Test func keepAliveExchangeReusesTheUpstreamConnection() throws {
        let h = try Harness()
        try h.clientSends("GET /a HTTP/1.1\r\nHost: app\r\nConnection: keep-alive\r\n\r\n")
        #expect(try h.upstreamReceived() == "GET /a HTTP/1.1\r\nHost: app\r\nx-forwarded-for: 10.0.0.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: app\r\nvia: 1.1 sluice\r\n\r\n")
        #expect(h.idleUpstreams == 0)
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok")
        #expect(try h.clientReceived() == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nvia: 1.1 sluice\r\n\r\nok")
        #expect(h.client.isActive)
        #expect(h.idleUpstreams == 1)
    }

    /// Bytes of a request head that has not arrived whole start the header timeout (the drain then
    /// does not take the connection for an idle one); the whole head ends it, and so does the answer.
    @Test func partialRequestHeadStartsTheHeaderTimeout() throws {
        let h = try Harness()
        let id = try #require(try h.client.pipeline.syncOperations.handler(type: DownstreamHTTP1Handler.self).id)
        #expect(h.context.table[id]?.readingHeadSince == nil)
        try h.clientSends("GET /a HTTP/1.1\r\nHo")
        #expect(h.context.table[id]?.readingHeadSince != nil)
        #expect(h.context.table[id]?.state == .active)
        try h.clientSends("st: app\r\n\r\n")
        #expect(h.context.table[id]?.readingHeadSince == nil)
        #expect(h.context.table[id]?.inFlight == 1)
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        #expect(try h.clientReceived().hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(h.context.table[id]?.state == .idle)
        // A read that completes a request and brings no byte of the next leaves the connection idle.
        try h.clientSends("GET /b HTTP/1.1\r\nHost: app\r\n\r\n")
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        #expect(h.context.table[id]?.state == .idle)
    }

    /// NIO's headers report the names the rules act on exactly as the rules' default (one
    /// `contains(name:)` per name) does, in any case, and count `Host` fields.
    @Test(arguments: [
        [String](),
        ["Host: a"],
        ["HOST: a", "host: b"],
        ["Content-Length: 3", "Transfer-Encoding: chunked", "connection: close", "Expect: 100-continue"],
        ["X-Forwarded-For: 1.2.3.4", "x-forwarded-proto: https", "X-FORWARDED-HOST: h", "Via: 1.0 x"],
        ["Keep-Alive: 5", "Proxy-Connection: x", "TE: trailers", "Trailer: X", "Upgrade: h2c", "Proxy-Authenticate: B", "Proxy-Authorization: B"],
        ["Hosts: a", "Vía: x", "te2: x", "Content-Lengths: 3", "Accept: */*", "x-forwarded-fox: 1"],
    ])
    func presentNamesOfNIOHeadersMatchTheRulesDefault(_ lines: [String]) {
        let headers = HTTPHeaders(lines.map { line in
            let colon = line.firstIndex(of: ":")!
            return (String(line[..<colon]), String(line[line.index(colon, offsetBy: 2)...]))
        })
        struct ByContains: HeaderFields {
            var headers: HTTPHeaders
            func contains(name: String) -> Bool { self.headers.contains(name: name) }
            func tokens(name: String) -> [Substring] { self.headers.tokens(name: name) }
            func first(name: String) -> String? { self.headers.first(name: name) }
            mutating func add(name: String, value: String) {}
            mutating func replaceOrAdd(name: String, value: String) {}
            mutating func remove(name: String) {}
        }
        var expected = ByContains(headers: headers).presentNames()
        if headers["host"].count == 1 { expected.insert(.hostOnce) }
        #expect(headers.presentNames() == expected)
        #expect(headers.presentNamesAndSize().present == expected)
        #expect(headers.presentNamesAndSize().bytes == lines.reduce(0) { $0 + $1.utf8.count + 2 })
    }

    /// Pipelined requests: the second waits until the first response has ended, then goes out on the same upstream connection.
    @Test func pipelinedRequestsAreForwardedOneAtATime() throws {
        let h = try Harness()
        try h.clientSends("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
        let first = try h.upstreamReceived()
        #expect(first.hasPrefix("GET /1 HTTP/1.1\r\n"))
        #expect(!first.contains("GET /2"))
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        #expect(try h.upstreamReceived().hasPrefix("GET /2 HTTP/1.1\r\n"))
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        #expect(try h.clientReceived() == "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nvia: 1.1 sluice\r\n\r\n1HTTP/1.1 200 OK\r\nContent-Length: 1\r\nvia: 1.1 sluice\r\n\r\n2")
    }

    /// Bad bytes pipelined behind a good request: its response comes first, then a 400, then the close.
    @Test func malformedPipelinedRequestIsAnsweredAfterTheOneBeforeIt() throws {
        let h = try Harness()
        try h.clientSends("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost : a\r\n\r\n")
        #expect(try h.upstreamReceived().hasPrefix("GET /1 HTTP/1.1\r\n"))
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        let text = try h.clientReceived()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nvia: 1.1 sluice\r\n\r\n1HTTP/1.1 400 Bad Request\r\n"), "\(text)")
        #expect(text.hasSuffix("\r\n\r\nmalformed request: whitespace before colon\n"), "\(text)")
        #expect(try h.upstreamReceived() == "")
        #expect(!h.client.isActive)
    }

    /// A chunked body that breaks the framing after its head went upstream: the upstream
    /// connection is dropped and the client gets a 400 (its response had not begun).
    @Test func malformedChunkedBodyAfterTheHeadIsA400() throws {
        let h = try Harness()
        try h.clientSends("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        #expect(try h.upstreamReceived().hasSuffix("\r\n\r\n3\r\nabc\r\n"))
        try h.clientSends("zz\r\n")
        let text = try h.clientReceived()
        #expect(text.hasPrefix("HTTP/1.1 400 Bad Request\r\n"), "\(text)")
        #expect(text.hasSuffix("malformed request: invalid chunk size\n"), "\(text)")
        #expect(!h.upstream.isActive)
        #expect(!h.client.isActive)
    }

    /// `Expect: 100-continue` is answered by Sluice; the upstream never sees `Expect` and gets the body.
    @Test func expectContinueIsAnsweredAndStripped() throws {
        let h = try Harness()
        try h.clientSends("PUT /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        #expect(try h.clientReceived() == "HTTP/1.1 100 Continue\r\n\r\n")
        let head = try h.upstreamReceived()
        #expect(head.hasPrefix("PUT /u HTTP/1.1\r\n"))
        #expect(!head.lowercased().contains("expect"))
        try h.clientSends("abc")
        #expect(try h.upstreamReceived() == "abc")
    }

    /// During propagation, once the connection's moment has come, the response carries
    /// `Connection: close` and the connection closes after it.
    @Test func responseCarriesConnectionCloseDuringPropagation() throws {
        let h = try Harness()
        h.context.beginPropagating(until: .now())
        try h.clientSends("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = try h.upstreamReceived()
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(try h.clientReceived() == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nvia: 1.1 sluice\r\nconnection: close\r\n\r\n")
        #expect(!h.client.isActive)
    }

    /// When draining begins, a quiet idle connection is closed at once; a busy one finishes first.
    @Test func drainClosesIdleConnectionsAndLetsBusyOnesFinish() throws {
        let idle = try Harness()
        try idle.clientSends("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = try idle.upstreamReceived()
        try idle.upstreamSends("HTTP/1.1 204 No Content\r\n\r\n")
        _ = try idle.clientReceived()
        idle.context.beginDraining()
        #expect(!idle.client.isActive)

        let busy = try Harness()
        try busy.clientSends("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        busy.context.beginDraining()
        #expect(busy.client.isActive)
        try busy.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        #expect(try busy.clientReceived().contains("connection: close\r\n"))
        #expect(!busy.client.isActive)
    }

    /// The upstream connection closes before any response: 502 with a plain-text body; the client stays connected.
    @Test func upstreamClosingBeforeTheResponseIsA502() throws {
        let h = try Harness()
        try h.clientSends("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        _ = try h.upstreamReceived()
        try h.upstream.close().wait()
        let text = try h.clientReceived()
        #expect(text.hasPrefix("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n"))
        #expect(text.hasSuffix("upstream closed before responding: connection closed\n"))
        #expect(h.client.isActive)
    }

    /// A response that breaks the framing rules (two different lengths) is a 502, and the
    /// upstream connection is dropped rather than parked.
    @Test func malformedUpstreamResponseIsA502() throws {
        let h = try Harness()
        try h.clientSends("GET /m HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = try h.upstreamReceived()
        try? h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
        let text = try h.clientReceived()
        #expect(text.hasPrefix("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n"), "\(text)")
        #expect(text.hasSuffix("upstream sent an invalid response: differing Content-Length values\n"), "\(text)")
        #expect(!h.upstream.isActive)
        #expect(h.idleUpstreams == 0)
    }

    /// No response head within the response-header timeout: 504.
    @Test func slowUpstreamIsA504() throws {
        let h = try Harness()
        try h.clientSends("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = try h.upstreamReceived()
        h.context.routing.sweep(now: MonotonicInstant.now().advanced(by: .seconds(61)))
        #expect(try h.clientReceived().hasPrefix("HTTP/1.1 504 Gateway Timeout\r\n"))
        #expect(!h.upstream.isActive)
    }

    /// The upstream fails after the response began: the client connection is aborted, not ended.
    @Test func upstreamFailureMidResponseAbortsTheClient() throws {
        let h = try Harness()
        try h.clientSends("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        _ = try h.upstreamReceived()
        try h.upstreamSends("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        #expect(try h.clientReceived() == "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nvia: 1.1 sluice\r\n\r\nabc")
        try h.upstream.close().wait()
        #expect(!h.client.isActive)
    }

    struct Rejection: Sendable, CustomTestStringConvertible {
        var request: String
        var statusLine: String
        var testDescription: String { self.statusLine }
    }

    /// Each bad request is answered by the handler itself, with `Connection: close`, and nothing reaches the upstream.
    @Test(arguments: [
        Rejection(request: "GET / HTTP/1.1\r\n\r\n", statusLine: "HTTP/1.1 400 Bad Request"),
        Rejection(request: "GET / HTTP/1.1\r\nHost: a\r\nX: \(String(repeating: "y", count: 40_000))\r\n\r\n", statusLine: "HTTP/1.1 431 Request Header Fields Too Large"),
        Rejection(request: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n", statusLine: "HTTP/1.1 413 Payload Too Large"),
        Rejection(request: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", statusLine: "HTTP/1.1 405 Method Not Allowed"),
        Rejection(request: "GET http://elsewhere/ HTTP/1.1\r\nHost: a\r\n\r\n", statusLine: "HTTP/1.1 403 Forbidden"),
        Rejection(request: "GET / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n", statusLine: "HTTP/1.1 417 Expectation Failed"),
        Rejection(request: "NOT HTTP AT ALL\r\n\r\n", statusLine: "HTTP/1.1 400 Bad Request"),
    ])
    func badRequestsAreRejectedLocally(_ rejection: Rejection) throws {
        let h = try Harness { $0.http.maxBodyBytes = 1024 }
        do {
            try h.clientSends(rejection.request)
        } catch {
            // The decoder's error also surfaces here; the handler has answered it already.
        }
        let text = try h.clientReceived()
        #expect(text.hasPrefix(rejection.statusLine + "\r\n"), "\(text.prefix(120))")
        #expect(text.contains("connection: close\r\n"))
        #expect(try h.upstreamReceived() == "")
        #expect(!h.client.isActive)
    }
}

/// Stands in for the protocol detector's table entry until the HTTP/1 handler adopts it.
private final class AcceptedConnection: DownstreamConnection {
    func close() {}
}
