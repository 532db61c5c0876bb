import Foundation
@testable import LivecopyCommands
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

/// `history --since/--until` and its summary line, over a store written through the
/// store's own API with known dates, sizes and copy times; the summary's numbers from its
/// SQL aggregates; bad dates refused in one line with nothing touched.
@Suite(.serialized)
struct HistoryRangeTests {
    static func day(_ text: String) -> Date { try! Date.ISO8601FormatStyle().parse(text + "T00:00:00Z") }

    /// Plans 1 (Nov 1: two completed disks, 100 MiB in 10 s and one without allocated
    /// bytes), 2 (Nov 10: 300 MiB in 20 s), 3 (Nov 20: failed, 50 MiB allocated), 4
    /// (Nov 15: refused).
    static func knownStore(_ scratch: TemporaryDirectory) throws -> SQLiteStore {
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        func plan(_ created: Date, _ state: PlanState, disks: [(allocated: Int64?, copySeconds: Double?)]) throws {
            let new = NewPlan(name: "p", policyReference: nil, policy: try Policy.resolve(nil), state: state == .refused ? .refused : .running,
                              disks: disks.enumerated().map { index, disk in
                                  NewPlan.Disk(vmName: "vm\(index)", vmAddress: scratch.appending("vm.qmp"), device: "drive0",
                                               destination: scratch.appending("d\(created.timeIntervalSince1970)-\(index).qcow2"),
                                               source: "/s.qcow2", sourceFormat: "qcow2", qmpDevice: "drive0", allocatedBytes: disk.allocated)
                              })
            let (record, records) = try store.insertPlan(new, at: created)
            for (disk, shape) in zip(records, disks) {
                var moving = disk
                var at = created
                let path: [DiskState] = shape.copySeconds == nil ? [.snapshotting, .failed] : [.snapshotting, .streaming, .retiring, .completed]
                for next in path {
                    let from = moving.state
                    moving.state = next
                    at = at.addingTimeInterval(next == .retiring ? shape.copySeconds ?? 0 : 1)
                    try store.save(disk: moving, expecting: from,
                                   event: NewEvent(kind: .transition, from: from.rawValue, to: next.rawValue, detail: ""), at: at)
                }
            }
            if state != .refused && state != .running {
                var final = record
                final.state = state
                try store.save(plan: final, expecting: .running, event: nil, at: created.addingTimeInterval(60))
            }
        }
        try plan(day("2026-11-01"), .completed, disks: [(100 << 20, 10), (nil, 5)])
        try plan(day("2026-11-10"), .completed, disks: [(300 << 20, 20)])
        try plan(day("2026-11-20"), .failed, disks: [(50 << 20, nil)])
        try plan(day("2026-11-15"), .refused, disks: [(1 << 20, nil)])
        return store
    }

    @Test func theSummaryIsTheSQLAggregatesOfThePlansSelected() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-histsum")
        defer { scratch.remove() }
        let store = try Self.knownStore(scratch)
        let notRefused = Set(PlanState.allCases).subtracting([.refused])
        #expect(try store.summary(PlanFilter(states: notRefused))
            == PlanSummary(plans: 3, disks: 4, completedDisks: 3, bytes: 400 << 20, timedBytes: 400 << 20, copySeconds: 30))
        let range = PlanFilter(states: notRefused, createdFrom: Self.day("2026-11-05"), createdBefore: Self.day("2026-11-25"))
        let inRange = try store.summary(range)
        #expect(inRange == PlanSummary(plans: 2, disks: 2, completedDisks: 1, bytes: 300 << 20, timedBytes: 300 << 20, copySeconds: 20))
        #expect(inRange.meanRate == Double(15 << 20))
        #expect(try store.summary(PlanFilter()).plans == 4, "every plan, the refused one too")
        #expect(try store.summary(PlanFilter(createdFrom: Self.day("2026-12-01")))
            == PlanSummary(plans: 0, disks: 0, completedDisks: 0, bytes: 0, timedBytes: 0, copySeconds: 0))
        #expect(try store.plans(range, limit: nil).map(\.id) == [3, 2])
        #expect(try store.plans(PlanFilter(states: notRefused, createdBefore: Self.day("2026-11-10")), limit: nil).map(\.id) == [1],
                "--until is exclusive")

        let plan = try store.summaryQueryPlan(range).joined(separator: "\n")
        #expect(plan.contains("USING INDEX plans_by_created_at") || plan.contains("USING COVERING INDEX plans_by_created_at"),
                "a range walks the creation-time index:\n\(plan)")
        #expect(!plan.contains("SCAN p"), "no plan is read outside the range:\n\(plan)")
    }

    @Test func historyListsTheRangeAndPrintsTheSummary() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-histrange")
        defer { scratch.remove() }
        _ = try Self.knownStore(scratch)
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))

        let listed = try await livecopy.run(["history", "--since", "2026-11-05", "--until", "2026-11-25T00:00:00Z"])
        #expect(listed.status == 0, "\(listed.stderr)")
        let lines = listed.stdout.split(separator: "\n").map(String.init)
        #expect(lines.dropFirst().dropLast().map { $0.prefix(7).trimmingCharacters(in: .whitespaces) } == ["3", "2"], "\(listed.stdout)")
        #expect(lines.last == "in all: 2 plans, 2 disks (1 completed), 300.0 MiB copied, mean rate 15.0 MiB/s", "\(listed.stdout)")

        let everything = try await livecopy.run(["history", "--all", "--limit", "1"])
        #expect(everything.stdout.split(separator: "\n").last
            == "in all: 4 plans, 5 disks (3 completed), 400.0 MiB copied, mean rate 13.3 MiB/s",
                "the summary counts every plan selected, not only those listed: \(everything.stdout)")

        let ago = try await livecopy.run(["history", "--since", "36500d", "--summary"])
        #expect(ago.stdout == "in all: 3 plans, 4 disks (3 completed), 400.0 MiB copied, mean rate 13.3 MiB/s\n",
                "a century ago is before every plan: \(ago.stdout)\(ago.stderr)")

        let json = try await livecopy.run(["history", "--summary", "--json", "--since", "2026-11-05", "--until", "2026-11-25"])
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(Set(document.keys) == ["plans", "disks", "completed_disks", "bytes", "timed_bytes", "copy_seconds", "mean_rate",
                                      "since", "until"])
        #expect(document["bytes"] as? Int == 300 << 20 && document["copy_seconds"] as? Int == 20, "\(json.stdout)")
        #expect(document["since"] as? String == "2026-11-05T00:00:00.000Z" && document["until"] as? String == "2026-11-25T00:00:00.000Z")
    }

    @Test func badDatesAreOneLineAndTouchNothing() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-histbad")
        defer { scratch.remove() }
        let store = try Self.knownStore(scratch)
        let before = try Data(contentsOf: URL(fileURLWithPath: store.path))
        let livecopy = LivecopyProcess(database: store.path)
        for (arguments, message) in [
            (["--since", "yesterday"], "--since 'yesterday' is neither a date"),
            (["--until", "2026-13-01"], "--until '2026-13-01' is neither a date"),
            (["--since", "7x"], "--since '7x' is neither a date"),
            (["--since=-3d"], "--since '-3d' is neither a date"),
            (["--since", "2026-11-20", "--until", "2026-11-10"], "--since 2026-11-20 (2026-11-20T00:00:00.000Z) is not before --until 2026-11-10"),
        ] {
            let result = try await livecopy.run(["history"] + arguments)
            #expect(result.status == 2, "\(arguments): \(result.status)")
            #expect(result.stderr.hasPrefix("livecopy: error: \(message)") && result.stderr.split(separator: "\n").count == 1,
                    "\(arguments): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: store.path)) == before, "nothing touched")
        let missing = scratch.appending("missing.db")
        #expect(try await LivecopyProcess(database: missing).run(["history", "--since", "bad"]).status == 2)
        #expect(!FileManager.default.fileExists(atPath: missing))
    }

    @Test func timeBoundsReadDatesAndTimesAgo() throws {
        let now = Self.day("2026-11-30")
        #expect(try TimeBound.date("24h", option: "--since", now: now) == Self.day("2026-11-29"))
        #expect(try TimeBound.date("7d", option: "--since", now: now) == Self.day("2026-11-23"))
        #expect(try TimeBound.date("2w", option: "--since", now: now) == Self.day("2026-11-16"))
        #expect(try TimeBound.date("90m", option: "--since", now: now) == now.addingTimeInterval(-5400))
        #expect(try TimeBound.date("2026-11-30", option: "--since", now: .distantPast) == now)
        #expect(try TimeBound.date("2026-11-30T12:00:00Z", option: "--since", now: now) == now.addingTimeInterval(43200))
        #expect(try TimeBound.date("2026-11-30T12:00:00+02:00", option: "--since", now: now) == now.addingTimeInterval(36000))
        #expect(try TimeBound.date("2026-11-30T12:00:00.250Z", option: "--since", now: now) == now.addingTimeInterval(43200.25))
        for bad in ["", "d", "7", "7 d", "x7d", "2026-11-31", "30/11/2026", "1.5h"] {
            #expect(throws: InputError.self, "\(bad)") { try TimeBound.date(bad, option: "--since", now: now) }
        }
    }
}
