import SluiceCore

extension HTTP2StreamForwarder {
    /// The life of one HTTP/2 stream forwarded to an HTTP/1.1 upstream connection. Pure: it decides,
    /// the forwarder (``HTTP2StreamForwarder``) carries the actions out.
    ///
    /// ```
    ///  leasing ──upstreamConnected──► forwarding ──responseEnd──► done ──streamClosed──► closed
    ///     │  ▲                            │
    ///     │  └──────retry─────────────────┤ upstreamFailed before the response, when the retry policy allows
    ///     └──fail──► done ◄───fail────────┘ (local error response, or reset after the response began)
    /// ```
    struct StateMachine: Sendable {
        private enum State: Equatable {
            /// Waiting for an upstream connection; request body parts queue (held by the stream's window).
            /// Valid transitions: `.forwarding`, `.done` (connect failed), `.closed` (client reset).
            case leasing
            /// The request streams to the upstream connection, the response streams back.
            /// Valid transitions: `.leasing` (retry), `.done`, `.closed`.
            case forwarding
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
            case send
            case none
        }

        enum ResponseEndAction: Equatable, Sendable {
            /// The response is complete: release the upstream connection (reusable only if the request
            /// had ended too) and end the stream.
            case finish(reusable: Bool)
            case none
        }

        enum StreamClosedAction: Equatable, Sendable {
            /// The client went away mid-exchange: the upstream connection is in an unknown state.
            case releaseUpstream
            case none
        }

        private var state: State = .leasing
        private(set) var requestEnded: Bool
        private(set) var responseStarted = false
        /// A retry was made: `100 Continue` went out already (or the body is on its way).
        private var retried = false
        private let expectsContinue: Bool
        private let maxBodyBytes: Int?
        private var bodyBytes = 0

        /// A stream whose head was accepted. `requestEnded`: the head carried END_STREAM.
        init(requestEnded: Bool, expectsContinue: Bool, maxBodyBytes: Int?) {
            self.requestEnded = requestEnded
            self.expectsContinue = expectsContinue
            self.maxBodyBytes = maxBodyBytes
        }

        var isClosed: Bool { self.state == .closed }

        mutating func dataReceived(bytes: Int) -> DataReceivedAction {
            self.bodyBytes += bytes
            switch self.state {
            case .leasing, .forwarding:
                if let limit = self.maxBodyBytes, self.bodyBytes > limit { return .fail(self.fail(), limit: limit) }
                return self.state == .leasing ? .queue : .forward
            case .done, .closed:
                return .discard
            }
        }

        mutating func endReceived() -> RequestEndedAction {
            self.requestEnded = true
            switch self.state {
            case .leasing: return .queueEnd
            case .forwarding: return .sendEnd
            case .done, .closed: return .none
            }
        }

        mutating func upstreamConnected() -> UpstreamConnectedAction {
            switch self.state {
            case .leasing:
                self.state = .forwarding
                return .startForwarding(sendContinue: self.expectsContinue && !self.requestEnded && !self.retried)
            case .forwarding:
                preconditionFailure("one lease at a time: a second connection was handed to a forwarding stream")
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
            case .forwarding, .done, .closed:
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
            case .leasing, .done, .closed:
                return .none
            }
        }

        mutating func responseHead() -> ResponseHeadAction {
            switch self.state {
            case .forwarding:
                self.responseStarted = true
                return .send
            case .leasing, .done, .closed:
                return .none
            }
        }

        mutating func responseEnd() -> ResponseEndAction {
            switch self.state {
            case .forwarding:
                self.state = .done
                return .finish(reusable: self.requestEnded)
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
            case .leasing, .done, .closed:
                return .none
            }
        }

        mutating func streamClosed() -> StreamClosedAction {
            let previous = self.state
            self.state = .closed
            switch previous {
            case .forwarding: return .releaseUpstream
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
