import NIOCore
import NIOHTTP1

/// How a message's body goes on the wire, decided once per head (RFC 9112 §6).
enum HTTP1BodyFraming: Equatable {
    /// Body bytes are written as they are (`Content-Length`, or until close for HTTP/1.0).
    case raw
    /// Each body part is a chunk; the end is the last chunk, with the trailers.
    case chunked
    /// No body may follow (a response to `HEAD` or `CONNECT`, 1xx, 204, 304): body writes are dropped.
    case suppressed
}

/// Writing HTTP/1.1 heads and chunk framing into `ByteBuffer`s, for the two codecs.
///
/// The framing headers are corrected as NIO's `HTTPRequestEncoder`/`HTTPResponseEncoder` do
/// (`automaticallySetFramingHeaders`): a message that may have a body and has no `Content-Length`
/// is sent chunked on HTTP/1.1; one that must not have a body loses its framing headers.
enum HTTP1Serializer {
    /// A response head for the wire, and the framing of the body after it.
    /// - Parameter suppressBody: the request rules out a body (`HEAD`, or `CONNECT` answered with a 2xx).
    static func responseHead(_ head: HTTPResponseHead, suppressBody: Bool, into scratch: inout HTTP1HeadBuffer) -> (ByteBuffer, HTTP1BodyFraming) {
        var headers = head.headers
        var fields = FieldScan(headers)
        let framing: HTTP1BodyFraming
        if !head.status.mayHaveResponseBody {
            Self.removeFraming(&headers, &fields)
            framing = .suppressed
        } else if fields.contentLength {
            Self.keepLengthOnly(&headers, &fields)
            framing = suppressBody ? .suppressed : .raw
        } else if head.version.major == 1 && head.version.minor >= 1 {
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            fields = FieldScan(headers)
            framing = suppressBody ? .suppressed : .chunked
        } else {
            framing = suppressBody ? .suppressed : .raw
        }
        let code = Int(head.status.code)
        let reason = head.status.reasonPhrase
        let size = 15 + reason.utf8.count + fields.bytes
        var buffer = scratch.take(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var writer = RawWriter(out)
            writer.append(head.version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
            let code = (100...999).contains(code) ? code : 500
            writer.append(UInt8(ascii: "0") + UInt8(code / 100))
            writer.append(UInt8(ascii: "0") + UInt8(code / 10 % 10))
            writer.append(UInt8(ascii: "0") + UInt8(code % 10))
            writer.append(UInt8(ascii: " "))
            writer.append(reason)
            writer.append("\r\n")
            writer.append(headers)
            return writer.offset
        }
        scratch.keep(buffer)
        return (buffer, framing)
    }

    /// A request head for the wire, and the framing of the body after it.
    static func requestHead(_ head: HTTPRequestHead, into scratch: inout HTTP1HeadBuffer) -> (ByteBuffer, HTTP1BodyFraming) {
        var headers = head.headers
        var fields = FieldScan(headers)
        let framing: HTTP1BodyFraming
        if head.method == .TRACE {
            Self.removeFraming(&headers, &fields)
            framing = .raw
        } else if fields.contentLength {
            Self.keepLengthOnly(&headers, &fields)
            framing = .raw
        } else if head.method == .POST || head.method == .PUT || head.method == .PATCH {
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            fields = FieldScan(headers)
            framing = .chunked
        } else {
            // A body is unlikely: chunked only when the headers say so.
            framing = fields.firstTransferEncoding == "chunked" ? .chunked : .raw
        }
        let method = head.method.rawValue
        let size = method.utf8.count + head.uri.utf8.count + 12 + fields.bytes
        var buffer = scratch.take(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var writer = RawWriter(out)
            writer.append(method)
            writer.append(UInt8(ascii: " "))
            writer.append(head.uri)
            writer.append(head.version.minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
            writer.append(headers)
            return writer.offset
        }
        scratch.keep(buffer)
        return (buffer, framing)
    }

    /// The size line of a chunk of `length` bytes (`length` > 0).
    static func chunkHeader(length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 18)
        var digits = 0
        var rest = length
        repeat {
            digits += 1
            rest >>= 4
        } while rest > 0
        for shift in stride(from: (digits - 1) * 4, through: 0, by: -4) {
            let nibble = UInt8((length >> shift) & 0xF)
            buffer.writeInteger(nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10)
        }
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// The last chunk and the trailer section.
    static func lastChunk(trailers: HTTPHeaders?, allocator: ByteBufferAllocator) -> ByteBuffer {
        guard let trailers, !trailers.isEmpty else {
            var buffer = allocator.buffer(capacity: 5)
            buffer.writeStaticString("0\r\n\r\n")
            return buffer
        }
        let size = 3 + FieldScan(trailers).bytes
        var buffer = allocator.buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var writer = RawWriter(out)
            writer.append("0\r\n")
            writer.append(trailers)
            return writer.offset
        }
        return buffer
    }

    // MARK: Pieces

    /// A length is declared: a `Transfer-Encoding` beside it goes (the body is sent as it is).
    private static func keepLengthOnly(_ headers: inout HTTPHeaders, _ fields: inout FieldScan) {
        guard fields.transferEncoding else { return }
        headers.remove(name: "transfer-encoding")
        fields = FieldScan(headers)
    }

    /// No body may follow: both framing headers go.
    private static func removeFraming(_ headers: inout HTTPHeaders, _ fields: inout FieldScan) {
        guard fields.contentLength || fields.transferEncoding else { return }
        if fields.contentLength { headers.remove(name: "content-length") }
        if fields.transferEncoding { headers.remove(name: "transfer-encoding") }
        fields = FieldScan(headers)
    }
}

/// What one pass over a head's fields finds: the bytes its field lines take (with the empty line
/// after them), and the framing headers (names compared without regard to case, as NIO's
/// `contains(name:)` does, but in one pass instead of one per name).
private struct FieldScan {
    var bytes = 2
    var contentLength = false
    var transferEncoding = false
    var firstTransferEncoding: String?

    init(_ headers: HTTPHeaders) {
        for (name, value) in headers {
            let length = name.utf8.count
            self.bytes += length + value.utf8.count + 4
            if length == 14, Self.equalsIgnoringCase(name, "content-length") {
                self.contentLength = true
            } else if length == 17, Self.equalsIgnoringCase(name, "transfer-encoding") {
                if !self.transferEncoding { self.firstTransferEncoding = value }
                self.transferEncoding = true
            }
        }
    }

    /// `name` equals the lower-case ASCII `lowercase`, ignoring ASCII case.
    private static func equalsIgnoringCase(_ name: String, _ lowercase: StaticString) -> Bool {
        var lower = lowercase.utf8Start
        for byte in name.utf8 {
            let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte &+ 32 : byte
            guard folded == lower.pointee else { return false }
            lower += 1
        }
        return true
    }
}

/// Copies a head's pieces into memory whose size was computed beforehand (``FieldScan``): one
/// capacity check for the whole head instead of one (not inlined) per piece.
private struct RawWriter {
    private let out: UnsafeMutableRawBufferPointer
    private(set) var offset = 0

    init(_ out: UnsafeMutableRawBufferPointer) { self.out = out }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        precondition(self.offset + bytes.count <= self.out.count, "head size computed too small")
        UnsafeMutableRawBufferPointer(rebasing: self.out[self.offset...]).copyMemory(from: bytes)
        self.offset += bytes.count
    }

    mutating func append(_ string: StaticString) {
        self.append(UnsafeRawBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
    }

    /// Any string's UTF-8 as one copy (`ByteBuffer.writeString` goes byte by byte for small,
    /// inline strings, which most header names and values are).
    mutating func append(_ string: String) {
        var string = string
        string.withUTF8 { self.append(UnsafeRawBufferPointer($0)) }
    }

    mutating func append(_ byte: UInt8) {
        precondition(self.offset < self.out.count, "head size computed too small")
        self.out[self.offset] = byte
        self.offset += 1
    }

    /// The field lines and the empty line that ends them.
    mutating func append(_ headers: HTTPHeaders) {
        for (name, value) in headers {
            self.append(name)
            self.append(": ")
            self.append(value)
            self.append("\r\n")
        }
        self.append("\r\n")
    }
}

/// The buffer a codec writes its heads into, kept between heads: once the socket has taken a
/// head's bytes and NIO has released them, the next head is written into the same storage, where a
/// new buffer would cost two mallocs (the storage object and its bytes). While NIO still holds the
/// last head (not flushed yet), `clear` finds the storage shared and allocates a new one, so a
/// head that is still queued is never overwritten.
struct HTTP1HeadBuffer {
    /// A head larger than this does not stay: an idle connection should not hold a big buffer.
    static let maxKeptCapacity = 4096
    private var buffer: ByteBuffer?

    /// An empty buffer of at least `capacity` bytes.
    mutating func take(capacity: Int) -> ByteBuffer {
        guard var buffer = self.buffer.take() else {
            return ByteBufferAllocator().buffer(capacity: max(capacity, 256))
        }
        buffer.clear(minimumCapacity: capacity)
        return buffer
    }

    /// Keeps `buffer` (a head just written) for the next head, unless it grew large.
    mutating func keep(_ buffer: ByteBuffer) {
        self.buffer = buffer.capacity <= Self.maxKeptCapacity ? buffer : nil
    }
}

/// Writes a message's body parts and end with the framing its head chose (``HTTP1Serializer``).
struct HTTP1BodyWriter {
    var framing: HTTP1BodyFraming = .raw
    /// Shared by every connection (only read): one per connection would be an allocation per accept.
    private static let crlf = ByteBuffer(staticString: "\r\n")

    func write(_ body: IOData, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch (self.framing, body) {
        case (.suppressed, _):
            promise?.succeed()
        case (.raw, .byteBuffer(let buffer)):
            context.write(NIOAny(buffer), promise: promise)
        case (.chunked, .byteBuffer(let buffer)):
            // An empty chunk would end the body.
            guard buffer.readableBytes > 0 else {
                promise?.succeed()
                return
            }
            context.write(NIOAny(HTTP1Serializer.chunkHeader(length: buffer.readableBytes, allocator: context.channel.allocator)), promise: nil)
            context.write(NIOAny(buffer), promise: nil)
            context.write(NIOAny(Self.crlf), promise: promise)
        case (_, .fileRegion):
            preconditionFailure("bodies are byte buffers")
        }
    }

    /// Ends the body (the last chunk and `trailers`, where chunked); the framing resets for the next message.
    mutating func writeEnd(trailers: HTTPHeaders?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch self.framing {
        case .chunked:
            context.write(NIOAny(HTTP1Serializer.lastChunk(trailers: trailers, allocator: context.channel.allocator)), promise: promise)
        case .raw, .suppressed:
            if let promise {
                // Completed in order with the writes ahead of it.
                context.write(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: promise)
            }
        }
        self.framing = .raw
    }
}
