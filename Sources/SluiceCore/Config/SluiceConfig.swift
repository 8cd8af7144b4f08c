/// Everything Sluice is told at start-up, as typed values with defaults.
///
/// Built once in `main` from flags, environment and YAML (see ``SluiceConfig/read(_:defaultThreads:)``);
/// everything below `main` receives this struct and never sees where a value came from.
public struct SluiceConfig: Sendable, Equatable {
    /// Where downstream clients connect, each plaintext or TLS. Default `0.0.0.0:8080`, plaintext.
    /// `--listen` (repeatable) gives plaintext ones, `--listen-tls` one TLS listener, the file's
    /// `listen:` either kind.
    public var listen: [Listener] = [Listener(HostPort(host: "0.0.0.0", port: 8080))]
    /// The short form's URLs (`--upstream`, `SLUICE_UPSTREAM`, `upstream:` in the file), which
    /// ``applyShortForm()`` turns into the group ``UpstreamGroup/defaultName``; empty when the file
    /// names groups (`upstreams:`). Requests go by ``routes`` to ``groups``, never by this list.
    public var upstreams: [UpstreamURL] = []
    /// The upstream groups, by name (`upstreams:` in the file; `--upstream` makes the one group
    /// ``UpstreamGroup/defaultName``).
    public var groups: [UpstreamGroup] = []
    /// The routes, first match wins (`routes:`; the flags' short form is `/` to the default group).
    public var routes: [Route] = []
    /// `/readyz` stays 503 until each of these groups has a healthy endpoint (`ready-requires:`). Default none.
    public var readyRequires: [String] = []
    /// The admin listener (`/livez`, `/readyz`, `/status`, `/metrics`). Default `0.0.0.0:9901`.
    public var admin: HostPort = HostPort(host: "0.0.0.0", port: 9901)
    /// Event loops, one listener and one upstream pool each. Default: the CPUs this process may run on.
    public var threads: Int = 1
    public var drain = Drain()
    public var http = HTTP()
    public var upstream = Upstream()
    public var logging = Logging()
    /// Supervisor mode (`sluice [options] -- CMD [ARGS...]`): the app Sluice starts, serves and stops.
    /// `nil`: Sluice fronts an app it does not run.
    public var app: App?

    public init() {}

    /// The app of supervisor mode: started as Sluice's child in its own process group, ready once it
    /// answers, stopped once Sluice's drain has finished.
    public struct App: Sendable, Equatable {
        /// The command and its arguments (everything after `--`); the command is looked up in `PATH`.
        public var command: [String]
        /// `--app-ready-path`: readiness waits for a 2xx/3xx answer to `GET PATH` on the first upstream;
        /// `nil`: for a TCP connect to it.
        public var readyPath: String?
        /// `--app-stop-signal`: sent to the app's process group once the drain has finished. Default TERM.
        public var stopSignal: SignalName = .term
        /// `--app-forward-signals`: signals Sluice passes on to the app's process group.
        public var forwardSignals: [SignalName] = []

        public init(command: [String]) {
            self.command = command
        }
    }

    /// The drain budget (DESIGN.md §2).
    public struct Drain: Sendable, Equatable {
        /// How long readiness fails while traffic is still served, so endpoint removal can propagate. Default 5 s.
        public var delay: Duration = .seconds(5)
        /// How long in-flight requests may take to finish once listeners close. Default 20 s.
        public var timeout: Duration = .seconds(20)
        /// The pod's termination grace period; `delay + timeout` must fit inside it with ``margin``. Default 30 s.
        public var terminationGrace: Duration = .seconds(30)
        /// An idle keep-alive connection is closed in `draining` only after it has been quiet this long,
        /// so a request racing the close is not lost. Default 250 ms.
        public var idleQuietPeriod: Duration = .milliseconds(250)
        /// `--drain-quiet`: `propagating` ends once no new connection has been accepted for this long
        /// (no sooner than ``delayMin``, no later than ``delay``). Default `nil`: the fixed ``delay``.
        public var quiet: Duration?
        /// `--drain-delay-min`: with ``quiet``, the shortest delay (clamped to ``delay``). Default 2 s.
        public var delayMin: Duration = .seconds(2)
        /// `--drain-report`: where the drain's timeline is written as JSON at exit. Default none.
        public var reportFile: String?
        /// The least time left between the end of `drain-timeout` and SIGKILL: 1 s.
        public static let margin: Duration = .seconds(1)
        /// Once `draining` has begun, a connection that has sent part of a request head, and no whole
        /// request, is closed after this long: slowloris connections cannot hold a rollout to its
        /// deadline. A request whose head arrived (a slow upload) keeps its full time. 1 s.
        public static let partialHeadGrace: Duration = .seconds(1)

        public init() {}
    }

    /// Downstream HTTP limits and timeouts.
    public struct HTTP: Sendable, Equatable {
        /// A request head must arrive completely within this time of its first byte (or of accept). Default 30 s.
        public var requestHeaderTimeout: Duration = .seconds(30)
        /// An idle keep-alive connection is closed after this long. Default 60 s.
        public var idleTimeout: Duration = .seconds(60)
        /// The largest request head accepted; larger is answered with 431. Default 32 KiB.
        public var maxHeaderBytes: Int = 32 << 10
        /// The largest request body accepted; larger is answered with 413. Default `nil`: unlimited.
        public var maxBodyBytes: Int? = nil
        /// The longest gap between two pieces of an HTTP/1 request body: past it the request is answered
        /// with 408 (or, once its response has begun, aborted) and its upstream connection closed. Default 30 s.
        public var requestBodyTimeout: Duration = .seconds(30)
        /// An HTTP/2 stream whose response cannot move because the client's flow-control window stays
        /// closed is reset (`RST_STREAM`, `CANCEL`) after this long. Default 30 s.
        public var streamStallTimeout: Duration = .seconds(30)
        /// A tunnel (an upgraded HTTP/1 connection: WebSocket or another `Upgrade` protocol) that
        /// carries no bytes either way for this long is closed. Default 1 h: WebSockets are long-lived
        /// and may be quiet, but a dead peer must not hold a connection for ever.
        public var tunnelIdleTimeout: Duration = .seconds(3600)
        /// At most this many downstream connections at once (every listener, every loop); past it
        /// accepting pauses until one closes. Default `nil`: derived at start-up from `RLIMIT_NOFILE`
        /// (raised to its hard limit), leaving room for upstream connections and the admin listener.
        public var maxConnections: Int? = nil

        public init() {}
    }

    /// Upstream connection settings, per event loop and upstream.
    public struct Upstream: Sendable, Equatable {
        /// Connecting to an upstream must succeed within this time, else 502. Default 5 s.
        public var connectTimeout: Duration = .seconds(5)
        /// The upstream's response head must arrive within this time of the request head, else 504. Default 60 s.
        public var responseHeaderTimeout: Duration = .seconds(60)
        /// Pooled idle connections are closed after this long; keep it below the app's keep-alive timeout
        /// (Node's default is 5 s). Default 4 s.
        public var idleTimeout: Duration = .seconds(4)
        /// At most this many idle connections are kept per upstream and event loop. Default 512: at
        /// least the peak concurrency, or bursts of responses close connections the next burst reopens
        /// (the idle timeout retires the surplus anyway).
        public var maxIdle: Int = 512

        public init() {}
    }

    public struct Logging: Sendable, Equatable {
        public enum Level: String, Sendable, CaseIterable {
            case trace, debug, info, notice, warning, error, critical
        }
        public enum Format: String, Sendable, CaseIterable {
            case text, json
        }
        /// Default `info`.
        public var level: Level = .info
        /// Default `text`.
        public var format: Format = .text

        public init() {}
    }
}
