import SluiceCore
import Testing

@Suite struct ServerNameMatchingTests {
    // MARK: - One name against one certificate name

    /// An exact name matches itself in any case, with or without a trailing dot on either side.
    @Test(arguments: [
        ("api.example.com", "api.example.com"), ("API.Example.COM", "api.example.com"), ("api.example.com.", "api.example.com"),
        ("api.example.com", "API.EXAMPLE.COM."), ("localhost", "localhost"),
    ])
    func exactNameMatchesWhateverItsCaseAndTrailingDot(serverName: String, certificateName: String) {
        #expect(ServerNameMatching.matches(serverName, certificateName: certificateName))
    }

    @Test func exactNameDoesNotMatchAnotherName() {
        #expect(!ServerNameMatching.matches("api.example.com", certificateName: "www.example.com"))
        #expect(!ServerNameMatching.matches("api.example.com", certificateName: "example.com"))
        #expect(!ServerNameMatching.matches("example.com", certificateName: "api.example.com"))
        #expect(!ServerNameMatching.matches("", certificateName: ""))
    }

    /// A wildcard stands for exactly one non-empty left-most label (RFC 6125 §6.4.3).
    @Test func wildcardMatchesExactlyOneLeftMostLabel() {
        #expect(ServerNameMatching.matches("a.example.com", certificateName: "*.example.com"))
        #expect(ServerNameMatching.matches("A.EXAMPLE.COM.", certificateName: "*.Example.Com"))
        #expect(!ServerNameMatching.matches("example.com", certificateName: "*.example.com"))
        #expect(!ServerNameMatching.matches("a.b.example.com", certificateName: "*.example.com"))
        #expect(!ServerNameMatching.matches(".example.com", certificateName: "*.example.com"))
        #expect(!ServerNameMatching.matches("a.example.org", certificateName: "*.example.com"))
    }

    /// A `*` that is not the whole left-most label is no wildcard: only the literal text matches.
    @Test func partialOrInnerWildcardIsNoWildcard() {
        #expect(!ServerNameMatching.matches("foo.example.com", certificateName: "f*.example.com"))
        #expect(!ServerNameMatching.matches("a.b.example.com", certificateName: "a.*.example.com"))
        #expect(!ServerNameMatching.matches("a.b.com", certificateName: "*.*.com"))
        #expect(!ServerNameMatching.matches("a.", certificateName: "*."))
        #expect(ServerNameMatching.matches("f*.example.com", certificateName: "f*.example.com"))
    }

    // MARK: - Which certificate serves a name

    /// 0: a.example.com, b.example.com; 1: *.example.com; 2: api.example.com; 3: *.example.com, other.test
    let table = ServerNameMatching(certificateNames: [
        ["a.example.com", "b.example.com"], ["*.example.com"], ["API.example.com."], ["*.example.com", "other.test"],
    ])

    @Test func exactNamePicksItsCertificate() {
        #expect(table.certificateIndex(serverName: "a.example.com") == 0)
        #expect(table.certificateIndex(serverName: "B.Example.Com") == 0)
        #expect(table.certificateIndex(serverName: "other.test.") == 3)
    }

    /// `api.example.com` is exact on certificate 2 and covered by the wildcard of the earlier
    /// certificate 1: the exact name wins.
    @Test func exactNameWinsOverAnEarlierWildcard() {
        #expect(table.certificateIndex(serverName: "api.example.com") == 2)
    }

    /// The wildcard of the first certificate that has it.
    @Test func wildcardPicksTheFirstCertificateWithIt() {
        #expect(table.certificateIndex(serverName: "zzz.example.com") == 1)
    }

    @Test func noOrUnknownNameGetsTheFirstCertificate() {
        #expect(table.certificateIndex(serverName: nil) == 0)
        #expect(table.certificateIndex(serverName: "unknown.test") == 0)
        #expect(table.certificateIndex(serverName: "example.com") == 0)
        #expect(table.certificateIndex(serverName: "x.y.example.com") == 0)
        #expect(table.certificateIndex(serverName: "") == 0)
        #expect(ServerNameMatching(certificateNames: []).certificateIndex(serverName: "a.example.com") == 0)
    }
}
