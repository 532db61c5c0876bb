import Foundation
import LivecopyModel
import TestSupport
import Testing

/// `docs/state-machine.md` shows the tables the code has: its transition and intent
/// tables (between their `<!-- name -->` markers) are read back and compared with
/// `DiskState`, `PlanState` and `DiskIntent`.
struct StateMachineDocTests {
    static let document = DocumentTable.page("state-machine.md")

    /// The table rows between `<!-- name -->` and `<!-- /name -->`, as cells without backquotes.
    static func rows(_ name: String) throws -> [[String]] {
        try #require(DocumentTable.rows(name, of: document, stripBackquotes: true), "docs/state-machine.md has no \(name) table")
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
            #expect(Self.targets(row[1]) == Set(intent.steps.map(\.rawValue)), "\(intent.rawValue)")
        }
    }
}
