import Foundation

/// Runs `curl` with a hard time limit.
enum Curl {
    struct Result: Sendable {
        var exitCode: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ arguments: [String], timeout: Duration = .seconds(30)) async throws -> Result {
        try await Subprocess.run("/usr/bin/curl", ["--max-time", "\(timeout.components.seconds)"] + arguments)
    }
}

enum Subprocess {
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> Curl.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes to the end before waiting, so a full pipe never blocks the child. The
        // blocking reads and the wait run on Dispatch threads, not the concurrency pool's: a pool of
        // two threads (two cores) blocked by one curl starved whatever the test waited on in the
        // meantime (a reload's task, a `POST /reload` answer) until curl's --max-time.
        async let stdout = Self.blocking { out.fileHandleForReading.readDataToEndOfFile() }
        async let stderr = Self.blocking { err.fileHandleForReading.readDataToEndOfFile() }
        let (o, e) = await (stdout, stderr)
        await Self.blocking { process.waitUntilExit() }
        return Curl.Result(exitCode: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    private static func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: body()) }
        }
    }
}
