/// What a live reload changes, decided from the configuration in force, the new one and the one the
/// process started with. Pure: the proxy carries it out (``ReloadPlan/init(current:new:startedWith:)``).
///
/// 1. Listeners are compared by their configured `HOST:PORT` (port 0 stays the port it was given at
///    start-up): new ones open, removed ones stop accepting, kept ones whose TLS settings changed
///    take the new certificates for new handshakes.
/// 2. A group whose ``UpstreamGroup`` value is unchanged is kept as it is (pools, balancer, outlier
///    state); a changed one is replaced (the old one drains on the upstream side), as is a removed one.
/// 3. Routes (and with them `max-body-size`, which routes apply) are rebuilt on every reload.
/// 4. Settings in ``restartOnlySettings`` that differ from the ones the process started with are listed
///    in ``needsRestart``: they take effect on restart only, and the rest of the reload goes ahead.
///
/// ```swift
/// let plan = ReloadPlan(current: inForce, new: reread, startedWith: atStart)
/// plan.listenersToOpen   // [127.0.0.1:8081]
/// plan.groupsReplaced    // ["api"]
/// plan.needsRestart      // ["drain-delay"]
/// ```
public struct ReloadPlan: Sendable, Equatable {
    /// Listeners whose address is in the new configuration but not in force: they open on every loop.
    public var listenersToOpen: [Listener]
    /// Listeners whose address is in force but not in the new configuration: they stop accepting.
    public var listenersToClose: [Listener]
    /// Listeners kept whose TLS settings changed (certificate files, minimum version, ALPN): new
    /// handshakes use the new settings, established connections keep theirs. Turning TLS on or off
    /// at an address is such a change too, and the proxy refuses it (it needs a restart).
    public var listenersChanged: [Listener]
    /// Groups whose configuration is unchanged: kept with their connections and state.
    public var groupsKept: [String]
    /// Groups whose configuration changed: a new group replaces the old one, which drains.
    public var groupsReplaced: [String]
    public var groupsAdded: [String]
    /// Groups no longer configured: they drain.
    public var groupsRemoved: [String]
    public var routesChanged: Bool
    /// Restart-only settings (names as in ``SluiceConfig/settings``) whose new value differs from the
    /// value the process started with.
    public var needsRestart: [String]

    /// The settings a reload does not apply, each with how to read it from a configuration: event
    /// loops, the admin listener, the drain timings, the downstream connection limits and timeouts
    /// (they are the connection table's and the listeners' pipelines'), logging, `ready-requires`.
    public static let restartOnlySettings: [(name: String, value: @Sendable (SluiceConfig) -> String)] = [
        ("threads", { "\($0.threads)" }),
        ("admin", { "\($0.admin)" }),
        ("drain-delay", { "\($0.drain.delay)" }),
        ("drain-timeout", { "\($0.drain.timeout)" }),
        ("termination-grace", { "\($0.drain.terminationGrace)" }),
        ("drain-quiet", { "\($0.drain.quiet.map { "\($0)" } ?? "off")" }),
        ("drain-delay-min", { "\($0.drain.delayMin)" }),
        ("drain-report", { $0.drain.reportFile ?? "" }),
        ("drain-idle-quiet", { "\($0.drain.idleQuietPeriod)" }),
        ("request-header-timeout", { "\($0.http.requestHeaderTimeout)" }),
        ("idle-timeout", { "\($0.http.idleTimeout)" }),
        ("max-header-size", { "\($0.http.maxHeaderBytes)" }),
        ("request-body-timeout", { "\($0.http.requestBodyTimeout)" }),
        ("stream-stall-timeout", { "\($0.http.streamStallTimeout)" }),
        ("tunnel-idle-timeout", { "\($0.http.tunnelIdleTimeout)" }),
        ("max-connections", { "\($0.http.maxConnections.map(String.init) ?? "auto")" }),
        ("log-level", { $0.logging.level.rawValue }),
        ("log-format", { $0.logging.format.rawValue }),
        ("ready-requires", { $0.readyRequires.joined(separator: ",") }),
        ("app-ready-path", { $0.app?.readyPath ?? "" }),
        ("app-stop-signal", { $0.app?.stopSignal.rawValue ?? "" }),
        ("app-forward-signals", { $0.app?.forwardSignals.map(\.rawValue).joined(separator: ",") ?? "" }),
    ]

    public init(current: SluiceConfig, new: SluiceConfig, startedWith: SluiceConfig) {
        let currentListeners = Set(current.listen.map(\.address))
        let newListeners = Set(new.listen.map(\.address))
        self.listenersToOpen = Self.unique(new.listen.filter { !currentListeners.contains($0.address) })
        self.listenersToClose = Self.unique(current.listen.filter { !newListeners.contains($0.address) })
        var currentTLS: [HostPort: TLSSettings?] = [:]
        for listener in current.listen where currentTLS[listener.address] == nil { currentTLS[listener.address] = listener.tls }
        self.listenersChanged = Self.unique(
            new.listen.filter { listener in currentTLS[listener.address].map { $0 != listener.tls } ?? false }
        )

        var currentGroups: [String: UpstreamGroup] = [:]
        for group in current.groups { currentGroups[group.name] = group }
        let newNames = Set(new.groups.map(\.name))
        self.groupsKept = []
        self.groupsReplaced = []
        self.groupsAdded = []
        for group in new.groups {
            switch currentGroups[group.name] {
            case nil: self.groupsAdded.append(group.name)
            case let old? where old == group: self.groupsKept.append(group.name)
            case _?: self.groupsReplaced.append(group.name)
            }
        }
        self.groupsRemoved = current.groups.map(\.name).filter { !newNames.contains($0) }
        self.routesChanged = current.routes != new.routes || current.http.maxBodyBytes != new.http.maxBodyBytes
        self.needsRestart = Self.restartOnlySettings.filter { $0.value(startedWith) != $0.value(new) }.map(\.name)
    }

    /// The new configuration is applied as it stands: nothing to open, close, replace or reroute.
    public var changesNothing: Bool {
        self.listenersToOpen.isEmpty && self.listenersToClose.isEmpty && self.listenersChanged.isEmpty && self.groupsReplaced.isEmpty
            && self.groupsAdded.isEmpty && self.groupsRemoved.isEmpty && !self.routesChanged
    }

    /// `listen +127.0.0.1:8081 -0.0.0.0:8080; groups +b ~api -old; routes changed`, or `no change`.
    public var summary: String {
        var parts: [String] = []
        let listeners =
            self.listenersToOpen.map { "+\($0)" } + self.listenersChanged.map { "~\($0)" } + self.listenersToClose.map { "-\($0)" }
        if !listeners.isEmpty { parts.append("listen " + listeners.joined(separator: " ")) }
        let groups = self.groupsAdded.map { "+\($0)" } + self.groupsReplaced.map { "~\($0)" } + self.groupsRemoved.map { "-\($0)" }
        if !groups.isEmpty { parts.append("groups " + groups.joined(separator: " ")) }
        if self.routesChanged { parts.append("routes changed") }
        return parts.isEmpty ? "no change" : parts.joined(separator: "; ")
    }

    private static func unique(_ listeners: [Listener]) -> [Listener] {
        var seen: Set<HostPort> = []
        return listeners.filter { seen.insert($0.address).inserted }
    }
}
