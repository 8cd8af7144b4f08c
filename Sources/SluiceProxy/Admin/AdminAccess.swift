import NIOCore

/// Who may use the admin endpoints that change state (`POST /reload`; DESIGN.md §3): loopback
/// peers only, 127.0.0.0/8 and ::1 (and 127.0.0.0/8 as an IPv4-mapped IPv6 address, which a
/// dual-stack admin listener sees). Everyone who can reach the admin listener may read.
enum AdminAccess {
    /// Whether `peer` is a loopback address; `nil` (the peer is unknown) is not.
    static func isLoopback(_ peer: SocketAddress?) -> Bool {
        switch peer {
        case .v4(let address):
            return UInt32(bigEndian: address.address.sin_addr.s_addr) >> 24 == 127
        case .v6(let address):
            let bytes = withUnsafeBytes(of: address.address.sin6_addr) { Array($0) }
            let loopback = bytes[0..<15].allSatisfy { $0 == 0 } && bytes[15] == 1
            let mappedLoopback = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
            return loopback || mappedLoopback
        case .unixDomainSocket, nil:
            return false
        }
    }
}
