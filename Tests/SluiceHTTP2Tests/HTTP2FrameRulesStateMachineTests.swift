import NIOCore
import SluiceHTTP2
import Testing

/// Raw frames, written by hand so they can break the rules.
enum RawFrame {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, streamID: UInt32, payload: [UInt8] = []) -> [UInt8] {
        let length = UInt32(payload.count)
        return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, flags,
                UInt8(streamID >> 24), UInt8(streamID >> 16 & 0xff), UInt8(streamID >> 8 & 0xff), UInt8(streamID & 0xff)]
            + payload
    }

    static let settings = frame(type: 0x4, streamID: 0)

    static func priority(streamID: UInt32, dependsOn: UInt32 = 0) -> [UInt8] {
        frame(type: 0x2, streamID: streamID,
              payload: [UInt8(dependsOn >> 24), UInt8(dependsOn >> 16 & 0xff), UInt8(dependsOn >> 8 & 0xff), UInt8(dependsOn & 0xff), 15])
    }

    /// A HEADERS frame (END_STREAM | END_HEADERS) with a GET / in HPACK static-table references.
    static func headers(streamID: UInt32) -> [UInt8] {
        // :method GET (2), :scheme http (6), :path / (4), :authority literal "t" (name index 1).
        frame(type: 0x1, flags: 0x5, streamID: streamID, payload: [0x82, 0x86, 0x84, 0x41, 0x01, 0x74])
    }

    static func data(streamID: UInt32, _ payload: [UInt8]) -> [UInt8] {
        frame(type: 0x0, streamID: streamID, payload: payload)
    }

    /// A GET / (END_STREAM) whose header block is split over a HEADERS frame and `continuations`
    /// CONTINUATION frames, the last one with END_HEADERS. The block carries `x-pad` with 100 bytes, so
    /// every frame has a piece of it.
    static func headersWithContinuations(streamID: UInt32, continuations: Int) -> [UInt8] {
        Self.headerBlockFrames(streamID: streamID, continuations: continuations).flatMap { $0 }
    }

    /// The frames of ``headersWithContinuations(streamID:continuations:)``, one array each.
    static func headerBlockFrames(streamID: UInt32, continuations: Int) -> [[UInt8]] {
        let block: [UInt8] = [0x82, 0x86, 0x84, 0x41, 0x01, 0x74, 0x00, 0x05] + Array("x-pad".utf8) + [100] + Array(repeating: UInt8(ascii: "a"), count: 100)
        let pieceCount = continuations + 1
        let size = (block.count + pieceCount - 1) / pieceCount
        return (0..<pieceCount).map { index in
            let piece = Array(block[min(block.count, index * size)..<min(block.count, (index + 1) * size)])
            let endHeaders: UInt8 = index == pieceCount - 1 ? 0x4 : 0
            return index == 0
                ? frame(type: 0x1, flags: 0x1 | endHeaders, streamID: streamID, payload: piece)
                : frame(type: 0x9, flags: endHeaders, streamID: streamID, payload: piece)
        }
    }
}

@Suite struct HTTP2FrameRulesStateMachineTests {
    typealias Machine = HTTP2FrameRulesStateMachine

    static func feed(_ machine: inout Machine, _ bytes: [UInt8]) -> Machine.BytesReceivedAction {
        machine.bytesReceived(ByteBuffer(bytes: bytes))
    }

    /// A PRIORITY frame on stream 0 is a connection error PROTOCOL_ERROR; the frames before it are valid.
    @Test func priorityOnStreamZeroIsAViolation() {
        var machine = Machine()
        let valid = RawFrame.preface + RawFrame.settings + RawFrame.priority(streamID: 1)
        let action = Self.feed(&machine, valid + RawFrame.priority(streamID: 0) + RawFrame.settings)
        #expect(action == .violation(validBytes: valid.count, errorCode: .protocolError))
    }

    /// Issue 14 item 8: a header block may take 8 CONTINUATION frames, block after block; the 9th
    /// CONTINUATION of one block is a connection error ENHANCE_YOUR_CALM, before libnghttp2 sees it.
    @Test func ninthContinuationOfABlockIsAViolation() {
        var machine = Machine()
        let allowed = RawFrame.preface + RawFrame.settings
            + RawFrame.headersWithContinuations(streamID: 1, continuations: 8)
            + RawFrame.headersWithContinuations(streamID: 3, continuations: 8)
        #expect(Self.feed(&machine, allowed) == .forward)

        let flood = RawFrame.headerBlockFrames(streamID: 5, continuations: 9)
        // Valid: the HEADERS frame and 8 CONTINUATIONs; the 9th (the last frame) is the violation.
        let valid = flood.dropLast().reduce(0) { $0 + $1.count }
        #expect(Self.feed(&machine, flood.flatMap { $0 }) == .violation(validBytes: valid, errorCode: .enhanceYourCalm))
    }

    /// The count is per block and survives reads that split frames anywhere.
    @Test func continuationCountSurvivesSplitReads() {
        var machine = Machine()
        let bytes = RawFrame.preface + RawFrame.settings + RawFrame.headersWithContinuations(streamID: 1, continuations: 9)
        var actions: [Machine.BytesReceivedAction] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + 7)
            actions.append(Self.feed(&machine, Array(bytes[offset..<end])))
            offset = end
        }
        #expect(actions.filter { $0 != .forward }.count == 1)
        #expect(actions.contains { if case .violation(_, .enhanceYourCalm) = $0 { true } else { false } })
    }

    /// Well-behaved traffic passes: consecutive stream IDs, trailers on an open stream, PRIORITY anywhere
    /// but stream 0, and payloads that happen to look like frame headers.
    @Test func wellBehavedTrafficIsForwarded() {
        var machine = Machine()
        let lookalike = RawFrame.priority(streamID: 0)  // inside a DATA payload: not a frame
        let bytes = RawFrame.preface + RawFrame.settings + RawFrame.headers(streamID: 1) + RawFrame.headers(streamID: 3)
            + RawFrame.data(streamID: 3, lookalike) + RawFrame.headers(streamID: 3) + RawFrame.priority(streamID: 9)
            + RawFrame.headers(streamID: 5) + RawFrame.headers(streamID: 1)
        #expect(Self.feed(&machine, bytes) == .forward)
    }

    /// A HEADERS frame on an ID below the highest used, that was never used, opens a stream out of order.
    @Test func decreasingStreamIDIsAViolation() {
        var machine = Machine()
        let valid = RawFrame.preface + RawFrame.settings + RawFrame.headers(streamID: 5)
        #expect(Self.feed(&machine, valid) == .forward)
        #expect(Self.feed(&machine, RawFrame.headers(streamID: 3)) == .violation(validBytes: 0, errorCode: .protocolError))
    }

    /// Every ID skipped over is remembered, not only the one just below: 1 then 11 makes 3...9 unusable.
    @Test func everySkippedIDIsRemembered() {
        for skipped: UInt32 in [3, 5, 7, 9] {
            var machine = Machine()
            let valid = RawFrame.preface + RawFrame.headers(streamID: 1) + RawFrame.headers(streamID: 11)
            #expect(Self.feed(&machine, valid + RawFrame.headers(streamID: skipped)) == .violation(validBytes: valid.count, errorCode: .protocolError))
        }
    }

    /// Frame headers split across reads, one byte at a time, are still read; a violation found in a later
    /// read forwards none of that read.
    @Test func headersSplitAcrossReadsAreRead() {
        var machine = Machine()
        let bytes = RawFrame.preface + RawFrame.settings + RawFrame.headers(streamID: 1) + RawFrame.priority(streamID: 0)
        var actions: [Machine.BytesReceivedAction] = []
        for byte in bytes { actions.append(Self.feed(&machine, [byte])) }
        let firstViolation = actions.firstIndex { $0 != .forward }
        #expect(firstViolation == bytes.count - 14 + 8)  // the ninth byte of the PRIORITY frame's header
        #expect(actions[firstViolation ?? 0] == .violation(validBytes: 0, errorCode: .protocolError))
    }

    /// Even stream IDs are libnghttp2's to reject; the machine leaves them alone.
    @Test func evenStreamIDsAreLeftToLibnghttp2() {
        var machine = Machine()
        let bytes = RawFrame.preface + RawFrame.headers(streamID: 3) + RawFrame.headers(streamID: 2)
        #expect(Self.feed(&machine, bytes) == .forward)
    }

    /// At most `maxRememberedGaps` gaps are kept: the oldest is forgotten (and a HEADERS on it passes,
    /// as libnghttp2 would have it), the newest still trips.
    @Test func rememberedGapsAreBounded() {
        var machine = Machine()
        var bytes = RawFrame.preface
        var id: UInt32 = 1
        for _ in 0...(Machine.maxRememberedGaps + 1) {
            bytes += RawFrame.headers(streamID: id)
            id += 4  // skips one ID each time
        }
        #expect(Self.feed(&machine, bytes) == .forward)
        #expect(Self.feed(&machine, RawFrame.headers(streamID: 3)) == .forward)  // the first gap, forgotten
        #expect(Self.feed(&machine, RawFrame.headers(streamID: id - 6)) == .violation(validBytes: 0, errorCode: .protocolError))
    }
}

@Suite struct HTTP2ServerConnectionHandlerFrameRulesTests {
    /// PRIORITY on stream 0 after a request: the request reaches the delegate, then GOAWAY PROTOCOL_ERROR
    /// with the request's stream as the last one, the stream is cut, and the connection closes.
    @Test func priorityOnStreamZeroEndsTheConnection() throws {
        let connection = try EmbeddedConnection()
        try connection.exchange()
        let id = try connection.get("/a")
        try connection.clientToServer()
        #expect(connection.delegate.calls == [.opened(id, path: "/a", endStream: true)])
        try connection.channel.writeInbound(ByteBuffer(bytes: RawFrame.priority(streamID: 0)))
        try connection.serverToClient()
        #expect(connection.goAwaysWritten == [[UInt32(id.rawValue), HTTP2ErrorCode.protocolError.rawValue]])
        #expect(connection.delegate.calls == [.opened(id, path: "/a", endStream: true), .closed(id, .cancel), .connectionClosed])
        #expect(!connection.channel.isActive)
    }

    /// A HEADERS frame that reuses a skipped stream ID ends the connection with GOAWAY PROTOCOL_ERROR.
    @Test func decreasingStreamIDEndsTheConnection() throws {
        let connection = try EmbeddedConnection()
        try connection.exchange()
        try connection.channel.writeInbound(ByteBuffer(bytes: RawFrame.headers(streamID: 5) + RawFrame.headers(streamID: 3)))
        try connection.serverToClient()
        #expect(connection.goAwaysWritten == [[5, HTTP2ErrorCode.protocolError.rawValue]])
        #expect(!connection.channel.isActive)
    }
}
