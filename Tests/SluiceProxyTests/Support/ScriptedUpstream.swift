import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// An upstream on 127.0.0.1 that answers each request head with exact bytes, for tests of what a
/// misbehaving app can send: extra bytes behind a response, repeated lengths, interim responses,
/// no answer at all. It records what it received and how many connections it saw open and close.
///
/// Requests are read as heads and `Content-Length` bodies; `respond` gets the request head's text
/// and returns the bytes to write once the body is in (nothing: no answer), written in one write,
/// and optionally more bytes later on the same connection.
final class ScriptedUpstream: Sendable {
    struct Reply: Sendable {
        var now: String
        /// Bytes written this long after `now`, on the same connection.
        var later: (after: TimeAmount, bytes: String)?
        /// Close the connection after writing `now` (a reset before the response when `now` is empty).
        var close = false

        init(_ now: String, later: (after: TimeAmount, bytes: String)? = nil, close: Bool = false) {
            self.now = now
            self.later = later
            self.close = close
        }

        /// Read the request whole, then close the connection without a byte of response.
        static let hangUp = Reply("", close: true)
    }

    struct Record: Sendable {
        /// Every byte received, per connection, in accept order.
        var received: [String] = []
        var opened = 0
        var closed = 0
    }

    let server: TestServer
    private let record: NIOLockedValueBox<Record>

    var port: Int { self.server.port }
    var url: String { self.server.url }
    var snapshot: Record { self.record.withLockedValue { $0 } }

    static func start(_ respond: @escaping @Sendable (_ head: String) -> Reply?) async throws -> ScriptedUpstream {
        let record = NIOLockedValueBox(Record())
        let server = try await TestServer.start { channel in
            let index = record.withLockedValue { record in
                record.opened += 1
                record.received.append("")
                return record.received.count - 1
            }
            try channel.pipeline.syncOperations.addHandler(Handler(index: index, record: record, respond: respond))
        }
        return ScriptedUpstream(server: server, record: record)
    }

    private init(server: TestServer, record: NIOLockedValueBox<Record>) {
        self.server = server
        self.record = record
    }

    func stop() async { await self.server.stop() }

    /// A plain response with this body.
    static func ok(_ body: String, extraFields: String = "") -> String {
        "HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\(extraFields)\r\n\(body)"
    }

    /// The request target in a head's text.
    static func target(_ head: String) -> String {
        let line = head.prefix { $0 != "\r" }
        let parts = line.split(separator: " ")
        return parts.count > 1 ? String(parts[1]) : ""
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let index: Int
        let record: NIOLockedValueBox<Record>
        let respond: @Sendable (String) -> Reply?
        private var buffer: [UInt8] = []
        private var skipBody = 0
        /// The head whose body is being read.
        private var head: String?

        init(index: Int, record: NIOLockedValueBox<Record>, respond: @escaping @Sendable (String) -> Reply?) {
            self.index = index
            self.record = record
            self.respond = respond
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(buffer: self.unwrapInboundIn(data))
            self.record.withLockedValue { $0.received[self.index] += String(decoding: bytes, as: UTF8.self) }
            self.buffer += bytes
            while true {
                if self.head == nil {
                    guard let end = self.headEnd() else { return }
                    let head = String(decoding: self.buffer[..<end], as: UTF8.self)
                    self.buffer.removeFirst(end)
                    for line in head.lowercased().split(separator: "\r\n") where line.hasPrefix("content-length:") {
                        self.skipBody = Int(line.dropFirst("content-length:".count).split(separator: ",")[0].trimmingCharacters(in: .whitespaces)) ?? 0
                    }
                    self.head = head
                }
                let n = min(self.skipBody, self.buffer.count)
                self.buffer.removeFirst(n)
                self.skipBody -= n
                if self.skipBody > 0 { return }
                let head = self.head!
                self.head = nil
                guard let reply = self.respond(head) else { continue }
                if reply.close {
                    if !reply.now.isEmpty { context.write(self.wrapOutboundOut(ByteBuffer(string: reply.now)), promise: nil) }
                    context.close(promise: nil)
                    return
                }
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: reply.now)), promise: nil)
                if let later = reply.later {
                    context.eventLoop.assumeIsolated().scheduleTask(in: later.after) {
                        context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: later.bytes)), promise: nil)
                    }
                }
            }
        }

        private func headEnd() -> Int? {
            guard self.buffer.count >= 4 else { return nil }
            for i in 0...(self.buffer.count - 4) where self.buffer[i] == 13 && self.buffer[i + 1] == 10 && self.buffer[i + 2] == 13 && self.buffer[i + 3] == 10 {
                return i + 4
            }
            return nil
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.record.withLockedValue { $0.closed += 1 }
            context.fireChannelInactive()
        }

        typealias OutboundOut = ByteBuffer
    }
}
