import Foundation

/// Certificates for TLS tests, made at test time with the `openssl` CLI (no private key is ever
/// committed): a CA, and leaf certificates it signs.
///
/// ```swift
/// let certs = try TestCertificates.make()          // in a fresh temporary directory
/// certs.a.cert, certs.a.key                         // a.example.test
/// let other = try certs.issue(names: ["x.test"], notAfter: Date() + 3600)
/// ```
///
/// Every leaf carries its names as SANs (an IP address as an IP SAN, e.g. `127.0.0.1`), the
/// first also as CN; extended key usage serverAuth and clientAuth, so any leaf also serves as a
/// client certificate for mTLS tests. Keys are PKCS#8 PEM (`BEGIN PRIVATE KEY`).
struct TestCertificates: Sendable {
    struct Files: Sendable, Hashable {
        var cert: String
        var key: String
    }

    enum KeyType: Sendable {
        case p256
        case rsa2048
    }

    /// The directory everything is written to.
    let directory: String
    /// The CA (self-signed, P-256); its `cert` is the trust root for clients.
    let ca: Files
    /// `a.example.test`.
    let a: Files
    /// `b.example.test`.
    let b: Files
    /// `*.wild.example.test`.
    let wildcard: Files
    /// `localhost`, `127.0.0.1`, `::1` (upstream tests on loopback).
    let localhost: Files
    /// `expired.example.test`, valid 2020-01-01 to 2021-01-01.
    let expired: Files
    /// `future.example.test`, valid from 2099-01-01.
    let notYetValid: Files
    /// ``a``'s certificate with a key of its own that does not match it.
    let mismatched: Files

    /// Makes the CA and the certificates above in `directory` (created if missing; a fresh
    /// temporary directory when nil).
    static func make(in directory: String? = nil) throws -> TestCertificates {
        let directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("sluice-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ca = Files(cert: "\(directory)/ca.crt", key: "\(directory)/ca.key")
        try Self.openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca.key, "-out", ca.cert,
            "-days", "3650", "-subj", "/CN=Sluice Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        let issuer = Issuer(directory: directory, ca: ca)
        let mismatchedKey = "\(directory)/mismatched.key"
        try Self.generateKey(.p256, to: mismatchedKey)
        let a = try issuer.issue(names: ["a.example.test"], file: "a")
        return TestCertificates(
            directory: directory, ca: ca, a: a,
            b: try issuer.issue(names: ["b.example.test"], file: "b"),
            wildcard: try issuer.issue(names: ["*.wild.example.test"], file: "wildcard"),
            localhost: try issuer.issue(names: ["localhost", "127.0.0.1", "::1"], file: "localhost"),
            expired: try issuer.issue(
                names: ["expired.example.test"], file: "expired", notBefore: Self.date("2020-01-01T00:00:00Z"), notAfter: Self.date("2021-01-01T00:00:00Z")
            ),
            notYetValid: try issuer.issue(
                names: ["future.example.test"], file: "future", notBefore: Self.date("2099-01-01T00:00:00Z"), notAfter: Self.date("2100-01-01T00:00:00Z")
            ),
            mismatched: Files(cert: a.cert, key: mismatchedKey)
        )
    }

    /// A new leaf signed by ``ca``, written to `<directory>/<file>.crt` and `.key` (`file`
    /// defaults to a fresh unique name). `appendCA` writes the CA after the leaf, a chain file.
    func issue(
        names: [String], file: String? = nil, notBefore: Date = Date() - 3600, notAfter: Date = Date() + 30 * 86400,
        key: KeyType = .p256, appendCA: Bool = false
    ) throws -> Files {
        try Issuer(directory: self.directory, ca: self.ca).issue(
            names: names, file: file ?? "leaf-\(UUID().uuidString)", notBefore: notBefore, notAfter: notAfter, key: key, appendCA: appendCA
        )
    }

    /// `issue(names:)` valid for `days` from an hour ago.
    func issue(names: [String], days: Int, file: String? = nil, key: KeyType = .p256) throws -> Files {
        try self.issue(names: names, file: file, notAfter: Date() + Double(days) * 86400, key: key)
    }

    /// Removes the directory and everything in it.
    func remove() {
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    static func date(_ iso8601: String) -> Date {
        try! Date(iso8601, strategy: .iso8601)
    }

    // MARK: openssl

    private struct Issuer {
        var directory: String
        var ca: Files

        func issue(
            names: [String], file: String, notBefore: Date = Date() - 3600, notAfter: Date = Date() + 30 * 86400, key: KeyType = .p256,
            appendCA: Bool = false
        ) throws -> Files {
            precondition(!names.isEmpty, "a certificate needs a name")
            let files = Files(cert: "\(self.directory)/\(file).crt", key: "\(self.directory)/\(file).key")
            // `openssl ca` (not `x509 -req`) sets both dates; its database lives in a directory of
            // its own, so that tests issuing in parallel do not share one.
            let work = "\(self.directory)/.issue-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: work) }
            try TestCertificates.generateKey(key, to: files.key)
            try TestCertificates.openssl(["req", "-new", "-key", files.key, "-subj", "/CN=\(names[0])", "-out", "\(work)/leaf.csr"])
            let alternatives = names.map { Self.isIPAddress($0) ? "IP:\($0)" : "DNS:\($0)" }.joined(separator: ",")
            let serial = String(UInt64.random(in: 1..<UInt64.max), radix: 16)
            let config = """
                [ca]
                default_ca = issuer
                [issuer]
                database = \(work)/index.txt
                new_certs_dir = \(work)
                serial = \(work)/serial
                default_md = sha256
                policy = policy_any
                unique_subject = no
                email_in_dn = no
                [policy_any]
                commonName = supplied
                [leaf]
                subjectAltName = \(alternatives)
                basicConstraints = critical,CA:FALSE
                keyUsage = critical,digitalSignature,keyEncipherment
                extendedKeyUsage = serverAuth,clientAuth

                """
            try config.write(toFile: "\(work)/ca.cnf", atomically: true, encoding: .utf8)
            try "".write(toFile: "\(work)/index.txt", atomically: true, encoding: .utf8)
            try "\(serial.count % 2 == 0 ? serial : "0" + serial)\n".write(toFile: "\(work)/serial", atomically: true, encoding: .utf8)
            try TestCertificates.openssl([
                "ca", "-batch", "-config", "\(work)/ca.cnf", "-cert", self.ca.cert, "-keyfile", self.ca.key, "-in", "\(work)/leaf.csr",
                "-out", files.cert, "-startdate", Self.opensslTime(notBefore), "-enddate", Self.opensslTime(notAfter),
                "-extfile", "\(work)/ca.cnf", "-extensions", "leaf", "-notext",
            ])
            if appendCA {
                let chain = try String(contentsOfFile: files.cert, encoding: .utf8) + String(contentsOfFile: self.ca.cert, encoding: .utf8)
                try chain.write(toFile: files.cert, atomically: true, encoding: .utf8)
            }
            return files
        }

        /// `20260101000000Z`.
        static func opensslTime(_ date: Date) -> String {
            date.formatted(Date.ISO8601FormatStyle()).filter { $0 != "-" && $0 != ":" && $0 != "T" }
        }

        static func isIPAddress(_ name: String) -> Bool {
            name.contains(":") || name.allSatisfy { $0.isNumber || $0 == "." }
        }
    }

    static func generateKey(_ type: KeyType, to path: String) throws {
        switch type {
        case .p256: try self.openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path])
        case .rsa2048: try self.openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path])
        }
    }

    struct OpenSSLError: Error, CustomStringConvertible {
        var arguments: [String]
        var status: Int32
        var stderr: String
        var description: String { "openssl \(self.arguments.joined(separator: " ")) exited \(self.status): \(self.stderr)" }
    }

    /// Runs `openssl` with `arguments`, its output in a file (no pipe to fill up); throws with
    /// its stderr when it fails.
    static func openssl(_ arguments: [String]) throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-openssl-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw OpenSSLError(
                arguments: arguments, status: process.terminationStatus, stderr: (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            )
        }
    }
}
