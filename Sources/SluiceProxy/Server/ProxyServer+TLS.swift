import Logging
import NIOConcurrencyHelpers
import NIOCore
import SluiceCore

/// Certificates failed to load at start-up: every problem of every TLS listener, one per line.
public struct TLSStartError: Error, CustomStringConvertible {
    public var messages: [String]
    public var description: String {
        self.messages.count == 1 ? self.messages[0] : "TLS certificates:\n" + self.messages.map { "  " + $0 }.joined(separator: "\n")
    }
}

/// One TLS listener in force: its certificates and the watcher that reloads them when their files change.
struct TLSListenerInForce: Sendable {
    let tls: TLSListener
    let watcher: CertificateWatcher
}

/// A listener as `/status` shows it.
struct ListenerStatus: Sendable {
    var listener: Listener
    var bound: SocketAddress?
    var certificates: [TLSCertificateSummary]
}

extension ProxyServer {
    /// Loads and checks the certificates of every TLS listener in `listeners`; throws every problem at once.
    func loadTLS(_ listeners: [Listener]) throws(TLSStartError) -> [HostPort: TLSListener] {
        var loaded: [HostPort: TLSListener] = [:]
        var messages: [String] = []
        for listener in listeners where listener.tls != nil {
            do {
                loaded[listener.address] = try TLSListener(listener: listener, metrics: self.metrics, logger: self.logger)
            } catch {
                messages += error.messages
            }
        }
        guard messages.isEmpty else { throw TLSStartError(messages: messages) }
        return loaded
    }

    /// Puts loaded TLS listeners in force, each with a watcher polling its files.
    func adoptTLS(_ loaded: [HostPort: TLSListener]) {
        guard !loaded.isEmpty else { return }
        let entries = loaded.mapValues { tls in
            TLSListenerInForce(tls: tls, watcher: CertificateWatcher(listeners: [tls], eventLoop: self.group.next(), logger: self.logger))
        }
        self.tlsListeners.withLockedValue { $0.merge(entries) { _, new in new } }
        for entry in entries.values { entry.watcher.start() }
    }

    /// Stops watching the certificates of listeners that closed.
    func retireTLS(_ addresses: [HostPort]) {
        let retired = self.tlsListeners.withLockedValue { inForce in addresses.compactMap { inForce.removeValue(forKey: $0) } }
        for entry in retired { entry.watcher.stop() }
    }

    /// Stops every certificate watcher (shutdown).
    func stopTLS() {
        let all = self.tlsListeners.withLockedValue { inForce in
            defer { inForce = [:] }
            return Array(inForce.values)
        }
        for entry in all { entry.watcher.stop() }
    }

    /// The TLS listener in force at `address`, if any.
    func tlsListener(at address: HostPort) -> TLSListener? {
        self.tlsListeners.withLockedValue { $0[address]?.tls }
    }

    /// What a reload does to TLS before anything else changes; `nil` means go ahead, else why not:
    /// - TLS turned on or off at a kept address needs a restart (the listener would have to be rebound);
    /// - a new TLS listener's certificates must load (they are returned for binding);
    /// - a kept listener whose TLS settings changed takes them now, or keeps its old ones if they fail
    ///   to load, which fails the reload as a whole (the configuration in force stays).
    func prepareTLSReload(_ plan: ReloadPlan) -> (loaded: [HostPort: TLSListener], errors: [String]) {
        var errors: [String] = []
        for listener in plan.listenersChanged where (listener.tls == nil) != (self.tlsListener(at: listener.address) == nil) {
            errors.append("listen \(listener.address): turning TLS \(listener.tls == nil ? "off" : "on") needs a restart (or use another address)")
        }
        guard errors.isEmpty else { return ([:], errors) }
        let loaded: [HostPort: TLSListener]
        do {
            loaded = try self.loadTLS(plan.listenersToOpen)
        } catch {
            return ([:], error.messages)
        }
        // Changed settings are checked before any is applied, so that a failure changes nothing.
        for listener in plan.listenersChanged {
            errors += TLSListener.check(listener)
        }
        return (loaded, errors)
    }

    /// After a reload applied: kept TLS listeners read their certificate files again (SIGHUP reloads
    /// certificates too), with new settings where the configuration changed them.
    func reloadCertificates(_ config: SluiceConfig, changed: [Listener]) {
        let changedSettings = Dictionary(changed.map { ($0.address, $0.tls) }, uniquingKeysWith: { first, _ in first })
        let inForce = self.tlsListeners.withLockedValue { $0 }
        for listener in config.listen {
            guard let entry = inForce[listener.address] else { continue }
            if let settings = changedSettings[listener.address] ?? nil {
                entry.tls.reload(settings: settings)
            } else {
                entry.tls.reload()
            }
        }
    }

    /// Every listener in force with its bound address and certificates, for `/status`.
    func listenerStatuses(_ config: SluiceConfig) -> [ListenerStatus] {
        let bound = self.boundListeners.withLockedValue { $0 }
        let inForce = self.tlsListeners.withLockedValue { $0 }
        return config.listen.map { listener in
            ListenerStatus(listener: listener, bound: bound[listener.address], certificates: inForce[listener.address]?.tls.certificateSummaries ?? [])
        }
    }
}

extension ProxyServer {
    /// What `sluice check-config` finds wrong in the files the configuration names (certificates and
    /// keys), which a configuration read alone cannot tell: the same messages start-up gives.
    public static func fileProblems(_ config: SluiceConfig) -> [String] {
        config.listen.filter { $0.tls != nil }.flatMap(TLSListener.check)
    }
}
