import NIOCore

/// Enforces the RFC 9113 frame rules that libnghttp2 1.52 leaves unchecked on the server side, by
/// reading the frame headers in the client's byte stream (payloads are skipped, never copied).
///
/// 1. PRIORITY on stream 0 is a connection error `PROTOCOL_ERROR` (RFC 9113 §6.3). libnghttp2 discards
///    PRIORITY frames unread once we send SETTINGS_NO_RFC7540_PRIORITIES, stream 0 included.
/// 2. A HEADERS frame on a stream ID below one the client already used, that the client never opened,
///    is a connection error `PROTOCOL_ERROR` (RFC 9113 §5.1.1: new stream IDs must increase).
///    libnghttp2 cannot tell it from a late frame on a closed stream and discards it. The machine
///    remembers the IDs skipped over as ranges; clients rarely skip any. At most
///    ``maxRememberedGaps`` ranges are kept (the oldest are forgotten), so a client that skips IDs on
///    purpose costs bounded memory and, past the bound, gets libnghttp2's leniency.
/// 3. A header block split over more than ``maxContinuationFrames`` CONTINUATION frames is a connection
///    error `ENHANCE_YOUR_CALM` (a CONTINUATION flood, CVE-2024-27316 and kin). Debian's libnghttp2
///    1.52.0-1+deb12u2 and later stop at the same count (upstream 1.59's `max_continuations`) but with a
///    fatal error that leaves no GOAWAY to send, so the connection ended in a bare FIN; upstream 1.52
///    has no bound at all. Checking here first gives the client a GOAWAY either way.
///
/// Everything else (lengths, flags, stream states, HPACK) is libnghttp2's to check. The first 24 bytes
/// are the client connection preface and are not frames. Pure: bytes in, a decision out.
///
/// ```swift
/// var rules = HTTP2FrameRulesStateMachine()
/// switch rules.bytesReceived(buffer) {
/// case .forward: try session.receive(buffer)
/// case .violation(let validBytes, let errorCode):
///     // feed the first `validBytes` bytes, then GOAWAY `errorCode` and close
/// }
/// ```
public struct HTTP2FrameRulesStateMachine: Sendable {
    /// What to do with the bytes just received.
    public enum BytesReceivedAction: Equatable, Sendable {
        /// Pass them all to the session.
        case forward
        /// A frame breaks a rule: pass the `validBytes` before it, then end the connection with a GOAWAY
        /// carrying `errorCode`. Later bytes are not looked at.
        case violation(validBytes: Int, errorCode: HTTP2ErrorCode)
    }

    /// How many ranges of skipped stream IDs are remembered.
    public static let maxRememberedGaps = 64
    /// How many CONTINUATION frames one header block may have (libnghttp2's `max_continuations`
    /// default, so that the library never meets one more).
    public static let maxContinuationFrames = 8

    private static let prefaceLength = 24
    private static let frameHeaderLength = 9
    private static let headersType: UInt8 = 0x1
    private static let priorityType: UInt8 = 0x2
    private static let continuationType: UInt8 = 0x9
    private static let endHeadersFlag: UInt8 = 0x4

    private enum State: Sendable {
        /// Skipping the client connection preface: `remaining` bytes of it to go.
        /// Valid transitions: to `.preface` with fewer bytes to go, to `.frameHeader` once it is skipped.
        case preface(remaining: Int)
        /// Reading a frame header; `bytes` holds the part that arrived in earlier reads (at most 8 bytes,
        /// and empty unless a header was split across reads).
        /// Valid transitions: to `.frameHeader` with more bytes, to `.payload` or (an empty payload)
        /// `.frameHeader` once the header is read, to `.violated`.
        case frameHeader(bytes: [UInt8])
        /// Skipping a frame's payload: `remaining` bytes to go.
        /// Valid transitions: to `.payload` with fewer bytes to go, to `.frameHeader` once it is skipped.
        case payload(remaining: Int)
        /// A rule was broken; the connection is going away and nothing more is looked at. Terminal.
        case violated
    }

    private var state: State = .preface(remaining: Self.prefaceLength)
    /// The highest client stream ID a HEADERS frame used.
    private var highestStreamID: UInt32 = 0
    /// Odd stream IDs below `highestStreamID` that no HEADERS frame used, as ranges, oldest first.
    private var gaps: [ClosedRange<UInt32>] = []
    /// Inside a header block (a HEADERS frame without END_HEADERS, then CONTINUATIONs): how many
    /// CONTINUATION frames it had so far; nil outside one.
    private var continuations: Int?

    public init() {}

    /// Looks at the next bytes of the client's byte stream.
    public mutating func bytesReceived(_ buffer: ByteBuffer) -> BytesReceivedAction {
        buffer.withUnsafeReadableBytes { self.bytesReceived($0) }
    }

    private mutating func bytesReceived(_ bytes: UnsafeRawBufferPointer) -> BytesReceivedAction {
        var offset = 0
        while offset < bytes.count {
            switch self.state {
            case .violated:
                return .forward
            case .preface(let remaining):
                let taken = min(remaining, bytes.count - offset)
                offset += taken
                self.state = remaining == taken ? .frameHeader(bytes: []) : .preface(remaining: remaining - taken)
            case .payload(let remaining):
                let taken = min(remaining, bytes.count - offset)
                offset += taken
                self.state = remaining == taken ? .frameHeader(bytes: []) : .payload(remaining: remaining - taken)
            case .frameHeader(var partial):
                let frameStart = offset - partial.count
                let type: UInt8
                let flags: UInt8
                let length: Int
                let streamID: UInt32
                if partial.isEmpty && bytes.count - offset >= Self.frameHeaderLength {
                    // The usual case: the whole header is in this buffer; read it in place.
                    (type, flags, length, streamID) = Self.parseHeader(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + Self.frameHeaderLength)]))
                    offset += Self.frameHeaderLength
                } else {
                    // Split across reads: keep the first part (rare, so the array is fine).
                    let taken = min(Self.frameHeaderLength - partial.count, bytes.count - offset)
                    partial.append(contentsOf: bytes[offset..<(offset + taken)])
                    offset += taken
                    guard partial.count == Self.frameHeaderLength else {
                        self.state = .frameHeader(bytes: partial)
                        continue
                    }
                    (type, flags, length, streamID) = partial.withUnsafeBytes { Self.parseHeader($0) }
                }
                if let errorCode = self.frameHeaderReceived(type: type, flags: flags, streamID: streamID) {
                    self.state = .violated
                    // The frame began in an earlier buffer when `frameStart` is negative: those bytes
                    // were forwarded already, and nothing of this buffer may be.
                    return .violation(validBytes: max(0, frameStart), errorCode: errorCode)
                }
                self.state = length == 0 ? .frameHeader(bytes: []) : .payload(remaining: length)
            }
        }
        return .forward
    }

    private static func parseHeader(_ header: UnsafeRawBufferPointer) -> (type: UInt8, flags: UInt8, length: Int, streamID: UInt32) {
        let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
        let streamID = UInt32(header[5]) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8])
        return (header[3], header[4], length, streamID & 0x7FFF_FFFF)
    }

    /// Checks one frame header; returns the connection error it causes, if any.
    private mutating func frameHeaderReceived(type: UInt8, flags: UInt8, streamID: UInt32) -> HTTP2ErrorCode? {
        switch type {
        case Self.headersType:
            // A block left open (a frame other than CONTINUATION after it) is libnghttp2's to reject.
            self.continuations = flags & Self.endHeadersFlag == 0 ? 0 : nil
        case Self.continuationType:
            if let count = self.continuations {
                guard count < Self.maxContinuationFrames else { return .enhanceYourCalm }
                self.continuations = flags & Self.endHeadersFlag == 0 ? count + 1 : nil
            }
        default:
            break
        }
        switch type {
        case Self.priorityType where streamID == 0:
            return .protocolError
        case Self.headersType where streamID % 2 == 1:
            if streamID > self.highestStreamID {
                // Every odd ID in between is skipped: it can never be opened now (§5.1.1).
                let firstSkipped = self.highestStreamID == 0 ? 1 : self.highestStreamID + 2
                if firstSkipped < streamID { self.rememberGap(firstSkipped...(streamID - 2)) }
                self.highestStreamID = streamID
                return nil
            }
            // A lower ID: trailers, or a late frame on a closed stream, unless the client never used it.
            return self.gaps.contains { $0.contains(streamID) } ? .protocolError : nil
        default:
            // Even IDs on HEADERS, and everything else, are libnghttp2's to judge.
            return nil
        }
    }

    private mutating func rememberGap(_ gap: ClosedRange<UInt32>) {
        if self.gaps.count == Self.maxRememberedGaps { self.gaps.removeFirst() }
        self.gaps.append(gap)
    }
}
