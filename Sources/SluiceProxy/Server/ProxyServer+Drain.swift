import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import SluiceCore

/// The drain's side of the server: the ``DrainCoordinator`` publishes the machine's phase here and
/// carries its actions to the loops; the admin endpoints read what was published and queue
/// rehearsals and `/drain/wait` requests.
extension ProxyServer {
    typealias Machine = DrainLifecycleStateMachine<MonotonicClock>

    /// Publishes the machine's view for the admin endpoints and the phase gauge (one value, written
    /// by the coordinator only).
    func publish(phase: DrainPhase, deadline: MonotonicInstant?, timeline: DrainTimeline<MonotonicInstant>?) {
        let changed = self.phase.withLockedValue { state in
            let changed = state.phase != phase
            state.phase = phase
            state.deadline = deadline
            state.timeline = timeline
            return changed
        }
        if changed { self.metrics.phase(phase) }
        if let last = timeline?.lastNewConnectionSeconds { self.metrics.lastNewConnection(seconds: last) }
    }

    /// Supervisor mode: the app answered; readiness may pass.
    public func setAppReady() {
        self.phase.withLockedValue { $0.appReady = true }
    }

    /// Carries one action of the drain machine to every loop. Returns the connections cut (by
    /// `forceClose`), else 0. The phase each loop keeps is set by these calls only.
    func carryOut(_ action: Machine.Action) async -> Int {
        switch action {
        case .none, .startServing, .startRehearsal, .endRehearsal, .stop:
            // Readiness only (published), or nothing: the loops serve on untouched.
            return 0
        case .startPropagating(let until):
            for loop in self.loops { loop.eventLoop.execute { loop.value.beginPropagating(until: until) } }
            return 0
        case .startDraining:
            for loop in self.loops { loop.eventLoop.execute { loop.value.beginDraining() } }
            return 0
        case .forceClose:
            return await self.forceClose()
        }
    }

    /// Cuts every connection; returns how many were cut.
    private func forceClose() async -> Int {
        self.upstreamServices.stop()
        var cut = 0
        for loop in self.loops {
            cut += (try? await loop.eventLoop.submit { loop.value.forceClose() }.get()) ?? 0
        }
        return cut
    }

    /// The phase each loop has been told of (for tests: the published phase comes first, the loops
    /// hear of it a moment later).
    func loopPhases() async -> [DrainPhase] {
        var phases: [DrainPhase] = []
        for loop in self.loops {
            phases.append((try? await loop.eventLoop.submit { loop.value.phase }.get()) ?? .starting)
        }
        return phases
    }

    /// Every loop counts arrivals afresh from `since` (a drain's or rehearsal's start).
    func watchArrivals(since: MonotonicInstant) async {
        for loop in self.loops {
            try? await loop.eventLoop.submit { loop.value.table.watchArrivals(since: since) }.get()
        }
    }

    /// Every loop stops counting arrivals (a rehearsal is over).
    func stopWatchingArrivals() async {
        for loop in self.loops {
            try? await loop.eventLoop.submit { loop.value.table.stopWatchingArrivals() }.get()
        }
    }

    /// The loops' arrivals and connection counts, summed, for the drain's timeline.
    func drainSample() async -> DrainTimeline<MonotonicInstant>.Sample {
        var arrivals = ConnectionTable<MonotonicInstant>.Arrivals()
        var counts = ConnectionTable<MonotonicInstant>.Counts()
        for loop in self.loops {
            guard let (loopArrivals, loopCounts) = try? await loop.eventLoop.submit({ (loop.value.table.arrivals, loop.value.table.counts()) }).get()
            else { continue }
            arrivals = arrivals + loopArrivals
            counts = counts + loopCounts
        }
        return DrainTimeline.Sample(now: .now(), arrivals: arrivals, counts: counts)
    }
}

/// A `POST /drain/rehearse?for=` request, answered by the drain coordinator with a status and a
/// JSON body once the window is over (or a SIGTERM turned it into a drain, or it was refused).
struct RehearsalRequest: Sendable {
    let window: Duration
    let answer: EventLoopPromise<(HTTPResponseStatus, String)>
}

/// Rehearsal requests between the admin listener and the drain coordinator. Every request is
/// answered exactly once: by the coordinator, or with 503 once the coordinator has finished.
final class RehearsalQueue: Sendable {
    private struct State {
        var waiting: [RehearsalRequest] = []
        var closed = false
    }

    private let state = NIOLockedValueBox(State())
    /// One element per request queued: the coordinator then takes what is waiting.
    let arrivals: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (self.arrivals, self.continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func submit(_ request: RehearsalRequest) {
        let closed = self.state.withLockedValue { state in
            if !state.closed { state.waiting.append(request) }
            return state.closed
        }
        if closed {
            request.answer.succeed((.serviceUnavailable, "{\"error\": \"the drain is over: Sluice is exiting\"}\n"))
        } else {
            self.continuation.yield()
        }
    }

    /// What has been submitted and not yet taken.
    func take() -> [RehearsalRequest] {
        self.state.withLockedValue { state in
            defer { state.waiting = [] }
            return state.waiting
        }
    }

    /// The coordinator is done: what waits, and what comes later, is answered 503.
    func close() {
        let left = self.state.withLockedValue { state in
            state.closed = true
            defer { state.waiting = [] }
            return state.waiting
        }
        for request in left { request.answer.succeed((.serviceUnavailable, "{\"error\": \"the drain is over: Sluice is exiting\"}\n")) }
        self.continuation.finish()
    }
}

/// `GET /drain/wait` requests, answered all at once when the drain ends: `drained` or `deadline`.
/// One that arrives after that is answered at once.
final class DrainWaiters: Sendable {
    private struct State {
        var result: String?
        var waiting: [(answer: EventLoopPromise<String>, written: EventLoopPromise<Void>)] = []
    }

    private let state = NIOLockedValueBox(State())

    /// The answer, once the drain has ended; the caller completes `written` once it has sent it, so
    /// that the process does not exit with the answer still unsent.
    func wait(on eventLoop: any EventLoop, written: EventLoopPromise<Void>) -> EventLoopFuture<String> {
        self.state.withLockedValue { state in
            if let result = state.result {
                return eventLoop.makeSucceededFuture(result)
            }
            let answer = eventLoop.makePromise(of: String.self)
            state.waiting.append((answer, written))
            return answer.futureResult
        }
    }

    /// Answers every waiting request with `result` and waits (at most 1 s) until each answer is sent.
    /// Only the first call answers: the drain ends once.
    func finish(_ result: String) async {
        let waiting = self.state.withLockedValue { state in
            guard state.result == nil else { return [(answer: EventLoopPromise<String>, written: EventLoopPromise<Void>)]() }
            state.result = result
            defer { state.waiting = [] }
            return state.waiting
        }
        for waiter in waiting { waiter.answer.succeed(result) }
        guard !waiting.isEmpty else { return }
        let loop = waiting[0].written.futureResult.eventLoop
        let done = loop.makePromise(of: Void.self)
        let completed = NIOLockedValueBox(false)
        let complete: @Sendable () -> Void = {
            if !completed.withLockedValue({ was in defer { was = true }; return was }) { done.succeed() }
        }
        let timeout = loop.scheduleTask(in: .seconds(1)) { complete() }
        EventLoopFuture.andAllComplete(waiting.map(\.written.futureResult), on: loop).whenComplete { _ in complete() }
        try? await done.futureResult.get()
        timeout.cancel()
    }
}
