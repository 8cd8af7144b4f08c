import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A TCP client that sends exact bytes and reads what comes back, for tests that need to see the
/// wire: malformed requests, pipelining, `Expect: 100-continue`, slow clients, closes.
final class RawClient: Sendable {
    struct Timeout: Error, CustomStringConvertible {
        var received: String
        var description: String { "timed out; received so far: \(self.received.debugDescription)" }
    }

    private struct Received {
        var text = ""
        var closed = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let channel: any Channel
    private let received: NIOLockedValueBox<Received>

    private init(channel: any Channel, received: NIOLockedValueBox<Received>) {
        self.channel = channel
        self.received = received
    }

    /// - Parameter halfClosable: the server's FIN ends only the reading side (``waitForClose()``
    ///   returns then), and the client may go on sending, as a client still uploading does.
    static func connect(port: Int, halfClosable: Bool = false, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> RawClient {
        let received = NIOLockedValueBox(Received())
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: halfClosable)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Recorder(received: received))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return RawClient(channel: channel, received: received)
    }

    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let received: NIOLockedValueBox<Received>
        init(received: NIOLockedValueBox<Received>) { self.received = received }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let text = String(buffer: self.unwrapInboundIn(data))
            self.wake { $0.text += text }
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.wake { $0.closed = true }
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, case .inputClosed = event { self.wake { $0.closed = true } }
            context.fireUserInboundEventTriggered(event)
        }

        private func wake(_ update: (inout Received) -> Void) {
            let waiters = self.received.withLockedValue { state in
                update(&state)
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    private func wakeAll() {
        let waiters = self.received.withLockedValue { state in
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func send(_ text: String) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(string: text))
    }

    /// Sends `text` (if any), then waits until `done` accepts what arrived since the last call or
    /// the peer closes; returns it and whether the peer closed. The bytes returned are consumed.
    func exchange(
        _ text: String?,
        timeout: Duration = .seconds(10),
        until done: @escaping @Sendable (String) -> Bool
    ) async throws -> (String, closed: Bool) {
        if let text { try await self.send(text) }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let state = self.received.withLockedValue { $0 }
            if done(state.text) || state.closed {
                self.received.withLockedValue { $0.text = "" }
                return (state.text, state.closed)
            }
            if ContinuousClock.now >= deadline { throw Timeout(received: state.text) }
            // Wait for more bytes, or a tick so the deadline is checked.
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withCheckedContinuation { continuation in
                        let ready = self.received.withLockedValue { state -> Bool in
                            if state.text.count != 0 && done(state.text) || state.closed { return true }
                            state.waiters.append(continuation)
                            return false
                        }
                        if ready { continuation.resume() }
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(50))
                    self.wakeAll()
                }
                await group.next()
                group.cancelAll()
            }
        }
    }

    /// Waits for the peer to close; returns what arrived before.
    func waitForClose(timeout: Duration = .seconds(10)) async throws -> String {
        let (text, closed) = try await self.exchange(nil, timeout: timeout) { _ in false }
        precondition(closed)
        return text
    }

    /// Half-closes: sends FIN, keeps reading.
    func closeOutput() async throws { try await self.channel.close(mode: .output) }

    func close() async { try? await self.channel.close() }
}

extension String {
    /// Whether this holds `count` complete HTTP/1.1 responses with Content-Length bodies.
    func hasCompleteResponses(_ count: Int) -> Bool {
        var rest = Substring(self)
        for _ in 0..<count {
            guard let headEnd = rest.range(of: "\r\n\r\n") else { return false }
            let head = rest[..<headEnd.lowerBound].lowercased()
            var length = 0
            if let line = head.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }) {
                length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
            }
            let bodyStart = headEnd.upperBound
            guard rest.utf8.distance(from: bodyStart, to: rest.endIndex) >= length else { return false }
            rest = rest[rest.utf8.index(bodyStart, offsetBy: length)...]
        }
        return true
    }
}
