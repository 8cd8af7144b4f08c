import FoundationEssentials
import NIOCore
import NIOSSL
import SluiceCore
import X509

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Every problem found in a TLS listener's certificates and keys, one message each, in the order
/// of the configured certificates (certificate before key).
public struct TLSCertificateErrors: Error, CustomStringConvertible, Sendable, Hashable {
    public var messages: [String]

    public init(messages: [String]) {
        self.messages = messages
    }

    public var description: String { self.messages.joined(separator: "\n") }
}

/// A certificate as `/status` shows it.
public struct TLSCertificateSummary: Sendable, Hashable {
    /// The SAN DNS names, or the common name when there are none.
    public var names: [String]
    /// The certificate file as configured.
    public var file: String
    /// notAfter, Unix seconds.
    public var notAfter: Int64

    public init(names: [String], file: String, notAfter: Int64) {
        self.names = names
        self.file = file
        self.notAfter = notAfter
    }
}

/// One certificate and key of a listener, loaded and checked.
struct TLSLoadedCertificate: Sendable {
    var files: TLSSettings.CertificateFiles
    /// Leaf first, then any intermediates from the same PEM file.
    var chain: [NIOSSLCertificate]
    var key: NIOSSLPrivateKey
    /// The SAN DNS names, or the common name when there are none (what SNI is matched against).
    var names: [String]
    var notAfter: Int64

    var summary: TLSCertificateSummary { TLSCertificateSummary(names: self.names, file: self.files.cert, notAfter: self.notAfter) }
    /// The expiry gauge's `name` label: the first SAN DNS name, or the CN, or the file.
    var metricName: String { self.names.first ?? self.files.cert }
}

/// One load of a TLS listener's certificates: what new handshakes use until the next good load.
///
/// Built once per (re)load, never per connection: the `NIOSSLContext` holds the first certificate
/// (the default) and, with several certificates, a context callback that swaps in the one SNI picks.
final class TLSCertificateSet: Sendable {
    let settings: TLSSettings
    let certificates: [TLSLoadedCertificate]
    let context: NIOSSLContext
    /// The raw bytes of every file loaded, certificate then key, to tell a reload that changes
    /// nothing (``TLSReloadResult/unchanged``).
    let fileContents: [[UInt8]]

    init(settings: TLSSettings, certificates: [TLSLoadedCertificate], context: NIOSSLContext, fileContents: [[UInt8]]) {
        self.settings = settings
        self.certificates = certificates
        self.context = context
        self.fileContents = fileContents
    }
}

/// Loads and checks a TLS listener's certificate files.
enum TLSCertificateStore {
    /// Reads every certificate and key of `settings` and builds the context.
    ///
    /// Every problem is reported at once, one message each, naming the file and the reason:
    /// 1. a file that cannot be read (`cannot read: no such file or directory`, `permission denied`);
    /// 2. a certificate file without a PEM certificate, a key file without a PEM private key;
    /// 3. a leaf certificate that is expired or not yet valid at `now`;
    /// 4. a key whose public key is not the certificate's.
    /// `origin` names the place in the configuration, e.g. `listen 0.0.0.0:8443`.
    static func load(_ settings: TLSSettings, origin: String, now: Date = Date()) -> Result<TLSCertificateSet, TLSCertificateErrors> {
        var messages: [String] = []
        var loaded: [TLSLoadedCertificate] = []
        var contents: [[UInt8]] = []
        if settings.certificates.isEmpty {
            messages.append("TLS (\(origin)): no certificates: give at least one {cert, key}")
        }
        for files in settings.certificates {
            let certificate = self.loadCertificate(files.cert, origin: origin, now: now, messages: &messages)
            let key = self.loadKey(files.key, origin: origin, messages: &messages)
            guard let certificate, let key else { continue }
            if let keyPublic = key.publicKey, keyPublic != certificate.parsed.publicKey {
                messages.append("TLS key \(files.key) (\(origin)): does not match certificate \(files.cert)")
                continue
            }
            contents.append(certificate.bytes)
            contents.append(key.bytes)
            loaded.append(
                TLSLoadedCertificate(
                    files: files, chain: certificate.chain, key: key.key, names: certificate.names,
                    notAfter: Int64(certificate.parsed.notValidAfter.timeIntervalSince1970.rounded(.down))
                )
            )
        }
        guard messages.isEmpty else { return .failure(TLSCertificateErrors(messages: messages)) }
        do {
            let context = try NIOSSLContext(configuration: self.configuration(settings, certificates: loaded))
            return .success(TLSCertificateSet(settings: settings, certificates: loaded, context: context, fileContents: contents))
        } catch {
            // The checks above should have caught whatever BoringSSL refuses; name the files anyway.
            let files = settings.certificates.map { "\($0.cert), \($0.key)" }.joined(separator: "; ")
            return .failure(TLSCertificateErrors(messages: ["TLS certificates \(files) (\(origin)): not usable: \(error)"]))
        }
    }

    /// The problems of one certificate and key pair, the messages of ``load(_:origin:now:)`` (the
    /// listeners' certificates and an upstream group's client certificate are checked alike).
    static func check(cert: String, key: String, origin: String, now: Date = Date()) -> [String] {
        var messages: [String] = []
        let certificate = self.loadCertificate(cert, origin: origin, now: now, messages: &messages)
        let loadedKey = self.loadKey(key, origin: origin, messages: &messages)
        if let certificate, let loadedKey, let keyPublic = loadedKey.publicKey, keyPublic != certificate.parsed.publicKey {
            messages.append("TLS key \(key) (\(origin)): does not match certificate \(cert)")
        }
        return messages
    }

    /// Whether `new` would load exactly what `current` holds: same settings, same file bytes.
    static func isUnchanged(_ settings: TLSSettings, current: TLSCertificateSet) -> Bool {
        guard settings == current.settings else { return false }
        var index = 0
        for files in settings.certificates {
            for path in [files.cert, files.key] {
                guard index < current.fileContents.count, case .success(let bytes) = self.readFile(path), bytes == current.fileContents[index]
                else { return false }
                index += 1
            }
        }
        return index == current.fileContents.count
    }

    /// How long a close waits for the client's close_notify.
    static let shutdownTimeout: TimeAmount = .seconds(1)

    /// The server configuration: TLS 1.2 or 1.3 at least, the library's default ciphers, ALPN as
    /// configured; the first certificate is the default, and with several the context callback picks
    /// by SNI (``ServerNameMatching``). One certificate needs no callback, which saves the
    /// callback's extra event-loop tick per handshake.
    static func configuration(_ settings: TLSSettings, certificates: [TLSLoadedCertificate]) -> TLSConfiguration {
        let first = certificates[0]
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: first.chain.map { .certificate($0) }, privateKey: .privateKey(first.key)
        )
        configuration.minimumTLSVersion = settings.minVersion == .v1_3 ? .tlsv13 : .tlsv12
        configuration.maximumTLSVersion = nil
        configuration.applicationProtocols = settings.alpn
        // A graceful close sends close_notify and waits for the client's, or its EOF, at most this
        // long (NIOSSL's default is 5 s): a client that answers neither must not hold a drain.
        configuration.shutdownTimeout = Self.shutdownTimeout
        if certificates.count > 1 {
            let matching = ServerNameMatching(certificateNames: certificates.map(\.names))
            let overrides: [NIOSSLContextConfigurationOverride] = certificates.map { certificate in
                var override = NIOSSLContextConfigurationOverride()
                override.certificateChain = certificate.chain.map { .certificate($0) }
                override.privateKey = .privateKey(certificate.key)
                return override
            }
            configuration.sslContextCallback = { values, promise in
                let index = matching.certificateIndex(serverName: values.serverHostname)
                promise.succeed(index == 0 ? .noChanges : overrides[index])
            }
        }
        return configuration
    }

    // MARK: Files

    private struct CertificateFile {
        var bytes: [UInt8]
        var chain: [NIOSSLCertificate]
        var parsed: X509.Certificate
        var names: [String]
    }

    private struct KeyFile {
        var bytes: [UInt8]
        var key: NIOSSLPrivateKey
        /// Nil for a key type swift-certificates cannot read (then the match is not checked here).
        var publicKey: X509.Certificate.PublicKey?
    }

    private static func loadCertificate(_ path: String, origin: String, now: Date, messages: inout [String]) -> CertificateFile? {
        let prefix = "TLS certificate \(path) (\(origin))"
        let bytes: [UInt8]
        switch self.readFile(path) {
        case .success(let read): bytes = read
        case .failure(let reason):
            messages.append("\(prefix): cannot read: \(reason)")
            return nil
        }
        guard let chain = try? NIOSSLCertificate.fromPEMBytes(bytes), let leaf = chain.first, let der = try? leaf.toDERBytes(),
            let parsed = try? X509.Certificate(derEncoded: der)
        else {
            messages.append("\(prefix): not a PEM certificate")
            return nil
        }
        if now > parsed.notValidAfter {
            messages.append("\(prefix): expired on \(self.timestamp(parsed.notValidAfter))")
            return nil
        }
        if now < parsed.notValidBefore {
            messages.append("\(prefix): not valid before \(self.timestamp(parsed.notValidBefore))")
            return nil
        }
        return CertificateFile(bytes: bytes, chain: chain, parsed: parsed, names: self.names(parsed))
    }

    private static func loadKey(_ path: String, origin: String, messages: inout [String]) -> KeyFile? {
        let prefix = "TLS key \(path) (\(origin))"
        let bytes: [UInt8]
        switch self.readFile(path) {
        case .success(let read): bytes = read
        case .failure(let reason):
            messages.append("\(prefix): cannot read: \(reason)")
            return nil
        }
        guard let key = try? NIOSSLPrivateKey(bytes: bytes, format: .pem) else {
            messages.append("\(prefix): not a PEM private key")
            return nil
        }
        let publicKey = try? X509.Certificate.PrivateKey(pemEncoded: String(decoding: bytes, as: UTF8.self)).publicKey
        return KeyFile(bytes: bytes, key: key, publicKey: publicKey)
    }

    /// The SAN DNS names, or the subject's common name(s) when there are none.
    static func names(_ certificate: X509.Certificate) -> [String] {
        var names: [String] = []
        if let alternatives = try? certificate.extensions.subjectAlternativeNames {
            for case .dnsName(let name) in alternatives { names.append(name) }
        }
        if names.isEmpty {
            for rdn in certificate.subject {
                for attribute in rdn where attribute.type == [2, 5, 4, 3] {  // commonName
                    names.append(String(describing: attribute.value))
                }
            }
        }
        return names
    }

    /// `2026-01-01T00:00:00Z`.
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle())
    }

    /// The whole file, or why not, as `strerror` says it in lower case (`no such file or directory`).
    static func readFile(_ path: String) -> Result<[UInt8], FileReadError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(FileReadError(errno)) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(FileReadError(errno))
            }
            if count == 0 { return .success(bytes) }
            guard bytes.count + count <= 1 << 20 else { return .failure(FileReadError(reason: "larger than 1 MiB")) }
            bytes += chunk[0..<count]
        }
    }

    struct FileReadError: Error, CustomStringConvertible {
        var reason: String
        init(reason: String) { self.reason = reason }
        init(_ code: Int32) { self.reason = String(cString: strerror(code)).lowercased() }
        var description: String { self.reason }
    }
}
