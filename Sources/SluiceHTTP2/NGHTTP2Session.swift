// The one file that talks to libnghttp2 (DESIGN.md §3, STYLE.md rule 11). Written against 1.52
// (Debian 12): `nghttp2_session_mem_recv`/`mem_send` and `nghttp2_data_provider`, which 1.61+
// deprecates in favour of `*2` variants that 1.52 lacks (DESIGN.md §7).
private import CNghttp2
import NIOCore

/// The libnghttp2 version this process runs against, e.g. "1.52.0".
public enum NGHTTP2Library {
    public static var version: String {
        guard let info = nghttp2_version(0), let string = info.pointee.version_str else { return "unknown" }
        return String(cString: string)
    }
}

/// An HTTP/2 session (server or client side) over libnghttp2, with a Swift API and no I/O.
///
/// 1. Feed the bytes read from the socket to ``receive(_:)``; take what happened with ``nextEvent()``.
/// 2. Submit frames: ``submitResponse(streamID:status:headers:endStream:)``, ``submitData(streamID:_:endStream:)``,
///    ``submitTrailers(streamID:_:)``, ``submitReset(streamID:errorCode:)``, ``submitShutdownNotice()``,
///    ``submitGoAway(lastStreamID:errorCode:)``, ``submitPing(payload:)``; a client session also has
///    ``submitRequest(_:endStream:)``.
/// 3. Collect the bytes to write with ``pendingOutput(into:)``; it may queue events too (streams
///    closing as their last frame goes out, writability changes).
/// 4. Body bytes received count against the flow-control windows until ``consume(streamID:bytes:)``:
///    automatic WINDOW_UPDATE is off, so a client can send only as fast as the proxy forwards.
/// 5. Body bytes to send wait in a per-stream queue of `ByteBuffer`s. libnghttp2 pulls from it as the
///    peer's windows allow; an empty queue defers the stream until more data (or its end) is submitted.
/// 6. A stream is writable (its owner may read more from wherever the bytes come from) while its queue
///    is under ``HTTP2SessionConfiguration/streamHighWatermark``, the queues of all streams together are
///    under ``HTTP2SessionConfiguration/connectionHighWatermark``, and the peer's flow-control window
///    is open whenever bytes wait: a peer that never opens its window holds back the bytes it already
///    has, not ever more of them. Changes come as ``HTTP2SessionEvent/streamWritabilityChanged(_:isWritable:)``
///    (writable again at half the watermarks), and a window that holds waiting bytes back as
///    ``HTTP2SessionEvent/streamFlowControlChanged(_:isBlocked:)``.
///
/// Not thread-safe: one session belongs to one event loop.
///
/// ```swift
/// let session = try NGHTTP2Session(role: .server)
/// try session.receive(bytesFromSocket)
/// while let event = session.nextEvent() {
///     if case .requestHead(let id, _, _) = event {
///         try session.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
///         try session.submitData(streamID: id, body, endStream: true)
///     }
/// }
/// var out = allocator.buffer(capacity: 0)
/// try session.pendingOutput(into: &out)
/// ```
public final class NGHTTP2Session {
    /// Which end of the connection this session is.
    public enum Role: Sendable {
        /// Accepts streams (front end).
        case server
        /// Opens streams (an h2c upstream).
        case client
    }

    /// A header block being received (HEADERS + CONTINUATION are contiguous on a connection, so
    /// there is at most one).
    private struct InboundHeaderBlock {
        var streamID: Int32
        var isRequest: Bool
        var method: String?
        var scheme: String?
        var authority: String?
        var path: String?
        var extendedProtocol: String?
        var status: Int?
        var fields: [HTTP2HeaderField] = []
        var size = 0
    }

    /// What waits to be sent on one stream.
    private final class OutboundStream {
        var queue = CircularBuffer<ByteBuffer>(initialCapacity: 4)
        var queuedBytes = 0
        /// No more data will be submitted; send END_STREAM (or trailers) when the queue is empty.
        var ended = false
        var trailers: [HTTP2HeaderField]?
        /// The data provider returned NGHTTP2_ERR_DEFERRED; needs `nghttp2_session_resume_data`.
        var deferred = false
        var isWritable = true
        /// Bytes (or the end) wait, and the peer's window (stream or connection) is closed.
        var flowBlocked = false

        /// Something is left to send: body bytes, or the end of the stream.
        var hasPending: Bool { self.queuedBytes > 0 || self.ended }
    }

    public let role: Role
    private let configuration: HTTP2SessionConfiguration
    private var session: OpaquePointer?
    private let allocator = ByteBufferAllocator()
    private var events = CircularBuffer<HTTP2SessionEvent>(initialCapacity: 16)
    private var inboundHeaders: InboundHeaderBlock?
    private var outbound: [Int32: OutboundStream] = [:]
    /// Body bytes queued on all streams and not yet serialised.
    public private(set) var totalQueuedBytes = 0
    /// The queues together went over ``HTTP2SessionConfiguration/connectionHighWatermark`` and some
    /// stream was held for it: every stream's writability is looked at again once they are back under half.
    private var overConnectionBudget = false
    /// Body bytes delivered but not yet consumed, per stream.
    private var unconsumed: [Int32: Int] = [:]
    /// The buffer `receive` is feeding to libnghttp2, and its base address, so that DATA payloads can
    /// be sliced from it instead of copied.
    private var currentInput: ByteBuffer?
    private var currentInputBase: UnsafeRawPointer?
    /// A PING to submit once the shutdown notice GOAWAY is serialised, and whether it has been.
    private var pingAfterNotice: UInt64?
    private var noticeSerialised = false

    private var raw: OpaquePointer { self.session.unsafelyUnwrapped }

    /// Creates a session and queues our SETTINGS (and, for a server, expects the client preface).
    public init(role: Role, configuration: HTTP2SessionConfiguration = HTTP2SessionConfiguration()) throws {
        self.role = role
        self.configuration = configuration

        var callbacks: OpaquePointer?
        guard nghttp2_session_callbacks_new(&callbacks) == 0, let callbacks else {
            throw HTTP2SessionError.sessionFailure(libraryErrorNumber: nil, message: "nghttp2_session_callbacks_new failed")
        }
        defer { nghttp2_session_callbacks_del(callbacks) }
        Self.installCallbacks(callbacks)

        var option: OpaquePointer?
        guard nghttp2_option_new(&option) == 0, let option else {
            throw HTTP2SessionError.sessionFailure(libraryErrorNumber: nil, message: "nghttp2_option_new failed")
        }
        defer { nghttp2_option_del(option) }
        // Windows open only when the consumer consumes (`consume(streamID:bytes:)`).
        nghttp2_option_set_no_auto_window_update(option, 1)
        // No RFC 7540 priority tree, so closed streams need not be kept.
        nghttp2_option_set_no_closed_streams(option, 1)
        nghttp2_option_set_max_outbound_ack(option, configuration.maxOutboundAcks)
        nghttp2_option_set_max_settings(option, configuration.maxSettingsEntries)
        // Debian's 1.52.0-1+deb12u2 and later also carry nghttp2_option_set_stream_reset_rate_limit and
        // nghttp2_option_set_max_continuations (upstream 1.57/1.59), with defaults on; upstream 1.52 lacks
        // them, so they are not called here. HTTP2AbuseLimits counts resets itself.

        let userData = Unmanaged.passUnretained(self).toOpaque()
        let rv: Int32
        switch role {
        case .server: rv = nghttp2_session_server_new2(&self.session, callbacks, userData, option)
        case .client: rv = nghttp2_session_client_new2(&self.session, callbacks, userData, option)
        }
        guard rv == 0, self.session != nil else {
            throw HTTP2SessionError.sessionFailure(libraryErrorNumber: rv, message: Self.describe(rv))
        }

        var settings: [nghttp2_settings_entry] = [
            .init(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: configuration.maxConcurrentStreams),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: configuration.initialWindowSize),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: configuration.maxHeaderListSize),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_HEADER_TABLE_SIZE.rawValue), value: configuration.headerTableSize),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            .init(settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        if role == .server && configuration.enableConnectProtocol {
            // RFC 8441 §3: WebSockets over HTTP/2. libnghttp2 (1.41+) then checks an extended CONNECT's
            // pseudo-headers itself (`:protocol` only with CONNECT, and with `:scheme` and `:path`).
            settings.append(.init(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL.rawValue), value: 1))
        }
        let settingsRV = nghttp2_submit_settings(self.raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        guard settingsRV == 0 else {
            throw HTTP2SessionError.sessionFailure(libraryErrorNumber: settingsRV, message: Self.describe(settingsRV))
        }
        if configuration.connectionWindowSize > 65_535 {
            let windowRV = nghttp2_session_set_local_window_size(
                self.raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(clamping: configuration.connectionWindowSize)
            )
            guard windowRV == 0 else {
                throw HTTP2SessionError.sessionFailure(libraryErrorNumber: windowRV, message: Self.describe(windowRV))
            }
        }
    }

    deinit {
        nghttp2_session_del(self.session)
    }

    // MARK: - Input

    /// Parses bytes read from the peer; the events they caused are queued for ``nextEvent()``.
    ///
    /// - Throws: ``HTTP2SessionError/Code/badInput`` when the bytes are fatal to the connection (not
    ///   HTTP/2, a flood); pending output may still hold a GOAWAY worth sending before closing.
    public func receive(_ buffer: ByteBuffer) throws {
        guard buffer.readableBytes > 0 else { return }
        self.currentInput = buffer
        defer {
            self.currentInput = nil
            self.currentInputBase = nil
        }
        let rv = buffer.withUnsafeReadableBytes { bytes -> Int in
            self.currentInputBase = UnsafeRawPointer(bytes.baseAddress)
            return nghttp2_session_mem_recv(self.raw, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        if rv < 0 {
            throw HTTP2SessionError.badInput(libraryErrorNumber: Int32(rv), message: Self.describe(Int32(rv)))
        }
    }

    /// The next queued event, oldest first.
    public func nextEvent() -> HTTP2SessionEvent? {
        self.events.popFirst()
    }

    // MARK: - Output

    /// Appends up to about ``HTTP2SessionConfiguration/outputBatchSize`` bytes of frames to send.
    ///
    /// - Returns: whether more output is ready (call again after writing this batch).
    @discardableResult
    public func pendingOutput(into buffer: inout ByteBuffer) throws -> Bool {
        let limit = self.configuration.outputBatchSize
        var written = 0
        while written < limit {
            var pointer: UnsafePointer<UInt8>?
            let count = nghttp2_session_mem_send(self.raw, &pointer)
            if count < 0 {
                throw HTTP2SessionError.sessionFailure(libraryErrorNumber: Int32(count), message: Self.describe(Int32(count)))
            }
            if count > 0, let pointer {
                buffer.writeBytes(UnsafeRawBufferPointer(start: pointer, count: count))
                written += count
            }
            if self.noticeSerialised, let payload = self.pingAfterNotice {
                self.pingAfterNotice = nil
                try self.submitPing(payload: payload)
                continue
            }
            if count == 0 { return false }
        }
        if self.noticeSerialised, let payload = self.pingAfterNotice {
            self.pingAfterNotice = nil
            try self.submitPing(payload: payload)
            return true
        }
        return nghttp2_session_want_write(self.raw) != 0
    }

    /// Whether libnghttp2 has frames to send (ignoring streams deferred for lack of data).
    public var wantsWrite: Bool { nghttp2_session_want_write(self.raw) != 0 }

    /// Whether libnghttp2 still expects input. False once GOAWAY was exchanged and no stream is open,
    /// or after a fatal error: the connection can be closed once the output is written.
    public var wantsRead: Bool { nghttp2_session_want_read(self.raw) != 0 }

    // MARK: - Submissions

    /// Submits a response head on `streamID` (server role). With `endStream: false` the body follows
    /// through ``submitData(streamID:_:endStream:)`` and/or ``submitTrailers(streamID:_:)``.
    ///
    /// Header names are lowercased and connection-specific fields dropped (see ``HTTP2HeaderField``).
    public func submitResponse(streamID: HTTP2StreamID, status: Int, headers: [HTTP2HeaderField], endStream: Bool) throws {
        precondition(self.role == .server, "responses are submitted by server sessions")
        guard self.outbound[streamID.rawValue] == nil else {
            throw HTTP2SessionError.invalidStreamState("response head submitted twice on stream \(streamID)")
        }
        let rv = Self.withHeaderBlock(pseudo: [(":status", String(status))], headers) { nva, count in
            if endStream {
                return nghttp2_submit_response(self.raw, streamID.rawValue, nva, count, nil)
            }
            var provider = Self.makeDataProvider()
            return nghttp2_submit_response(self.raw, streamID.rawValue, nva, count, &provider)
        }
        guard rv == 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
        if !endStream { self.outbound[streamID.rawValue] = OutboundStream() }
    }

    /// Submits an informational (1xx) response head, e.g. 100 Continue or 103 Early Hints (server role):
    /// a HEADERS frame without END_STREAM, before the final head. Any number may precede it.
    public func submitInformationalResponse(streamID: HTTP2StreamID, status: Int, headers: [HTTP2HeaderField] = []) throws {
        precondition((100..<200).contains(status), "informational responses are 1xx, got \(status)")
        let rv = Self.withHeaderBlock(pseudo: [(":status", String(status))], headers) { nva, count in
            nghttp2_submit_headers(self.raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID.rawValue, nil, nva, count, nil)
        }
        guard rv >= 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
    }

    /// Opens a stream with a request (client role) and returns its ID. With `endStream: false` the body
    /// follows through ``submitData(streamID:_:endStream:)``.
    public func submitRequest(_ head: HTTP2RequestHead, endStream: Bool) throws -> HTTP2StreamID {
        precondition(self.role == .client, "requests are submitted by client sessions")
        var pseudo: [(String, String)] = [(":method", head.method)]
        if let scheme = head.scheme { pseudo.append((":scheme", scheme)) }
        if let authority = head.authority { pseudo.append((":authority", authority)) }
        if let path = head.path { pseudo.append((":path", path)) }
        if let extendedProtocol = head.extendedProtocol { pseudo.append((":protocol", extendedProtocol)) }
        let rv = Self.withHeaderBlock(pseudo: pseudo, head.headers) { nva, count in
            if endStream {
                return nghttp2_submit_request(self.raw, nil, nva, count, nil, nil)
            }
            var provider = Self.makeDataProvider()
            return nghttp2_submit_request(self.raw, nil, nva, count, &provider, nil)
        }
        guard rv > 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
        if !endStream { self.outbound[rv] = OutboundStream() }
        self.unconsumed[rv] = 0  // Every stream we open reports `streamClosed`.
        return HTTP2StreamID(rv)
    }

    /// Queues body bytes on a stream whose head was submitted with `endStream: false`.
    ///
    /// - Returns: false when the stream is already closed or reset (the bytes are dropped), which is
    ///   normal when the peer gave up on the stream.
    @discardableResult
    public func submitData(streamID: HTTP2StreamID, _ data: ByteBuffer, endStream: Bool) throws -> Bool {
        guard let stream = self.outbound[streamID.rawValue] else { return false }
        guard !stream.ended else {
            throw HTTP2SessionError.invalidStreamState("data submitted after the end of stream \(streamID)")
        }
        if data.readableBytes > 0 {
            stream.queue.append(data)
            stream.queuedBytes += data.readableBytes
            self.totalQueuedBytes += data.readableBytes
        }
        stream.ended = endStream
        self.checkFlowControl(streamID.rawValue, stream, sent: 0)
        self.updateWritability(streamID.rawValue, stream)
        try self.resumeIfDeferred(streamID, stream)
        return true
    }

    /// Ends a stream with trailers, after the queued data.
    ///
    /// - Returns: false when the stream is already closed or reset.
    @discardableResult
    public func submitTrailers(streamID: HTTP2StreamID, _ trailers: [HTTP2HeaderField]) throws -> Bool {
        guard let stream = self.outbound[streamID.rawValue] else { return false }
        guard !stream.ended else {
            throw HTTP2SessionError.invalidStreamState("trailers submitted after the end of stream \(streamID)")
        }
        stream.ended = true
        stream.trailers = trailers
        self.checkFlowControl(streamID.rawValue, stream, sent: 0)
        try self.resumeIfDeferred(streamID, stream)
        return true
    }

    private func resumeIfDeferred(_ streamID: HTTP2StreamID, _ stream: OutboundStream) throws {
        guard stream.deferred else { return }
        stream.deferred = false
        let rv = nghttp2_session_resume_data(self.raw, streamID.rawValue)
        guard rv == 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
    }

    /// Bytes queued on `streamID` and not yet serialised (0 for an unknown stream).
    public func queuedBytes(streamID: HTTP2StreamID) -> Int {
        self.outbound[streamID.rawValue]?.queuedBytes ?? 0
    }

    /// Whether `streamID` may take more bytes (see point 6 above; true for an unknown stream).
    public func isWritable(streamID: HTTP2StreamID) -> Bool {
        self.outbound[streamID.rawValue]?.isWritable ?? true
    }

    /// Whether bytes wait on `streamID` behind a closed flow-control window.
    public func isFlowControlBlocked(streamID: HTTP2StreamID) -> Bool {
        self.outbound[streamID.rawValue]?.flowBlocked ?? false
    }

    /// Resets a stream. Resetting a stream that is already gone does nothing. Its queued bytes are
    /// dropped at once.
    public func submitReset(streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) {
        // nghttp2_submit_rst_stream only fails for stream 0; a closed stream is ignored when sent.
        _ = nghttp2_submit_rst_stream(self.raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), streamID.rawValue, errorCode.rawValue)
        self.dropOutbound(streamID.rawValue)
    }

    /// Forgets a stream's send queue (reset, closed, or fully sent).
    private func dropOutbound(_ streamID: Int32) {
        guard let stream = self.outbound.removeValue(forKey: streamID) else { return }
        self.totalQueuedBytes -= stream.queuedBytes
        stream.queue.removeAll()
        stream.queuedBytes = 0
        self.connectionBudgetMayHaveFreed()
    }

    /// The peer's send window for `streamID`: the smaller of the stream's and the connection's.
    private func sendWindow(_ streamID: Int32) -> Int {
        let stream = nghttp2_session_get_stream_remote_window_size(self.raw, streamID)
        return Int(min(stream, nghttp2_session_get_remote_window_size(self.raw)))
    }

    /// Flow control after `sent` bytes were serialised (0: after a submission): the stream is blocked
    /// when something waits and the window left is closed; serialising bytes unblocks it.
    private func checkFlowControl(_ streamID: Int32, _ stream: OutboundStream, sent: Int) {
        // libnghttp2 takes a DATA frame's length off the windows after the read callback returns.
        let blocked = stream.hasPending && self.sendWindow(streamID) - sent <= 0
        if stream.flowBlocked && (sent > 0 || !blocked) {
            stream.flowBlocked = false
            self.events.append(.streamFlowControlChanged(HTTP2StreamID(streamID), isBlocked: false))
        }
        if blocked && !stream.flowBlocked {
            stream.flowBlocked = true
            self.events.append(.streamFlowControlChanged(HTTP2StreamID(streamID), isBlocked: true))
        }
    }

    /// Writability, with hysteresis: lost above a watermark or behind a closed window, regained at half
    /// the watermarks with the window open.
    private func updateWritability(_ streamID: Int32, _ stream: OutboundStream) {
        let streamLimit = self.configuration.streamHighWatermark
        let connectionLimit = self.configuration.connectionHighWatermark
        let writable: Bool
        if stream.isWritable {
            if self.totalQueuedBytes > connectionLimit && stream.queuedBytes > 0 { self.overConnectionBudget = true }
            writable = stream.queuedBytes <= streamLimit && !stream.flowBlocked
                && (self.totalQueuedBytes <= connectionLimit || stream.queuedBytes == 0)
        } else {
            writable = stream.queuedBytes <= streamLimit / 2 && !stream.flowBlocked
                && (!self.overConnectionBudget || self.totalQueuedBytes <= connectionLimit / 2 || stream.queuedBytes == 0)
        }
        guard writable != stream.isWritable else { return }
        stream.isWritable = writable
        self.events.append(.streamWritabilityChanged(HTTP2StreamID(streamID), isWritable: writable))
    }

    /// The queues shrank: streams held for the connection's budget may go on once it is half used.
    private func connectionBudgetMayHaveFreed() {
        guard self.overConnectionBudget, self.totalQueuedBytes <= self.configuration.connectionHighWatermark / 2 else { return }
        self.overConnectionBudget = false
        for (id, stream) in self.outbound where !stream.isWritable { self.updateWritability(id, stream) }
    }

    /// Submits the graceful-shutdown notice: GOAWAY with last-stream-id 2^31-1 (server role); then, if
    /// `pingPayload` is given, a PING that goes on the wire after it.
    ///
    /// libnghttp2 sends PING (an "urgent" frame) ahead of a GOAWAY submitted before it, so a PING submitted
    /// together with the notice would overtake it and its ack would prove nothing. The PING is therefore
    /// submitted only once the notice has been serialised (in ``pendingOutput(into:)``).
    public func submitShutdownNotice(followedByPing pingPayload: UInt64? = nil) throws {
        let rv = nghttp2_submit_shutdown_notice(self.raw)
        guard rv == 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
        self.pingAfterNotice = pingPayload
    }

    /// Submits GOAWAY. After it, libnghttp2 ignores streams the peer opens above `lastStreamID`.
    public func submitGoAway(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode) throws {
        let rv = nghttp2_submit_goaway(
            self.raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), lastStreamID.rawValue, errorCode.rawValue, nil, 0
        )
        guard rv == 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
    }

    /// Submits a PING with `payload` (its 8 bytes, big-endian); the ack comes back as
    /// ``HTTP2SessionEvent/pingAckReceived(payload:)``.
    public func submitPing(payload: UInt64) throws {
        let rv = withUnsafeBytes(of: payload.bigEndian) { bytes in
            nghttp2_submit_ping(self.raw, UInt8(NGHTTP2_FLAG_NONE.rawValue), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self))
        }
        guard rv == 0 else {
            throw HTTP2SessionError.submissionFailed(libraryErrorNumber: rv, message: Self.describe(rv))
        }
    }

    /// Reports `bytes` of `streamID`'s received body as consumed, reopening the stream's and the
    /// connection's windows by that much (WINDOW_UPDATE goes out once enough is consumed).
    /// Consuming on a closed stream does nothing: its unconsumed bytes were returned when it closed.
    public func consume(streamID: HTTP2StreamID, bytes: Int) throws {
        guard bytes > 0, let pending = self.unconsumed[streamID.rawValue] else { return }
        let amount = min(bytes, pending)
        self.unconsumed[streamID.rawValue] = pending - amount
        let rv = nghttp2_session_consume(self.raw, streamID.rawValue, amount)
        guard rv == 0 else {
            throw HTTP2SessionError.sessionFailure(libraryErrorNumber: rv, message: Self.describe(rv))
        }
    }

    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS` (unlimited, as 2^32-1, until its SETTINGS arrive).
    public var remoteMaxConcurrentStreams: Int {
        Int(nghttp2_session_get_remote_settings(self.raw, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS))
    }

    /// Whether the peer's SETTINGS allow extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, RFC 8441 §3);
    /// false until its SETTINGS arrive.
    public var remoteEnablesConnectProtocol: Bool {
        nghttp2_session_get_remote_settings(self.raw, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL) == 1
    }

    /// The highest peer-initiated stream ID libnghttp2 has processed.
    public var lastProcessedStreamID: HTTP2StreamID {
        HTTP2StreamID(nghttp2_session_get_last_proc_stream_id(self.raw))
    }

    // MARK: - Callbacks

    private static func from(_ userData: UnsafeMutableRawPointer?) -> NGHTTP2Session {
        Unmanaged<NGHTTP2Session>.fromOpaque(userData.unsafelyUnwrapped).takeUnretainedValue()
    }

    private static func installCallbacks(_ callbacks: OpaquePointer) {
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, userData in
            NGHTTP2Session.from(userData).onBeginHeaders(frame.unsafelyUnwrapped)
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, flags, userData in
            NGHTTP2Session.from(userData).onHeader(
                frame.unsafelyUnwrapped,
                name: UnsafeBufferPointer(start: name, count: nameLength),
                value: UnsafeBufferPointer(start: value, count: valueLength)
            )
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, userData in
            NGHTTP2Session.from(userData).onFrameReceived(frame.unsafelyUnwrapped)
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, userData in
            NGHTTP2Session.from(userData).onDataChunk(streamID: streamID, data: data.unsafelyUnwrapped, length: length)
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, userData in
            NGHTTP2Session.from(userData).onStreamClose(streamID: streamID, errorCode: errorCode)
        }
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks) { _, frame, userData in
            NGHTTP2Session.from(userData).onFrameSent(frame.unsafelyUnwrapped)
        }
    }

    private static func makeDataProvider() -> nghttp2_data_provider {
        nghttp2_data_provider(
            source: nghttp2_data_source(ptr: nil),
            read_callback: { _, streamID, buffer, length, flags, _, userData in
                NGHTTP2Session.from(userData).readData(
                    streamID: streamID, into: buffer.unsafelyUnwrapped, length: length, flags: flags.unsafelyUnwrapped
                )
            }
        )
    }

    private func onBeginHeaders(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        guard frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
        let category = frame.pointee.headers.cat.rawValue
        self.inboundHeaders = InboundHeaderBlock(
            streamID: frame.pointee.hd.stream_id,
            isRequest: category == NGHTTP2_HCAT_REQUEST.rawValue
        )
        return 0
    }

    private func onHeader(
        _ frame: UnsafePointer<nghttp2_frame>,
        name: UnsafeBufferPointer<UInt8>,
        value: UnsafeBufferPointer<UInt8>
    ) -> Int32 {
        guard var block = self.inboundHeaders, block.streamID == frame.pointee.hd.stream_id else { return 0 }
        self.inboundHeaders = nil  // Keep `block` uniquely referenced while it grows.
        block.size += name.count + value.count + 32
        guard block.size <= Int(self.configuration.maxHeaderListSize) else {
            // Over SETTINGS_MAX_HEADER_LIST_SIZE: libnghttp2 resets the stream (INTERNAL_ERROR); the
            // block is dropped, so no head is reported for it.
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue
        }
        let valueString = String(decoding: value, as: UTF8.self)
        if name.first == UInt8(ascii: ":") {
            switch String(decoding: name, as: UTF8.self) {
            case ":method": block.method = valueString
            case ":scheme": block.scheme = valueString
            case ":authority": block.authority = valueString
            case ":path": block.path = valueString
            case ":protocol": block.extendedProtocol = valueString
            case ":status": block.status = Int(valueString)
            default: break  // libnghttp2's HTTP messaging rejects unknown pseudo-headers before this.
            }
        } else {
            block.fields.append(HTTP2HeaderField(name: String(decoding: name, as: UTF8.self), value: valueString))
        }
        self.inboundHeaders = block
        return 0
    }

    private func onFrameReceived(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let header = frame.pointee.hd
        let endStream = header.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        let isAck = header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) != 0
        switch UInt32(header.type) {
        case NGHTTP2_DATA.rawValue:
            if endStream { self.events.append(.endStream(HTTP2StreamID(header.stream_id))) }
        case NGHTTP2_HEADERS.rawValue:
            guard let block = self.inboundHeaders, block.streamID == header.stream_id else { return 0 }
            self.inboundHeaders = nil
            self.headerBlockCompleted(block, endStream: endStream)
        case NGHTTP2_RST_STREAM.rawValue:
            self.events.append(.resetReceived(HTTP2StreamID(header.stream_id), HTTP2ErrorCode(frame.pointee.rst_stream.error_code)))
        case NGHTTP2_SETTINGS.rawValue:
            self.events.append(isAck ? .settingsAckReceived : .settingsReceived)
        case NGHTTP2_PING.rawValue:
            let payload = Self.pingPayload(frame.pointee.ping)
            self.events.append(isAck ? .pingAckReceived(payload: payload) : .pingReceived(payload: payload))
        case NGHTTP2_GOAWAY.rawValue:
            self.events.append(
                .goAwayReceived(
                    lastStreamID: HTTP2StreamID(frame.pointee.goaway.last_stream_id),
                    errorCode: HTTP2ErrorCode(frame.pointee.goaway.error_code)
                )
            )
        default:
            break
        }
        return 0
    }

    private func headerBlockCompleted(_ block: InboundHeaderBlock, endStream: Bool) {
        let streamID = HTTP2StreamID(block.streamID)
        switch self.role {
        case .server:
            if block.isRequest, let method = block.method {
                self.unconsumed[block.streamID] = 0
                let head = HTTP2RequestHead(
                    method: method,
                    scheme: block.scheme,
                    authority: block.authority,
                    path: block.path,
                    extendedProtocol: block.extendedProtocol,
                    headers: block.fields
                )
                self.events.append(.requestHead(streamID, head, endStream: endStream))
            } else if !block.isRequest {
                self.events.append(.trailers(streamID, block.fields))
            }
        case .client:
            if let status = block.status {
                // 1xx heads are informational; the final head follows on the same stream.
                guard status >= 200 else {
                    self.events.append(.interimResponseHead(streamID, HTTP2ResponseHead(status: status, headers: block.fields)))
                    return
                }
                self.unconsumed[block.streamID] = self.unconsumed[block.streamID] ?? 0
                self.events.append(.responseHead(streamID, HTTP2ResponseHead(status: status, headers: block.fields), endStream: endStream))
            } else {
                self.events.append(.trailers(streamID, block.fields))
            }
        }
    }

    private func onDataChunk(streamID: Int32, data: UnsafePointer<UInt8>, length: Int) -> Int32 {
        guard length > 0 else { return 0 }
        self.unconsumed[streamID, default: 0] += length
        let chunk: ByteBuffer
        if let input = self.currentInput, let base = self.currentInputBase,
            case let offset = UnsafeRawPointer(data) - base, offset >= 0, offset + length <= input.readableBytes,
            let slice = input.getSlice(at: input.readerIndex + offset, length: length)
        {
            // DATA payloads point into the input: share its storage instead of copying.
            chunk = slice
        } else {
            var copy = self.allocator.buffer(capacity: length)
            copy.writeBytes(UnsafeRawBufferPointer(start: data, count: length))
            chunk = copy
        }
        self.events.append(.data(HTTP2StreamID(streamID), chunk))
        return 0
    }

    private func onStreamClose(streamID: Int32, errorCode: UInt32) -> Int32 {
        self.dropOutbound(streamID)
        if let pending = self.unconsumed.removeValue(forKey: streamID) {
            // Return what the consumer never will, so the connection window does not shrink for good.
            if pending > 0 { _ = nghttp2_session_consume_connection(self.raw, pending) }
            self.events.append(.streamClosed(HTTP2StreamID(streamID), HTTP2ErrorCode(errorCode)))
        }
        return 0
    }

    private func onFrameSent(_ frame: UnsafePointer<nghttp2_frame>) -> Int32 {
        let header = frame.pointee.hd
        switch UInt32(header.type) {
        case NGHTTP2_SETTINGS.rawValue where header.flags & UInt8(NGHTTP2_FLAG_ACK.rawValue) == 0:
            self.events.append(.settingsSent)
        case NGHTTP2_GOAWAY.rawValue:
            if frame.pointee.goaway.last_stream_id == Int32.max { self.noticeSerialised = true }
            self.events.append(
                .goAwaySent(
                    lastStreamID: HTTP2StreamID(frame.pointee.goaway.last_stream_id),
                    errorCode: HTTP2ErrorCode(frame.pointee.goaway.error_code)
                )
            )
        default:
            break
        }
        return 0
    }

    private func readData(streamID: Int32, into buffer: UnsafeMutablePointer<UInt8>, length: Int, flags: UnsafeMutablePointer<UInt32>) -> Int {
        // Only a reset removes the queue of a stream whose data is still pending: stay deferred until
        // the RST_STREAM goes out and closes it.
        guard let stream = self.outbound[streamID] else { return Int(NGHTTP2_ERR_DEFERRED.rawValue) }
        var written = 0
        while written < length, var first = stream.queue.first {
            let count = min(length - written, first.readableBytes)
            first.withUnsafeReadableBytes { bytes in
                (buffer + written).update(from: bytes.baseAddress.unsafelyUnwrapped.assumingMemoryBound(to: UInt8.self), count: count)
            }
            if count == first.readableBytes {
                stream.queue.removeFirst()
            } else {
                first.moveReaderIndex(forwardBy: count)
                stream.queue[stream.queue.startIndex] = first
            }
            written += count
        }
        stream.queuedBytes -= written
        self.totalQueuedBytes -= written
        if stream.queue.isEmpty && stream.ended {
            // The end goes out with this frame: progress, and nothing is left to block.
            if stream.flowBlocked {
                stream.flowBlocked = false
                self.events.append(.streamFlowControlChanged(HTTP2StreamID(streamID), isBlocked: false))
            }
        } else {
            self.checkFlowControl(streamID, stream, sent: written)
            self.updateWritability(streamID, stream)
        }
        self.connectionBudgetMayHaveFreed()
        if stream.queue.isEmpty && stream.ended {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
            if let trailers = stream.trailers {
                flags.pointee |= NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
                let rv = Self.withHeaderBlock(pseudo: [], trailers) { nva, count in
                    nghttp2_submit_trailer(self.raw, streamID, nva, count)
                }
                if rv != 0 { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            }
            self.dropOutbound(streamID)
            return written
        }
        if written == 0 {
            stream.deferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return written
    }

    // MARK: - Helpers

    private static func pingPayload(_ ping: nghttp2_ping) -> UInt64 {
        withUnsafeBytes(of: ping.opaque_data) { UInt64(bigEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    private static func describe(_ errorNumber: Int32) -> String {
        String(cString: nghttp2_strerror(errorNumber))
    }

    /// Fields HTTP/2 forbids (RFC 9113 §8.2.2); `te` is allowed only as `trailers`.
    private static func isConnectionSpecific(_ lowercasedName: String, value: String) -> Bool {
        switch lowercasedName {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade": true
        case "te": value.lowercased() != "trailers"
        default: false
        }
    }

    /// Lays the header block out in one byte array and calls `body` with the `nghttp2_nv` array that
    /// points into it; libnghttp2 copies what it needs before the submit call returns.
    private static func withHeaderBlock<R>(
        pseudo: [(String, String)],
        _ headers: [HTTP2HeaderField],
        _ body: (UnsafePointer<nghttp2_nv>?, Int) -> R
    ) -> R {
        var bytes: [UInt8] = []
        var spans: [(nameStart: Int, nameCount: Int, valueStart: Int, valueCount: Int, neverIndex: Bool)] = []
        spans.reserveCapacity(pseudo.count + headers.count)
        func append(name: String, value: String, neverIndex: Bool) {
            let nameStart = bytes.count
            bytes.append(contentsOf: name.utf8)
            let valueStart = bytes.count
            bytes.append(contentsOf: value.utf8)
            spans.append((nameStart, valueStart - nameStart, valueStart, bytes.count - valueStart, neverIndex))
        }
        for (name, value) in pseudo { append(name: name, value: value, neverIndex: false) }
        for field in headers {
            let hasUppercase = field.name.utf8.contains { (0x41...0x5A).contains($0) }
            let lowercased = hasUppercase ? field.name.lowercased() : field.name
            if Self.isConnectionSpecific(lowercased, value: field.value) { continue }
            append(name: lowercased, value: field.value, neverIndex: field.neverIndex)
        }
        if bytes.isEmpty { bytes.append(0) }  // A valid base address even for an empty block.
        return bytes.withUnsafeMutableBufferPointer { storage in
            let base = storage.baseAddress.unsafelyUnwrapped
            let nva = spans.map { span in
                nghttp2_nv(
                    name: base + span.nameStart,
                    value: base + span.valueStart,
                    namelen: span.nameCount,
                    valuelen: span.valueCount,
                    flags: UInt8(span.neverIndex ? NGHTTP2_NV_FLAG_NO_INDEX.rawValue : NGHTTP2_NV_FLAG_NONE.rawValue)
                )
            }
            return nva.withUnsafeBufferPointer { body($0.baseAddress, $0.count) }
        }
    }
}
