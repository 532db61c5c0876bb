import ArgumentParser
import LivecopyEngine
import LivecopyModel

/// `livecopy run [--plan ID]`: drive pending plans (or one named plan) to a final state.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drive every pending plan, or the one named, to a final state, then exit.",
        discussion: "Exits 0 only when every plan it ran completed; 2 when a detached plan was refused as it started.")

    @OptionGroup var common: CommonOptions

    @OptionGroup var metrics: MetricsOptions

    @Option(help: ArgumentHelp("Run only this plan (any state that is not final), reconciling it with QEMU first.", valueName: "id"))
    var plan: Int64?

    func run() async throws {
        try await reportingErrors {
            let store = try common.openStore()
            try refuseFleetStore(store, command: "run")
            let plans: [PlanRecord]
            if let plan {
                plans = [try requirePlan(plan, in: store)]
            } else {
                plans = try store.plans(states: [.pending], vm: nil, limit: nil).reversed()
            }
            if plans.isEmpty { printStderr("livecopy: no pending plan") }
            let served = try await metrics.start(store: store)
            var status = ExitStatus.success
            for record in plans {
                let display = ProgressDisplay()
                let engine = Engine(store: store, hypervisor: makeHypervisor(), observer: served.observing(display),
                                    commandTimeout: record.policy.commandTimeout)
                printStderr("livecopy: running plan \(record.id)\(record.name.map { " (\($0))" } ?? "")")
                let final = try await drive(engine, planId: record.id, display: display)
                let outcome = try report(final, store: store, json: false)
                if outcome != ExitStatus.success && status != ExitStatus.refused { status = outcome }
            }
            await served.stop()
            return status
        }
    }
}
