import Foundation
@testable import LivecopyCommands
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

/// `livecopy watch`'s frames as text at a fixed width, as JSON, and the rates its reader
/// measures from the progress a real store records.
@Suite struct WatchRenderingTests {
    static let now = Date(timeIntervalSince1970: 1_795_000_000)

    static func frame(rate: Double? = 2 * 1048576, secondsLeft: Double? = 25, paused: Bool = false) -> WatchFrame {
        let event = EventRecord(id: 9, planId: 3, diskId: 5, at: now.addingTimeInterval(-4), kind: .transition,
                                from: "snapshotting", to: "streaming", detail: "stream job started")
        let disk = WatchFrame.Disk(id: 5, vmName: "web01", device: "drive0", state: .streaming, bytesDone: 16 << 20,
                                   bytesTotal: 64 << 20, updatedAt: now.addingTimeInterval(-1), rate: rate,
                                   secondsLeft: secondsLeft, lastEvent: event, error: nil)
        var idle = disk
        idle.id = 6
        idle.device = "drive1"
        idle.state = .pending
        idle.bytesDone = 0
        idle.bytesTotal = 0
        idle.rate = nil
        idle.secondsLeft = nil
        idle.lastEvent = nil
        return WatchFrame(takenAt: now, plans: [
            WatchFrame.Plan(id: 3, name: "evacuate", state: .running, paused: paused, speedOverride: nil, disks: [disk, idle]),
        ])
    }

    @Test func aFrameAtAFixedWidthFillsItWithTheBars() {
        let lines = WatchText.lines(Self.frame(), width: 100)
        let bar = String(repeating: "#", count: 7) + String(repeating: "-", count: 24)
        #expect(lines == [
            "livecopy watch  2026-11-18T11:06:40.000Z  1 plan, 1 running",
            "plan 3 \"evacuate\" running  0/2 disks completed",
            "  web01/drive0       streaming     [\(bar)]  25.0%    2.0 MiB/s  ETA    25s",
            "      16.0 MiB of 64.0 MiB  last 4s ago: snapshotting → streaming: stream job started",
            "  web01/drive1       pending       [\(String(repeating: "-", count: 31))]   0.0%            —  ETA      —",
            "      0 B of 0 B  last: —",
        ])
        #expect(lines.allSatisfy { $0.count <= 100 })
        #expect(lines[2].count == 100 && lines[4].count == 100, "the bars take the width the other columns leave")
    }

    @Test func aNarrowTerminalCutsEveryLineAndNeverWraps() {
        for width in [20, 60, 79] {
            let lines = WatchText.lines(Self.frame(), width: width)
            #expect(lines.allSatisfy { $0.count <= width }, "\(width): \(lines)")
            #expect(lines[2].hasPrefix("  web01/drive0"), "\(lines[2])")
        }
        let wide = WatchText.lines(Self.frame(), width: 200)
        #expect(wide[2].count == 200 && wide[2].contains("[" + String(repeating: "#", count: 32) + "-"), "\(wide[2])")
    }

    @Test func withoutATerminalBarsHaveThirtyCellsAndNoEscapes() {
        let block = WatchText.plainBlock(Self.frame(rate: nil, secondsLeft: nil, paused: true))
        #expect(!block.contains("\u{1B}"))
        #expect(block.hasSuffix("\n\n"), "a blank line ends each block")
        #expect(block.contains("plan 3 \"evacuate\" running  0/2 disks completed  PAUSED (livecopy resume 3)"), "\(block)")
        #expect(block.contains("[#######-----------------------]  25.0%"), "\(block)")
        #expect(block.contains("25.0%            —  ETA      —"), "an unknown rate and ETA are dashes: \(block)")
    }

    @Test func theTerminalFrameRedrawsInPlace() {
        let text = WatchText.terminalFrame(Self.frame(), width: 100)
        #expect(text.hasPrefix("\u{1B}[H") && text.hasSuffix("\u{1B}[J"))
        #expect(text.components(separatedBy: "\u{1B}[K\n").count == 7, "six lines, each cleared to its end")
        #expect(WatchText.terminalFrame(Self.frame(), width: 100, height: 30) == text, "it fits in 30 rows")
        let short = WatchText.terminalFrame(Self.frame(), width: 100, height: 5)
        let shortLines = short.components(separatedBy: "\u{1B}[K\n").dropLast()
        #expect(shortLines.count == 4, "a frame taller than the terminal is cut to its height less one: \(short)")
        #expect(shortLines.last == "… 3 more lines (a taller terminal, or --plan ID)", "\(short)")
    }

    @Test func noPlanSaysSo() {
        #expect(WatchText.lines(WatchFrame(takenAt: Self.now, plans: []), width: nil)
            == ["livecopy watch  2026-11-18T11:06:40.000Z  0 plans, 0 running", "no plan in progress"])
    }

    @Test func theJSONLineHasEveryKeyAndISODates() throws {
        let line = try WatchDocument(Self.frame()).line()
        #expect(!line.contains("\n"))
        let document = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(document["at"] as? String == "2026-11-18T11:06:40.000Z")
        let plan = try #require((document["plans"] as? [[String: Any]])?.first)
        #expect(Set(plan.keys) == ["id", "name", "state", "paused", "speed_override", "disks"])
        let disks = try #require(plan["disks"] as? [[String: Any]])
        #expect(Set(disks[0].keys) == ["id", "vm", "device", "state", "bytes_done", "bytes_total", "updated_at", "rate",
                                       "eta_seconds", "last_event", "error"])
        #expect((disks[0]["rate"] as? NSNumber)?.doubleValue == Double(2 << 20))
        #expect(disks[0]["updated_at"] as? String == "2026-11-18T11:06:39.000Z")
        #expect((disks[0]["last_event"] as? [String: Any])?["to"] as? String == "streaming")
        #expect(disks[1]["rate"] is NSNull && disks[1]["eta_seconds"] is NSNull && disks[1]["last_event"] is NSNull)
    }

    /// The rate is the recorded position's difference over the recorded progress's times,
    /// whatever the time between the reads; a paused job's rate falls to nothing.
    @Test func theReaderMeasuresRatesFromTheRecordedProgress() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-watchrate")
        defer { scratch.remove() }
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let new = NewPlan(name: "rates", policyReference: nil, policy: try Policy.resolve(nil), state: .running, disks: [
            NewPlan.Disk(vmName: "vm", vmAddress: scratch.appending("vm.qmp"), device: "drive0",
                         destination: scratch.appending("d.qcow2"), source: "/s.qcow2", sourceFormat: "qcow2", qmpDevice: "drive0"),
        ])
        let (plan, disks) = try store.insertPlan(new, at: Self.now)
        var streaming = disks[0]
        streaming.state = .streaming
        try store.save(disk: streaming, expecting: .pending,
                       event: NewEvent(kind: .transition, from: "pending", to: "streaming", detail: "started"), at: Self.now)
        let total: Int64 = 64 << 20
        try store.saveProgress(diskId: streaming.id, bytesDone: 10 << 20, bytesTotal: total, at: Self.now)

        var reader = WatchReader(planId: nil)
        let first = try reader.read(try SQLiteStore.readingOnly(at: store.path), at: Self.now)
        #expect(first.plans.map(\.id) == [plan.id])
        #expect(first.plans[0].disks[0].rate == nil, "one sample tells no rate")
        #expect(first.plans[0].disks[0].lastEvent?.to == "streaming")

        try store.saveProgress(diskId: streaming.id, bytesDone: 14 << 20, bytesTotal: total, at: Self.now.addingTimeInterval(2))
        let second = try reader.read(try SQLiteStore.readingOnly(at: store.path), at: Self.now.addingTimeInterval(30))
        let disk = second.plans[0].disks[0]
        #expect(disk.rate == Double(2 << 20), "4 MiB in the 2 s between the progress writes")
        #expect(disk.secondsLeft == 25, "50 MiB left at 2 MiB/s")
        #expect(WatchText.diskLine(disk, width: nil).hasSuffix("2.0 MiB/s  ETA    25s"))

        // Paused: the engine keeps writing the same position; after the window the rate is 0.
        try store.saveProgress(diskId: streaming.id, bytesDone: 14 << 20, bytesTotal: total, at: Self.now.addingTimeInterval(20))
        let third = try reader.read(try SQLiteStore.readingOnly(at: store.path), at: Self.now.addingTimeInterval(40))
        #expect(third.plans[0].disks[0].rate == 0)
        #expect(third.plans[0].disks[0].secondsLeft == nil && WatchText.etaText(third.plans[0].disks[0]) == "—")

        #expect(throws: InputError.self) { var other = WatchReader(planId: 99); _ = try other.read(store, at: Self.now) }
    }
}
