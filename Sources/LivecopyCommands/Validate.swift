import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy validate PLAN`: the whole preflight `submit` makes, against the live VMs and
/// files, reporting every problem, each disk's sizes, the destination filesystems' space,
/// the order the disks would run in and an estimate of the plan's duration. It records
/// nothing, changes nothing and creates no file (not even the database).
struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a plan as submit would and estimate its duration; records nothing.",
        discussion: """
            Prints each disk's source and sizes, the free space of each destination filesystem against \
            every disk landing there (and plans in progress), the order the disks run in and an estimate. \
            Every problem goes to stderr in the line submit would refuse with. Exits 0 when submit would \
            accept the plan, 2 otherwise.
            """)

    @OptionGroup var common: CommonOptions

    @Argument(help: ArgumentHelp("The plan file (YAML or JSON).", valueName: "plan"))
    var planPath: String

    @Flag(help: "Print one JSON document on stdout (problems too), instead of the tables.")
    var json = false

    /// Seconds added to each disk's copy for the steps around it (snapshot or mirror start,
    /// flush, finalize or pivot, retire). `scripts/bench validate-eta` measured them at a few
    /// hundredths of a second per disk (BENCHMARKS.md), under 1% of any copy worth
    /// estimating: none is added.
    static let perDiskOverhead: Double = 0

    func run() async throws {
        try await reportingErrors {
            let plan = try Plan.load(path: planPath)
            let planDirectory = URL(fileURLWithPath: planPath).deletingLastPathComponent()
            let policy = try Policy.resolve(plan.policyReference, relativeTo: planDirectory)
            let store = try common.openStoreReadingOnly()
            let engine = Engine(store: store, hypervisor: makeHypervisor(), commandTimeout: policy.commandTimeout)
            let report: PreflightReport
            do {
                report = try await engine.validate(plan, policy: policy)
            } catch {
                await engine.shutdown()
                throw error
            }
            await engine.shutdown()
            let history = try CopyHistory.rate(of: policy.strategy, in: store)
            let estimate = PlanEstimate(
                allocatedBytes: report.disks.map { $0.found?.allocatedBytes ?? 0 },
                pivotGroups: report.disks.map { disk in
                    switch policy.strategy {
                    case .stream: return nil
                    case .mirror: return disk.found?.vmAddress ?? disk.vmName
                    }
                },
                speed: policy.speed, history: history, schedule: DiskSchedule(maxParallelDisks: policy.maxParallelDisks),
                perDiskOverhead: Self.perDiskOverhead)
            let document = ValidationDocument(plan: plan, policy: policy, report: report, estimate: estimate, history: history)
            if json {
                print(try PlanDocument.json(document))
            } else {
                print(ValidationText.lines(document).joined(separator: "\n"))
            }
            for problem in report.problems { printStderr("livecopy: refused: \(problem)") }
            return report.accepted ? ExitStatus.success : ExitStatus.refused
        }
    }
}
