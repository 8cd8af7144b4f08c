/// An HTTP/2 error code as carried by RST_STREAM and GOAWAY (RFC 9113 §7).
///
/// An open struct rather than an enum: a peer may send any 32-bit value, and unknown codes must be
/// treated like `INTERNAL_ERROR` but still reported as received.
public struct HTTP2ErrorCode: Hashable, Sendable, CustomStringConvertible {
    /// The wire value.
    public let rawValue: UInt32

    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// 0x0: graceful shutdown or normal stream end.
    public static let noError = HTTP2ErrorCode(0x0)
    /// 0x1: an unspecific protocol error.
    public static let protocolError = HTTP2ErrorCode(0x1)
    /// 0x2: an unexpected internal error.
    public static let internalError = HTTP2ErrorCode(0x2)
    /// 0x3: the peer violated flow control.
    public static let flowControlError = HTTP2ErrorCode(0x3)
    /// 0x4: a SETTINGS frame was not acknowledged in time.
    public static let settingsTimeout = HTTP2ErrorCode(0x4)
    /// 0x5: a frame arrived after the stream was half-closed.
    public static let streamClosed = HTTP2ErrorCode(0x5)
    /// 0x6: a frame had an invalid size.
    public static let frameSizeError = HTTP2ErrorCode(0x6)
    /// 0x7: the stream was refused before any processing; the client may retry it.
    public static let refusedStream = HTTP2ErrorCode(0x7)
    /// 0x8: the stream is no longer needed.
    public static let cancel = HTTP2ErrorCode(0x8)
    /// 0x9: the header compression context cannot be maintained.
    public static let compressionError = HTTP2ErrorCode(0x9)
    /// 0xa: the CONNECT tunnel was reset or closed abnormally.
    public static let connectError = HTTP2ErrorCode(0xa)
    /// 0xb: the peer is generating excessive load (floods, rapid reset).
    public static let enhanceYourCalm = HTTP2ErrorCode(0xb)
    /// 0xc: the transport's security is inadequate.
    public static let inadequateSecurity = HTTP2ErrorCode(0xc)
    /// 0xd: the request must be retried over HTTP/1.1.
    public static let http11Required = HTTP2ErrorCode(0xd)

    public var description: String {
        switch self.rawValue {
        case 0x0: "NO_ERROR"
        case 0x1: "PROTOCOL_ERROR"
        case 0x2: "INTERNAL_ERROR"
        case 0x3: "FLOW_CONTROL_ERROR"
        case 0x4: "SETTINGS_TIMEOUT"
        case 0x5: "STREAM_CLOSED"
        case 0x6: "FRAME_SIZE_ERROR"
        case 0x7: "REFUSED_STREAM"
        case 0x8: "CANCEL"
        case 0x9: "COMPRESSION_ERROR"
        case 0xa: "CONNECT_ERROR"
        case 0xb: "ENHANCE_YOUR_CALM"
        case 0xc: "INADEQUATE_SECURITY"
        case 0xd: "HTTP_1_1_REQUIRED"
        default: "UNKNOWN(0x\(String(self.rawValue, radix: 16)))"
        }
    }
}
