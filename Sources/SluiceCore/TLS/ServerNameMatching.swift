/// Which certificate serves a TLS server name (SNI): the DNS names of each certificate (its SAN
/// DNS names, or its common name when it has none), matched as RFC 6125 §6.4 says.
///
/// 1. Names compare case-insensitively (ASCII; SNI carries IDNs as A-labels) and a trailing dot
///    is ignored on either side.
/// 2. A wildcard is a whole left-most label, `*.example.com` (RFC 6125 §6.4.3): it stands for
///    exactly one non-empty label, so it matches `a.example.com` but neither `example.com` nor
///    `a.b.example.com`. A `*` anywhere else, or inside a label (`f*.example.com`), matches
///    nothing but the same literal text.
/// 3. Exact names win over wildcards, whatever the certificates' order; among equals the
///    earlier certificate wins.
/// 4. No server name, or one no certificate matches, gets the first certificate (index 0).
///
/// The table is built once per certificate load; a lookup is two dictionary probes.
public struct ServerNameMatching: Sendable, Hashable {
    /// Normalised exact name → the first certificate that carries it.
    private var exact: [String: Int] = [:]
    /// Normalised wildcard suffix (`example.com` for `*.example.com`) → the first certificate.
    private var wildcard: [String: Int] = [:]

    /// `certificateNames[i]` are the DNS names of certificate `i`.
    public init(certificateNames: [[String]]) {
        for (index, names) in certificateNames.enumerated() {
            for name in names {
                let name = Self.normalise(name)
                if let suffix = Self.wildcardSuffix(name) {
                    if self.wildcard[suffix] == nil { self.wildcard[suffix] = index }
                } else if !name.isEmpty, self.exact[name] == nil {
                    self.exact[name] = index
                }
            }
        }
    }

    /// The index of the certificate that serves `serverName` (rule 3 and 4 above).
    public func certificateIndex(serverName: String?) -> Int {
        guard let serverName else { return 0 }
        let name = Self.normalise(serverName)
        if let index = self.exact[name] { return index }
        if let dot = name.firstIndex(of: "."), dot != name.startIndex {
            let parent = String(name[name.index(after: dot)...])
            if let index = self.wildcard[parent] { return index }
        }
        return 0
    }

    /// Whether `serverName` matches the certificate name `certificateName` (rules 1 and 2).
    public static func matches(_ serverName: String, certificateName: String) -> Bool {
        let name = self.normalise(serverName)
        let pattern = self.normalise(certificateName)
        guard !name.isEmpty else { return false }
        if let suffix = self.wildcardSuffix(pattern) {
            guard let dot = name.firstIndex(of: "."), dot != name.startIndex else { return false }
            return name[name.index(after: dot)...] == suffix
        }
        return name == pattern
    }

    /// Lower case (ASCII) without a trailing dot.
    static func normalise(_ name: String) -> String {
        var name = Substring(name)
        if name.hasSuffix(".") { name = name.dropLast() }
        return String(
            decoding: name.utf8.map { ("A"..."Z").contains(Unicode.Scalar($0)) ? $0 + 32 : $0 },
            as: UTF8.self
        )
    }

    /// `example.com` for `*.example.com`; nil when `name` is no wildcard under rule 2.
    private static func wildcardSuffix(_ name: String) -> String? {
        guard name.hasPrefix("*.") else { return nil }
        let suffix = name.dropFirst(2)
        guard !suffix.isEmpty, !suffix.contains("*"), !suffix.hasPrefix("."), !suffix.contains("..") else { return nil }
        return String(suffix)
    }
}
