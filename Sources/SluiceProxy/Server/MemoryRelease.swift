private import CGlibcMalloc

/// Gives the heap's free memory back to the system after a burst has gone.
///
/// glibc keeps freed memory in its arenas for reuse and returns to the system only the top of an
/// arena: memory freed in the middle stays resident. After a burst (1000 HTTP/2 streams stalled,
/// then dropped) Sluice's RSS stayed 7 MB above its baseline for good, though nothing used it, and
/// `malloc_trim(0)` brought it back to within 1 MB. So, like Envoy's `memory_release_interval`,
/// loop 0 looks every ``interval`` and trims when more than ``threshold`` bytes lie free: a few
/// milliseconds at most, off the request path, and nothing when the heap holds little free memory.
enum MemoryRelease {
    /// How often the heap is looked at (loop 0's sweep, every 50th run).
    static let interval: Duration = .seconds(5)
    /// Trim only when more than this lies free in the arenas.
    static let threshold = 4 << 20

    /// Trims the heap if it holds more than ``threshold`` free bytes; returns the free bytes seen
    /// when it trimmed, `nil` when it did not.
    static func releaseIfWorthIt() -> Int? {
        let free = Int(mallinfo2().fordblks)
        guard free > Self.threshold else { return nil }
        malloc_trim(0)
        return free
    }
}
