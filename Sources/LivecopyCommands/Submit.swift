import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy submit PLAN`: validate, preflight, record, then run the plan to its end.
struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a copy plan, record it, and run it to its end.",
        discussion: "Progress goes to stderr. Exits 0 only when every disk completed.")

    @OptionGroup var common: CommonOptions

    @Argument(help: ArgumentHelp("The plan file (YAML or JSON).", valueName: "plan"))
    var planPath: String

    @Flag(help: "Record the plan as pending without touching any VM, print its id, and exit.")
    var detach = false

    @Flag(help: "Print the final plan document as JSON on stdout.")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let plan = try Plan.load(path: planPath)
            let planDirectory = URL(fileURLWithPath: planPath).deletingLastPathComponent()
            let policy = try Policy.resolve(plan.policyReference, relativeTo: planDirectory)
            if !common.isFleetStore, let vm = plan.vms.first(where: { $0.host != nil }) {
                throw InputError("\(planPath): VM '\(vm.name)' names a host; host: is for a fleet store (--db postgres://…), and \(common.database.path) is this host's own")
            }
            let store = try common.openStore()
            if store is any FleetStore {
                return try recordForFleet(plan, policy: policy, store: store)
            }

            if detach {
                let engine = Engine(store: store, hypervisor: makeHypervisor(), commandTimeout: policy.commandTimeout)
                try engine.checkOffline(plan, policy: policy)
                // A plan claiming what another submit recorded meanwhile is refused like the
                // check above refuses it: one line, exit 2 (a `.claimed` `StoreError`), nothing recorded.
                let record = try engine.record(plan, policy: policy, disks: plan.allDisks.map {
                    NewPlan.Disk(vm: $0.vm, disk: $0.disk, strategy: policy.strategy)
                })
                if json {
                    print(try PlanDocument.json(PlanDocument(plan: record, disks: try store.disks(ofPlan: record.id))))
                } else {
                    print(record.id)
                }
                return ExitStatus.success
            }

            let display = ProgressDisplay()
            let engine = Engine(store: store, hypervisor: makeHypervisor(), observer: display,
                                commandTimeout: policy.commandTimeout)
            let disks: [NewPlan.Disk]
            do {
                disks = try await engine.preflight(plan, policy: policy)
            } catch let error as PreflightError {
                await engine.shutdown()
                return try refuse(plan, policy: policy, reason: error.description, engine: engine)
            }
            let record: PlanRecord
            do {
                record = try engine.record(plan, policy: policy, disks: disks)
            } catch let error as StoreError {
                // Another submit recorded a plan claiming the same disk or destination meanwhile.
                guard case .claimed(let conflict) = error.kind else { throw error }
                await engine.shutdown()
                return try refuse(plan, policy: policy, reason: conflict.description, engine: engine)
            }
            printStderr("livecopy: plan \(record.id)\(plan.name.map { " (\($0))" } ?? ""): \(disks.count) disk(s), policy \(plan.policyReference ?? "default")")
            let final = try await drive(engine, planId: record.id, display: display)
            return try report(final, store: store, json: json)
        }
    }
}

extension Submit {
    /// A fleet store: the plan is split by `host:`, each host's part checked against the
    /// store and recorded as a plan of its own, pending until that host's agent claims it.
    /// Every part is checked before any is recorded; prints the ids, one a line.
    func recordForFleet(_ plan: Plan, policy: Policy, store: any PlanStore) throws -> Int32 {
        guard detach else {
            throw InputError("a fleet store's plans run on their hosts' agents (livecopy agent --host NAME): submit them with --detach")
        }
        guard let parts = plan.byHost else {
            let vm = plan.vms.first { $0.host == nil }?.name ?? ""
            throw InputError("\(planPath): VM '\(vm)' names no host; in a fleet store every VM needs host: (the agent that drives it)")
        }
        let engine = Engine(store: store, hypervisor: makeHypervisor(), commandTimeout: policy.commandTimeout)
        for part in parts { try engine.checkClaims(part.plan) }
        var documents: [PlanDocument] = []
        for part in parts {
            let record = try engine.record(part.plan, policy: policy, disks: part.plan.allDisks.map {
                NewPlan.Disk(vm: $0.vm, disk: $0.disk, strategy: policy.strategy)
            }, host: part.host)
            printStderr("livecopy: plan \(record.id)\(plan.name.map { " (\($0))" } ?? ""): host \(part.host), \(part.plan.allDisks.count) disk(s); its agent drives it")
            if json {
                documents.append(PlanDocument(plan: record, disks: try store.disks(ofPlan: record.id)))
            } else {
                print(record.id)
            }
        }
        for document in documents { print(try PlanDocument.json(document)) }
        return ExitStatus.success
    }
}

/// Records `plan` as refused, with `reason`, and says so in one line: exit 2.
private func refuse(_ plan: Plan, policy: Policy, reason: String, engine: Engine) throws -> Int32 {
    let refused = try engine.recordRefused(plan, policy: policy, reason: reason)
    printStderr("plan refused (recorded as plan \(refused.id)): \(reason)", asError: true)
    return ExitStatus.refused
}

/// Prints a plan's outcome (JSON document or a summary) and returns the exit status.
func report(_ plan: PlanRecord, store: any WorkflowStore, json: Bool) throws -> Int32 {
    let disks = try store.disks(ofPlan: plan.id)
    if json {
        print(try PlanDocument.json(PlanDocument(plan: plan, disks: disks)))
    }
    if plan.state == .refused {
        // A detached plan refused when it ran: the refusal submit would have given.
        printStderr("plan \(plan.id) refused: \(plan.error ?? "no reason recorded")", asError: true)
        return ExitStatus.refused
    }
    printStderr("livecopy: plan \(plan.id) \(plan.state.rawValue)")
    for disk in disks where disk.state != .completed {
        printStderr("  \(disk.vmName)/\(disk.device): \(disk.state.rawValue)\(disk.error.map { ": \($0)" } ?? "")"
            + (disk.bootImage.map { "; the VM must boot from \($0)" } ?? ""))
    }
    return plan.state == .completed ? ExitStatus.success : ExitStatus.planNotCompleted
}
