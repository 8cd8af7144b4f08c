import Logging
import NIOCore
import SluiceCore

/// Runs the drain lifecycle: feeds signals, deadlines and the loops' "drained" reports into
/// ``DrainLifecycleStateMachine`` and carries its actions out on the ``ProxyServer``.
///
/// This is the one place where time passes for the drain; the hot path never waits on it.
/// ```swift
/// let coordinator = DrainCoordinator(server: server, logger: logger)
/// let outcome = await coordinator.run(signals: signalStream)   // returns when stopped or forced
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

    private enum Event: Sendable {
        case signal(DrainSignal)
        case loop(LoopEvent)
        case tick
    }

    let server: ProxyServer
    let logger: Logger

    public init(server: ProxyServer, logger: Logger) {
        self.server = server
        self.logger = logger
    }

    /// Marks the server as serving (its listeners are bound) and runs until it has stopped.
    public func run(signals: AsyncStream<DrainSignal>) async -> Outcome {
        let clock = MonotonicClock()
        let drain = self.server.config.drain
        var machine = DrainLifecycleStateMachine<MonotonicClock>(delay: drain.delay, timeout: drain.timeout)
        let startedAt = clock.now
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let forwardSignals = Task {
            for await signal in signals { continuation.yield(.signal(signal)) }
        }
        let forwardLoops = Task { [server] in
            for await event in server.events { continuation.yield(.loop(event)) }
        }
        defer {
            forwardSignals.cancel()
            forwardLoops.cancel()
        }
        var timer: Task<Void, Never>?
        func arm(_ deadline: MonotonicInstant?) {
            timer?.cancel()
            timer = deadline.map { deadline in
                Task {
                    try? await clock.sleep(until: deadline, tolerance: nil)
                    if !Task.isCancelled { continuation.yield(.tick) }
                }
            }
        }

        switch machine.listenersBound() {
        case .startServing: await self.enter(.serving, deadline: nil, since: startedAt)
        case .none: return .clean
        }

        var drainedLoops = Set<Int>()
        // "elapsed" in the phase log lines counts from the first signal.
        var phaseStart = startedAt
        var drainBegan = false
        for await event in events {
            let now = clock.now
            switch event {
            case .signal(let signal):
                if !drainBegan {
                    drainBegan = true
                    phaseStart = now
                }
                self.logger.notice("signal received", metadata: ["signal": "\(signal)", "phase": "\(machine.phase.rawValue)"])
                switch machine.signalReceived(signal, now: now) {
                case .none: break
                case .startPropagating(let until):
                    self.server.setPhase(.propagating, deadline: until)
                    self.server.beginPropagating(until: until)
                    await self.enter(.propagating, deadline: until, since: phaseStart)
                case .startDraining(let deadline):
                    self.server.setPhase(.draining, deadline: deadline)
                    self.server.beginDraining()
                    await self.enter(.draining, deadline: deadline, since: phaseStart)
                case .forceClose:
                    timer?.cancel()
                    return await self.force(since: phaseStart)
                case .stop:
                    timer?.cancel()
                    return .clean
                }
            case .tick:
                switch machine.deadlineReached(now: now) {
                case .none: break
                case .startDraining(let deadline):
                    self.server.setPhase(.draining, deadline: deadline)
                    self.server.beginDraining()
                    await self.enter(.draining, deadline: deadline, since: phaseStart)
                case .forceClose:
                    return await self.force(since: phaseStart)
                }
            case .loop(.drained(let loop)):
                drainedLoops.insert(loop)
                if drainedLoops.count == self.server.loopCount {
                    switch machine.connectionsDrained(now: now) {
                    case .none: break
                    case .stop:
                        timer?.cancel()
                        self.server.setPhase(.stopped, deadline: nil)
                        self.logger.notice("phase", metadata: ["phase": "stopped", "connections": "0", "in_flight": "0", "elapsed": "\(phaseStart.duration(to: now).secondsDouble)"])
                        return .clean
                    }
                }
            }
            arm(machine.nextDeadline)
        }
        return .clean
    }

    private func force(since: MonotonicInstant) async -> Outcome {
        self.server.setPhase(.forced, deadline: nil)
        let cut = await self.server.forceClose()
        self.logger.warning(
            "phase",
            metadata: ["phase": "forced", "connections_cut": "\(cut)", "elapsed": "\(since.duration(to: .now()).secondsDouble)"]
        )
        return .forced(cut: cut)
    }

    private func enter(_ phase: DrainPhase, deadline: MonotonicInstant?, since: MonotonicInstant) async {
        if phase == .serving { self.server.setPhase(.serving, deadline: nil) }
        let snapshot = try? await self.server.snapshot().get()
        var metadata: Logger.Metadata = [
            "phase": "\(phase.rawValue)",
            "connections": "\(snapshot?.connections.total ?? 0)",
            "in_flight": "\(snapshot?.connections.requestsInFlight ?? 0)",
            "elapsed": "\(since.duration(to: .now()).secondsDouble)",
        ]
        if let deadline { metadata["seconds_left"] = "\(MonotonicInstant.now().duration(to: deadline).secondsDouble)" }
        self.logger.notice("phase", metadata: metadata)
    }
}
