import NIOCore

/// Receives the streams of one HTTP/2 connection; called on the connection's event loop.
///
/// 1. ``streamOpened(_:head:endStream:on:)`` starts a request. Answer it through the `connection`
///    argument (``HTTP2ServerConnectionHandler/sendResponseHead(streamID:status:headers:endStream:)``,
///    ``HTTP2ServerConnectionHandler/sendData(streamID:_:endStream:)``, …), now or later.
/// 2. Body bytes arrive in ``streamDataReceived(_:data:on:)``. Call
///    ``HTTP2ServerConnectionHandler/consumed(streamID:bytes:)`` once they are passed on (written
///    upstream): only then may the client send more.
/// 3. ``streamEnded(_:trailers:on:)`` says the request is complete.
/// 4. ``streamClosed(_:errorCode:on:)`` comes once per opened stream, last: `noError` after both sides
///    ended, otherwise the reset's code (the client cancelled, or the connection went away: `cancel`).
/// 5. ``streamWritabilityChanged(_:isWritable:on:)``: stop reading the upstream while the stream is
///    not writable (more than ``HTTP2SessionConfiguration/streamHighWatermark`` bytes queued, all
///    streams over ``HTTP2SessionConfiguration/connectionHighWatermark``, or bytes waiting behind a
///    closed flow-control window), resume when it is again.
/// 6. ``streamStalled(_:on:)``: the stream is being reset (`CANCEL`) because its response waited behind
///    the client's closed flow-control window for the stall timeout; its `streamClosed` follows.
/// 7. ``connectionClosed(_:)`` comes once, after the last ``streamClosed(_:errorCode:on:)``; the handler
///    drops its reference to the delegate then.
///
/// Calls into `connection` from inside a callback are allowed.
public protocol HTTP2StreamDelegate: AnyObject {
    /// A request head arrived on a new stream. `endStream` means there is no body.
    func streamOpened(_ streamID: HTTP2StreamID, head: HTTP2RequestHead, endStream: Bool, on connection: HTTP2ServerConnectionHandler)
    /// Request body bytes arrived; they hold the flow-control window until consumed.
    func streamDataReceived(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ServerConnectionHandler)
    /// The request is complete (after its body, or with trailers).
    func streamEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ServerConnectionHandler)
    /// The stream is gone. No call for it follows, and sends on it are ignored.
    func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler)
    /// The stream stopped (`false`) or started again (`true`) taking more response bytes.
    func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler)
    /// The client sent GOAWAY (it is going away; open streams may still finish).
    func goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler)
    /// A GOAWAY of ours went out. With an error code it ends the connection for a protocol error or
    /// a flood (PROTOCOL_ERROR, ENHANCE_YOUR_CALM, SETTINGS_TIMEOUT, …): count it.
    func goAwaySent(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler)
    /// The stream stalled on flow control for the stall timeout and is being reset (`CANCEL`).
    func streamStalled(_ streamID: HTTP2StreamID, on connection: HTTP2ServerConnectionHandler)
    /// The connection closed; every stream was closed before this call.
    func connectionClosed(_ connection: HTTP2ServerConnectionHandler)
}

extension HTTP2StreamDelegate {
    public func goAwaySent(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {}
    public func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler) {}
    public func goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {}
    public func connectionClosed(_ connection: HTTP2ServerConnectionHandler) {}
    public func streamStalled(_ streamID: HTTP2StreamID, on connection: HTTP2ServerConnectionHandler) {}
}
