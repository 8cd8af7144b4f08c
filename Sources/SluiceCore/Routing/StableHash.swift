/// A 64-bit hash of bytes that is the same in every process, on every machine and in every
/// release: what `balance: hash` hashes a request's key with, and what ``MaglevTable`` places
/// endpoints with.
///
/// Swift's `Hasher` is seeded per process, so two Sluice replicas (or one before and after a
/// restart) would send the same user to different endpoints; this one is not seeded.
///
/// The hash is 64-bit FNV-1a over the bytes, then the MurmurHash3 `fmix64` finaliser. FNV-1a alone
/// spreads short keys that differ in their last bytes (`10.0.0.7:3000`, `10.0.0.8:3000`) poorly
/// over the low bits that a modulo keeps; the finaliser lets every input bit reach every output
/// bit. Not a cryptographic hash: a client that chooses its key can choose its endpoint, which is
/// what a hash key is for.
///
/// It takes any sequence of bytes, so the executor hashes a header value, a cookie value or a
/// client address without copying: `StableHash.hash(value.utf8)`, or an `UnsafeRawBufferPointer`.
/// For `client-ip`, hash the address without the port (all of a client's connections are one key),
/// in one fixed form (the 4 or 16 address bytes, or the text), the same on every replica.
public enum StableHash {
    /// Hash `bytes`; a different `seed` gives an independent hash of the same bytes (Maglev needs
    /// two per endpoint).
    @inlinable
    public static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes, seed: UInt64 = 0) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ (seed &* 0x9e37_79b9_7f4a_7c15)
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return StableHash.finalize(hash)
    }

    /// MurmurHash3's `fmix64`: every input bit affects every output bit.
    @inlinable
    static func finalize(_ value: UInt64) -> UInt64 {
        var value = value
        value ^= value >> 33
        value &*= 0xff51_afd7_ed55_8ccd
        value ^= value >> 33
        value &*= 0xc4ce_b9fe_1a85_ec53
        value ^= value >> 33
        return value
    }
}

/// Reading one cookie out of a `Cookie` field, for `hash-on: cookie:NAME`.
public enum CookieHeader {
    /// The value of the first cookie named `name` in one `Cookie` field value
    /// (`a=1; session=xyz` → `xyz`), as a slice of `field` (no copy); `nil` when it has none.
    ///
    /// Names compare exactly (cookie names are case-sensitive, RFC 6265 §5.4); spaces and tabs
    /// around names and values are ignored; a value in double quotes is returned with its quotes
    /// (it is hashed, not interpreted). A request may carry several `Cookie` fields (HTTP/2 splits
    /// them, RFC 9113 §8.2.3): the caller asks each in turn.
    public static func value(named name: String, in field: String) -> Substring? {
        let bytes = field.utf8
        let end = bytes.endIndex
        var index = bytes.startIndex
        while index < end {
            // One `name=value` pair, up to the next `;`.
            while index < end, isSeparatorOrSpace(bytes[index]) { index = bytes.index(after: index) }
            let pairStart = index
            while index < end, bytes[index] != UInt8(ascii: ";") { index = bytes.index(after: index) }
            let pair = bytes[pairStart..<index]
            guard let equals = pair.firstIndex(of: UInt8(ascii: "=")) else { continue }
            var nameEnd = equals
            while nameEnd > pairStart, isSpace(bytes[bytes.index(before: nameEnd)]) { nameEnd = bytes.index(before: nameEnd) }
            guard bytes[pairStart..<nameEnd].elementsEqual(name.utf8) else { continue }
            var valueStart = bytes.index(after: equals)
            var valueEnd = index
            while valueStart < valueEnd, isSpace(bytes[valueStart]) { valueStart = bytes.index(after: valueStart) }
            while valueEnd > valueStart, isSpace(bytes[bytes.index(before: valueEnd)]) { valueEnd = bytes.index(before: valueEnd) }
            return Substring(bytes[valueStart..<valueEnd])
        }
        return nil
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    private static func isSeparatorOrSpace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: ";") || isSpace(byte)
    }
}
