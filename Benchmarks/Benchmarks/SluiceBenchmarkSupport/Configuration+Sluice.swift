import Benchmark

extension Benchmark.Configuration {
    /// Every Sluice micro-benchmark: time, throughput and mallocs per operation, with a checked-in
    /// threshold on mallocs only.
    ///
    /// 1. Metrics: wall clock, throughput and `mallocCountTotal`. (`cpuTotal` is left out: Linux
    ///    reports it in 10 ms ticks, longer than a whole sample here.)
    /// 2. `scalingFactor`: a sample runs the operation that many times (`benchmark.scaledIterations`);
    ///    the table divides by it, so it reads per operation (the `*` metrics).
    /// 3. Thresholds: only `mallocCountTotal`, compared at p90 against `Thresholds/*.p90.json`.
    ///    The recorded value is per *sample*, so the absolute tolerance is per sample too: with
    ///    `.kilo` it is 100 (0.1 malloc per operation passes, one more per operation fails); with
    ///    `.one` (whole-table operations) it is 2. No relative tolerance: package-benchmark flags a
    ///    metric when *either* bound is exceeded, so a relative one could only make it stricter.
    ///
    /// ```swift
    /// Benchmark.defaultConfiguration = .sluiceMicro(scalingFactor: .kilo)
    /// Benchmark("Sweep 10k", configuration: .sluiceMicro(scalingFactor: .one)) { benchmark in ... }
    /// ```
    public static func sluiceMicro(scalingFactor: BenchmarkScalingFactor) -> Self {
        let tolerance = scalingFactor == .one ? 2 : scalingFactor.rawValue / 10
        return .init(
            metrics: [.wallClock, .throughput, .mallocCountTotal],
            warmupIterations: 3,
            scalingFactor: scalingFactor,
            maxDuration: .milliseconds(750),
            maxIterations: 10_000,
            thresholds: [.mallocCountTotal: .init(absolute: [.p90: tolerance])]
        )
    }
}
