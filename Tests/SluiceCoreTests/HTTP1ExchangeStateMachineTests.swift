import SluiceCore
import Testing

/// Counts how often the machine asked a question passed as an autoclosure (the retry policy, the
/// drain's mark), so a test can assert that it was not asked where the answer cannot matter.
private final class Probe {
    private let answer: Bool
    private(set) var asked = 0

    init(_ answer: Bool) { self.answer = answer }

    func ask() -> Bool {
        self.asked += 1
        return self.answer
    }
}

/// The decisions of one downstream HTTP/1 connection, event by event: first every event in every
/// state (a matrix, one test per event), then the scenarios the handler goes through.
@Suite struct HTTP1ExchangeStateMachineTests {
    typealias Machine = HTTP1ExchangeStateMachine

    static func head(
        http10: Bool = false, keepAlive: Bool = true, body: Bool = false, expectsContinue: Bool = false, upgrade: Bool = false
    ) -> Machine.RequestHead {
        Machine.RequestHead(isHTTP10: http10, keepAlive: keepAlive, hasBody: body, expectsContinue: expectsContinue, upgrade: upgrade)
    }

    static func routed(max: Int? = nil, length: Int? = nil, replay: Int = 0) -> Machine.Verdict {
        .routed(maxBodyBytes: max, contentLength: length, replayLimit: replay)
    }

    static let get = head()
    static let post = head(body: true)

    // MARK: - Building a machine in each state

    /// The states, as the handler sees them. The builders use a POST whose body is still coming
    /// (limit 100 bytes, no retries), except the tunnel's, which is a GET upgrade read whole.
    enum Phase: CaseIterable, CustomTestStringConvertible {
        case idle
        case leasing
        /// Forwarding, no response byte yet.
        case forwarding
        /// Forwarding, the response head went out.
        case responding
        case respondedLocally
        case tunnel
        case closed

        var testDescription: String { "\(self)" }
    }

    static func machine(in phase: Phase) -> Machine {
        var machine = Machine()
        switch phase {
        case .idle:
            break
        case .leasing:
            #expect(machine.requestHead(Self.post, verdict: Self.routed(max: 100)) == .lease(upgrade: false))
        case .forwarding:
            machine = Self.machine(in: .leasing)
            #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        case .responding:
            machine = Self.machine(in: .forwarding)
            // The body is not read whole: the response closes the connection.
            #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: true))
        case .respondedLocally:
            machine = Self.machine(in: .leasing)
            #expect(machine.upstreamConnectFailed(retry: false) == .respond)
            let local = machine.localResponse(for: .upstreamConnectFailed("refused"), drainSaysClose: false)
            #expect(local.close && local.completeNow)
        case .tunnel:
            #expect(machine.requestHead(Self.head(upgrade: true), verdict: Self.routed(max: 100)) == .lease(upgrade: true))
            #expect(machine.requestEnd() == .queue)
            #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: true, keepQueuedForReplay: false))
            #expect(machine.responseHead(status: 101, retry: false, drainSaysClose: false) == .startTunnel)
        case .closed:
            machine = Self.machine(in: .forwarding)
            #expect(machine.closed() == true)
        }
        return machine
    }

    // MARK: - Every event in every state

    /// The queries tell the states apart.
    @Test(arguments: Phase.allCases)
    func queries(_ phase: Phase) {
        let machine = Self.machine(in: phase)
        #expect(machine.isBetweenRequests == (phase == .idle))
        #expect(machine.isIdle == (phase == .idle))
        #expect(machine.isLeasing == (phase == .leasing))
        #expect(machine.isForwarding == (phase == .forwarding || phase == .responding))
        #expect(machine.isTunnel == (phase == .tunnel))
        #expect(machine.isClosed == (phase == .closed))
        // No request of these was read whole except the tunnel's, and a tunnel owes no response end.
        #expect(!machine.awaitsResponseEnd)
        #expect(machine.queuedParts == 0)
    }

    /// A part is handled at once when no response is owed.
    @Test(arguments: Phase.allCases)
    func partReceived(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        #expect(machine.partReceived() == .handle)
        #expect(machine.queuedParts == 0)
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.queueServed() == nil)
    }

    /// A head is taken only between requests.
    @Test(arguments: Phase.allCases)
    func requestHead(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.HeadAction = phase == .idle ? .lease(upgrade: false) : .none
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == expected)
        #expect(machine.isLeasing == (phase == .idle || phase == .leasing))
    }

    /// A body part within the limit.
    @Test(arguments: Phase.allCases)
    func requestBodyWithinLimit(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.BodyAction =
            switch phase {
            case .leasing: .queue
            case .forwarding, .responding: .forward(.none)
            case .idle, .respondedLocally, .tunnel, .closed: .discard
            }
        #expect(machine.requestBody(bytes: 1) == expected)
        #expect(machine.bodyBytes == 1)
    }

    /// A body part past the route's limit: too large while the request is in progress, discarded
    /// once it was answered or the connection closes. (Idle: no request, no limit.)
    @Test(arguments: Phase.allCases)
    func requestBodyOverLimit(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.BodyAction =
            switch phase {
            case .leasing, .forwarding, .responding: .tooLarge(limit: 100)
            case .idle, .respondedLocally, .tunnel, .closed: .discard
            }
        #expect(machine.requestBody(bytes: 101) == expected)
    }

    /// The request's end.
    @Test(arguments: Phase.allCases)
    func requestEnd(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.EndAction =
            switch phase {
            case .leasing: .queue
            case .forwarding, .responding: .send(.none)
            // The local response closes (it went out before the request's end): nothing to complete.
            case .idle, .respondedLocally, .tunnel, .closed: .none
            }
        #expect(machine.requestEnd() == expected)
        #expect(machine.requestEnded)
        // Read whole, a request whose response is still owed makes later parts wait.
        #expect(machine.awaitsResponseEnd == (phase == .leasing || phase == .forwarding || phase == .responding || phase == .respondedLocally))
    }

    /// Only a leasing exchange takes the connection; everyone else declines it (the pool parks it).
    @Test(arguments: Phase.allCases)
    func upstreamConnected(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.ConnectedAction =
            phase == .leasing ? .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false) : .decline
        #expect(machine.upstreamConnected() == expected)
    }

    /// A connect failure matters only while leasing; elsewhere the policy is not asked.
    @Test(arguments: Phase.allCases)
    func upstreamConnectFailed(_ phase: Phase) {
        for answer in [true, false] {
            var machine = Self.machine(in: phase)
            let retry = Probe(answer)
            let expected: Machine.RetryOrFail = phase == .leasing ? (answer ? .retry : .respond) : .none
            #expect(machine.upstreamConnectFailed(retry: retry.ask()) == expected)
            #expect(retry.asked == (phase == .leasing ? 1 : 0))
            #expect(machine.isLeasing == (phase == .leasing))
        }
    }

    /// Interim heads go to an HTTP/1.1 client while forwarding, never a `100`.
    @Test(arguments: Phase.allCases)
    func interimResponse(_ phase: Phase) {
        let machine = Self.machine(in: phase)
        let forwarding = phase == .forwarding || phase == .responding
        #expect(machine.interimResponse(isContinue: false) == forwarding)
        #expect(!machine.interimResponse(isContinue: true))
    }

    /// A final head outside forwarding is ignored, and neither the policy nor the drain is asked.
    /// (`responding` is left out: a second final head cannot come from the codec.)
    @Test(arguments: Phase.allCases.filter { $0 != .responding })
    func responseHead(_ phase: Phase) {
        for status in [200, 101, 503] {
            var machine = Self.machine(in: phase)
            let retry = Probe(false)
            let drain = Probe(false)
            let expected: Machine.ResponseHeadAction =
                // A 101 to a request that asked for no upgrade is not a switch.
                phase == .forwarding && status != 101 ? .send(close: true) : .none
            #expect(machine.responseHead(status: status, retry: retry.ask(), drainSaysClose: drain.ask()) == expected)
            let asked = phase == .forwarding && status != 101 ? 1 : 0
            #expect(retry.asked == asked)
            #expect(drain.asked == asked)
            #expect(machine.responseStarted == (expected != .none || phase == .respondedLocally || phase == .tunnel))
        }
    }

    /// The response's end: whether the upstream connection may be reused, only while forwarding.
    @Test(arguments: Phase.allCases)
    func responseEnd(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        // The POST's body is not read whole: the upstream connection is not reused.
        let expected: Bool? = phase == .forwarding || phase == .responding ? false : nil
        #expect(machine.responseEnd() == expected)
    }

    /// An upstream failure: retried or answered before the response, an abort after it, the
    /// tunnel's end in a tunnel; the policy is asked only where a retry is possible.
    @Test(arguments: Phase.allCases)
    func upstreamFailed(_ phase: Phase) {
        for answer in [true, false] {
            var machine = Self.machine(in: phase)
            let retry = Probe(answer)
            let expected: Machine.RetryOrFail =
                switch phase {
                case .forwarding: answer ? .retry : .respond
                case .responding: .abort
                case .tunnel: .closeTunnel
                case .idle, .leasing, .respondedLocally, .closed: .none
                }
            #expect(machine.upstreamFailed(retry: retry.ask()) == expected)
            #expect(retry.asked == (phase == .forwarding ? 1 : 0))
            #expect(machine.isLeasing == (phase == .leasing || (phase == .forwarding && answer)))
            #expect(machine.isClosed == (phase == .responding || phase == .tunnel || phase == .closed))
        }
    }

    /// Only a tunnel's upstream can end its side.
    @Test(arguments: Phase.allCases)
    func tunnelUpstreamEnded(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.TunnelEndAction = phase == .tunnel ? .halfCloseClient(thenClose: false) : .none
        #expect(machine.tunnelUpstreamEnded() == expected)
        #expect(machine.isTunnel == (phase == .tunnel))
    }

    /// A failure: an error response while nothing of a response went out, else an abort.
    @Test(arguments: Phase.allCases)
    func fail(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let started = phase == .responding || phase == .respondedLocally || phase == .tunnel
        #expect(machine.fail(.requestTimeout("stalled")) == (started ? .abort : .respond))
        #expect(machine.isClosed == (started || phase == .closed))
    }

    /// The header timeout answers only a head that began between requests (none did here).
    @Test(arguments: Phase.allCases)
    func headTimedOut(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        #expect(machine.headTimedOut() == .close)
    }

    /// The body timeout fails a request in progress, else closes.
    @Test(arguments: Phase.allCases)
    func bodyTimedOut(_ phase: Phase) {
        let machine = Self.machine(in: phase)
        let inProgress = phase == .leasing || phase == .forwarding || phase == .responding
        #expect(machine.bodyTimedOut() == (inProgress ? .fail : .close))
    }

    /// The client's half-close: closes an idle connection, passes to a tunnel's upstream, waits for
    /// the response otherwise.
    @Test(arguments: Phase.allCases)
    func inputClosed(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let expected: Machine.InputClosedAction =
            switch phase {
            case .idle: .close
            case .tunnel: .halfCloseUpstream
            case .leasing, .forwarding, .responding, .respondedLocally, .closed: .none
            }
        #expect(machine.inputClosed() == expected)
        #expect(machine.isTunnel == (phase == .tunnel))
    }

    /// A close counts as the client's abort while an exchange with a body or a begun response is forwarded.
    @Test(arguments: Phase.allCases)
    func closed(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        #expect(machine.closed() == (phase == .forwarding || phase == .responding))
        #expect(machine.isClosed)
        // Twice is not two aborts.
        #expect(machine.closed() == false)
        #expect(machine.upstreamConnected() == .decline)
    }

    /// Reads are held while leasing, and while forwarding or tunnelling into an upstream that cannot take more.
    @Test(arguments: Phase.allCases)
    func readRequested(_ phase: Phase) {
        for writable in [true, false] {
            var machine = Self.machine(in: phase)
            let expected =
                switch phase {
                case .leasing: false
                case .forwarding, .responding, .tunnel: writable
                case .idle, .respondedLocally, .closed: true
                }
            #expect(machine.readRequested(upstreamWritable: writable) == expected)
            // A held read goes out when released, once.
            #expect(machine.releaseHeldRead() == !expected)
            #expect(machine.releaseHeldRead() == false)
        }
    }

    /// A parse error with nothing queued and no response owed is answered at once.
    @Test(arguments: Phase.allCases)
    func parseError(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        let error = ProxyError.badRequest("invalid chunk size")
        let expected: Machine.DeferredAction =
            switch phase {
            case .idle: .respond(error)
            case .leasing, .forwarding, .responding: .fail(error)
            case .respondedLocally, .tunnel, .closed: .close
            }
        #expect(machine.parseError(error) == expected)
        #expect(machine.queueServed() == nil)
    }

    /// Bytes without a part start the next head's timeout only between requests, once.
    @Test(arguments: Phase.allCases)
    func bytesWithoutPart(_ phase: Phase) {
        var machine = Self.machine(in: phase)
        #expect(machine.bytesWithoutPart() == (phase == .idle))
        #expect(machine.bytesWithoutPart() == false)
        #expect(machine.headBegan == (phase == .idle))
    }

    // MARK: - Keep-alive cycles

    /// A GET: leased, forwarded, answered, and the connection waits for the next request.
    @Test func getKeepAliveCycle() {
        var machine = Machine()
        #expect(machine.isIdle)
        for round in 0..<2 {
            #expect(machine.bytesWithoutPart() == true)
            #expect(machine.headBegan)
            #expect(machine.partReceived() == .handle)
            #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
            #expect(!machine.headBegan)
            #expect(machine.isLeasing)
            #expect(!machine.requestHasBody)
            #expect(machine.partReceived() == .handle)
            #expect(machine.requestEnd() == .queue)
            #expect(machine.awaitsResponseEnd)
            #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
            #expect(machine.isForwarding)
            #expect(machine.interimResponse(isContinue: false))
            let drain = Probe(false)
            #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: drain.ask()) == .send(close: false))
            #expect(drain.asked == 1)
            #expect(machine.responseStarted)
            #expect(machine.responseEnd() == true)
            #expect(machine.responseComplete() == .keepAlive)
            #expect(machine.isIdle, "round \(round)")
            #expect(machine.takeQueuedPart() == false)
            #expect(machine.queueServed() == nil)
            #expect(machine.afterQueue() == .resumeReading)
        }
        #expect(machine.closed() == false)
    }

    /// The request ends once the connection is ready: the end goes upstream at once.
    @Test func endAfterConnectIsSent() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(!machine.awaitsResponseEnd)
        #expect(machine.requestEnd() == .send(.none))
        #expect(machine.awaitsResponseEnd)
    }

    // MARK: - Bodies, replays, limits

    /// A POST within the retry buffer: queued while leasing, kept for a replay, sent.
    @Test func postWithinReplayLimit() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(replay: 10)) == .lease(upgrade: false))
        #expect(machine.requestHasBody)
        #expect(machine.requestBody(bytes: 4) == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.requestBody(bytes: 6) == .forward(.keep))  // 10: at the limit, still kept
        #expect(machine.requestEnd() == .send(.keep))
        #expect(machine.bodyBytes == 10)
    }

    /// A POST that outgrows the retry buffer: the part past it drops the replay, later ones keep nothing.
    @Test func postOutgrowsReplayLimit() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(replay: 10)) == .lease(upgrade: false))
        #expect(machine.requestBody(bytes: 4) == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.requestBody(bytes: 6) == .forward(.keep))
        #expect(machine.requestBody(bytes: 1) == .forward(.drop))
        #expect(machine.requestBody(bytes: 5) == .forward(.none))
        #expect(machine.requestEnd() == .send(.none))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
    }

    /// A group without retries keeps nothing.
    @Test func noRetriesKeepNothing() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(replay: 0)) == .lease(upgrade: false))
        #expect(machine.requestBody(bytes: 1) == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.requestBody(bytes: 1) == .forward(.none))
        #expect(machine.requestEnd() == .send(.none))
    }

    /// The next request starts with a fresh count, limit and replay.
    @Test func requestStateResetsBetweenRequests() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(max: 10, replay: 100)) == .lease(upgrade: false))
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.requestBody(bytes: 8) == .forward(.keep))
        #expect(machine.requestEnd() == .send(.keep))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.requestHead(Self.post, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.bodyBytes == 0)
        #expect(!machine.requestEnded)
        #expect(!machine.responseStarted)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        // No limit now, and nothing kept.
        #expect(machine.requestBody(bytes: 1000) == .forward(.none))
    }

    /// A body past the limit while leasing: answered 413, and the connection closes lingering (the
    /// client is still sending); what comes after is discarded.
    @Test func bodyTooLargeWhileLeasing() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(max: 5)) == .lease(upgrade: false))
        #expect(machine.requestBody(bytes: 5) == .queue)
        #expect(machine.requestBody(bytes: 1) == .tooLarge(limit: 5))
        #expect(machine.fail(.bodyTooLarge(limit: 5)) == .respond)
        let local = machine.localResponse(for: .bodyTooLarge(limit: 5), drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.upstreamConnected() == .decline)
        #expect(machine.requestBody(bytes: 10) == .discard)
        #expect(machine.responseComplete() == .close(linger: true))
        #expect(machine.isClosed)
        #expect(machine.requestBody(bytes: 10) == .discard)
        #expect(machine.requestEnd() == .none)
    }

    /// A body past the limit while forwarding, before and after the response began.
    @Test func bodyTooLargeWhileForwarding() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(max: 5)) == .lease(upgrade: false))
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.requestBody(bytes: 3) == .forward(.none))
        #expect(machine.requestBody(bytes: 3) == .tooLarge(limit: 5))
        #expect(machine.fail(.bodyTooLarge(limit: 5)) == .respond)
        let local = machine.localResponse(for: .bodyTooLarge(limit: 5), drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.responseComplete() == .close(linger: true))

        // The upstream answered early; the body goes on and passes the limit: abort, never a
        // truncated response presented as whole.
        var started = Self.machine(in: .responding)
        #expect(started.requestBody(bytes: 100) == .forward(.none))
        #expect(started.requestBody(bytes: 1) == .tooLarge(limit: 100))
        #expect(started.fail(.bodyTooLarge(limit: 100)) == .abort)
        #expect(started.isClosed)
    }

    /// A `Content-Length` above the route's limit is answered 413 from the head; at the limit it is leased.
    @Test func contentLengthOverLimitIs413() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(max: 100, length: 101)) == .respond(.bodyTooLarge(limit: 100)))
        #expect(machine.isBetweenRequests)
        let local = machine.localResponse(for: .bodyTooLarge(limit: 100), drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.requestBody(bytes: 101) == .discard)
        #expect(machine.responseComplete() == .close(linger: true))

        var atLimit = Machine()
        #expect(atLimit.requestHead(Self.post, verdict: Self.routed(max: 100, length: 100)) == .lease(upgrade: false))
        var noLimit = Machine()
        #expect(noLimit.requestHead(Self.post, verdict: Self.routed(length: 1_000_000)) == .lease(upgrade: false))
    }

    /// A head the rules rejected is answered with their error, and the request is not leased.
    @Test func rejectedHead() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: .rejected(.connectRefused)) == .respond(.connectRefused))
        #expect(machine.isBetweenRequests)
        let local = machine.localResponse(for: .connectRefused, drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.responseComplete() == .close(linger: true))
        #expect(machine.isClosed)
    }

    // MARK: - Upgrades and tunnels

    /// An upgrade request must not carry a body: 400, before anything is leased. The body limit
    /// comes first.
    @Test func upgradeWithBodyIs400() {
        var machine = Machine()
        let head = Self.head(body: true, upgrade: true)
        #expect(machine.requestHead(head, verdict: Self.routed()) == .respond(.badRequest("an upgrade request must not carry a body")))
        #expect(machine.isBetweenRequests)
        var tooLarge = Machine()
        #expect(tooLarge.requestHead(head, verdict: Self.routed(max: 1, length: 2)) == .respond(.bodyTooLarge(limit: 1)))
    }

    /// Upgrade → lease with the pair → forward with the pair → 101 → tunnel; neither the policy nor
    /// the drain is asked about a 101.
    @Test func upgradeBecomesTunnel() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(upgrade: true), verdict: Self.routed(replay: 1000)) == .lease(upgrade: true))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: true, keepQueuedForReplay: true))
        let retry = Probe(true)
        let drain = Probe(true)
        #expect(machine.responseHead(status: 101, retry: retry.ask(), drainSaysClose: drain.ask()) == .startTunnel)
        #expect(retry.asked == 0)
        #expect(drain.asked == 0)
        #expect(machine.isTunnel)
        #expect(machine.responseStarted)
        #expect(!machine.awaitsResponseEnd)
        #expect(!machine.isBetweenRequests)
        #expect(machine.partReceived() == .handle)
        #expect(machine.responseEnd() == nil)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .none)
        #expect(machine.bodyTimedOut() == .close)
        #expect(machine.headTimedOut() == .close)
        // Tunnel reads follow the upstream's writability.
        #expect(machine.readRequested(upstreamWritable: false) == false)
        #expect(machine.releaseHeldRead() == true)
        #expect(machine.readRequested(upstreamWritable: true) == true)
        #expect(machine.closed() == false)
    }

    /// Any other status to an upgrade is an ordinary response, and the connection stays HTTP.
    @Test(arguments: [200, 400, 426])
    func upgradeRefused(_ status: Int) {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(upgrade: true), verdict: Self.routed()) == .lease(upgrade: true))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: true, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: status, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(!machine.isTunnel)
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
    }

    /// A 503 to an upgrade that the route retries leases again, still with the pair.
    @Test func upgradeRetriedOn5xx() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(upgrade: true), verdict: Self.routed()) == .lease(upgrade: true))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: true, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 503, retry: true, drainSaysClose: false) == .retry)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: true, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 101, retry: false, drainSaysClose: false) == .startTunnel)
    }

    /// A 101 to a request that asked for no upgrade is not a switch: nothing happens, and the
    /// exchange still waits for its final head.
    @Test func switchingWithoutUpgradeIsIgnored() {
        var machine = Self.machine(in: .forwarding)
        let retry = Probe(true)
        let drain = Probe(true)
        #expect(machine.responseHead(status: 101, retry: retry.ask(), drainSaysClose: drain.ask()) == .none)
        #expect(retry.asked == 0 && drain.asked == 0)
        #expect(machine.isForwarding)
        #expect(!machine.responseStarted)
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: true))
    }

    /// The client half-closes first: passed upstream; the upstream's end then closes everything.
    @Test func tunnelClientHalfClosesFirst() {
        var machine = Self.machine(in: .tunnel)
        #expect(machine.inputClosed() == .halfCloseUpstream)
        #expect(machine.isTunnel)
        #expect(machine.tunnelUpstreamEnded() == .halfCloseClient(thenClose: true))
        #expect(machine.isClosed)
        #expect(machine.tunnelUpstreamEnded() == .none)
    }

    /// The upstream ends first: passed to the client, once; the client's half-close then closes everything.
    @Test func tunnelUpstreamEndsFirst() {
        var machine = Self.machine(in: .tunnel)
        #expect(machine.tunnelUpstreamEnded() == .halfCloseClient(thenClose: false))
        #expect(machine.isTunnel)
        #expect(machine.tunnelUpstreamEnded() == .none)
        #expect(machine.inputClosed() == .halfCloseUpstream)
        #expect(machine.isClosed)
    }

    /// The tunnel's upstream fails: the client's connection closes, without asking the retry policy.
    @Test func tunnelUpstreamFails() {
        var machine = Self.machine(in: .tunnel)
        let retry = Probe(true)
        #expect(machine.upstreamFailed(retry: retry.ask()) == .closeTunnel)
        #expect(retry.asked == 0)
        #expect(machine.isClosed)
        #expect(machine.tunnelUpstreamEnded() == .none)
        #expect(machine.inputClosed() == .none)
    }

    // MARK: - Retries

    /// Connect failures: retried while the policy allows, then answered.
    @Test func connectFailedRetryThenRespond() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnectFailed(retry: true) == .retry)
        #expect(machine.isLeasing)
        #expect(machine.upstreamConnectFailed(retry: false) == .respond)
        let local = machine.localResponse(for: .upstreamConnectFailed("refused"), drainSaysClose: false)
        // The request was read whole and the error leaves the connection usable.
        #expect(!local.close && local.completeNow)
        #expect(machine.upstreamConnected() == .decline)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.isIdle)
    }

    /// A connect failure after a retry that then connects: the connection carries the request.
    @Test func connectFailedRetryThenConnects() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(replay: 100)) == .lease(upgrade: false))
        #expect(machine.requestBody(bytes: 10) == .queue)
        #expect(machine.upstreamConnectFailed(retry: true) == .retry)
        #expect(machine.requestBody(bytes: 10) == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.requestEnd() == .send(.keep))
    }

    /// An upstream failure before the response: retried (leasing again, the queued parts kept for
    /// the next replay), or answered.
    @Test func upstreamFailedBeforeResponse() {
        var machine = Machine()
        #expect(machine.requestHead(Self.post, verdict: Self.routed(replay: 100)) == .lease(upgrade: false))
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.requestBody(bytes: 10) == .forward(.keep))
        #expect(machine.requestEnd() == .send(.keep))
        #expect(machine.upstreamFailed(retry: true) == .retry)
        #expect(machine.isLeasing)
        #expect(machine.awaitsResponseEnd)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.upstreamFailed(retry: false) == .respond)
        #expect(machine.isForwarding)
        let local = machine.localResponse(for: .upstreamResetBeforeResponse("eof"), drainSaysClose: false)
        #expect(!local.close && local.completeNow)
        #expect(machine.responseEnd() == nil)
        #expect(machine.responseComplete() == .keepAlive)
    }

    /// An upstream failure after the response began aborts, without asking the policy.
    @Test func upstreamFailedAfterResponseAborts() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed(replay: 100)) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        let retry = Probe(true)
        #expect(machine.upstreamFailed(retry: retry.ask()) == .abort)
        #expect(retry.asked == 0)
        #expect(machine.isClosed)
        #expect(machine.responseEnd() == nil)
        #expect(machine.upstreamConnected() == .decline)
    }

    /// `retry-on-5xx`: a retried 502/503 drops the response and leases again, asking the policy
    /// but not the drain; a 503 the policy does not retry is sent.
    @Test func retryOn5xx() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed(replay: 100)) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        let retry = Probe(true)
        let drain = Probe(false)
        #expect(machine.responseHead(status: 503, retry: retry.ask(), drainSaysClose: drain.ask()) == .retry)
        #expect(retry.asked == 1 && drain.asked == 0)
        #expect(machine.isLeasing)
        #expect(!machine.responseStarted)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
        #expect(machine.responseHead(status: 502, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseStarted)
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
    }

    // MARK: - Expect: 100-continue

    /// `100 Continue` goes out when the connection is ready and the body has not come yet.
    @Test func expectsContinue() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(body: true, expectsContinue: true), verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: true, upgrade: false, keepQueuedForReplay: false))
        // The upstream's own 100 is never forwarded.
        #expect(!machine.interimResponse(isContinue: true))
    }

    /// A client that sent its body whole anyway gets no `100`.
    @Test func expectsContinueWithBodyAlreadyRead() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(body: true, expectsContinue: true), verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestBody(bytes: 3) == .queue)
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
    }

    /// After a retry the `100` went out already: not a second one.
    @Test func noSecondContinueAfterARetry() {
        var failed = Machine()
        #expect(failed.requestHead(Self.head(body: true, expectsContinue: true), verdict: Self.routed(replay: 100)) == .lease(upgrade: false))
        #expect(failed.upstreamConnected() == .startForwarding(sendContinue: true, upgrade: false, keepQueuedForReplay: true))
        #expect(failed.upstreamFailed(retry: true) == .retry)
        #expect(failed.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))

        var retried5xx = Machine()
        #expect(retried5xx.requestHead(Self.head(body: true, expectsContinue: true), verdict: Self.routed(replay: 100)) == .lease(upgrade: false))
        #expect(retried5xx.upstreamConnected() == .startForwarding(sendContinue: true, upgrade: false, keepQueuedForReplay: true))
        #expect(retried5xx.responseHead(status: 503, retry: true, drainSaysClose: false) == .retry)
        #expect(retried5xx.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: true))
    }

    /// A connect that failed sent nothing to the client: the `100` is still owed on the retry's connection.
    @Test func continueStillOwedAfterAConnectRetry() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(body: true, expectsContinue: true), verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.upstreamConnectFailed(retry: true) == .retry)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: true, upgrade: false, keepQueuedForReplay: false))
    }

    /// An HTTP/1.0 client gets no interim heads, and its response closes.
    @Test func http10() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(http10: true, keepAlive: true), verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.clientIsHTTP10)
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(!machine.interimResponse(isContinue: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: true))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .close(linger: false))
    }

    // MARK: - Close after the response

    /// `Connection: close` from the client, or the drain's mark, closes after the response; the drain is asked once.
    @Test(arguments: [(false, false), (true, true), (false, true)])
    func closeAfterResponse(_ keepAlive: Bool, _ drainSaysClose: Bool) {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(keepAlive: keepAlive), verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        let drain = Probe(drainSaysClose)
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: drain.ask()) == .send(close: true))
        #expect(drain.asked == 1)
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .close(linger: false))
        #expect(machine.isClosed)
    }

    /// The upstream answered before the request's body ended: the response closes, lingering (the
    /// client may still be sending), and the upstream connection is not reused.
    @Test func responseBeforeRequestEndLingers() {
        var machine = Self.machine(in: .forwarding)
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: true))
        #expect(machine.responseEnd() == false)
        #expect(machine.responseComplete() == .close(linger: true))
        #expect(machine.isClosed)
    }

    /// The same with a client that half-closed: nothing to linger for.
    @Test func responseBeforeRequestEndAfterHalfCloseDoesNotLinger() {
        var machine = Self.machine(in: .forwarding)
        #expect(machine.inputClosed() == .none)
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: true))
        #expect(machine.responseEnd() == false)
        #expect(machine.responseComplete() == .close(linger: false))
    }

    /// A half-closed client keeps its keep-alive response; the connection closes once the queue is served.
    @Test func halfClosedClientClosesAfterTheQueue() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.inputClosed() == .none)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.queueServed() == nil)
        #expect(machine.afterQueue() == .close)
    }

    /// With a pipelined request behind it, the half-closed client is served first.
    @Test func halfClosedClientWithPipelinedRequest() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)  // the second head
        #expect(machine.partReceived() == .queue)  // its end
        #expect(machine.inputClosed() == .none)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        // Idle with parts queued: a half-close here would wait for them.
        #expect(!machine.isIdle)
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestEnd() == .queue)
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.queueServed() == nil)
        #expect(machine.afterQueue() == .resumeReading)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.afterQueue() == .close)
    }

    /// A half-close while idle with parts queued waits for them.
    @Test func halfCloseIdleWithQueueWaits() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.inputClosed() == .none)
        #expect(machine.afterQueue() == .resumeReading)
    }

    // MARK: - Local responses

    /// The local response's close: the request read whole, with keep-alive, no closing error and no
    /// drain, keeps the connection; anything else closes. It is always complete at once.
    @Test func localResponseCombinations() {
        struct Case {
            var http10 = false
            var keepAlive = true
            var ended = true
            var error = ProxyError.upstreamConnectFailed("refused")
            var drain = false
            var close: Bool
            var completion: Machine.Completion
        }
        let cases = [
            Case(close: false, completion: .keepAlive),
            Case(drain: true, close: true, completion: .close(linger: false)),
            Case(error: .expectationFailed, close: true, completion: .close(linger: false)),
            Case(error: .upstreamTimeout, close: false, completion: .keepAlive),
            Case(http10: true, close: true, completion: .close(linger: false)),
            Case(keepAlive: false, close: true, completion: .close(linger: false)),
            Case(ended: false, close: true, completion: .close(linger: true)),
            Case(ended: false, error: .bodyTooLarge(limit: 1), close: true, completion: .close(linger: true)),
        ]
        for (index, c) in cases.enumerated() {
            var machine = Machine()
            #expect(machine.requestHead(Self.head(http10: c.http10, keepAlive: c.keepAlive, body: !c.ended), verdict: Self.routed()) == .lease(upgrade: false))
            if c.ended { #expect(machine.requestEnd() == .queue) }
            #expect(machine.upstreamConnectFailed(retry: false) == .respond)
            let drain = Probe(c.drain)
            let local = machine.localResponse(for: c.error, drainSaysClose: drain.ask())
            #expect(drain.asked == 1, "case \(index)")
            #expect(local.close == c.close, "case \(index)")
            #expect(local.completeNow, "case \(index)")
            #expect(machine.responseStarted)
            #expect(!machine.isForwarding && !machine.isLeasing)
            #expect(machine.responseComplete() == c.completion, "case \(index)")
        }
    }

    /// The rest of a request answered locally is discarded; its end completes nothing (the response
    /// closed the connection).
    @Test func bodyAfterLocalResponseIsDiscarded() {
        var machine = Self.machine(in: .respondedLocally)
        #expect(machine.requestBody(bytes: 10) == .discard)
        #expect(machine.requestEnd() == .none)
        #expect(machine.awaitsResponseEnd)
        #expect(machine.partReceived() == .queue)
        #expect(machine.responseComplete() == .close(linger: false))
        #expect(machine.queuedParts == 0)
        #expect(machine.takeQueuedPart() == false)
    }

    // MARK: - Timeouts

    /// A head begun and not finished: 408 with a lingering close.
    @Test func headTimedOutAfterBytes() {
        var machine = Machine()
        #expect(machine.bytesWithoutPart() == true)
        #expect(machine.headTimedOut() == .respond)
        #expect(!machine.requestEnded)
        let local = machine.localResponse(for: .requestTimeout("head"), drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.responseComplete() == .close(linger: true))
    }

    /// After a keep-alive response the head clock restarts: a timeout without new bytes closes silently.
    @Test func headTimedOutAfterKeepAliveResponse() {
        var machine = Machine()
        #expect(machine.bytesWithoutPart() == true)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.headTimedOut() == .close)
        #expect(machine.bytesWithoutPart() == true)
        #expect(machine.headTimedOut() == .respond)
    }

    /// Idle with a head begun but pipelined parts queued: the head is theirs, close.
    @Test func headTimedOutWithQueueCloses() {
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.bytesWithoutPart() == true)
        #expect(machine.headTimedOut() == .close)
    }

    /// A stalled body: 408 before the response, an abort after.
    @Test func bodyTimedOut() {
        var leasing = Self.machine(in: .leasing)
        #expect(leasing.bodyTimedOut() == .fail)
        #expect(leasing.fail(.requestTimeout("body")) == .respond)
        let local = leasing.localResponse(for: .requestTimeout("body"), drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(leasing.responseComplete() == .close(linger: true))

        var responding = Self.machine(in: .responding)
        #expect(responding.bodyTimedOut() == .fail)
        #expect(responding.fail(.requestTimeout("body")) == .abort)
        #expect(responding.isClosed)
    }

    // MARK: - Pipelining

    /// Parts behind a request read whole wait, and are taken in order once its response is complete.
    @Test func pipelinedPartsQueueAndAreTakenInOrder() {
        var machine = Machine()
        #expect(machine.partReceived() == .handle)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.partReceived() == .handle)
        #expect(machine.requestEnd() == .queue)
        // Two more GETs: head, end, head, end.
        for count in 1...4 {
            #expect(machine.partReceived() == .queue)
            #expect(machine.queuedParts == count)
        }
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        // The second GET: its head, then its end, after which it waits for its response.
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestEnd() == .queue)
        #expect(machine.queuedParts == 2)
        #expect(machine.takeQueuedPart() == false)
        // A part that arrives now queues behind the others, even once the response is complete.
        #expect(machine.partReceived() == .queue)
        #expect(machine.queueServed() == nil)
        #expect(machine.afterQueue() == .resumeReading)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.partReceived() == .queue)
        #expect(machine.queuedParts == 4)
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestEnd() == .queue)
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.queuedParts == 2)
    }

    /// A response that closes drops the queue: the pipelined requests are not served.
    @Test func closingResponseDropsTheQueue() {
        var machine = Machine()
        #expect(machine.requestHead(Self.head(keepAlive: false), verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)
        #expect(machine.partReceived() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: true))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .close(linger: false))
        #expect(machine.queuedParts == 0)
        #expect(machine.takeQueuedPart() == false)
    }

    /// Bad bytes behind a request read whole wait for its response; once the queue is served and
    /// nothing is in progress, they are answered.
    @Test func deferredParseErrorAnsweredWhenIdle() {
        let error = ProxyError.badRequest("invalid request line")
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)  // a pipelined head
        #expect(machine.partReceived() == .queue)  // its end
        #expect(machine.parseError(error) == nil)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.queueServed() == nil)
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestEnd() == .queue)
        // The second request's response is owed first.
        #expect(machine.queueServed() == nil)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.queueServed() == .respond(error))
        #expect(!machine.requestEnded)
        // Once.
        #expect(machine.queueServed() == nil)
        let local = machine.localResponse(for: error, drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.responseComplete() == .close(linger: true))
    }

    /// Bad bytes that cut a pipelined request short fail that request once it is in progress,
    /// leasing or forwarding.
    @Test(arguments: [false, true])
    func deferredParseErrorFailsTheRequestItCutShort(_ connected: Bool) {
        let error = ProxyError.badRequest("invalid chunk size")
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)  // a pipelined POST's head
        #expect(machine.partReceived() == .queue)  // some of its body
        #expect(machine.parseError(error) == nil)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestHead(Self.post, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestBody(bytes: 5) == .queue)
        #expect(machine.takeQueuedPart() == false)
        if connected {
            #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        }
        #expect(machine.queueServed() == .fail(error))
        #expect(machine.fail(error) == .respond)
        let local = machine.localResponse(for: error, drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.responseComplete() == .close(linger: true))
    }

    /// A pipelined request answered locally closes the connection: the deferred error is then just a close.
    @Test func deferredParseErrorAfterClose() {
        let error = ProxyError.badRequest("invalid header")
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.partReceived() == .queue)
        #expect(machine.parseError(error) == nil)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.requestHead(Self.get, verdict: .rejected(.foreignAbsoluteTarget)) == .respond(.foreignAbsoluteTarget))
        let local = machine.localResponse(for: .foreignAbsoluteTarget, drainSaysClose: false)
        #expect(local.close && local.completeNow)
        #expect(machine.responseComplete() == .close(linger: true))
        #expect(machine.takeQueuedPart() == false)
        #expect(machine.queueServed() == .close)
    }

    // MARK: - Reading

    /// Reading pauses while the queue is full, in any state, until a part is taken.
    @Test func readHeldWhileQueueIsFull() {
        #expect(Machine.maxQueuedParts == 64)
        var machine = Machine()
        #expect(machine.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.requestEnd() == .queue)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        for _ in 0..<(Machine.maxQueuedParts - 1) { #expect(machine.partReceived() == .queue) }
        #expect(machine.readRequested(upstreamWritable: true) == true)
        #expect(machine.partReceived() == .queue)
        #expect(machine.queuedParts == Machine.maxQueuedParts)
        #expect(machine.readRequested(upstreamWritable: true) == false)
        #expect(machine.releaseHeldRead() == false)
        #expect(machine.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(machine.responseEnd() == true)
        #expect(machine.responseComplete() == .keepAlive)
        // Idle, but the queue is still full.
        #expect(machine.readRequested(upstreamWritable: true) == false)
        #expect(machine.releaseHeldRead() == false)
        #expect(machine.takeQueuedPart() == true)
        #expect(machine.releaseHeldRead() == true)
        #expect(machine.releaseHeldRead() == false)
        #expect(machine.readRequested(upstreamWritable: true) == true)
    }

    /// Held while leasing, released once the connection is ready; held again while it cannot take more.
    @Test func readHeldWhileLeasingAndWhileNotWritable() {
        var machine = Machine()
        #expect(machine.releaseHeldRead() == false)
        #expect(machine.readRequested(upstreamWritable: true) == true)
        #expect(machine.requestHead(Self.post, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(machine.readRequested(upstreamWritable: true) == false)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.releaseHeldRead() == true)
        #expect(machine.readRequested(upstreamWritable: true) == true)
        #expect(machine.readRequested(upstreamWritable: false) == false)
        #expect(machine.readRequested(upstreamWritable: false) == false)
        #expect(machine.releaseHeldRead() == true)
        #expect(machine.releaseHeldRead() == false)
    }

    // MARK: - Closing

    /// The client's abort is counted only for an exchange forwarded with a body or a begun response.
    @Test func closedCountsClientAborts() {
        var get = Machine()
        #expect(get.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(get.requestEnd() == .queue)
        #expect(get.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        var getStarted = get
        #expect(get.closed() == false)  // waiting for a response head: not the client's abort
        #expect(getStarted.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(getStarted.closed() == true)

        var post = Self.machine(in: .leasing)
        #expect(post.closed() == false)  // nothing forwarded yet
        var forwarded = Self.machine(in: .forwarding)
        #expect(forwarded.closed() == true)

        var answered = Machine()
        #expect(answered.requestHead(Self.get, verdict: Self.routed()) == .lease(upgrade: false))
        #expect(answered.requestEnd() == .queue)
        #expect(answered.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(answered.responseHead(status: 200, retry: false, drainSaysClose: false) == .send(close: false))
        #expect(answered.responseEnd() == true)
        #expect(answered.responseComplete() == .keepAlive)
        #expect(answered.closed() == false)
    }

    /// Where no retry is possible, the retry policy is never asked.
    @Test func retryPolicyAskedOnlyWhereARetryIsPossible() {
        let retry = Probe(true)
        for phase in Phase.allCases {
            var machine = Self.machine(in: phase)
            if phase != .leasing { _ = machine.upstreamConnectFailed(retry: retry.ask()) }
            if phase != .forwarding { _ = machine.upstreamFailed(retry: retry.ask()) }
            var again = Self.machine(in: phase)
            if phase != .forwarding && phase != .responding {
                _ = again.responseHead(status: 503, retry: retry.ask(), drainSaysClose: false)
            }
        }
        #expect(retry.asked == 0)
        // And where one is possible, asked once per decision.
        var machine = Self.machine(in: .leasing)
        #expect(machine.upstreamConnectFailed(retry: retry.ask()) == .retry)
        #expect(machine.upstreamConnected() == .startForwarding(sendContinue: false, upgrade: false, keepQueuedForReplay: false))
        #expect(machine.upstreamFailed(retry: retry.ask()) == .retry)
        #expect(retry.asked == 2)
    }
}
