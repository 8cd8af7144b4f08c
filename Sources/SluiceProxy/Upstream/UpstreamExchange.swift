import NIOCore
import NIOHTTP1
import SluiceCore

/// One request's way to an upstream: a leased HTTP/1.1 connection (``UpstreamHTTP1Handler``) or a
/// stream on a multiplexed HTTP/2 connection (``UpstreamHTTP2Stream``).
///
/// The downstream side (``DownstreamHTTP1Handler``, ``HTTP2StreamForwarder``) drives it the same way
/// for both: head, body*, end (with trailers), flushed once per read batch; the response comes back
/// through ``delegate``. Every call is made on the event loop the exchange lives on.
protocol UpstreamExchange: AnyObject {
    /// The request now using this exchange; `nil` stops the callbacks.
    var delegate: (any UpstreamResponseDelegate)? { get set }
    /// Whether the connection carried a complete response before this one (a failure may then be a
    /// keep-alive race, which an idempotent request may retry).
    var isReused: Bool { get }
    /// Whether more request bytes can be written without queueing past the watermark.
    var isWritable: Bool { get }

    /// Sends the request head. `upgrade`: the request asks to switch protocols (`Connection: upgrade`
    /// and `Upgrade` kept), so a `101` may answer it: the delegate then gets that head, and after it
    /// the tunnel's bytes as response body parts, and `upstreamResponseEnd(nil)` when the upstream
    /// ends its side; ``sendBody(_:)`` then writes tunnel bytes and ``sendEnd(trailers:)`` half-closes.
    /// A tunnelled connection is never reused. Only HTTP/1.1 exchanges can switch. `scheme`: the scheme
    /// the request arrived with (its listener's), which an HTTP/2 upstream gets as `:scheme`.
    func sendHead(_ head: HTTPRequestHead, scheme: URIScheme, now: MonotonicInstant, upgrade: Bool)
    func sendBody(_ buffer: ByteBuffer)
    /// Ends the request, with trailers where the upstream protocol carries them.
    func sendEnd(trailers: HTTPHeaders?)
    func flush()
    /// The downstream became writable again: resume reading the response.
    func resumeReading()
    /// The request is done with the exchange. With `reusable: false` the exchange is abandoned
    /// mid-way: the connection (HTTP/1.1) or the stream (HTTP/2) is closed.
    func release(reusable: Bool, now: MonotonicInstant)
}

extension UpstreamExchange {
    func sendEnd() { self.sendEnd(trailers: nil) }
    func sendHead(_ head: HTTPRequestHead, scheme: URIScheme, now: MonotonicInstant) { self.sendHead(head, scheme: scheme, now: now, upgrade: false) }
}

enum UpstreamLimits {
    /// How many interim (1xx) responses one response may have; past it the exchange fails with a 502
    /// (RFC 9110 §15.2 sets no limit, and without one an upstream could send them forever).
    static let maxInterimResponses = 32
}
