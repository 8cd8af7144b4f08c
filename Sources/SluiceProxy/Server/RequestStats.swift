import SluiceCore

/// One event loop's request counters: plain integers, updated on the loop without locks and
/// summed across loops when `/metrics` or `/status` is read.
struct RequestStats: Sendable {
    /// Upper bounds of the request duration histogram, in seconds.
    static let durationBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
    /// Upper bounds of the tunnel duration histogram, in seconds: from a WebSocket opened and closed
    /// at once to one held for a day.
    static let tunnelDurationBuckets: [Double] = [0.1, 1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400]

    /// How a WebSocket tunnel's drain close handshake ended.
    enum TunnelDrainClose: Sendable {
        /// Both Close frames came back (the client's and the upstream's) before the tunnel was closed.
        case clean
        /// The close handshake's 5 s, or the drain deadline, ran out first.
        case timedOut
    }

    /// Responses by status class: index 1 = 1xx … 5 = 5xx; 0 = other.
    var responsesByClass = [Int](repeating: 0, count: 6)
    /// Cumulative-at-render histogram counts; one slot per bucket plus +Inf.
    var durationCounts = [Int](repeating: 0, count: RequestStats.durationBuckets.count + 1)
    var durationSumSeconds: Double = 0
    var upstreamConnectErrors = 0
    /// Upstream connections closed because they sent bytes no request asked for (response desync).
    var upstreamUnsolicitedBytes = 0
    var errorsByStatus: [Int: Int] = [:]
    var aborted = 0
    var clientAborts = 0
    var retries = 0
    var forcedCloses = 0
    /// HTTP/2 streams reset because the client's flow-control window held their response back past
    /// `stream-stall-timeout`.
    var http2StreamStallResets = 0
    /// HTTP/2 connections ended by a GOAWAY of ours with an error code, by code (`PROTOCOL_ERROR`, …).
    var http2ConnectionErrors: [String: Int] = [:]
    /// Tunnels closed, by the protocol of their downstream connection: `[http1, http2]`, as
    /// ``ConnectionProtocol/allCases``.
    var tunnelsClosed = [Int](repeating: 0, count: ConnectionProtocol.allCases.count)
    /// Cumulative-at-render histogram counts of tunnel durations; one slot per bucket plus +Inf.
    var tunnelDurationCounts = [Int](repeating: 0, count: RequestStats.tunnelDurationBuckets.count + 1)
    var tunnelDurationSumSeconds: Double = 0
    /// Bytes carried by closed tunnels, client to upstream and upstream to client.
    var tunnelBytesFromClient = 0
    var tunnelBytesToClient = 0
    /// WebSocket tunnels the drain closed, by how their close handshake ended.
    var tunnelDrainClosesClean = 0
    var tunnelDrainClosesTimedOut = 0

    mutating func recordResponse(status: Int, duration: Duration) {
        let statusClass = status / 100
        self.responsesByClass[(1...5).contains(statusClass) ? statusClass : 0] += 1
        let seconds = duration.secondsDouble
        self.durationSumSeconds += seconds
        self.durationCounts[Self.bucket(seconds)] += 1
    }

    /// The histogram slot of a duration: the first bound it does not exceed, else +Inf (the last).
    static func bucket(_ seconds: Double, bounds: [Double] = Self.durationBuckets) -> Int {
        var index = 0
        while index < bounds.count && seconds > bounds[index] { index += 1 }
        return index
    }

    /// A tunnel (HTTP/1 upgraded connection, HTTP/2 WebSocket stream) ended, after `duration` from
    /// its 101 (or 200), having carried these bytes.
    mutating func recordTunnelClosed(protocol proto: ConnectionProtocol, duration: Duration, bytesFromClient: Int, bytesToClient: Int) {
        switch proto {
        case .http1: self.tunnelsClosed[0] += 1
        case .http2: self.tunnelsClosed[1] += 1
        }
        let seconds = duration.secondsDouble
        self.tunnelDurationSumSeconds += seconds
        self.tunnelDurationCounts[Self.bucket(seconds, bounds: Self.tunnelDurationBuckets)] += 1
        self.tunnelBytesFromClient += bytesFromClient
        self.tunnelBytesToClient += bytesToClient
    }

    /// The drain's close handshake on a WebSocket tunnel ended.
    mutating func recordTunnelDrainClose(_ outcome: TunnelDrainClose) {
        switch outcome {
        case .clean: self.tunnelDrainClosesClean += 1
        case .timedOut: self.tunnelDrainClosesTimedOut += 1
        }
    }

    mutating func recordError(_ error: ProxyError) {
        if let status = error.status {
            self.errorsByStatus[status, default: 0] += 1
        } else {
            self.aborted += 1
        }
    }

    static func + (lhs: RequestStats, rhs: RequestStats) -> RequestStats {
        var sum = lhs
        for i in sum.responsesByClass.indices { sum.responsesByClass[i] += rhs.responsesByClass[i] }
        for i in sum.durationCounts.indices { sum.durationCounts[i] += rhs.durationCounts[i] }
        sum.durationSumSeconds += rhs.durationSumSeconds
        sum.upstreamConnectErrors += rhs.upstreamConnectErrors
        sum.upstreamUnsolicitedBytes += rhs.upstreamUnsolicitedBytes
        sum.errorsByStatus.merge(rhs.errorsByStatus, uniquingKeysWith: +)
        sum.aborted += rhs.aborted
        sum.clientAborts += rhs.clientAborts
        sum.retries += rhs.retries
        sum.forcedCloses += rhs.forcedCloses
        sum.http2StreamStallResets += rhs.http2StreamStallResets
        sum.http2ConnectionErrors.merge(rhs.http2ConnectionErrors, uniquingKeysWith: +)
        for i in sum.tunnelsClosed.indices { sum.tunnelsClosed[i] += rhs.tunnelsClosed[i] }
        for i in sum.tunnelDurationCounts.indices { sum.tunnelDurationCounts[i] += rhs.tunnelDurationCounts[i] }
        sum.tunnelDurationSumSeconds += rhs.tunnelDurationSumSeconds
        sum.tunnelBytesFromClient += rhs.tunnelBytesFromClient
        sum.tunnelBytesToClient += rhs.tunnelBytesToClient
        sum.tunnelDrainClosesClean += rhs.tunnelDrainClosesClean
        sum.tunnelDrainClosesTimedOut += rhs.tunnelDrainClosesTimedOut
        return sum
    }
}
