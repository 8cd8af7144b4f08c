import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SluiceCore

/// Runs the drain lifecycle: feeds signals, deadlines, rehearsal requests, new-connection samples,
/// the app's exit and the loops' "drained" reports into ``DrainLifecycleStateMachine``, and carries
/// its actions out. A thin executor: the machine decides every phase change; this type publishes the
/// machine's phase (``ProxyServer/publish(phase:deadline:timeline:)``), hands its action to the loops
/// (``ProxyServer/carryOut(_:)``), keeps the ``DrainTimeline`` and answers the admin requests.
///
/// This is the one place where time passes for the drain; the hot path never waits on it.
/// ```swift
/// let coordinator = DrainCoordinator(server: server, logger: logger)
/// let outcome = await coordinator.run(signals: signalStream)   // returns when stopped or forced
/// coordinator.timeline                                         // the drain's, for the report
/// ```
public final class DrainCoordinator: Sendable {
    public enum Outcome: Equatable, Sendable {
        /// Every connection finished: exit 0.
        case clean
        /// The deadline (or SIGQUIT, or a third signal) cut `cut` connections: exit 3.
        case forced(cut: Int)

        public var exitCode: Int32 {
            switch self {
            case .clean: 0
            case .forced: 3
            }
        }
    }

    let server: ProxyServer
    let logger: Logger
    private let finished = NIOLockedValueBox<(timeline: DrainTimeline<MonotonicInstant>?, firstSignal: MonotonicInstant?)>((nil, nil))

    public init(server: ProxyServer, logger: Logger) {
        self.server = server
        self.logger = logger
    }

    /// The drain's timeline once ``run(signals:appExits:)`` has returned (`nil` if none began).
    public var timeline: DrainTimeline<MonotonicInstant>? { self.finished.withLockedValue { $0.timeline } }

    /// When the first signal came, once ``run(signals:appExits:)`` has returned: the termination
    /// grace counts from here (a rehearsal may have started the timeline earlier).
    public var firstSignal: MonotonicInstant? { self.finished.withLockedValue { $0.firstSignal } }

    /// Marks the server as serving (its listeners are bound) and runs until it has stopped.
    ///
    /// - Parameter appExits: supervisor mode: one element when the app has exited on its own.
    public func run(signals: AsyncStream<DrainSignal>, appExits: AsyncStream<AppExit>? = nil) async -> Outcome {
        let run = DrainRun(server: self.server, logger: self.logger)
        let outcome = await run.run(signals: signals, appExits: appExits)
        self.finished.withLockedValue { $0 = (run.timeline, run.firstSignal) }
        return outcome
    }
}

/// One run of the lifecycle, confined to the task of ``DrainCoordinator/run(signals:appExits:)``.
private final class DrainRun {
    typealias Machine = ProxyServer.Machine

    enum Event: Sendable {
        case signal(DrainSignal)
        case loop(LoopEvent)
        case tick
        case sample
        case rehearse
        case appExited
    }

    let server: ProxyServer
    let logger: Logger
    let clock = MonotonicClock()
    var machine: Machine
    var timeline: DrainTimeline<MonotonicInstant>?
    /// The rehearsal request waiting for its answer.
    var rehearsal: RehearsalRequest?
    var drainedLoops = Set<Int>()
    /// Supervisor mode: the app has exited on its own.
    var appExited = false
    /// When the first signal came.
    var firstSignal: MonotonicInstant?
    var continuation: AsyncStream<Event>.Continuation?
    var timer: Task<Void, Never>?
    var sampler: Task<Void, Never>?
    let startedAt = MonotonicInstant.now()

    init(server: ProxyServer, logger: Logger) {
        self.server = server
        self.logger = logger
        let drain = server.config.drain
        self.machine = Machine(delay: drain.delay, timeout: drain.timeout, quiet: drain.quiet.map { .init(quiet: $0, minimum: drain.delayMin) })
    }

    func run(signals: AsyncStream<DrainSignal>, appExits: AsyncStream<AppExit>?) async -> DrainCoordinator.Outcome {
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        self.continuation = continuation
        let server = self.server
        let forwards = [
            Task { for await signal in signals { continuation.yield(.signal(signal)) } },
            Task { for await event in server.events { continuation.yield(.loop(event)) } },
            Task { for await _ in server.rehearsals.arrivals { continuation.yield(.rehearse) } },
            Task {
                guard let appExits else { return }
                for await _ in appExits { continuation.yield(.appExited) }
            },
        ]
        defer {
            server.rehearsals.close()
            for task in forwards { task.cancel() }
            self.timer?.cancel()
            self.sampler?.cancel()
        }

        if let outcome = await self.execute(self.machine.listenersBound(), from: .starting, now: self.clock.now) { return outcome }
        for await event in events {
            let now = self.clock.now
            let before = self.machine.phase
            let action: Machine.Action
            switch event {
            case .signal(let signal):
                if self.firstSignal == nil { self.firstSignal = now }
                self.logger.notice("signal received", metadata: ["signal": "\(signal)", "phase": "\(before.rawValue)"])
                action = self.machine.signalReceived(signal, now: now)
            case .appExited:
                self.appExited = true
                action = self.machine.appExited(now: now)
            case .rehearse:
                // The first request waiting starts a rehearsal if the machine allows; the others are refused.
                var started: Machine.Action = .none
                for request in self.server.rehearsals.take() {
                    switch self.machine.rehearsalRequested(for: request.window, now: now) {
                    case .success(let until):
                        self.rehearsal = request
                        started = .startRehearsal(until: until)
                    case .failure(.notServing(let phase)):
                        let body = "{\"error\": \"cannot rehearse while \(phase.rawValue): a rehearsal runs only while serving\"}\n"
                        request.answer.succeed((.conflict, body))
                    }
                }
                action = started
            case .tick:
                // Arrivals first, so that a quiet period ends on what the loops have seen until now.
                if self.timeline != nil { await self.sample() }
                action = self.machine.deadlineReached(now: self.clock.now)
            case .sample:
                await self.sample()
                action = .none
            case .loop(.drained(let loop)):
                self.drainedLoops.insert(loop)
                action = self.drainedLoops.count == self.server.loopCount ? self.machine.connectionsDrained(now: now) : .none
            }
            if let outcome = await self.execute(action, from: before, now: self.clock.now) { return outcome }
        }
        return .clean
    }

    /// Carries out `action`; returns the outcome once the lifecycle is over.
    private func execute(_ action: Machine.Action, from before: DrainPhase, now: MonotonicInstant) async -> DrainCoordinator.Outcome? {
        let after = self.machine.phase
        // A rehearsal or drain that begins gets its timeline before anything is published, so that
        // `/status` never shows the new phase without it.
        var began = false
        switch action {
        case .startRehearsal where self.timeline == nil:
            self.timeline = DrainTimeline(start: now, kind: .rehearsal, trigger: .rehearsal)
            began = true
        case .startPropagating where self.timeline == nil, .startDraining where self.timeline == nil:
            self.timeline = DrainTimeline(start: self.machine.startedAt ?? now, kind: .drain, trigger: self.appExited ? .appExit : .signal)
            began = true
        case .none, .startServing, .startRehearsal, .endRehearsal, .startPropagating, .startDraining, .forceClose, .stop:
            break
        }
        // Readiness follows the machine at once, before the loops hear of the change.
        self.publish()
        if began, let start = self.timeline?.start {
            await self.server.watchArrivals(since: start)
            self.startSampling()
        }
        if before == .rehearsing, after != .rehearsing, action != .endRehearsal {
            // A SIGTERM (or the app's exit) during the rehearsal: it is a real drain now.
            self.answerRehearsal(outcome: "drain", now: now)
            self.timeline?.becomeDrain()
        }
        switch action {
        case .none:
            break
        case .startServing:
            self.publish()
            await self.logPhase(.serving)
        case .startRehearsal(let until):
            self.timeline?.mark(.rehearsing, at: now)
            self.logger.notice(
                "rehearsal", metadata: ["for": "\(DurationParser.format(self.rehearsal?.window ?? .zero))", "until_seconds": "\(now.duration(to: until).secondsDouble)"])
        case .endRehearsal:
            await self.sample()
            self.answerRehearsal(outcome: "completed", now: now)
            self.logRehearsal()
            self.timeline = nil
            self.stopSampling()
            await self.server.stopWatchingArrivals()
        case .startPropagating:
            self.timeline?.mark(.propagating, at: now)
            _ = await self.server.carryOut(action)
            await self.logPhase(after)
        case .startDraining:
            self.timeline?.mark(.draining, at: now)
            _ = await self.server.carryOut(action)
            await self.logPhase(after)
        case .forceClose:
            self.timer?.cancel()
            self.timeline?.mark(.forced, at: now)
            self.publish()
            let cut = await self.server.carryOut(action)
            await self.finish(result: "deadline")
            self.timeline?.recordForcedCloses(cut)
            self.logger.warning(
                "phase", metadata: ["phase": "forced", "connections_cut": "\(cut)", "elapsed": "\(self.elapsed(now))"])
            return .forced(cut: cut)
        case .stop:
            self.timer?.cancel()
            guard self.timeline != nil else {
                // Stopped while starting: nothing was served.
                self.publish()
                await self.server.drainWaiters.finish("drained")
                return .clean
            }
            self.timeline?.mark(.stopped, at: now)
            self.publish()
            await self.finish(result: "drained")
            self.logger.notice("phase", metadata: ["phase": "stopped", "connections": "0", "in_flight": "0", "elapsed": "\(self.elapsed(now))"])
            return .clean
        }
        self.publish()
        self.arm(self.machine.nextDeadline)
        return nil
    }

    // MARK: Timeline

    /// At once, then every 100 ms while a drain or rehearsal runs.
    private func startSampling() {
        guard self.sampler == nil, let continuation = self.continuation else { return }
        continuation.yield(.sample)
        self.sampler = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                if !Task.isCancelled { continuation.yield(.sample) }
            }
        }
    }

    private func stopSampling() {
        self.sampler?.cancel()
        self.sampler = nil
    }

    private func sample() async {
        guard self.timeline != nil else { return }
        let sample = await self.server.drainSample()
        self.timeline?.record(sample)
        if let last = sample.arrivals.lastConnectionAt { self.machine.newConnectionAccepted(at: last) }
        self.publish()
    }

    // MARK: Answers and logs

    private func publish() {
        self.server.publish(phase: self.machine.phase, deadline: self.machine.nextDeadline, timeline: self.timeline)
    }

    /// Answers `/drain/wait` (after a last sample, so the report holds the end).
    private func finish(result: String) async {
        self.stopSampling()
        if self.timeline != nil {
            let sample = await self.server.drainSample()
            self.timeline?.record(sample)
        }
        await self.server.drainWaiters.finish(result)
    }

    private func answerRehearsal(outcome: String, now: MonotonicInstant) {
        guard let request = self.rehearsal, let timeline = self.timeline else { return }
        self.rehearsal = nil
        request.answer.succeed((.ok, timeline.rehearsalJSON(window: request.window, outcome: outcome, now: now)))
    }

    private func logRehearsal() {
        guard let timeline = self.timeline else { return }
        self.logger.notice(
            "rehearsal finished",
            metadata: [
                "last_new_connection_seconds": "\(timeline.lastNewConnectionSeconds.map { String($0) } ?? "none")",
                "new_connections": "\(timeline.newConnections)",
                "suggested_drain_delay": "\(DurationParser.format(timeline.suggestedDelay))",
            ])
    }

    private func elapsed(_ now: MonotonicInstant) -> Double {
        (self.machine.startedAt ?? self.timeline?.start ?? self.startedAt).duration(to: now).secondsDouble
    }

    /// One line per phase change, with what is still open.
    private func logPhase(_ phase: DrainPhase) async {
        let snapshot = try? await self.server.snapshot().get()
        let now = MonotonicInstant.now()
        var metadata: Logger.Metadata = [
            "phase": "\(phase.rawValue)",
            "connections": "\(snapshot?.connections.total ?? 0)",
            "in_flight": "\(snapshot?.connections.requestsInFlight ?? 0)",
            "elapsed": "\(phase == .serving ? self.startedAt.duration(to: now).secondsDouble : self.elapsed(now))",
        ]
        if let deadline = self.machine.nextDeadline { metadata["seconds_left"] = "\(now.duration(to: deadline).secondsDouble)" }
        self.logger.notice("phase", metadata: metadata)
    }

    private func arm(_ deadline: MonotonicInstant?) {
        self.timer?.cancel()
        guard let deadline, let continuation = self.continuation else {
            self.timer = nil
            return
        }
        let clock = self.clock
        self.timer = Task {
            try? await clock.sleep(until: deadline, tolerance: nil)
            if !Task.isCancelled { continuation.yield(.tick) }
        }
    }
}
