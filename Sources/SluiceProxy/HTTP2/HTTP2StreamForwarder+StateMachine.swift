import SluiceCore

extension HTTP2StreamForwarder {
    /// The life of one HTTP/2 stream forwarded to an HTTP/1.1 upstream connection. Pure: it decides,
    /// the forwarder (``HTTP2StreamForwarder``) carries the actions out.
    ///
    /// ```
    ///  leasing ──upstreamConnected──► forwarding ──responseEnd──► done ──streamClosed──► closed
    ///     │  ▲                            │  │
    ///     │  └──────retry─────────────────┤  └─responseHead(opensTunnel)─► tunnel ──fail, closeTunnel──► done
    ///     │                               │    (WebSocket: upstream 101)     │
    ///     └──fail──► done ◄───fail────────┘                                  └──streamClosed──► closed
    ///            (local error response, or reset after the response began)
    /// ```
    ///
    /// A WebSocket stream (an extended CONNECT, `opensTunnel`) sends its upgrade head alone: what the
    /// client sends before the upstream's `101` queues (held by the stream's window), is sent upstream
    /// when the tunnel opens, and is dropped if the upstream answers anything else (an ordinary
    /// response). In `tunnel`, DATA both ways is the tunnel's bytes, and each side's END_STREAM or EOF
    /// half-closes the other; the upstream connection is never reused after a `101`.
    struct StateMachine: Sendable {
        private enum State: Equatable {
            /// Waiting for an upstream connection; request body parts queue (held by the stream's window).
            /// Valid transitions: `.forwarding`, `.done` (connect failed), `.closed` (client reset).
            case leasing
            /// The request streams to the upstream connection, the response streams back (for a WebSocket:
            /// the upgrade head went out, the answer is awaited or is an ordinary response).
            /// Valid transitions: `.leasing` (retry), `.tunnel` (a WebSocket's `101`), `.done`, `.closed`.
            case forwarding
            /// The upstream accepted the WebSocket upgrade and the client has its `200`: bytes flow both
            /// ways until each side ended, or one failed. Valid transitions: `.done` (the upstream failed,
            /// or the drain closed the tunnel), `.closed`.
            case tunnel
            /// The response was passed on completely, answered locally, or the stream was reset by us;
            /// the rest of the request body is discarded. Valid transitions: `.closed`.
            case done
            /// The stream is closed: nothing more is sent or released. Terminal.
            case closed
        }

        /// How a failure is answered.
        enum Failure: Equatable, Sendable {
            /// No response byte was sent: answer with the error's status.
            case respond(releaseUpstream: Bool)
            /// The response had begun: reset the stream (`INTERNAL_ERROR`), never a truncated response as whole.
            case reset(releaseUpstream: Bool)
            /// The tunnel broke (the upstream connection failed): reset the stream with `CANCEL`, the
            /// equivalent of a TCP reset (RFC 8441 §5), and close the upstream connection.
            case resetTunnel
            /// The upstream connection closed after its EOF (the client has its END_STREAM): close it and
            /// drop what the client still sends, but reset nothing, so that what the upstream sent last
            /// (queued behind the END_STREAM) still reaches the client.
            case dropTunnelUpstream
        }

        enum DataReceivedAction: Equatable, Sendable {
            /// Keep the bytes until the upstream connection is ready.
            case queue
            /// Write the bytes upstream.
            case forward
            /// Drop the bytes (and give their window back).
            case discard
            /// The body is over the limit.
            case fail(Failure, limit: Int)
        }

        enum RequestEndedAction: Equatable, Sendable {
            case queueEnd
            case sendEnd
            case none
        }

        enum UpstreamConnectedAction: Equatable, Sendable {
            /// Send the head and what queued; answer `100 Continue` first if the client waits for it.
            case startForwarding(sendContinue: Bool)
            /// A WebSocket: send the upgrade head alone; what queued waits for the `101`.
            case sendUpgrade
            /// The stream no longer wants a connection: the pool parks it.
            case decline
        }

        enum RetryOrFailAction: Equatable, Sendable {
            /// Lease a connection on another endpoint (the group's balancer avoids those tried).
            case retry
            case fail(Failure)
            case none
        }

        enum InterimResponseAction: Equatable, Sendable {
            /// Pass the 1xx head to the client (a HEADERS frame without END_STREAM).
            case forward
            case none
        }

        enum ResponseHeadAction: Equatable, Sendable {
            /// Hold the head for the client (it goes out with the first body bytes or the end).
            case send
            /// A WebSocket stream whose upgrade was answered by anything but a valid `101`: send the head
            /// as an ordinary response, and drop what the client sent (giving its window back).
            case sendDroppingQueued
            /// The WebSocket upgrade succeeded: answer `200` (no END_STREAM), then send upstream what
            /// queued, and half-close the upstream if the client had ended (`sendEnd`).
            case openTunnel(sendEnd: Bool)
            case none
        }

        enum ResponseEndAction: Equatable, Sendable {
            /// The response is complete: release the upstream connection (reusable only if the request
            /// had ended too) and end the stream.
            case finish(reusable: Bool)
            /// The upstream ended its side of the tunnel (EOF): END_STREAM to the client. The upstream
            /// connection stays until the stream closes (the client may still send).
            case endTunnel
            case none
        }

        enum CloseTunnelAction: Equatable, Sendable {
            /// Sluice ends the tunnel (the drain's close handshake is over, or timed out): END_STREAM to
            /// the client unless the upstream's EOF sent it already, and close the upstream connection.
            /// What the client still sends is dropped.
            case closeBothSides(sendEndStream: Bool)
            case none
        }

        enum StreamClosedAction: Equatable, Sendable {
            /// The client went away mid-exchange: the upstream connection is in an unknown state.
            case releaseUpstream
            /// The tunnel is over (both sides ended, or the client reset it): close the upstream connection.
            case closeTunnel
            case none
        }

        private var state: State = .leasing
        /// The stream is a WebSocket (an extended CONNECT): it asks the upstream for an upgrade.
        let opensTunnel: Bool
        private(set) var requestEnded: Bool
        private(set) var responseStarted = false
        /// A retry was made: `100 Continue` went out already (or the body is on its way).
        private var retried = false
        private let expectsContinue: Bool
        private let maxBodyBytes: Int?
        private var bodyBytes = 0
        /// The upstream ended its side of the tunnel.
        private(set) var upstreamEnded = false

        /// A stream whose head was accepted. `requestEnded`: the head carried END_STREAM. `opensTunnel`:
        /// a WebSocket (extended CONNECT); its tunnel bytes count against no body limit.
        init(requestEnded: Bool, expectsContinue: Bool, maxBodyBytes: Int?, opensTunnel: Bool = false) {
            self.requestEnded = requestEnded
            self.expectsContinue = expectsContinue && !opensTunnel
            self.maxBodyBytes = opensTunnel ? nil : maxBodyBytes
            self.opensTunnel = opensTunnel
        }

        var isClosed: Bool { self.state == .closed }
        /// The WebSocket tunnel is open (the upstream's `101` was passed on as `200`).
        var isTunnel: Bool { self.state == .tunnel }

        mutating func dataReceived(bytes: Int) -> DataReceivedAction {
            self.bodyBytes += bytes
            switch self.state {
            case .leasing where self.opensTunnel:
                return .queue
            case .forwarding where self.opensTunnel:
                // Before the `101` the bytes wait for it; after another answer they go nowhere.
                return self.responseStarted ? .discard : .queue
            case .leasing, .forwarding:
                if let limit = self.maxBodyBytes, self.bodyBytes > limit { return .fail(self.fail(), limit: limit) }
                return self.state == .leasing ? .queue : .forward
            case .tunnel:
                return .forward
            case .done, .closed:
                return .discard
            }
        }

        mutating func endReceived() -> RequestEndedAction {
            self.requestEnded = true
            switch self.state {
            case .leasing: return .queueEnd
            case .forwarding where self.opensTunnel: return self.responseStarted ? .none : .queueEnd
            case .forwarding, .tunnel: return .sendEnd
            case .done, .closed: return .none
            }
        }

        mutating func upstreamConnected() -> UpstreamConnectedAction {
            switch self.state {
            case .leasing:
                self.state = .forwarding
                if self.opensTunnel { return .sendUpgrade }
                return .startForwarding(sendContinue: self.expectsContinue && !self.requestEnded && !self.retried)
            case .forwarding, .tunnel:
                preconditionFailure("one lease at a time: a second connection was handed to a stream that has one")
            case .done, .closed:
                return .decline
            }
        }

        /// The connect failed. `retry`: the retry policy (``RetryPolicy``, one for HTTP/1 and HTTP/2)
        /// allows another attempt.
        mutating func upstreamConnectFailed(retry: Bool) -> RetryOrFailAction {
            switch self.state {
            case .leasing:
                if retry {
                    self.retried = true
                    return .retry
                }
                return .fail(self.fail())
            case .forwarding, .tunnel, .done, .closed:
                return .none
            }
        }

        /// An interim (1xx) head arrived before the final one. Interim heads do not start the response:
        /// a failure after them is still answered with a status. How many may come is the upstream
        /// side's to cap (the HTTP/1 parser, the h2c stream): past it the exchange fails as a bad response.
        mutating func interimResponse() -> InterimResponseAction {
            switch self.state {
            case .forwarding:
                return self.responseStarted ? .none : .forward
            case .leasing, .tunnel, .done, .closed:
                return .none
            }
        }

        /// The final response head arrived. `opensTunnel`: it is a valid `101` to this stream's WebSocket
        /// upgrade (the forwarder checked `Upgrade` and `Sec-WebSocket-Accept`; an invalid `101` is an
        /// ``upstreamFailed(retry:)`` instead).
        mutating func responseHead(opensTunnel upgraded: Bool = false) -> ResponseHeadAction {
            switch self.state {
            case .forwarding:
                if upgraded {
                    guard self.opensTunnel, !self.responseStarted else {
                        preconditionFailure("a 101 opens a tunnel only for the WebSocket upgrade it answers, once")
                    }
                    self.responseStarted = true
                    self.state = .tunnel
                    return .openTunnel(sendEnd: self.requestEnded)
                }
                self.responseStarted = true
                return self.opensTunnel ? .sendDroppingQueued : .send
            case .leasing, .tunnel, .done, .closed:
                return .none
            }
        }

        mutating func responseEnd() -> ResponseEndAction {
            switch self.state {
            case .forwarding:
                self.state = .done
                // A WebSocket upgrade answered otherwise had no body: its request is complete upstream
                // (what the client sent was never forwarded).
                return .finish(reusable: self.requestEnded || self.opensTunnel)
            case .tunnel:
                guard !self.upstreamEnded else { return .none }
                self.upstreamEnded = true
                return .endTunnel
            case .leasing, .done, .closed:
                return .none
            }
        }

        /// The upstream connection failed or timed out before the response ended, or sent a 502/503
        /// its route retries (before its head went to the client). `retry`: the retry policy allows
        /// another attempt; never once the response began.
        mutating func upstreamFailed(retry: Bool) -> RetryOrFailAction {
            switch self.state {
            case .forwarding:
                if !self.responseStarted, retry {
                    self.retried = true
                    self.state = .leasing
                    return .retry
                }
                return .fail(self.fail())
            case .tunnel:
                self.state = .done
                return .fail(self.upstreamEnded ? .dropTunnelUpstream : .resetTunnel)
            case .leasing, .done, .closed:
                return .none
            }
        }

        /// The drain ends the tunnel.
        mutating func closeTunnel() -> CloseTunnelAction {
            switch self.state {
            case .tunnel:
                self.state = .done
                return .closeBothSides(sendEndStream: !self.upstreamEnded)
            case .leasing, .forwarding, .done, .closed:
                return .none
            }
        }

        mutating func streamClosed() -> StreamClosedAction {
            let previous = self.state
            self.state = .closed
            switch previous {
            case .forwarding: return .releaseUpstream
            case .tunnel: return .closeTunnel
            case .leasing, .done, .closed: return .none
            }
        }

        /// A failure while leasing or forwarding: answer or reset, and end.
        private mutating func fail() -> Failure {
            let hadUpstream = self.state == .forwarding
            self.state = .done
            return self.responseStarted ? .reset(releaseUpstream: hadUpstream) : .respond(releaseUpstream: hadUpstream)
        }
    }
}
