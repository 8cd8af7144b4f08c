import NIOSSL
import SluiceCore
import X509

#if canImport(Glibc)
import Glibc
#endif

extension UpstreamTLS {
    /// The problems with an https group's TLS files, one message each, every one at once (empty:
    /// usable). For start-up and `sluice check-config` (exit 1 on any), and for a reload before it
    /// replaces the group. Plaintext groups have none.
    ///
    /// ```
    /// TLS CA file /etc/ssl/ca.pem (upstreams.api.tls): cannot read: no such file or directory
    /// TLS CA file /etc/ssl/ca.pem (upstreams.api.tls): holds no PEM certificate
    /// TLS certificate /etc/tls/client.crt (upstreams.api.tls): not a PEM certificate
    /// TLS certificate /etc/tls/client.crt (upstreams.api.tls): expired on 2026-01-01T00:00:00Z
    /// TLS certificate /etc/tls/client.crt (upstreams.api.tls): not valid before 2027-01-01T00:00:00Z
    /// TLS key /etc/tls/client.key (upstreams.api.tls): cannot read: permission denied
    /// TLS key /etc/tls/client.key (upstreams.api.tls): not a PEM private key
    /// TLS key /etc/tls/client.key (upstreams.api.tls): does not match certificate /etc/tls/client.crt
    /// ```
    public static func check(group: UpstreamGroup, now: time_t = time(nil)) -> [String] {
        guard let tls = group.effectiveTLS else { return [] }
        let place = "(upstreams.\(group.name).tls)"
        var problems: [String] = []
        if let ca = tls.ca {
            switch Self.read(ca) {
            case .failure(let reason):
                problems.append("TLS CA file \(ca) \(place): cannot read: \(reason)")
            case .success(let bytes):
                if ((try? NIOSSLCertificate.fromPEMBytes(bytes)) ?? []).isEmpty {
                    problems.append("TLS CA file \(ca) \(place): holds no PEM certificate")
                }
            }
        }
        guard let certPath = tls.cert, let keyPath = tls.key else { return problems }
        var leaf: (nio: NIOSSLCertificate, pem: [UInt8])?
        switch Self.read(certPath) {
        case .failure(let reason):
            problems.append("TLS certificate \(certPath) \(place): cannot read: \(reason)")
        case .success(let bytes):
            if let first = ((try? NIOSSLCertificate.fromPEMBytes(bytes)) ?? []).first {
                leaf = (first, bytes)
                if first.notValidAfter < now {
                    problems.append("TLS certificate \(certPath) \(place): expired on \(UpstreamTLSFailure.iso8601(first.notValidAfter))")
                } else if first.notValidBefore > now {
                    problems.append("TLS certificate \(certPath) \(place): not valid before \(UpstreamTLSFailure.iso8601(first.notValidBefore))")
                }
            } else {
                problems.append("TLS certificate \(certPath) \(place): not a PEM certificate")
            }
        }
        switch Self.read(keyPath) {
        case .failure(let reason):
            problems.append("TLS key \(keyPath) \(place): cannot read: \(reason)")
        case .success(let bytes):
            guard (try? NIOSSLPrivateKey(bytes: bytes, format: .pem)) != nil else {
                problems.append("TLS key \(keyPath) \(place): not a PEM private key")
                break
            }
            if let leaf, !Self.keyMatches(keyPEM: bytes, certificate: leaf.nio) {
                problems.append("TLS key \(keyPath) \(place): does not match certificate \(certPath)")
            }
        }
        return problems
    }

    /// Whether the private key's public half is the certificate's public key (a key of a kind
    /// swift-certificates cannot read is given the benefit of the doubt: BoringSSL checks again
    /// when the context is built).
    private static func keyMatches(keyPEM: [UInt8], certificate: NIOSSLCertificate) -> Bool {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der),
            let key = try? Certificate.PrivateKey(pemEncoded: String(decoding: keyPEM, as: UTF8.self))
        else { return true }
        return key.publicKey == parsed.publicKey
    }

    /// A file's bytes, or why it cannot be read (`no such file or directory`, `permission denied`).
    private static func read(_ path: String) -> Result<[UInt8], ReadError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ReadError(errno)) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(ReadError(errno))
            }
            if count == 0 { return .success(bytes) }
            bytes += chunk[..<count]
            if bytes.count > 16 << 20 { return .failure(ReadError(description: "larger than 16 MiB")) }
        }
    }

    private struct ReadError: Error, CustomStringConvertible {
        var description: String

        init(description: String) { self.description = description }

        /// `strerror`'s text, lower-cased: `no such file or directory`.
        init(_ code: Int32) { self.description = String(cString: strerror(code)).lowercased() }
    }
}
