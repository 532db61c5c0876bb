// swift-tools-version:6.1
import PackageDescription

/// livecopy: a live block copy orchestrator for QEMU virtual machines.
///
/// Module map (each does one job; docs/architecture.md follows the data flow through them):
/// - `QMP`: the QMP client (SwiftNIO over a UNIX socket) and typed block commands.
/// - `LivecopyBackend`: the hypervisor boundary: what the engine needs from a hypervisor
///   (`Hypervisor`, `VMSession`), in the model's words, with named capabilities; where a VM
///   is reached (`VMAddress`) and the hypervisor that routes each address to its backend.
/// - `QMPBackend`: that boundary over QMP (QEMU's monitor), checked at connect.
/// - `LibvirtBackend`: that boundary over libvirt's C API (`CLibvirt`), for libvirt's domains.
/// - `LivecopyModel`: plans, policies, states, the transition table and the store protocol.
/// - `LivecopyStore`: the SQLite store (GRDB) and the migration runner.
/// - `LivecopyPostgresStore`: the fleet store on PostgreSQL (postgres-nio), its pool, reconnection and migrations.
/// - `EmbeddedFiles`: `Migrations/`, `Migrations/postgres/` and `Policies/` compiled into the binary by a build-tool plugin.
/// - `CSystemExtras`: Linux calls Swift's Glibc module does not import (`sync_file_range`, write leases, `renameat2`).
/// - `LivecopyEngine`: the workflow engine; it sees the hypervisor and the store through protocols,
///   and runs `qemu-img` through swift-subprocess (awaited, never blocking a thread).
/// - `LivecopyMetrics`: the Prometheus side of `--metrics`: the registry swift-metrics records into (the
///   engine and QMP record through swift-metrics only), the metric catalog and an HTTP endpoint on SwiftNIO.
/// - `LivecopyCommands`: the CLI (swift-argument-parser), testable in-process.
/// - `livecopy`: the tiny executable that calls `LivecopyCommands`.
let package = Package(
    name: "livecopy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "livecopy", targets: ["livecopy"]),
        // scripts/bench's helper (store synthesis, transition rate); not installed.
        .executable(name: "livecopy-benchkit", targets: ["livecopy-benchkit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        // `livecopy serve`: graceful shutdown on SIGTERM, SIGHUP.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        // The fleet store: PostgreSQL's wire protocol on SwiftNIO (no ORM).
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // The fleet store's TLS (sslmode) and its migrations' checksums (SHA-256); postgres-nio builds both already.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Tests only: property-based tests (generators, seeds to replay, shrinking) on Swift Testing.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        .target(
            name: "QMP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .target(name: "LivecopyBackend"),
        .target(name: "QMPBackend", dependencies: ["LivecopyBackend", "QMP"]),
        /// libvirt's C API (Debian's libvirt-dev: libvirt.h, libvirt-qemu.h).
        .systemLibrary(name: "CLibvirt", pkgConfig: "libvirt", providers: [.apt(["libvirt-dev"])]),
        .target(name: "LibvirtBackend", dependencies: ["LivecopyBackend", "QMP", "QMPBackend", "CLibvirt"]),
        .executableTarget(name: "EmbedFilesTool"),
        .plugin(
            name: "EmbedFilesPlugin",
            capability: .buildTool(),
            dependencies: ["EmbedFilesTool"]),
        .target(
            name: "EmbeddedFiles",
            plugins: ["EmbedFilesPlugin"]),
        .target(
            name: "LivecopyModel",
            dependencies: [
                "EmbeddedFiles", "LivecopyBackend",
                .product(name: "Yams", package: "Yams"),
            ]),
        .target(
            name: "LivecopyStore",
            dependencies: [
                "LivecopyModel",
                "EmbeddedFiles",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "LivecopyPostgresStore",
            dependencies: [
                "LivecopyModel",
                "EmbeddedFiles",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        /// Linux system calls Swift's Glibc module does not import (`sync_file_range`).
        .target(name: "CSystemExtras"),
        .target(
            name: "LivecopyEngine",
            dependencies: [
                "LivecopyModel", "LivecopyBackend", "CSystemExtras",
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]),
        .target(
            name: "LivecopyMetrics",
            dependencies: [
                "LivecopyModel", "LivecopyEngine", "QMP",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "LivecopyCommands",
            dependencies: [
                "LivecopyModel", "LivecopyStore", "LivecopyPostgresStore", "LivecopyEngine", "LivecopyBackend", "QMPBackend",
                "LibvirtBackend", "LivecopyMetrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]),
        .executableTarget(
            name: "livecopy",
            dependencies: ["LivecopyCommands"]),
        .executableTarget(
            name: "livecopy-benchkit",
            dependencies: ["LivecopyStore", "LivecopyModel", .product(name: "Logging", package: "swift-log")]),

        // Test support: real QEMU fixtures and a scripted fake QMP peer; the in-memory backend.
        .target(
            name: "TestSupport",
            dependencies: [
                "QMP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/TestSupport"),
        .target(name: "InMemoryBackend", dependencies: ["LivecopyBackend"], path: "Tests/InMemoryBackend"),
        .testTarget(
            name: "QMPTests",
            dependencies: ["QMP", "TestSupport", .product(name: "PropertyBased", package: "swift-property-based")]),
        .testTarget(
            name: "LivecopyModelTests",
            dependencies: [
                "LivecopyModel", "LivecopyBackend", "TestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]),
        .testTarget(
            name: "LivecopyStoreTests",
            dependencies: [
                "LivecopyStore", "LivecopyPostgresStore", "LivecopyModel", "TestSupport", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "LivecopyEngineTests",
            dependencies: ["LivecopyEngine", "LivecopyStore", "LivecopyModel", "LivecopyBackend", "QMPBackend", "QMP",
                           "InMemoryBackend", "TestSupport"]),
        .testTarget(
            name: "LivecopyBackendTests",
            dependencies: [
                "LivecopyBackend", "InMemoryBackend", .product(name: "PropertyBased", package: "swift-property-based"),
            ]),
        .testTarget(
            name: "BackendConformanceTests",
            dependencies: ["LivecopyBackend", "QMPBackend", "LibvirtBackend", "QMP", "InMemoryBackend", "TestSupport"]),
        .testTarget(
            name: "LivecopyMetricsTests",
            dependencies: [
                "LivecopyMetrics", "LivecopyEngine", "LivecopyModel", "QMP", "TestSupport",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        .testTarget(
            name: "LivecopyCommandsTests",
            dependencies: [
                "LivecopyCommands", "LivecopyEngine", "LivecopyStore", "LivecopyPostgresStore", "LivecopyModel", "LivecopyBackend",
                "QMPBackend", "QMP",
                "InMemoryBackend", "TestSupport", "livecopy",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
