import SluiceCore

/// One event loop's request counters: plain integers, updated on the loop without locks and
/// summed across loops when `/metrics` or `/status` is read.
struct RequestStats: Sendable {
    /// Upper bounds of the request duration histogram, in seconds.
    static let durationBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

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

    mutating func recordResponse(status: Int, duration: Duration) {
        let statusClass = status / 100
        self.responsesByClass[(1...5).contains(statusClass) ? statusClass : 0] += 1
        let seconds = duration.secondsDouble
        self.durationSumSeconds += seconds
        self.durationCounts[Self.bucket(seconds)] += 1
    }

    /// The histogram slot of a duration: the first bound it does not exceed, else +Inf (the last).
    static func bucket(_ seconds: Double) -> Int {
        var index = 0
        while index < Self.durationBuckets.count && seconds > Self.durationBuckets[index] { index += 1 }
        return index
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
        return sum
    }
}
