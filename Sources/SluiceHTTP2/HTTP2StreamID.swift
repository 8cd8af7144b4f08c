/// An HTTP/2 stream identifier (RFC 9113 §5.1.1): a 31-bit unsigned integer.
///
/// 1. Client-initiated streams are odd, server-initiated streams are even; 0 names the connection.
/// 2. ``maxID`` (2^31-1) is the last-stream-id of a shutdown notice GOAWAY (RFC 9113 §6.8).
///
/// ```swift
/// let id = HTTP2StreamID(1)
/// id.isClientInitiated  // true
/// ```
public struct HTTP2StreamID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The wire value, in `0...Int32.max`.
    public let rawValue: Int32

    /// Creates a stream ID; `rawValue` must be in `0...2^31-1`.
    public init(_ rawValue: Int32) {
        precondition(rawValue >= 0, "HTTP/2 stream IDs are 31-bit unsigned integers, got \(rawValue)")
        self.rawValue = rawValue
    }

    /// Stream 0: the connection itself (SETTINGS, PING, GOAWAY, connection WINDOW_UPDATE).
    public static let connection = HTTP2StreamID(0)

    /// The largest stream ID, 2^31-1: the last-stream-id of the shutdown notice.
    public static let maxID = HTTP2StreamID(Int32.max)

    /// Odd IDs are opened by the client.
    public var isClientInitiated: Bool { self.rawValue % 2 == 1 }

    public static func < (lhs: HTTP2StreamID, rhs: HTTP2StreamID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(self.rawValue) }
}
