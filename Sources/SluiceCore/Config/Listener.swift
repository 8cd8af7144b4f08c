// STUB (helper A): the shape of the lead's Listener.swift from /tmp/tls/common.md, so the TLS
// library compiles before the lead's config lands. The lead's file replaces this one on merge.

/// A listener: an address, and TLS settings for a TLS listener.
public struct Listener: Sendable, Hashable, CustomStringConvertible {
    public var address: HostPort
    public var tls: TLSSettings?
    public init(_ address: HostPort, tls: TLSSettings? = nil) {
        self.address = address
        self.tls = tls
    }
    /// "https" with TLS, else "http" (X-Forwarded-Proto, :scheme).
    public var scheme: String { self.tls == nil ? "http" : "https" }
    public var description: String { self.tls == nil ? "\(self.address)" : "\(self.address) (tls)" }
}

public struct TLSSettings: Sendable, Hashable {
    public struct CertificateFiles: Sendable, Hashable {
        public var cert: String
        public var key: String
        public init(cert: String, key: String) {
            self.cert = cert
            self.key = key
        }
    }
    public enum Version: String, Sendable, Hashable, CaseIterable { case v1_2 = "1.2", v1_3 = "1.3" }
    public var certificates: [CertificateFiles]
    public var minVersion: Version = .v1_2
    public var alpn: [String] = ["h2", "http/1.1"]
    public init(certificates: [CertificateFiles], minVersion: Version = .v1_2, alpn: [String] = ["h2", "http/1.1"]) {
        self.certificates = certificates
        self.minVersion = minVersion
        self.alpn = alpn
    }
}
