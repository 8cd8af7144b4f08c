/// How the supervised app ended (supervisor mode), and the exit code Sluice ends with because of it.
public enum AppExit: Equatable, Sendable, CustomStringConvertible {
    /// `exit(code)`.
    case exited(Int32)
    /// Ended by a signal (its number).
    case signaled(Int32)

    /// Sluice's exit code once the app has ended:
    /// 1. the app exited 0, or was ended by the stop signal Sluice sent: Sluice's own drain code
    ///    (0 clean, 3 forced);
    /// 2. the app exited with another code: that code (it failed);
    /// 3. the app was ended by another signal (it crashed, or Sluice had to SIGKILL it): 128 plus the
    ///    signal's number, as a shell reports it (137 after SIGKILL).
    ///
    /// - Parameter stopSignal: the signal Sluice sent to stop the app; `nil` when it exited on its own.
    public func exitCode(drainCode: Int32, stopSignal: Int32?) -> Int32 {
        switch self {
        case .exited(0): drainCode
        case .exited(let code): code
        case .signaled(let signal) where signal == stopSignal: drainCode
        case .signaled(let signal): 128 + signal
        }
    }

    /// `exit:0`, `signal:15`.
    public var description: String {
        switch self {
        case .exited(let code): "exit:\(code)"
        case .signaled(let signal): "signal:\(signal)"
        }
    }
}
