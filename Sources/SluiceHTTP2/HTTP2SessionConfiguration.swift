/// The settings of one ``NGHTTP2Session``.
///
/// The defaults suit a reverse proxy: windows open only as the other side of the proxy consumes
/// (so a slow upstream slows the client instead of filling memory), and libnghttp2's own flood limits
/// stay on.
public struct HTTP2SessionConfiguration: Sendable, Equatable {
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise. Default 100.
    public var maxConcurrentStreams: UInt32
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise, in bytes: how much body a client may send on one
    /// stream before we consume. Default 65 535 (the protocol's default).
    public var initialWindowSize: UInt32
    /// The connection-level receive window, in bytes, across all streams. Default 1 MiB.
    public var connectionWindowSize: UInt32
    /// SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce, in bytes (names + values + 32 per
    /// field, RFC 9113 §6.5.2). A request over it is reset. Default 64 KiB.
    public var maxHeaderListSize: UInt32
    /// SETTINGS_HEADER_TABLE_SIZE we advertise: the HPACK table the peer may use for what it sends.
    /// Default 4096.
    public var headerTableSize: UInt32
    /// Queued response bytes per stream above which the stream reports not writable. Default 64 KiB.
    public var streamHighWatermark: Int
    /// Queued response bytes of all streams together above which a stream that queues more reports
    /// not writable. Default 1 MiB.
    public var connectionHighWatermark: Int
    /// Pending SETTINGS and PING acks above which libnghttp2 treats the peer as flooding. Default 1000.
    public var maxOutboundAcks: Int
    /// SETTINGS entries per frame above which libnghttp2 treats the peer as misbehaving. Default 32.
    public var maxSettingsEntries: Int
    /// Output batch size for ``NGHTTP2Session/pendingOutput(into:)``, in bytes. Default 64 KiB.
    public var outputBatchSize: Int
    /// A server session advertises SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 §3), so clients may
    /// open WebSockets with an extended CONNECT (`:protocol`); libnghttp2 then accepts and validates
    /// `:protocol` on CONNECT requests only (elsewhere it stays a stream PROTOCOL_ERROR). Ignored by a
    /// client session. Default true.
    public var enableConnectProtocol: Bool

    public init(
        maxConcurrentStreams: UInt32 = 100,
        initialWindowSize: UInt32 = 65_535,
        connectionWindowSize: UInt32 = 1 << 20,
        maxHeaderListSize: UInt32 = 64 << 10,
        headerTableSize: UInt32 = 4096,
        streamHighWatermark: Int = 64 << 10,
        connectionHighWatermark: Int = 1 << 20,
        maxOutboundAcks: Int = 1000,
        maxSettingsEntries: Int = 32,
        outputBatchSize: Int = 64 << 10,
        enableConnectProtocol: Bool = true
    ) {
        self.maxConcurrentStreams = maxConcurrentStreams
        self.initialWindowSize = initialWindowSize
        self.connectionWindowSize = connectionWindowSize
        self.maxHeaderListSize = maxHeaderListSize
        self.headerTableSize = headerTableSize
        self.streamHighWatermark = streamHighWatermark
        self.connectionHighWatermark = connectionHighWatermark
        self.maxOutboundAcks = maxOutboundAcks
        self.maxSettingsEntries = maxSettingsEntries
        self.outputBatchSize = outputBatchSize
        self.enableConnectProtocol = enableConnectProtocol
    }
}
