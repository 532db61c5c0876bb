import Foundation
import LivecopyModel

/// Human-readable renderings of plans for `status`, `history` and `show`.
enum PlanText {
    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return ISO8601.string(date)
    }

    /// One summary line: id, state, name, disk counts, times.
    static func summary(_ plan: PlanRecord, disks: [DiskRecord]) -> String {
        let completed = disks.filter { $0.state == .completed }.count
        let vms = Set(disks.map(\.vmName)).sorted().joined(separator: ",")
        return "\(String(plan.id).padding(toLength: 6, withPad: " ", startingAt: 0)) "
            + "\(plan.state.rawValue.padding(toLength: 16, withPad: " ", startingAt: 0)) "
            + "\(completed)/\(disks.count) disks  \(time(plan.createdAt))  \(plan.name ?? "-")  [\(vms)]"
            + (plan.error.map { "  error: \($0)" } ?? "")
    }

    /// The operator's settings (`livecopy throttle`, `pause`), or nil when none is set.
    static func controls(_ controls: PlanControls, planId: Int64) -> String? {
        var parts: [String] = []
        if controls.paused { parts.append("PAUSED (livecopy resume \(planId) continues)") }
        if let speed = controls.speedOverride { parts.append("speed \(OperatorAction.speedText(speed)) (livecopy throttle)") }
        return parts.isEmpty ? nil : "  controls: " + parts.joined(separator: ", ")
    }

    /// One line per disk: state, progress and the image the VM must boot from
    /// (`bootImage`, the engine's answer; the record's own when not given).
    static func disk(_ disk: DiskRecord, bootImage: String?? = nil) -> String {
        let boot = bootImage ?? disk.bootImage
        let percent = disk.bytesTotal > 0 ? String(format: "%.1f%%", Double(disk.bytesDone) / Double(disk.bytesTotal) * 100) : "-"
        return "  \("\(disk.vmName)/\(disk.device)".padding(toLength: 20, withPad: " ", startingAt: 0)) "
            + "\(disk.state.rawValue.padding(toLength: 15, withPad: " ", startingAt: 0)) \(percent.padding(toLength: 7, withPad: " ", startingAt: 0)) "
            + "\(ByteSize.format(disk.bytesDone))/\(ByteSize.format(disk.bytesTotal))  "
            + "\(disk.source ?? "?") → \(disk.destination)  boot from: \(boot ?? "unknown (run livecopy recover)")"
            + (disk.error.map { "\n      error: \($0)" } ?? "")
    }

    static func event(_ event: EventRecord, disks: [Int64: DiskRecord]) -> String {
        let who = event.diskId.flatMap { disks[$0] }.map { "\($0.vmName)/\($0.device)" } ?? "plan"
        let change = event.kind == .transition ? "\(event.from ?? "∅") → \(event.to ?? "?")" : event.kind.rawValue
        return "  \(time(event.at))  \(who.padding(toLength: 18, withPad: " ", startingAt: 0)) \(change): \(event.detail)"
    }
}
