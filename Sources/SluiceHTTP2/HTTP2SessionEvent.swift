import NIOCore

/// What an ``NGHTTP2Session`` reports, in the order it happened on the wire.
///
/// Events are queued while libnghttp2 parses input or serialises output, and taken with
/// ``NGHTTP2Session/nextEvent()`` afterwards, so whoever handles them may call back into the session.
///
/// A stream's inbound side ends with exactly one of: a head with `endStream: true`, ``endStream(_:)``,
/// ``trailers(_:_:)``, or the stream closing with an error. Every stream that produced a head also
/// produces ``streamClosed(_:_:)`` once.
public enum HTTP2SessionEvent: Equatable, Sendable {
    /// A request head arrived on a server session (a new stream).
    case requestHead(HTTP2StreamID, HTTP2RequestHead, endStream: Bool)
    /// A final response head (status 200 or more) arrived on a client session.
    case responseHead(HTTP2StreamID, HTTP2ResponseHead, endStream: Bool)
    /// An informational (1xx) response head arrived on a client session; the final head follows on the
    /// same stream.
    case interimResponseHead(HTTP2StreamID, HTTP2ResponseHead)
    /// Body bytes. They count against the flow-control windows until passed to
    /// ``NGHTTP2Session/consume(streamID:bytes:)``.
    case data(HTTP2StreamID, ByteBuffer)
    /// The peer ended its side of the stream after body bytes (a DATA frame with END_STREAM).
    case endStream(HTTP2StreamID)
    /// Trailers arrived; they end the peer's side of the stream.
    case trailers(HTTP2StreamID, [HTTP2HeaderField])
    /// The peer sent RST_STREAM.
    case resetReceived(HTTP2StreamID, HTTP2ErrorCode)
    /// The stream is closed (both sides ended: `noError`; or reset, by either side: the reset's code).
    case streamClosed(HTTP2StreamID, HTTP2ErrorCode)
    /// The stream stopped or started taking more bytes: its send queue went above the stream's (or all
    /// queues above the connection's) high watermark, or bytes wait behind a closed flow-control window;
    /// writable again at or below half the watermarks with the window open.
    case streamWritabilityChanged(HTTP2StreamID, isWritable: Bool)
    /// Bytes (or the end) wait on the stream and the peer's flow-control window is closed (`true`); or
    /// some of them went out (`false`: the stream made progress).
    case streamFlowControlChanged(HTTP2StreamID, isBlocked: Bool)
    /// The peer sent GOAWAY.
    case goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode)
    /// A GOAWAY of ours was serialised into the output.
    case goAwaySent(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode)
    /// The peer sent a PING (libnghttp2 acknowledges it by itself).
    case pingReceived(payload: UInt64)
    /// The peer acknowledged one of our PINGs.
    case pingAckReceived(payload: UInt64)
    /// The peer sent SETTINGS (libnghttp2 applies and acknowledges them by itself).
    case settingsReceived
    /// The peer acknowledged our SETTINGS.
    case settingsAckReceived
    /// Our SETTINGS were serialised into the output.
    case settingsSent
}
