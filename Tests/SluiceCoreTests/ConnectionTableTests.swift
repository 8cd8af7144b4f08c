import SluiceCore
import Testing

@Suite struct ConnectionTableTests {
    typealias Table = ConnectionTable<MockClock.Instant>
    typealias Instant = MockClock.Instant

    let t0 = Instant(offset: .seconds(1000))
    let timeouts = Table.Timeouts(requestHeader: .seconds(10), idle: .seconds(60), drainQuiet: .milliseconds(250))

    func id(_ raw: UInt64) -> ConnectionID { ConnectionID(rawValue: raw) }

    func makeTable() -> Table { Table(timeouts: self.timeouts) }

    /// Adds connections with a throwaway generator (the table uses randomness only while propagating).
    func add(_ table: inout Table, _ raw: UInt64, _ proto: ConnectionProtocol = .http1, at now: Instant) {
        var rng = SplitMix64(seed: raw)
        table.add(self.id(raw), protocol: proto, peer: "10.0.0.\(raw):5\(raw)", now: now, using: &rng)
    }

    /// Sweep results as a dictionary, checking no connection is named twice.
    func sweep(_ table: inout Table, at now: Instant) -> [ConnectionID: Table.SweepReason] {
        let closes = table.sweep(now: now)
        let byID = Dictionary(closes, uniquingKeysWith: { first, _ in first })
        #expect(byID.count == closes.count, "a connection is returned once")
        return byID
    }

    // MARK: - Entries and counts

    /// A new connection is an idle entry with its protocol, peer and accept time, and nothing in flight.
    @Test func addedConnectionIsIdleWithItsDetails() {
        var table = makeTable()
        #expect(table.isEmpty)
        add(&table, 1, .http2, at: t0)
        let entry = table[id(1)]
        #expect(entry?.id == id(1))
        #expect(entry?.protocol == .http2)
        #expect(entry?.peer == "10.0.0.1:51")
        #expect(entry?.acceptedAt == t0)
        #expect(entry?.lastActivity == t0)
        #expect(entry?.inFlight == 0)
        #expect(entry?.readingHeadSince == nil)
        #expect(entry?.closeAt == nil)
        #expect(entry?.closing == false)
        #expect(entry?.requestsServed == 0)
        #expect(entry?.state == .idle)
        #expect(table.count == 1)
        #expect(!table.isEmpty)
        #expect(Set(table.ids) == [id(1)])
    }

    /// Removing returns the entry once; removing an unknown connection returns nil.
    @Test func removeReturnsTheEntryOnce() {
        var table = makeTable()
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        #expect(table.remove(id(1))?.id == id(1))
        #expect(table.remove(id(1)) == nil)
        #expect(table[id(1)] == nil)
        #expect(table.count == 1)
        #expect(Set(table.ids) == [id(2)])
    }

    /// A request goes idle → active (head arriving) → active (in flight) → idle, counting what was served.
    @Test func requestLifecycleMovesTheEntryThroughItsStates() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestHeadBegan(id(1), now: t0 + .seconds(1))
        #expect(table[id(1)]?.state == .active)
        #expect(table[id(1)]?.readingHeadSince == t0 + .seconds(1))
        #expect(table[id(1)]?.lastActivity == t0 + .seconds(1))
        table.requestHeadBegan(id(1), now: t0 + .seconds(2))
        #expect(table[id(1)]?.readingHeadSince == t0 + .seconds(1), "the head timer runs from the first byte")
        #expect(table[id(1)]?.lastActivity == t0 + .seconds(2))
        table.requestStarted(id(1), now: t0 + .seconds(3))
        #expect(table[id(1)]?.readingHeadSince == nil)
        #expect(table[id(1)]?.inFlight == 1)
        #expect(table[id(1)]?.state == .active)
        #expect(table[id(1)]?.lastActivity == t0 + .seconds(3))
        table.requestFinished(id(1), now: t0 + .seconds(4))
        #expect(table[id(1)]?.inFlight == 0)
        #expect(table[id(1)]?.requestsServed == 1)
        #expect(table[id(1)]?.state == .idle)
        #expect(table[id(1)]?.lastActivity == t0 + .seconds(4))
    }

    /// Pipelined requests count in flight one by one; an extra finish never makes the count negative.
    @Test func inFlightCountsPipelinedRequestsAndNeverGoesNegative() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        table.requestStarted(id(1), now: t0)
        #expect(table[id(1)]?.inFlight == 2)
        table.requestFinished(id(1), now: t0)
        #expect(table[id(1)]?.inFlight == 1)
        #expect(table[id(1)]?.state == .active)
        table.requestFinished(id(1), now: t0)
        table.requestFinished(id(1), now: t0)
        #expect(table[id(1)]?.inFlight == 0)
        #expect(table[id(1)]?.requestsServed == 3)
    }

    /// Events for a connection the table does not know change nothing and add nothing.
    @Test func eventsForUnknownConnectionsAreIgnored() {
        var table = makeTable()
        table.requestHeadBegan(id(9), now: t0)
        table.requestStarted(id(9), now: t0)
        table.requestFinished(id(9), now: t0)
        table.markClosing(id(9))
        table.setProtocol(id(9), .http2)
        #expect(table.isEmpty)
        #expect(table.responseShouldClose(id(9), now: t0), "an unknown connection closes")
    }

    /// Marking a connection closing makes it closing whatever it is doing, and its responses close.
    @Test func markClosingMakesTheConnectionClosing() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        #expect(!table.responseShouldClose(id(1), now: t0))
        table.markClosing(id(1))
        #expect(table[id(1)]?.state == .closing)
        #expect(table[id(1)]?.closing == true)
        #expect(table.responseShouldClose(id(1), now: t0))
    }

    /// Changing the protocol keeps every other field.
    @Test func setProtocolKeepsEveryOtherField() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0 + .seconds(1))
        table.requestFinished(id(1), now: t0 + .seconds(2))
        table.requestStarted(id(1), now: t0 + .seconds(3))
        table.markClosing(id(1))
        table.setProtocol(id(1), .http2)
        let entry = table[id(1)]
        #expect(entry?.protocol == .http2)
        #expect(entry?.peer == "10.0.0.1:51")
        #expect(entry?.acceptedAt == t0)
        #expect(entry?.lastActivity == t0 + .seconds(3))
        #expect(entry?.inFlight == 1)
        #expect(entry?.requestsServed == 1)
        #expect(entry?.closing == true)
    }

    /// counts() totals connections by state and protocol and sums requests in flight.
    @Test func countsTotalByStateAndProtocol() {
        var table = makeTable()
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        add(&table, 3, .http2, at: t0)
        add(&table, 4, at: t0)
        table.requestStarted(id(2), now: t0)
        table.requestStarted(id(2), now: t0)
        table.requestStarted(id(3), now: t0)
        table.markClosing(id(4))
        var expected = Table.Counts()
        expected.total = 4
        expected.byState = [.idle: 1, .active: 2, .closing: 1]
        expected.byProtocol = [.http1: 3, .http2: 1]
        expected.requestsInFlight = 3
        #expect(table.counts() == expected)
        #expect(makeTable().counts() == Table.Counts())
    }

    /// Counts from several loops add up field by field.
    @Test func countsFromSeveralLoopsAddUp() {
        var a = Table.Counts()
        a.total = 2
        a.byState = [.idle: 2]
        a.byProtocol = [.http1: 2]
        var b = Table.Counts()
        b.total = 3
        b.byState = [.idle: 1, .closing: 2]
        b.byProtocol = [.http2: 3]
        b.requestsInFlight = 4
        var sum = Table.Counts()
        sum.total = 5
        sum.byState = [.idle: 3, .closing: 2]
        sum.byProtocol = [.http1: 2, .http2: 3]
        sum.requestsInFlight = 4
        #expect(a + b == sum)
        a.tunnelsByProtocol = [.http1: 2]
        b.tunnelsByProtocol = [.http1: 1, .http2: 5]
        sum.tunnelsByProtocol = [.http1: 3, .http2: 5]
        #expect(a + b == sum)
    }

    /// Adding a connection ID twice is a programming error.
    @Test func addingTheSameIDTwiceIsAPreconditionFailure() async {
        await #expect(processExitsWith: .failure) {
            var table = ConnectionTable<ContinuousClock.Instant>(
                timeouts: .init(requestHeader: .seconds(1), idle: .seconds(1), drainQuiet: .seconds(1)))
            var rng = SystemRandomNumberGenerator()
            let now = ContinuousClock.now
            table.add(ConnectionID(rawValue: 1), protocol: .http1, peer: "a", now: now, using: &rng)
            table.add(ConnectionID(rawValue: 1), protocol: .http1, peer: "a", now: now, using: &rng)
        }
    }

    // MARK: - Propagating

    /// Outside a drain no response carries Connection: close.
    @Test func responsesDoNotCloseWhileServingNormally() {
        var table = makeTable()
        add(&table, 1, at: t0)
        #expect(!table.responseShouldClose(id(1), now: t0 + .seconds(86400)))
    }

    /// Propagating gives every HTTP/1 connection a close moment inside the first 80% of the window,
    /// spread across it, and sends HTTP/2 connections the shutdown notice instead.
    @Test(arguments: [UInt64(1), 42, 0xDEAD_BEEF])
    func propagatingSpreadsHTTP1ClosesOverTheFirstEightyPercent(seed: UInt64) {
        var table = makeTable()
        for raw in UInt64(1)...200 { add(&table, raw, at: t0 - .seconds(30)) }
        for raw in UInt64(201)...203 { add(&table, raw, .http2, at: t0 - .seconds(30)) }
        var rng = SplitMix64(seed: seed)
        let actions = table.beginPropagating(now: t0, until: t0 + .seconds(10), using: &rng)

        #expect(actions.count == 3)
        #expect(Dictionary(actions, uniquingKeysWith: { $1 }) == [id(201): .sendShutdownNotice, id(202): .sendShutdownNotice, id(203): .sendShutdownNotice])
        let windowEnd = t0 + .seconds(8)
        let closeAts = (UInt64(1)...200).compactMap { table[id($0)]?.closeAt }
        #expect(closeAts.count == 200)
        #expect(closeAts.allSatisfy { $0 >= t0 && $0 <= windowEnd })
        #expect(closeAts.min()! < t0 + .seconds(1), "some clients move away early")
        #expect(closeAts.max()! > t0 + .seconds(7), "some clients stay until late")
        let closingByHalfway = (UInt64(1)...200).filter { table.responseShouldClose(id($0), now: t0 + .seconds(4)) }.count
        #expect((60...140).contains(closingByHalfway), "about half close by halfway: \(closingByHalfway)")
        for raw in UInt64(1)...200 {
            let closeAt = table[id(raw)]!.closeAt!
            #expect(table.responseShouldClose(id(raw), now: closeAt))
            if closeAt > t0 { #expect(!table.responseShouldClose(id(raw), now: closeAt - .nanoseconds(1))) }
        }
        #expect((UInt64(1)...200).allSatisfy { table.responseShouldClose(id($0), now: windowEnd) })
        #expect((UInt64(201)...203).allSatisfy { table[id($0)]?.closeAt == nil && !table.responseShouldClose(id($0), now: windowEnd) })
        #expect(table.counts().byState == [.idle: 203], "propagating closes nothing by itself")
    }

    /// A table of 20 HTTP/1 connections that has begun propagating with `seed`.
    func propagatingTable(seed: UInt64) -> Table {
        var table = makeTable()
        for raw in UInt64(1)...20 { add(&table, raw, at: t0) }
        var rng = SplitMix64(seed: seed)
        _ = table.beginPropagating(now: t0, until: t0 + .seconds(10), using: &rng)
        return table
    }

    func closeAts(_ table: Table) -> [Instant?] { (UInt64(1)...20).map { table[id($0)]?.closeAt } }

    /// The same seed draws the same close moments; another seed draws others.
    @Test func propagatingDrawsTheSameMomentsForASeed() {
        let moments = { (table: Table) in self.closeAts(table).compactMap { $0 }.sorted() }
        let first = propagatingTable(seed: 7)
        let second = propagatingTable(seed: 7)
        let other = propagatingTable(seed: 8)
        #expect(moments(first).count == 20)
        #expect(moments(first) == moments(second))
        #expect(moments(first) != moments(other))
    }

    /// The same seed gives each connection the same close moment, so a drain can be replayed exactly.
    ///
    /// Known issue: `beginPropagating` walks `entries.keys` of a `Dictionary`, whose order depends on the
    /// table's per-instance hash seed (its storage address), so which connection gets which moment differs
    /// between two tables built alike: the injected generator does not make the outcome reproducible.
    /// (Both tables are kept alive so they cannot share an address; SWIFT_DETERMINISTIC_HASHING hides it.)
    @Test func propagatingGivesEachConnectionTheSameMomentForASeed() {
        let first = propagatingTable(seed: 7)
        let second = propagatingTable(seed: 7)
        #expect(closeAts(first) == closeAts(second))
    }

    /// A connection accepted while propagating gets a close moment between its accept and the window's end.
    @Test func connectionAddedWhilePropagatingClosesWithinTheRestOfTheWindow() {
        var table = makeTable()
        var rng = SplitMix64(seed: 3)
        #expect(table.beginPropagating(now: t0, until: t0 + .seconds(10), using: &rng).isEmpty)
        for raw in UInt64(1)...50 {
            var connectionRNG = SplitMix64(seed: raw)
            table.add(id(raw), protocol: .http1, peer: "p", now: t0 + .seconds(2), using: &connectionRNG)
        }
        let closeAts = (UInt64(1)...50).compactMap { table[id($0)]?.closeAt }
        #expect(closeAts.count == 50)
        #expect(closeAts.allSatisfy { $0 >= t0 + .seconds(2) && $0 <= t0 + .seconds(8) })
        #expect(Set(closeAts).count > 1)
    }

    /// A connection accepted after the window's end closes after its first response.
    @Test func connectionAddedAfterTheWindowClosesAtOnce() {
        var table = makeTable()
        var rng = SplitMix64(seed: 3)
        _ = table.beginPropagating(now: t0, until: t0 + .seconds(10), using: &rng)
        add(&table, 1, at: t0 + .seconds(9))
        #expect(table[id(1)]?.closeAt == t0 + .seconds(9))
        #expect(table.responseShouldClose(id(1), now: t0 + .seconds(9)))
    }

    /// With no propagation window (until == now) every HTTP/1 connection closes after its next response.
    @Test func emptyPropagationWindowClosesAtOnce() {
        var table = makeTable()
        add(&table, 1, at: t0)
        var rng = SplitMix64(seed: 3)
        _ = table.beginPropagating(now: t0, until: t0, using: &rng)
        #expect(table[id(1)]?.closeAt == t0)
        #expect(table.responseShouldClose(id(1), now: t0))
    }

    // MARK: - Draining

    /// Draining closes idle HTTP/1 connections quiet for the quiet period, sends HTTP/2 the final GOAWAY,
    /// and leaves busy, head-reading, recently active and already-closing connections alone.
    @Test func beginDrainingClosesOnlyQuietIdleConnectionsAndSendsFinalGoAway() {
        var table = makeTable()
        add(&table, 1, at: t0 - .seconds(5))  // idle, quiet for 5 s
        add(&table, 2, at: t0 - .seconds(5))  // served, then quiet for exactly the quiet period
        table.requestStarted(id(2), now: t0 - .seconds(1))
        table.requestFinished(id(2), now: t0 - .milliseconds(250))
        add(&table, 3, at: t0 - .seconds(5))  // finished a response 100 ms ago
        table.requestStarted(id(3), now: t0 - .seconds(1))
        table.requestFinished(id(3), now: t0 - .milliseconds(100))
        add(&table, 4, at: t0 - .seconds(5))  // request in flight
        table.requestStarted(id(4), now: t0 - .seconds(5))
        add(&table, 5, at: t0 - .seconds(5))  // reading a head
        table.requestHeadBegan(id(5), now: t0 - .seconds(3))
        add(&table, 6, .http2, at: t0 - .seconds(5))
        add(&table, 7, at: t0 - .seconds(5))  // already closing
        table.markClosing(id(7))

        let actions = table.beginDraining(now: t0)
        #expect(actions.count == 3)
        #expect(Dictionary(actions, uniquingKeysWith: { $1 }) == [id(1): .close, id(2): .close, id(6): .sendFinalGoAway])
        #expect(table[id(1)]?.state == .closing)
        #expect(table[id(2)]?.state == .closing)
        #expect(table[id(3)]?.state == .idle)
        #expect(table[id(4)]?.state == .active)
        #expect(table[id(5)]?.state == .active)
        #expect(table[id(6)]?.state == .idle)
        for raw in UInt64(1)...7 {
            #expect(table[id(raw)]?.closeAt == t0)
            #expect(table.responseShouldClose(id(raw), now: t0), "every response from now on closes: \(raw)")
        }
    }

    /// A connection accepted while draining closes after its first response.
    @Test func connectionAddedWhileDrainingClosesAfterItsFirstResponse() {
        var table = makeTable()
        #expect(table.beginDraining(now: t0).isEmpty)
        add(&table, 1, at: t0 + .seconds(1))
        #expect(table[id(1)]?.closeAt == t0 + .seconds(1))
        #expect(table[id(1)]?.state == .idle)
        #expect(table.responseShouldClose(id(1), now: t0 + .seconds(1)))
    }

    /// Draining after propagating replaces every pending close moment with now.
    @Test func drainingAfterPropagatingClosesEveryResponseAtOnce() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        var rng = SplitMix64(seed: 11)
        _ = table.beginPropagating(now: t0, until: t0 + .seconds(100), using: &rng)
        _ = table.beginDraining(now: t0 + .seconds(1))
        #expect(table[id(1)]?.closeAt == t0 + .seconds(1))
        #expect(table.responseShouldClose(id(1), now: t0 + .seconds(1)))
    }

    // MARK: - Sweep

    /// A partial head that does not complete within the header timeout is closed, not a moment before.
    @Test func sweepClosesAPartialHeadAfterTheHeaderTimeout() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestHeadBegan(id(1), now: t0 + .seconds(1))
        table.requestHeadBegan(id(1), now: t0 + .seconds(9))  // more bytes do not restart the timer
        #expect(sweep(&table, at: t0 + .seconds(11) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(11)) == [id(1): .requestHeaderTimeout])
        #expect(table[id(1)]?.state == .closing)
    }

    /// A new connection that sends nothing is closed by the header timeout, counted from accept.
    @Test func sweepClosesASilentNewConnectionAfterTheHeaderTimeout() {
        var table = makeTable()
        add(&table, 1, at: t0)
        #expect(sweep(&table, at: t0 + .seconds(10) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(10)) == [id(1): .requestHeaderTimeout])
    }

    /// After a served request the idle timeout applies, not the header timeout.
    @Test func sweepClosesAnIdleKeepAliveConnectionAfterTheIdleTimeout() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0 + .seconds(1))
        table.requestFinished(id(1), now: t0 + .seconds(2))
        #expect(sweep(&table, at: t0 + .seconds(30)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(62) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(62)) == [id(1): .idleTimeout])
    }

    /// A head begun on a keep-alive connection is timed by the header timeout again.
    @Test func sweepTimesASecondRequestHeadByTheHeaderTimeout() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        table.requestFinished(id(1), now: t0)
        table.requestHeadBegan(id(1), now: t0 + .seconds(5))
        #expect(sweep(&table, at: t0 + .seconds(15)) == [id(1): .requestHeaderTimeout])
    }

    /// A request body that stops arriving is closed after the body timeout, counted from its last
    /// piece; each piece restarts it, and a body read whole (or a finished request) ends it.
    @Test func sweepClosesAStalledRequestBodyAfterTheBodyTimeout() {
        var table = Table(timeouts: .init(requestHeader: .seconds(10), idle: .seconds(60), drainQuiet: .milliseconds(250), requestBody: .seconds(5)))
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        add(&table, 3, at: t0)
        for raw in 1...3 as ClosedRange<UInt64> {
            table.requestStarted(id(raw), now: t0)
            table.requestBodyRead(id(raw), now: t0)
        }
        table.requestBodyRead(id(1), now: t0 + .seconds(4))
        table.requestBodyEnded(id(2))
        #expect(sweep(&table, at: t0 + .seconds(5) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(5)) == [id(3): .requestBodyTimeout])
        #expect(sweep(&table, at: t0 + .seconds(9)) == [id(1): .requestBodyTimeout])
        // The request whose body ended waits for its response, untimed (the upstream's timeout applies).
        #expect(sweep(&table, at: t0 + .seconds(50)).isEmpty)
        table.requestFinished(id(2), now: t0 + .seconds(50))
        #expect(table[id(2)]?.bodyReadAt == nil)
    }

    /// Once draining has begun, a connection holding a partial request head (slowloris) is closed
    /// after the grace period, counted from the drain or from the head's first byte if later; a
    /// request whose head arrived (a slow upload) is not touched.
    @Test func drainClosesPartialHeadsAfterTheGracePeriod() {
        var table = Table(timeouts: .init(requestHeader: .seconds(30), idle: .seconds(60), drainQuiet: .milliseconds(250), drainPartialHead: .seconds(1)))
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        table.requestHeadBegan(id(1), now: t0)
        table.requestStarted(id(2), now: t0)
        table.requestBodyRead(id(2), now: t0)
        // Not before the drain: the header timeout (30 s) still rules.
        #expect(sweep(&table, at: t0 + .seconds(5)).isEmpty)
        let drainAt = t0 + .seconds(10)
        #expect(table.beginDraining(now: drainAt).isEmpty)
        // Accepted from the queue as the listener closes; its head begins half a second later.
        add(&table, 3, at: drainAt)
        table.requestHeadBegan(id(3), now: drainAt + .milliseconds(500))
        #expect(sweep(&table, at: drainAt + .seconds(1) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: drainAt + .seconds(1)) == [id(1): .drainPartialHead])
        #expect(sweep(&table, at: drainAt + .milliseconds(1500)) == [id(3): .drainPartialHead])
        table.requestBodyRead(id(2), now: drainAt + .seconds(20))
        #expect(sweep(&table, at: drainAt + .seconds(21)).isEmpty)
    }

    /// A connection with a request in flight is never swept, in normal mode or while draining.
    @Test func sweepNeverClosesABusyConnection() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        #expect(sweep(&table, at: t0 + .seconds(86400)).isEmpty)
        _ = table.beginDraining(now: t0 + .seconds(86400))
        #expect(sweep(&table, at: t0 + .seconds(2 * 86400)).isEmpty)
        #expect(table[id(1)]?.state == .active)
    }

    /// HTTP/2 connections are never swept (their own machine times them).
    @Test func sweepNeverClosesHTTP2Connections() {
        var table = makeTable()
        add(&table, 1, .http2, at: t0)
        #expect(sweep(&table, at: t0 + .seconds(86400)).isEmpty)
        _ = table.beginDraining(now: t0 + .seconds(86400))
        #expect(sweep(&table, at: t0 + .seconds(2 * 86400)).isEmpty)
    }

    /// While draining, an idle HTTP/1 connection is closed once it has been quiet for the quiet period.
    @Test func sweepWhileDrainingClosesIdleConnectionsOnceQuiet() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        table.requestFinished(id(1), now: t0 + .seconds(1))
        add(&table, 2, at: t0 + .milliseconds(1100))  // new and silent
        #expect(table.beginDraining(now: t0 + .milliseconds(1200)).isEmpty)
        #expect(sweep(&table, at: t0 + .milliseconds(1250) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: t0 + .milliseconds(1250)) == [id(1): .drainIdle])
        #expect(sweep(&table, at: t0 + .milliseconds(1350)) == [id(2): .drainIdle])
    }

    /// While draining, a head being read is not closed by the quiet period but by the partial-head
    /// grace (1 s), or the header timeout if that is shorter.
    @Test func sweepWhileDrainingTimesAHeadByThePartialHeadGrace() {
        var table = makeTable()
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        table.requestHeadBegan(id(1), now: t0)
        table.requestHeadBegan(id(2), now: t0)
        _ = table.beginDraining(now: t0 + .milliseconds(9500))
        #expect(sweep(&table, at: t0 + .milliseconds(9900)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(10)) == [id(1): .requestHeaderTimeout, id(2): .requestHeaderTimeout])
        var early = makeTable()
        add(&early, 1, at: t0)
        early.requestHeadBegan(id(1), now: t0)
        _ = early.beginDraining(now: t0)
        #expect(sweep(&early, at: t0 + .milliseconds(999)).isEmpty)
        #expect(sweep(&early, at: t0 + .seconds(1)) == [id(1): .drainPartialHead])
    }

    /// While propagating, the sweep applies the normal timeouts only.
    @Test func sweepWhilePropagatingUsesTheNormalTimeouts() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        table.requestFinished(id(1), now: t0)
        var rng = SplitMix64(seed: 5)
        _ = table.beginPropagating(now: t0, until: t0 + .seconds(5), using: &rng)
        #expect(sweep(&table, at: t0 + .seconds(30)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(60)) == [id(1): .idleTimeout])
    }

    /// Swept connections are marked closing and are not returned again; closing ones are skipped.
    @Test func sweptConnectionsAreMarkedClosingAndNotReturnedTwice() {
        var table = makeTable()
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        add(&table, 3, at: t0)
        table.markClosing(id(3))
        table.requestStarted(id(2), now: t0)
        #expect(sweep(&table, at: t0 + .seconds(10)) == [id(1): .requestHeaderTimeout])
        #expect(table[id(1)]?.state == .closing)
        #expect(sweep(&table, at: t0 + .seconds(1000)).isEmpty)
        table.requestFinished(id(2), now: t0 + .seconds(1000))
        #expect(sweep(&table, at: t0 + .seconds(1060)) == [id(2): .idleTimeout])
        #expect(sweep(&table, at: t0 + .seconds(5000)).isEmpty)
        #expect(table.counts().byState == [.closing: 3])
    }

    /// One sweep closes every connection whose time is up, each with its own reason.
    @Test func oneSweepReturnsEveryExpiredConnectionWithItsReason() {
        var table = makeTable()
        add(&table, 1, at: t0)  // silent
        add(&table, 2, at: t0)  // partial head
        table.requestHeadBegan(id(2), now: t0)
        add(&table, 3, at: t0)  // served, idle
        table.requestStarted(id(3), now: t0)
        table.requestFinished(id(3), now: t0)
        add(&table, 4, at: t0 + .seconds(55))  // too new to time out
        #expect(sweep(&table, at: t0 + .seconds(60)) == [id(1): .requestHeaderTimeout, id(2): .requestHeaderTimeout, id(3): .idleTimeout])
    }

    // MARK: - Tunnels

    /// Starts a tunnel with a throwaway generator (its moment matters only in `draining`).
    func startTunnel(_ table: inout Table, _ raw: UInt64, _ kind: TunnelKind = .webSocket, at now: Instant) {
        var rng = SplitMix64(seed: raw &+ 99)
        table.tunnelStarted(id(raw), kind: kind, now: now, using: &rng)
    }

    /// An HTTP/1 connection that upgrades is a tunnel: its request stays in flight, its head and
    /// body timers stop, and it remembers what the tunnel carries.
    @Test func http1TunnelKeepsItsRequestInFlightAndStopsTheRequestTimers() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestHeadBegan(id(1), now: t0)
        table.requestStarted(id(1), now: t0 + .seconds(1))
        table.requestBodyRead(id(1), now: t0 + .seconds(1))
        startTunnel(&table, 1, at: t0 + .seconds(2))
        let entry = table[id(1)]
        #expect(entry?.tunnels == 1)
        #expect(entry?.tunnelKind == .webSocket)
        #expect(entry?.tunnelCloseAt == nil, "no close moment outside a drain")
        #expect(entry?.inFlight == 1)
        #expect(entry?.readingHeadSince == nil)
        #expect(entry?.bodyReadAt == nil)
        #expect(entry?.lastActivity == t0 + .seconds(2))
        #expect(entry?.state == .tunnel)
        add(&table, 2, at: t0)
        table.requestStarted(id(2), now: t0)
        startTunnel(&table, 2, .other, at: t0)
        #expect(table[id(2)]?.tunnelKind == .other)
        #expect(table[id(2)]?.state == .tunnel)
        table.markClosing(id(2))
        #expect(table[id(2)]?.state == .closing, "closing wins over tunnel")
    }

    /// An HTTP/2 connection counts its tunnel streams up and down, without a kind of its own; it is a
    /// tunnel while any is open, and never below zero.
    @Test func http2TunnelStreamsCountUpAndDown() {
        var table = makeTable()
        add(&table, 1, .http2, at: t0)
        table.requestStarted(id(1), now: t0)
        table.requestStarted(id(1), now: t0)
        startTunnel(&table, 1, at: t0)
        startTunnel(&table, 1, at: t0)
        #expect(table[id(1)]?.tunnels == 2)
        #expect(table[id(1)]?.tunnelKind == nil)
        #expect(table[id(1)]?.state == .tunnel)
        table.tunnelEnded(id(1), now: t0 + .seconds(1))
        #expect(table[id(1)]?.tunnels == 1)
        #expect(table[id(1)]?.state == .tunnel)
        table.tunnelEnded(id(1), now: t0 + .seconds(2))
        table.requestFinished(id(1), now: t0 + .seconds(2))
        #expect(table[id(1)]?.tunnels == 0)
        #expect(table[id(1)]?.state == .active, "one ordinary stream left")
        table.tunnelEnded(id(1), now: t0 + .seconds(3))
        #expect(table[id(1)]?.tunnels == 0)
        #expect(table[id(1)]?.lastActivity == t0 + .seconds(3))
    }

    /// An HTTP/1 tunnel that ends forgets its kind and close moment: the ordinary rules apply again.
    @Test func http1TunnelEndedForgetsItsKindAndCloseMoment() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        _ = drain(&table, at: t0, window: .seconds(10), seed: 1)
        startTunnel(&table, 1, at: t0)
        #expect(table[id(1)]?.tunnelCloseAt != nil)
        table.tunnelEnded(id(1), now: t0 + .seconds(1))
        #expect(table[id(1)]?.tunnels == 0)
        #expect(table[id(1)]?.tunnelKind == nil)
        #expect(table[id(1)]?.tunnelCloseAt == nil)
        #expect(table[id(1)]?.state == .active, "its request is the owner's to finish")
    }

    /// Tunnel events for a connection the table does not know change nothing.
    @Test func tunnelEventsForAnUnknownConnectionAreIgnored() {
        var table = makeTable()
        add(&table, 1, at: t0)
        startTunnel(&table, 9, at: t0)
        table.tunnelActivity(id(9), now: t0)
        table.tunnelEnded(id(9), now: t0)
        #expect(table[id(9)] == nil)
        #expect(table.count == 1)
        #expect(table.counts().tunnelsByProtocol == [:])
    }

    /// Counts show tunnel connections by state and open tunnels by protocol (a closing tunnel is still
    /// open); a protocol without tunnels is absent.
    @Test func countsShowTunnelsByStateAndProtocol() {
        var table = makeTable()
        add(&table, 1, at: t0)
        add(&table, 2, at: t0)
        add(&table, 3, at: t0)
        add(&table, 4, .http2, at: t0)
        add(&table, 5, at: t0)
        for raw in UInt64(1)...4 { table.requestStarted(id(raw), now: t0) }
        startTunnel(&table, 1, at: t0)
        startTunnel(&table, 2, .other, at: t0)
        startTunnel(&table, 3, at: t0)
        table.markClosing(id(3))
        startTunnel(&table, 4, at: t0)
        startTunnel(&table, 4, at: t0)
        startTunnel(&table, 4, at: t0)
        var expected = Table.Counts()
        expected.total = 5
        expected.byState = [.tunnel: 3, .closing: 1, .idle: 1]
        expected.byProtocol = [.http1: 4, .http2: 1]
        expected.requestsInFlight = 4
        expected.tunnelsByProtocol = [.http1: 3, .http2: 3]
        #expect(table.counts() == expected)
        table.tunnelEnded(id(4), now: t0)
        table.tunnelEnded(id(4), now: t0)
        table.tunnelEnded(id(4), now: t0)
        #expect(table.counts().tunnelsByProtocol == [.http1: 3])
    }

    /// The tunnel idle timeout defaults to an hour.
    @Test func tunnelIdleTimeoutDefaultsToAnHour() {
        #expect(Table.Timeouts(requestHeader: .seconds(1), idle: .seconds(1), drainQuiet: .seconds(1)).tunnelIdle == .seconds(3600))
    }

    /// A tunnel is closed once it has carried nothing for the tunnel idle timeout, counted from its
    /// start or its last bytes; the header, body and keep-alive idle timeouts no longer apply to it.
    @Test func sweepClosesAQuietTunnelAfterTheTunnelIdleTimeoutOnly() {
        var table = Table(
            timeouts: .init(requestHeader: .seconds(10), idle: .seconds(60), drainQuiet: .milliseconds(250), requestBody: .seconds(5), tunnelIdle: .seconds(600)))
        add(&table, 1, at: t0)
        add(&table, 2, .http2, at: t0)
        table.requestStarted(id(1), now: t0)
        table.requestBodyRead(id(1), now: t0)
        table.requestStarted(id(2), now: t0)
        startTunnel(&table, 1, at: t0 + .seconds(1))
        startTunnel(&table, 2, at: t0 + .seconds(1))
        #expect(sweep(&table, at: t0 + .seconds(300)).isEmpty, "past the header, body and idle timeouts")
        table.tunnelActivity(id(1), now: t0 + .seconds(300))
        #expect(table[id(1)]?.lastActivity == t0 + .seconds(300))
        #expect(sweep(&table, at: t0 + .seconds(900) - .nanoseconds(1)).isEmpty)
        #expect(sweep(&table, at: t0 + .seconds(900)) == [id(1): .tunnelIdleTimeout])
        #expect(table[id(1)]?.state == .closing)
        #expect(sweep(&table, at: t0 + .seconds(86400)).isEmpty, "returned once; HTTP/2 streams are not the table's to time")
    }

    /// Draining with `seed`: 100 HTTP/1 WebSocket tunnels (1...100), 3 other HTTP/1 tunnels
    /// (101...103), an HTTP/2 connection with a tunnel stream (104) and an idle HTTP/1 connection
    /// quiet long enough (105), added in `order`.
    func tunnelTable(seed: UInt64, window: Duration, order: [UInt64] = Array(1...105)) -> (Table, [(ConnectionID, Table.DrainingAction)]) {
        var table = makeTable()
        for raw in order {
            add(&table, raw, raw == 104 ? .http2 : .http1, at: t0 - .seconds(30))
            guard raw != 105 else { continue }
            table.requestStarted(id(raw), now: t0 - .seconds(30))
            startTunnel(&table, raw, raw > 100 && raw < 104 ? .other : .webSocket, at: t0 - .seconds(30))
        }
        let actions = drain(&table, at: t0, window: window, seed: seed)
        return (table, actions)
    }

    func drain(_ table: inout Table, at now: Instant, window: Duration, seed: UInt64) -> [(ConnectionID, Table.DrainingAction)] {
        var rng = SplitMix64(seed: seed)
        return table.beginDraining(now: now, tunnelCloseWindow: window, using: &rng)
    }

    /// Draining gives each HTTP/1 WebSocket tunnel a moment spread over the tunnel close window,
    /// and nothing to other tunnels or HTTP/2 connections; no tunnel is closed at once.
    @Test(arguments: [UInt64(1), 42, 0xDEAD_BEEF])
    func drainSpreadsWebSocketTunnelClosesOverTheWindow(seed: UInt64) {
        let (table, actions) = tunnelTable(seed: seed, window: .seconds(10))
        #expect(Dictionary(actions, uniquingKeysWith: { $1 }) == [id(104): .sendFinalGoAway, id(105): .close])
        let moments = (UInt64(1)...100).compactMap { table[id($0)]?.tunnelCloseAt }
        #expect(moments.count == 100)
        #expect(moments.allSatisfy { $0 >= t0 && $0 <= t0 + .seconds(10) })
        #expect(Set(moments.map(\.offset)).count > 90, "not all at once")
        #expect(moments.min()! < t0 + .seconds(1), "some close early")
        #expect(moments.max()! > t0 + .seconds(9), "some close late")
        #expect((UInt64(101)...104).allSatisfy { table[id($0)]?.tunnelCloseAt == nil })
        #expect((UInt64(1)...104).allSatisfy { table[id($0)]?.state == .tunnel })
    }

    /// The tunnels' moments come from the generator in ID order: the same seed gives every tunnel the
    /// same moment, whatever order the connections came in; another seed gives others.
    @Test func drainTunnelMomentsAreDeterministicForASeed() {
        let (a, _) = tunnelTable(seed: 7, window: .seconds(10))
        let (b, _) = tunnelTable(seed: 7, window: .seconds(10), order: Array((1...105).reversed()))
        let (c, _) = tunnelTable(seed: 8, window: .seconds(10))
        let momentsA = (UInt64(1)...100).map { a[id($0)]?.tunnelCloseAt }
        #expect(momentsA == (UInt64(1)...100).map { b[id($0)]?.tunnelCloseAt })
        #expect(momentsA != (UInt64(1)...100).map { c[id($0)]?.tunnelCloseAt })
    }

    /// A zero window asks every WebSocket tunnel to close at once.
    @Test func drainWithAZeroWindowClosesEveryWebSocketTunnelAtOnce() {
        var (table, _) = tunnelTable(seed: 3, window: .zero)
        #expect((UInt64(1)...100).allSatisfy { table[id($0)]?.tunnelCloseAt == t0 })
        #expect(Set(sweep(&table, at: t0).keys) == Set((UInt64(1)...100).map(id)))
        #expect(sweep(&table, at: t0).isEmpty)
    }

    /// The sweep returns each WebSocket tunnel at its own moment, not a nanosecond before, and marks
    /// it closing; the drain's quiet-idle rule never takes a tunnel, and other tunnels wait for the
    /// drain deadline (or their idle timeout).
    @Test func sweepStartsEachWebSocketTunnelsCloseAtItsMoment() {
        var (table, _) = tunnelTable(seed: 5, window: .seconds(10))
        let moments = (UInt64(1)...100).map { (id($0), table[id($0)]!.tunnelCloseAt!) }.sorted { $0.1 < $1.1 }
        var closedAt: [ConnectionID: Instant] = [:]
        for (tunnel, moment) in moments where closedAt[tunnel] == nil {
            for at in [moment - .nanoseconds(1), moment] {
                for (closed, reason) in sweep(&table, at: at) {
                    #expect(reason == .drainTunnelClose)
                    #expect(closedAt[closed] == nil)
                    closedAt[closed] = at
                }
            }
        }
        #expect(Set(closedAt.keys) == Set((UInt64(1)...100).map(id)), "every WebSocket tunnel, and only those")
        for (closed, at) in closedAt {
            #expect(at == table[closed]!.tunnelCloseAt!, "at its moment, not before")
            #expect(table[closed]?.state == .closing)
        }
        #expect(sweep(&table, at: t0 + .seconds(1000)).isEmpty, "other tunnels are not idle-closed by the drain")
        #expect((UInt64(101)...103).allSatisfy { table[id($0)]?.state == .tunnel })
        #expect(sweep(&table, at: t0 + .seconds(3570)) == [id(101): .tunnelIdleTimeout, id(102): .tunnelIdleTimeout, id(103): .tunnelIdleTimeout])
    }

    /// A WebSocket tunnel that opens during the drain gets a moment in what is left of the window,
    /// or now once the window has passed; other tunnels and HTTP/2 streams get none, and tunnels
    /// opened before a drain get none until it begins.
    @Test func tunnelStartedWhileDrainingGetsAMomentInWhatIsLeftOfTheWindow() {
        var table = makeTable()
        for raw in UInt64(1)...24 {
            add(&table, raw, raw == 24 ? .http2 : .http1, at: t0 - .seconds(1))
            table.requestStarted(id(raw), now: t0 - .seconds(1))
        }
        var rng = SplitMix64(seed: 9)
        _ = table.beginPropagating(now: t0 - .seconds(1), until: t0, using: &rng)
        startTunnel(&table, 1, at: t0 - .seconds(1))
        #expect(table[id(1)]?.tunnelCloseAt == nil, "propagating schedules no tunnel")
        _ = drain(&table, at: t0, window: .seconds(10), seed: 2)
        #expect(table[id(1)]?.tunnelCloseAt != nil)
        for raw in UInt64(2)...21 { startTunnel(&table, raw, at: t0 + .seconds(4)) }
        let moments = (UInt64(2)...21).compactMap { table[id($0)]?.tunnelCloseAt }
        #expect(moments.count == 20)
        #expect(moments.allSatisfy { $0 >= t0 + .seconds(4) && $0 <= t0 + .seconds(10) })
        #expect(Set(moments.map(\.offset)).count > 1)
        startTunnel(&table, 22, at: t0 + .seconds(12))
        #expect(table[id(22)]?.tunnelCloseAt == t0 + .seconds(12))
        #expect(sweep(&table, at: t0 + .seconds(12))[id(22)] == .drainTunnelClose)
        startTunnel(&table, 23, .other, at: t0 + .seconds(4))
        #expect(table[id(23)]?.tunnelCloseAt == nil)
        startTunnel(&table, 24, at: t0 + .seconds(4))
        #expect(table[id(24)]?.tunnelCloseAt == nil)
    }

    /// A tunnel already closing when the drain begins gets no close moment: it is on its way out.
    @Test func drainSchedulesNoClosingTunnel() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        startTunnel(&table, 1, at: t0)
        table.markClosing(id(1))
        #expect(drain(&table, at: t0, window: .seconds(10), seed: 1).isEmpty)
        #expect(table[id(1)]?.tunnelCloseAt == nil)
    }

    /// A late protocol change keeps the tunnel fields.
    @Test func setProtocolKeepsTheTunnel() {
        var table = makeTable()
        add(&table, 1, at: t0)
        table.requestStarted(id(1), now: t0)
        startTunnel(&table, 1, .other, at: t0)
        table.setProtocol(id(1), .http1)
        #expect(table[id(1)]?.tunnels == 1)
        #expect(table[id(1)]?.tunnelKind == .other)
    }
}

@Suite struct ConnectionIDTests {
    /// Each loop's generator counts from one under its loop index, so IDs from different loops never collide.
    @Test func generatorPutsTheLoopIndexInTheTopBits() {
        var loop0 = ConnectionID.Generator()
        var loop3 = ConnectionID.Generator(loopIndex: 3)
        #expect(loop0.make() == ConnectionID(rawValue: 1))
        #expect(loop0.make() == ConnectionID(rawValue: 2))
        #expect(loop3.make() == ConnectionID(rawValue: 3 << 48 | 1))
        #expect(loop3.make().description == "c3-2")
        #expect(ConnectionID(rawValue: 65535 << 48 | 0xFFFF_FFFF_FFFF).description == "c65535-281474976710655")
    }

    /// A loop index that does not fit 16 bits is a programming error.
    @Test func loopIndexBeyondSixteenBitsIsAPreconditionFailure() async {
        await #expect(processExitsWith: .failure) {
            _ = ConnectionID.Generator(loopIndex: 65536)
        }
    }

    /// Protocols have stable names for /status.
    @Test func protocolsHaveStableNames() {
        #expect(ConnectionProtocol.allCases.map(\.rawValue) == ["http1", "http2"])
        #expect(ConnectionTable<MockClock.Instant>.State.allCases.map(\.rawValue) == ["idle", "active", "tunnel", "closing"])
        #expect(TunnelKind.webSocket.rawValue == "websocket")
    }

}

extension ConnectionTable {
    /// `draining` with no tunnel close window, for the tests without tunnels.
    mutating func beginDraining(now: Instant) -> [(ConnectionID, DrainingAction)] {
        var rng = SplitMix64(seed: 0)
        return self.beginDraining(now: now, tunnelCloseWindow: .zero, using: &rng)
    }
}
