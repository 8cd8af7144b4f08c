extension SluiceConfig {
    /// The flags' short form of the sidecar case (DESIGN.md §5): ``upstreams`` become the one
    /// group ``UpstreamGroup/defaultName`` with the global upstream settings (``upstream``), and one
    /// route, `/`, goes to it.
    public mutating func applyShortForm() {
        var group = UpstreamGroup(name: UpstreamGroup.defaultName, endpoints: self.upstreams)
        group.connection = self.upstream
        self.groups = [group]
        self.routes = [Route(upstream: UpstreamGroup.defaultName)]
    }
}
