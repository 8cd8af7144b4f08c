import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SluiceCore

#if canImport(Glibc)
import Glibc
#endif

/// Turns an upstream's host name into addresses: the injectable half of ``EndpointResolver``, so
/// that tests can change the answer.
protocol EndpointResolving: Sendable {
    /// Every A and AAAA record of `host`, as IP literals (`10.0.0.7`, `fd00::7`). Throws when the
    /// name cannot be resolved; an empty answer counts as a failure too.
    func resolve(host: String, port: Int) async throws -> [String]
}

/// `getaddrinfo(3)` on NIO's blocking thread pool, never on an event loop.
struct SystemEndpointResolver: EndpointResolving {
    struct ResolveError: Error, CustomStringConvertible {
        var host: String
        var reason: String
        var description: String { "cannot resolve \(self.host): \(self.reason)" }
    }

    func resolve(host: String, port: Int) async throws -> [String] {
        try await NIOThreadPool.singleton.runIfActive {
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = AF_UNSPEC
            var result: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &result)
            guard status == 0 else { throw ResolveError(host: host, reason: String(cString: gai_strerror(status))) }
            defer { freeaddrinfo(result) }
            var addresses: [String] = []
            var next = result
            while let info = next {
                next = info.pointee.ai_next
                guard let raw = info.pointee.ai_addr else { continue }
                var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
                switch Int32(info.pointee.ai_family) {
                case AF_INET:
                    raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                        var address = sin.pointee.sin_addr
                        _ = inet_ntop(AF_INET, &address, &buffer, socklen_t(buffer.count))
                    }
                case AF_INET6:
                    raw.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                        var address = sin6.pointee.sin6_addr
                        _ = inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count))
                    }
                default:
                    continue
                }
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !text.isEmpty, !addresses.contains(text) { addresses.append(text) }
            }
            guard !addresses.isEmpty else { throw ResolveError(host: host, reason: "no A or AAAA record") }
            return addresses
        }
    }
}

/// Re-resolves the names among the groups' endpoints (DESIGN.md §5, `dns-refresh`) and reports
/// each group's endpoint list when it changes.
///
/// 1. An endpoint given by an IP literal (or `localhost`) is itself. One given by name becomes one endpoint per
///    A/AAAA record (a Kubernetes headless Service), each `scheme://address:port`, sorted so that
///    an answer in another order is the same answer.
/// 2. Each group with a name is resolved at ``start(groups:initialWait:)`` and again every
///    `dns-refresh`, in a `Task` of its own (the lookups run on NIO's blocking thread pool, never
///    on an event loop). ``start(groups:initialWait:)`` waits, bounded, for the first answers, so
///    that a proxy normally starts with addresses.
/// 3. **Failure policy.** A lookup that fails (or answers nothing) keeps that name's last good
///    answer and logs a warning. A name that has never resolved stays an endpoint by name (key
///    `name:port`, as configured): its connections resolve it as they are made, as they did before
///    re-resolution existed. So a group is never empty (`pick` always has an endpoint), a name
///    that cannot be resolved yet answers 502 (connect failed) rather than nothing, and it becomes
///    its addresses at the first answer.
/// 4. ``update(groups:)`` keeps the tasks of groups whose endpoints and refresh are unchanged,
///    starts new ones and cancels removed ones (a reload).
///
/// ```swift
/// let resolver = EndpointResolver(resolver: SystemEndpointResolver(), logger: logger) { group, endpoints in
///     publish(group, endpoints)                  // every loop's LoopUpstreamGroup.setEndpoints
/// }
/// await resolver.start(groups: config.groups)
/// ```
final class EndpointResolver: Sendable {
    typealias OnChange = @Sendable (_ group: String, _ endpoints: [UpstreamURL]) -> Void

    private struct Running: Sendable {
        var group: UpstreamGroup
        var task: Task<Void, Never>
    }

    private let resolver: any EndpointResolving
    private let logger: Logger
    private let onChange: OnChange
    private let running = NIOLockedValueBox<[String: Running]>([:])
    /// The last list reported per group (only groups with a name).
    private let current = NIOLockedValueBox<[String: [UpstreamURL]]>([:])

    init(resolver: any EndpointResolving, logger: Logger, onChange: @escaping OnChange) {
        self.resolver = resolver
        self.logger = logger
        self.onChange = onChange
    }

    /// Whether a group has an endpoint given by a name to re-resolve.
    static func hasNames(_ group: UpstreamGroup) -> Bool { group.endpoints.contains { !Self.keepsAsConfigured($0.host) } }

    /// An IP literal is itself. So is `localhost` (and `*.localhost`): it names this host, and an
    /// app on it often listens on one of `127.0.0.1` and `::1` only; as a name, each connect tries
    /// both (NIO's happy eyeballs), where two endpoints would send half the requests to a refused
    /// port (the sidecar's `--upstream http://localhost:3000`).
    static func keepsAsConfigured(_ host: String) -> Bool {
        let lowered = host.lowercased()
        if lowered == "localhost" || lowered.hasSuffix(".localhost") { return true }
        return (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    /// The endpoints a group has now (as last reported), or its configured ones.
    func endpoints(of group: UpstreamGroup) -> [UpstreamURL] {
        self.current.withLockedValue { $0[group.name] } ?? group.endpoints
    }

    /// Starts resolving every group with a name, and waits up to `initialWait` for the first answers.
    func start(groups: [UpstreamGroup], initialWait: Duration = .seconds(3)) async {
        let (firstRounds, continuation) = AsyncStream.makeStream(of: String.self)
        let waiting = self.update(groups: groups, firstRound: continuation)
        guard waiting > 0 else { return }
        let timeout = Task {
            try? await Task.sleep(for: initialWait)
            continuation.finish()
        }
        var done = 0
        for await _ in firstRounds {
            done += 1
            if done == waiting { break }
        }
        timeout.cancel()
        if done < waiting {
            self.logger.warning("upstream names not resolved at start-up: they are used by name until they are", metadata: ["waiting": "\(waiting - done)"])
        }
    }

    /// A reload's new groups: keeps unchanged groups' tasks, starts new ones, stops removed ones.
    /// Returns how many tasks were started.
    @discardableResult
    func update(groups: [UpstreamGroup], firstRound: AsyncStream<String>.Continuation? = nil) -> Int {
        let wanted = groups.filter(Self.hasNames)
        let (started, cancelled) = self.running.withLockedValue { running -> ([Running], [Task<Void, Never>]) in
            var cancelled: [Task<Void, Never>] = []
            var kept: [String: Running] = [:]
            var started: [Running] = []
            for group in wanted {
                if let existing = running.removeValue(forKey: group.name) {
                    if existing.group.endpoints == group.endpoints, existing.group.dnsRefresh == group.dnsRefresh {
                        kept[group.name] = existing
                        continue
                    }
                    cancelled.append(existing.task)
                }
                let task = Task { [self] in await self.run(group, firstRound: firstRound) }
                let entry = Running(group: group, task: task)
                kept[group.name] = entry
                started.append(entry)
            }
            cancelled += running.values.map(\.task)
            running = kept
            return (started, cancelled)
        }
        for task in cancelled { task.cancel() }
        let names = Set(wanted.map(\.name))
        self.current.withLockedValue { current in
            for name in current.keys where !names.contains(name) { current[name] = nil }
        }
        return started.count
    }

    /// Stops every task (shutdown).
    func stop() {
        let tasks = self.running.withLockedValue { running in
            defer { running = [:] }
            return running.values.map(\.task)
        }
        for task in tasks { task.cancel() }
    }

    private func run(_ group: UpstreamGroup, firstRound: AsyncStream<String>.Continuation?) async {
        var lastGood: [String: [UpstreamURL]] = [:]
        var first = true
        while !Task.isCancelled {
            var endpoints: [UpstreamURL] = []
            for configured in group.endpoints {
                guard !Self.keepsAsConfigured(configured.host) else {
                    endpoints.append(configured)
                    continue
                }
                do {
                    let addresses = try await self.resolver.resolve(host: configured.host, port: configured.port)
                    guard !addresses.isEmpty else { throw SystemEndpointResolver.ResolveError(host: configured.host, reason: "empty answer") }
                    let resolved = addresses.sorted().map {
                        // The name goes along: TLS sends it (SNI) and checks the certificate against it.
                        UpstreamURL(scheme: configured.scheme, host: $0, port: configured.port, resolvedFrom: configured.host)
                    }
                    lastGood[configured.authority] = resolved
                } catch {
                    // Task cancelled while resolving: stop without a warning.
                    if Task.isCancelled { return }
                    self.logger.warning(
                        "upstream name resolution failed: keeping the last answer",
                        metadata: ["group": "\(group.name)", "name": "\(configured.authority)", "error": "\(error)", "kept": "\(lastGood[configured.authority].map { "\($0.count) addresses" } ?? "the name")"])
                }
                endpoints += lastGood[configured.authority] ?? [configured]
            }
            // Re-checked after the awaits above: a reload may have replaced this group's task.
            if Task.isCancelled { return }
            let changed = self.current.withLockedValue { current -> Bool in
                guard current[group.name] != endpoints else { return false }
                current[group.name] = endpoints
                return true
            }
            if changed { self.onChange(group.name, endpoints) }
            if first {
                first = false
                firstRound?.yield(group.name)
            }
            try? await Task.sleep(for: group.dnsRefresh)
        }
    }
}
