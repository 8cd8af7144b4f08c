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
        // Every client connection costs a descriptor (and usually one upstream): use what the hard
        // limit allows. The automatic --max-connections is derived from the raised limit.
        DescriptorLimit.raiseToHard()
        let server = ProxyServer(config: config, logger: logger, configSource: source)
        let bound: ProxyServer.BoundAddresses
        do {
            bound = try await server.start()
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
        let narrator = narrate ? Task { await Self.narrate(server) } : nil
        // One reload per SIGHUP, in order; the server refuses them once the drain has begun.
        let reloader = Task {
            for await _ in signals.reload { _ = await server.reload(trigger: .signal) }
        }
        let outcome = await DrainCoordinator(server: server, logger: logger).run(signals: signals.drain)
        reloader.cancel()
        narrator?.cancel()
        await narrator?.value
        await server.shutdown()
        switch outcome {
        case .clean: logger.notice("exit", metadata: ["code": "0"])
        case .forced(let cut): logger.warning("exit", metadata: ["code": "3", "connections_cut": "\(cut)"])
        }
        return outcome.exitCode
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
}
