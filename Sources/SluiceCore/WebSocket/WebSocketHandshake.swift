/// The opening handshake's computed fields (RFC 6455 §4): what a proxy must check or produce when
/// it terminates or originates the upgrade (RFC 8441 WebSocket over HTTP/2 on one side, HTTP/1.1
/// `Upgrade: websocket` on the other).
///
/// ```
/// let key = WebSocketHandshake.makeKey(using: &rng)        // request to the upstream
/// let accept = WebSocketHandshake.accept(forKey: key)      // what its 101 must carry
/// ```
public enum WebSocketHandshake {
    /// RFC 6455 §1.3 GUID.
    public static let guid: String = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + guid)) (RFC 6455 §4.2.2).
    public static func accept(forKey key: String) -> String {
        var input = Array(key.utf8)
        input.append(contentsOf: self.guid.utf8)
        return Base64.encode(SHA1.hash(input))
    }

    /// A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes (RFC 6455 §4.1).
    public static func makeKey<R: RandomNumberGenerator>(using rng: inout R) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        for _ in 0..<2 {
            let word = rng.next()
            for shift in stride(from: 56, through: 0, by: -8) {
                bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return Base64.encode(bytes)
    }

    /// Whether a `Sec-WebSocket-Key` is valid: base64 that decodes to exactly 16 bytes.
    public static func isValidKey(_ key: String) -> Bool {
        Base64.decode(key)?.count == 16
    }

    /// Whether an `Upgrade` field value names `websocket` (case-insensitive, comma-separated tokens, `websocket/13`-style versions ignored).
    public static func namesWebSocket(_ upgradeValue: some StringProtocol) -> Bool {
        let target = Array("websocket".utf8)
        // A field value is short; an Array gives the trimming below a bidirectional view.
        let value = Array(upgradeValue.utf8)
        for element in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: true) {
            var token = element
            while let first = token.first, first == 0x20 || first == 0x09 { token = token.dropFirst() }
            while let last = token.last, last == 0x20 || last == 0x09 { token = token.dropLast() }
            // `protocol-name ["/" protocol-version]` (RFC 9110 §7.8): the version does not matter.
            if let slash = token.firstIndex(of: UInt8(ascii: "/")) { token = token[..<slash] }
            guard token.count == target.count else { continue }
            if zip(token, target).allSatisfy({ Self.asciiLowercased($0) == $1 }) { return true }
        }
        return false
    }

    private static func asciiLowercased(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }
}
