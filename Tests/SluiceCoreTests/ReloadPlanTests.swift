import SluiceCore
import Testing

@Suite struct ReloadPlanTests {
    static func config(_ configure: (inout SluiceConfig) -> Void = { _ in }) -> SluiceConfig {
        var config = SluiceConfig()
        config.listen = [Listener(HostPort(host: "0.0.0.0", port: 8080))]
        config.groups = [
            UpstreamGroup(name: "api", endpoints: [UpstreamURL(parsing: "http://10.0.0.1:3000")!]),
            UpstreamGroup(name: "web", endpoints: [UpstreamURL(parsing: "http://10.0.0.2:3000")!]),
        ]
        config.routes = [Route(path: .prefix("/api"), upstream: "api"), Route(upstream: "web")]
        configure(&config)
        return config
    }

    /// The same configuration again changes nothing and needs no restart.
    @Test func theSameConfigurationChangesNothing() {
        let plan = ReloadPlan(current: Self.config(), new: Self.config(), startedWith: Self.config())
        #expect(plan.changesNothing)
        #expect(plan.groupsKept == ["api", "web"])
        #expect(plan.needsRestart.isEmpty)
        #expect(plan.summary == "no change")
    }

    /// A route moved to another group keeps both groups.
    @Test func movingARouteKeepsEveryGroup() {
        let new = Self.config { $0.routes = [Route(upstream: "api")] }
        let plan = ReloadPlan(current: Self.config(), new: new, startedWith: Self.config())
        #expect(plan.groupsKept == ["api", "web"])
        #expect(plan.groupsReplaced.isEmpty && plan.groupsAdded.isEmpty && plan.groupsRemoved.isEmpty)
        #expect(plan.routesChanged)
        #expect(plan.summary == "routes changed")
    }

    /// A group with any setting changed is replaced; one gone is removed; a new one added.
    @Test func changedRemovedAndAddedGroups() {
        let new = Self.config {
            $0.groups[0].retries = 3
            $0.groups[1] = UpstreamGroup(name: "static", endpoints: [UpstreamURL(parsing: "h2c://10.0.0.3:50051")!])
            $0.routes = [Route(upstream: "static")]
        }
        let plan = ReloadPlan(current: Self.config(), new: new, startedWith: Self.config())
        #expect(plan.groupsKept.isEmpty)
        #expect(plan.groupsReplaced == ["api"])
        #expect(plan.groupsAdded == ["static"])
        #expect(plan.groupsRemoved == ["web"])
        #expect(plan.summary == "groups +static ~api -web; routes changed")
    }

    /// Listen addresses open and close by their configured HOST:PORT.
    @Test func listenersOpenAndClose() {
        let new = Self.config { $0.listen = [Listener(HostPort(host: "0.0.0.0", port: 8081)), Listener(HostPort(host: "127.0.0.1", port: 0))] }
        let plan = ReloadPlan(current: Self.config(), new: new, startedWith: Self.config())
        #expect(plan.listenersToOpen.map(\.address) == [HostPort(host: "0.0.0.0", port: 8081), HostPort(host: "127.0.0.1", port: 0)])
        #expect(plan.listenersToClose.map(\.address) == [HostPort(host: "0.0.0.0", port: 8080)])
        #expect(plan.summary == "listen +0.0.0.0:8081 +127.0.0.1:0 -0.0.0.0:8080")
    }

    /// A kept address whose TLS settings changed (or that turned TLS on) is listed as changed, not
    /// reopened; unchanged TLS listeners are not listed.
    @Test func listenersWithChangedTLSAreChangedNotReopened() {
        let tls = TLSSettings(certificates: [.init(cert: "/a.crt", key: "/a.key")])
        let secure = HostPort(host: "0.0.0.0", port: 8443)
        let current = Self.config { $0.listen.append(Listener(secure, tls: tls)) }
        #expect(ReloadPlan(current: current, new: current, startedWith: current).changesNothing)

        var rotated = tls
        rotated.certificates.append(.init(cert: "/b.crt", key: "/b.key"))
        let new = Self.config { $0.listen = [Listener(HostPort(host: "0.0.0.0", port: 8080), tls: tls), Listener(secure, tls: rotated)] }
        let plan = ReloadPlan(current: current, new: new, startedWith: current)
        #expect(plan.listenersToOpen.isEmpty && plan.listenersToClose.isEmpty)
        #expect(plan.listenersChanged == new.listen)
        #expect(plan.summary == "listen ~0.0.0.0:8080 (tls) ~0.0.0.0:8443 (tls)")
    }

    /// Restart-only settings are compared with the start-up configuration, not the one in force:
    /// a value changed back to the start-up one needs no restart any more.
    @Test func restartOnlySettingsAreComparedWithTheStartUpConfiguration() {
        let startedWith = Self.config()
        let new = Self.config {
            $0.threads = 8
            $0.admin = HostPort(host: "127.0.0.1", port: 9902)
            $0.drain.delay = .seconds(9)
            $0.http.maxConnections = 100
            $0.http.tunnelIdleTimeout = .seconds(60)
            $0.logging.level = .debug
            $0.http.maxBodyBytes = 1024
        }
        let plan = ReloadPlan(current: startedWith, new: new, startedWith: startedWith)
        #expect(plan.needsRestart == ["threads", "admin", "drain-delay", "tunnel-idle-timeout", "max-connections", "log-level"])
        // max-body-size is the routes' business: it applies.
        #expect(plan.routesChanged)
        let back = ReloadPlan(current: new, new: startedWith, startedWith: startedWith)
        #expect(back.needsRestart.isEmpty)
    }
}
