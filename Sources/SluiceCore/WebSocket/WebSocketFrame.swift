/// The WebSocket frames Sluice writes itself: the Close frame that drains a tunnel (RFC 6455 §5.5.1).
///
/// Sluice forwards every other frame as opaque bytes; it only builds a Close to ask a side to end a
/// tunnel (1001 "going away" on drain) and reads the status code of a Close it sees, for logs.
///
/// ```
/// let toClient = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: nil)
/// let toServer = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: rng.next())
/// ```
public enum WebSocketFrame {
    /// A Close frame (FIN, opcode 0x8) with a 2-byte status `code` and a UTF-8 `reason` (truncated to 123 bytes),
    /// unmasked when `maskingKey` is nil (server to client), else masked with it (client to server, RFC 6455 §5.3).
    ///
    /// A control frame's payload is at most 125 bytes (§5.5), 2 of which are the code. The reason is
    /// cut at a UTF-8 scalar boundary, so it may come out shorter than 123 bytes but stays valid
    /// UTF-8 (§5.5.1 requires it). The masking key's bytes go on the wire most significant first.
    public static func close(code: UInt16, reason: String, maskingKey: UInt32?) -> [UInt8] {
        var reasonBytes = Array(reason.utf8)
        if reasonBytes.count > 123 {
            var cut = 123
            // Back off over continuation bytes (10xxxxxx) so no scalar is split.
            while cut > 0, reasonBytes[cut] & 0xC0 == 0x80 { cut -= 1 }
            reasonBytes.removeSubrange(cut...)
        }
        let payloadLength = 2 + reasonBytes.count
        var frame: [UInt8] = []
        frame.reserveCapacity(2 + 4 + payloadLength)
        frame.append(0x88)
        frame.append(UInt8(payloadLength) | (maskingKey == nil ? 0 : 0x80))
        var key: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
        if let maskingKey {
            key = (UInt8(truncatingIfNeeded: maskingKey >> 24), UInt8(truncatingIfNeeded: maskingKey >> 16),
                   UInt8(truncatingIfNeeded: maskingKey >> 8), UInt8(truncatingIfNeeded: maskingKey))
            frame.append(contentsOf: [key.0, key.1, key.2, key.3])
        }
        let payloadStart = frame.count
        frame.append(UInt8(code >> 8))
        frame.append(UInt8(truncatingIfNeeded: code))
        frame.append(contentsOf: reasonBytes)
        if maskingKey != nil {
            for index in 0..<payloadLength {
                let keyByte: UInt8
                switch index & 3 {
                case 0: keyByte = key.0
                case 1: keyByte = key.1
                case 2: keyByte = key.2
                default: keyByte = key.3
                }
                frame[payloadStart + index] ^= keyByte
            }
        }
        return frame
    }

    /// The status code of a Close frame's payload bytes (unmasked), nil when it has none.
    ///
    /// An empty payload means "no status code" (reported as 1005 by endpoints, §7.1.5); a 1-byte
    /// payload is malformed and also has none.
    public static func closeCode(payload: some Collection<UInt8>) -> UInt16? {
        var iterator = payload.makeIterator()
        guard let high = iterator.next(), let low = iterator.next() else { return nil }
        return UInt16(high) << 8 | UInt16(low)
    }
}
