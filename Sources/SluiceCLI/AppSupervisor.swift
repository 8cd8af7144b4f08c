import CProcess
@preconcurrency import Dispatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore

#if canImport(Glibc)
import Glibc
#endif

/// Supervisor mode (`sluice [options] -- CMD [ARGS...]`): the app as Sluice's child.
///
/// 1. ``start(_:logger:)`` spawns it in a process group of its own (pgid = its pid), with Sluice's
///    environment and standard output and error, every signal at its default disposition; Sluice
///    becomes a child subreaper, so the app's orphaned descendants are re-parented to it.
/// 2. A reaper thread waits for every child (`waitpid(-1)`): the app's exit is reported on
///    ``exits``; orphans are reaped and forgotten, so none is left a zombie (as PID 1 must).
/// 3. ``waitUntilReady(upstream:path:)`` probes the upstream every 100 ms until the app answers.
/// 4. ``stop(signal:grace:)`` sends the stop signal to the group once Sluice's drain is over, and
///    SIGKILL when the grace is used up.
final class AppSupervisor: Sendable {
    let pid: pid_t
    let command: [String]
    /// One element, when the app has exited (on its own or stopped); for the drain coordinator.
    let exits: AsyncStream<AppExit>
    private let exit = NIOLockedValueBox<AppExit?>(nil)
    private let sentKill = NIOLockedValueBox(false)
    private let logger: Logger

    struct StartError: Error, CustomStringConvertible {
        var description: String
    }

    private init(pid: pid_t, command: [String], exits: AsyncStream<AppExit>, logger: Logger) {
        self.pid = pid
        self.command = command
        self.exits = exits
        self.logger = logger
    }

    /// Spawns `app.command` and starts reaping.
    static func start(_ app: SluiceConfig.App, logger: Logger) throws -> AppSupervisor {
        _ = sluice_become_subreaper()
        var pid: pid_t = 0
        let arguments = app.command.map { strdup($0) } + [nil]
        defer { for argument in arguments { free(argument) } }
        let error = arguments.withUnsafeBufferPointer { argv in
            sluice_spawn(argv.baseAddress, environ, &pid)
        }
        guard error == 0 else {
            throw StartError(description: "cannot start the app \"\(app.command.joined(separator: " "))\": \(String(cString: strerror(error)))")
        }
        let (exits, continuation) = AsyncStream.makeStream(of: AppExit.self)
        let supervisor = AppSupervisor(pid: pid, command: app.command, exits: exits, logger: logger)
        supervisor.reap(continuation)
        logger.notice("app started", metadata: ["pid": "\(pid)", "command": "\(app.command.joined(separator: " "))"])
        return supervisor
    }

    /// How the app ended, once it has.
    var exitStatus: AppExit? { self.exit.withLockedValue { $0 } }

    /// Whether ``stop(signal:deadline:)`` had to send SIGKILL.
    var killed: Bool { self.sentKill.withLockedValue { $0 } }

    /// Waits for every child on a thread of its own for as long as the process lives.
    private func reap(_ continuation: AsyncStream<AppExit>.Continuation) {
        let pid = self.pid
        DispatchQueue(label: "sluice.reaper").async {
            while true {
                var status: Int32 = 0
                let child = waitpid(-1, &status, 0)
                if child == pid {
                    let exit: AppExit = sluice_signaled(status) != 0 ? .signaled(sluice_term_signal(status)) : .exited(sluice_exit_code(status))
                    self.exit.withLockedValue { $0 = exit }
                    self.logger.notice("app exited", metadata: ["pid": "\(pid)", "status": "\(Self.describe(exit))"])
                    continuation.yield(exit)
                    continuation.finish()
                } else if child < 0 {
                    if errno == EINTR { continue }
                    // No child left for now; orphans may still be re-parented to us later.
                    usleep(200_000)
                }
            }
        }
    }

    /// `exit:0`, `signal:TERM`.
    static func describe(_ exit: AppExit) -> String {
        switch exit {
        case .exited: exit.description
        case .signaled(let number): "signal:\(SignalNumbers.name(of: number))"
        }
    }

    /// Sends `signal` to the app's process group (to the app itself should the group be gone).
    func send(_ signal: Int32) {
        if kill(-self.pid, signal) != 0 { _ = kill(self.pid, signal) }
    }

    /// Sends `stopSignal` and waits until `deadline` for the app to exit; then SIGKILL, and waits
    /// 2 s more. Returns how the app ended (nil if it could not be seen to end).
    func stop(signal stopSignal: Int32, deadline: MonotonicInstant) async -> AppExit? {
        if let exit = self.exitStatus { return exit }
        self.logger.notice("stopping app", metadata: ["signal": "\(SignalNumbers.name(of: stopSignal))", "pid": "\(self.pid)"])
        self.send(stopSignal)
        if let exit = await self.waitForExit(until: deadline) { return exit }
        self.logger.warning(
            "app did not stop in time; sending SIGKILL", metadata: ["pid": "\(self.pid)", "signal": "\(SignalNumbers.name(of: stopSignal))"])
        self.sentKill.withLockedValue { $0 = true }
        self.send(SIGKILL)
        return await self.waitForExit(until: .now().advanced(by: .seconds(2)))
    }

    /// Looks every 20 ms (``exits`` belongs to the drain coordinator).
    private func waitForExit(until deadline: MonotonicInstant) async -> AppExit? {
        while MonotonicInstant.now() < deadline {
            if let exit = self.exitStatus { return exit }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return self.exitStatus
    }

    // MARK: Readiness

    /// Probes `upstream` every 100 ms until the app answers: a TCP connect, or with `path` a 2xx/3xx
    /// answer to `GET path`. Returns false if the app exited first.
    func waitUntilReady(upstream: UpstreamURL, path: String?) async -> Bool {
        while !Task.isCancelled {
            if self.exitStatus != nil { return false }
            if await Self.probe(upstream: upstream, path: path) { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// One probe, at most 1 s.
    static func probe(upstream: UpstreamURL, path: String?) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await Self.attempt(upstream: upstream, path: path)) ?? false }
            group.addTask {
                try? await Task.sleep(for: .seconds(1))
                return false
            }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
    }

    private static func attempt(upstream: UpstreamURL, path: String?) async throws -> Bool {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(1))
            .connect(host: upstream.host, port: upstream.port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        return try await channel.executeThenClose { inbound, outbound in
            guard let path else { return true }
            let host = upstream.host.contains(":") ? "[\(upstream.host)]:\(upstream.port)" : "\(upstream.host):\(upstream.port)"
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: sluice-app-ready\r\nConnection: close\r\n\r\n"))
            var received = ByteBuffer()
            for try await chunk in inbound {
                received.writeImmutableBuffer(chunk)
                if received.readableBytesView.contains(UInt8(ascii: "\n")) || received.readableBytes > 64 { break }
            }
            // "HTTP/1.1 200 ...": the status is the second word.
            let line = String(buffer: received).split(separator: "\r\n", maxSplits: 1).first ?? ""
            let words = line.split(separator: " ")
            guard words.count >= 2, words[0].hasPrefix("HTTP/"), let status = Int(words[1]) else { return false }
            return (200..<400).contains(status)
        }
    }
}

/// The platform's numbers for ``SignalName``.
enum SignalNumbers {
    static func number(_ name: SignalName) -> Int32 {
        switch name {
        case .term: SIGTERM
        case .int: SIGINT
        case .quit: SIGQUIT
        case .hup: SIGHUP
        case .kill: SIGKILL
        case .usr1: SIGUSR1
        case .usr2: SIGUSR2
        case .winch: SIGWINCH
        case .alrm: SIGALRM
        }
    }

    /// `TERM` for 15; the number for a signal without a name here.
    static func name(of number: Int32) -> String {
        SignalName.allCases.first { Self.number($0) == number }?.rawValue ?? String(number)
    }
}
