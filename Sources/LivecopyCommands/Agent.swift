import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy agent --host NAME`: `serve`'s daemon pointed at a fleet store (PostgreSQL),
/// driving the plans of one host: the VMs whose plan names `host: NAME`.
struct Agent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive one host's plans of a fleet store (PostgreSQL), within the fleet's limits, until SIGTERM.",
        discussion: """
            The same daemon as livecopy serve, over a fleet store (--db postgres://…). It holds the host's \\
            lease (one agent drives a host; another started with the same --host stands by until the lease \\
            expires), claims the host's plans as they are submitted (submit --detach), runs each one's \\
            preflight on this host, and drives its disks as livecopy run does, taking a copy slot from the \\
            store's limits (livecopy limits) before each disk copies. See docs/fleet.md.
            """)

    @OptionGroup var daemon: DaemonOptions

    @Option(help: ArgumentHelp("The host this agent drives: the plans' `host:` (letters, digits, '.', '-', '_').",
                               valueName: "name"))
    var host: String

    @Option(help: ArgumentHelp(
        "How long the host's lease, and each plan's, outlives an agent that stopped renewing them, such as 15s.",
        valueName: "duration"))
    var leaseTimeout: String = "15s"

    func validate() throws {
        guard Plan.isHostName(host) else {
            throw refusal("--host: invalid value '\(host)' (expected a host name: letters, digits, '.', '-' and '_')")
        }
        guard let seconds = Duration.seconds(parsing: leaseTimeout), seconds >= 2 else {
            throw refusal("--lease-timeout: invalid value '\(leaseTimeout)' (expected a duration of at least 2s, such as 15s)")
        }
        _ = seconds
    }

    func run() async throws {
        try await reportingErrors {
            let timeout = Duration.seconds(parsing: leaseTimeout) ?? 15
            guard daemon.common.isFleetStore else {
                throw InputError("livecopy agent needs a fleet store: give --db postgres://USER@HOST/DATABASE (or LIVECOPY_DB); \(daemon.common.database.path) is this host's own")
            }
            return try await daemon.run(fleet: { store in
                guard let fleetStore = store as? any FleetStore else {
                    throw InputError("livecopy agent needs a fleet store; \(store.location) is not one")
                }
                return FleetRole(store: fleetStore, host: host, leaseTimeout: timeout)
            })
        }
    }

    private func refusal(_ message: String) -> ExitCode {
        printStderr(message, asError: true)
        return ExitCode(ExitStatus.refused)
    }
}
