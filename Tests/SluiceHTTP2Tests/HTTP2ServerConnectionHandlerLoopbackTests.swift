import Foundation
import NIOCore
import SluiceHTTP2
import SluiceTestSupport
import Testing

/// Real clients against ``HTTP2ServerConnectionHandler`` on a loopback socket. Serialized: h2load's
/// throughput is measured, and the machine has two cores.
@Suite(.serialized) struct HTTP2ServerConnectionHandlerLoopbackTests {
    static let nghttp = "/usr/bin/nghttp"
    static let curl = "/usr/bin/curl"
    static let h2load = "/usr/bin/h2load"

    /// A body that is not a multiple of any frame or window size and spans several windows.
    static func postBody(size: Int) -> Data {
        var data = Data(capacity: size)
        var line = 0
        while data.count < size {
            data.append(contentsOf: "line \(line) of the request body, echoed back byte for byte\n".utf8)
            line += 1
        }
        return data.prefix(size)
    }

    /// nghttp (prior knowledge h2c) receives exactly the fixed body for GET /.
    @Test(.enabled(if: ProcessRunner.isExecutable(nghttp), "needs /usr/bin/nghttp (apt install nghttp2-client)"))
    func nghttpGetReceivesFixedBody() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let result = try await ProcessRunner.run(Self.nghttp, [server.url + "/"])
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdoutString == TestDelegate.fixedBody)
    }

    /// nghttp uploads 300 KB (several flow-control windows) and receives it back byte for byte.
    @Test(.enabled(if: ProcessRunner.isExecutable(nghttp), "needs /usr/bin/nghttp (apt install nghttp2-client)"))
    func nghttpPostIsEchoedAcrossWindows() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let body = Self.postBody(size: 300_001)
        let file = try ProcessRunner.temporaryFile(body, name: "body")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let result = try await ProcessRunner.run(Self.nghttp, ["-d", file, server.url + "/echo"])
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.count == body.count)
        #expect(result.stdout == body)
    }

    /// curl with --http2-prior-knowledge gets the fixed body over HTTP/2, and several echoed POSTs on
    /// one connection.
    @Test(.enabled(if: ProcessRunner.isExecutable(curl), "needs /usr/bin/curl"))
    func curlPriorKnowledgeGetAndPost() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let get = try await ProcessRunner.run(Self.curl, ["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", server.url + "/"])
        #expect(get.status == 0, "\(get.stderr)")
        #expect(get.stdoutString == TestDelegate.fixedBody + "\n2 200")

        let body = Self.postBody(size: 123_457)
        let file = try ProcessRunner.temporaryFile(body, name: "body")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let post = try await ProcessRunner.run(
            Self.curl, ["-sS", "--http2-prior-knowledge", "--data-binary", "@" + file, server.url + "/echo"]
        )
        #expect(post.status == 0, "\(post.stderr)")
        #expect(post.stdout == body)

        let notFound = try await ProcessRunner.run(Self.curl, ["-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}", server.url + "/missing"])
        #expect(notFound.stdoutString == "404")
    }

    /// h2load: 20 000 requests over 8 connections with 8 streams each, none failed.
    @Test(.enabled(if: ProcessRunner.isExecutable(h2load), "needs /usr/bin/h2load (apt install nghttp2-client)"))
    func h2loadTwentyThousandRequestsWithoutFailure() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let result = try await ProcessRunner.run(Self.h2load, ["-n", "20000", "-c", "8", "-m", "8", server.url + "/"], timeout: .seconds(120))
        #expect(!result.timedOut)
        #expect(result.status == 0, "\(result.stderr)")
        let output = result.stdoutString
        #expect(output.contains("requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout"), "\(output)")
        #expect(output.contains("status codes: 20000 2xx"), "\(output)")
        if let line = output.split(separator: "\n").first(where: { $0.hasPrefix("finished in") }) {
            print("h2load -n 20000 -c 8 -m 8 against the test delegate: \(line)")
        }
    }

    /// The drain seen from the wire: GOAWAY(2^31-1), then a PING, then after its ack the final GOAWAY with
    /// the last stream the client opened (3, sent between the two); stream 3 and the stream that started
    /// the drain are served in full, stream 5 (sent after the final GOAWAY) is not, and the server closes
    /// the connection once streams 1 and 3 are done.
    @Test(.enabled(if: ProcessRunner.pythonH2Available, "needs python3 with the h2 package (pip install h2)"))
    func pythonClientSeesTwoPhaseGoAway() async throws {
        // A generous PING timeout: on a loaded CI machine the ack, not the timer, must send the final GOAWAY.
        let server = try await TestServer.start(configuration: .init(shutdown: .init(pingTimeout: .seconds(5))))
        defer { Task { await server.stop() } }
        let events = try await PythonH2Client.run(port: server.port, scenario: "drain")
        let goAways = events.filter { $0.type == "GOAWAY" }
        #expect(goAways.map(\.last) == [Int(Int32.max), 3])
        #expect(goAways.map(\.error) == [0, 0])

        let notice = try #require(events.firstIndex { $0.type == "GOAWAY" })
        let ping = try #require(events.firstIndex { $0.type == "PING" })
        let final = try #require(events.lastIndex { $0.type == "GOAWAY" })
        #expect(notice < ping && ping < final, "\(events)")

        #expect(events.contains { $0.type == "HEADERS" && $0.stream == 3 && $0.status == "200" })
        #expect(events.filter { $0.type == "DATA" && $0.stream == 3 }.map { $0.data ?? "" }.joined() == TestDelegate.fixedBody)
        #expect(events.contains { $0.type == "HEADERS" && $0.stream == 1 && $0.status == "200" })
        #expect(events.filter { $0.type == "DATA" && $0.stream == 1 }.map { $0.data ?? "" }.joined() == "drained")

        let stream5Sent = try #require(events.firstIndex { $0.type == "SENT" && $0.stream == 5 })
        #expect(!events.contains { $0.type == "HEADERS" && $0.stream == 5 }, "stream 5 was served after the final GOAWAY")
        #expect(events.filter { $0.stream == 5 && $0.type == "RST" }.allSatisfy { $0.error == 7 })
        #expect(final < stream5Sent)

        let lastData1 = try #require(events.lastIndex { $0.type == "DATA" && $0.stream == 1 })
        #expect(events.last?.type == "EOF")
        #expect(events.firstIndex { $0.type == "EOF" }! > lastData1)
    }

    /// A burst of HEADERS + RST_STREAM (rapid reset) ends the connection with GOAWAY ENHANCE_YOUR_CALM.
    @Test(.enabled(if: ProcessRunner.pythonH2Available, "needs python3 with the h2 package (pip install h2)"))
    func rapidResetEndsConnectionWithEnhanceYourCalm() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let events = try await PythonH2Client.run(port: server.port, scenario: "rapid-reset")
        #expect(events.contains { $0.type == "GOAWAY" && $0.error == 0xb }, "\(events.filter { $0.type != "HEADERS" && $0.type != "DATA" })")
        #expect(events.last?.type == "EOF")
    }

    /// A PING flood ends the connection with GOAWAY ENHANCE_YOUR_CALM.
    @Test(.enabled(if: ProcessRunner.pythonH2Available, "needs python3 with the h2 package (pip install h2)"))
    func pingFloodEndsConnectionWithEnhanceYourCalm() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let events = try await PythonH2Client.run(port: server.port, scenario: "ping-flood")
        #expect(events.contains { $0.type == "GOAWAY" && $0.error == 0xb })
        #expect(events.filter { $0.type == "PINGACK" }.count <= 200)
        #expect(events.last?.type == "EOF")
    }

    /// 500 idle HTTP/2 connections (SETTINGS exchanged, no stream) cost the server well under 256 KiB each
    /// of resident memory (about 20 KiB measured; the bound leaves room for suites running in parallel);
    /// the measured figure is printed.
    @Test(.enabled(if: ProcessRunner.pythonH2Available, "needs python3 with the h2 package (pip install h2)"))
    func idleConnectionsCostLittleMemory() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let count = 500
        let script = try ProcessRunner.temporaryFile(Data(PythonH2Client.script.utf8), name: "client.py")
        defer { try? FileManager.default.removeItem(atPath: script) }
        // Warm up: one connection through every code path, so that only per-connection memory is measured.
        _ = try await PythonH2Client.run(port: server.port, scenario: "get")
        let before = try #require(residentMemory())
        let client = try BackgroundProcess("/usr/bin/env", ["python3", script, String(server.port), "idle", String(count), "10"])
        let ready = try await client.waitForOutput(containing: "READY", timeout: .seconds(30))
        try await Task.sleep(for: .milliseconds(300))  // Let the server process the last SETTINGS acks.
        let after = try #require(residentMemory())
        await client.stop()
        #expect(ready, "the idle client did not get its connections up: \(client.stdout)")
        let perConnection = (after - before) / count
        print("resident memory per idle HTTP/2 connection: \(perConnection) bytes (\(count) connections, \(after - before) bytes)")
        #expect(perConnection < 256 << 10)
    }
}
