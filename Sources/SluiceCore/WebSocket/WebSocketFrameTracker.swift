/// Frame boundaries of one direction of a WebSocket connection (RFC 6455 §5.2). Parses only frame
/// headers (FIN/opcode, mask bit, 7/16/64-bit length, masking key); never unmasks or copies payload:
/// payload bytes are skipped arithmetically, so the cost is per frame, not per byte.
///
/// Why a proxy needs it: to drain a WebSocket tunnel, Sluice injects a Close frame into the byte
/// stream. It may only do so between two frames, never inside one, or it would corrupt the frame in
/// flight. Control frames may sit between the fragments of a message (RFC 6455 §5.4), so any frame
/// boundary will do, including one inside a fragmented message. Counting Close frames tells the
/// proxy when a side has already closed (then it must not send another Close, §5.5.1).
///
/// Behaviour:
/// 1. A fresh tracker is at a frame boundary.
/// 2. ``consume(_:stopAtBoundary:)`` with `stopAtBoundary: false` walks all the bytes it is shown;
///    with `true` it stops at the first boundary, so the caller can forward the bytes before it,
///    write its own frame, and then pass the rest.
/// 3. A header split across reads is collected byte by byte (at most 14 bytes of state); a payload
///    split across reads is a counter.
/// 4. Extensions' reserved bits (RSV1-3, e.g. permessage-deflate) do not change framing and are
///    ignored. Framing violations the tracker cannot step over safely make it ``isLost`` for good:
///    the caller must then stop looking for boundaries (and close the tunnel rather than inject).
///
/// Usage, on every tunnel read:
/// ```
/// let progress = bytes.withUnsafeReadableBytes { tracker.consume($0, stopAtBoundary: false) }
/// closesSeen += progress.closeFramesEnded
/// ```
public struct WebSocketFrameTracker: Sendable, Equatable {
    /// Payload bytes of the current frame still to come; 0 at a boundary and while reading a header.
    private var payloadRemaining: UInt64 = 0
    /// Header bytes of the current frame seen so far; 0 at a boundary and inside a payload.
    private var headerCount: UInt8 = 0
    /// The current header's total length (2...14), known once its second byte is seen.
    private var headerLength: UInt8 = 2
    /// Bytes 0 and 1 of the current header (FIN, RSV, opcode; MASK, 7-bit length).
    private var byte0: UInt8 = 0
    private var byte1: UInt8 = 0
    /// The extended payload length accumulated so far (16- or 64-bit forms).
    private var extendedLength: UInt64 = 0
    /// The frame whose payload is being skipped (or whose header is complete) is a Close frame: its
    /// end is counted in ``Progress/closeFramesEnded``. False at a boundary.
    private var currentIsClose = false
    private var lost = false

    public init() {}

    /// The next byte starts a frame header (true at the start; false inside a header or a payload).
    public var isAtFrameBoundary: Bool {
        !self.lost && self.headerCount == 0 && self.payloadRemaining == 0
    }

    /// The stream broke a framing rule the tracker relies on (a 64-bit length with its most significant
    /// bit set, a control frame longer than 125 bytes or fragmented (FIN clear), a reserved opcode 0x3-0x7 / 0xB-0xF).
    /// Once lost it stays lost: consume() then consumes everything and isAtFrameBoundary is false.
    public var isLost: Bool { self.lost }

    public struct Progress: Equatable, Sendable {
        /// Bytes consumed from the front of the input.
        public var consumed: Int
        /// Close frames (opcode 0x8) whose last byte was within the consumed bytes.
        public var closeFramesEnded: Int

        public init(consumed: Int, closeFramesEnded: Int) {
            self.consumed = consumed
            self.closeFramesEnded = closeFramesEnded
        }
    }

    /// Consumes `bytes`. With `stopAtBoundary` it stops at the first frame boundary at or after the
    /// start of `bytes` (consuming 0 when already at one); otherwise it consumes all of them.
    public mutating func consume(_ bytes: UnsafeRawBufferPointer, stopAtBoundary: Bool) -> Progress {
        let count = bytes.count
        if self.lost { return Progress(consumed: count, closeFramesEnded: 0) }
        var index = 0
        var closes = 0
        while index < count {
            if self.payloadRemaining > 0 {
                // Inside a payload: skip it arithmetically.
                let available = UInt64(count &- index)
                if self.payloadRemaining > available {
                    self.payloadRemaining &-= available
                    return Progress(consumed: count, closeFramesEnded: closes)
                }
                index &+= Int(self.payloadRemaining)
                self.payloadRemaining = 0
                if self.currentIsClose { closes &+= 1 }
                self.currentIsClose = false
                continue
            }
            if self.headerCount == 0 {
                // At a boundary.
                if stopAtBoundary { return Progress(consumed: index, closeFramesEnded: closes) }
                // Fast path: the whole header is in this read.
                if count &- index >= 2 {
                    let b0 = bytes[index]
                    let b1 = bytes[index &+ 1]
                    guard let length = Self.headerLength(byte0: b0, byte1: b1) else {
                        self.lost = true
                        return Progress(consumed: count, closeFramesEnded: closes)
                    }
                    if count &- index >= Int(length) {
                        let len7 = b1 & 0x7F
                        var payload = UInt64(len7)
                        if len7 == 126 {
                            payload = UInt64(bytes[index &+ 2]) << 8 | UInt64(bytes[index &+ 3])
                        } else if len7 == 127 {
                            payload = 0
                            for offset in 2..<10 { payload = payload << 8 | UInt64(bytes[index &+ offset]) }
                            if payload >> 63 != 0 {
                                self.lost = true
                                return Progress(consumed: count, closeFramesEnded: closes)
                            }
                        }
                        index &+= Int(length)
                        let isClose = b0 & 0x0F == 0x8
                        if payload == 0 {
                            if isClose { closes &+= 1 }
                        } else {
                            self.payloadRemaining = payload
                            self.currentIsClose = isClose
                        }
                        continue
                    }
                }
            }
            // Slow path: a header split across reads, one byte at a time.
            if !self.headerByte(bytes[index]) {
                self.lost = true
                return Progress(consumed: count, closeFramesEnded: closes)
            }
            index &+= 1
            if self.headerCount == 0, self.payloadRemaining == 0, self.currentIsClose {
                closes &+= 1
                self.currentIsClose = false
            }
        }
        return Progress(consumed: index, closeFramesEnded: closes)
    }

    /// Takes one header byte; returns false when the header breaks a framing rule. When the header
    /// completes, `headerCount` returns to 0 and `payloadRemaining` holds the payload length.
    private mutating func headerByte(_ byte: UInt8) -> Bool {
        switch self.headerCount {
        case 0:
            self.byte0 = byte
        case 1:
            self.byte1 = byte
            guard let length = Self.headerLength(byte0: self.byte0, byte1: byte) else { return false }
            self.headerLength = length
            self.extendedLength = 0
        default:
            let len7 = self.byte1 & 0x7F
            let extendedBytes: UInt8 = len7 == 126 ? 2 : (len7 == 127 ? 8 : 0)
            if self.headerCount < 2 + extendedBytes {
                if extendedBytes == 8, self.headerCount == 2, byte & 0x80 != 0 { return false }
                self.extendedLength = self.extendedLength << 8 | UInt64(byte)
            }
            // Otherwise a masking-key byte: not needed, payload is never unmasked.
        }
        self.headerCount += 1
        if self.headerCount == self.headerLength {
            let len7 = self.byte1 & 0x7F
            self.payloadRemaining = len7 < 126 ? UInt64(len7) : self.extendedLength
            self.currentIsClose = self.byte0 & 0x0F == 0x8
            // Clear the scratch fields, so equal positions in a stream compare equal however the
            // header arrived (whole or split).
            self.headerCount = 0
            self.headerLength = 2
            self.byte0 = 0
            self.byte1 = 0
            self.extendedLength = 0
        }
        return true
    }

    /// The total header length (2-14 bytes) of a frame starting with these two bytes, or nil when
    /// they break a rule: a reserved opcode, or a control frame that is fragmented or longer than 125.
    private static func headerLength(byte0: UInt8, byte1: UInt8) -> UInt8? {
        let opcode = byte0 & 0x0F
        let len7 = byte1 & 0x7F
        switch opcode {
        case 0x0, 0x1, 0x2:
            break
        case 0x8, 0x9, 0xA:
            if byte0 & 0x80 == 0 || len7 > 125 { return nil }
        default:
            return nil
        }
        var length: UInt8 = 2
        if len7 == 126 { length += 2 } else if len7 == 127 { length += 8 }
        if byte1 & 0x80 != 0 { length += 4 }
        return length
    }
}
