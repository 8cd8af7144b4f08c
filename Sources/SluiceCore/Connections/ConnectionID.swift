/// A downstream or upstream connection, named by value (never by object identity).
///
/// IDs from different event loops never collide: the generator puts the loop's index in the top bits.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public var description: String { "c\(self.rawValue >> 48)-\(self.rawValue & 0xFFFF_FFFF_FFFF)" }

    /// Hands out IDs for one event loop.
    public struct Generator: Sendable {
        private var next: UInt64
        public init(loopIndex: Int = 0) {
            precondition((0..<65536).contains(loopIndex), "loop index fits 16 bits")
            self.next = UInt64(loopIndex) << 48
        }
        public mutating func make() -> ConnectionID {
            self.next &+= 1
            return ConnectionID(rawValue: self.next)
        }
    }
}

/// The protocol a downstream connection speaks.
public enum ConnectionProtocol: String, Sendable, CaseIterable {
    case http1
    case http2
}
