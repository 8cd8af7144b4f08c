import NIOPosix
import Testing

@testable import SluiceProxy

@Suite("Admin endpoints")
struct AdminTests {
    /// /livez, /readyz, /status and /metrics answer as documented; other methods and paths are refused.
    @Test func endpointsAnswerAsDocumented() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        let proxy = try await ProxyHarness.start(upstreams: [upstream.url])
        defer { Task { await proxy.stop(); await upstream.stop() } }

        #expect(try await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/livez"]).stdout == "ok\n 200")
        #expect(try await Curl.run(["-s", "-w", " %{http_code}", proxy.adminURL + "/readyz"]).stdout == "ready\n 200")
        #expect(try await Curl.run(["-s", proxy.url + "/hello"]).stdout == "hello")
        #expect(try await Curl.run(["-s", proxy.url + "/nope"]).stdout == "no such path")

        let status = try await Curl.run(["-s", proxy.adminURL + "/status"]).stdout
        #expect(status.hasPrefix("{\"phase\":\"serving\",\"ready\":true,\"phase_seconds_left\":null,"))
        #expect(status.contains("\"responses\":{\"other\":0,\"1xx\":0,\"2xx\":1,\"3xx\":0,\"4xx\":1,\"5xx\":0}"))
        #expect(status.contains("\"upstreams\":[{\"url\":\"\(upstream.url)\",\"idle\":1,\"busy\":0}]"))

        let metrics = try await Curl.run(["-s", proxy.adminURL + "/metrics"]).stdout
        #expect(metrics.contains("sluice_requests_total{class=\"2xx\"} 1\n"))
        #expect(metrics.contains("sluice_requests_total{class=\"4xx\"} 1\n"))
        #expect(metrics.contains("sluice_drain_phase 1"))
        #expect(metrics.contains("sluice_request_duration_seconds_count 2\n"))
        #expect(metrics.contains("# TYPE sluice_request_duration_seconds histogram\n"))

        #expect(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", proxy.adminURL + "/readyz"]).stdout == "405")
        #expect(try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", proxy.adminURL + "/other"]).stdout == "404")
    }
}
