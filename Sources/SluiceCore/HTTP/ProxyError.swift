/// Why a request or connection failed, where the fault lies, and how the client is answered.
///
/// Each case maps to one status (or to aborting the downstream connection when the response had
/// already begun), a short plain-text body, and a log line.
public struct ProxyError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case badRequest
        case headersTooLarge
        case bodyTooLarge
        case connectRefused
        case foreignAbsoluteTarget
        case expectationFailed
        case requestTimeout
        case noRoute
        case upstreamConnectFailed
        case upstreamResetBeforeResponse
        case upstreamRefusedStream
        case upstreamTimeout
        case upstreamFailedMidResponse
        case upstreamBadResponse
    }

    /// Whose fault it is.
    public enum Source: String, Hashable, Sendable {
        case downstream
        case upstream
        case `internal`
    }

    private let code: Code
    /// Details for the log and the response body.
    public let detail: String

    private init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public static func badRequest(_ detail: String) -> ProxyError { ProxyError(.badRequest, detail) }
    public static func headersTooLarge(limit: Int) -> ProxyError { ProxyError(.headersTooLarge, "request header fields exceed \(limit) bytes") }
    public static func bodyTooLarge(limit: Int) -> ProxyError { ProxyError(.bodyTooLarge, "request body exceeds \(limit) bytes") }
    public static let connectRefused = ProxyError(.connectRefused, "CONNECT is not supported: Sluice is a reverse proxy")
    public static let foreignAbsoluteTarget = ProxyError(.foreignAbsoluteTarget, "absolute-form target for another host: Sluice is not a forward proxy")
    public static let expectationFailed = ProxyError(.expectationFailed, "only Expect: 100-continue is supported")
    /// The client did not send its request head, or the next piece of its body, in time.
    public static func requestTimeout(_ detail: String) -> ProxyError { ProxyError(.requestTimeout, detail) }
    /// No route matches the request's host and path.
    public static func noRoute(host: String?, path: String) -> ProxyError {
        ProxyError(.noRoute, String(Router.notFoundBody(host: host, path: path).dropLast()))
    }
    public static func upstreamConnectFailed(_ detail: String) -> ProxyError { ProxyError(.upstreamConnectFailed, "upstream connect failed: \(detail)") }
    public static func upstreamResetBeforeResponse(_ detail: String) -> ProxyError { ProxyError(.upstreamResetBeforeResponse, "upstream closed before responding: \(detail)") }
    /// An HTTP/2 upstream refused the stream (`REFUSED_STREAM`, or a GOAWAY whose last stream id is
    /// below it): RFC 9113 §8.7 guarantees it did no processing of the request.
    public static func upstreamRefusedStream(_ detail: String) -> ProxyError { ProxyError(.upstreamRefusedStream, "upstream refused the stream: \(detail)") }
    public static let upstreamTimeout = ProxyError(.upstreamTimeout, "upstream did not send a response head in time")
    public static func upstreamFailedMidResponse(_ detail: String) -> ProxyError { ProxyError(.upstreamFailedMidResponse, "upstream failed mid-response: \(detail)") }
    public static func upstreamBadResponse(_ detail: String) -> ProxyError { ProxyError(.upstreamBadResponse, "upstream sent an invalid response: \(detail)") }

    /// The status the client gets, or `nil` when the response had begun and the connection is aborted instead.
    public var status: Int? {
        switch self.code {
        case .badRequest: 400
        case .headersTooLarge: 431
        case .bodyTooLarge: 413
        case .connectRefused: 405
        case .foreignAbsoluteTarget: 403
        case .expectationFailed: 417
        case .requestTimeout: 408
        case .noRoute: 404
        case .upstreamConnectFailed, .upstreamResetBeforeResponse, .upstreamRefusedStream, .upstreamBadResponse: 502
        case .upstreamTimeout: 504
        case .upstreamFailedMidResponse: nil
        }
    }

    public var source: Source {
        switch self.code {
        case .badRequest, .headersTooLarge, .bodyTooLarge, .connectRefused, .foreignAbsoluteTarget, .expectationFailed, .requestTimeout, .noRoute:
            .downstream
        case .upstreamConnectFailed, .upstreamResetBeforeResponse, .upstreamRefusedStream, .upstreamTimeout, .upstreamFailedMidResponse,
            .upstreamBadResponse:
            .upstream
        }
    }

    /// Whether the downstream connection must close after the error response (the request body
    /// may be unread, or the client misbehaved).
    public var closesConnection: Bool {
        switch self.code {
        case .badRequest, .headersTooLarge, .bodyTooLarge, .connectRefused, .foreignAbsoluteTarget, .expectationFailed,
            .requestTimeout, .upstreamFailedMidResponse:
            true
        case .noRoute, .upstreamConnectFailed, .upstreamResetBeforeResponse, .upstreamRefusedStream, .upstreamTimeout, .upstreamBadResponse:
            false
        }
    }

    /// Whether another attempt may fix the failure, as far as the error alone tells (pingora's
    /// `RetryType`). The retry policy (``RetryPolicy``) adds the method, the body, the attempts
    /// and the budget.
    public enum Retryability: String, Hashable, Sendable {
        /// Another attempt would fail the same way, or could do harm: the client's own errors; a
        /// response-head timeout (the request may be running, and a retry doubles the load on a
        /// slow upstream); an invalid response (the app did answer); a failure after the response
        /// began.
        case never
        /// Nothing reached the upstream (the connect failed): any request may go again, its body
        /// is still whole in the queue.
        case always
        /// The request was sent, but the upstream guarantees it did not process it (HTTP/2
        /// `REFUSED_STREAM`): any method may go again, if its body can be replayed.
        case ifReplayable
        /// The request may have reached the app, which did not answer: only an idempotent request
        /// (RFC 9110 §9.2.2) may go again, and only if its body can be replayed. The classic case is
        /// a reused keep-alive connection that the upstream closed as the request went out: the
        /// request most likely never reached the app, but a POST cannot be sure of it.
        case ifIdempotent
    }

    /// Whether the failure may be retried (see ``Retryability``).
    public var retry: Retryability {
        switch self.code {
        case .badRequest, .headersTooLarge, .bodyTooLarge, .connectRefused, .foreignAbsoluteTarget, .expectationFailed, .requestTimeout,
            .noRoute, .upstreamTimeout, .upstreamFailedMidResponse, .upstreamBadResponse:
            .never
        case .upstreamConnectFailed: .always
        case .upstreamRefusedStream: .ifReplayable
        case .upstreamResetBeforeResponse: .ifIdempotent
        }
    }

    /// The plain-text body of the error response.
    public var responseBody: String { self.detail + "\n" }

    public var description: String { "\(self.source) error: \(self.detail)" }
}
