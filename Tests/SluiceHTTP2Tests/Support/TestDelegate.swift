import NIOCore
import SluiceHTTP2

/// Answers test requests on one connection.
///
/// - `GET /` → 200 with ``fixedBody``.
/// - `POST` (any path) → 200, the request body echoed as it arrives; request trailers are echoed as
///   response trailers. Request bytes are consumed only once their echo is under the high watermark.
/// - `GET /drain` → starts the graceful shutdown and answers `drained` after 300 ms.
/// - anything else → 404.
final class TestDelegate: HTTP2StreamDelegate {
    static let fixedBody = "hello from sluice over h2\n"

    private let eventLoop: any EventLoop
    /// Echoed bytes not yet consumed, per stream (held back while the stream is not writable).
    private var unconsumed: [HTTP2StreamID: Int] = [:]
    private var echoing: Set<HTTP2StreamID> = []
    private(set) var closedStreams: [HTTP2StreamID: HTTP2ErrorCode] = [:]
    private(set) var connectionDidClose = false

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func streamOpened(_ streamID: HTTP2StreamID, head: HTTP2RequestHead, endStream: Bool, on connection: HTTP2ServerConnectionHandler) {
        switch (head.method, head.path) {
        case ("POST", _):
            self.echoing.insert(streamID)
            let contentType = head[first: "content-type"].map { [HTTP2HeaderField(name: "content-type", value: $0)] } ?? []
            connection.sendResponseHead(streamID: streamID, status: 200, headers: contentType, endStream: false)
            if endStream { connection.sendData(streamID: streamID, ByteBuffer(), endStream: true) }
        case ("GET", "/"):
            connection.sendResponseHead(
                streamID: streamID, status: 200,
                headers: [
                    HTTP2HeaderField(name: "content-type", value: "text/plain"),
                    HTTP2HeaderField(name: "content-length", value: String(Self.fixedBody.utf8.count)),
                ],
                endStream: false
            )
            connection.sendData(streamID: streamID, ByteBuffer(string: Self.fixedBody), endStream: true)
        case ("GET", "/drain"):
            connection.beginGracefulShutdown(deadline: .seconds(10))
            self.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(300)) {
                connection.sendResponseHead(streamID: streamID, status: 200, headers: [], endStream: false)
                connection.sendData(streamID: streamID, ByteBuffer(string: "drained"), endStream: true)
            }
        default:
            connection.sendResponseHead(streamID: streamID, status: 404, headers: [], endStream: true)
        }
    }

    func streamDataReceived(_ streamID: HTTP2StreamID, data: ByteBuffer, on connection: HTTP2ServerConnectionHandler) {
        guard self.echoing.contains(streamID) else {
            connection.consumed(streamID: streamID, bytes: data.readableBytes)
            return
        }
        connection.sendData(streamID: streamID, data, endStream: false)
        if connection.isWritable(streamID: streamID) {
            connection.consumed(streamID: streamID, bytes: data.readableBytes)
        } else {
            self.unconsumed[streamID, default: 0] += data.readableBytes
        }
    }

    func streamWritabilityChanged(_ streamID: HTTP2StreamID, isWritable: Bool, on connection: HTTP2ServerConnectionHandler) {
        guard isWritable, let pending = self.unconsumed.removeValue(forKey: streamID) else { return }
        connection.consumed(streamID: streamID, bytes: pending)
    }

    func streamEnded(_ streamID: HTTP2StreamID, trailers: [HTTP2HeaderField]?, on connection: HTTP2ServerConnectionHandler) {
        guard self.echoing.contains(streamID) else { return }
        if let trailers {
            connection.sendTrailers(streamID: streamID, headers: trailers)
        } else {
            connection.sendData(streamID: streamID, ByteBuffer(), endStream: true)
        }
    }

    func streamClosed(_ streamID: HTTP2StreamID, errorCode: HTTP2ErrorCode, on connection: HTTP2ServerConnectionHandler) {
        self.echoing.remove(streamID)
        self.unconsumed[streamID] = nil
        self.closedStreams[streamID] = errorCode
    }

    func connectionClosed(_ connection: HTTP2ServerConnectionHandler) {
        self.connectionDidClose = true
    }
}
