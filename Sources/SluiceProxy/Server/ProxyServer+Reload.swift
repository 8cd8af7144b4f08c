import Logging
import NIOConcurrencyHelpers
import NIOCore
import SluiceCore

#if canImport(Glibc)
import Glibc
#endif

/// Reads the configuration again exactly as at start-up: the same flags and environment, the config
/// file re-read from disk, through ``SluiceConfig/read(_:defaultThreads:)``. Throws every problem at
/// once; a file that is missing or unreadable is one of them.
public typealias ConfigSource = @Sendable () throws(ConfigErrors) -> SluiceConfig

/// What asked for a reload, for the log line.
public enum ReloadTrigger: String, Sendable {
    case signal = "SIGHUP"
    case admin = "POST /reload"
    /// ``ProxyServer/reload(to:)``: a configuration handed over in process (tests, embedding).
    case call = "call"
}

/// How a reload ended.
public enum ReloadOutcome: Sendable, Equatable {
    /// The configuration is in force on every loop, as generation `generation`.
    case applied(generation: Int)
    /// The configuration could not be read or applied (every problem, one line each): nothing changed.
    case invalid(errors: [String])
    /// Not attempted: a drain has begun (or there is nothing to reload from). Nothing changed.
    case refused(reason: String)
}

/// The configuration in force, as `/status` shows it.
struct ConfigState: Sendable {
    var config: SluiceConfig
    /// 1 at start-up, one more per applied reload.
    var generation: Int
    /// When ``config`` was read (Unix seconds).
    var loadedAt: Int
    /// The last reload's problems, one line; `nil` when the last reload applied (or none has run).
    var lastError: String?
}

/// Runs reloads one at a time, each after the one asked for before it (concurrent `POST /reload`s and
/// SIGHUPs queue up; an actor alone would interleave them at their suspension points).
actor ReloadQueue {
    private var last: Task<ReloadOutcome, Never>?

    func run(_ body: @escaping @Sendable () async -> ReloadOutcome) async -> ReloadOutcome {
        let previous = self.last
        let task = Task {
            _ = await previous?.value
            return await body()
        }
        self.last = task
        return await task.value
    }
}

enum UnixTime {
    static func now() -> Int {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int(spec.tv_sec)
    }
}

extension ProxyServer {
    /// Reads the configuration from ``configSource`` again and applies it (SIGHUP, `POST /reload`).
    ///
    /// 1. Refused while a drain runs (`propagating` or later): logged, nothing changes.
    /// 2. The configuration is read off the event loops; an invalid one changes nothing: each problem
    ///    is logged on a line of its own, counted (`sluice_config_reloads_total{result="error"}`) and
    ///    kept for `/status`.
    /// 3. New listen addresses are bound on every loop first, and the certificates of new and changed
    ///    TLS listeners loaded; if one cannot be, the reload fails and nothing changes. Kept TLS
    ///    listeners read their certificate files again (a bad one keeps the old, see ``TLSListener``).
    /// 4. Settings that need a restart are logged ("X changed; takes effect on restart"), the rest applies.
    /// 5. Every loop swaps in a new ``LoopRouting`` (keeping its unchanged groups), shuts the replaced
    ///    and removed groups down and stops accepting on removed listen addresses; the call returns
    ///    once every loop has done so.
    ///
    /// Never throws and never ends the process.
    public func reload(trigger: ReloadTrigger) async -> ReloadOutcome {
        guard let source = self.configSource else {
            return await self.reloads.run {
                self.refuse("no configuration source to reload from", trigger: trigger)
            }
        }
        return await self.reloads.run { await self.performReload(source, trigger: trigger) }
    }

    /// Applies `config` as a reload would (``reload(trigger:)`` without reading anything).
    public func reload(to config: SluiceConfig) async -> ReloadOutcome {
        await self.reloads.run { await self.performReload({ config }, trigger: .call) }
    }

    /// The configuration in force, its generation and the last reload's error.
    func currentConfig() -> ConfigState { self.configState.withLockedValue { $0 } }

    private func performReload(_ source: ConfigSource, trigger: ReloadTrigger) async -> ReloadOutcome {
        if let reason = self.drainRefusal() { return self.refuse(reason, trigger: trigger) }
        let new: SluiceConfig
        do {
            new = try source()
        } catch {
            return self.fail(error.errors.map(\.message), trigger: trigger)
        }
        let current = self.currentConfig()
        let plan = ReloadPlan(current: current.config, new: new, startedWith: self.config)

        // Certificates of new and changed TLS listeners must load, and new listeners are bound, before
        // anything changes, so that a bad certificate or an address that cannot be bound fails the
        // reload as a whole.
        let (tls, tlsErrors) = self.prepareTLSReload(plan)
        guard tlsErrors.isEmpty else { return self.fail(tlsErrors, trigger: trigger) }
        var opening: [[BoundListener]] = Array(repeating: [], count: self.loops.count)
        var opened: [(HostPort, SocketAddress)] = []
        for listener in plan.listenersToOpen {
            let address = listener.address
            do {
                let (local, channels) = try await self.bindEverywhere(listener, tls: tls[address])
                opened.append((address, local))
                for (index, channel) in channels.enumerated() { opening[index].append(BoundListener(address: address, channel: channel)) }
            } catch {
                await Self.close(opening)
                return self.fail(["\(error)"], trigger: trigger)
            }
        }
        // We have to check the phase again since we just awaited: a drain may have begun.
        if let reason = self.drainRefusal() {
            await Self.close(opening)
            return self.refuse(reason, trigger: trigger)
        }
        for name in plan.needsRestart {
            self.logger.warning("\(name) changed; takes effect on restart", metadata: ["setting": "\(name)"])
        }
        let closing = Set(plan.listenersToClose.map(\.address))
        var applied = true
        for (index, loop) in self.loops.enumerated() {
            let listeners = opening[index]
            let ok = (try? await loop.eventLoop.submit { loop.value.applyReload(new, opening: listeners, closing: closing) }.get()) ?? false
            applied = applied && ok
        }
        guard applied else {
            // A drain began while the loops took the new configuration: what they took does not
            // matter any more, the drain has closed or is closing every listener and group.
            return self.refuse("a drain began during the reload", trigger: trigger)
        }
        // New and changed groups get their endpoints' current answers and health; kept ones keep theirs.
        self.upstreamServices.update(groups: new.groups)
        self.boundListeners.withLockedValue { bound in
            for listener in plan.listenersToClose { bound[listener.address] = nil }
            for (address, local) in opened { bound[address] = local }
        }
        self.retireTLS(plan.listenersToClose.map(\.address))
        self.reloadCertificates(new, changed: plan.listenersChanged)
        self.adoptTLS(tls)
        let generation = self.configState.withLockedValue { state in
            state = ConfigState(config: new, generation: state.generation + 1, loadedAt: UnixTime.now(), lastError: nil)
            return state.generation
        }
        self.metrics.configReloaded(.ok)
        var metadata: Logger.Metadata = [
            "generation": "\(generation)", "trigger": "\(trigger.rawValue)", "changes": "\(plan.summary)",
        ]
        if !opened.isEmpty { metadata["listening"] = "\(opened.map { "\($0.1)" }.joined(separator: ","))" }
        self.logger.notice("config reloaded", metadata: metadata)
        return .applied(generation: generation)
    }

    /// Why a reload may not run now: the drain has begun (the listeners and groups are the drain's).
    private func drainRefusal() -> String? {
        let phase = self.phase.withLockedValue { $0.phase }
        return phase >= .propagating ? "the proxy is \(phase.rawValue): reloads are refused once the drain has begun" : nil
    }

    private func refuse(_ reason: String, trigger: ReloadTrigger) -> ReloadOutcome {
        self.metrics.configReloaded(.refused)
        self.logger.warning("config reload refused", metadata: ["trigger": "\(trigger.rawValue)", "reason": "\(reason)"])
        return .refused(reason: reason)
    }

    private func fail(_ errors: [String], trigger: ReloadTrigger) -> ReloadOutcome {
        // One line each (a YAML parser's message quotes the offending line under it).
        let errors = errors.map { $0.split(whereSeparator: \.isNewline).map { $0.drop(while: { $0.isWhitespace }) }.joined(separator: " ") }
        for error in errors {
            self.logger.error("config reload failed; the configuration in force stays", metadata: ["trigger": "\(trigger.rawValue)", "error": "\(error)"])
        }
        self.configState.withLockedValue { $0.lastError = errors.joined(separator: "; ") }
        self.metrics.configReloaded(.error)
        return .invalid(errors: errors)
    }

    private static func close(_ opening: [[BoundListener]]) async {
        for listener in opening.joined() { try? await listener.channel.close() }
    }
}
