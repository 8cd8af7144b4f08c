import NIOCore

extension ProtocolDetectionHandler {
    /// Decides, from the first bytes of a plaintext connection, whether the client speaks HTTP/2 with
    /// prior knowledge (RFC 9113 §3.3) or HTTP/1.
    ///
    /// The HTTP/2 client connection preface starts with `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`; no HTTP/1
    /// request line does (`PRI` is not a method anyone uses). An HTTP/1 request is recognised on its
    /// first byte unless that byte is `P` (`POST`, `PUT`, `PATCH`), which needs as many bytes as it
    /// takes to tell it from the preface. The preface may arrive split across reads.
    ///
    /// Pure: it sees bytes and returns a decision; the handler keeps the bytes and rebuilds the pipeline.
    struct StateMachine: Sendable {
        /// The 24-byte HTTP/2 client connection preface.
        static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

        enum Decision: Equatable, Sendable {
            /// Not enough bytes yet: keep them and wait for the next read.
            case needMoreBytes
            /// HTTP/1: install the HTTP/1 pipeline and pass every byte received so far to it.
            case http1
            /// The preface arrived complete: install the HTTP/2 handler and pass every byte to it.
            case http2
        }

        private enum State: Equatable {
            /// `matched` bytes of the preface have arrived, and no other byte.
            /// Valid transitions: to `.matching` with a larger count, to `.decided`.
            case matching(matched: Int)
            /// The decision is made; no more bytes are looked at.
            case decided(Decision)
        }

        private var state: State = .matching(matched: 0)

        /// Bytes arrived (the readable bytes of `buffer`, after all bytes passed before).
        mutating func bytesReceived(_ buffer: ByteBuffer) -> Decision {
            switch self.state {
            case .decided(let decision):
                return decision
            case .matching(var matched):
                let decision: Decision = buffer.withUnsafeReadableBytes { bytes in
                    for byte in bytes {
                        guard byte == Self.preface[matched] else { return .http1 }
                        matched += 1
                        if matched == Self.preface.count { return .http2 }
                    }
                    return .needMoreBytes
                }
                switch decision {
                case .needMoreBytes: self.state = .matching(matched: matched)
                case .http1, .http2: self.state = .decided(decision)
                }
                return decision
            }
        }

        /// The connection ended before a decision.
        var isUndecided: Bool {
            switch self.state {
            case .matching: true
            case .decided: false
            }
        }
    }
}
