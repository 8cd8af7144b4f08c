/// The two-phase GOAWAY drain of one HTTP/2 connection (RFC 9113 §6.8), as a pure state machine.
///
/// A single GOAWAY with the real last-stream-id refuses every stream the client sent in the round
/// trip before it arrived. So the drain takes two GOAWAYs:
///
/// 1. ``beginShutdown(now:)`` → `.sendShutdownNoticeAndPing`: a GOAWAY with last-stream-id 2^31-1
///    (the client stops opening streams) followed by a PING.
/// 2. The PING ack (``pingAckReceived(payload:now:)``) proves the client has seen the notice, so every
///    stream it will ever open is already on the wire: `.sendFinalGoAway(lastStreamID:)` with the
///    highest stream ID opened so far. The round trip is kept in ``measuredRoundTripTime``. If no ack
///    comes within ``Configuration/pingTimeout`` (1 s), ``pingTimedOut()`` sends it instead.
/// 3. Open streams finish. When the final GOAWAY is out and none is left, the action says
///    `closeConnection`.
/// 4. ``deadlineReached()`` (the drain timeout, or a forced close) resets whatever is still open and
///    closes: `.resetStreamsAndClose`.
///
/// The machine does no I/O and reads no clock: the handler passes `now` and schedules the timers the
/// actions ask for.
///
/// ```swift
/// var machine = HTTP2GracefulShutdownStateMachine<ContinuousClock>()
/// _ = machine.streamOpened(HTTP2StreamID(1))
/// machine.beginShutdown(now: .now)          // .sendShutdownNoticeAndPing(pingPayload:, pingTimeout: .seconds(1))
/// machine.pingAckReceived(payload: p, now: .now)  // .sendFinalGoAway(lastStreamID: 1, closeConnection: false)
/// machine.streamClosed(HTTP2StreamID(1))    // .closeConnection
/// ```
public struct HTTP2GracefulShutdownStateMachine<C: Clock>: Sendable where C.Duration == Duration {
    /// Settings of the drain.
    public struct Configuration: Sendable, Equatable {
        /// How long to wait for the PING ack before sending the final GOAWAY anyway. Default 1 s.
        public var pingTimeout: Duration
        /// The opaque data of the shutdown PING, so that its ack is told apart from other PINGs.
        /// Default: the ASCII bytes `SLUICEGA`.
        public var pingPayload: UInt64

        public init(pingTimeout: Duration = .seconds(1), pingPayload: UInt64 = 0x534C_5549_4345_4741) {
            self.pingTimeout = pingTimeout
            self.pingPayload = pingPayload
        }
    }

    /// The streams of the connection: which are open, and the highest ID ever opened.
    private struct Streams: Sendable {
        var open: Set<HTTP2StreamID> = []
        var lastStreamID: HTTP2StreamID = .connection
    }

    private enum State: Sendable {
        /// Serving normally. Valid transitions: `.waitingForPingAck` (beginShutdown), `.closed`
        /// (deadlineReached, connectionClosed).
        case active(Streams)
        /// The shutdown notice and the PING were sent at `pingSentAt`; new streams are still accepted.
        /// Valid transitions: `.finalGoAwaySent` (ping ack or ping timeout), `.closed`.
        case waitingForPingAck(Streams, pingSentAt: C.Instant)
        /// The final GOAWAY was sent with `streams.lastStreamID`; no stream above it is accepted.
        /// Valid transitions: `.closed` (last stream closed, deadlineReached, connectionClosed).
        case finalGoAwaySent(Streams)
        /// The connection is closed or being closed; every event is ignored.
        case closed
    }

    private var state: State = .active(Streams())
    private let configuration: Configuration

    /// The round trip measured by the shutdown PING, once its ack arrived.
    public private(set) var measuredRoundTripTime: Duration?

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    // MARK: - Queries

    /// The IDs of the streams open now, in ascending order.
    public var openStreams: [HTTP2StreamID] {
        switch self.state {
        case .active(let streams), .waitingForPingAck(let streams, _), .finalGoAwaySent(let streams):
            streams.open.sorted()
        case .closed:
            []
        }
    }

    /// Whether `id` is open (accepted and not yet closed).
    public func isOpen(_ id: HTTP2StreamID) -> Bool {
        switch self.state {
        case .active(let streams), .waitingForPingAck(let streams, _), .finalGoAwaySent(let streams):
            streams.open.contains(id)
        case .closed:
            false
        }
    }

    /// How many streams are open.
    public var openStreamCount: Int {
        switch self.state {
        case .active(let streams), .waitingForPingAck(let streams, _), .finalGoAwaySent(let streams):
            streams.open.count
        case .closed:
            0
        }
    }

    /// Whether ``beginShutdown(now:)`` has been called (or the connection is closed).
    public var isShuttingDown: Bool {
        switch self.state {
        case .active: false
        case .waitingForPingAck, .finalGoAwaySent, .closed: true
        }
    }

    // MARK: - Streams

    /// What to do with a stream the client just opened.
    public enum StreamOpenedAction: Equatable, Sendable {
        /// Serve it.
        case accept
        /// It arrived after the final GOAWAY (above its last-stream-id) or after close: reset it with
        /// `REFUSED_STREAM` so the client may retry it elsewhere.
        case refuse
    }

    /// A client stream's request head arrived.
    public mutating func streamOpened(_ id: HTTP2StreamID) -> StreamOpenedAction {
        switch self.state {
        case .active(var streams):
            streams.open.insert(id)
            streams.lastStreamID = max(streams.lastStreamID, id)
            self.state = .active(streams)
            return .accept
        case .waitingForPingAck(var streams, let pingSentAt):
            streams.open.insert(id)
            streams.lastStreamID = max(streams.lastStreamID, id)
            self.state = .waitingForPingAck(streams, pingSentAt: pingSentAt)
            return .accept
        case .finalGoAwaySent(var streams):
            guard id <= streams.lastStreamID else { return .refuse }
            streams.open.insert(id)
            self.state = .finalGoAwaySent(streams)
            return .accept
        case .closed:
            return .refuse
        }
    }

    /// What to do after a stream closed.
    public enum StreamClosedAction: Equatable, Sendable {
        /// Nothing.
        case none
        /// The final GOAWAY is out and this was the last stream: close the connection.
        case closeConnection
    }

    /// A stream closed (both sides ended, or it was reset). Unknown IDs are ignored.
    public mutating func streamClosed(_ id: HTTP2StreamID) -> StreamClosedAction {
        switch self.state {
        case .active(var streams):
            streams.open.remove(id)
            self.state = .active(streams)
            return .none
        case .waitingForPingAck(var streams, let pingSentAt):
            streams.open.remove(id)
            self.state = .waitingForPingAck(streams, pingSentAt: pingSentAt)
            return .none
        case .finalGoAwaySent(var streams):
            streams.open.remove(id)
            if streams.open.isEmpty {
                self.state = .closed
                return .closeConnection
            }
            self.state = .finalGoAwaySent(streams)
            return .none
        case .closed:
            return .none
        }
    }

    // MARK: - Shutdown

    /// What to do when the drain begins.
    public enum BeginShutdownAction: Equatable, Sendable {
        /// Send the shutdown notice GOAWAY (last-stream-id 2^31-1) and a PING with `pingPayload`, and
        /// call ``pingTimedOut()`` after `pingTimeout`.
        case sendShutdownNoticeAndPing(pingPayload: UInt64, pingTimeout: Duration)
        /// Already draining or closed.
        case none
    }

    /// Starts the drain.
    public mutating func beginShutdown(now: C.Instant) -> BeginShutdownAction {
        switch self.state {
        case .active(let streams):
            self.state = .waitingForPingAck(streams, pingSentAt: now)
            return .sendShutdownNoticeAndPing(
                pingPayload: self.configuration.pingPayload,
                pingTimeout: self.configuration.pingTimeout
            )
        case .waitingForPingAck, .finalGoAwaySent, .closed:
            return .none
        }
    }

    /// What to do when a PING ack arrives.
    public enum PingAckReceivedAction: Equatable, Sendable {
        /// Send the final GOAWAY (`NO_ERROR`) with `lastStreamID`; then close the connection at once if
        /// `closeConnection` (no stream is open).
        case sendFinalGoAway(lastStreamID: HTTP2StreamID, closeConnection: Bool)
        /// Not the shutdown PING, or not waiting for it.
        case none
    }

    /// A PING ack arrived at `now`.
    public mutating func pingAckReceived(payload: UInt64, now: C.Instant) -> PingAckReceivedAction {
        switch self.state {
        case .waitingForPingAck(let streams, let pingSentAt):
            guard payload == self.configuration.pingPayload else { return .none }
            self.measuredRoundTripTime = pingSentAt.duration(to: now)
            let (lastStreamID, close) = self.sendFinalGoAway(streams)
            return .sendFinalGoAway(lastStreamID: lastStreamID, closeConnection: close)
        case .active, .finalGoAwaySent, .closed:
            return .none
        }
    }

    /// What to do when the PING timer fires.
    public enum PingTimedOutAction: Equatable, Sendable {
        /// No ack came in time: send the final GOAWAY anyway, and close at once if `closeConnection`.
        case sendFinalGoAway(lastStreamID: HTTP2StreamID, closeConnection: Bool)
        /// The ack already came (or the connection is closed).
        case none
    }

    /// The ``BeginShutdownAction/sendShutdownNoticeAndPing(pingPayload:pingTimeout:)`` timer fired.
    public mutating func pingTimedOut() -> PingTimedOutAction {
        switch self.state {
        case .waitingForPingAck(let streams, _):
            let (lastStreamID, close) = self.sendFinalGoAway(streams)
            return .sendFinalGoAway(lastStreamID: lastStreamID, closeConnection: close)
        case .active, .finalGoAwaySent, .closed:
            return .none
        }
    }

    private mutating func sendFinalGoAway(_ streams: Streams) -> (HTTP2StreamID, Bool) {
        if streams.open.isEmpty {
            self.state = .closed
            return (streams.lastStreamID, true)
        }
        self.state = .finalGoAwaySent(streams)
        return (streams.lastStreamID, false)
    }

    /// What to do when the drain deadline passes (or the connection is force-closed).
    public enum DeadlineReachedAction: Equatable, Sendable {
        /// Reset `streams` (`CANCEL`), send a GOAWAY with `lastStreamID` if the final one is not out yet,
        /// and close. `streams.count` is the number of streams cut.
        case resetStreamsAndClose(streams: [HTTP2StreamID], lastStreamID: HTTP2StreamID)
        /// Already closed.
        case none
    }

    /// The drain ran out of time: cut what is left.
    public mutating func deadlineReached() -> DeadlineReachedAction {
        switch self.state {
        case .active(let streams), .waitingForPingAck(let streams, _), .finalGoAwaySent(let streams):
            self.state = .closed
            return .resetStreamsAndClose(streams: streams.open.sorted(), lastStreamID: streams.lastStreamID)
        case .closed:
            return .none
        }
    }

    /// What to do when the channel went away.
    public enum ConnectionClosedAction: Equatable, Sendable {
        /// Tell the owners of `streams` that they are gone.
        case streamsLost([HTTP2StreamID])
    }

    /// The connection closed (by either side). Every later event is ignored.
    public mutating func connectionClosed() -> ConnectionClosedAction {
        let open = self.openStreams
        self.state = .closed
        return .streamsLost(open)
    }
}
