@testable import SluiceCore
import Testing

@Suite struct WebSocketHandshakeTests {
    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xF)]] })
    }

    // MARK: - Sec-WebSocket-Accept

    /// The RFC 6455 §1.3 example: key "dGhlIHNhbXBsZSBub25jZQ==" is accepted with "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
    @Test func acceptForTheRFCSampleKey() {
        #expect(WebSocketHandshake.guid == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
        #expect(WebSocketHandshake.accept(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    static let sha1Vectors: [(String, String)] = [
        ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        // Around the padding edges: 55 bytes fit one block with the length, 56 need two.
        (String(repeating: "a", count: 55), "c1c8bbdc22796e28c0e15163d20899b65621d65a"),
        (String(repeating: "a", count: 56), "c2db330f6083854c99d4b5bfb6e8f29f201be699"),
        (String(repeating: "a", count: 63), "03f09f5b158a7a8cdad920bddc29b81c18a551f5"),
        (String(repeating: "a", count: 64), "0098ba824b5c16427bd7a1122a5a442a25ec644d"),
        (String(repeating: "a", count: 65), "11655326c708d70319be2610e8a57d9a5b959d3b"),
    ]

    /// FIPS 180 test vectors and the block-padding edges.
    @Test(arguments: sha1Vectors)
    func sha1MatchesTheTestVectors(message: String, digest: String) {
        #expect(Self.hex(SHA1.hash(Array(message.utf8))) == digest)
    }

    /// The FIPS 180 long vector: a million 'a'.
    @Test func sha1OfAMillionAs() {
        #expect(Self.hex(SHA1.hash([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    // MARK: - Base64

    static let base64Vectors: [(String, String)] = [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
    ]

    /// RFC 4648 §10 vectors, every padding case, both ways.
    @Test(arguments: base64Vectors)
    func base64EncodesAndDecodesTheRFCVectors(plain: String, encoded: String) {
        #expect(Base64.encode(Array(plain.utf8)) == encoded)
        #expect(Base64.decode(encoded) == Array(plain.utf8))
    }

    /// Every byte value survives a round trip, and the alphabet's two last characters appear.
    @Test func base64RoundTripsEveryByte() {
        let bytes = (0...255).map { UInt8($0) }
        for count in 0...bytes.count {
            #expect(Base64.decode(Base64.encode(bytes.prefix(count))) == Array(bytes.prefix(count)))
        }
        #expect(Base64.encode([0xFB, 0xFF]) == "+/8=")
    }

    /// Not canonical padded base64: wrong length, padding in the middle or too much, characters
    /// outside the alphabet (URL-safe ones too), unused bits set before the padding.
    @Test(arguments: ["Zg", "Zg=", "Z===", "====", "=Zg=", "Zg==Zg==", "Zm9v!A==", "Zm9-", "Zm9_", "Zm 9v", "Zh==", "Zm9=", " Zg=="])
    func base64RejectsNonCanonicalInput(encoded: String) {
        #expect(Base64.decode(encoded) == nil)
    }

    // MARK: - Sec-WebSocket-Key

    /// A key is base64 of exactly 16 bytes: the RFC's sample is, keys of 15 or 17 bytes, unpadded or
    /// otherwise malformed ones are not.
    @Test func isValidKeyAcceptsOnly16ByteBase64() {
        #expect(WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ=="))
        #expect(WebSocketHandshake.isValidKey(Base64.encode([UInt8](repeating: 0xFF, count: 16))))
        #expect(!WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ"))
        #expect(!WebSocketHandshake.isValidKey(Base64.encode([UInt8](repeating: 1, count: 15))))
        #expect(!WebSocketHandshake.isValidKey(Base64.encode([UInt8](repeating: 1, count: 17))))
        #expect(!WebSocketHandshake.isValidKey(""))
        #expect(!WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ== "))
        #expect(!WebSocketHandshake.isValidKey("dGhlIHNhbXBsZSBub25jZQ=!"))
    }

    /// Made keys are valid, 24 characters, and differ from one call to the next; a seeded generator
    /// makes the same key every run.
    @Test func makeKeyDrawsSixteenRandomBytes() {
        var rng = SplitMix64(seed: 42)
        let first = WebSocketHandshake.makeKey(using: &rng)
        let second = WebSocketHandshake.makeKey(using: &rng)
        #expect(first.utf8.count == 24)
        #expect(WebSocketHandshake.isValidKey(first))
        #expect(WebSocketHandshake.isValidKey(second))
        #expect(first != second)
        var again = SplitMix64(seed: 42)
        #expect(WebSocketHandshake.makeKey(using: &again) == first)

        var check = SplitMix64(seed: 42)
        let words = [check.next(), check.next()]
        let expected = words.flatMap { word in stride(from: 56, through: 0, by: -8).map { UInt8(truncatingIfNeeded: word >> UInt64($0)) } }
        #expect(Base64.decode(first) == expected)
    }

    // MARK: - Upgrade

    @Test(arguments: [
        ("websocket", true), ("WebSocket", true), ("WEBSOCKET", true), ("websocket/13", true),
        ("foo, websocket", true), (" websocket ", true), ("h2c,\twebsocket", true), ("TLS/1.0, WebSocket/13", true),
        ("h2c", false), ("", false), ("websockets", false), ("web socket", false), ("h2c, TLS/1.0", false),
        ("x-websocket", false), (",", false),
    ])
    func namesWebSocketReadsTheUpgradeTokens(value: String, expected: Bool) {
        #expect(WebSocketHandshake.namesWebSocket(value) == expected)
        #expect(WebSocketHandshake.namesWebSocket(value[...]) == expected)
    }

    // MARK: - Close frames

    /// The drain Close, server to client: 88 0C 03 E9 "going away", byte for byte.
    @Test func unmaskedGoingAwayCloseIsExact() {
        let frame = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: nil)
        #expect(frame == [0x88, 0x0C, 0x03, 0xE9] + Array("going away".utf8))
    }

    /// Client to server it is masked: mask bit, the key most significant byte first, the payload
    /// XORed with it (RFC 6455 §5.3); unmasking gives the code and reason back.
    @Test func maskedCloseDecodesBackWithItsKey() {
        let key: UInt32 = 0x37FA_213D
        let frame = WebSocketFrame.close(code: 1001, reason: "going away", maskingKey: key)
        #expect(Array(frame.prefix(6)) == [0x88, 0x8C, 0x37, 0xFA, 0x21, 0x3D])
        let keyBytes = Array(frame[2..<6])
        let payload = frame.dropFirst(6).enumerated().map { $0.element ^ keyBytes[$0.offset % 4] }
        #expect(payload == [0x03, 0xE9] + Array("going away".utf8))
        #expect(WebSocketFrame.closeCode(payload: payload) == 1001)
        #expect(Array(frame.dropFirst(6)) != payload)
    }

    /// A Close with no reason is just the code.
    @Test func closeWithoutReason() {
        #expect(WebSocketFrame.close(code: 1000, reason: "", maskingKey: nil) == [0x88, 0x02, 0x03, 0xE8])
        #expect(WebSocketFrame.close(code: 4999, reason: "", maskingKey: 0) == [0x88, 0x82, 0, 0, 0, 0, 0x13, 0x87])
    }

    /// A long reason is cut to 123 bytes (payload 125, the control-frame maximum); a multi-byte one
    /// is cut before the scalar that would not fit, so it stays valid UTF-8.
    @Test func longReasonIsTruncatedToFitAControlFrame() {
        let ascii = WebSocketFrame.close(code: 1001, reason: String(repeating: "x", count: 200), maskingKey: nil)
        #expect(ascii.count == 2 + 125)
        #expect(ascii[1] == 125)
        #expect(Array(ascii.dropFirst(4)) == [UInt8](repeating: UInt8(ascii: "x"), count: 123))

        let accented = WebSocketFrame.close(code: 1001, reason: String(repeating: "é", count: 100), maskingKey: 0x0102_0304)
        #expect(accented[1] == 0x80 | 124)
        let keyBytes = Array(accented[2..<6])
        let payload = accented.dropFirst(6).enumerated().map { $0.element ^ keyBytes[$0.offset % 4] }
        #expect(String(decoding: payload.dropFirst(2), as: UTF8.self) == String(repeating: "é", count: 61))
    }

    /// The status code is the first two payload bytes, big-endian; fewer than two means none.
    @Test func closeCodeReadsTheFirstTwoBytes() {
        #expect(WebSocketFrame.closeCode(payload: [UInt8]()) == nil)
        #expect(WebSocketFrame.closeCode(payload: [0x03]) == nil)
        #expect(WebSocketFrame.closeCode(payload: [0x03, 0xE9]) == 1001)
        #expect(WebSocketFrame.closeCode(payload: [0x03, 0xE8, 0x61, 0x62]) == 1000)
        #expect(WebSocketFrame.closeCode(payload: [0xFF, 0x0F, 0x03, 0xE8][2...]) == 1000)
    }
}
