import Foundation
import LivecopyModel

/// Human-readable renderings of plans for `status`, `history` and `show`.
enum PlanText {
    static func time(_ date: Date?) -> String {
        guard let date else { return "-" }
        return ISO8601.string(date)
    }

    /// The column headers above `summary` lines.
    static let summaryHeader = column("ID", 7) + column("STATE", 17) + column("DONE", 10) + column("CREATED", 26) + "NAME  [VMS]"

    /// One summary line: id, state, disks completed of all, creation time, name, VMs.
    static func summary(_ plan: PlanRecord, disks: [DiskRecord]) -> String {
        let completed = disks.filter { $0.state == .completed }.count
        let vms = Set(disks.map(\.vmName)).sorted().joined(separator: ",")
        return column(String(plan.id), 7) + column(plan.state.rawValue, 17) + column("\(completed)/\(disks.count)", 10)
            + column(time(plan.createdAt), 26) + "\(plan.name ?? "-")\(plan.host.map { " on host \($0)" } ?? "")  [\(vms)]"
            + (plan.error.map { "  error: \($0)" } ?? "")
    }

    /// The column headers above `disk` lines. POSITION is the copy job's offset in the
    /// disk as last recorded (holes included), not the bytes copied, which only the live
    /// progress line counts.
    static let diskHeader = "  " + column("VM/DEVICE", 21) + column("STATE", 16) + column("POSITION", 31)
        + "SOURCE → DESTINATION, BOOT IMAGE"

    /// `text` padded to `width` (at least one space after it).
    private static func column(_ text: String, _ width: Int) -> String {
        text.count < width ? text.padding(toLength: width, withPad: " ", startingAt: 0) : text + " "
    }

    /// For a pending disk waiting for its turn to copy (serve's or the fleet's limits):
    /// the reason, as its latest event says it; nil otherwise.
    static func waiting(_ disk: DiskRecord, latest: EventRecord?) -> String? {
        guard disk.state == .pending, let detail = latest?.detail, detail.hasPrefix("waiting for a copy slot") else { return nil }
        return "    \(detail)"
    }

    /// A fleet store's agents, one line a host: who holds its lease and how fresh it is.
    static func agents(_ leases: [HostLeaseRecord], now: Date) -> [String] {
        leases.map { lease in
            let age = String(format: "%.1f", now.timeIntervalSince(lease.heartbeat))
            return "agent of host \(lease.host): pid \(lease.agent.pid) on \(lease.agent.machine), heartbeat \(age) s ago"
        }
    }

    /// The operator's settings (`livecopy throttle`, `pause`), or nil when none is set.
    static func controls(_ controls: PlanControls, planId: Int64) -> String? {
        var parts: [String] = []
        if controls.paused { parts.append("PAUSED (livecopy resume \(planId) continues)") }
        if let speed = controls.speedOverride { parts.append("speed \(OperatorAction.speedText(speed)) (livecopy throttle)") }
        return parts.isEmpty ? nil : "  controls: " + parts.joined(separator: ", ")
    }

    /// One line per disk: state, the job's position, and the image the VM must boot from
    /// (`bootImage`, the engine's answer; the record's own when not given). A disk of a
    /// plan refused at submission was never touched: its VM boots as it did.
    static func disk(_ disk: DiskRecord, bootImage: String?? = nil, planState: PlanState? = nil) -> String {
        let boot = bootImage ?? disk.bootImage
        let percent = disk.bytesTotal > 0 ? String(format: "%.1f%%", Double(disk.bytesDone) / Double(disk.bytesTotal) * 100) : "-"
        let bootText = planState == .refused ? "unchanged (the plan was refused; nothing was done)"
            : boot ?? "unknown (run livecopy recover)"
        return "  " + column("\(disk.vmName)/\(disk.device)", 21) + column(disk.state.rawValue, 16)
            + column("\(percent) \(ByteSize.format(disk.bytesDone))/\(ByteSize.format(disk.bytesTotal))", 31)
            + "\(disk.source ?? "?") → \(disk.destination)  boot from: \(bootText)"
            + (disk.error.map { "\n      error: \($0)" } ?? "")
    }

    /// The line `status` prints about quarantine (nil when it holds nothing).
    static func quarantine(_ summary: QuarantineSummary) -> String? {
        guard summary.count > 0 else { return nil }
        let sources = summary.count == 1 ? "1 source" : "\(summary.count) sources"
        let next = summary.nextExpiry.map { ", next expiry \(time($0)) (livecopy purge deletes what has expired)" } ?? ""
        return "quarantine: \(sources) held, \(ByteSize.format(summary.bytes))\(next)"
    }

    /// One line per quarantined source of a plan (`show`): the disk, its state, where it
    /// is and came from, its size and expiry.
    static func quarantined(_ image: QuarantinedImage, disks: [Int64: DiskRecord]) -> String {
        let who = disks[image.diskId].map { "\($0.vmName)/\($0.device)" } ?? "?"
        let end: String
        switch image.state {
        case .held, .purging, .restoring: end = "expires \(time(image.expiresAt))"
        case .purged: end = "purged \(time(image.endedAt))"
        case .restored: end = "restored \(time(image.endedAt))"
        }
        return "  " + column("\(who) (disk \(image.diskId))", 21) + column(image.state.rawValue, 11)
            + "\(image.quarantinePath) ← \(image.originalPath)  \(ByteSize.format(image.sizeBytes))  \(end)"
    }

    static func event(_ event: EventRecord, disks: [Int64: DiskRecord]) -> String {
        let who = event.diskId.flatMap { disks[$0] }.map { "\($0.vmName)/\($0.device)" } ?? "plan"
        let change = event.kind == .transition ? "\(event.from ?? "∅") → \(event.to ?? "?")" : event.kind.rawValue
        return "  \(time(event.at))  \(who.padding(toLength: 18, withPad: " ", startingAt: 0)) \(change): \(event.detail)"
    }
}
