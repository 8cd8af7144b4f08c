/// A set of endpoint indices (into a ``Balancer``'s endpoint list): the endpoints a request
/// already tried, or the ones available to be picked.
///
/// The first 64 indices live in one inline word, so the sets that requests carry (empty, or the
/// one or two endpoints a retry has already tried) never allocate; indices from 64 up spill into
/// an array, which a group of that size pays for once per set, not per lookup.
///
/// ```swift
/// var tried = EndpointSet()
/// let first = balancer.pick(excluding: tried, using: &rng)!
/// tried.insert(first.endpoint)
/// let retry = balancer.pick(excluding: tried, using: &rng)!   // another endpoint, if there is one
/// ```
public struct EndpointSet: Sendable, Hashable, Sequence, ExpressibleByArrayLiteral, CustomStringConvertible {
    /// Indices 0..<64, bit `i` for index `i`.
    @usableFromInline var low: UInt64
    /// Indices from 64 up: word `w` holds 64 + 64·w ..< 128 + 64·w. Empty (no allocation) until
    /// such an index is inserted; trailing zero words are allowed, so equality ignores them.
    @usableFromInline var high: [UInt64]

    /// The empty set.
    @inlinable
    public init() {
        self.low = 0
        self.high = []
    }

    public init(_ indices: some Sequence<Int>) {
        self.init()
        for index in indices { self.insert(index) }
    }

    public init(arrayLiteral indices: Int...) {
        self.init(indices)
    }

    /// Every index in `0..<count`.
    public static func all(count: Int) -> EndpointSet {
        var set = EndpointSet()
        for index in 0..<count { set.insert(index) }
        return set
    }

    @inlinable
    public func contains(_ index: Int) -> Bool {
        if index < 64 { return index >= 0 && self.low & (1 << UInt64(index)) != 0 }
        let word = (index >> 6) - 1
        return word < self.high.count && self.high[word] & (1 << UInt64(index & 63)) != 0
    }

    @inlinable
    public mutating func insert(_ index: Int) {
        precondition(index >= 0, "endpoint indices are not negative")
        if index < 64 {
            self.low |= 1 << UInt64(index)
            return
        }
        let word = (index >> 6) - 1
        if word >= self.high.count { self.high.append(contentsOf: repeatElement(0, count: word - self.high.count + 1)) }
        self.high[word] |= 1 << UInt64(index & 63)
    }

    @inlinable
    public mutating func remove(_ index: Int) {
        if index < 64 {
            if index >= 0 { self.low &= ~(1 << UInt64(index)) }
            return
        }
        let word = (index >> 6) - 1
        if word < self.high.count { self.high[word] &= ~(1 << UInt64(index & 63)) }
    }

    @inlinable
    public var isEmpty: Bool {
        self.low == 0 && self.high.allSatisfy { $0 == 0 }
    }

    public var count: Int {
        self.high.reduce(self.low.nonzeroBitCount) { $0 + $1.nonzeroBitCount }
    }

    public static func == (lhs: EndpointSet, rhs: EndpointSet) -> Bool {
        guard lhs.low == rhs.low else { return false }
        for word in 0..<Swift.max(lhs.high.count, rhs.high.count) {
            let left = word < lhs.high.count ? lhs.high[word] : 0
            let right = word < rhs.high.count ? rhs.high[word] : 0
            if left != right { return false }
        }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.low)
        let used = (self.high.lastIndex { $0 != 0 } ?? -1) + 1
        for word in self.high.prefix(used) { hasher.combine(word) }
    }

    public var description: String {
        "[" + self.map(String.init).joined(separator: ", ") + "]"
    }

    /// The indices in increasing order.
    public struct Iterator: IteratorProtocol {
        @usableFromInline let set: EndpointSet
        /// The word being read: 0 is ``EndpointSet/low``, `w + 1` is `high[w]`.
        @usableFromInline var word: Int
        /// The bits of that word not yet returned.
        @usableFromInline var bits: UInt64

        @inlinable
        init(_ set: EndpointSet) {
            self.set = set
            self.word = 0
            self.bits = set.low
        }

        @inlinable
        public mutating func next() -> Int? {
            while self.bits == 0 {
                guard self.word < self.set.high.count else { return nil }
                self.bits = self.set.high[self.word]
                self.word += 1
            }
            let bit = self.bits.trailingZeroBitCount
            self.bits &= self.bits &- 1
            return self.word * 64 + bit
        }
    }

    @inlinable
    public func makeIterator() -> Iterator { Iterator(self) }
}
