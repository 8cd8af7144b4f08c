/// The lookup table of Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
/// Software Network Load Balancer", NSDI 2016, §3.4; Envoy's `source/extensions/load_balancing_policies/maglev/maglev_lb.cc`
/// is the reference implementation): `size` slots, each naming an endpoint, so that a key's
/// endpoint is one modulo and one array read.
///
/// 1. Each endpoint has a permutation of the slots: it starts at `offset = hash(key, seed 0) mod
///    size` and steps by `skip = hash(key, seed 1) mod (size − 1) + 1`; `size` is prime, so every
///    step visits every slot once.
/// 2. The endpoints take turns, each claiming the next slot of its permutation that is still free,
///    until every slot is taken. Every endpoint ends with `size / n` slots, give or take one.
/// 3. Because each endpoint's preferences depend only on its own key, removing one of `n`
///    endpoints moves its keys to the others and, by the turns shifting, only a few more (the
///    paper measures about 1–2 % extra at `size` ≥ 100·`n`); adding one takes about `1 / (n + 1)`.
///
/// **Size.** ``defaultSize`` is the prime 65537 (Envoy's default), whatever the number of endpoints.
/// A size that grew with the endpoints (the next prime above 100·`n`) would change every
/// permutation whenever `n` changed, and move nearly every key on every DNS change: the very thing
/// consistent hashing is for. 65537 keeps the paper's ≥ 100 slots per endpoint up to 655 endpoints
/// and costs 128 KiB (two bytes a slot), built once per endpoint list and shared by every event
/// loop (it is an immutable value; its array is copy-on-write).
///
/// **Order.** The turns go in the order of the endpoint keys sorted bytewise, not the order given,
/// so a resolver that returns the same addresses in another order builds the same table.
///
/// Building costs about `size · ln(size)` steps (a few milliseconds at the default size): do it
/// off the event loops when the endpoint list changes, then hand the table to each loop's
/// ``Balancer/setEndpoints(_:maglev:)``.
public struct MaglevTable: Sendable, Equatable {
    /// 65537, prime: see "Size" above.
    public static let defaultSize = 65537

    /// The endpoint keys the table was built for; the table's entries are indices into this.
    public let keys: [String]
    /// The number of slots, a prime.
    public let size: Int
    /// Slot → index into ``keys``; empty when ``keys`` is.
    @usableFromInline let entries: [UInt16]

    /// Builds the table for `keys` (each endpoint's stable key, e.g. `10.0.0.7:3000`; unique).
    ///
    /// - Precondition: `size` is prime and at least the number of keys; at most 65536 keys.
    public init(keys: [String], size: Int = MaglevTable.defaultSize) {
        precondition(size >= 2 && MaglevTable.isPrime(size), "the Maglev table size must be a prime: \(size)")
        precondition(keys.count <= size, "a Maglev table needs a slot per endpoint at least")
        precondition(keys.count <= Int(UInt16.max) + 1, "a Maglev table holds at most 65536 endpoints")
        self.keys = keys
        self.size = size
        guard !keys.isEmpty else {
            self.entries = []
            return
        }
        // Sorted by key (then by position, for duplicates), so the given order does not matter.
        let order = keys.indices.sorted { left, right in
            if keys[left] == keys[right] { return left < right }
            return keys[left].utf8.lexicographicallyPrecedes(keys[right].utf8)
        }
        var next = [Int](repeating: 0, count: keys.count)
        var skip = [Int](repeating: 0, count: keys.count)
        for index in keys.indices {
            next[index] = Int(StableHash.hash(keys[index].utf8, seed: 0) % UInt64(size))
            skip[index] = Int(StableHash.hash(keys[index].utf8, seed: 1) % UInt64(size - 1)) + 1
        }
        var table = [Int32](repeating: -1, count: size)
        var filled = 0
        fill: while true {
            for index in order {
                var slot = next[index]
                while table[slot] >= 0 {
                    slot += skip[index]
                    if slot >= size { slot -= size }
                }
                table[slot] = Int32(index)
                slot += skip[index]
                next[index] = slot >= size ? slot - size : slot
                filled += 1
                if filled == size { break fill }
            }
        }
        self.entries = table.map { UInt16(truncatingIfNeeded: $0) }
    }

    /// The endpoint (index into ``keys``) in slot `slot`.
    @inlinable
    public func endpoint(inSlot slot: Int) -> Int { Int(self.entries[slot]) }

    /// The slot a key's hash lands in.
    @inlinable
    public func slot(forHash hash: UInt64) -> Int { Int(hash % UInt64(self.size)) }

    /// The endpoint a key's hash maps to when every endpoint is available; `nil` without endpoints.
    public func endpoint(forHash hash: UInt64) -> Int? {
        self.entries.isEmpty ? nil : self.endpoint(inSlot: self.slot(forHash: hash))
    }

    /// How many slots each endpoint holds (its share of keys), for `/status` and tests.
    public func slotCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: self.keys.count)
        for entry in self.entries { counts[Int(entry)] += 1 }
        return counts
    }

    private static func isPrime(_ value: Int) -> Bool {
        guard value >= 2 else { return false }
        var divisor = 2
        while divisor * divisor <= value {
            if value % divisor == 0 { return false }
            divisor += 1
        }
        return true
    }
}
