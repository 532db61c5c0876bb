import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore

/// The plan an operator control acts on, and how long to wait for its owner.
struct ControlTarget: ParsableArguments {
    @Argument(help: ArgumentHelp("The plan id.", valueName: "id"))
    var id: Int64

    @Option(help: "How long to wait for the live owner to apply it, in seconds.")
    var timeout: Double = 10
}

/// `livecopy throttle ID --speed S`: change the speed of a plan's copy jobs.
struct Throttle: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the speed of a plan's copy jobs, now and for the jobs it starts later.",
        discussion: """
            Records the new speed; the plan's live owner applies it to the running jobs within about a \
            second (block-job-set-speed) and this command prints the outcome. With no live owner the speed \
            is only recorded and applies when the plan next runs.
            """)

    @OptionGroup var common: CommonOptions

    @OptionGroup var target: ControlTarget

    @Option(help: ArgumentHelp("Bytes per second, in the policy's size syntax (20M, 1G); 0 = unlimited.", valueName: "size"))
    var speed: String

    func run() async throws {
        try await reportingErrors {
            guard let bytes = ByteSize.parse(speed) else {
                throw InputError("--speed has invalid value '\(speed)' (expected bytes per second, such as 0, 512K, 20M or 1G)")
            }
            return try await sendControl(.throttle(speed: bytes), planId: target.id, common: common, timeout: target.timeout)
        }
    }
}

/// `livecopy pause ID`: pause a plan's copy jobs, and keep later ones paused.
struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pause a plan's copy jobs; jobs it starts later start paused too, until livecopy resume.")

    @OptionGroup var common: CommonOptions

    @OptionGroup var target: ControlTarget

    func run() async throws {
        try await reportingErrors { try await sendControl(.pause, planId: target.id, common: common, timeout: target.timeout) }
    }
}

/// `livecopy resume ID`: resume a paused plan's copy jobs.
struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume the copy jobs of a plan paused with livecopy pause.")

    @OptionGroup var common: CommonOptions

    @OptionGroup var target: ControlTarget

    func run() async throws {
        try await reportingErrors { try await sendControl(.resume, planId: target.id, common: common, timeout: target.timeout) }
    }
}

/// Records `action` for plan `planId` and, when a live livecopy drives the plan, waits up
/// to `timeout` seconds for it to apply the request over its own QMP sessions (QEMU
/// serves one client per monitor socket, and the owner holds it).
private func sendControl(_ action: OperatorAction, planId: Int64, common: CommonOptions, timeout: Double) async throws -> Int32 {
    guard timeout.isFinite, timeout >= 0 else { throw InputError("--timeout must be a number of seconds, 0 or more") }
    let store = try common.openExistingStore()
    let plan = try requirePlan(planId, in: store)
    guard !plan.state.isFinal else {
        throw InputError("plan \(planId) is \(plan.state.rawValue); there is nothing to \(action.name)")
    }
    let engine = Engine(store: store, hypervisor: makeHypervisor())
    let request = try store.requestControl(planId: planId, action, by: "pid \(getpid())", at: Date())
    let recorded = "\(action): recorded; no livecopy drives the plan now, so it applies when the plan next runs"

    /// Finishes the request as only recorded (no owner applied it) and prints what is recorded.
    func finishWithoutOwner() async throws -> Int32 {
        try await store.finishControlRequest(id: request.id, planId: planId, ok: true, outcome: recorded, at: Date())
        let final = try store.controlRequest(id: request.id)
        print("plan \(planId): \(final?.outcome ?? recorded)")
        return final?.ok == false ? ExitStatus.planNotCompleted : ExitStatus.success
    }

    guard let owner = try engine.liveOwner(ofPlan: planId) else { return try await finishWithoutOwner() }
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if let current = try store.controlRequest(id: request.id), current.finishedAt != nil {
            if current.ok == false {
                printStderr("plan \(planId): \(current.outcome ?? "\(action) failed")", asError: true)
                return ExitStatus.planNotCompleted
            }
            print("plan \(planId): \(current.outcome ?? "\(action) applied")")
            return ExitStatus.success
        }
        if try engine.liveOwner(ofPlan: planId) == nil { return try await finishWithoutOwner() }
        guard Date() < deadline else { break }
        try await Task.sleep(for: .milliseconds(100))
    }
    throw InputError("plan \(planId): its owner (\(owner)) did not apply the \(action.name) request within \(timeout) s; the setting is recorded and applies to the jobs the plan starts later")
}
