/// The drain's end of one WebSocket session through a tunnel: Sluice closes it with a proper close
/// handshake (RFC 6455 §5.5.1, §7) instead of cutting the TCP connections at the deadline.
///
/// It watches both directions' frame boundaries (``WebSocketFrameTracker``: headers only, payloads
/// never unmasked). Once ``beginClose()`` is called, at the next boundary of each direction Sluice
/// injects a `Close 1001 "going away"` into it: unmasked towards the client (Sluice speaks as the
/// server), masked towards the app (as the client). Control frames may come between the fragments
/// of a message (§5.4), so any boundary will do. After its Close, whatever else comes in a direction
/// is dropped (§5.5.1: no data after a Close), except that a Close frame there is the other side's
/// reply. When both replies came, the session is over (``isFinished``); the handler closes both
/// connections then, or after its own timeout.
///
/// A session that is already closing by itself (a Close frame passed in either direction) is left
/// to finish; one whose framing the tracker lost cannot be closed cleanly and is left to the timeout.
public struct WebSocketDrainStateMachine: Sendable {
    public enum Direction: Sendable {
        case clientToUpstream
        case upstreamToClient
    }

    /// What to do with bytes that arrived in one direction.
    public struct Plan: Equatable, Sendable {
        /// Forward this many bytes from the front; the rest are dropped.
        public var forward: Int
        /// After those bytes, inject Sluice's Close into this direction.
        public var injectClose: Bool

        public init(forward: Int, injectClose: Bool) {
            self.forward = forward
            self.injectClose = injectClose
        }
    }

    public enum BeginAction: Equatable, Sendable {
        /// Inject the Close now into these directions (at a boundary); the others get it at their next one.
        case closing(injectToUpstream: Bool, injectToClient: Bool)
        /// A Close already passed (the session is closing by itself), or the framing is lost: nothing to inject.
        case notInjecting
    }

    private enum Side: Equatable, Sendable {
        /// Bytes pass.
        case open
        /// Sluice's Close goes in at the next boundary.
        case closeWanted
        /// Sluice's Close went in; `replied`: the other side's Close came back in this direction.
        case closeSent(replied: Bool)
    }

    private var toUpstream = WebSocketFrameTracker()
    private var toClient = WebSocketFrameTracker()
    private var upstreamSide = Side.open
    private var clientSide = Side.open
    /// A Close frame passed through before the drain asked for one.
    public private(set) var closePassed = false

    public init() {}

    /// Both Close replies came back: nothing more can flow.
    public var isFinished: Bool {
        self.upstreamSide == .closeSent(replied: true) && self.clientSide == .closeSent(replied: true)
    }

    /// Whether ``beginClose()`` was called and injected (or will inject) Sluice's Close frames.
    public var isClosing: Bool { self.upstreamSide != .open || self.clientSide != .open }

    /// The drain wants the session closed.
    public mutating func beginClose() -> BeginAction {
        guard !self.isClosing else { return .notInjecting }
        guard !self.closePassed, !self.toUpstream.isLost, !self.toClient.isLost else { return .notInjecting }
        let upstreamNow = self.toUpstream.isAtFrameBoundary
        let clientNow = self.toClient.isAtFrameBoundary
        self.upstreamSide = upstreamNow ? .closeSent(replied: false) : .closeWanted
        self.clientSide = clientNow ? .closeSent(replied: false) : .closeWanted
        return .closing(injectToUpstream: upstreamNow, injectToClient: clientNow)
    }

    /// Bytes arrived from one side, bound for the other.
    public mutating func received(_ bytes: UnsafeRawBufferPointer, from direction: Direction) -> Plan {
        switch direction {
        case .clientToUpstream: return Self.plan(bytes, tracker: &self.toUpstream, side: &self.upstreamSide, closePassed: &self.closePassed)
        case .upstreamToClient: return Self.plan(bytes, tracker: &self.toClient, side: &self.clientSide, closePassed: &self.closePassed)
        }
    }

    private static func plan(_ bytes: UnsafeRawBufferPointer, tracker: inout WebSocketFrameTracker, side: inout Side, closePassed: inout Bool) -> Plan {
        switch side {
        case .open:
            let progress = tracker.consume(bytes, stopAtBoundary: false)
            if progress.closeFramesEnded > 0 { closePassed = true }
            return Plan(forward: bytes.count, injectClose: false)
        case .closeWanted:
            let head = tracker.consume(bytes, stopAtBoundary: true)
            if head.closeFramesEnded > 0 { closePassed = true }
            guard tracker.isAtFrameBoundary else { return Plan(forward: head.consumed, injectClose: false) }
            // The boundary: Sluice's Close goes in here; the rest is after it.
            let rest = UnsafeRawBufferPointer(rebasing: bytes[head.consumed...])
            let tail = tracker.consume(rest, stopAtBoundary: false)
            side = .closeSent(replied: tail.closeFramesEnded > 0)
            return Plan(forward: head.consumed, injectClose: true)
        case .closeSent(let replied):
            let progress = tracker.consume(bytes, stopAtBoundary: false)
            if !replied, progress.closeFramesEnded > 0 { side = .closeSent(replied: true) }
            return Plan(forward: 0, injectClose: false)
        }
    }
}
