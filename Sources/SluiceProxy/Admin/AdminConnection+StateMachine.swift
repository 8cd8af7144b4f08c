/// Decides, for one admin connection, which request is answered next and when the connection closes.
///
/// Requests are answered one at a time in the order received (a pipelined request waits for the
/// answer before it; `/status` answers asynchronously). The connection closes after the answer to:
/// 1. a request that does not keep the connection alive (HTTP/1.0 without keep-alive, `Connection: close`);
/// 2. `CONNECT`: whatever the client sends after it may be tunnel bytes, not a request (the 405
///    says so with `Connection: close`);
/// 3. a request that could not be parsed: 400, or 431 when the head is too large; the parser
///    stops there, and the bytes after a bad head cannot be trusted to frame anything.
/// After a request that closes the connection, anything more that arrives is ignored.
///
/// Pure: the handler carries out each ``Action``.
struct AdminConnectionStateMachine<Request> {
    /// Why a request could not be parsed.
    enum Failure: Equatable {
        /// 400 Bad Request, with a short reason.
        case malformed(String)
        /// 431 Request Header Fields Too Large (the request line counts: Sluice's parser limits the whole head).
        case headTooLarge
    }

    enum Action {
        case none
        /// Answer `request`; `close`: with `Connection: close`, then close.
        case answer(Request, close: Bool)
        /// Answer the failure with `Connection: close`, then close.
        case fail(Failure)
        /// Close now (the input ended in the middle of a request).
        case close
    }

    private enum Pending {
        case request(Request, close: Bool)
        case failure(Failure)
    }

    private var pending: [Pending] = []
    private var answering = false
    /// An answer that ends the connection is queued or sent: nothing after it is answered.
    private var closing = false
    private var closed = false

    /// A complete request arrived.
    mutating func requestReceived(_ request: Request, keepAlive: Bool, isConnect: Bool) -> Action {
        guard !self.closing else { return .none }
        let close = !keepAlive || isConnect
        self.closing = close
        self.pending.append(.request(request, close: close))
        return self.next()
    }

    /// The parser failed; nothing more will be parsed.
    mutating func parseFailed(_ failure: Failure) -> Action {
        guard !self.closing else { return .none }
        self.closing = true
        self.pending.append(.failure(failure))
        return self.next()
    }

    /// The input ended in the middle of a request: the answers owed are given, then the connection closes.
    mutating func inputTruncated() -> Action {
        guard !self.closing else { return .none }
        self.closing = true
        guard self.answering || !self.pending.isEmpty else {
            self.closed = true
            return .close
        }
        return .none
    }

    /// The answer being written is complete (and was not one that closes).
    mutating func answerSent() -> Action {
        precondition(self.answering, "an answer was sent that was not begun")
        self.answering = false
        if self.pending.isEmpty, self.closing, !self.closed {
            // Truncated input after answered requests: nothing more to answer.
            self.closed = true
            return .close
        }
        return self.next()
    }

    private mutating func next() -> Action {
        guard !self.answering, !self.closed, !self.pending.isEmpty else { return .none }
        self.answering = true
        switch self.pending.removeFirst() {
        case .request(let request, let close):
            if close { self.closed = true }
            return .answer(request, close: close)
        case .failure(let failure):
            self.closed = true
            return .fail(failure)
        }
    }
}
