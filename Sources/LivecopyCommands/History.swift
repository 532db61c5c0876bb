import ArgumentParser
import LivecopyModel

/// `livecopy history`: plans, newest first.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List plans, newest first.")

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Only plans in this state (\(PlanState.allCases.map(\.rawValue).joined(separator: ", "))).",
                               valueName: "state"))
    var state: String?

    @Option(help: ArgumentHelp("Only plans with a disk of this VM.", valueName: "name"))
    var vm: String?

    @Option(help: "At most this many plans.")
    var limit: Int = 20

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
            let store = try common.openStore()
            let states = state.flatMap(PlanState.init(rawValue:)).map { Set([$0]) }
            let plans = try store.plans(states: states, vm: vm, limit: limit)
            if json {
                print(try PlanDocument.json(plans.map { PlanDocument(plan: $0, disks: try store.disks(ofPlan: $0.id)) }))
                return ExitStatus.success
            }
            if plans.isEmpty { print("no plans") }
            for plan in plans { print(PlanText.summary(plan, disks: try store.disks(ofPlan: plan.id))) }
            return ExitStatus.success
        }
    }
}
