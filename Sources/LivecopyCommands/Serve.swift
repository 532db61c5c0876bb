import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel
import Logging
import ServiceLifecycle

/// `livecopy serve`: the long-running service. It recovers interrupted plans at start,
/// then runs every plan submitted with `--detach`, within host-wide limits.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run detached plans in the background, within host-wide limits, until SIGTERM.",
        discussion: """
            At start it recovers every interrupted plan no live livecopy drives (as livecopy recover does), \
            then runs each plan submitted with livecopy submit --detach as it appears. At most \
            --max-parallel-disks disks copy at once over all plans, and their jobs share --bandwidth. \
            SIGTERM (or SIGINT): start nothing new, leave QEMU's jobs running, record that and exit 0; the \
            next start re-attaches. SIGHUP: read the settings file again (limits, budget, log level). \
            Under systemd (Type=notify) it reports ready, reloading and stopping. See docs/serve.md.
            """)

    @OptionGroup var daemon: DaemonOptions

    func run() async throws {
        try await reportingErrors {
            try await daemon.run(fleet: nil)
        }
    }
}

/// The options of the daemon `serve` and `agent` run, and the daemon itself.
struct DaemonOptions: ParsableArguments {
    @OptionGroup var common: CommonOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: ArgumentHelp(
        "serve's settings file (YAML: max_parallel_disks, bandwidth, log_level, poll_interval), read again on SIGHUP.",
        valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp("At most this many disks copying at once over all plans (0: no host limit). Overrides the settings file.",
                               valueName: "n"))
    var maxParallelDisks: Int?

    @Option(help: ArgumentHelp("The bandwidth all copy jobs share, per second, such as 200M (0: none). Overrides the settings file.",
                               valueName: "bytes"))
    var bandwidth: String?

    func validate() throws {
        if let maxParallelDisks, !(0...10_000).contains(maxParallelDisks) {
            throw refusal("--max-parallel-disks: invalid value '\(maxParallelDisks)' (expected a whole number from 0 to 10000)")
        }
        do {
            _ = try settings()
        } catch let error as InputError {
            throw refusal(error.message)
        }
    }

    /// The settings in force: the file's, then the command line's over them.
    func settings() throws -> ServeSettings {
        var settings = try config.map { try ServeSettings.load(path: $0) } ?? ServeSettings()
        if let maxParallelDisks { settings.maxParallelDisks = maxParallelDisks == 0 ? nil : maxParallelDisks }
        if let bandwidth {
            guard let bytes = ByteSize.parse(bandwidth), bytes == 0 || bytes >= ServeSettings.minimumBandwidth else {
                throw InputError("--bandwidth: invalid value '\(bandwidth)' (expected 0 for none, or bytes of at least 64K, such as 200M)")
            }
            settings.bandwidth = bytes == 0 ? nil : bytes
        }
        return settings
    }

    /// One line on stderr and exit 2 (a ValidationError would add the usage).
    private func refusal(_ message: String) -> ExitCode {
        printStderr(message, asError: true)
        return ExitCode(ExitStatus.refused)
    }

    /// Runs the daemon until SIGTERM: over this host's store (`fleet` nil), or as a fleet
    /// agent (`fleet` makes its role from the store opened).
    func run(fleet makeRole: ((any PlanStore) throws -> FleetRole)?) async throws -> Int32 {
        let store = try common.openStore()
        let fleet = try makeRole?(store)
        let initial = try settings()
        let served = try await metrics.start(store: store)
        let service = PlanService(store: store, settings: initial, reload: { try self.settings() },
                                  commandLineLogLevel: common.logLevelInForce ?? .warning,
                                  observer: served.observing(ServeLog()), fleet: fleet)
        var logger = Logger(label: "livecopy.serve")
        logger.logLevel = .warning
        let group = ServiceGroup(configuration: .init(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            await served.stop()
            throw error
        }
        await served.stop()
        return ExitStatus.success
    }
}
