import Foundation
import Logging
import NIOCore
import NIOPosix
import SluiceCore
@testable import SluiceProxy

/// A real ``ProxyServer`` on 127.0.0.1 port 0 with its drain coordinator, driven by signals the test sends.
final class ProxyHarness: Sendable {
    let server: ProxyServer
    let port: Int
    let adminPort: Int
    private let signals: AsyncStream<DrainSignal>.Continuation
    let outcome: Task<DrainCoordinator.Outcome, Never>

    static func start(upstreams: [String], threads: Int = 1, _ configure: (inout SluiceConfig) -> Void = { _ in }) async throws -> ProxyHarness {
        try await self.start(upstreams: upstreams, threads: threads, source: nil, resolver: nil, configure)
    }

    /// As ``start(upstreams:threads:_:)``, with `resolver` answering for upstream names (tests change the answer).
    static func start(
        upstreams: [String] = [], threads: Int = 1, resolver: any EndpointResolving, _ configure: (inout SluiceConfig) -> Void
    ) async throws -> ProxyHarness {
        try await self.start(upstreams: upstreams, threads: threads, source: nil, resolver: resolver, configure)
    }

    /// As ``start(upstreams:threads:_:)``, with `configSource` for ``ProxyServer/reload(trigger:)``.
    static func start(
        upstreams: [String], threads: Int = 1, configSource: @escaping ConfigSource, _ configure: (inout SluiceConfig) -> Void
    ) async throws -> ProxyHarness {
        try await self.start(upstreams: upstreams, threads: threads, source: configSource, resolver: nil, configure)
    }

    private static func start(
        upstreams: [String], threads: Int, source configSource: ConfigSource?, resolver: (any EndpointResolving)?,
        _ configure: (inout SluiceConfig) -> Void
    ) async throws -> ProxyHarness {
        var config = SluiceConfig()
        config.listen = [Listener(HostPort(host: "127.0.0.1", port: 0))]
        config.admin = HostPort(host: "127.0.0.1", port: 0)
        config.upstreams = upstreams.map { UpstreamURL(parsing: $0)! }
        config.threads = threads
        configure(&config)
        if config.groups.isEmpty { config.applyShortForm() }
        // SLUICE_TEST_LOG=debug shows the proxy's log while a test runs.
        let level = ProcessInfo.processInfo.environment["SLUICE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:))
        let logger = Logger(label: "sluice-test") { label in
            guard let level else { return SwiftLogNoOpLogHandler() }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let server =
            resolver.map { ProxyServer(config: config, logger: logger, configSource: configSource, resolver: $0) }
            ?? ProxyServer(config: config, logger: logger, configSource: configSource)
        let bound = try await server.start()
        let (stream, continuation) = AsyncStream.makeStream(of: DrainSignal.self)
        let coordinator = DrainCoordinator(server: server, logger: logger)
        let outcome = Task { await coordinator.run(signals: stream) }
        // The coordinator marks the server serving first thing; wait for it so tests start from `serving`.
        while server.phase.withLockedValue({ $0.phase }) == .starting { await Task.yield() }
        return ProxyHarness(server: server, port: bound.listeners[0].port!, adminPort: bound.admin.port!, signals: continuation, outcome: outcome)
    }

    private init(server: ProxyServer, port: Int, adminPort: Int, signals: AsyncStream<DrainSignal>.Continuation, outcome: Task<DrainCoordinator.Outcome, Never>) {
        self.server = server
        self.port = port
        self.adminPort = adminPort
        self.signals = signals
        self.outcome = outcome
    }

    var url: String { "http://127.0.0.1:\(self.port)" }
    var adminURL: String { "http://127.0.0.1:\(self.adminPort)" }
    var phase: DrainPhase { self.server.phase.withLockedValue { $0.phase } }

    func signal(_ signal: DrainSignal) { self.signals.yield(signal) }

    /// Waits until the phase is `phase` and every loop has been told of it: the published phase
    /// (what `/readyz` reads) changes first, the loops a moment later.
    func reached(_ phase: DrainPhase) async -> Bool {
        await Self.eventually {
            guard self.phase == phase else { return false }
            return await self.server.loopPhases().allSatisfy { $0 == phase }
        }
    }

    /// Ends the server (forcing it if the test has not drained it) and returns how the drain ended.
    @discardableResult
    func stop() async -> DrainCoordinator.Outcome {
        if self.phase < .stopped { self.signal(.quit) }
        let outcome = await self.outcome.value
        await self.server.shutdown()
        return outcome
    }

    /// Starts a proxy in front of `upstreams`, runs `body`, then stops the proxy and runs `cleanup`
    /// (stopping the upstream), whether `body` throws or not.
    static func withProxy(
        upstreams: [String],
        _ configure: (inout SluiceConfig) -> Void = { _ in },
        cleanup: () async -> Void,
        _ body: (ProxyHarness) async throws -> Void
    ) async throws {
        let proxy = try await ProxyHarness.start(upstreams: upstreams, configure)
        do {
            try await body(proxy)
        } catch {
            await proxy.stop()
            await cleanup()
            throw error
        }
        await proxy.stop()
        await cleanup()
    }

    /// Waits, bounded, for `condition` to hold (it is re-checked on each scheduler turn).
    static func eventually(timeout: Duration = .seconds(10), _ condition: () async -> Bool) async -> Bool {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return await condition()
    }
}
