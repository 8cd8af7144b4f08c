import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceCore
import SluiceHTTP2
import SluiceTestSupport
import Synchronization
import Testing

@testable import SluiceProxy

/// `--upstream h2c://`: HTTP/1.1 and HTTP/2 clients through the real ``ProxyServer`` to an HTTP/2
/// upstream (gRPC interop with grpcio is in Tests/e2e/test_grpc_h2c.py). The upstream here reports
/// what it received, so the request's translation is asserted exactly.
@Suite("h2c upstreams over loopback", .serialized)
struct HTTP2UpstreamTests {
    static func withProxy(_ body: (ProxyHarness, H2CUpstream) async throws -> Void) async throws {
        let upstream = try await H2CUpstream.start()
        try await ProxyHarness.withProxy(upstreams: ["h2c://127.0.0.1:\(upstream.port)"], cleanup: upstream.stop) { try await body($0, upstream) }
    }

    /// An HTTP/1.1 client (curl) reaches the h2c upstream: pseudo-headers from the request line and
    /// Host, hop-by-hop fields gone, the body echoed, and the upstream's trailers arrive in the
    /// chunked response.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.curl), "needs /usr/bin/curl"))
    func http1ClientToH2CUpstream() async throws {
        try await Self.withProxy { proxy, _ in
            let headers = FileManager.default.temporaryDirectory.appendingPathComponent("h2c-headers-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: headers) }
            let post = try await Curl.run([
                "-sS", "--http1.1", "-D", headers, "-H", "Connection: keep-alive, x-drop", "-H", "x-drop: 1", "-H", "TE: trailers",
                "--data-binary", "payload-123", proxy.url + "/submit?q=1",
            ])
            #expect(post.exitCode == 0, "\(post.stderr)")
            #expect(post.stdout == "payload-123")
            let dump = try String(contentsOfFile: headers, encoding: .utf8).replacingOccurrences(of: "\r\n", with: "\n")
            #expect(dump.hasPrefix("HTTP/1.1 200 OK\n"), "\(dump)")
            #expect(dump.contains("x-method: POST\n"))
            #expect(dump.contains("x-path: /submit?q=1\n"))
            #expect(dump.contains("x-scheme: http\n"))
            #expect(dump.contains("x-authority: 127.0.0.1:\(proxy.port)\n"))
            #expect(dump.contains("x-forwarded-for: 127.0.0.1\n"))
            #expect(!dump.contains("x-drop"), "a field named in Connection is hop-by-hop: \(dump)")
            #expect(dump.contains("transfer-encoding: chunked\n"))
            #expect(dump.contains("via: 2 sluice\n"), "the response was received over HTTP/2: \(dump)")
            // The upstream's trailers, after the body.
            #expect(dump.contains("grpc-status: 0\n"), "\(dump)")
            #expect(dump.contains("x-request-trailers: -\n"))
        }
    }

    /// An HTTP/2 client (nghttp) with request trailers and `te: trailers`: both reach the h2c upstream,
    /// and the upstream's response trailers come back as HTTP/2 trailers.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.nghttp), "needs /usr/bin/nghttp (apt install nghttp2-client)"))
    func http2ClientWithTrailersToH2CUpstream() async throws {
        try await Self.withProxy { proxy, _ in
            let body = HTTP2Tools.body(size: 200_003)
            let file = try ProcessRunner.temporaryFile(body, name: "body")
            defer { try? FileManager.default.removeItem(atPath: file) }
            let result = try await HTTP2Tools.run(
                HTTP2Tools.nghttp,
                ["-v", "-d", file, "-H", "te: trailers", "--trailer", "x-checksum: abc123", proxy.url + "/grpc.Service/Method"]
            )
            #expect(result.exitCode == 0, "\(result.stderr)")
            let received = Self.receivedFields(result.stdout)
            #expect(received.contains("x-te: trailers"), "\(received)")
            #expect(received.contains("x-method: POST"))
            #expect(received.contains("x-path: /grpc.Service/Method"))
            #expect(received.contains("x-request-trailers: x-checksum=abc123"))
            #expect(received.contains("x-body-bytes: \(body.count)"))
            #expect(received.contains("grpc-status: 0"))
            #expect(received.contains("grpc-message: fine"))
        }
    }

    /// Many streams from one HTTP/2 client are multiplexed on one upstream connection.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.h2load), "needs /usr/bin/h2load (apt install nghttp2-client)"))
    func streamsShareOneUpstreamConnection() async throws {
        try await Self.withProxy { proxy, upstream in
            let load = try await HTTP2Tools.run(HTTP2Tools.h2load, ["-n", "2000", "-c", "4", "-m", "16", proxy.url + "/x"])
            #expect(load.exitCode == 0, "\(load.stderr)")
            #expect(load.stdout.contains("2000 succeeded, 0 failed, 0 errored"), "\(load.stdout)")
            #expect(upstream.connectionsAccepted.value == 1)
            #expect(upstream.streamsServed.value == 2000)
        }
    }

    /// HTTP/2 request trailers reach an HTTP/1.1 upstream in the chunked request body.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.nghttp), "needs /usr/bin/nghttp (apt install nghttp2-client)"))
    func http2RequestTrailersReachAnHTTP1Upstream() async throws {
        let upstream = try await TrailerEchoUpstream.start()
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        let file = try ProcessRunner.temporaryFile(Data("abc".utf8), name: "body")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let result = try await HTTP2Tools.run(HTTP2Tools.nghttp, ["-d", file, "--trailer", "x-checksum: 900150983cd24fb0", proxy.url + "/upload"])
        await proxy.stop()
        await upstream.stop()
        #expect(result.exitCode == 0, "\(result.stderr)")
        #expect(result.stdout == "body=abc trailers=x-checksum: 900150983cd24fb0")
    }

    /// Issue 14 item 6: interim heads from an h2c upstream (103 Early Hints with `link`) reach an HTTP/2
    /// client as HEADERS frames without END_STREAM, before the 200; more than 32 of them are a 502
    /// (the interim heads did not start the response) and the upstream stream is reset.
    @Test(.enabled(if: ProcessRunner.pythonH2Available, "needs python3 with the h2 package (pip install h2)"))
    func interimResponsesFromAnH2CUpstreamReachAnHTTP2Client() async throws {
        try await Self.withProxy { proxy, upstream in
            let hinted = try await PythonH2Script.run(port: proxy.port, ["get", "/early-hints?n=2"])
            let heads = hinted.filter { $0.type == "HEADERS" && $0.stream == 1 }
            #expect(heads.map(\.status) == ["103", "103", "200"], "\(hinted)")
            #expect(heads.prefix(2).allSatisfy { $0.end == false && $0.fields?["link"] == "</style.css>; rel=preload; as=style" })
            #expect(hinted.body(of: 1) == "hinted")

            let looping = try await PythonH2Script.run(port: proxy.port, ["get", "/only-hints?n=33"])
            let loopingHeads = looping.filter { $0.type == "HEADERS" && $0.stream == 1 }
            #expect(loopingHeads.map(\.status) == Array(repeating: "103", count: 32) + ["502"], "\(looping)")
            #expect(looping.body(of: 1).contains("interim (1xx) responses"))
            // The upstream stream is reset. (On a reused connection the shared retry policy tries a
            // bodiless GET once more; that try's first 1xx is one too many for the stream: 502 at once.)
            #expect(await ProxyHarness.eventually { upstream.streamsReset.value >= 1 }, "\(upstream.streamsReset.value) resets")
        }
    }

    /// The upstream is down: HTTP/1 and HTTP/2 clients get 502 at once, not a hang.
    @Test(.enabled(if: ProcessRunner.isExecutable(HTTP2Tools.curl), "needs /usr/bin/curl"))
    func refusedH2CUpstreamIsA502() async throws {
        let held = try ErrorTests.refusingPort()
        defer { close(held.socket) }
        let proxy = try await ProxyHarness.start(upstreams: ["h2c://127.0.0.1:\(held.port)"])
        let http1 = try await Curl.run(["-sS", "-w", "\n%{http_code}", proxy.url + "/a"])
        let http2 = try await Curl.run(["-sS", "--http2-prior-knowledge", "-w", "\n%{http_code}", proxy.url + "/a"])
        await proxy.stop()
        #expect(http1.stdout.hasSuffix("\n502"), "\(http1.stdout)")
        #expect(http2.stdout.hasSuffix("\n502"), "\(http2.stdout)")
        #expect(http2.stdout.contains("upstream connect failed"))
    }

    /// A client that stops reading stops the h2c upstream: Sluice consumes the upstream's stream window
    /// only as the client takes the bytes, so what the upstream manages to send plateaus far below the
    /// 32 MiB it wants to send (about 4 MiB here: socket buffers plus windows); once the client reads again, every byte
    /// arrives in order.
    @Test func slowClientHoldsTheUpstreamStreamWindow() async throws {
        try await Self.withProxy { proxy, upstream in
            let total = 32 << 20
            let fd = try Self.connectBlocking(port: proxy.port)
            defer { close(fd) }
            let request = "GET /big?bytes=\(total) HTTP/1.1\r\nHost: a\r\n\r\n"
            #expect(request.withCString { send(fd, $0, strlen($0), 0) } == request.utf8.count)
            // Wait for the response to start, then until the upstream's progress stops for 500 ms (bounded: 20 s).
            #expect(await ProxyHarness.eventually { upstream.bytesSent.value > 0 })
            var last = -1
            for _ in 0..<40 {
                try await Task.sleep(for: .milliseconds(500))
                let now = upstream.bytesSent.value
                if now == last { break }
                last = now
            }
            #expect(last > 0)
            #expect(last < 16 << 20, "the upstream sent \(last) bytes to a client that reads nothing")
            // Now read it all: the head, then exactly `total` pattern bytes (chunked coding removed).
            let body = try Self.readChunkedBody(fd)
            #expect(body.count == total)
            #expect(body.prefix(1000) == Data(patternBytes(1000)))
            #expect(body.suffix(1000) == Data(patternBytes(1000, offset: total - 1000)))
            #expect(upstream.bytesSent.value == total)
        }
    }

    static func connectBlocking(port: Int) throws -> Int32 {
        let fd = LoopbackSocket.make { fd in
            LoopbackSocket.setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(64 << 10))
            LoopbackSocket.setOption(fd, SOL_SOCKET, SO_RCVTIMEO, timeval(tv_sec: 20, tv_usec: 0))
        }
        guard LoopbackSocket.connect(fd, port: port) else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        return fd
    }

    /// Reads one chunked HTTP/1.1 response from a blocking socket and returns its decoded body.
    static func readChunkedBody(_ fd: Int32) throws -> Data {
        var input = Data()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        func fill() throws {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { throw POSIXError(.ECONNRESET) }
            input.append(contentsOf: buffer[0..<count])
        }
        func line() throws -> String {
            while true {
                if let end = input.firstRange(of: Data("\r\n".utf8)) {
                    let text = String(decoding: input[input.startIndex..<end.lowerBound], as: UTF8.self)
                    input.removeSubrange(input.startIndex..<end.upperBound)
                    return text
                }
                try fill()
            }
        }
        while try !line().isEmpty {}  // the head
        var body = Data()
        while true {
            guard let size = Int(try line().split(separator: ";")[0], radix: 16) else { throw POSIXError(.EBADMSG) }
            if size == 0 { break }
            while input.count < size + 2 { try fill() }
            body.append(input.prefix(size))
            input.removeFirst(size + 2)
        }
        return body
    }

    /// `name: value` of every header field nghttp -v printed as received.
    static func receivedFields(_ output: String) -> [String] {
        output.split(separator: "\n").compactMap { line in
            guard line.contains("] recv (stream_id="), let close = line.range(of: ") ") else { return nil }
            return String(line[close.upperBound...])
        }
    }
}

/// An h2c upstream built on Sluice's own ``HTTP2ServerConnectionHandler``: every response is 200 with
/// what the request carried (`x-method`, `x-scheme`, `x-authority`, `x-path`, `x-te`, forwarded
/// headers), the request body echoed (or its size, `x-body-bytes`, in the trailers when over 64 KiB),
/// and the trailers `x-request-trailers`, `grpc-status: 0`, `grpc-message: fine`. Except:
/// - `/big?bytes=N`: N pattern bytes, sent while the stream is writable;
/// - `/early-hints?n=N`: N × 103 (with a `link`), then 200 `hinted`;
/// - `/only-hints?n=N`: N × 103 and no final response (an upstream looping on 1xx).
struct H2CUpstream: Sendable {
    let server: TestServer
    let connectionsAccepted: Counter
    let streamsServed: Counter
    /// Streams the proxy reset.
    let streamsReset: Counter
    /// Body bytes of `/big` responses submitted (the upstream submits only while the stream is writable).
    let bytesSent: Counter

    static func start() async throws -> H2CUpstream {
        let connections = Counter()
        let streams = Counter()
        let sent = Counter()
        let reset = Counter()
        let server = try await TestServer.start { channel in
            connections.add()
            try channel.pipeline.syncOperations.addHandler(try HTTP2ServerConnectionHandler(delegate: Delegate(streamsServed: streams, streamsReset: reset, bytesSent: sent)))
        }
        return H2CUpstream(server: server, connectionsAccepted: connections, streamsServed: streams, streamsReset: reset, bytesSent: sent)
    }

    var port: Int { self.server.port }

    func stop() async { await self.server.stop() }

    private final class Delegate: HTTP2StreamDelegate {
        struct Request {
            var head: HTTP2RequestHead
            var body = ByteBuffer()
            var trailers: [HTTP2HeaderField] = []
        }
        let streamsServed: Counter
        let streamsReset: Counter
        let bytesSent: Counter
        var requests: [HTTP2StreamID: Request] = [:]
        /// `/big` responses: bytes still to send.
        var remaining: [HTTP2StreamID: Int] = [:]

        init(streamsServed: Counter, streamsReset: Counter, bytesSent: Counter) {
            self.streamsServed = streamsServed
            self.streamsReset = streamsReset
            self.bytesSent = bytesSent
        }

        func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler) {
            if isWritable { self.pump(streamID, on: connection) }
        }

        /// Sends `/big` pattern bytes while the stream is writable.
        private func pump(_ streamID: HTTP2StreamID, on connection: HTTP2ServerConnectionHandler) {
            guard var left = self.remaining[streamID] else { return }
            let total = left + self.bytesSentOn(streamID)
            while left > 0, connection.isWritable(streamID: streamID) {
                let count = min(left, 16_384)
                let chunk = ByteBuffer(bytes: patternBytes(count, offset: total - left))
                left -= count
                self.bytesSent.add(count)
                connection.sendData(streamID: streamID, chunk, endStream: left == 0)
            }
            self.remaining[streamID] = left > 0 ? left : nil
            self.sentOn[streamID] = total - left
        }
        private var sentOn: [HTTP2StreamID: Int] = [:]
        private func bytesSentOn(_ streamID: HTTP2StreamID) -> Int { self.sentOn[streamID] ?? 0 }

        func streamOpened(_ streamID: HTTP2StreamID, head: HTTP2RequestHead, endStream: Bool, on connection: HTTP2ServerConnectionHandler) {
            self.requests[streamID] = Request(head: head)
            if endStream { self.respond(streamID, on: connection) }
        }

        func streamDataReceived(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ServerConnectionHandler) {
            var data = data
            self.requests[streamID]?.body.writeBuffer(&data)
            connection.consumed(streamID: streamID, bytes: data.readerIndex)
        }

        func streamEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ServerConnectionHandler) {
            self.requests[streamID]?.trailers = trailers ?? []
            self.respond(streamID, on: connection)
        }

        func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
            if errorCode != .noError { self.streamsReset.add() }
            self.requests[streamID] = nil
            self.remaining[streamID] = nil
            self.sentOn[streamID] = nil
        }

        private func respond(_ streamID: HTTP2StreamID, on connection: HTTP2ServerConnectionHandler) {
            guard let request = self.requests[streamID] else { return }
            self.streamsServed.add()
            let head = request.head
            if let path = head.path, path.hasPrefix("/big?bytes="), let total = Int(path.dropFirst("/big?bytes=".count)) {
                connection.sendResponseHead(streamID: streamID, status: 200, headers: [], endStream: false)
                self.remaining[streamID] = total
                return self.pump(streamID, on: connection)
            }
            if let path = head.path, path.hasPrefix("/early-hints?n=") || path.hasPrefix("/only-hints?n="),
                let count = path.split(separator: "=").last.flatMap({ Int($0) })
            {
                for _ in 0..<count {
                    connection.sendInformationalHead(streamID: streamID, status: 103, headers: [HTTP2HeaderField(name: "link", value: "</style.css>; rel=preload; as=style")])
                }
                if path.hasPrefix("/only-hints") { return }
                connection.sendResponseHead(streamID: streamID, status: 200, headers: [HTTP2HeaderField(name: "content-length", value: "6")], endStream: false)
                connection.sendData(streamID: streamID, ByteBuffer(string: "hinted"), endStream: true)
                return
            }
            var fields = [
                HTTP2HeaderField(name: "x-method", value: head.method),
                HTTP2HeaderField(name: "x-scheme", value: head.scheme ?? "-"),
                HTTP2HeaderField(name: "x-authority", value: head.authority ?? "-"),
                HTTP2HeaderField(name: "x-path", value: head.path ?? "-"),
                HTTP2HeaderField(name: "content-type", value: "application/octet-stream"),
            ]
            for field in head.headers {
                switch field.name {
                case "te": fields.append(HTTP2HeaderField(name: "x-te", value: field.value))
                case "x-forwarded-for", "x-drop", "connection": fields.append(field)
                default: break
                }
            }
            connection.sendResponseHead(streamID: streamID, status: 200, headers: fields, endStream: false)
            let big = request.body.readableBytes > 65_536
            if !big { connection.sendData(streamID: streamID, request.body, endStream: false) }
            let trailers = request.trailers.map { "\($0.name)=\($0.value)" }.joined(separator: ",")
            var trailerFields = [
                HTTP2HeaderField(name: "x-request-trailers", value: trailers.isEmpty ? "-" : trailers),
                HTTP2HeaderField(name: "grpc-status", value: "0"),
                HTTP2HeaderField(name: "grpc-message", value: "fine"),
            ]
            if big { trailerFields.append(HTTP2HeaderField(name: "x-body-bytes", value: String(request.body.readableBytes))) }
            connection.sendTrailers(streamID: streamID, headers: trailerFields)
        }
    }
}

/// A count shared with an event loop.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add(_ amount: Int = 1) { self.count.withLock { $0 += amount } }
    var value: Int { self.count.withLock { $0 } }
}

/// An HTTP/1.1 upstream answering `body=<request body> trailers=<request trailers>`.
enum TrailerEchoUpstream {
    static func start() async throws -> TestServer {
        try await TestServer.startHTTP1 { Handler() }
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        var body = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch Self.unwrapInboundIn(data) {
            case .head:
                self.body = ""
            case .body(let buffer):
                self.body += String(buffer: buffer)
            case .end(let trailers):
                let text = "body=\(self.body) trailers=" + (trailers ?? [:]).map { "\($0.name): \($0.value)" }.joined(separator: ", ")
                let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": String(text.utf8.count)])
                context.write(Self.wrapOutboundOut(.head(head)), promise: nil)
                context.write(Self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
                context.writeAndFlush(Self.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
