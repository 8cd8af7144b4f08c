@preconcurrency import Dispatch
import Logging
import NIOCore
import SluiceCore
import SluiceProxy

#if canImport(Glibc)
import Glibc
#endif

/// Wires a typed ``SluiceConfig`` to a running proxy: logging, listeners, signals, drain, exit code.
enum Launcher {
    /// Runs the proxy until it has drained; returns the process exit code (0, 1 or 3).
    ///
    /// - Parameter source: reads the configuration again, as `config` was read, on SIGHUP and
    ///   `POST /reload`.
    static func runProxy(
        config: SluiceConfig, source: ConfigSource?, narrate: Bool, onStarted: (ProxyServer.BoundAddresses) -> Void = { _ in }
    ) async -> Int32 {
        LogSetup.bootstrap(config.logging)
        let logger = Logger(label: "sluice")
        // SIGTERM and SIGINT mean "drain gracefully" (Kubernetes sends SIGTERM when it stops the pod,
        // Ctrl-C sends SIGINT); SIGQUIT means "stop now"; SIGHUP means "read the configuration again"
        // (the Unix daemon convention, as nginx and HAProxy). Installed before binding so that a
        // signal during start-up is not the default "die at once".
        let signals = SignalSource.install()
        // The report is written at exit; a path that cannot be written is found now, not after the drain.
        if let path = config.drain.reportFile, let problem = TextFile.writeProblem(path) {
            Console.error("sluice: cannot write the drain report --drain-report \(path): \(problem)")
            return 1
        }
        // Every client connection costs a descriptor (and usually one upstream): use what the hard
        // limit allows. The automatic --max-connections is derived from the raised limit.
        DescriptorLimit.raiseToHard()
        let server = ProxyServer(config: config, logger: logger, configSource: source)
        let bound: ProxyServer.BoundAddresses
        do {
            bound = try await server.start()
        } catch let error as TLSStartError {
            for message in error.messages { Console.error("sluice: \(message)") }
            await server.shutdown()
            return 1
        } catch {
            Console.error("sluice: \(error)")
            await server.shutdown()
            return 1
        }
        logger.notice(
            "started",
            metadata: [
                "listen": "\(zip(config.listen, bound.listeners).map { "\(Self.describe($1))\($0.tls == nil ? "" : " (tls)")" }.joined(separator: ","))",
                "admin": "\(Self.describe(bound.admin))",
                "upstreams": "\(config.groups.map { "\($0.name)=\($0.endpoints.map(\.description).joined(separator: ","))" }.joined(separator: " "))",
                "routes": "\(config.routes.count)",
                "threads": "\(server.loopCount)",
                "max_connections": "\(server.maxConnections)\(config.http.maxConnections == nil ? " (auto)" : "")",
                "open_file_limit": "\(server.descriptorLimit == Int.max ? "unlimited" : String(server.descriptorLimit))",
                "drain_delay": "\(DurationParser.format(config.drain.delay))",
                "drain_timeout": "\(DurationParser.format(config.drain.timeout))",
                "termination_grace": "\(DurationParser.format(config.drain.terminationGrace))",
                "budget_left": "\(DurationParser.format(config.drain.terminationGrace - config.drain.delay - config.drain.timeout))",
                "version": "\(SluiceVersion.current)",
            ]
        )
        let automatic = ConnectionLimit.automatic(descriptorLimit: server.descriptorLimit, threads: server.loopCount)
        if server.maxConnections > automatic {
            logger.warning(
                "max-connections is more than the open-file limit leaves room for: when descriptors run out, accepting backs off",
                metadata: [
                    "max_connections": "\(server.maxConnections)", "open_file_limit": "\(server.descriptorLimit)", "auto_max_connections": "\(automatic)",
                ]
            )
        }
        onStarted(bound)
        // Supervisor mode: the app starts once Sluice's listeners are bound.
        var app: AppSupervisor?
        if let appConfig = config.app {
            do {
                app = try AppSupervisor.start(appConfig, logger: logger)
            } catch {
                Console.error("sluice: \(error)")
                await server.shutdown()
                return 1
            }
        }
        let readiness = app.map { app in
            Task {
                let started = MonotonicInstant.now()
                guard let upstream = config.groups.first?.endpoints.first else { return }
                if await app.waitUntilReady(upstream: upstream, path: config.app?.readyPath) {
                    server.setAppReady()
                    logger.notice("app ready", metadata: ["after": "\(started.duration(to: .now()).secondsDouble)s", "upstream": "\(upstream)"])
                }
            }
        }
        let forwarding = app.map { app in SignalSource.forward(config.app?.forwardSignals ?? [], to: app) }
        let narrator = narrate ? Task { await Self.narrate(server) } : nil
        // One reload per SIGHUP, in order; the server refuses them once the drain has begun.
        let reloader = Task {
            for await _ in signals.reload { _ = await server.reload(trigger: .signal) }
        }
        let coordinator = DrainCoordinator(server: server, logger: logger)
        let outcome = await coordinator.run(signals: signals.drain, appExits: app?.exits)
        readiness?.cancel()
        reloader.cancel()
        narrator?.cancel()
        await narrator?.value
        await server.shutdown()
        var code = outcome.exitCode
        var appReport: String?
        if let app, let appConfig = config.app {
            // The drain is over: the app may stop now, within what is left of the termination grace.
            let stopSignal = SignalNumbers.number(appConfig.stopSignal)
            let exitedOnItsOwn = app.exitStatus != nil
            // The kubelet's grace period runs from its SIGTERM, not from a rehearsal that grew into the drain.
            let graceStart = coordinator.firstSignal ?? coordinator.timeline?.start ?? .now()
            let deadline = max(MonotonicInstant.now(), graceStart.advanced(by: config.drain.terminationGrace - .milliseconds(500)))
            let stopSentAt: MonotonicInstant? = exitedOnItsOwn ? nil : .now()
            let exit = await app.stop(signal: stopSignal, deadline: deadline)
            if let exit { code = exit.exitCode(drainCode: code, stopSignal: exitedOnItsOwn ? nil : stopSignal) }
            appReport = coordinator.timeline?.appStopJSON(
                status: exit.map(AppSupervisor.describe) ?? "unknown", stopSignal: exitedOnItsOwn ? nil : appConfig.stopSignal.rawValue,
                stopSentAt: stopSentAt, exitSeenAt: .now(), killed: app.killed)
            _ = forwarding
        }
        Self.logExit(code: code, outcome: outcome, timeline: coordinator.timeline, drain: config.drain, logger: logger)
        if let path = config.drain.reportFile, let timeline = coordinator.timeline {
            Self.writeReport(timeline, to: path, code: code, outcome: outcome, drain: config.drain, app: appReport, logger: logger)
        }
        return code
    }

    /// The exit line, with the late-arrival figures; a warning first when the last new connection
    /// came in the final 20% of `drain-delay`.
    static func logExit(code: Int32, outcome: DrainCoordinator.Outcome, timeline: DrainTimeline<MonotonicInstant>?, drain: SluiceConfig.Drain, logger: Logger) {
        var metadata: Logger.Metadata = ["code": "\(code)"]
        if case .forced(let cut) = outcome { metadata["connections_cut"] = "\(cut)" }
        if let timeline, timeline.kind == .drain {
            metadata["last_new_connection_seconds"] = "\(timeline.lastNewConnectionSeconds.map { String($0) } ?? "none")"
            metadata["new_connections_after_signal"] = "\(timeline.newConnections)"
            metadata["last_old_connection_request_seconds"] = "\(timeline.lastOlderConnectionRequestSeconds.map { String($0) } ?? "none")"
            if timeline.trigger != .appExit, timeline.delayLooksShort(delay: drain.delay), let last = timeline.lastNewConnectionSeconds {
                logger.warning(
                    "drain-delay looks too short: new connections still arrived \(last)s after the signal, in the last 20% of drain-delay \(DurationParser.format(drain.delay)); endpoint removal takes longer to reach every balancer here. Raise drain-delay (or set drain-quiet), or measure with POST /drain/rehearse",
                    metadata: ["last_new_connection_seconds": "\(last)", "drain_delay": "\(DurationParser.format(drain.delay))"])
            }
        }
        if code == 0 { logger.notice("exit", metadata: metadata) } else { logger.warning("exit", metadata: metadata) }
    }

    /// `--drain-report FILE`: the drain's timeline as JSON.
    static func writeReport(
        _ timeline: DrainTimeline<MonotonicInstant>, to path: String, code: Int32, outcome: DrainCoordinator.Outcome, drain: SluiceConfig.Drain,
        app: String?, logger: Logger
    ) {
        let settings = DrainTimeline<MonotonicInstant>.Settings(delay: drain.delay, quiet: drain.quiet, delayMin: drain.delayMin, timeout: drain.timeout)
        let wall = WallClock.iso8601(ago: timeline.start.duration(to: .now()))
        let outcomeText = if case .forced = outcome { "deadline" } else { "drained" }
        let text = timeline.reportJSON(startWallTime: wall, settings: settings, exitCode: code, outcome: outcomeText, app: app)
        do {
            try TextFile.write(text, to: path)
            logger.notice("drain report written", metadata: ["file": "\(path)"])
        } catch {
            logger.error("cannot write the drain report", metadata: ["file": "\(path)", "error": "\(error)"])
        }
    }

    /// Prints the drain's progress once a second while it runs (for `sluice demo`).
    static func narrate(_ server: ProxyServer) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            if let line = await server.drainProgressLine() { Console.out(line) }
        }
    }

    /// `127.0.0.1:8080`, `[::1]:8080`.
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

nonisolated(unsafe) private var installedSignalSources: [any DispatchSourceSignal] = []

/// SIGTERM, SIGINT and SIGQUIT as an `AsyncStream` of ``DrainSignal``; SIGHUP as a stream of reloads.
enum SignalSource {
    struct Streams {
        var drain: AsyncStream<DrainSignal>
        /// One element per SIGHUP.
        var reload: AsyncStream<Void>
    }

    static func install() -> Streams {
        let (stream, continuation) = AsyncStream.makeStream(of: DrainSignal.self)
        let (reloads, reloadContinuation) = AsyncStream.makeStream(of: Void.self)
        let queue = DispatchQueue(label: "sluice.signals")
        var sources: [any DispatchSourceSignal] = []
        Glibc.signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: queue)
        hangup.setEventHandler { reloadContinuation.yield() }
        hangup.resume()
        sources.append(hangup)
        for (number, signal) in [(SIGTERM, DrainSignal.terminate), (SIGINT, .terminate), (SIGQUIT, .quit)] {
            Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { continuation.yield(signal) }
            source.resume()
            sources.append(source)
        }
        // The sources live as long as the process.
        installedSignalSources = sources
        return Streams(drain: stream, reload: reloads)
    }

    /// Supervisor mode: passes each of `names` on to the app's process group.
    static func forward(_ names: [SignalName], to app: AppSupervisor) -> [any DispatchSourceSignal] {
        let queue = DispatchQueue(label: "sluice.forwarded-signals")
        var sources: [any DispatchSourceSignal] = []
        for name in names {
            let number = SignalNumbers.number(name)
            Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { app.send(number) }
            source.resume()
            sources.append(source)
        }
        return sources
    }
}

/// The wall clock, for the drain report's `start_wall_time`.
enum WallClock {
    /// `2026-12-04T01:02:03.456Z` for the moment `ago` before now.
    static func iso8601(ago: Duration) -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        let nowNanos = Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
        let thenNanos = nowNanos - ago.nanosecondsClamped
        var seconds = time_t(thenNanos / 1_000_000_000)
        let millis = Int((thenNanos % 1_000_000_000) / 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms)Z"
    }
}

/// Writes a whole text file (created or truncated, mode 0644).
enum TextFile {
    struct WriteError: Error, CustomStringConvertible {
        var description: String
    }

    /// Why `path` could not be written (its directory missing or read-only, or the file read-only), or nil.
    static func writeProblem(_ path: String) -> String? {
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let target = access(path, F_OK) == 0 ? path : (directory.isEmpty ? "/" : directory)
        guard access(target, W_OK) != 0 else { return nil }
        return "\(target): \(String(cString: strerror(errno)))"
    }

    static func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WriteError(description: String(cString: strerror(errno))) }
        defer { close(fd) }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw WriteError(description: String(cString: strerror(errno)))
            }
            bytes = bytes.dropFirst(written)
        }
    }
}
