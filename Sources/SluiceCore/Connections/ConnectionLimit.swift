/// How many downstream connections Sluice serves at once (`--max-connections`).
///
/// Every downstream connection costs a descriptor, and while it is forwarded usually one more for
/// its upstream connection. `auto` therefore halves what the open-file limit leaves after a
/// reserve for Sluice itself (per event loop its epoll, eventfd and timerfd and its listeners; the
/// admin listener and its connections; log files; health checks; standard streams):
///
///     auto = (RLIMIT_NOFILE − (64 + 4 × threads)) / 2, at least 1, at most 10,000,000
///
/// With the open-file limit at 1,048,576 (a common hard limit, which Sluice raises its soft limit
/// to at start-up) and 2 threads that is 524,252; at 256 it is 92; at 1024 it is 476.
/// Upstream pools may hold more than one connection per client connection (idle connections,
/// HTTP/2 clients fanning out to HTTP/1 upstreams); if descriptors still run out, accepting backs
/// off instead of spinning and the admin listener answers from a reserve of its own.
public enum ConnectionLimit {
    /// The largest value `--max-connections` takes.
    public static let maximum = 10_000_000

    /// Descriptors the automatic limit leaves to Sluice itself.
    public static func reserved(threads: Int) -> Int { 64 + 4 * max(1, threads) }

    /// The limit for `auto`.
    public static func automatic(descriptorLimit: Int, threads: Int) -> Int {
        min(Self.maximum, max(1, (descriptorLimit - Self.reserved(threads: threads)) / 2))
    }

    /// The limit in force: the configured one, else the automatic one.
    public static func effective(configured: Int?, descriptorLimit: Int, threads: Int) -> Int {
        configured ?? Self.automatic(descriptorLimit: descriptorLimit, threads: threads)
    }
}
