import NIOCore
import NIOHTTP1
import SluiceCore
import SluiceHTTP2

/// One h2c connection to an upstream, shared by the requests whose streams it carries: the
/// ``HTTP2ClientConnectionDelegate`` of its ``HTTP2ClientConnectionHandler``, routing each stream's
/// events to its ``UpstreamHTTP2Stream``. Its ``HTTP2EndpointPool`` decides which connection a
/// request uses (``HTTP2UpstreamPoolStateMachine``) and hears when streams end or the connection goes.
final class UpstreamHTTP2Connection {
    let id: ConnectionID
    let eventLoop: any EventLoop
    private(set) weak var handler: HTTP2ClientConnectionHandler?
    weak var pool: HTTP2EndpointPool?
    /// Streams opened on the wire, by ID.
    private var streams: [HTTP2StreamID: UpstreamHTTP2Stream] = [:]
    /// Streams that received response bytes in this read batch (told `upstreamReadComplete`).
    private var readInBatch: [UpstreamHTTP2Stream] = []
    /// Streams completed on this connection; a failure after one may be the upstream's idle close.
    private(set) var completedStreams = 0
    private(set) var isClosed = false

    init(id: ConnectionID, eventLoop: any EventLoop) {
        self.id = id
        self.eventLoop = eventLoop
    }

    func attach(_ handler: HTTP2ClientConnectionHandler) { self.handler = handler }

    /// A new stream slot for a request (the pool counted it).
    func makeStream() -> UpstreamHTTP2Stream {
        UpstreamHTTP2Stream(connection: self, isReused: self.completedStreams > 0)
    }

    /// Opens `stream` on the wire; false if the connection cannot take it.
    func open(_ stream: UpstreamHTTP2Stream, head: HTTP2RequestHead, endStream: Bool) -> HTTP2StreamID? {
        guard let handler, let id = handler.openStream(head, endStream: endStream) else { return nil }
        self.streams[id] = stream
        return id
    }

    func close() {
        self.handler?.close()
    }

    /// The request is done with a stream slot.
    func released(_ stream: UpstreamHTTP2Stream, completed: Bool) {
        if let id = stream.streamID, self.streams[id] === stream, !completed {
            self.handler?.resetStream(streamID: id, errorCode: .cancel)
        }
        if completed { self.completedStreams += 1 }
        self.pool?.streamReleased(on: self)
    }

    /// Streams waiting for their response head since before `limit`.
    func streamsAwaitingHead(since limit: Duration, now: MonotonicInstant) -> [UpstreamHTTP2Stream] {
        self.streams.values.filter { stream in
            stream.awaitingHeadSince.map { $0.duration(to: now) >= limit } ?? false
        }
    }
}

extension UpstreamHTTP2Connection: HTTP2ClientConnectionDelegate {
    func interimResponseHead(_ streamID: HTTP2StreamID, head: HTTP2ResponseHead, on connection: HTTP2ClientConnectionHandler) {
        guard let stream = self.streams[streamID] else { return }
        self.noteRead(stream)
        stream.interimResponseHead(head)
    }

    func responseHead(_ streamID: HTTP2StreamID, head: HTTP2ResponseHead, endStream: Bool, on connection: HTTP2ClientConnectionHandler) {
        guard let stream = self.streams[streamID] else { return }
        self.noteRead(stream)
        stream.responseHead(head, endStream: endStream)
    }

    func responseData(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ClientConnectionHandler) {
        guard let stream = self.streams[streamID] else {
            return connection.consumed(streamID: streamID, bytes: data.readableBytes)
        }
        self.noteRead(stream)
        stream.responseData(data)
    }

    func responseEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ClientConnectionHandler) {
        self.streams[streamID]?.responseEnded(trailers: trailers)
    }

    func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ClientConnectionHandler) {
        self.streams.removeValue(forKey: streamID)?.closed(errorCode: errorCode)
    }

    func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ClientConnectionHandler) {
        self.streams[streamID]?.delegate?.upstreamWritabilityChanged(isWritable: isWritable)
    }

    func settingsReceived(maxConcurrentStreams: Int, on connection: HTTP2ClientConnectionHandler) {
        self.pool?.settingsReceived(on: self, maxConcurrentStreams: maxConcurrentStreams)
    }

    func goAwayReceived(lastStreamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ClientConnectionHandler) {
        self.pool?.goAwayReceived(on: self)
    }

    /// Each stream once per batch (the check is linear, over the few streams one read touched).
    private func noteRead(_ stream: UpstreamHTTP2Stream) {
        if !self.readInBatch.contains(where: { $0 === stream }) { self.readInBatch.append(stream) }
    }

    func readComplete(on connection: HTTP2ClientConnectionHandler) {
        guard !self.readInBatch.isEmpty else { return }
        let streams = self.readInBatch
        self.readInBatch.removeAll(keepingCapacity: true)
        for stream in streams { stream.delegate?.upstreamReadComplete() }
    }

    func connectionClosed(_ connection: HTTP2ClientConnectionHandler) {
        self.isClosed = true
        let streams = self.streams.values
        self.streams.removeAll()
        self.readInBatch.removeAll()
        self.pool?.connectionClosed(self)
        for stream in streams { stream.closed(errorCode: nil) }
    }
}

/// One request's stream on an ``UpstreamHTTP2Connection``, driven through ``UpstreamExchange`` like an
/// HTTP/1.1 connection.
///
/// 1. The request head is held until the first body bytes, the end, or the flush, so a request
///    without a body goes out as one HEADERS frame with END_STREAM. Pseudo-headers come from the
///    HTTP/1 head: `:method`, `:scheme` the request's (its listener's), `:authority` from `Host`, `:path` from the target;
///    connection-specific fields are dropped (RFC 9113 §8.2.2) and `te: trailers` kept.
/// 2. Response bytes are consumed (the upstream's window reopens) once handed downstream while the
///    downstream is writable; otherwise when it is writable again (``resumeReading()``).
/// 3. Response trailers (`grpc-status`, `grpc-message`) go to the downstream as trailers.
/// 4. Interim (1xx) heads go to the downstream as they come, at most
///    ``UpstreamLimits/maxInterimResponses`` of them; one more resets the stream (`CANCEL`) and fails
///    the exchange as a bad response (502: interim heads do not start the response).
final class UpstreamHTTP2Stream: UpstreamExchange {
    private let connection: UpstreamHTTP2Connection
    let isReused: Bool
    var delegate: (any UpstreamResponseDelegate)?
    private(set) var streamID: HTTP2StreamID?
    /// When the request head was sent, until the response head arrives (response-header timeout).
    private(set) var awaitingHeadSince: MonotonicInstant?
    private var head: HTTP2RequestHead?
    private var requestEnded = false
    private var responseEnded = false
    private var released = false
    /// Response bytes handed downstream but not yet consumed (the downstream was not writable).
    private var unconsumed = 0
    /// Interim (1xx) heads received on this stream.
    private var interimResponses = 0

    fileprivate init(connection: UpstreamHTTP2Connection, isReused: Bool) {
        self.connection = connection
        self.isReused = isReused
    }

    var isWritable: Bool {
        guard let id = self.streamID, let handler = self.connection.handler else { return !self.connection.isClosed }
        return handler.isWritable(streamID: id)
    }

    // MARK: Request out

    /// `upgrade` is never asked of an HTTP/2 exchange (the downstream handler drops the upgrade pair
    /// for h2c groups): HTTP/2 has no `101`.
    func sendHead(_ head: HTTPRequestHead, scheme: URIScheme, now: MonotonicInstant, upgrade: Bool) {
        self.head = Self.translate(head, scheme: scheme)
        self.awaitingHeadSince = now
    }

    func sendBody(_ buffer: ByteBuffer) {
        guard let id = self.openIfNeeded(endStream: false) else { return }
        self.connection.handler?.sendData(streamID: id, buffer, endStream: false)
    }

    func sendEnd(trailers: HTTPHeaders?) {
        let fields = trailers.map(Self.fields) ?? []
        if self.streamID == nil {
            guard let id = self.openIfNeeded(endStream: fields.isEmpty) else { return }
            if !fields.isEmpty { self.connection.handler?.sendTrailers(streamID: id, fields) }
        } else if let id = self.streamID {
            if fields.isEmpty {
                self.connection.handler?.sendData(streamID: id, ByteBuffer(), endStream: true)
            } else {
                self.connection.handler?.sendTrailers(streamID: id, fields)
            }
        }
        self.requestEnded = true
    }

    func flush() {
        // The handler flushes its own output once per tick; a head held so far goes out now.
        _ = self.openIfNeeded(endStream: false)
    }

    func resumeReading() {
        guard self.unconsumed > 0, let id = self.streamID else { return }
        let bytes = self.unconsumed
        self.unconsumed = 0
        self.connection.handler?.consumed(streamID: id, bytes: bytes)
    }

    func release(reusable: Bool, now: MonotonicInstant) {
        guard !self.released else { return }
        self.released = true
        self.delegate = nil
        self.connection.released(self, completed: reusable && self.responseEnded && self.requestEnded)
    }

    /// The response head did not arrive in time.
    func responseHeadTimedOut() {
        self.awaitingHeadSince = nil
        let delegate = self.delegate
        self.delegate = nil
        if let id = self.streamID { self.connection.handler?.resetStream(streamID: id, errorCode: .cancel) }
        delegate?.upstreamFailed(.upstreamTimeout)
    }

    private func openIfNeeded(endStream: Bool) -> HTTP2StreamID? {
        if let id = self.streamID { return id }
        guard let head = self.head else { return nil }
        self.head = nil
        guard let id = self.connection.open(self, head: head, endStream: endStream) else {
            // GOAWAY or a close raced the lease: nothing reached the upstream.
            self.failSoon(.upstreamRefusedStream("connection to the upstream is going away"))
            return nil
        }
        self.streamID = id
        return id
    }

    /// Reports a failure after the caller's current call returns (the caller is mid-send).
    private func failSoon(_ error: ProxyError) {
        self.connection.eventLoop.assumeIsolated().execute {
            let delegate = self.delegate
            self.delegate = nil
            delegate?.upstreamFailed(error)
        }
    }

    // MARK: Response in

    fileprivate func interimResponseHead(_ head: HTTP2ResponseHead) {
        guard let delegate = self.delegate else { return }
        self.interimResponses += 1
        guard self.interimResponses <= UpstreamLimits.maxInterimResponses else {
            // An upstream looping on 1xx: the stream goes, the exchange fails before its response began.
            self.delegate = nil
            self.awaitingHeadSince = nil
            if let id = self.streamID { self.connection.handler?.resetStream(streamID: id, errorCode: .cancel) }
            delegate.upstreamFailed(.upstreamBadResponse("more than \(UpstreamLimits.maxInterimResponses) interim (1xx) responses"))
            return
        }
        delegate.upstreamInterimResponse(HTTPResponseHead(version: HTTPVersion(major: 2, minor: 0), status: .init(statusCode: head.status), headers: Self.headers(head.headers)))
    }

    private static func headers(_ fields: [HTTP2HeaderField]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        headers.reserveCapacity(fields.count)
        for field in fields { headers.add(name: field.name, value: field.value) }
        return headers
    }

    fileprivate func responseHead(_ head: HTTP2ResponseHead, endStream: Bool) {
        self.awaitingHeadSince = nil
        let headers = Self.headers(head.headers)
        // Version 2: the response was received over HTTP/2 (its `Via` entry says so).
        self.delegate?.upstreamResponseHead(HTTPResponseHead(version: HTTPVersion(major: 2, minor: 0), status: .init(statusCode: head.status), headers: headers))
        if endStream { self.responseEnded(trailers: nil) }
    }

    fileprivate func responseData(_ data: ByteBuffer) {
        guard let id = self.streamID else { return }
        guard let delegate = self.delegate else {
            // Nobody reads this stream any more: give the window back.
            return self.connection.handler?.consumed(streamID: id, bytes: data.readableBytes) ?? ()
        }
        delegate.upstreamResponseBody(data)
        if delegate.downstreamIsWritable {
            self.connection.handler?.consumed(streamID: id, bytes: data.readableBytes + self.unconsumed)
            self.unconsumed = 0
        } else {
            self.unconsumed += data.readableBytes
        }
    }

    fileprivate func responseEnded(trailers: [HTTP2HeaderField]?) {
        guard !self.responseEnded else { return }
        self.responseEnded = true
        let delegate = self.delegate
        var headers: HTTPHeaders?
        if let trailers, !trailers.isEmpty {
            headers = HTTPHeaders(trailers.map { ($0.name, $0.value) })
        }
        delegate?.upstreamResponseEnd(headers)
    }

    /// The stream closed on the wire (`nil`: the connection went).
    fileprivate func closed(errorCode: HTTP2ErrorCode?) {
        self.awaitingHeadSince = nil
        guard !self.responseEnded, let delegate = self.delegate else { return }
        self.delegate = nil
        if errorCode == .refusedStream {
            // RFC 9113 §8.7: the upstream did not process the stream (refused, or above a GOAWAY's
            // last stream): safe to retry whatever the method.
            return delegate.upstreamFailed(.upstreamRefusedStream("stream refused (REFUSED_STREAM)"))
        }
        let reason = errorCode.map { "stream reset (\($0))" } ?? "connection closed"
        delegate.upstreamFailed(.upstreamResetBeforeResponse(reason))
    }

    // MARK: Translation

    /// The HTTP/1-shaped head the downstream side built, as an HTTP/2 request head; `:scheme` is the
    /// scheme the request arrived with.
    static func translate(_ head: HTTPRequestHead, scheme: URIScheme) -> HTTP2RequestHead {
        var authority: String?
        var fields: [HTTP2HeaderField] = []
        fields.reserveCapacity(head.headers.count)
        for (name, value) in head.headers {
            let lower = name.lowercased()
            switch lower {
            case "host":
                if authority == nil { authority = value }
            case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
                continue
            case "te":
                if value.lowercased() == "trailers" { fields.append(HTTP2HeaderField(name: lower, value: "trailers")) }
            default:
                fields.append(HTTP2HeaderField(name: lower, value: value))
            }
        }
        return HTTP2RequestHead(method: head.method.rawValue, scheme: scheme.rawValue, authority: authority, path: head.uri, headers: fields)
    }

    static func fields(_ headers: HTTPHeaders) -> [HTTP2HeaderField] {
        var fields: [HTTP2HeaderField] = []
        fields.reserveCapacity(headers.count)
        for (name, value) in headers {
            let lower = name.lowercased()
            if HeaderRules.hopByHop.contains(lower) { continue }
            fields.append(HTTP2HeaderField(name: lower, value: value))
        }
        return fields
    }
}
