#if canImport(Glibc)
import Glibc
#endif

/// The process's open-file limit (`RLIMIT_NOFILE`).
public enum DescriptorLimit {
    /// The soft limit now (`Int.max` for unlimited).
    public static var current: Int { Self.read()?.soft ?? 1024 }

    /// Raises the soft limit to the hard limit (a process may, without privileges) and returns the
    /// soft limit in force afterwards. Run once at start-up, before listening.
    @discardableResult
    public static func raiseToHard() -> Int {
        var limits = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return Self.current }
        if limits.rlim_cur < limits.rlim_max {
            var raised = limits
            raised.rlim_cur = limits.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised)
        }
        return Self.current
    }

    private static func read() -> (soft: Int, hard: Int)? {
        var limits = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limits) == 0 else { return nil }
        // RLIM_INFINITY is all ones.
        func clamp(_ value: rlim_t) -> Int { value == rlim_t.max ? Int.max : Int(clamping: value) }
        return (clamp(limits.rlim_cur), clamp(limits.rlim_max))
    }
}

/// Descriptors held open on `/dev/null` for one listener (the admin listener), so that it can still
/// accept when the process has run out: on EMFILE one is closed and the accept retried at once (the
/// trick of nginx and libuv); it is reopened when a connection of that listener closes. Confined to
/// the listener's event loop.
final class DescriptorReserve {
    let capacity: Int
    private var held: [Int32] = []

    init(capacity: Int) {
        self.capacity = capacity
        self.refill()
    }

    var count: Int { self.held.count }

    /// Closes one reserved descriptor; false if none is left.
    func releaseOne() -> Bool {
        guard let fd = self.held.popLast() else { return false }
        close(fd)
        return true
    }

    /// Reopens reserved descriptors up to the capacity, as far as the process has descriptors.
    func refill() {
        while self.held.count < self.capacity {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return }
            self.held.append(fd)
        }
    }

    func closeAll() {
        for fd in self.held { close(fd) }
        self.held = []
    }
}
