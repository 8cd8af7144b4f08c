// swift-tools-version:6.1
import PackageDescription

// Sluice's micro-benchmarks: a nested package, so the root package never depends on the benchmark
// machinery and `swift build` / `swift test` at the root stay as fast as they were.
// Run with `scripts/bench-micro.sh` (see Benchmarks/README.md).

let benchmark = Target.Dependency.product(name: "Benchmark", package: "benchmark")
let sluiceCore = Target.Dependency.product(name: "SluiceCore", package: "sluice")
let sluiceProxy = Target.Dependency.product(name: "SluiceProxy", package: "sluice")
let benchmarkPlugin = Target.PluginUsage.plugin(name: "BenchmarkPlugin", package: "benchmark")

let package = Package(
    name: "SluiceBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
        .package(name: "sluice", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // MARK: - Targets

        /// The configuration every benchmark uses (metrics, scaling, malloc thresholds).
        .target(
            name: "SluiceBenchmarkSupport",
            dependencies: [benchmark],
            path: "Benchmarks/SluiceBenchmarkSupport"
        ),
        /// The pure machines of SluiceCore (connection table, drain lifecycle, upstream pool), on
        /// the proxy's own instant and clock types (`MonotonicInstant`, `MonotonicClock`).
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [benchmark, "SluiceBenchmarkSupport", sluiceCore, sluiceProxy],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [benchmarkPlugin]
        ),
        /// The per-request head path: Sluice's HTTP/1 parser (and NIO's), `RequestRules.check`, `HeaderRules` rewrites.
        .executableTarget(
            name: "HTTPHeadBenchmarks",
            dependencies: [
                benchmark,
                "SluiceBenchmarkSupport",
                sluiceCore,
                sluiceProxy,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Benchmarks/HTTPHeadBenchmarks",
            plugins: [benchmarkPlugin]
        ),
    ]
)
