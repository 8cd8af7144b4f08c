/// A signal named in the configuration (`--app-stop-signal`, `--app-forward-signals`), as written
/// without the `SIG` prefix. The numbers are the platform's, looked up where signals are sent.
public enum SignalName: String, Sendable, Equatable, CaseIterable {
    case term = "TERM"
    case int = "INT"
    case quit = "QUIT"
    case hup = "HUP"
    case kill = "KILL"
    case usr1 = "USR1"
    case usr2 = "USR2"
    case winch = "WINCH"
    case alrm = "ALRM"

    /// What `--app-stop-signal` accepts: any of them.
    public static let stopSignals: [SignalName] = [.term, .int, .quit, .hup, .usr1, .usr2, .winch, .kill]

    /// What `--app-forward-signals` accepts: not TERM, INT or QUIT (they start Sluice's drain, whose
    /// end stops the app), not HUP (Sluice's reload), not KILL (it cannot be caught).
    public static let forwardable: [SignalName] = [.usr1, .usr2, .winch, .alrm]

    /// `TERM`, `SIGTERM`, `term`, `sigterm`.
    public init?(parsing text: String) {
        var name = text.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        self.init(rawValue: name)
    }
}
