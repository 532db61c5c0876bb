import ArgumentParser
import LivecopyModel

/// `livecopy history`: plans, newest first. Plans refused at submission stay recorded (an
/// audit trail) but are listed only with `--all` or `--state refused`.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List plans, newest first.",
        discussion: "Plans refused at submission are kept for the record; --all or --state refused lists them.")

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Only plans in this state (\(PlanState.allCases.map(\.rawValue).joined(separator: ", "))).",
                               valueName: "state"))
    var state: String?

    @Option(help: ArgumentHelp("Only plans with a disk of this VM.", valueName: "name"))
    var vm: String?

    @Option(help: "At most this many plans.")
    var limit: Int = 20

    @Flag(help: "Also list plans refused at submission.")
    var all = false

    @Flag(help: "Print a JSON array of plan documents.")
    var json = false

    func validate() throws {
        if let state, PlanState(rawValue: state) == nil {
            throw ValidationError("unknown state '\(state)' (expected \(PlanState.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            let states: Set<PlanState>?
            if let state = state.flatMap(PlanState.init(rawValue:)) {
                states = [state]
            } else {
                states = all ? nil : Set(PlanState.allCases).subtracting([.refused])
            }
            let plans = try store.plans(states: states, vm: vm, limit: limit)
            if json {
                print(try PlanDocument.json(plans.map { PlanDocument(plan: $0, disks: try store.disks(ofPlan: $0.id)) }))
                return ExitStatus.success
            }
            if plans.isEmpty {
                print(all || state != nil ? "no plans" : "no plans (plans refused at submission are listed with --all)")
                return ExitStatus.success
            }
            print(PlanText.summaryHeader)
            for plan in plans { print(PlanText.summary(plan, disks: try store.disks(ofPlan: plan.id))) }
            return ExitStatus.success
        }
    }
}
