import SluiceCore
import Testing

@Suite struct WebSocketFrameTrackerTests {
    /// A frame as the tests write it, independently of the code under test (RFC 6455 §5.2).
    struct TestFrame: Sendable, CustomTestStringConvertible {
        var fin = true
        var opcode: UInt8
        var length: UInt64
        var maskingKey: UInt32?
        var rsv: UInt8 = 0

        var header: [UInt8] {
            var bytes: [UInt8] = [(self.fin ? 0x80 : 0) | self.rsv << 4 | self.opcode]
            let mask: UInt8 = self.maskingKey == nil ? 0 : 0x80
            if self.length < 126 {
                bytes.append(mask | UInt8(self.length))
            } else if self.length <= 0xFFFF {
                bytes.append(mask | 126)
                bytes.append(contentsOf: [UInt8(self.length >> 8), UInt8(self.length & 0xFF)])
            } else {
                bytes.append(mask | 127)
                for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: self.length >> UInt64(shift))) }
            }
            if let key = self.maskingKey {
                for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: key >> UInt32(shift))) }
            }
            return bytes
        }

        /// Header and payload. The payload is made of bytes that would read as headers of Close and
        /// 64-bit frames, so a tracker that looked inside payloads would go wrong.
        var bytes: [UInt8] {
            let filler: [UInt8] = [0x88, 0x7F, 0xFF, 0x81, 0xFE]
            return self.header + (0..<Int(self.length)).map { filler[$0 % filler.count] }
        }

        var testDescription: String {
            "opcode \(self.opcode) length \(self.length) \(self.maskingKey == nil ? "unmasked" : "masked")\(self.fin ? "" : " FIN clear")"
        }
    }

    // MARK: - Helpers

    static func consume(_ tracker: inout WebSocketFrameTracker, _ bytes: some Collection<UInt8>, stopAtBoundary: Bool = false) -> WebSocketFrameTracker.Progress {
        Array(bytes).withUnsafeBytes { tracker.consume($0, stopAtBoundary: stopAtBoundary) }
    }

    /// The stream's true frame boundaries (offsets at which a header starts, and the end) and the
    /// offsets at which Close frames end.
    static func truth(_ frames: [TestFrame]) -> (bytes: [UInt8], boundaries: [Int], closeEnds: [Int]) {
        var bytes: [UInt8] = []
        var boundaries = [0]
        var closeEnds: [Int] = []
        for frame in frames {
            bytes += frame.bytes
            boundaries.append(bytes.count)
            if frame.opcode == 0x8 { closeEnds.append(bytes.count) }
        }
        return (bytes, boundaries, closeEnds)
    }

    /// Feeds `pieces` as a proxy that injects at boundaries would: `stopAtBoundary: true` until the
    /// tracker reports a boundary, record it, then step one byte past it. Returns every position at
    /// which the tracker said it was at a boundary and where each Close frame ended.
    static func walk(_ pieces: [ArraySlice<UInt8>]) -> (boundaries: [Int], closeEnds: [Int], tracker: WebSocketFrameTracker) {
        var tracker = WebSocketFrameTracker()
        var position = 0
        var boundaries: [Int] = []
        var closeEnds: [Int] = []
        for piece in pieces {
            var offset = piece.startIndex
            while offset < piece.endIndex {
                let progress: WebSocketFrameTracker.Progress
                if tracker.isAtFrameBoundary {
                    if boundaries.last != position { boundaries.append(position) }
                    #expect(consume(&tracker, piece[offset...], stopAtBoundary: true).consumed == 0)
                    progress = consume(&tracker, piece[offset..<offset + 1])
                } else {
                    progress = consume(&tracker, piece[offset...], stopAtBoundary: true)
                }
                #expect(progress.closeFramesEnded <= 1)
                if progress.closeFramesEnded == 1 { closeEnds.append(position + progress.consumed) }
                offset += progress.consumed
                position += progress.consumed
            }
        }
        if tracker.isAtFrameBoundary, boundaries.last != position { boundaries.append(position) }
        return (boundaries, closeEnds, tracker)
    }

    /// Several frames of every kind: a fragmented masked text message with a Ping and a Close
    /// between its fragments, a 16-bit length, 7-bit extremes, empty frames, unmasked frames.
    static let stream: [TestFrame] = [
        TestFrame(fin: false, opcode: 0x1, length: 5, maskingKey: 0x0102_0304),
        TestFrame(fin: false, opcode: 0x0, length: 126, maskingKey: 0xA1B2_C3D4),
        TestFrame(opcode: 0x9, length: 0, maskingKey: 0x1111_1111),
        TestFrame(opcode: 0x8, length: 2, maskingKey: 0x2222_2222),
        TestFrame(opcode: 0x0, length: 3, maskingKey: 0x3333_3333),
        TestFrame(opcode: 0x2, length: 125),
        TestFrame(opcode: 0xA, length: 4),
        TestFrame(opcode: 0x8, length: 0),
        TestFrame(opcode: 0x2, length: 0, maskingKey: 0x4444_4444),
        TestFrame(opcode: 0x8, length: 125, maskingKey: 0x5555_5555),
    ]

    // MARK: - Header length forms

    static let lengthForms: [TestFrame] = [0, 1, 125, 126, 127, 65535, 65536, 0x1_0000_0005].flatMap { length in
        [TestFrame(opcode: 0x2, length: length), TestFrame(opcode: 0x2, length: length, maskingKey: 0xDEAD_BEEF)]
    }

    /// Each length form (7-bit 0 and 125, 16-bit 126 and 65535, 64-bit 65536 and past 4 GiB), masked
    /// or not: the header alone leaves the tracker in the payload, the payload's last byte ends the frame.
    @Test(arguments: lengthForms)
    func everyLengthFormEndsExactlyAfterItsPayload(frame: TestFrame) {
        let header = frame.header
        let expectedHeaderLength = (frame.length < 126 ? 2 : frame.length <= 0xFFFF ? 4 : 10) + (frame.maskingKey == nil ? 0 : 4)
        #expect(header.count == expectedHeaderLength)

        // The header in one read, then the payload in reads of up to 1 MiB but its last byte.
        var tracker = WebSocketFrameTracker()
        #expect(Self.consume(&tracker, header) == .init(consumed: header.count, closeFramesEnded: 0))
        #expect(tracker.isAtFrameBoundary == (frame.length == 0))
        if frame.length > 0 {
            let chunk = [UInt8](repeating: 0x88, count: 1 << 20)
            var remaining = frame.length - 1
            chunk.withUnsafeBytes { buffer in
                while remaining > 0 {
                    let size = Int(min(remaining, UInt64(buffer.count)))
                    let progress = tracker.consume(UnsafeRawBufferPointer(rebasing: buffer[0..<size]), stopAtBoundary: true)
                    #expect(progress.consumed == size)
                    remaining -= UInt64(size)
                }
            }
            #expect(!tracker.isAtFrameBoundary)
            // The last payload byte and the next header in one read: stops between them.
            #expect(Self.consume(&tracker, [0x00, 0x82, 0x00], stopAtBoundary: true).consumed == 1)
        }
        #expect(tracker.isAtFrameBoundary)
        #expect(!tracker.isLost)

        // The header a byte at a time.
        var slow = WebSocketFrameTracker()
        for (index, byte) in header.enumerated() {
            #expect(!slow.isAtFrameBoundary || index == 0)
            #expect(Self.consume(&slow, [byte]).consumed == 1)
        }
        #expect(slow.isAtFrameBoundary == (frame.length == 0))
    }

    /// A whole frame in one read (the header read in place), then the same frame with its first
    /// byte alone (the header collected across reads): both end at the boundary after the frame,
    /// and the two trackers are equal there.
    @Test(arguments: lengthForms.filter { $0.length <= 65536 })
    func wholeFrameInOneReadEndsAtABoundary(frame: TestFrame) {
        let bytes = frame.bytes
        var whole = WebSocketFrameTracker()
        #expect(Self.consume(&whole, bytes) == .init(consumed: bytes.count, closeFramesEnded: 0))
        #expect(whole.isAtFrameBoundary)
        #expect(whole == WebSocketFrameTracker())

        var split = WebSocketFrameTracker()
        #expect(Self.consume(&split, bytes.prefix(1)).consumed == 1)
        #expect(Self.consume(&split, bytes.dropFirst() + [0x89, 0x00], stopAtBoundary: true).consumed == bytes.count - 1)
        #expect(split == whole)
    }

    /// The largest legal 64-bit length (MSB clear) is not lost; the tracker sits in its payload.
    @Test func largestLegalLengthIsTracked() {
        var tracker = WebSocketFrameTracker()
        let frame = TestFrame(opcode: 0x2, length: UInt64(Int64.max), maskingKey: 7)
        #expect(Self.consume(&tracker, frame.header + [1, 2, 3]).consumed == frame.header.count + 3)
        #expect(!tracker.isLost)
        #expect(!tracker.isAtFrameBoundary)
    }

    // MARK: - Splits

    /// The stream fed whole, split in two at every offset, and in 1-byte pieces: the tracker reports
    /// exactly the true boundaries and Close ends, every time.
    @Test func streamSplitAtEveryOffsetReportsTheTrueBoundaries() {
        let (bytes, boundaries, closeEnds) = Self.truth(Self.stream)
        for split in 0...bytes.count {
            let result = Self.walk([bytes[..<split], bytes[split...]])
            #expect(result.boundaries == boundaries, "split at \(split)")
            #expect(result.closeEnds == closeEnds, "split at \(split)")
            #expect(result.tracker.isAtFrameBoundary)
        }
        let pieces = bytes.indices.map { bytes[$0...$0] }
        let result = Self.walk(pieces)
        #expect(result.boundaries == boundaries)
        #expect(result.closeEnds == closeEnds)
    }

    /// 1-byte pieces without `stopAtBoundary`: after each byte, isAtFrameBoundary is true exactly at
    /// a true boundary, and a Close is counted exactly with its last byte.
    @Test func oneBytePiecesReportBoundaryAfterEachFramesLastByte() {
        let (bytes, boundaries, closeEnds) = Self.truth(Self.stream)
        var tracker = WebSocketFrameTracker()
        #expect(tracker.isAtFrameBoundary)
        for (index, byte) in bytes.enumerated() {
            let progress = Self.consume(&tracker, [byte])
            #expect(progress.consumed == 1)
            #expect(progress.closeFramesEnded == (closeEnds.contains(index + 1) ? 1 : 0), "byte \(index)")
            #expect(tracker.isAtFrameBoundary == boundaries.contains(index + 1), "byte \(index)")
        }
    }

    /// Every split into three pieces, without `stopAtBoundary`: the Close count adds up and the
    /// tracker ends at a boundary, in the same state as one that read the stream whole.
    @Test func everyThreeWaySplitCountsEveryClose() {
        let frames = Array(Self.stream.prefix(5)) + [TestFrame(opcode: 0x8, length: 0), TestFrame(opcode: 0x1, length: 130)]
        let (bytes, _, closeEnds) = Self.truth(frames)
        var whole = WebSocketFrameTracker()
        #expect(Self.consume(&whole, bytes) == .init(consumed: bytes.count, closeFramesEnded: closeEnds.count))
        for first in 0...bytes.count {
            for second in first...bytes.count {
                var tracker = WebSocketFrameTracker()
                var closes = 0
                for piece in [bytes[..<first], bytes[first..<second], bytes[second...]] {
                    let progress = Self.consume(&tracker, piece)
                    #expect(progress.consumed == piece.count)
                    closes += progress.closeFramesEnded
                }
                #expect(closes == closeEnds.count)
                #expect(tracker == whole)
            }
        }
    }

    // MARK: - stopAtBoundary

    /// From a boundary `stopAtBoundary` consumes nothing; from inside a frame it consumes exactly
    /// to the frame's end, wherever the read starts inside the frame.
    @Test func stopAtBoundaryStopsExactlyAtEachBoundary() {
        let (bytes, boundaries, _) = Self.truth(Self.stream)
        var tracker = WebSocketFrameTracker()
        #expect(Self.consume(&tracker, bytes, stopAtBoundary: true) == .init(consumed: 0, closeFramesEnded: 0))
        #expect(Self.consume(&tracker, [UInt8](), stopAtBoundary: true) == .init(consumed: 0, closeFramesEnded: 0))
        for (start, end) in zip(boundaries, boundaries.dropFirst()) {
            for inside in start + 1..<end {
                var probe = tracker
                _ = Self.consume(&probe, bytes[start..<inside])
                #expect(!probe.isAtFrameBoundary)
                let progress = Self.consume(&probe, bytes[inside...], stopAtBoundary: true)
                #expect(progress.consumed == end - inside, "frame \(start)..<\(end), from \(inside)")
                #expect(probe.isAtFrameBoundary)
            }
            _ = Self.consume(&tracker, bytes[start..<end])
        }
    }

    /// The drain case: a Close injected between the fragments of a fragmented message (text FIN=0,
    /// continuation, here, continuation FIN=1). The tracker reports the boundary between fragments,
    /// accepts the injected Close there, and goes on with the message.
    @Test func closeInjectedBetweenFragmentsOfAMessage() {
        let first = TestFrame(fin: false, opcode: 0x1, length: 10, maskingKey: 0xCAFE_F00D).bytes
        let middle = TestFrame(fin: false, opcode: 0x0, length: 300, maskingKey: 0x0BAD_CAFE).bytes
        let last = TestFrame(fin: true, opcode: 0x0, length: 7, maskingKey: 0x1234_5678).bytes
        var tracker = WebSocketFrameTracker()
        // One read ends inside the middle fragment, the next holds its rest and the last fragment.
        let read1 = first + middle.prefix(100)
        let read2 = Array(middle.dropFirst(100)) + last
        #expect(Self.consume(&tracker, read1, stopAtBoundary: true).consumed == 0)
        #expect(Self.consume(&tracker, read1).consumed == read1.count)
        #expect(!tracker.isAtFrameBoundary)
        let upToBoundary = Self.consume(&tracker, read2, stopAtBoundary: true)
        #expect(upToBoundary == .init(consumed: middle.count - 100, closeFramesEnded: 0))
        #expect(tracker.isAtFrameBoundary)

        let injected = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: 0x3779_1D2C)
        #expect(Self.consume(&tracker, injected) == .init(consumed: injected.count, closeFramesEnded: 1))
        #expect(tracker.isAtFrameBoundary)

        #expect(Self.consume(&tracker, read2.dropFirst(upToBoundary.consumed)) == .init(consumed: last.count, closeFramesEnded: 0))
        #expect(tracker.isAtFrameBoundary)
    }

    /// A Ping between fragments: its end is a boundary like any other; no Close is counted.
    @Test func pingInterleavedInAFragmentedMessage() {
        let frames = [
            TestFrame(fin: false, opcode: 0x2, length: 20),
            TestFrame(opcode: 0x9, length: 125),
            TestFrame(fin: true, opcode: 0x0, length: 20),
        ]
        let (bytes, boundaries, _) = Self.truth(frames)
        var tracker = WebSocketFrameTracker()
        #expect(Self.consume(&tracker, bytes) == .init(consumed: bytes.count, closeFramesEnded: 0))
        let result = Self.walk([bytes[...]])
        #expect(result.boundaries == boundaries)
        #expect(result.closeEnds == [])
    }

    // MARK: - Close counting

    /// A Close split across reads (in its header, in its payload) is counted once, in the read that
    /// holds its last byte.
    @Test func closeSplitAcrossReadsIsCountedWithItsLastByte() {
        let close = WebSocketFrame.close(code: 1000, reason: "bye", maskingKey: 0xFFFF_0000)
        for split in 1..<close.count {
            var tracker = WebSocketFrameTracker()
            #expect(Self.consume(&tracker, close.prefix(split)) == .init(consumed: split, closeFramesEnded: 0))
            #expect(Self.consume(&tracker, close.dropFirst(split)) == .init(consumed: close.count - split, closeFramesEnded: 1))
        }
        // An empty Close, its two header bytes in two reads.
        var tracker = WebSocketFrameTracker()
        #expect(Self.consume(&tracker, [0x88]) == .init(consumed: 1, closeFramesEnded: 0))
        #expect(Self.consume(&tracker, [0x00]) == .init(consumed: 1, closeFramesEnded: 1))
    }

    /// Several Closes in one read are all counted (a peer should send one, but the count is honest).
    @Test func severalClosesInOneReadAreAllCounted() {
        let (bytes, _, closeEnds) = Self.truth(Self.stream)
        #expect(closeEnds.count == 3)
        var tracker = WebSocketFrameTracker()
        #expect(Self.consume(&tracker, bytes) == .init(consumed: bytes.count, closeFramesEnded: 3))
    }

    // MARK: - Lost

    static let lostHeaders: [[UInt8]] = [
        // 64-bit length with its most significant bit set.
        [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
        [0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4],
        // Control frames longer than 125 bytes.
        [0x89, 0x7E, 0x00, 0x7E],
        [0x8A, 0x7F, 0, 0, 0, 0, 0, 0, 0, 126],
        [0x88, 0xFE, 0x00, 0x80, 1, 2, 3, 4],
        // Fragmented control frames (FIN clear).
        [0x08, 0x02, 0x03, 0xE8],
        [0x09, 0x00],
        [0x0A, 0x80, 1, 2, 3, 4],
    ] + ([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] as [UInt8]).map { [0x80 | $0, 0x00] }

    /// Each framing violation makes the tracker lost, whether the header comes whole or a byte at a
    /// time, after a valid frame or first; lost, it consumes everything, counts nothing, and never
    /// reports a boundary again.
    @Test(arguments: lostHeaders)
    func framingViolationMakesTheTrackerLostForGood(header: [UInt8]) {
        let valid = TestFrame(opcode: 0x8, length: 2).bytes
        for pieces in [[valid + header], [valid, header], (valid + header).map { [$0] }] {
            var tracker = WebSocketFrameTracker()
            var closes = 0
            for piece in pieces {
                let progress = Self.consume(&tracker, piece)
                #expect(progress.consumed == piece.count)
                closes += progress.closeFramesEnded
            }
            #expect(closes == 1)
            #expect(tracker.isLost)
            #expect(!tracker.isAtFrameBoundary)
            let after = valid + valid
            #expect(Self.consume(&tracker, after, stopAtBoundary: true) == .init(consumed: after.count, closeFramesEnded: 0))
            #expect(tracker.isLost)
            #expect(!tracker.isAtFrameBoundary)
        }
    }

    /// What is not a violation for the tracker: reserved bits (extensions such as permessage-deflate
    /// set RSV1), non-minimal lengths, data frames with FIN clear, a 125-byte control frame.
    @Test func toleratedFramesAreNotLost() {
        let frames = [
            TestFrame(opcode: 0x1, length: 9, rsv: 0b100),
            TestFrame(fin: false, opcode: 0x2, length: 9, rsv: 0b111),
            TestFrame(opcode: 0x0, length: 3),
            TestFrame(opcode: 0x9, length: 125, maskingKey: 5),
        ]
        var (bytes, boundaries, _) = Self.truth(frames)
        // A 16-bit length form carrying 5 (non-minimal, but its framing is clear).
        bytes += [0x82, 0x7E, 0x00, 0x05, 1, 2, 3, 4, 5]
        boundaries.append(bytes.count)
        let result = Self.walk(bytes.indices.map { bytes[$0...$0] })
        #expect(result.boundaries == boundaries)
        #expect(!result.tracker.isLost)
    }
}
