import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy cancel ID`: stop a plan and roll back its disks that are not completed.
struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop a plan and roll back its disks that are not yet completed.",
        discussion: """
            With a live owner (a running submit, run or recover), records the request; the owner rolls \
            back within about a second. With none, rolls back itself. Returns once the plan is rolled_back.
            """)

    @OptionGroup var common: CommonOptions

    @Argument(help: ArgumentHelp("The plan id.", valueName: "id"))
    var id: Int64

    @Option(help: "How long to wait for a live owner to finish the rollback, in seconds.")
    var timeout: Double = 600

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            let plan = try requirePlan(id, in: store)
            if plan.state == .rolledBack {
                printStderr("livecopy: plan \(id) is rolled_back already")
                return ExitStatus.success
            }
            guard !plan.state.isFinal else { throw InputError("plan \(id) is \(plan.state.rawValue); there is nothing to cancel") }
            try store.requestCancel(planId: id, at: Date())
            let display = ProgressDisplay()
            let engine = Engine(store: store, hypervisor: makeHypervisor(), observer: display,
                                commandTimeout: plan.policy.commandTimeout)
            if let host = plan.host {
                // A fleet plan: only its host's agent can reach its VMs and files.
                return try await awaitRollback(by: host, store: store)
            }
            if let owner = try engine.liveOwner(ofPlan: id) {
                printStderr("livecopy: cancel of plan \(id) requested; its owner (\(owner)) rolls it back")
                let deadline = Date().addingTimeInterval(timeout)
                while Date() < deadline {
                    try await Task.sleep(for: .milliseconds(200))
                    guard let current = try store.plan(id: id) else { break }
                    if current.state != .running, try engine.liveOwner(ofPlan: id) == nil {
                        _ = try report(current, store: store, json: false)
                        return current.state == .rolledBack ? ExitStatus.success : ExitStatus.planNotCompleted
                    }
                    if try engine.liveOwner(ofPlan: id) == nil { break }  // the owner died: roll back ourselves
                }
                if try engine.liveOwner(ofPlan: id) != nil {
                    throw InputError("plan \(id) was not rolled back within \(Int(timeout)) s; its owner still runs")
                }
            }
            printStderr("livecopy: rolling back plan \(id)")
            let final = try await drive(engine, planId: id, mode: .rollback, display: display)
            _ = try report(final, store: store, json: false)
            return final.state == .rolledBack ? ExitStatus.success : ExitStatus.planNotCompleted
        }
    }

    /// A fleet plan's cancel: the request is recorded; the host's agent rolls the plan back
    /// (now if it drives it, else when it next claims it). Waits `timeout` for that.
    private func awaitRollback(by host: String, store: any PlanStore) async throws -> Int32 {
        printStderr("livecopy: cancel of plan \(id) requested; host \(host)'s agent rolls it back")
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let current = try store.plan(id: id) else { break }
            if current.state.isFinal {
                _ = try report(current, store: store, json: false)
                return current.state == .rolledBack ? ExitStatus.success : ExitStatus.planNotCompleted
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw InputError("plan \(id) was not rolled back within \(Int(timeout)) s; the cancel stays recorded for host \(host)'s agent")
    }
}
