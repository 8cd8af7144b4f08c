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
    /// - Parameter suppressBody: the request was `HEAD` or `CONNECT`.
    static func responseHead(_ head: HTTPResponseHead, suppressBody: Bool, into scratch: inout HTTP1HeadBuffer) -> (ByteBuffer, HTTP1BodyFraming) {
        var headers = head.headers
        let framing: HTTP1BodyFraming
        if !head.status.mayHaveResponseBody {
            Self.removeFraming(&headers)
            framing = .suppressed
        } else if headers.contains(name: "content-length") {
            if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
            framing = suppressBody ? .suppressed : .raw
        } else if head.version.major == 1 && head.version.minor >= 1 {
            headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            framing = suppressBody ? .suppressed : .chunked
        } else {
            framing = suppressBody ? .suppressed : .raw
        }
        let code = Int(head.status.code)
        let reason = head.status.reasonPhrase
        var buffer = scratch.take(capacity: 15 + reason.utf8.count + Self.size(of: headers))
        buffer.writeStaticString(head.version.minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
        Self.writeStatusCode(code, to: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        Self.writeUTF8(reason, to: &buffer)
        buffer.writeStaticString("\r\n")
        Self.write(headers, to: &buffer)
        scratch.keep(buffer)
        return (buffer, framing)
    }

    /// A request head for the wire, and the framing of the body after it.
    static func requestHead(_ head: HTTPRequestHead, into scratch: inout HTTP1HeadBuffer) -> (ByteBuffer, HTTP1BodyFraming) {
        var headers = head.headers
        let framing: HTTP1BodyFraming
        switch head.method {
        case .TRACE:
            Self.removeFraming(&headers)
            framing = .raw
        case .POST, .PUT, .PATCH:
            if headers.contains(name: "content-length") {
                if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
                framing = .raw
            } else {
                headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
                framing = .chunked
            }
        default:
            // A body is unlikely: chunked only when the headers say so.
            if headers.contains(name: "content-length") {
                if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
                framing = .raw
            } else {
                framing = headers.first(name: "transfer-encoding") == "chunked" ? .chunked : .raw
            }
        }
        let method = head.method.rawValue
        var buffer = scratch.take(capacity: method.utf8.count + head.uri.utf8.count + 13 + Self.size(of: headers))
        Self.writeUTF8(method, to: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        Self.writeUTF8(head.uri, to: &buffer)
        buffer.writeStaticString(head.version.minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
        Self.write(headers, to: &buffer)
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
        var buffer = allocator.buffer(capacity: 3 + Self.size(of: trailers))
        buffer.writeStaticString("0\r\n")
        Self.write(trailers, to: &buffer)
        return buffer
    }

    // MARK: Pieces

    private static func removeFraming(_ headers: inout HTTPHeaders) {
        if headers.contains(name: "content-length") { headers.remove(name: "content-length") }
        if headers.contains(name: "transfer-encoding") { headers.remove(name: "transfer-encoding") }
    }

    /// Bytes `write(_:to:)` takes: `name: value\r\n` per field and the empty line.
    private static func size(of headers: HTTPHeaders) -> Int {
        var size = 2
        for (name, value) in headers { size += name.utf8.count + value.utf8.count + 4 }
        return size
    }

    /// The field lines and the empty line that ends them.
    private static func write(_ headers: HTTPHeaders, to buffer: inout ByteBuffer) {
        for (name, value) in headers {
            Self.writeUTF8(name, to: &buffer)
            buffer.writeStaticString(": ")
            Self.writeUTF8(value, to: &buffer)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    /// `ByteBuffer.writeString` has no contiguous storage to copy from for a small string (up to 15
    /// bytes, stored inline), which most header names and values are: it concatenates, then copies
    /// byte by byte (NIO 2.101 `_setStringSlowpath`). `withUTF8` gives any string's bytes as one buffer.
    @inline(__always)
    private static func writeUTF8(_ string: String, to buffer: inout ByteBuffer) {
        var string = string
        _ = string.withUTF8 { buffer.writeBytes($0) }
    }

    private static func writeStatusCode(_ code: Int, to buffer: inout ByteBuffer) {
        let code = (100...999).contains(code) ? code : 500
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 100))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code / 10 % 10))
        buffer.writeInteger(UInt8(ascii: "0") + UInt8(code % 10))
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
