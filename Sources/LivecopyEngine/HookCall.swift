// A disk's pending hook, run and recorded: what it is told, and what its run is worth.

import Foundation
import LivecopyModel

/// Runs the hook a disk has pending (`DiskRecord.pendingHook`) and records it: an
/// `intent` event before the program starts, an `outcome` event with its exit status and
/// the first and last lines of its output after. The pending hook was recorded by the
/// write that called for it, so a crash at any point leaves it pending and `recover`
/// runs it again: hooks must be idempotent (docs/hooks.md).
struct HookCall {
    let ledger: DiskLedger

    /// Runs the pending hook `hook`; a failure is recorded (its outcome, and a warning in
    /// the timeline) and changes nothing else.
    func runRecordingFailure(_ hook: HookEvent) async throws {
        guard let result = try await run(hook, keepPendingIfFailed: false), !result.succeeded else { return }
        try await ledger.note("warning: hook \(hook.rawValue) failed (\(result.endingText)); recorded only")
    }

    /// What the hook is told, as JSON on its stdin (the same facts as its `LIVECOPY_*`
    /// environment variables); every key always present, `null` when there is no value.
    struct Document: Encodable {
        struct PlanPart: Encodable {
            let id: Int64
            @NullEncoded var name: String?
        }
        struct DiskPart: Encodable {
            let id: Int64
            let vm: String
            let vmAddress: String
            let device: String
            @NullEncoded var source: String?
            @NullEncoded var sourceFormat: String?
            let destination: String
            let destinationFormat: String
            let strategy: String
            let state: String
            @NullEncoded var error: String?

            enum CodingKeys: String, CodingKey {
                case id, vm, device, source, destination, strategy, state, error
                case vmAddress = "vm_address"
                case sourceFormat = "source_format"
                case destinationFormat = "destination_format"
            }
        }
        let hook: String
        let attempt: Int
        let plan: PlanPart
        let disk: DiskPart
        /// The image the VM must be started from from now on (null: livecopy cannot tell).
        @NullEncoded var bootImage: String?
        @NullEncoded var bootFormat: String?

        enum CodingKeys: String, CodingKey {
            case hook, attempt, plan, disk
            case bootImage = "boot_image"
            case bootFormat = "boot_format"
        }
    }

    /// Runs the pending hook `hook` and records its outcome; returns how it ended, or nil
    /// when the plan's policy has no such hook (nothing run). `keepPendingIfFailed` leaves a
    /// failed hook pending for the write that records its consequence.
    func run(_ hook: HookEvent, keepPendingIfFailed: Bool) async throws -> HookResult? {
        guard let command = ledger.hooks.command(for: hook) else {
            try await ledger.hookFinished(hook, "the plan's policy has no \(hook.rawValue) hook; nothing run", keepPending: false)
            return nil
        }
        let document = try describe(hook)
        let argvText = command.argv.map { $0.contains(" ") || $0.isEmpty ? "'\($0)'" : $0 }.joined(separator: " ")
        try await ledger.hookStarting(hook, "running \(argvText) (attempt \(document.attempt), timeout \(HookRunner.secondsText(command.timeout)))")
        let result: HookResult
        switch HookProgramCheck.resolve(command.argv[0]) {
        case .failure(let refused):
            result = HookResult(ending: .notStarted(refused.description), firstLines: [], lastLines: [], lineCount: 0, seconds: 0)
        case .success(let program):
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            result = try await HookRunner.run(
                program: program, arguments: Array(command.argv.dropFirst()), environment: Self.environment(document),
                input: try encoder.encode(document) + Data("\n".utf8), timeout: command.timeout)
        }
        let verdict = result.succeeded ? "succeeded" : "failed"
        try await ledger.hookFinished(
            hook, "\(verdict): \(result.endingText) after \(HookRunner.secondsText(result.seconds)); \(result.outputText)",
            keepPending: keepPendingIfFailed && !result.succeeded)
        return result
    }

    /// The facts the hook is told, from the disk's record.
    func describe(_ hook: HookEvent) throws -> Document {
        let disk = ledger.disk
        let plan = try ledger.plan()
        let boot: (image: String?, format: String?)
        switch hook {
        case .onSwitch, .onComplete: boot = (disk.destination, disk.destinationFormat.rawValue)
        case .onRollback: boot = (disk.source, disk.sourceFormat)
        case .onNeedsAttention:
            let image = disk.bootImage
            boot = (image, image == disk.source ? disk.sourceFormat : image == nil ? nil : disk.destinationFormat.rawValue)
        }
        return Document(
            hook: hook.rawValue, attempt: try attempt(of: hook), plan: .init(id: disk.planId, name: plan?.name),
            disk: .init(id: disk.id, vm: disk.vmName, vmAddress: disk.vmAddress, device: disk.device, source: disk.source,
                        sourceFormat: disk.sourceFormat, destination: disk.destination,
                        destinationFormat: disk.destinationFormat.rawValue, strategy: disk.strategy.rawValue,
                        state: disk.state.rawValue, error: disk.error),
            bootImage: boot.image, bootFormat: boot.format)
    }

    /// 1 for the first run of `hook` since its last recorded outcome; 2 after a run
    /// interrupted by a crash; and so on.
    private func attempt(of hook: HookEvent) throws -> Int {
        let action = "hook:\(hook.rawValue):"
        let events = try ledger.events().filter { $0.detail.hasPrefix(action) }
        let sinceOutcome = events.reversed().prefix { $0.kind != .outcome }
        return sinceOutcome.filter { $0.kind == .intent }.count + 1
    }

    /// The hook's `LIVECOPY_*` environment variables (an unknown value is an empty string).
    static func environment(_ document: Document) -> [String: String] {
        [
            "LIVECOPY_HOOK": document.hook,
            "LIVECOPY_HOOK_ATTEMPT": String(document.attempt),
            "LIVECOPY_PLAN": String(document.plan.id),
            "LIVECOPY_PLAN_NAME": document.plan.name ?? "",
            "LIVECOPY_DISK": String(document.disk.id),
            "LIVECOPY_VM": document.disk.vm,
            "LIVECOPY_VM_ADDRESS": document.disk.vmAddress,
            "LIVECOPY_DEVICE": document.disk.device,
            "LIVECOPY_SOURCE": document.disk.source ?? "",
            "LIVECOPY_SOURCE_FORMAT": document.disk.sourceFormat ?? "",
            "LIVECOPY_DESTINATION": document.disk.destination,
            "LIVECOPY_DESTINATION_FORMAT": document.disk.destinationFormat,
            "LIVECOPY_STRATEGY": document.disk.strategy,
            "LIVECOPY_STATE": document.disk.state,
            "LIVECOPY_ERROR": document.disk.error ?? "",
            "LIVECOPY_BOOT_IMAGE": document.bootImage ?? "",
            "LIVECOPY_BOOT_FORMAT": document.bootFormat ?? "",
        ]
    }
}
