// How `livecopy watch` writes a `WatchFrame`: lines of text fitted to a width
// (`WatchText`), the terminal's in-place redraw, and one JSON object a line
// (`WatchDocument`). Pure functions of the frame.

import Foundation
import LivecopyModel

/// A `WatchFrame` as lines of text. With a width (a terminal's), every line is cut to it
/// and the bars are scaled to fill it; without one (not a terminal), bars have
/// `plainBarWidth` cells and nothing is cut:
///
///     livecopy watch  2026-11-30T12:00:00.000Z  1 plan, 1 running
///     plan 3 "evacuate" running  0/1 disks completed
///       vm/drive0          streaming     [######----------]  42.0%    2.0 MiB/s  ETA    18s
///           26.9 MiB of 64.0 MiB  last 1s ago: snapshotting → streaming: …
enum WatchText {
    /// Shown for a rate or an ETA not known.
    static let unknown = "—"
    /// A bar's cells when there is no width to fit.
    static let plainBarWidth = 30
    /// A bar has at least this many cells, whatever the width (the line is cut instead).
    static let narrowestBar = 5

    /// The frame's lines, each cut to `width` characters when given.
    static func lines(_ frame: WatchFrame, width: Int?) -> [String] {
        var lines = [header(frame)]
        if frame.plans.isEmpty { lines.append("no plan in progress") }
        for plan in frame.plans {
            lines.append(planLine(plan))
            for disk in plan.disks {
                lines.append(diskLine(disk, width: width))
                lines.append(eventLine(disk, now: frame.takenAt))
            }
        }
        guard let width else { return lines }
        return lines.map { cut($0, to: width) }
    }

    /// The terminal's frame: the cursor home, each line cleared to its end, and the screen
    /// below the last line cleared, so the frame replaces the previous one in place. With
    /// a `height`, a frame taller than the terminal keeps its first lines and says how many
    /// it left out (the terminal would scroll, and the next frame not replace this one).
    static func terminalFrame(_ frame: WatchFrame, width: Int, height: Int? = nil) -> String {
        let clearToEndOfLine = "\u{1B}[K"
        var shown = lines(frame, width: width)
        if let height, height > 1, shown.count > height - 1 {
            let kept = height - 2
            shown = Array(shown.prefix(kept)) + [cut("… \(shown.count - kept) more lines (a taller terminal, or --plan ID)", to: width)]
        }
        return "\u{1B}[H" + shown.map { $0 + clearToEndOfLine + "\n" }.joined() + "\u{1B}[J"
    }

    /// The plain block printed at each refresh when stdout is not a terminal: the lines
    /// and a blank line after them.
    static func plainBlock(_ frame: WatchFrame) -> String {
        lines(frame, width: nil).map { $0 + "\n" }.joined() + "\n"
    }

    static func header(_ frame: WatchFrame) -> String {
        let running = frame.plans.filter { $0.state == .running }.count
        let plans = frame.plans.count == 1 ? "1 plan" : "\(frame.plans.count) plans"
        return "livecopy watch  \(ISO8601.string(frame.takenAt))  \(plans), \(running) running"
    }

    static func planLine(_ plan: WatchFrame.Plan) -> String {
        let completed = plan.disks.filter { $0.state == .completed }.count
        var line = "plan \(plan.id)" + (plan.name.map { " \"\($0)\"" } ?? "")
            + " \(plan.state.rawValue)  \(completed)/\(plan.disks.count) disks completed"
        if plan.paused { line += "  PAUSED (livecopy resume \(plan.id))" }
        if let speed = plan.speedOverride { line += "  throttled to \(OperatorAction.speedText(speed))" }
        return line
    }

    /// The disk's line: label, state, bar, percent, rate, ETA. With a width, the bar takes
    /// what the other columns leave of it.
    static func diskLine(_ disk: WatchFrame.Disk, width: Int?) -> String {
        let head = "  " + padded(disk.label, 18) + " " + padded(disk.state.rawValue, 13) + " ["
        let tail = "] " + leftPadded(ProgressLine.percent(disk.fraction), 6)
            + "  " + leftPadded(rateText(disk.rate), 11) + "  ETA " + leftPadded(etaText(disk), 6)
        let cells = width.map { max(narrowestBar, $0 - head.count - tail.count) } ?? plainBarWidth
        let filled = Int(disk.fraction * Double(cells))
        return head + String(repeating: "#", count: filled) + String(repeating: "-", count: cells - filled) + tail
    }

    /// Under the disk's line: its position of its length, its newest event, its error.
    static func eventLine(_ disk: WatchFrame.Disk, now: Date) -> String {
        var line = "      \(ByteSize.format(disk.bytesDone)) of \(ByteSize.format(disk.bytesTotal))  last"
        if let event = disk.lastEvent {
            let age = ProgressLine.durationText(Int64(now.timeIntervalSince(event.at).rounded()))
            line += " \(age) ago: " + eventText(event)
        } else {
            line += ": " + unknown
        }
        return line + (disk.error.map { "  error: \($0)" } ?? "")
    }

    /// `snapshotting → streaming: detail`, or `note: detail`.
    static func eventText(_ event: EventRecord) -> String {
        let detail = event.detail.replacingOccurrences(of: "\n", with: " ")
        switch event.kind {
        case .transition:
            return "\(event.from ?? "∅") → \(event.to ?? "?")" + (detail.isEmpty ? "" : ": \(detail)")
        case .intent, .outcome, .note:
            return "\(event.kind.rawValue): \(detail)"
        }
    }

    /// `2.0 MiB/s`, or `—`.
    static func rateText(_ rate: Double?) -> String {
        rate.map { "\(ByteSize.format(ProgressLine.bytes($0)))/s" } ?? unknown
    }

    /// `18s`, `1m02s`, `3h07m`; `0s` once the job's position reached its length; else `—`.
    static func etaText(_ disk: WatchFrame.Disk) -> String {
        guard let seconds = disk.secondsLeft, seconds.isFinite else { return unknown }
        return ProgressLine.durationText(Int64(seconds.rounded()))
    }

    /// `text` cut to `width` characters.
    static func cut(_ text: String, to width: Int) -> String {
        text.count <= width ? text : String(text.prefix(max(0, width)))
    }

    private static func padded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text.padding(toLength: width, withPad: " ", startingAt: 0)
    }

    private static func leftPadded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}

/// `livecopy watch --json`: one object a refresh, on one line. Every key is always
/// present (`null` when there is no value); dates are ISO 8601 in UTC, sizes in bytes,
/// rates in bytes per second, times left in seconds (docs/commands.md lists the keys).
struct WatchDocument: Encodable, Equatable {
    /// One plan of the document.
    struct Plan: Encodable, Equatable {
        let id: Int64
        @NullEncoded var name: String?
        let state: String
        let paused: Bool
        @NullEncoded var speedOverride: Int64?
        let disks: [Disk]

        enum CodingKeys: String, CodingKey {
            case id, name, state, paused, disks
            case speedOverride = "speed_override"
        }
    }

    /// One disk of a plan of the document.
    struct Disk: Encodable, Equatable {
        let id: Int64
        let vm: String
        let device: String
        let state: String
        let bytesDone: Int64
        let bytesTotal: Int64
        let updatedAt: String
        @NullEncoded var rate: Double?
        @NullEncoded var etaSeconds: Double?
        @NullEncoded var lastEvent: Event?
        @NullEncoded var error: String?

        enum CodingKeys: String, CodingKey {
            case id, vm, device, state, rate, error
            case bytesDone = "bytes_done", bytesTotal = "bytes_total", updatedAt = "updated_at"
            case etaSeconds = "eta_seconds", lastEvent = "last_event"
        }
    }

    /// A disk's newest event.
    struct Event: Codable, Equatable {
        let at: String
        let kind: String
        @NullEncoded var from: String?
        @NullEncoded var to: String?
        let detail: String
    }

    let at: String
    let plans: [Plan]

    init(_ frame: WatchFrame) {
        at = ISO8601.string(frame.takenAt)
        plans = frame.plans.map { plan in
            Plan(id: plan.id, name: plan.name, state: plan.state.rawValue, paused: plan.paused,
                 speedOverride: plan.speedOverride, disks: plan.disks.map { disk in
                     Disk(id: disk.id, vm: disk.vmName, device: disk.device, state: disk.state.rawValue,
                          bytesDone: disk.bytesDone, bytesTotal: disk.bytesTotal, updatedAt: ISO8601.string(disk.updatedAt),
                          rate: disk.rate, etaSeconds: disk.secondsLeft,
                          lastEvent: disk.lastEvent.map {
                              Event(at: ISO8601.string($0.at), kind: $0.kind.rawValue, from: $0.from, to: $0.to, detail: $0.detail)
                          },
                          error: disk.error)
                 })
        }
    }

    /// The document on one line, keys sorted.
    func line() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
