import Foundation
import Glibc
import NIOCore
import NIOPosix
import Testing

@testable import SluiceProxy

/// `--max-connections` and running out of file descriptors (issue 14, item 7).
@Suite("Connection limits")
struct ConnectionLimitTests {
    static let request = "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n"

    /// With --max-connections 3, a 4th connection is accepted by the kernel but not served until one
    /// of the three closes; then it gets its response. /status shows the limit and the paused listener.
    @Test func fourthConnectionWaitsUntilOneCloses() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        try await ProxyHarness.withProxy(
            upstreams: [upstream.url],
            {
                $0.http.maxConnections = 3
                $0.threads = 2
            },
            cleanup: { await upstream.stop() }
        ) { proxy in
            #expect(proxy.server.maxConnections == 3)
            var clients: [RawClient] = []
            for _ in 0..<3 {
                let client = try await RawClient.connect(port: proxy.port)
                let (text, _) = try await client.exchange(Self.request) { $0.hasCompleteResponses(1) }
                #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
                clients.append(client)
            }
            // The kernel completes the handshake (the backlog); Sluice does not accept it yet.
            let fourth = try await RawClient.connect(port: proxy.port)
            try await fourth.send(Self.request)
            await #expect(throws: RawClient.Timeout.self) {
                _ = try await fourth.exchange(nil, timeout: .milliseconds(500)) { $0.hasCompleteResponses(1) }
            }
            let status = try await Curl.run(["-s", proxy.adminURL + "/status"], timeout: .seconds(5)).stdout
            #expect(status.contains("\"connections\":{\"total\":3,"))
            #expect(status.contains("\"max_connections\":3,\"listeners_paused\":"))
            #expect(!status.contains("\"listeners_paused\":0}"))

            await clients[0].close()
            let (text, closed) = try await fourth.exchange(nil, timeout: .seconds(5)) { $0.hasCompleteResponses(1) }
            #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(!closed)
            // Still at the limit: a fifth waits too, until another closes.
            let fifth = try await RawClient.connect(port: proxy.port)
            try await fifth.send(Self.request)
            await #expect(throws: RawClient.Timeout.self) {
                _ = try await fifth.exchange(nil, timeout: .milliseconds(300)) { $0.hasCompleteResponses(1) }
            }
            await fourth.close()
            let (fifthText, _) = try await fifth.exchange(nil, timeout: .seconds(5)) { $0.hasCompleteResponses(1) }
            #expect(fifthText.hasPrefix("HTTP/1.1 200 OK\r\n"))
            for client in clients.dropFirst() + [fifth] { await client.close() }
        }
    }

    /// Out of descriptors (`ulimit -n 64`, 2 threads, --max-connections set above what fits) with 150
    /// connections held open: accepting backs off instead of spinning (CPU stays low), /status on the
    /// admin port still answers 200, exactly one log line says why, and once the connections close a
    /// new request is served again.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CommandLineTests.binary.path)))
    func runningOutOfDescriptorsBacksOffAndRecovers() async throws {
        let upstream = try await TestUpstream.start(group: MultiThreadedEventLoopGroup.singleton)
        defer { Task { await upstream.stop() } }
        let sluice = try LimitedSluice(
            descriptorLimit: 64,
            arguments: ["--upstream", upstream.url, "--threads", "2", "--max-connections", "10000", "--drain-delay", "0s", "--drain-timeout", "2s"]
        )
        defer { sluice.kill() }
        let (port, adminPort) = try #require(await sluice.waitForPorts())
        #expect(sluice.log.contains("max-connections is more than the open-file limit leaves room for"))

        // More connections than descriptors: the kernel completes every handshake (backlog 1024).
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for _ in 0..<150 {
            let fd = LoopbackSocket.make()
            guard LoopbackSocket.connect(fd, port: port) else {
                close(fd)
                break
            }
            held.append(fd)
        }
        #expect(held.count == 150)
        #expect(await ProxyHarness.eventually(timeout: .seconds(10)) { sluice.log.contains("out of file descriptors: accepting paused") })

        // Before the fix both loops spun on accept4 (EMFILE): about one CPU-second per second each.
        let before = try #require(sluice.cpuSeconds())
        try await Task.sleep(for: .seconds(2))
        let after = try #require(sluice.cpuSeconds())
        print("[ConnectionLimitTests] CPU seconds over 2 s while out of descriptors: \(after - before)")
        #expect(after - before < 0.2)

        let status = try await Curl.run(["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(adminPort)/status"], timeout: .seconds(5))
        #expect(status.stdout == "200")
        let lines = sluice.log.split(separator: "\n").filter { $0.contains("out of file descriptors: accepting paused") }
        #expect(lines.count == 1)
        #expect(lines.first?.contains("error=too many open files (EMFILE)") == true)

        for fd in held { close(fd) }
        held = []
        var answer = ""
        let recovered = await ProxyHarness.eventually(timeout: .seconds(10)) {
            answer = (try? await Curl.run(["-s", "http://127.0.0.1:\(port)/hello"], timeout: .seconds(2)).stdout) ?? ""
            return answer == "hello"
        }
        #expect(recovered, "no answer after the connections closed; got \(answer.debugDescription)")
        #expect(await ProxyHarness.eventually(timeout: .seconds(5)) { sluice.log.contains("file descriptors available again: accepting") })
        #expect(await sluice.terminate() == 0)
    }
}

/// The real `sluice` binary under `sh -c 'ulimit -n N; exec sluice ...'`, its log in a file.
final class LimitedSluice {
    private let process: Process
    private let logURL: URL

    init(descriptorLimit: Int, arguments: [String]) throws {
        self.logURL = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-limits-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: self.logURL.path, contents: nil)
        let log = try FileHandle(forWritingTo: self.logURL)
        self.process = Process()
        self.process.executableURL = URL(fileURLWithPath: "/bin/sh")
        // `exec`: the shell becomes sluice, so the pid is sluice's. ulimit -n sets soft and hard.
        self.process.arguments =
            ["-c", "ulimit -n \(descriptorLimit) && exec \"$0\" \"$@\"", CommandLineTests.binary.path, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
            + arguments
        self.process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("SLUICE_") }
        self.process.standardOutput = log
        self.process.standardError = log
        self.process.standardInput = FileHandle.nullDevice
        try self.process.run()
        try log.close()
    }

    var pid: Int32 { self.process.processIdentifier }
    var log: String { (try? String(contentsOf: self.logURL, encoding: .utf8)) ?? "" }

    /// The proxy and admin ports from the "started" line; nil if it did not start within 10 s.
    func waitForPorts() async -> (Int, Int)? {
        guard await ProxyHarness.eventually(timeout: .seconds(10), { self.log.contains(" started") || !self.process.isRunning }) else { return nil }
        let log = self.log
        func port(_ key: String) -> Int? {
            guard let range = log.range(of: "\(key)=127.0.0.1:") else { return nil }
            return Int(log[range.upperBound...].prefix { $0.isNumber })
        }
        guard let listen = port("listen"), let admin = port("admin") else { return nil }
        return (listen, admin)
    }

    /// User plus system CPU time so far (`/proc/PID/stat` fields 14 and 15).
    func cpuSeconds() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(self.pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm) ": field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// SIGTERM (our child, by pid); waits at most 10 s and returns the exit status (nil: still running).
    func terminate() async -> Int32? {
        Glibc.kill(self.pid, SIGTERM)
        guard await ProxyHarness.eventually(timeout: .seconds(10), { !self.process.isRunning }) else { return nil }
        return self.process.terminationStatus
    }

    /// SIGKILL if still running (a test that failed half-way), and the log file removed.
    func kill() {
        if self.process.isRunning { Glibc.kill(self.pid, SIGKILL) }
        try? FileManager.default.removeItem(at: self.logURL)
    }
}
