import NIOCore

extension NGHTTP2Session {
    /// What ``writeOutput(to:evenIfUnwritable:afterBatch:)`` did.
    enum OutputResult {
        /// `wrote`: whether anything was written (and needs a flush).
        case written(wrote: Bool)
        /// libnghttp2 failed to serialise: the connection cannot go on.
        case failed
    }

    /// Writes the session's pending frames to `context` in batches (up to 64 per call, each about
    /// ``HTTP2SessionConfiguration/outputBatchSize`` bytes) while the channel is writable, or regardless
    /// with `evenIfUnwritable` (a connection that is closing). `afterBatch` runs after each batch:
    /// sending closes streams and drains queues, and their owners may submit more.
    /// Does not flush.
    func writeOutput(to context: ChannelHandlerContext, evenIfUnwritable: Bool, afterBatch: () -> Void) -> OutputResult {
        var wrote = false
        for _ in 0..<64 {
            guard context.channel.isWritable || evenIfUnwritable else { break }
            var buffer = context.channel.allocator.buffer(capacity: 0)
            let more: Bool
            do {
                more = try self.pendingOutput(into: &buffer)
            } catch {
                return .failed
            }
            if buffer.readableBytes > 0 {
                context.write(NIOAny(buffer), promise: nil)
                wrote = true
            }
            afterBatch()
            if !more && !self.wantsWrite { break }
        }
        return .written(wrote: wrote)
    }
}
