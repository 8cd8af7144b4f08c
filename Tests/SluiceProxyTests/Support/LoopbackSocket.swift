import Foundation

/// Plain POSIX sockets on 127.0.0.1, for tests that need what NIO hides: a port held without
/// listening, a bind probe, a client that stops reading.
enum LoopbackSocket {
    /// A new TCP socket; `options` run before it is bound or connected.
    static func make(_ options: (Int32) -> Void = { _ in }) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0, "socket() failed")
        options(fd)
        return fd
    }

    static func setOption<T: BitwiseCopyable>(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: T) {
        _ = withUnsafeBytes(of: value) { setsockopt(fd, level, name, $0.baseAddress, socklen_t($0.count)) }
    }

    /// Binds `fd` to 127.0.0.1:`port` (0: any free port) and returns the bound port, or nil.
    static func bind(_ fd: Int32, port: Int) -> Int? {
        var address = Self.address(port: port)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    /// Connects `fd` to 127.0.0.1:`port`.
    static func connect(_ fd: Int32, port: Int) -> Bool {
        var address = Self.address(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private static func address(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }
}
