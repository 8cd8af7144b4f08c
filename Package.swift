// swift-tools-version:6.2
import PackageDescription

// MARK: - Shared settings

/// Our own targets build in Swift 6 language mode with every warning an error: NIO's API is
/// `@preconcurrency`, so isolation mistakes surface as warnings, not errors (DESIGN.md §7).
let strictSettings: [SwiftSetting] = [
    .treatAllWarnings(as: .error),
    .enableUpcomingFeature("ExistentialAny"),
]

let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: "swift-nio")
let nioEmbedded = Target.Dependency.product(name: "NIOEmbedded", package: "swift-nio")
let nioTLS = Target.Dependency.product(name: "NIOTLS", package: "swift-nio")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")
let x509 = Target.Dependency.product(name: "X509", package: "swift-certificates")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")

let package = Package(
    name: "sluice",
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceProxy", targets: ["SluiceProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // MARK: - Targets

        /// Pure decisions: drain lifecycle, connection table, upstream pool, config, header rules.
        .target(
            name: "SluiceCore",
            swiftSettings: strictSettings
        ),
        /// libnghttp2, seen only by SluiceHTTP2 (DESIGN.md §4).
        .systemLibrary(
            name: "CNghttp2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        /// The nghttp2 session wrapper, the HTTP/2 connection handler and the two-phase GOAWAY machine.
        .target(
            name: "SluiceHTTP2",
            dependencies: ["CNghttp2", "SluiceCore", nioCore],
            swiftSettings: strictSettings
        ),
        /// glibc's `mallinfo2` and `malloc_trim`, seen only by SluiceProxy's `MemoryRelease`.
        .systemLibrary(name: "CGlibcMalloc"),
        /// Listeners, HTTP/1 front end, forwarder, upstream pools, admin endpoints, metrics.
        .target(
            name: "SluiceProxy",
            dependencies: [
                "SluiceCore", "SluiceHTTP2", "CGlibcMalloc", nioCore, nioPosix, nioHTTP1, nioTLS, nioSSL, x509, logging, metrics, prometheus,
            ],
            swiftSettings: strictSettings
        ),
        /// posix_spawn, prctl and the wait-status macros, seen only by SluiceCLI's supervisor mode.
        .systemLibrary(name: "CProcess"),
        /// Command line, environment and YAML into a typed `Config`; `sluice demo`; supervisor mode.
        .target(
            name: "SluiceCLI",
            dependencies: [
                "SluiceCore", "SluiceProxy", "CProcess", nioCore, nioPosix, nioHTTP1, logging, metrics, prometheus,
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "sluice",
            dependencies: ["SluiceCLI"],
            swiftSettings: strictSettings
        ),

        // MARK: - Tests

        // Test-only helpers the test targets share (process runner, temporary files).
        .target(
            name: "SluiceTestSupport",
            path: "Tests/SluiceTestSupport",
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "SluiceCoreTests",
            dependencies: ["SluiceCore"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "SluiceHTTP2Tests",
            dependencies: ["SluiceHTTP2", "SluiceCore", "SluiceTestSupport", nioCore, nioPosix, nioEmbedded],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "SluiceProxyTests",
            dependencies: [
                "SluiceCore", "SluiceProxy", "SluiceCLI", "SluiceTestSupport", nioCore, nioPosix, nioHTTP1, nioEmbedded, nioTLS, nioSSL, x509, logging,
                metrics,
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: strictSettings
        ),
    ]
)
