import NIOCore
import SluiceCore

/// The received bytes a codec has not parsed yet, and the step that hands them to its
/// ``HTTP1Parser``: one event per step, body bytes as slices of the received buffers (no copy).
struct HTTP1InboundBytes {
    private var pending: ByteBuffer?
    /// Shared: it is only read (its indices move in copies), and one per connection would cost a
    /// storage allocation at every accept.
    private static let empty = ByteBuffer()

    mutating func append(_ bytes: ByteBuffer) {
        if self.pending == nil || self.pending!.readableBytes == 0 {
            self.pending = bytes
        } else {
            var bytes = bytes
            self.pending!.writeBuffer(&bytes)
        }
    }

    mutating func removeAll() { self.pending = nil }

    /// Parses the next event; for `.body` also returns the bytes as a slice. Call until `.needMore`
    /// (an event may consume nothing: the end after a head or a body).
    mutating func next(_ parser: inout HTTP1Parser) -> (HTTP1Parser.Event, body: ByteBuffer?) {
        // Taken out while parsing, so that the buffer is not shared (and a later append need not copy it).
        var bytes = self.pending ?? Self.empty
        self.pending = nil
        let (event, consumed) = bytes.withUnsafeReadableBytes { parser.next($0) }
        var body: ByteBuffer?
        if case .body(let range) = event {
            body = bytes.getSlice(at: bytes.readerIndex + range.lowerBound, length: range.count)
        }
        bytes.moveReaderIndex(forwardBy: consumed)
        if bytes.readableBytes > 0 { self.pending = bytes }
        return (event, body)
    }
}
