// What `livecopy validate` prints for people: the disks, the filesystems, the order and
// the estimate, from the same `ValidationDocument` `--json` prints.

import LivecopyModel

/// The human form of a `ValidationDocument`, a section per part.
enum ValidationText {
    /// Every line, for stdout.
    static func lines(_ document: ValidationDocument) -> [String] {
        var lines: [String] = []
        let plan = document.plan
        let vmCount = Set(document.disks.map(\.vm)).count
        lines.append("plan\(plan.name.map { " '\($0)'" } ?? ""): \(document.disks.count) disk(s) of \(vmCount) VM(s); policy \(plan.policy): "
            + "strategy \(plan.strategy), speed \(plan.speed > 0 ? PlanEstimate.rateText(Double(plan.speed)) : "unlimited"), "
            + "max_parallel_disks \(plan.maxParallelDisks), space_margin \(plan.spaceMargin)")
        lines.append("")
        lines += disks(document)
        lines.append("")
        lines += filesystems(document)
        lines.append("")
        lines += order(document)
        lines.append("")
        lines.append(estimate(document.estimate))
        lines.append(document.accepted
            ? "accepted: livecopy submit would record this plan and start copying"
            : "refused: \(document.problems.count) problem(s), each on stderr")
        return lines
    }

    /// The table of disks, with a note per size read from the files instead of the map.
    static func disks(_ document: ValidationDocument) -> [String] {
        var notes: [String] = []
        let rows = document.disks.map { disk -> [String] in
            var allocated = disk.allocatedBytes.map(ByteSize.format) ?? "-"
            if disk.allocatedFrom == "file_blocks" {
                notes.append("  * \(disk.vm)/\(disk.device): allocated size from the files' sizes on disk, not from the image's map (\(disk.allocatedNote ?? "unreadable"))")
                allocated += " *"
            }
            return [disk.vm, disk.device, disk.source ?? "(not found)", disk.virtualSize.map(ByteSize.format) ?? "-", allocated,
                    disk.destination, disk.filesystem ?? (isBlockDevice(disk.destination) ? "(block device)" : "-")]
        }
        return table(["VM", "DEVICE", "SOURCE", "VIRTUAL", "ALLOCATED", "DESTINATION", "FILESYSTEM"], rows) + notes
    }

    /// Each filesystem: its free space against what is counted there.
    static func filesystems(_ document: ValidationDocument) -> [String] {
        guard !document.filesystems.isEmpty else { return ["filesystems: none to check (no file destination found)"] }
        var lines = ["filesystems:"]
        for fs in document.filesystems {
            let free = fs.freeBytes.map { "\(ByteSize.format($0)) free" } ?? "free space unknown"
            let counted = "\(ByteSize.format(fs.planBytes)) for \(fs.disks.count) disk(s) of this plan"
                + " + \(ByteSize.format(fs.inProgressBytes)) for \(fs.inProgress.count) disk(s) of plans in progress"
            let verdict: String
            if fs.spaceMargin == 0 {
                verdict = "not checked (space_margin 0)"
            } else if !fs.checked {
                verdict = "not checked (free space unknown)"
            } else {
                verdict = fs.fits ? "fits" : "DOES NOT FIT"
            }
            lines.append("  \(fs.directory): \(free); needs \(ByteSize.format(fs.requiredBytes)) = (\(counted)) × space_margin \(fs.spaceMargin): \(verdict)")
            lines.append("    this plan: \(fs.disks.joined(separator: ", "))")
            for other in fs.inProgress {
                lines.append("    plan \(other.plan) (\(other.planState)): \(other.vm)/\(other.device) \(other.state), "
                    + (other.remainingBytes.map { "\(ByteSize.format($0)) still to copy" } ?? "size unknown (recorded detached), counted as 0"))
            }
        }
        return lines
    }

    /// The order the disks start in, and when.
    static func order(_ document: ValidationDocument) -> [String] {
        let lines = ["order (max_parallel_disks \(document.plan.maxParallelDisks)):"]
        let rows = document.order.map { slot -> [String] in
            let start: String
            if slot.firstWave {
                start = "starts at once"
            } else if let seconds = slot.startSeconds {
                start = "starts after \(duration(seconds))"
            } else {
                start = "starts when a disk before it ends"
            }
            let end = slot.endSeconds.map { "ends after \(duration($0))" } ?? ""
            return ["  \(slot.position).", slot.disk, start, end]
        }
        return lines + table(nil, rows)
    }

    /// `estimate: 1m02s (policy speed 32.0 MiB/s per disk)`.
    static func estimate(_ estimate: ValidationDocument.Estimate) -> String {
        guard let seconds = estimate.seconds else { return "estimate: none (\(estimate.description))" }
        var text = "estimate: \(duration(seconds)) (\(estimate.description))"
        if estimate.unknownDisks > 0 { text += "; \(estimate.unknownDisks) disk(s) of unknown size counted as 0" }
        return text
    }

    /// `1m02s`, to the nearest second.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--" }
        return ProgressLine.durationText(Int64(min(seconds, 1e15).rounded()))
    }

    /// Rows padded into columns two spaces apart, under `header` if given.
    static func table(_ header: [String]?, _ rows: [[String]]) -> [String] {
        let all = (header.map { [$0] } ?? []) + rows
        guard let columns = all.map(\.count).max() else { return [] }
        var widths = [Int](repeating: 0, count: columns)
        for row in all { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
    }
}
