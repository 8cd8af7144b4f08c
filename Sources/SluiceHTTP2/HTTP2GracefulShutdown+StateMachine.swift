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
///    closes: `.resetStreamsAndClose`, with the final GOAWAY only if it has not gone out yet (it is sent
///    once per connection).
///
/// Sluice's process drain (DESIGN.md §2) splits step 1 from step 2 by seconds: in `propagating`,
/// ``sendShutdownNotice(now:)`` sends the notice and the PING but keeps serving; in `draining`,
/// ``beginShutdown(now:)`` then sends the final GOAWAY at once if the round trip is over (acked or
/// timed out), or as soon as it is.
///
/// The machine does no I/O and reads no clock: the handler passes `now` (only to measure the round
/// trip) and schedules the timers the actions ask for.
///
/// ```swift
/// var machine = HTTP2GracefulShutdownStateMachine<ContinuousClock>()
/// _ = machine.streamOpened(HTTP2StreamID(1))
/// machine.beginShutdown(now: .now)                 // .sendShutdownNoticeAndPing(pingPayload:, pingTimeout: .seconds(1))
/// machine.pingAckReceived(payload: p, now: .now)   // .sendFinalGoAway(lastStreamID: 1, closeConnection: false)
/// machine.streamClosed(HTTP2StreamID(1))           // .closeConnection
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
        /// Serving normally. Valid transitions: `.noticeSent` (sendShutdownNotice), `.waitingForPingAck`
        /// (beginShutdown), `.closed` (deadlineReached, connectionClosed).
        case active(Streams)
        /// The shutdown notice and the PING were sent at `pingSentAt`, but the drain has not begun: serve
        /// as usual. `roundTripOver` once the ack came or the PING timed out.
        /// Valid transitions: `.waitingForPingAck` or `.finalGoAwaySent` (beginShutdown), `.closed`.
        case noticeSent(Streams, pingSentAt: C.Instant, roundTripOver: Bool)
        /// Draining: the notice and the PING were sent at `pingSentAt`; new streams are still accepted
        /// until the ack (or the timeout). Valid transitions: `.finalGoAwaySent`, `.closed`.
        case waitingForPingAck(Streams, pingSentAt: C.Instant)
        /// The final GOAWAY was sent with `streams.lastStreamID`; no stream above it is accepted.
        /// Valid transitions: `.closed` (last stream closed, deadlineReached, connectionClosed).
        case finalGoAwaySent(Streams)
        /// The connection is closed or being closed; every event is ignored. Final.
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

    private var streams: Streams? {
        switch self.state {
        case .active(let streams), .noticeSent(let streams, _, _), .waitingForPingAck(let streams, _),
            .finalGoAwaySent(let streams):
            streams
        case .closed:
            nil
        }
    }

    /// The IDs of the streams open now, in ascending order.
    public var openStreams: [HTTP2StreamID] { self.streams?.open.sorted() ?? [] }

    /// Whether `id` is open (accepted and not yet closed).
    public func isOpen(_ id: HTTP2StreamID) -> Bool { self.streams?.open.contains(id) ?? false }

    /// How many streams are open.
    public var openStreamCount: Int { self.streams?.open.count ?? 0 }

    /// Whether the shutdown notice has been sent (or the connection is closed).
    public var isShuttingDown: Bool {
        switch self.state {
        case .active: false
        case .noticeSent, .waitingForPingAck, .finalGoAwaySent, .closed: true
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
        case .noticeSent(var streams, let pingSentAt, let roundTripOver):
            streams.open.insert(id)
            streams.lastStreamID = max(streams.lastStreamID, id)
            self.state = .noticeSent(streams, pingSentAt: pingSentAt, roundTripOver: roundTripOver)
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
        case .noticeSent(var streams, let pingSentAt, let roundTripOver):
            streams.open.remove(id)
            self.state = .noticeSent(streams, pingSentAt: pingSentAt, roundTripOver: roundTripOver)
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

    /// What to do when the shutdown notice is due (the process entered `propagating`).
    public enum SendShutdownNoticeAction: Equatable, Sendable {
        /// Send the shutdown notice GOAWAY (last-stream-id 2^31-1) and a PING with `pingPayload`, and
        /// call ``pingTimedOut()`` after `pingTimeout`. Keep serving.
        case sendShutdownNoticeAndPing(pingPayload: UInt64, pingTimeout: Duration)
        /// The notice was already sent, or the connection is closed.
        case none
    }

    /// Sends the shutdown notice without starting the drain.
    public mutating func sendShutdownNotice(now: C.Instant) -> SendShutdownNoticeAction {
        switch self.state {
        case .active(let streams):
            self.state = .noticeSent(streams, pingSentAt: now, roundTripOver: false)
            return .sendShutdownNoticeAndPing(pingPayload: self.configuration.pingPayload, pingTimeout: self.configuration.pingTimeout)
        case .noticeSent, .waitingForPingAck, .finalGoAwaySent, .closed:
            return .none
        }
    }

    /// What to do when the drain begins.
    public enum BeginShutdownAction: Equatable, Sendable {
        /// Send the shutdown notice GOAWAY (last-stream-id 2^31-1) and a PING with `pingPayload`, and
        /// call ``pingTimedOut()`` after `pingTimeout`.
        case sendShutdownNoticeAndPing(pingPayload: UInt64, pingTimeout: Duration)
        /// The notice went out earlier and its round trip is over: send the final GOAWAY (`NO_ERROR`) with
        /// `lastStreamID` now, and close at once if `closeConnection` (no stream is open).
        case sendFinalGoAway(lastStreamID: HTTP2StreamID, closeConnection: Bool)
        /// Already draining or closed, or the notice's PING is still out (its ack or timeout sends the
        /// final GOAWAY).
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
        case .noticeSent(let streams, let pingSentAt, let roundTripOver):
            if roundTripOver {
                let (lastStreamID, close) = self.sendFinalGoAway(streams)
                return .sendFinalGoAway(lastStreamID: lastStreamID, closeConnection: close)
            }
            self.state = .waitingForPingAck(streams, pingSentAt: pingSentAt)
            return .none
        case .waitingForPingAck, .finalGoAwaySent, .closed:
            return .none
        }
    }

    /// What to do when a PING ack arrives.
    public enum PingAckReceivedAction: Equatable, Sendable {
        /// Send the final GOAWAY (`NO_ERROR`) with `lastStreamID`; then close the connection at once if
        /// `closeConnection` (no stream is open).
        case sendFinalGoAway(lastStreamID: HTTP2StreamID, closeConnection: Bool)
        /// Not the shutdown PING, not draining yet, or not waiting for it.
        case none
    }

    /// A PING ack arrived at `now`.
    public mutating func pingAckReceived(payload: UInt64, now: C.Instant) -> PingAckReceivedAction {
        switch self.state {
        case .noticeSent(let streams, let pingSentAt, let roundTripOver):
            guard payload == self.configuration.pingPayload, !roundTripOver else { return .none }
            self.measuredRoundTripTime = pingSentAt.duration(to: now)
            self.state = .noticeSent(streams, pingSentAt: pingSentAt, roundTripOver: true)
            return .none
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
        /// The ack already came, the drain has not begun, or the connection is closed.
        case none
    }

    /// The timer asked for with the notice fired (``Configuration/pingTimeout``).
    public mutating func pingTimedOut() -> PingTimedOutAction {
        switch self.state {
        case .noticeSent(let streams, let pingSentAt, _):
            self.state = .noticeSent(streams, pingSentAt: pingSentAt, roundTripOver: true)
            return .none
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
        /// Reset `streams` (`CANCEL`), send the final GOAWAY with `finalGoAway` unless it is nil (the
        /// final GOAWAY went out already: a connection sends it once), and close. `streams.count` is the
        /// number of streams cut.
        case resetStreamsAndClose(streams: [HTTP2StreamID], finalGoAway: HTTP2StreamID?)
        /// Already closed.
        case none
    }

    /// The drain ran out of time: cut what is left.
    public mutating func deadlineReached() -> DeadlineReachedAction {
        let finalGoAwaySent: Bool
        switch self.state {
        case .active, .noticeSent, .waitingForPingAck: finalGoAwaySent = false
        case .finalGoAwaySent: finalGoAwaySent = true
        case .closed: return .none
        }
        guard let streams = self.streams else { preconditionFailure("every state but closed has streams") }
        self.state = .closed
        return .resetStreamsAndClose(streams: streams.open.sorted(), finalGoAway: finalGoAwaySent ? nil : streams.lastStreamID)
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
