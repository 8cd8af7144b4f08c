import NIOCore
import SluiceCore

/// The input side of a codec: its ``HTTP1Parser``, the received bytes it has not parsed yet, and
/// the delivery loop around them. One event per step; body bytes come as slices of the received
/// buffers (no copy).
///
/// A codec's `channelRead` reads:
/// ```
/// guard self.input.receive(bytes) else { return }
/// defer { self.input.endDelivery() }
/// while let (event, body) = self.input.next() { /* fire the part */ }
/// ```
/// A read that arrives re-entrantly, while parts are being fired, is only appended: the loop
/// already running parses it. After an `.error` event the input is failed: it drops its bytes and
/// yields nothing more.
struct HTTP1Input {
    private var parser: HTTP1Parser
    private var pending: ByteBuffer?
    private var delivering = false
    private(set) var failed = false
    /// Shared: it is only read (its indices move in copies), and one per connection would cost a
    /// storage allocation at every accept.
    private static let empty = ByteBuffer()

    init(_ parser: HTTP1Parser) { self.parser = parser }

    /// Responses: the next response answers a `HEAD` (see ``HTTP1Parser/expectResponseToHEAD()``).
    mutating func expectResponseToHEAD() { self.parser.expectResponseToHEAD() }

    /// Responses: the next response answers an upgrade request (see ``HTTP1Parser/expectUpgrade()``).
    mutating func expectUpgrade() { self.parser.expectUpgrade() }

    /// Requests: the connection switched protocols; every byte from here on is body (see
    /// ``HTTP1Parser/switchToTunnel()``).
    mutating func switchToTunnel() { self.parser.switchToTunnel() }

    /// Appends received bytes. Returns whether the caller should run the delivery loop (false when
    /// the input failed, or when a loop is already running further up the stack).
    mutating func receive(_ bytes: ByteBuffer) -> Bool {
        guard !self.failed else { return false }
        if self.pending == nil || self.pending!.readableBytes == 0 {
            self.pending = bytes
        } else {
            var bytes = bytes
            self.pending!.writeBuffer(&bytes)
        }
        guard !self.delivering else { return false }
        self.delivering = true
        return true
    }

    mutating func endDelivery() { self.delivering = false }

    /// Whether received bytes wait that the parser has not consumed yet.
    var hasUnparsedBytes: Bool { (self.pending?.readableBytes ?? 0) > 0 }

    /// Drops the bytes not parsed yet and yields nothing more: the connection is not to be read any further.
    mutating func fail() {
        self.failed = true
        self.pending = nil
    }

    /// The next event, and for `.body` its bytes; `nil` once the parser needs more bytes (or the
    /// input failed). An event may consume nothing (the end after a head or a body).
    mutating func next() -> (HTTP1Parser.Event, body: ByteBuffer?)? {
        guard !self.failed else { return nil }
        // Taken out while parsing, so that the buffer is not shared (and a later append need not copy it).
        var bytes = self.pending ?? Self.empty
        self.pending = nil
        let (event, consumed) = bytes.withUnsafeReadableBytes { self.parser.next($0) }
        if case .error = event {
            self.failed = true
            return (event, nil)  // `bytes` (and so the rest of the input) is dropped
        }
        var body: ByteBuffer?
        if case .body(let range) = event {
            body = bytes.getSlice(at: bytes.readerIndex + range.lowerBound, length: range.count)
        }
        bytes.moveReaderIndex(forwardBy: consumed)
        if bytes.readableBytes > 0 { self.pending = bytes }
        if case .needMore = event { return nil }
        return (event, body)
    }

    /// The connection's input ended (see ``HTTP1Parser/inputEnded()``); `nil` once failed.
    mutating func inputEnded() -> HTTP1Parser.Event? {
        guard !self.failed else { return nil }
        let event = self.parser.inputEnded()
        if case .error = event {
            self.failed = true
            self.pending = nil
        }
        return event
    }
}
