import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy recover`: after a crash of livecopy, of QEMU or of the host, reconcile every
/// interrupted plan with reality, then resume it or roll it back.
struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reconcile and finish every interrupted plan whose owner is gone.",
        discussion: """
            Picks up plans that are running, failed or need attention and that no live livecopy drives, \
            prints what QEMU and the files say for each disk, then resumes the plan (or rolls it back, with \
            --rollback or the policy's after_restart: rollback). Exits 0 only when every plan it touched \
            ended completed or rolled_back.
            """)

    @OptionGroup var common: CommonOptions

    @OptionGroup var metrics: MetricsOptions

    @Flag(help: "Roll the plans back instead of resuming them.")
    var rollback = false

    @Option(help: ArgumentHelp("Recover only this plan.", valueName: "id"))
    var plan: Int64?

    @Flag(help: "Print the plan documents as a JSON array on stdout.")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let store = try common.openStore()
            try refuseFleetStore(store, command: "recover")
            let candidates: [PlanRecord]
            if let plan {
                let record = try requirePlan(plan, in: store)
                guard !record.state.isFinal else {
                    printStderr("livecopy: plan \(plan) is \(record.state.rawValue); nothing to recover")
                    if json { print(try PlanDocument.json([PlanDocument(plan: record, disks: try store.disks(ofPlan: plan))])) }
                    return ExitStatus.success
                }
                candidates = [record]
            } else {
                candidates = try store.plans(states: [.running, .failed, .needsAttention], vm: nil, limit: nil).reversed()
            }
            if candidates.isEmpty { printStderr("livecopy: nothing to recover") }
            let served = try await metrics.start(store: store)
            var status = ExitStatus.success
            var documents: [PlanDocument] = []
            for record in candidates {
                let display = ProgressDisplay()
                let engine = Engine(store: store, hypervisor: makeHypervisor(), observer: served.observing(display),
                                    commandTimeout: record.policy.commandTimeout)
                if let owner = try engine.liveOwner(ofPlan: record.id) {
                    let message = "plan \(record.id) is driven by a live livecopy (\(owner)); not touching it"
                    if plan != nil { throw InputError(message) }
                    printStderr("livecopy: \(message)")
                    continue
                }
                let mode: RunMode = rollback || record.policy.afterRestart == .rollback ? .rollback : .resume
                printStderr("livecopy: plan \(record.id)\(record.name.map { " (\($0))" } ?? ""): \(record.state.rawValue); "
                         + (mode == .rollback ? "rolling back" : "resuming"))
                for (disk, finding) in try await engine.reconciliationReport(planId: record.id) {
                    printStderr("  \(disk.vmName)/\(disk.device): \(finding)")
                }
                let final = try await drive(engine, planId: record.id, mode: mode, display: display)
                RecoveryMetrics.planRecovered()
                let disks = try store.disks(ofPlan: record.id)
                for disk in disks where disk.state != .completed && disk.state != .rolledBack {
                    printStderr("  \(disk.vmName)/\(disk.device): \(disk.state.rawValue)\(disk.error.map { ": \($0)" } ?? ""); "
                             + (await engine.bootAdvice(for: disk)))
                }
                printStderr("livecopy: plan \(record.id) \(final.state.rawValue)")
                if final.state != .completed && final.state != .rolledBack { status = ExitStatus.planNotCompleted }
                documents.append(PlanDocument(plan: final, disks: disks))
            }
            await served.stop()
            if json { print(try PlanDocument.json(documents)) }
            return status
        }
    }
}
