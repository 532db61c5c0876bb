import ArgumentParser
import LivecopyModel

/// `livecopy show ID`: one plan with its disks and its event timeline.
struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one plan with its disks and its event timeline.")

    @OptionGroup var common: CommonOptions

    @Argument(help: ArgumentHelp("The plan id.", valueName: "id"))
    var id: Int64

    @Flag(help: "Print the plan document, with its events, as JSON.")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            let plan = try requirePlan(id, in: store)
            let disks = try store.disks(ofPlan: plan.id)
            let events = try store.events(ofPlan: plan.id)
            let quarantined = try store.quarantinedImages(ofPlan: plan.id)
            if json {
                print(try PlanDocument.json(PlanDocument(plan: plan, disks: disks, events: events,
                                                         controls: try store.controls(ofPlan: plan.id),
                                                         quarantined: quarantined)))
                return ExitStatus.success
            }
            print(PlanText.summaryHeader)
            print(PlanText.summary(plan, disks: disks))
            print("policy: \(plan.policyReference ?? "default")  finished: \(PlanText.time(plan.finishedAt))")
            print("disks:")
            print(PlanText.diskHeader)
            for disk in disks { print(PlanText.disk(disk, planState: plan.state)) }
            let byId = Dictionary(uniqueKeysWithValues: disks.map { ($0.id, $0) })
            if !quarantined.isEmpty {
                print("quarantined sources (livecopy purge deletes them once expired; livecopy restore DISK puts one back):")
                for image in quarantined { print(PlanText.quarantined(image, disks: byId)) }
            }
            print("events:")
            for event in events { print(PlanText.event(event, disks: byId)) }
            return ExitStatus.success
        }
    }
}
