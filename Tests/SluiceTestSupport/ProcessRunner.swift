import Foundation

/// Runs a command line tool with a bounded wait, its output captured in files (no pipe can fill up).
/// Test helpers both test targets share: running tools with bounded waits, temporary files.
public enum ProcessRunner {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: Data
        public var stderr: String
        public var timedOut: Bool
        public var stdoutString: String { String(decoding: self.stdout, as: UTF8.self) }
    }

    public static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(30)) async throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-h2-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()

        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var timedOut = false
        while process.isRunning {
            if clock.now >= deadline {
                timedOut = true
                // Our own child, by its pid. SIGTERM may be blocked in the child (the signal mask is
                // inherited from the test runner's thread), so SIGKILL follows.
                process.terminate()
                for _ in 0..<10 where process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.waitUntilExit()
        try out.close()
        try err.close()
        return Result(
            status: process.terminationStatus,
            stdout: (try? Data(contentsOf: outURL)) ?? Data(),
            stderr: String(decoding: (try? Data(contentsOf: errURL)) ?? Data(), as: UTF8.self),
            timedOut: timedOut
        )
    }

    /// Writes `contents` to a fresh temporary file and returns its path.
    public static func temporaryFile(_ contents: Data, name: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-h2-\(UUID().uuidString)-\(name)")
        try contents.write(to: url)
        return url.path
    }

    public static func isExecutable(_ path: String) -> Bool { FileManager.default.isExecutableFile(atPath: path) }

    /// Whether `python3` can import the `h2` package (and with it `hpack` and `hyperframe`).
    public static let pythonH2Available: Bool = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import h2, hpack, hyperframe"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        for _ in 0..<500 where process.isRunning { Thread.sleep(forTimeInterval: 0.02) }  // At most 10 s.
        guard !process.isRunning else {
            process.terminate()
            return false
        }
        return process.terminationStatus == 0
    }()
}

/// A child process left running while a test observes something else; its stdout goes to a file.
public final class BackgroundProcess {
    private let process = Process()
    private let directory: URL
    private let outURL: URL
    private let out: FileHandle

    public init(_ executable: String, _ arguments: [String]) throws {
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-h2-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        self.outURL = self.directory.appendingPathComponent("stdout")
        _ = FileManager.default.createFile(atPath: self.outURL.path, contents: nil)
        self.out = try FileHandle(forWritingTo: self.outURL)
        self.process.executableURL = URL(fileURLWithPath: executable)
        self.process.arguments = arguments
        self.process.standardOutput = self.out
        self.process.standardError = FileHandle.nullDevice
        self.process.standardInput = FileHandle.nullDevice
        try self.process.run()
    }

    public var stdout: String { String(decoding: (try? Data(contentsOf: self.outURL)) ?? Data(), as: UTF8.self) }

    /// Waits until stdout contains `text`; false if the process exited or `timeout` passed first.
    public func waitForOutput(containing text: String, timeout: Duration) async throws -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while clock.now < deadline {
            if self.stdout.contains(text) { return true }
            if !self.process.isRunning { return self.stdout.contains(text) }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Terminates the process (our own child, by its pid: SIGTERM, then SIGKILL after 200 ms, as SIGTERM
    /// may be blocked in the child) and waits for it, at most 5 s.
    public func stop() async {
        if self.process.isRunning { self.process.terminate() }
        for _ in 0..<10 where self.process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        if self.process.isRunning { kill(self.process.processIdentifier, SIGKILL) }
        for _ in 0..<250 where self.process.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        try? self.out.close()
        try? FileManager.default.removeItem(at: self.directory)
    }
}

/// This process's resident set size, in bytes (Linux `/proc/self/statm`).
public func residentMemory() -> Int? {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
    let fields = statm.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
    return pages * 4096
}
