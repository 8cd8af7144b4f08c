import NIOCore
import SluiceHTTP2
import Testing

/// A client and a server session wired back to back in memory.
final class SessionPair {
    let client: NGHTTP2Session
    let server: NGHTTP2Session
    var clientEvents: [HTTP2SessionEvent] = []
    var serverEvents: [HTTP2SessionEvent] = []

    init(client: HTTP2SessionConfiguration = .init(), server: HTTP2SessionConfiguration = .init()) throws {
        self.client = try NGHTTP2Session(role: .client, configuration: client)
        self.server = try NGHTTP2Session(role: .server, configuration: server)
    }

    /// Moves bytes both ways until neither side has anything to send (at most 1000 rounds).
    func pump() throws {
        for _ in 0..<1000 {
            let toServer = try Self.output(of: self.client)
            if toServer.readableBytes > 0 { try self.server.receive(toServer) }
            let toClient = try Self.output(of: self.server)
            if toClient.readableBytes > 0 { try self.client.receive(toClient) }
            while let event = self.client.nextEvent() { self.clientEvents.append(event) }
            while let event = self.server.nextEvent() { self.serverEvents.append(event) }
            if toServer.readableBytes == 0 && toClient.readableBytes == 0 { return }
        }
        Issue.record("sessions did not quiesce in 1000 rounds")
    }

    static func output(of session: NGHTTP2Session) throws -> ByteBuffer {
        var buffer = ByteBuffer()
        while try session.pendingOutput(into: &buffer) {}
        return buffer
    }

    /// The body bytes `events` carry for `stream`, concatenated.
    static func body(_ events: [HTTP2SessionEvent], stream: HTTP2StreamID) -> String {
        var body = ""
        for case .data(let id, let buffer) in events where id == stream {
            body += String(buffer: buffer)
        }
        return body
    }

    /// The events that concern streams, without connection-level bookkeeping.
    static func streamEvents(_ events: [HTTP2SessionEvent]) -> [HTTP2SessionEvent] {
        events.filter {
            switch $0 {
            case .settingsSent, .settingsReceived, .settingsAckReceived: false
            default: true
            }
        }
    }
}

func buffer(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }

@Suite struct NGHTTP2SessionTests {
    let get = HTTP2RequestHead(
        method: "GET", scheme: "http", authority: "example.test", path: "/hello",
        headers: [HTTP2HeaderField(name: "user-agent", value: "test"), HTTP2HeaderField(name: "accept", value: "*/*")]
    )

    /// A request reaches the server with its pseudo-headers and fields; the response with a body and
    /// trailers reaches the client, and both sides see the stream close.
    @Test func requestAndResponseWithTrailersRoundTrip() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        #expect(SessionPair.streamEvents(pair.serverEvents) == [.requestHead(id, self.get, endStream: true)])

        try pair.server.submitResponse(
            streamID: id, status: 200, headers: [HTTP2HeaderField(name: "content-type", value: "text/plain")], endStream: false
        )
        try pair.server.submitData(streamID: id, buffer("hello, "), endStream: false)
        try pair.server.submitData(streamID: id, buffer("world"), endStream: false)
        try pair.server.submitTrailers(streamID: id, [HTTP2HeaderField(name: "x-checksum", value: "42")])
        try pair.pump()

        let clientEvents = SessionPair.streamEvents(pair.clientEvents)
        #expect(clientEvents.first == .responseHead(id, HTTP2ResponseHead(status: 200, headers: [HTTP2HeaderField(name: "content-type", value: "text/plain")]), endStream: false))
        #expect(SessionPair.body(clientEvents, stream: id) == "hello, world")
        #expect(clientEvents.suffix(2) == [.trailers(id, [HTTP2HeaderField(name: "x-checksum", value: "42")]), .streamClosed(id, .noError)])
        #expect(pair.serverEvents.last == .streamClosed(id, .noError))
    }

    /// Issue 14 item 6: informational heads (103 with its `link`, 100) go out as HEADERS frames without
    /// END_STREAM and reach the client session as interim heads, in order, before the final head.
    @Test func informationalHeadsReachTheClientBeforeTheFinalHead() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        let link = HTTP2HeaderField(name: "link", value: "</style.css>; rel=preload; as=style")
        try pair.server.submitInformationalResponse(streamID: id, status: 103, headers: [link])
        try pair.server.submitInformationalResponse(streamID: id, status: 100)
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        try pair.server.submitData(streamID: id, buffer("body"), endStream: true)
        try pair.pump()
        let events = SessionPair.streamEvents(pair.clientEvents)
        #expect(Array(events.prefix(3)) == [
            .interimResponseHead(id, HTTP2ResponseHead(status: 103, headers: [link])),
            .interimResponseHead(id, HTTP2ResponseHead(status: 100)),
            .responseHead(id, HTTP2ResponseHead(status: 200), endStream: false),
        ])
        #expect(SessionPair.body(events, stream: id) == "body")
        #expect(events.last == .streamClosed(id, .noError))
    }

    /// Any number of interim heads pass the session (the cap is the proxy's): 40 × 103, then the final head.
    @Test func manyInformationalHeadsPass() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        for _ in 0..<40 {
            try pair.server.submitInformationalResponse(streamID: id, status: 103, headers: [HTTP2HeaderField(name: "link", value: "</a.css>; rel=preload")])
        }
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 204, headers: [], endStream: true)
        try pair.pump()
        let interim = pair.clientEvents.filter { if case .interimResponseHead = $0 { true } else { false } }
        #expect(interim.count == 40, "\(pair.clientEvents)")
        #expect(pair.clientEvents.contains(.responseHead(id, HTTP2ResponseHead(status: 204), endStream: true)))
    }

    /// A POST body arrives as data events followed by endStream.
    @Test func requestBodyArrivesThenEndStream() throws {
        let pair = try SessionPair()
        var post = self.get
        post.method = "POST"
        let id = try pair.client.submitRequest(post, endStream: false)
        try pair.client.submitData(streamID: id, buffer("abc"), endStream: false)
        try pair.client.submitData(streamID: id, buffer("def"), endStream: true)
        try pair.pump()
        let events = SessionPair.streamEvents(pair.serverEvents)
        #expect(events.first == .requestHead(id, post, endStream: false))
        #expect(SessionPair.body(events, stream: id) == "abcdef")
        #expect(events.last == .endStream(id))
    }

    /// A response whose body is not yet submitted is deferred, and resumes when data arrives.
    @Test func deferredDataResumesWhenSubmitted() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        try pair.pump()
        #expect(SessionPair.streamEvents(pair.clientEvents) == [.responseHead(id, HTTP2ResponseHead(status: 200), endStream: false)])
        try pair.server.submitData(streamID: id, buffer("late"), endStream: true)
        try pair.pump()
        let events = SessionPair.streamEvents(pair.clientEvents)
        #expect(SessionPair.body(events, stream: id) == "late")
        #expect(events.suffix(2) == [.endStream(id), .streamClosed(id, .noError)])
    }

    /// The server session's events about `stream`'s flow control and writability, in order.
    private static func sendSide(_ events: [HTTP2SessionEvent], _ stream: HTTP2StreamID) -> [HTTP2SessionEvent] {
        events.filter {
            switch $0 {
            case .streamFlowControlChanged(let id, _), .streamWritabilityChanged(let id, _): id == stream
            default: false
            }
        }
    }

    /// Issue 14 item 5: a client that advertises SETTINGS_INITIAL_WINDOW_SIZE 0 and never opens it:
    /// the first bytes submitted make the stream blocked and not writable (its owner stops reading
    /// the upstream), nothing is sent, and a reset drops the queued bytes at once.
    @Test func closedWindowBlocksTheStreamAndHoldsOnlyWhatWasSubmitted() throws {
        let pair = try SessionPair(client: .init(initialWindowSize: 0))
        try pair.pump()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        try pair.server.submitData(streamID: id, ByteBuffer(repeating: 1, count: 2048), endStream: false)
        #expect(!pair.server.isWritable(streamID: id))
        #expect(pair.server.isFlowControlBlocked(streamID: id))
        try pair.pump()
        #expect(Self.sendSide(pair.serverEvents, id) == [.streamFlowControlChanged(id, isBlocked: true), .streamWritabilityChanged(id, isWritable: false)])
        #expect(SessionPair.body(pair.clientEvents, stream: id).isEmpty)
        #expect(pair.server.totalQueuedBytes == 2048)

        pair.server.submitReset(streamID: id, errorCode: .cancel)
        #expect(pair.server.totalQueuedBytes == 0)
        try pair.pump()
        #expect(pair.clientEvents.last == .streamClosed(id, .cancel))
        #expect(pair.serverEvents.last == .streamClosed(id, .cancel))
    }

    /// Each window the client opens is progress (unblocked) and, with bytes left over, blocked again;
    /// the last bytes end the stream.
    @Test func openingTheWindowIsProgress() throws {
        let pair = try SessionPair(client: .init(initialWindowSize: 1000))
        try pair.pump()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        try pair.server.submitData(streamID: id, ByteBuffer(repeating: 1, count: 2500), endStream: true)
        #expect(pair.server.isWritable(streamID: id))  // The window is open when the bytes are submitted.
        try pair.pump()
        #expect(SessionPair.body(pair.clientEvents, stream: id).count == 1000)
        #expect(Self.sendSide(pair.serverEvents, id) == [.streamFlowControlChanged(id, isBlocked: true), .streamWritabilityChanged(id, isWritable: false)])
        for _ in 0..<2 {
            try pair.client.consume(streamID: id, bytes: 1000)
            try pair.pump()
        }
        #expect(SessionPair.body(pair.clientEvents, stream: id).count == 2500)
        #expect(Self.sendSide(pair.serverEvents, id) == [
            .streamFlowControlChanged(id, isBlocked: true), .streamWritabilityChanged(id, isWritable: false),
            .streamFlowControlChanged(id, isBlocked: false), .streamFlowControlChanged(id, isBlocked: true),
            .streamFlowControlChanged(id, isBlocked: false),
        ])
        #expect(pair.serverEvents.last == .streamClosed(id, .noError))
        #expect(pair.server.totalQueuedBytes == 0)
    }

    /// Over the connection's budget a stream that queues more is not writable, even with its own queue
    /// under the stream watermark; it is writable again once the queues are back under half the budget.
    @Test func connectionBudgetHoldsStreamsUntilHalfOfItIsFree() throws {
        let pair = try SessionPair(server: .init(connectionHighWatermark: 10_000))
        try pair.pump()
        let first = try pair.client.submitRequest(self.get, endStream: true)
        let second = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        for id in [first, second] {
            try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
            try pair.server.submitData(streamID: id, ByteBuffer(repeating: 1, count: 6000), endStream: false)
        }
        #expect(pair.server.totalQueuedBytes == 12_000)
        #expect(pair.server.isWritable(streamID: first))
        #expect(!pair.server.isWritable(streamID: second))
        try pair.pump()
        #expect(pair.server.totalQueuedBytes == 0)
        #expect(Self.sendSide(pair.serverEvents, second) == [.streamWritabilityChanged(second, isWritable: false), .streamWritabilityChanged(second, isWritable: true)])
        #expect(Self.sendSide(pair.serverEvents, first).isEmpty)
    }

    /// The receive window opens only as bytes are consumed: a 1000-byte window lets 1000 bytes through,
    /// and consuming them lets the rest follow.
    @Test func receiveWindowOpensOnlyOnConsume() throws {
        let pair = try SessionPair(server: .init(initialWindowSize: 1000))
        try pair.pump()  // Until the client has the server's SETTINGS, it may use the default 65 535.
        var post = self.get
        post.method = "POST"
        let id = try pair.client.submitRequest(post, endStream: false)
        try pair.client.submitData(streamID: id, ByteBuffer(repeating: 0x61, count: 5000), endStream: true)
        try pair.pump()
        #expect(SessionPair.body(pair.serverEvents, stream: id).count == 1000)
        // WINDOW_UPDATE is sent once half the window is consumed.
        var delivered = 1000
        var consumed = 0
        for _ in 0..<100 where delivered < 5000 || consumed < delivered {
            try pair.server.consume(streamID: id, bytes: delivered - consumed)
            consumed = delivered
            try pair.pump()
            delivered = SessionPair.body(pair.serverEvents, stream: id).count
        }
        #expect(delivered == 5000)
        #expect(pair.serverEvents.contains(.endStream(id)))
    }

    /// Bytes a closed stream never consumed go back to the connection window, so later streams are not starved.
    @Test func unconsumedBytesOfClosedStreamReturnToConnection() throws {
        let pair = try SessionPair(server: .init(initialWindowSize: 65_535, connectionWindowSize: 65_535))
        var post = self.get
        post.method = "POST"
        let first = try pair.client.submitRequest(post, endStream: false)
        try pair.client.submitData(streamID: first, ByteBuffer(repeating: 0x61, count: 60_000), endStream: false)
        try pair.pump()
        #expect(SessionPair.body(pair.serverEvents, stream: first).count == 60_000)
        pair.client.submitReset(streamID: first, errorCode: .cancel)
        try pair.pump()
        #expect(pair.serverEvents.contains(.resetReceived(first, .cancel)))
        #expect(pair.serverEvents.contains(.streamClosed(first, .cancel)))

        let second = try pair.client.submitRequest(post, endStream: false)
        try pair.client.submitData(streamID: second, ByteBuffer(repeating: 0x62, count: 60_000), endStream: true)
        try pair.pump()
        let secondBody = SessionPair.body(pair.serverEvents, stream: second).count
        #expect(secondBody > 5535, "the connection window was not returned: only \(secondBody) bytes arrived")
        try pair.server.consume(streamID: second, bytes: secondBody)
        try pair.pump()
        #expect(SessionPair.body(pair.serverEvents, stream: second).count == 60_000)
    }

    /// Queuing more than the high watermark makes the stream unwritable; draining to half makes it writable again.
    @Test func writabilityFollowsQueuedBytes() throws {
        let pair = try SessionPair(server: .init(streamHighWatermark: 16_384))
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        try pair.server.submitData(streamID: id, ByteBuffer(repeating: 1, count: 10_000), endStream: false)
        #expect(pair.server.isWritable(streamID: id))
        try pair.server.submitData(streamID: id, ByteBuffer(repeating: 2, count: 10_000), endStream: false)
        #expect(!pair.server.isWritable(streamID: id))
        #expect(pair.server.queuedBytes(streamID: id) == 20_000)
        #expect(pair.server.nextEvent() == .streamWritabilityChanged(id, isWritable: false))
        try pair.pump()
        #expect(pair.server.isWritable(streamID: id))
        #expect(pair.serverEvents.contains(.streamWritabilityChanged(id, isWritable: true)))
        #expect(SessionPair.body(pair.clientEvents, stream: id).count == 20_000)
    }

    /// Header names are lowercased and connection-specific fields are dropped on the way out.
    @Test func outgoingHeadersAreNormalised() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(
            streamID: id, status: 204,
            headers: [
                HTTP2HeaderField(name: "Content-Type", value: "text/plain"),
                HTTP2HeaderField(name: "Connection", value: "close"),
                HTTP2HeaderField(name: "Keep-Alive", value: "timeout=5"),
                HTTP2HeaderField(name: "Transfer-Encoding", value: "chunked"),
                HTTP2HeaderField(name: "Set-Cookie", value: "a=b", neverIndex: true),
            ],
            endStream: true
        )
        try pair.pump()
        #expect(SessionPair.streamEvents(pair.clientEvents).first == .responseHead(
            id,
            HTTP2ResponseHead(status: 204, headers: [HTTP2HeaderField(name: "content-type", value: "text/plain"), HTTP2HeaderField(name: "set-cookie", value: "a=b")]),
            endStream: true
        ))
    }

    /// A RST_STREAM from the client reaches the server as a reset and a close with its code; data for the
    /// reset stream is then dropped.
    @Test func clientResetIsReported() throws {
        let pair = try SessionPair()
        var post = self.get
        post.method = "POST"
        let id = try pair.client.submitRequest(post, endStream: false)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        pair.client.submitReset(streamID: id, errorCode: .cancel)
        try pair.pump()
        #expect(SessionPair.streamEvents(pair.serverEvents).suffix(2) == [.resetReceived(id, .cancel), .streamClosed(id, .cancel)])
        #expect(try !pair.server.submitData(streamID: id, buffer("gone"), endStream: true))
    }

    /// The shutdown notice and a final GOAWAY reach the client with their last-stream-ids; PINGs are acked
    /// with their payload.
    @Test func goAwayAndPingRoundTrip() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitShutdownNotice(followedByPing: 0x0102_0304_0506_0708)
        try pair.pump()
        // The PING follows the notice on the wire (libnghttp2 would send a PING submitted with it first).
        let notice = try #require(pair.clientEvents.firstIndex(of: .goAwayReceived(lastStreamID: .maxID, errorCode: .noError)))
        let ping = try #require(pair.clientEvents.firstIndex(of: .pingReceived(payload: 0x0102_0304_0506_0708)))
        #expect(notice < ping)
        try pair.server.submitGoAway(lastStreamID: id, errorCode: .noError)
        try pair.pump()
        let goAways = pair.clientEvents.filter { if case .goAwayReceived = $0 { true } else { false } }
        #expect(goAways == [.goAwayReceived(lastStreamID: .maxID, errorCode: .noError), .goAwayReceived(lastStreamID: id, errorCode: .noError)])
        #expect(pair.clientEvents.contains(.pingReceived(payload: 0x0102_0304_0506_0708)))
        #expect(pair.serverEvents.contains(.pingAckReceived(payload: 0x0102_0304_0506_0708)))
        #expect(pair.serverEvents.contains(.goAwaySent(lastStreamID: .maxID, errorCode: .noError)))
        #expect(pair.serverEvents.contains(.goAwaySent(lastStreamID: id, errorCode: .noError)))
        #expect(pair.server.lastProcessedStreamID == id)
    }

    /// SETTINGS go out at start and are acknowledged by the peer.
    @Test func settingsAreSentAndAcked() throws {
        let pair = try SessionPair()
        try pair.pump()
        #expect(pair.serverEvents.contains(.settingsSent))
        #expect(pair.serverEvents.contains(.settingsReceived))
        #expect(pair.serverEvents.contains(.settingsAckReceived))
    }

    /// RFC 8441: the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL; an extended CONNECT reaches it
    /// with its `:protocol`, `:scheme` and `:path`; a 200 without END_STREAM opens a tunnel whose DATA
    /// flows both ways and ends with END_STREAM from each side.
    @Test func extendedConnectIsAdvertisedAndCarriesATunnel() throws {
        let pair = try SessionPair()
        try pair.pump()
        #expect(pair.client.remoteEnablesConnectProtocol)
        #expect(!pair.server.remoteEnablesConnectProtocol)  // a client does not advertise it
        let connect = HTTP2RequestHead(
            method: "CONNECT", scheme: "http", authority: "example.test", path: "/chat", extendedProtocol: "websocket",
            headers: [HTTP2HeaderField(name: "sec-websocket-version", value: "13")]
        )
        let id = try pair.client.submitRequest(connect, endStream: false)
        try pair.pump()
        #expect(SessionPair.streamEvents(pair.serverEvents) == [.requestHead(id, connect, endStream: false)])
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        try pair.client.submitData(streamID: id, buffer("ping"), endStream: false)
        try pair.pump()
        try pair.server.submitData(streamID: id, buffer("pong"), endStream: false)
        try pair.client.submitData(streamID: id, buffer(""), endStream: true)
        try pair.pump()
        try pair.server.submitData(streamID: id, buffer(""), endStream: true)
        try pair.pump()
        #expect(SessionPair.body(pair.serverEvents, stream: id) == "ping")
        #expect(SessionPair.body(pair.clientEvents, stream: id) == "pong")
        #expect(pair.clientEvents.contains(.responseHead(id, HTTP2ResponseHead(status: 200), endStream: false)))
        #expect(pair.serverEvents.contains(.endStream(id)))
        #expect(pair.serverEvents.last == .streamClosed(id, .noError))
        #expect(pair.clientEvents.last == .streamClosed(id, .noError))
    }

    /// `:protocol` stays malformed (a stream PROTOCOL_ERROR, never reported) on a request other than
    /// CONNECT, and on any request when the server does not advertise extended CONNECT; plain CONNECT
    /// (no `:protocol`) still reaches the server, which refuses it itself.
    @Test func protocolPseudoHeaderOutsideExtendedConnectIsMalformed() throws {
        var get = self.get
        get.extendedProtocol = "websocket"
        let connect = HTTP2RequestHead(method: "CONNECT", scheme: "http", authority: "example.test", path: "/chat", extendedProtocol: "websocket")
        let plainConnect = HTTP2RequestHead(method: "CONNECT", authority: "example.test:443")
        for (head, enabled) in [(get, true), (connect, false)] {
            let pair = try SessionPair(server: .init(enableConnectProtocol: enabled))
            try pair.pump()
            #expect(pair.client.remoteEnablesConnectProtocol == enabled)
            let id = try pair.client.submitRequest(head, endStream: true)
            try pair.pump()
            #expect(!pair.serverEvents.contains { if case .requestHead = $0 { true } else { false } }, "\(head.method) enabled=\(enabled)")
            #expect(pair.clientEvents.contains(.streamClosed(id, .protocolError)), "\(pair.clientEvents)")
        }
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(plainConnect, endStream: false)
        try pair.pump()
        #expect(SessionPair.streamEvents(pair.serverEvents) == [.requestHead(id, plainConnect, endStream: false)])
    }

    /// A request head over the advertised header list size is reset and never reported.
    @Test func oversizedHeaderListIsReset() throws {
        let pair = try SessionPair(server: .init(maxHeaderListSize: 1024))
        var big = self.get
        big.headers.append(HTTP2HeaderField(name: "x-big", value: String(repeating: "x", count: 2000)))
        let id = try pair.client.submitRequest(big, endStream: true)
        try pair.pump()
        #expect(!pair.serverEvents.contains { if case .requestHead = $0 { true } else { false } })
        #expect(pair.clientEvents.contains { if case .streamClosed(id, let code) = $0 { code != .noError } else { false } })
    }

    /// Bytes that are not the HTTP/2 preface fail the server session.
    @Test func http1BytesAreBadInput() throws {
        let server = try NGHTTP2Session(role: .server)
        #expect(throws: HTTP2SessionError.badInput(libraryErrorNumber: nil, message: "")) {
            try server.receive(buffer("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        }
    }

    /// Submitting a second response head on a stream is refused.
    @Test func secondResponseHeadIsRefused() throws {
        let pair = try SessionPair()
        let id = try pair.client.submitRequest(self.get, endStream: true)
        try pair.pump()
        try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        #expect(throws: HTTP2SessionError.invalidStreamState("")) {
            try pair.server.submitResponse(streamID: id, status: 200, headers: [], endStream: false)
        }
    }

    /// Request trailers end the request: body, then the trailers event, no separate endStream.
    @Test func requestTrailersEndTheRequest() throws {
        let pair = try SessionPair()
        var post = self.get
        post.method = "POST"
        let id = try pair.client.submitRequest(post, endStream: false)
        try pair.client.submitData(streamID: id, buffer("payload"), endStream: false)
        try pair.client.submitTrailers(streamID: id, [HTTP2HeaderField(name: "grpc-status", value: "0")])
        try pair.pump()
        let events = SessionPair.streamEvents(pair.serverEvents)
        #expect(SessionPair.body(events, stream: id) == "payload")
        #expect(events.last == .trailers(id, [HTTP2HeaderField(name: "grpc-status", value: "0")]))
        #expect(!events.contains(.endStream(id)))
    }

    /// A 100 Continue reaches a client session as nothing: only the final head is reported.
    @Test func informationalHeadIsNotReportedAsResponse() throws {
        let pair = try SessionPair()
        var post = self.get
        post.method = "POST"
        post.headers.append(HTTP2HeaderField(name: "expect", value: "100-continue"))
        let id = try pair.client.submitRequest(post, endStream: false)
        try pair.pump()
        try pair.server.submitInformationalResponse(streamID: id, status: 100)
        try pair.pump()
        #expect(!pair.clientEvents.contains { if case .responseHead = $0 { true } else { false } })
        try pair.server.submitResponse(streamID: id, status: 201, headers: [], endStream: true)
        try pair.pump()
        #expect(pair.clientEvents.contains(.responseHead(id, HTTP2ResponseHead(status: 201), endStream: true)))
    }
}
