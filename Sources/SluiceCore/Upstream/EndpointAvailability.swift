/// Whether the balancer may pick an endpoint: the one place where active health and passive
/// outlier detection are combined.
///
/// 1. An endpoint is available when its health is not ``EndpointHealth/unhealthy`` (unknown counts
///    as available, so a start or a reload does not empty a group) and it is not ejected.
/// 2. A group without health checks (`health:` absent) treats every endpoint as healthy; one
///    without outlier detection ejects none.
/// 3. When no endpoint is available, the balancer's panic mode picks among all of them: that is
///    the balancer's decision, not this one's.
///
/// ```swift
/// let available = EndpointAvailability.list(keys, health: group.healthMachine, outliers: group.outlierDetector)
/// balancer.setAvailability(available)           // one Bool per endpoint, in the balancer's order
/// ```
public enum EndpointAvailability {
    /// One endpoint: available unless unhealthy or ejected. `health == nil`: not checked (no
    /// health checks, or the endpoint is not known to them yet), which counts as available.
    @inlinable
    public static func isAvailable(health: EndpointHealth?, ejected: Bool) -> Bool {
        guard !ejected else { return false }
        switch health {
        case .unhealthy: return false
        case .unknown, .healthy, nil: return true
        }
    }

    /// One Bool per endpoint of `endpoints`, in order, for the balancer.
    /// - Parameters:
    ///   - health: the group's health checks; `nil` when the group has none.
    ///   - outliers: the group's outlier detector; `nil` when it is off.
    public static func list<Endpoint, Instant>(
        _ endpoints: [Endpoint],
        health: HealthCheckStateMachine<Endpoint, Instant>?,
        outliers: OutlierDetector<Endpoint, Instant>?
    ) -> [Bool] where Instant.Duration == Duration {
        endpoints.map { endpoint in
            Self.isAvailable(health: health?.health(of: endpoint), ejected: outliers?.isEjected(endpoint) ?? false)
        }
    }

    /// The same from published snapshots (what each loop holds): the health of the checked
    /// endpoints and the set of ejected ones.
    public static func list<Endpoint>(
        _ endpoints: [Endpoint],
        health: [Endpoint: EndpointHealth],
        ejected: Set<Endpoint>
    ) -> [Bool] {
        endpoints.map { Self.isAvailable(health: health[$0], ejected: ejected.contains($0)) }
    }
}
