import Foundation
import LivecopyModel
import Testing

/// `docs/state-machine.md` shows the tables the code has: its transition and intent
/// tables (between their `<!-- name -->` markers) are read back and compared with
/// `DiskState`, `PlanState` and `DiskIntent`.
struct StateMachineDocTests {
    static let document: String = {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/state-machine.md").path
        return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }()

    /// The table rows between `<!-- name -->` and `<!-- /name -->`, as cells without backquotes.
    static func rows(_ name: String) throws -> [[String]] {
        let text = try #require(document.components(separatedBy: "<!-- \(name) -->").dropFirst().first?
            .components(separatedBy: "<!-- /\(name) -->").first, "docs/state-machine.md has no \(name) table")
        return text.split(separator: "\n").filter { $0.hasPrefix("| `") }.map { line in
            line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "`", with: "") }
        }
    }

    static func targets(_ cell: String) -> Set<String> {
        cell == "—" ? [] : Set(cell.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
    }

    @Test func theDiskTransitionTableIsTheCodes() throws {
        let rows = try Self.rows("disk-transitions")
        #expect(rows.map { $0[0] } == DiskState.allCases.map(\.rawValue), "one row per state, in order")
        for row in rows {
            let state = try #require(DiskState(rawValue: row[0]))
            #expect(Self.targets(row[1]) == Set(state.allowedNext.map(\.rawValue)), "\(state.rawValue)")
        }
    }

    @Test func thePlanTransitionTableIsTheCodes() throws {
        let rows = try Self.rows("plan-transitions")
        #expect(rows.map { $0[0] } == PlanState.allCases.map(\.rawValue), "one row per state, in order")
        for row in rows {
            let state = try #require(PlanState(rawValue: row[0]))
            #expect(Self.targets(row[1]) == Set(state.allowedNext.map(\.rawValue)), "\(state.rawValue)")
        }
    }

    @Test func theIntentTableIsTheCodes() throws {
        let rows = try Self.rows("intents")
        #expect(rows.map { $0[0] } == DiskIntent.allCases.map(\.rawValue), "one row per intent, in order")
        for row in rows {
            let intent = try #require(DiskIntent(rawValue: row[0]))
            #expect(row[1] == intent.step.rawValue, "\(intent.rawValue)")
        }
    }
}
