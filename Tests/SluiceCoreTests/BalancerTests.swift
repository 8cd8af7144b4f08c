import SluiceCore
import Testing

/// Endpoint keys as DNS would give them.
private func keys(_ count: Int, from first: Int = 1) -> [String] {
    (first..<(first + count)).map { "10.0.0.\($0):3000" }
}

/// Counts draws, to prove which picks use randomness.
private struct CountingGenerator: RandomNumberGenerator {
    var inner = SplitMix64(seed: 1)
    var draws = 0
    mutating func next() -> UInt64 {
        self.draws += 1
        return self.inner.next()
    }
}

@Suite struct BalancerTests {
    /// `count` picks, counted per endpoint.
    func histogram(
        _ balancer: inout Balancer, picks count: Int, excluding tried: EndpointSet = [], rng: inout SplitMix64
    ) -> [Int] {
        var counts = [Int](repeating: 0, count: balancer.endpoints.count)
        for _ in 0..<count {
            let pick = balancer.pick(excluding: tried, using: &rng)!
            #expect(!pick.panic)
            counts[pick.endpoint] += 1
        }
        return counts
    }

    // MARK: - Round-robin

    /// Round-robin goes in index order, and over many picks each endpoint gets exactly its share.
    @Test func roundRobinGoesInTurnAndEvenly() {
        var balancer = Balancer(policy: .roundRobin, endpoints: keys(3))
        var rng = SplitMix64(seed: 1)
        let order = (0..<7).map { _ in balancer.pick(using: &rng)!.endpoint }
        #expect(order == [0, 1, 2, 0, 1, 2, 0])
        #expect(histogram(&balancer, picks: 2999, rng: &rng) == [999, 1000, 1000])  // the turn is at 1 after 7 picks
    }

    /// An unavailable endpoint is skipped, and its turn does not go twice to its neighbour.
    @Test func roundRobinSkipsAnUnavailableEndpointWithoutFavouringItsNeighbour() {
        var balancer = Balancer(policy: .roundRobin, endpoints: keys(4))
        balancer.setAvailable(endpoint: 1, false)
        var rng = SplitMix64(seed: 1)
        let order = (0..<7).map { _ in balancer.pick(using: &rng)!.endpoint }
        #expect(order == [0, 2, 3, 0, 2, 3, 0])
        #expect(histogram(&balancer, picks: 3000, rng: &rng) == [1000, 0, 1000, 1000])
    }

    /// Round-robin and a hash pick with a key draw no random numbers; the others draw one.
    @Test func onlyPoliciesThatNeedChanceDrawRandomNumbers() {
        let cases: [(BalancePolicy, UInt64?, Int)] = [
            (.roundRobin, nil, 0), (.hash(.clientIP), 42, 0), (.hash(.clientIP), nil, 1), (.random, nil, 1), (.leastRequest, nil, 1),
        ]
        for (policy, hash, draws) in cases {
            var balancer = Balancer(policy: policy, endpoints: keys(3))
            var rng = CountingGenerator()
            _ = balancer.pick(hash: hash, using: &rng)
            #expect(rng.draws == draws, "\(policy)")
        }
    }

    // MARK: - Random

    /// Random picks spread evenly, within 5 % of the mean over 40 000 picks, and skip unavailable endpoints.
    @Test func randomSpreadsEvenlyOverAvailableEndpoints() {
        var balancer = Balancer(policy: .random, endpoints: keys(5))
        var rng = SplitMix64(seed: 7)
        for count in histogram(&balancer, picks: 50_000, rng: &rng) {
            #expect(abs(count - 10_000) < 500, "\(count)")
        }
        balancer.setAvailable(endpoint: 3, false)
        let counts = histogram(&balancer, picks: 40_000, rng: &rng)
        #expect(counts[3] == 0)
        for endpoint in [0, 1, 2, 4] { #expect(abs(counts[endpoint] - 10_000) < 500, "\(counts)") }
    }

    // MARK: - Least request

    /// With one endpoint loaded and the others free, least-request never picks the loaded one of 3,
    /// and spreads evenly over the other two.
    @Test func leastRequestNeverPicksTheMostLoadedOfThreeWhenTheOthersAreFree() {
        var balancer = Balancer(policy: .leastRequest, endpoints: keys(3))
        for _ in 0..<10 { balancer.requestStarted(endpoint: 0) }
        var rng = SplitMix64(seed: 3)
        let counts = histogram(&balancer, picks: 3000, rng: &rng)
        #expect(counts[0] == 0)
        #expect(abs(counts[1] - 1500) < 150, "\(counts)")
    }

    /// Of two endpoints, the one with fewer requests in flight wins; equal loads split about evenly.
    @Test func leastRequestPrefersTheLessLoadedOfTwo() {
        var balancer = Balancer(policy: .leastRequest, endpoints: keys(2))
        balancer.requestStarted(endpoint: 1)
        var rng = SplitMix64(seed: 5)
        #expect(histogram(&balancer, picks: 100, rng: &rng) == [100, 0])
        balancer.requestStarted(endpoint: 0)
        let counts = histogram(&balancer, picks: 2000, rng: &rng)
        #expect(abs(counts[0] - 1000) < 120, "\(counts)")
    }

    /// A steady load of 80 requests in flight over 8 endpoints (10 each on average), each pick
    /// starting one and, past 80, a random running request finishing: the most loaded endpoint at
    /// any time, and the mean spread between the most and the least loaded.
    func steadyLoad(_ policy: BalancePolicy, seed: UInt64) -> (worstMax: Int, meanSpread: Double) {
        let endpoints = 8
        var balancer = Balancer(policy: policy, endpoints: keys(endpoints))
        var rng = SplitMix64(seed: seed)
        var running: [Int] = []
        var worstMax = 0
        var spreads = 0
        var samples = 0
        for step in 0..<20_000 {
            let pick = balancer.pick(using: &rng)!
            balancer.requestStarted(endpoint: pick.endpoint)
            running.append(pick.endpoint)
            if running.count > 80 {
                running.swapAt(Int.random(in: 0..<running.count, using: &rng), running.count - 1)
                let endpoint = running.removeLast()
                balancer.requestFinished(endpoint: endpoint, key: balancer.endpoints[endpoint])
            }
            if step > 1000 {
                let loads = (0..<endpoints).map { balancer.inFlight(endpoint: $0) }
                worstMax = max(worstMax, loads.max()!)
                spreads += loads.max()! - loads.min()!
                samples += 1
            }
        }
        return (worstMax, Double(spreads) / Double(samples))
    }

    /// Under a steady load, the power of two choices keeps the busiest endpoint close to the mean
    /// (never above 15 at a mean of 10; random reaches twice the mean) and the spread at less than
    /// half of random's.
    @Test func leastRequestKeepsTheImbalanceBounded() {
        let leastRequest = steadyLoad(.leastRequest, seed: 11)
        let random = steadyLoad(.random, seed: 11)
        #expect(leastRequest.worstMax <= 15, "busiest endpoint reached \(leastRequest.worstMax) in flight at a mean of 10")
        #expect(leastRequest.meanSpread < 4.5, "mean max − min \(leastRequest.meanSpread)")
        #expect(leastRequest.meanSpread * 2 < random.meanSpread, "least-request \(leastRequest.meanSpread), random \(random.meanSpread)")
    }

    // MARK: - Availability, retries, panic

    /// A retry never goes to an endpoint already tried while another exists, whatever the policy.
    @Test(arguments: [BalancePolicy.roundRobin, .random, .leastRequest, .hash(.header("x-user-id"))])
    func retriesAvoidTriedEndpoints(policy: BalancePolicy) {
        var balancer = Balancer(policy: policy, endpoints: keys(3))
        var rng = SplitMix64(seed: 13)
        for key in 0..<300 {
            let hash = StableHash.hash("user-\(key)".utf8)
            let first = balancer.pick(hash: hash, using: &rng)!
            var tried: EndpointSet = [first.endpoint]
            let second = balancer.pick(hash: hash, excluding: tried, using: &rng)!
            tried.insert(second.endpoint)
            let third = balancer.pick(hash: hash, excluding: tried, using: &rng)!
            #expect(Set([first.endpoint, second.endpoint, third.endpoint]).count == 3)
            #expect(!first.panic && !second.panic && !third.panic)
        }
    }

    /// With one endpoint, a retry goes to it again (and that is not a panic).
    @Test func retryWithOneEndpointReusesIt() {
        var balancer = Balancer(policy: .leastRequest, endpoints: keys(1))
        var rng = SplitMix64(seed: 1)
        #expect(balancer.pick(excluding: [0], using: &rng) == Balancer.Pick(endpoint: 0, panic: false))
    }

    /// When every available endpoint was tried, a retry goes to a tried available one, not to an
    /// unavailable one.
    @Test func retryPrefersATriedAvailableEndpointToAnUnavailableOne() {
        var balancer = Balancer(policy: .roundRobin, endpoints: keys(3))
        balancer.setAvailable([0])
        var rng = SplitMix64(seed: 1)
        for _ in 0..<5 {
            #expect(balancer.pick(excluding: [0], using: &rng) == Balancer.Pick(endpoint: 0, panic: false))
        }
    }

    /// Unavailable endpoints are never picked while one is available, under any policy.
    @Test(arguments: [BalancePolicy.roundRobin, .random, .leastRequest, .hash(.clientIP)])
    func onlyAvailableEndpointsArePicked(policy: BalancePolicy) {
        var balancer = Balancer(policy: policy, endpoints: keys(5))
        balancer.setAvailable([1, 4])
        #expect(balancer.availableCount == 2)
        var rng = SplitMix64(seed: 17)
        var seen = Set<Int>()
        for key in 0..<500 {
            let pick = balancer.pick(hash: StableHash.hash("k\(key)".utf8), using: &rng)!
            #expect(!pick.panic)
            seen.insert(pick.endpoint)
        }
        #expect(seen == [1, 4])
    }

    /// With no endpoint available, picks go to all endpoints, and each says it is a panic; a retry
    /// in a panic still prefers an untried endpoint.
    @Test(arguments: [BalancePolicy.roundRobin, .random, .leastRequest, .hash(.clientIP)])
    func panicPicksAmongAllWhenNoneIsAvailable(policy: BalancePolicy) {
        var balancer = Balancer(policy: policy, endpoints: keys(3))
        balancer.setAvailable(EndpointSet())
        var rng = SplitMix64(seed: 19)
        var seen = Set<Int>()
        for key in 0..<300 {
            let pick = balancer.pick(hash: StableHash.hash("k\(key)".utf8), using: &rng)!
            #expect(pick.panic)
            seen.insert(pick.endpoint)
            let retry = balancer.pick(hash: StableHash.hash("k\(key)".utf8), excluding: [pick.endpoint], using: &rng)!
            #expect(retry.panic && retry.endpoint != pick.endpoint)
        }
        #expect(seen == [0, 1, 2])
        balancer.setAvailable(endpoint: 2, true)
        #expect(balancer.pick(hash: 1, using: &rng) == Balancer.Pick(endpoint: 2, panic: false))
    }

    /// A group without endpoints (a DNS answer with no records) has no pick.
    @Test func noEndpointsNoPick() {
        var balancer = Balancer(policy: .hash(.clientIP), endpoints: [])
        var rng = SplitMix64(seed: 1)
        #expect(balancer.pick(hash: 5, using: &rng) == nil)
        #expect(balancer.pick(using: &rng) == nil)
    }

    // MARK: - Endpoint changes

    /// Replacing the endpoint list keeps each key's in-flight count and availability; new keys start
    /// available and idle.
    @Test func setEndpointsKeepsInFlightAndAvailabilityByKey() {
        var balancer = Balancer(policy: .leastRequest, endpoints: ["a:1", "b:1", "c:1"])
        balancer.requestStarted(endpoint: 1)
        balancer.requestStarted(endpoint: 1)
        balancer.requestStarted(endpoint: 2)
        balancer.setAvailable(endpoint: 2, false)
        balancer.setEndpoints(["c:1", "d:1", "b:1"])
        #expect((0..<3).map { balancer.inFlight(endpoint: $0) } == [1, 0, 2])
        #expect((0..<3).map { balancer.isAvailable(endpoint: $0) } == [false, true, true])
        #expect(balancer.availableCount == 2)
    }

    /// A request finished after its endpoint moved is counted off the right endpoint; one whose
    /// endpoint was removed changes nothing; counts never go below zero.
    @Test func requestFinishedFollowsTheKey() {
        var balancer = Balancer(policy: .leastRequest, endpoints: ["a:1", "b:1"])
        balancer.requestStarted(endpoint: 0)
        balancer.requestStarted(endpoint: 1)
        balancer.setEndpoints(["b:1", "a:1"])
        balancer.requestFinished(endpoint: 0, key: "a:1")
        #expect(balancer.inFlight(endpoint: 0) == 1)
        #expect(balancer.inFlight(endpoint: 1) == 0)
        balancer.setEndpoints(["a:1"])
        balancer.requestFinished(endpoint: 0, key: "b:1")
        balancer.requestFinished(endpoint: 0, key: "a:1")
        #expect(balancer.inFlight(endpoint: 0) == 0)
    }

    // MARK: - Consistent hashing

    /// Keys spread over N endpoints, the key's endpoint (by key string) for each of `count` keys.
    func owners(_ balancer: inout Balancer, keys count: Int = 10_000) -> [String] {
        var rng = SplitMix64(seed: 0)
        return (0..<count).map { key in
            let pick = balancer.pick(hash: StableHash.hash("user-\(key)".utf8), using: &rng)!
            return balancer.endpoints[pick.endpoint]
        }
    }

    /// The same key maps to the same endpoint every time, in every balancer built from the same
    /// endpoints in any order (another loop, another replica).
    @Test func sameKeyMapsToTheSameEndpoint() {
        var first = Balancer(policy: .hash(.header("x-user-id")), endpoints: keys(5))
        var again = Balancer(policy: .hash(.header("x-user-id")), endpoints: keys(5).reversed())
        let expected = owners(&first, keys: 2000)
        #expect(owners(&first, keys: 2000) == expected)
        #expect(owners(&again, keys: 2000) == expected)
    }

    /// Every endpoint holds its share of the table, give or take one slot, and so about its share of keys.
    @Test func maglevTableIsBalanced() {
        let table = MaglevTable(keys: keys(7))
        let counts = table.slotCounts()
        #expect(counts.max()! - counts.min()! <= 1, "\(counts)")
        var balancer = Balancer(policy: .hash(.clientIP), endpoints: keys(7), maglev: table)
        let owned = owners(&balancer, keys: 14_000)
        for key in keys(7) {
            #expect(abs(owned.filter { $0 == key }.count - 2000) < 250)
        }
    }

    /// Removing one of N endpoints moves about 1/N of the keys (under 1/N + 5 %), and almost every
    /// key of the other endpoints stays where it was.
    @Test(arguments: [3, 5, 10])
    func removingOneEndpointMovesAboutOneNthOfTheKeys(endpoints: Int) {
        var before = Balancer(policy: .hash(.clientIP), endpoints: keys(endpoints))
        var after = Balancer(policy: .hash(.clientIP), endpoints: keys(endpoints - 1))  // drops the last
        let removed = keys(endpoints).last!
        let old = owners(&before)
        let new = owners(&after)
        let moved = zip(old, new).filter { $0 != $1 }.count
        #expect(Double(moved) < (1 / Double(endpoints) + 0.05) * 10_000, "\(moved) of 10 000 moved")
        let survivors = zip(old, new).filter { $0.0 != removed }
        let stayed = survivors.filter { $0 == $1 }.count
        #expect(Double(stayed) > 0.95 * Double(survivors.count), "\(stayed) of \(survivors.count) stayed")
    }

    /// Adding an endpoint to N moves about 1/(N+1) of the keys, most of them to the new one.
    @Test(arguments: [3, 5, 10])
    func addingOneEndpointMovesAboutOneInNPlusOneOfTheKeys(endpoints: Int) {
        var before = Balancer(policy: .hash(.clientIP), endpoints: keys(endpoints))
        var after = Balancer(policy: .hash(.clientIP), endpoints: keys(endpoints + 1))
        let added = keys(endpoints + 1).last!
        let old = owners(&before)
        let new = owners(&after)
        let moved = zip(old, new).filter { $0 != $1 }
        #expect(Double(moved.count) < (1 / Double(endpoints + 1) + 0.05) * 10_000, "\(moved.count) of 10 000 moved")
        #expect(Double(moved.count) > (1 / Double(endpoints + 1) - 0.05) * 10_000, "\(moved.count) of 10 000 moved")
        let toNew = moved.filter { $0.1 == added }.count
        #expect(Double(toNew) > 0.9 * Double(moved.count), "\(toNew) of \(moved.count) went to the new endpoint")
    }

    /// An unavailable endpoint's keys spread over the others while every other key stays put, and
    /// they all come back when it is available again; a DNS change that keeps the keys moves nothing.
    @Test func unavailableEndpointsKeysSpreadAndComeBack() {
        var balancer = Balancer(policy: .hash(.cookie("session")), endpoints: keys(4))
        let original = owners(&balancer)
        balancer.setAvailable(endpoint: 2, false)
        let during = owners(&balancer)
        let down = keys(4)[2]
        for (old, new) in zip(original, during) {
            if old == down { #expect(new != down) } else { #expect(new == old) }
        }
        let refugees = zip(original, during).filter { $0.0 == down }.map(\.1)
        for other in keys(4) where other != down {
            let share = refugees.filter { $0 == other }.count
            #expect(share > refugees.count / 5, "\(other) took \(share) of \(refugees.count)")
        }
        balancer.setAvailable(endpoint: 2, true)
        #expect(owners(&balancer) == original)
        balancer.setEndpoints(keys(4).reversed())
        #expect(owners(&balancer) == original)
    }

    /// A retry of a hashed key goes to the same next endpoint every time (the next one in the
    /// table), not to a random one.
    @Test func hashRetryIsDeterministic() {
        var balancer = Balancer(policy: .hash(.clientIP), endpoints: keys(5))
        var rng = SplitMix64(seed: 23)
        for key in 0..<100 {
            let hash = StableHash.hash("client-\(key)".utf8)
            let first = balancer.pick(hash: hash, using: &rng)!
            let retries = (0..<3).map { _ in balancer.pick(hash: hash, excluding: [first.endpoint], using: &rng)!.endpoint }
            #expect(Set(retries).count == 1)
            #expect(retries[0] != first.endpoint)
        }
    }

    /// A request without the hash key (no such header or cookie) is spread at random.
    @Test func hashWithoutAKeyPicksAtRandom() {
        var balancer = Balancer(policy: .hash(.header("x-user-id")), endpoints: keys(4))
        var rng = SplitMix64(seed: 29)
        let counts = histogram(&balancer, picks: 8000, rng: &rng)
        for count in counts { #expect(abs(count - 2000) < 200, "\(counts)") }
    }

    /// One table serves balancers on every loop; the balancers share it rather than building their own.
    @Test func maglevTableIsSharedAcrossBalancers() {
        let table = MaglevTable(keys: keys(3))
        let loop0 = Balancer(policy: .hash(.clientIP), endpoints: keys(3), maglev: table)
        let loop1 = Balancer(policy: .hash(.clientIP), endpoints: keys(3), maglev: table)
        #expect(loop0.maglev == table && loop1.maglev == table)
        #expect(Balancer(policy: .random, endpoints: keys(3), maglev: table).maglev == nil)
    }

    // MARK: - Helpers: hash, cookie, endpoint set

    /// The hash is a fixed function of the bytes (the same in every process), and the seed changes it.
    @Test func stableHashIsFixedAcrossProcesses() {
        #expect(StableHash.hash("".utf8) == StableHash.hash([UInt8]()))
        #expect(StableHash.hash("10.0.0.7:3000".utf8) == StableHash.hash(Array("10.0.0.7:3000".utf8)))
        #expect(StableHash.hash("abc".utf8, seed: 0) != StableHash.hash("abc".utf8, seed: 1))
        #expect(StableHash.hash("abc".utf8) == 0x33eb_af99_27cb_c5bd)
        let substring = "xx10.0.0.7:3000".dropFirst(2)
        #expect(StableHash.hash(substring.utf8) == StableHash.hash("10.0.0.7:3000".utf8))
    }

    /// A cookie's value is found among others, trimmed, by exact name.
    @Test(arguments: [
        ("session=abc", "abc"), ("a=1; session=abc; b=2", "abc"), ("a=1;session=abc", "abc"),
        ("  session = abc  ;", "abc"), ("session=", ""), ("session=\"q v\"", "\"q v\""),
        ("sessions=x; session=y", "y"), ("Session=x", nil), ("a=1; b=2", nil), ("session", nil), ("", nil),
        ("x=session=1; session=2", "2"), ("session=a=b", "a=b"),
    ] as [(String, String?)])
    func cookieValueIsFoundByExactName(field: String, value: String?) {
        #expect(CookieHeader.value(named: "session", in: field).map(String.init) == value)
    }

    /// The endpoint set holds indices past the inline word, iterates in order, and compares by content.
    @Test func endpointSetHoldsAnyIndex() {
        var set: EndpointSet = [0, 63, 64, 200]
        #expect(set.contains(63) && set.contains(64) && set.contains(200) && !set.contains(1) && !set.contains(-1))
        #expect(Array(set) == [0, 63, 64, 200])
        #expect(set.count == 4)
        set.remove(200)
        set.remove(64)
        #expect(set == [0, 63])
        #expect(set.hashValue == EndpointSet([0, 63]).hashValue)
        set.remove(0)
        set.remove(63)
        #expect(set.isEmpty)
        #expect(EndpointSet.all(count: 70).count == 70)
    }
}
