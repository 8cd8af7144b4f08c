import Logging
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Polls the certificate and key files of TLS listeners and reloads a listener whose files changed.
///
/// 1. Every `interval` (a repeated task on one event loop, never per request) each listener's
///    files are looked at: the file each path resolves to (`realpath`), and its device, inode,
///    size and modification time. That sees an in-place write, a rename over the file, and a
///    Kubernetes Secret volume swapping its `..data` symlink (`tls.crt -> ..data/tls.crt`,
///    `..data -> ..2026_12_03_...`), where the resolved path and the inode change.
/// 2. When any of a listener's files looks different from the last look, the listener reloads
///    (``TLSListener/reload(settings:)``, which logs and counts). A failed reload is not retried
///    until the files change again, so a bad certificate is reported once, not every interval.
/// 3. A file that cannot be looked at (missing mid-update) is a look of its own, so its return
///    is a change too.
///
/// The files are those of each listener's settings in use; after a config reload changes the
/// paths, the next look sees different paths, which is a change like any other.
public final class CertificateWatcher: Sendable {
    /// What a file looked like: nil when it could not be resolved or stat'ed.
    struct FileIdentity: Hashable, Sendable {
        var resolvedPath: String
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedSeconds: Int
        var modifiedNanoseconds: Int
    }

    private struct State {
        var task: RepeatedTask?
        var stopped = false
        /// Per listener (by index), path → identity at the last look.
        var lastLook: [[String: FileIdentity?]]
    }

    private let listeners: [TLSListener]
    private let interval: Duration
    private let eventLoop: any EventLoop
    private let logger: Logger
    private let onReload: (@Sendable (TLSListener, TLSReloadResult) -> Void)?
    private let state: NIOLockedValueBox<State>

    /// `onReload` is told of every reload the watcher does (tests await it).
    public init(
        listeners: [TLSListener], interval: Duration = .seconds(2), eventLoop: any EventLoop, logger: Logger,
        onReload: (@Sendable (TLSListener, TLSReloadResult) -> Void)? = nil
    ) {
        self.listeners = listeners
        self.interval = interval
        self.eventLoop = eventLoop
        self.logger = logger
        self.onReload = onReload
        self.state = NIOLockedValueBox(State(lastLook: listeners.map { Self.look(at: $0.watchedFiles) }))
    }

    /// Starts polling; the first look (taken in `init`) is the baseline.
    public func start() {
        self.state.withLockedValue { state in
            guard state.task == nil, !state.stopped else { return }
            let delay = TimeAmount(self.interval)
            state.task = self.eventLoop.scheduleRepeatedTask(initialDelay: delay, delay: delay) { _ in
                self.poll()
            }
        }
        self.logger.debug("watching TLS certificate files", metadata: ["interval": "\(self.interval)"])
    }

    /// Stops polling; a poll already running finishes.
    public func stop() {
        let task = self.state.withLockedValue { state in
            state.stopped = true
            defer { state.task = nil }
            return state.task
        }
        task?.cancel()
    }

    /// One look at every listener's files; reloads those that changed.
    func poll() {
        for (index, listener) in self.listeners.enumerated() {
            let look = Self.look(at: listener.watchedFiles)
            let changed = self.state.withLockedValue { state in
                guard !state.stopped, state.lastLook[index] != look else { return false }
                state.lastLook[index] = look
                return true
            }
            guard changed else { continue }
            self.logger.info("TLS certificate files changed", metadata: ["listener": "\(listener.address)"])
            let result = listener.reload()
            self.onReload?(listener, result)
        }
    }

    static func look(at paths: [String]) -> [String: FileIdentity?] {
        var look: [String: FileIdentity?] = [:]
        for path in paths { look[path] = self.identity(of: path) }
        return look
    }

    /// The file `path` resolves to, and its identity; nil when it cannot be resolved.
    static func identity(of path: String) -> FileIdentity? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        var info = stat()
        guard stat(resolved, &info) == 0 else { return nil }
        return FileIdentity(
            resolvedPath: String(cString: resolved), device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            modifiedSeconds: Int(info.st_mtim.tv_sec), modifiedNanoseconds: Int(info.st_mtim.tv_nsec)
        )
    }
}
