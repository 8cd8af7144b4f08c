import Logging
import NIOCore
import SluiceCore

/// One event loop's connections to one `https://` endpoint: an ``HTTP1EndpointPool`` or an
/// ``HTTP2EndpointPool`` over TLS, whichever the endpoint's ALPN answer asks for.
///
/// 1. **Learning.** Until the protocol is known, the first lease opens a probe connection that
///    offers `h2` and `http/1.1`; leases wait for its handshake (``UpstreamLease/connecting``).
///    ALPN `h2` makes the endpoint HTTP/2, anything else (`http/1.1`, no ALPN) HTTP/1.1. The probe
///    carries no request and is closed (`close_notify`): the waiting requests then lease from the
///    learned pool, like any later request. (One extra handshake per endpoint and loop, once.)
/// 2. A failed probe (refused, TLS verification or handshake failure) fails the waiting leases
///    as a connect failure (502, retryable) and the next lease probes again.
/// 3. **Re-learning.** An HTTP/2 connection whose handshake chooses another protocol (the endpoint
///    stopped offering `h2`, ``UpstreamALPNMismatch``) fails as a connect failure, and the next
///    lease probes again. An HTTP/1.1 endpoint that starts offering `h2` stays HTTP/1.1 until the
///    pool is replaced (reload, DNS change).
/// 4. **Upgrades.** A request that must switch protocols (``UpstreamLeaseRequester/needsHTTP1``: an
///    HTTP/1.1 `Upgrade`, a WebSocket) always gets an HTTP/1.1 connection, whose handshake offers
///    `http/1.1` only; HTTP/2 has no `101`. The group's ``LoopUpstreamGroup/isHTTP2`` is false, so
///    the downstream side keeps the upgrade pair and translates RFC 8441 CONNECTs into HTTP/1.1 upgrades.
final class HTTPSEndpointPool: EndpointPool {
    enum LearnedProtocol: String {
        case http1 = "http/1.1"
        case http2 = "h2"
    }

    private enum State {
        /// Nothing known: the next lease starts a probe.
        case unknown
        /// A probe is connecting; these leases wait for its answer.
        case learning([any UpstreamLeaseRequester])
        /// Leases go to the pool of this protocol.
        case known(LearnedProtocol)
    }

    let endpoint: UpstreamURL
    private let http1: HTTP1EndpointPool
    private let http2: HTTP2EndpointPool
    private let probeConnector: UpstreamConnector
    private let logger: Logger
    private var state = State.unknown
    private var probeStats = EndpointPoolStats()

    init(
        endpoint: UpstreamURL, eventLoop: any EventLoop, settings: SluiceConfig.Upstream, idGenerator: ConnectionID.Generator, logger: Logger,
        group: String, client: Result<UpstreamTLSClient, UpstreamTLSFailure>, serverName: String?, metrics: ProxyMetrics? = nil
    ) {
        self.endpoint = endpoint
        self.logger = logger
        func tls(_ offer: UpstreamConnector.TLS.Offer) -> UpstreamConnector.TLS {
            UpstreamConnector.TLS(client: client, offer: offer, serverName: serverName, group: group, metrics: metrics)
        }
        self.http1 = HTTP1EndpointPool(endpoint: endpoint, eventLoop: eventLoop, settings: settings, idGenerator: idGenerator, logger: logger, tls: tls(.http1Only))
        self.http2 = HTTP2EndpointPool(endpoint: endpoint, eventLoop: eventLoop, settings: settings, idGenerator: idGenerator, logger: logger, tls: tls(.negotiate))
        self.probeConnector = UpstreamConnector(endpoint: endpoint, eventLoop: eventLoop, connectTimeout: settings.connectTimeout, tls: tls(.negotiate))
        self.http2.protocolChanged = { [weak self] in
            guard let self, case .known(.http2) = self.state else { return }
            self.state = .unknown
        }
    }

    /// What the endpoint speaks, once learned (tests, `/status`).
    var learnedProtocol: LearnedProtocol? {
        if case .known(let learned) = self.state { return learned }
        return nil
    }

    func lease(for requester: any UpstreamLeaseRequester, now: MonotonicInstant) -> UpstreamLease {
        self.probeConnector.eventLoop.assertInEventLoop()
        if requester.needsHTTP1 { return self.http1.lease(for: requester, now: now) }
        switch self.state {
        case .known(.http1):
            return self.http1.lease(for: requester, now: now)
        case .known(.http2):
            return self.http2.lease(for: requester, now: now)
        case .learning(var waiting):
            self.state = .unknown  // no copy of the array while it grows
            waiting.append(requester)
            self.state = .learning(waiting)
            return .connecting
        case .unknown:
            self.state = .learning([requester])
            self.probe()
            return .connecting
        }
    }

    private func probe() {
        let negotiated = NIOLoopBoundBox<String?>(nil, eventLoop: self.probeConnector.eventLoop)
        self.probeConnector.connect { _, chosen in
            negotiated.value = chosen
        }.assumeIsolated().whenComplete { result in
            guard case .learning(let waiting) = self.state else { preconditionFailure("only a probe leaves the learning state") }
            switch result {
            case .success(let channel):
                channel.close(promise: nil)
                let learned: LearnedProtocol = negotiated.value == "h2" ? .http2 : .http1
                self.state = .known(learned)
                self.logger.debug(
                    "upstream protocol learned by ALPN",
                    metadata: ["upstream": "\(self.endpoint)", "alpn": "\(negotiated.value ?? "none")", "protocol": "\(learned.rawValue)"])
                let now = MonotonicInstant.now()
                for requester in waiting {
                    switch self.lease(for: requester, now: now) {
                    case .ready(let exchange):
                        if !requester.upstreamConnected(exchange) { exchange.release(reusable: true, now: now) }
                    case .connecting:
                        break
                    }
                }
            case .failure(let error):
                self.state = .unknown
                self.probeStats.connectErrors += 1
                self.probeConnector.logConnectFailure(error, logger: self.logger)
                for requester in waiting { requester.upstreamConnectFailed(.upstreamConnectFailed("\(self.endpoint): \(error)")) }
            }
        }
    }

    func sweep(now: MonotonicInstant) {
        self.http1.sweep(now: now)
        self.http2.sweep(now: now)
    }

    func shutdown() {
        self.http1.shutdown()
        self.http2.shutdown()
    }

    func counts() -> (idle: Int, busy: Int) {
        let one = self.http1.counts()
        let two = self.http2.counts()
        return (one.idle + two.idle, one.busy + two.busy)
    }

    var stats: EndpointPoolStats { self.probeStats + self.http1.stats + self.http2.stats }
}
