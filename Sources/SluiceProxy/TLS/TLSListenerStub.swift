// TEMPORARY stand-in for helper A's TLSListener, replaced at merge.
import Logging
import NIOCore
import NIOSSL
import SluiceCore

final class TLSListener: Sendable {
    let context: NIOSSLContext
    init(listener: Listener, metrics: ProxyMetrics, logger: Logger) throws(TLSCertificateErrors) {
        do {
            let files = listener.tls!.certificates[0]
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(files.cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem)))
            configuration.applicationProtocols = listener.tls!.alpn
            self.context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSCertificateErrors(messages: ["\(error)"])
        }
    }
    func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        try pipeline.addHandler(NIOSSLServerHandler(context: self.context))
    }
    @discardableResult func reload(settings: TLSSettings? = nil) -> Bool { false }
    static func check(_ listener: Listener) -> [String] { [] }
}

public struct TLSCertificateErrors: Error, CustomStringConvertible {
    public var messages: [String]
    public var description: String { self.messages.joined(separator: "\n") }
}

final class CertificateWatcher: Sendable {
    init(listeners: [TLSListener], interval: Duration = .seconds(2), eventLoop: any EventLoop, logger: Logger) {}
    func start() {}
    func stop() {}
}
struct TLSCertificateSummary: Sendable { var names: [String]; var file: String; var notAfter: Int }
extension TLSListener { var certificateSummaries: [TLSCertificateSummary] { [] } }
