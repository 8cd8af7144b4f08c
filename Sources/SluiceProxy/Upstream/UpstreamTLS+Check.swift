import Foundation
import NIOSSL
import SluiceCore

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
    public static func check(group: UpstreamGroup, now: Date = Date()) -> [String] {
        guard let tls = group.effectiveTLS else { return [] }
        let origin = "upstreams.\(group.name).tls"
        var problems: [String] = []
        if let ca = tls.ca {
            switch TLSCertificateStore.readFile(ca) {
            case .failure(let reason):
                problems.append("TLS CA file \(ca) (\(origin)): cannot read: \(reason)")
            case .success(let bytes):
                if ((try? NIOSSLCertificate.fromPEMBytes(bytes)) ?? []).isEmpty {
                    problems.append("TLS CA file \(ca) (\(origin)): holds no PEM certificate")
                }
            }
        }
        // The client certificate is checked as a listener's is: one home for what makes a pair usable.
        if let cert = tls.cert, let key = tls.key {
            problems += TLSCertificateStore.check(cert: cert, key: key, origin: origin, now: now)
        }
        return problems
    }
}
