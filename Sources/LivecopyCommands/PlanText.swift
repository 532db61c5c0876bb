import Foundation
import LivecopyModel

/// Human-readable renderings of plans for `status`, `history` and `show`.
enum PlanText {
    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return ISO8601.string(date)
    }

    /// The column headers above `summary` lines.
    static let summaryHeader = column("ID", 7) + column("STATE", 17) + column("DONE", 10) + column("CREATED", 22) + "NAME  [VMS]"

    /// One summary line: id, state, disks completed of all, creation time, name, VMs.
    static func summary(_ plan: PlanRecord, disks: [DiskRecord]) -> String {
        let completed = disks.filter { $0.state == .completed }.count
        let vms = Set(disks.map(\.vmName)).sorted().joined(separator: ",")
        return column(String(plan.id), 7) + column(plan.state.rawValue, 17) + column("\(completed)/\(disks.count)", 10)
            + column(time(plan.createdAt), 22) + "\(plan.name ?? "-")  [\(vms)]"
            + (plan.error.map { "  error: \($0)" } ?? "")
    }

    /// The column headers above `disk` lines.
    static let diskHeader = "  " + column("VM/DEVICE", 21) + column("STATE", 16) + column("DONE", 8) + column("BYTES", 22)
        + "SOURCE → DESTINATION  BOOT FROM"

    /// `text` padded to `width` (at least one space after it).
    private static func column(_ text: String, _ width: Int) -> String {
        text.count < width ? text.padding(toLength: width, withPad: " ", startingAt: 0) : text + " "
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
        return "  " + column("\(disk.vmName)/\(disk.device)", 21) + column(disk.state.rawValue, 16) + column(percent, 8)
            + column("\(ByteSize.format(disk.bytesDone))/\(ByteSize.format(disk.bytesTotal))", 22)
            + "\(disk.source ?? "?") → \(disk.destination)  boot from: \(boot ?? "unknown (run livecopy recover)")"
            + (disk.error.map { "\n      error: \($0)" } ?? "")
    }

    static func event(_ event: EventRecord, disks: [Int64: DiskRecord]) -> String {
        let who = event.diskId.flatMap { disks[$0] }.map { "\($0.vmName)/\($0.device)" } ?? "plan"
        let change = event.kind == .transition ? "\(event.from ?? "∅") → \(event.to ?? "?")" : event.kind.rawValue
        return "  \(time(event.at))  \(who.padding(toLength: 18, withPad: " ", startingAt: 0)) \(change): \(event.detail)"
    }
}
