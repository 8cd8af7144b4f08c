import SluiceHTTP2
import Testing

@Suite struct HTTP2GracefulShutdownStateMachineTests {
    typealias Machine = HTTP2GracefulShutdownStateMachine<MockClock>
    let clock = MockClock()
    let payload = Machine.Configuration().pingPayload

    /// Without a shutdown, streams open and close and nothing asks to close the connection.
    @Test func streamsOpenAndCloseWhileActive() {
        var machine = Machine()
        #expect(machine.streamOpened(HTTP2StreamID(1)) == .accept)
        #expect(machine.streamOpened(HTTP2StreamID(3)) == .accept)
        #expect(machine.openStreams == [HTTP2StreamID(1), HTTP2StreamID(3)])
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .none)
        #expect(machine.streamClosed(HTTP2StreamID(3)) == .none)
        #expect(machine.openStreams.isEmpty)
        #expect(!machine.isShuttingDown)
    }

    /// beginShutdown asks for the notice and a PING with a 1 s timeout, and only once.
    @Test func beginShutdownSendsNoticeAndPingOnce() {
        var machine = Machine()
        #expect(machine.beginShutdown(now: clock.now) == .sendShutdownNoticeAndPing(pingPayload: payload, pingTimeout: .seconds(1)))
        #expect(machine.isShuttingDown)
        #expect(machine.beginShutdown(now: clock.now) == .none)
    }

    /// The ack of the shutdown PING sends the final GOAWAY with the highest stream opened, including streams
    /// opened after the notice, and measures the round trip.
    @Test func pingAckSendsFinalGoAwayWithLastStreamOpenedDuringNotice() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        clock.advance(by: .milliseconds(30))
        #expect(machine.streamOpened(HTTP2StreamID(5)) == .accept)
        clock.advance(by: .milliseconds(12))
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .sendFinalGoAway(lastStreamID: HTTP2StreamID(5), closeConnection: false))
        #expect(machine.measuredRoundTripTime == .milliseconds(42))
    }

    /// An ack of some other PING does not end the wait.
    @Test func foreignPingAckIsIgnored() {
        var machine = Machine()
        _ = machine.beginShutdown(now: clock.now)
        #expect(machine.pingAckReceived(payload: 7, now: clock.now) == .none)
        #expect(machine.measuredRoundTripTime == nil)
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .sendFinalGoAway(lastStreamID: .connection, closeConnection: true))
    }

    /// A PING ack before any shutdown means nothing to the drain.
    @Test func pingAckWhileActiveIsIgnored() {
        var machine = Machine()
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .none)
        #expect(!machine.isShuttingDown)
    }

    /// With no open stream, the final GOAWAY closes the connection at once.
    @Test func idleConnectionClosesWithFinalGoAway() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.streamClosed(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .sendFinalGoAway(lastStreamID: HTTP2StreamID(1), closeConnection: true))
        #expect(machine.streamOpened(HTTP2StreamID(3)) == .refuse)
    }

    /// If the ack never comes, the timer sends the final GOAWAY; a late ack then changes nothing.
    @Test func pingTimeoutSendsFinalGoAway() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        clock.advance(by: .seconds(1))
        #expect(machine.pingTimedOut() == .sendFinalGoAway(lastStreamID: HTTP2StreamID(1), closeConnection: false))
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .none)
        #expect(machine.measuredRoundTripTime == nil)
        #expect(machine.pingTimedOut() == .none)
    }

    /// The ping timer firing after the ack is a no-op.
    @Test func pingTimeoutAfterAckIsIgnored() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        _ = machine.pingAckReceived(payload: payload, now: clock.now)
        #expect(machine.pingTimedOut() == .none)
    }

    /// The ping timer without a shutdown is a no-op.
    @Test func pingTimeoutWhileActiveIsIgnored() {
        var machine = Machine()
        #expect(machine.pingTimedOut() == .none)
    }

    /// After the final GOAWAY, the last open stream closing closes the connection, not before.
    @Test func lastStreamClosingAfterFinalGoAwayClosesConnection() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.streamOpened(HTTP2StreamID(3))
        _ = machine.beginShutdown(now: clock.now)
        _ = machine.pingAckReceived(payload: payload, now: clock.now)
        #expect(machine.streamClosed(HTTP2StreamID(3)) == .none)
        #expect(machine.streamClosed(HTTP2StreamID(99)) == .none)
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .closeConnection)
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .none)
    }

    /// Streams closing while waiting for the ack never close the connection: the client may still open some.
    @Test func streamsClosingDuringNoticeDoNotClose() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .none)
        #expect(machine.openStreams.isEmpty)
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .sendFinalGoAway(lastStreamID: HTTP2StreamID(1), closeConnection: true))
    }

    /// After the final GOAWAY a stream above the last-stream-id is refused; one at or below is accepted.
    @Test func streamAboveLastStreamIDIsRefusedAfterFinalGoAway() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(3))
        _ = machine.beginShutdown(now: clock.now)
        _ = machine.pingAckReceived(payload: payload, now: clock.now)
        #expect(machine.streamOpened(HTTP2StreamID(5)) == .refuse)
        #expect(machine.streamOpened(HTTP2StreamID(1)) == .accept)
        #expect(machine.openStreams == [HTTP2StreamID(1), HTTP2StreamID(3)])
    }

    /// The deadline cuts every open stream, in order, and closes; a second deadline is a no-op.
    @Test func deadlineResetsOpenStreamsAndCloses() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(5))
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        _ = machine.pingAckReceived(payload: payload, now: clock.now)
        #expect(machine.deadlineReached() == .resetStreamsAndClose(streams: [HTTP2StreamID(1), HTTP2StreamID(5)], finalGoAway: nil))
        #expect(machine.deadlineReached() == .none)
        #expect(machine.streamOpened(HTTP2StreamID(7)) == .refuse)
        #expect(machine.connectionClosed() == .streamsLost([]))
    }

    /// Issue 14 item 12b: the deadline after the final GOAWAY cuts the streams without a second final
    /// GOAWAY; the final GOAWAY goes out once per connection, whichever way the drain ends.
    @Test func deadlineAfterFinalGoAwayDoesNotSendItAgain() {
        var acked = Machine()
        _ = acked.streamOpened(HTTP2StreamID(3))
        _ = acked.sendShutdownNotice(now: clock.now)
        _ = acked.pingAckReceived(payload: payload, now: clock.now)
        #expect(acked.beginShutdown(now: clock.now) == .sendFinalGoAway(lastStreamID: HTTP2StreamID(3), closeConnection: false))
        #expect(acked.deadlineReached() == .resetStreamsAndClose(streams: [HTTP2StreamID(3)], finalGoAway: nil))

        var timedOut = Machine()
        _ = timedOut.streamOpened(HTTP2StreamID(1))
        _ = timedOut.beginShutdown(now: clock.now)
        #expect(timedOut.pingTimedOut() == .sendFinalGoAway(lastStreamID: HTTP2StreamID(1), closeConnection: false))
        #expect(timedOut.pingAckReceived(payload: payload, now: clock.now) == .none)
        #expect(timedOut.beginShutdown(now: clock.now) == .none)
        #expect(timedOut.deadlineReached() == .resetStreamsAndClose(streams: [HTTP2StreamID(1)], finalGoAway: nil))
        #expect(timedOut.deadlineReached() == .none)
    }

    /// A forced close (deadline) while still waiting for the ack cuts streams too.
    @Test func deadlineWhileWaitingForPingAck() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.beginShutdown(now: clock.now)
        #expect(machine.deadlineReached() == .resetStreamsAndClose(streams: [HTTP2StreamID(1)], finalGoAway: HTTP2StreamID(1)))
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .none)
        #expect(machine.pingTimedOut() == .none)
    }

    /// A forced close without a drain cuts the open streams.
    @Test func deadlineWhileActive() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(1))
        #expect(machine.deadlineReached() == .resetStreamsAndClose(streams: [HTTP2StreamID(1)], finalGoAway: HTTP2StreamID(1)))
        #expect(machine.beginShutdown(now: clock.now) == .none)
    }

    /// The peer closing the connection reports the streams that were open, and everything after is ignored.
    @Test func connectionClosedReportsLostStreams() {
        var machine = Machine()
        _ = machine.streamOpened(HTTP2StreamID(3))
        _ = machine.streamOpened(HTTP2StreamID(1))
        #expect(machine.connectionClosed() == .streamsLost([HTTP2StreamID(1), HTTP2StreamID(3)]))
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .none)
        #expect(machine.beginShutdown(now: clock.now) == .none)
        #expect(machine.deadlineReached() == .none)
        #expect(machine.openStreams.isEmpty)
    }

    /// A custom ping timeout and payload are passed through.
    @Test func configurationIsHonoured() {
        var machine = Machine(configuration: .init(pingTimeout: .milliseconds(250), pingPayload: 42))
        #expect(machine.beginShutdown(now: clock.now) == .sendShutdownNoticeAndPing(pingPayload: 42, pingTimeout: .milliseconds(250)))
        #expect(machine.pingAckReceived(payload: 42, now: clock.now) == .sendFinalGoAway(lastStreamID: .connection, closeConnection: true))
    }

    // MARK: - Notice first (propagating), drain later

    /// The notice alone keeps serving: streams open and close without closing the connection, and the ack
    /// only measures the round trip.
    @Test func noticeAloneKeepsServing() {
        var machine = Machine()
        #expect(machine.sendShutdownNotice(now: clock.now) == .sendShutdownNoticeAndPing(pingPayload: payload, pingTimeout: .seconds(1)))
        #expect(machine.isShuttingDown)
        #expect(machine.streamOpened(HTTP2StreamID(1)) == .accept)
        clock.advance(by: .milliseconds(7))
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .none)
        #expect(machine.measuredRoundTripTime == .milliseconds(7))
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .none)
        #expect(machine.streamOpened(HTTP2StreamID(3)) == .accept)
        #expect(machine.sendShutdownNotice(now: clock.now) == .none)
    }

    /// Draining after the notice's round trip is over sends the final GOAWAY at once.
    @Test func drainAfterAckedNoticeSendsFinalGoAwayAtOnce() {
        var machine = Machine()
        _ = machine.sendShutdownNotice(now: clock.now)
        _ = machine.streamOpened(HTTP2StreamID(1))
        _ = machine.pingAckReceived(payload: payload, now: clock.now)
        _ = machine.streamOpened(HTTP2StreamID(3))
        clock.advance(by: .seconds(5))
        #expect(machine.beginShutdown(now: clock.now) == .sendFinalGoAway(lastStreamID: HTTP2StreamID(3), closeConnection: false))
        #expect(machine.streamClosed(HTTP2StreamID(1)) == .none)
        #expect(machine.streamClosed(HTTP2StreamID(3)) == .closeConnection)
    }

    /// Draining an idle connection after the notice timed out closes with the final GOAWAY.
    @Test func drainAfterTimedOutNoticeClosesIdleConnection() {
        var machine = Machine()
        _ = machine.sendShutdownNotice(now: clock.now)
        #expect(machine.pingTimedOut() == .none)
        #expect(machine.beginShutdown(now: clock.now) == .sendFinalGoAway(lastStreamID: .connection, closeConnection: true))
        #expect(machine.streamOpened(HTTP2StreamID(1)) == .refuse)
    }

    /// Draining while the notice's PING is still out waits for its ack, which then sends the final GOAWAY.
    @Test func drainDuringNoticeRoundTripWaitsForAck() {
        var machine = Machine()
        _ = machine.sendShutdownNotice(now: clock.now)
        _ = machine.streamOpened(HTTP2StreamID(1))
        #expect(machine.beginShutdown(now: clock.now) == .none)
        #expect(machine.beginShutdown(now: clock.now) == .none)
        #expect(machine.pingAckReceived(payload: payload, now: clock.now) == .sendFinalGoAway(lastStreamID: HTTP2StreamID(1), closeConnection: false))
    }

    /// Draining while the notice's PING is still out: the timeout sends the final GOAWAY instead.
    @Test func drainDuringNoticeRoundTripThenTimeout() {
        var machine = Machine()
        _ = machine.sendShutdownNotice(now: clock.now)
        #expect(machine.beginShutdown(now: clock.now) == .none)
        #expect(machine.pingTimedOut() == .sendFinalGoAway(lastStreamID: .connection, closeConnection: true))
    }

    /// A notice after the drain began changes nothing; the deadline after a notice cuts the streams.
    @Test func noticeAfterDrainIsIgnoredAndDeadlineCutsNoticedStreams() {
        var draining = Machine()
        _ = draining.beginShutdown(now: clock.now)
        #expect(draining.sendShutdownNotice(now: clock.now) == .none)

        var noticed = Machine()
        _ = noticed.sendShutdownNotice(now: clock.now)
        _ = noticed.streamOpened(HTTP2StreamID(9))
        #expect(noticed.deadlineReached() == .resetStreamsAndClose(streams: [HTTP2StreamID(9)], finalGoAway: HTTP2StreamID(9)))
    }
}
