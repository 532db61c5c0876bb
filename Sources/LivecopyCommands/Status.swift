import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy status [ID]`: plans not yet final, with each disk's state, progress and boot image.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show plans that are not final: each disk's state, progress, and the image the VM must boot from now.")

    @OptionGroup var common: CommonOptions

    @Argument(help: ArgumentHelp("Show only this plan (final or not).", valueName: "id"))
    var id: Int64?

    @Flag(help: "Print plan documents as JSON (one object with an id, else an array).")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            let plans = try id.map { [try requirePlan($0, in: store)] }
                ?? store.plans(states: [.pending, .running, .failed, .needsAttention], vm: nil, limit: nil)
            // Each plan's disks, newest events and controls are read once, for all plans at
            // once (a fleet store answers every statement over the network: with 300 plans in
            // progress, a few statements a plan took 220 ms, at 1 million disks).
            let planIds = plans.map(\.id)
            let disksByPlan = try store.disks(ofPlans: planIds)
            var bootImages: [Int64: [Int64: String]] = [:]
            for plan in plans {
                bootImages[plan.id] = await BootImages.of(plan, disks: disksByPlan[plan.id] ?? [], store: store)
            }
            if json {
                let documents = try plans.map {
                    PlanDocument(plan: $0, disks: disksByPlan[$0.id] ?? [], controls: try store.controls(ofPlan: $0.id),
                                 bootImages: bootImages[$0.id], quarantined: try store.quarantinedImages(ofPlan: $0.id))
                }
                if id != nil, let document = documents.first {
                    print(try PlanDocument.json(document))
                } else {
                    print(try PlanDocument.json(documents))
                }
                return ExitStatus.success
            }
            let quarantine = PlanText.quarantine(try store.quarantineSummary())
            let agents = try (store as? any FleetStore).map { PlanText.agents(try $0.hostLeases(), now: Date()) } ?? []
            defer { for line in agents { print(line) } }
            if plans.isEmpty {
                print("no plan in progress")
                if let quarantine { print(quarantine) }
                return ExitStatus.success
            }
            let controls = try store.controls(ofPlans: planIds)
            let owners = try store.owners(ofPlans: plans.filter { $0.state == .running }.map(\.id))
            let latestEvents = try store.latestDiskEvents(ofPlans: planIds)
            for plan in plans {
                let disks = disksByPlan[plan.id] ?? []
                print(PlanText.summaryHeader)
                print(PlanText.summary(plan, disks: disks))
                if let orphan = Self.orphanNote(plan, owner: owners[plan.id]) { print(orphan) }
                if let controls = PlanText.controls(controls[plan.id] ?? PlanControls(), planId: plan.id) { print(controls) }
                print(PlanText.diskHeader)
                let latest = latestEvents[plan.id] ?? [:]
                for disk in disks {
                    print(PlanText.disk(disk, bootImage: .some(bootImages[plan.id]?[disk.id]), planState: plan.state))
                    if let waiting = PlanText.waiting(disk, latest: latest[disk.id]) { print(waiting) }
                }
            }
            if let quarantine { print(quarantine) }
            return ExitStatus.success
        }
    }

    /// For a plan recorded `running` whose owner is gone (crashed, or the host rebooted):
    /// a line saying so, since its progress is only what was last recorded.
    static func orphanNote(_ plan: PlanRecord, owner: PlanOwner?) -> String? {
        guard plan.state == .running else { return nil }
        if let owner, !Engine.isGone(owner) { return nil }
        let who = owner.map { "its owner (\($0), last heartbeat \(PlanText.time($0.heartbeat))) is gone" } ?? "no process owns it"
        let next = plan.host.map { "host \($0)'s agent picks the plan up when it runs" } ?? "livecopy recover --plan \(plan.id) picks the plan up"
        return "  NOT RUNNING: \(who); the progress below is as last recorded; \(next)"
    }
}
