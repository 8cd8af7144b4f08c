import Logging
import NIOCore
import SluiceCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The connection slots of the whole process (`--max-connections`), shared by every listener on
/// every loop. A slot is taken when a connection is accepted and given back when it closes; only
/// accepts and closes touch it, never a request.
final class ConnectionBudget: Sendable {
    let limit: Int
    private let open = Atomic<Int>(0)
    /// Listeners not reading their accept queue (at the limit, or backing off for descriptors).
    private let paused = Atomic<Int>(0)

    init(limit: Int) {
        precondition(limit > 0)
        self.limit = limit
    }

    var openConnections: Int { self.open.load(ordering: .sequentiallyConsistent) }
    var pausedListeners: Int { self.paused.load(ordering: .sequentiallyConsistent) }
    var isFull: Bool { self.openConnections >= self.limit }

    func acquire() -> ConnectionSlot {
        var current = self.open.load(ordering: .sequentiallyConsistent)
        while current < self.limit {
            let (exchanged, original) = self.open.compareExchange(expected: current, desired: current + 1, ordering: .sequentiallyConsistent)
            if exchanged { return .taken(last: current + 1 >= self.limit) }
            current = original
        }
        return .unavailable
    }

    /// A connection closed; returns whether some listener is paused and should be woken.
    ///
    /// Sequentially consistent with ``listenerPaused()``: a listener counts itself paused, then
    /// looks at the slots; a close gives its slot back, then looks at the paused count. One of the
    /// two sees the other, so a listener never sleeps on a free slot.
    func release() -> Bool {
        self.open.subtract(1, ordering: .sequentiallyConsistent)
        return self.paused.load(ordering: .sequentiallyConsistent) > 0
    }

    func listenerPaused() { self.paused.add(1, ordering: .sequentiallyConsistent) }
    func listenerResumed() { self.paused.subtract(1, ordering: .sequentiallyConsistent) }
}

/// At most one line per `interval`, for the whole process (every listener on every loop).
final class RateLimitedLog: Sendable {
    let interval: Duration
    private let last = Atomic<Int64>(.min)

    init(interval: Duration) { self.interval = interval }

    func allow(now: MonotonicInstant) -> Bool {
        var last = self.last.load(ordering: .relaxed)
        while last == .min || MonotonicInstant(nanoseconds: last).duration(to: now) >= self.interval {
            let (exchanged, original) = self.last.compareExchange(expected: last, desired: now.nanoseconds, ordering: .relaxed)
            if exchanged { return true }
            last = original
        }
        return false
    }
}

/// The first handler of a listener's server channel: it stops the listener reading its accept
/// queue at the connection limit, and backs off when accept fails for lack of descriptors, as
/// ``AcceptGateStateMachine`` decides.
///
/// Why it is needed: NIO's `ServerSocketChannel` keeps itself open on EMFILE/ENFILE/ENOBUFS/ENOMEM
/// and fires the error down the pipeline, where nothing handles it (the tail drops it silently).
/// The pending connection stays queued, the socket stays readable (epoll is level-triggered and
/// the channel's read stays pending after a failed accept), so the loop calls `accept4` again at
/// once: both cores spun at 100 % and nothing was logged. `ServerBootstrap` adds NIO's
/// `AcceptBackoffHandler` only in its async (`NIOAsyncChannel`) `bind`, not in the future-based one
/// Sluice uses; and that handler would not have helped: it delays the *next* `read()`, but after a
/// failed accept NIO issues none (the read is still pending) and the socket stays registered.
/// Turning `autoRead` off is what takes the socket out of epoll; turning it on registers it again.
///
/// Connections beyond the limit that one read accepted anyway are parked: held, unserved, and
/// served in order as slots free (or closed with the listener).
final class AcceptGate: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel
    typealias Machine = AcceptGateStateMachine<MonotonicInstant>

    /// What every listener's gate shares.
    struct Shared: Sendable {
        /// The process's connection slots; `nil` for a listener that is not limited (admin).
        var budget: ConnectionBudget?
        var logger: Logger
        var logs: Logs
        /// Runs ``slotFreed()`` on every listener's gate, each on its loop.
        var wakeListeners: @Sendable () -> Void
    }

    /// The rate limits of the gates' log lines, one set for the process.
    final class Logs: Sendable {
        /// Out of descriptors: at most one line a second.
        let descriptors = RateLimitedLog(interval: .seconds(1))
        let recovered = RateLimitedLog(interval: .seconds(1))
        /// At the connection limit (which a busy server may reach and leave all day): one line in ten seconds.
        let limit = RateLimitedLog(interval: .seconds(10))
    }

    private let shared: Shared
    private let role: String
    private let reserve: DescriptorReserve?
    private var machine = Machine()
    private var parked = CircularBuffer<NIOAny>()
    private var retry: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var countedPaused = false
    private var lastErrno: Int32 = 0

    /// - Parameters:
    ///   - role: what the listener is, for the log (`proxy`, `admin`).
    ///   - reserve: descriptors this listener may free to accept when the process has none.
    init(role: String, shared: Shared, reserve: DescriptorReserve? = nil) {
        self.role = role
        self.shared = shared
        self.reserve = reserve
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.stop()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let slot = self.shared.budget?.acquire() ?? .taken(last: false)
        self.run(self.machine.accepted(slot: slot, now: .now()), data: data, context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError, Self.isExhaustion(ioError.errnoCode) else {
            // ECONNABORTED (a client gave up in the queue): NIO carries on. Anything else closes the listener.
            if (error as? IOError)?.errnoCode != ECONNABORTED {
                self.shared.logger.error("listener failed", metadata: ["listener": "\(self.name)", "error": "\(error)"])
            }
            return context.fireErrorCaught(error)
        }
        self.lastErrno = ioError.errnoCode
        let freed = self.reserve?.releaseOne() ?? false
        self.run(self.machine.acceptFailed(now: .now(), freedReserve: freed), data: nil, context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.stop()
        context.fireChannelInactive()
    }

    /// A connection closed somewhere in the process: serve what is parked as far as slots allow,
    /// then maybe read again. Called on this listener's loop.
    func slotFreed() {
        guard let context = self.context else { return }
        while !self.parked.isEmpty, let budget = self.shared.budget, case .taken = budget.acquire() {
            self.serve(self.parked.removeFirst(), context: context)
        }
        let limitReached = self.shared.budget?.isFull ?? false
        self.run(self.machine.slotFreed(limitReached: limitReached, stillParked: !self.parked.isEmpty), data: nil, context: context)
    }

    /// `admin 127.0.0.1:9901`, `proxy [::]:8080`.
    private var name: String {
        guard let address = self.context?.channel.localAddress, let ip = address.ipAddress, let port = address.port else { return self.role }
        return ip.contains(":") ? "\(self.role) [\(ip)]:\(port)" : "\(self.role) \(ip):\(port)"
    }

    static func isExhaustion(_ code: Int32) -> Bool {
        code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM
    }

    // MARK: Actions

    private func run(_ action: Machine.Action, data: NIOAny?, context: ChannelHandlerContext) {
        if let log = action.log { self.log(log) }
        switch action.reading {
        case .stop:
            self.setReading(false, context: context)
        case .stopAndRetry(let delay):
            self.setReading(false, context: context)
            self.retry?.cancel()
            self.retry = context.eventLoop.assumeIsolated().scheduleTask(in: delay.timeAmount) { [self] in
                self.retry = nil
                let limitReached = self.shared.budget?.isFull ?? false
                self.run(self.machine.retryDue(limitReached: limitReached), data: nil, context: context)
            }
        case .start:
            self.retry?.cancel()
            self.retry = nil
            self.setReading(true, context: context)
        case nil:
            break
        }
        switch action.connection {
        case .serve: self.serve(data!, context: context)
        case .park: self.parked.append(data!)
        case nil: break
        }
        // Paused at the limit: a slot freed between taking the last one and counting this listener
        // paused would have woken nobody. Look again.
        if action.reading == .stop, let budget = self.shared.budget, !budget.isFull {
            self.slotFreed()
        }
    }

    private func serve(_ data: NIOAny, context: ChannelHandlerContext) {
        let child = self.unwrapInboundIn(data)
        if let budget = self.shared.budget {
            let wake = self.shared.wakeListeners
            child.closeFuture.whenComplete { _ in
                if budget.release() { wake() }
            }
        }
        if let reserve = self.reserve {
            child.closeFuture.hop(to: context.eventLoop).assumeIsolated().whenComplete { _ in reserve.refill() }
        }
        context.fireChannelRead(data)
    }

    private func setReading(_ reading: Bool, context: ChannelHandlerContext) {
        // autoRead off takes the listen socket out of epoll (NIO's pauseRead0); on registers it again.
        try? context.channel.syncOptions?.setOption(.autoRead, value: reading)
        guard let budget = self.shared.budget, self.countedPaused == reading else { return }
        self.countedPaused = !reading
        if reading { budget.listenerResumed() } else { budget.listenerPaused() }
    }

    private func stop() {
        self.machine.closed()
        self.retry?.cancel()
        self.retry = nil
        if self.countedPaused {
            self.countedPaused = false
            self.shared.budget?.listenerResumed()
        }
        while let data = self.parked.popFirst() {
            self.unwrapInboundIn(data).close(promise: nil)
        }
        self.reserve?.closeAll()
    }

    private func log(_ log: Machine.Action.Log) {
        let now = MonotonicInstant.now()
        var metadata: Logger.Metadata = ["listener": "\(self.name)"]
        if let budget = self.shared.budget {
            metadata["connections"] = "\(budget.openConnections)"
            metadata["max_connections"] = "\(budget.limit)"
        }
        switch log {
        case .descriptorsExhausted:
            guard self.shared.logs.descriptors.allow(now: now) else { return }
            metadata["error"] = "\(String(cString: strerror(self.lastErrno)).lowercased()) (\(Self.errnoName(self.lastErrno)))"
            metadata["descriptor_limit"] = "\(DescriptorLimit.current)"
            if self.reserve != nil {
                self.shared.logger.warning("out of file descriptors: admin connection accepted on a reserved descriptor", metadata: metadata)
            } else {
                metadata["retry"] = "within 1s, or when a connection closes"
                metadata["hint"] = "raise the open-file limit (ulimit -n, LimitNOFILE) or lower --max-connections"
                self.shared.logger.warning("out of file descriptors: accepting paused", metadata: metadata)
            }
        case .descriptorsRecovered(let after, let failed):
            // The admin listener never paused (it accepted on a reserved descriptor): nothing to report.
            guard self.reserve == nil, self.shared.logs.recovered.allow(now: now) else { return }
            metadata["paused_seconds"] = "\((after.secondsDouble * 10).rounded() / 10)"
            metadata["failed_accepts"] = "\(failed)"
            self.shared.logger.notice("file descriptors available again: accepting", metadata: metadata)
        case .limitReached:
            guard self.shared.logs.limit.allow(now: now) else { return }
            self.shared.logger.notice("connection limit reached: accepting paused until a connection closes", metadata: metadata)
        }
    }

    private static func errnoName(_ code: Int32) -> String {
        switch code {
        case EMFILE: "EMFILE"
        case ENFILE: "ENFILE"
        case ENOBUFS: "ENOBUFS"
        case ENOMEM: "ENOMEM"
        default: "errno \(code)"
        }
    }
}
