import NIOCore

/// The receiving end of a tunnel's bytes, told by a codec directly once its connection switched
/// protocols (see ``HTTP1ServerCodec/attachTunnel(_:)`` and ``HTTP1ClientCodec/attachTunnel(_:)``).
///
/// Tunnel bytes need no parsing and no HTTP part types: going straight from the codec that read them
/// to the codec that writes them skips, for every read, the parts' boxing into `NIOAny` (an allocation
/// each) and two handler hops per direction. Called on the connection's event loop.
protocol HTTP1TunnelReceiver: AnyObject {
    /// Bytes read from the codec's connection: the upstream's (`fromUpstream`) or the client's.
    func tunnelBytes(_ bytes: ByteBuffer, fromUpstream: Bool)
}
