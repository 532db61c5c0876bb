import Foundation
import LivecopyModel
import Testing

/// Every edge of the disk and plan transition tables is taken by some test of the suite.
///
/// Phase two of a two-phase check: `scripts/test` runs the whole suite with
/// `LIVECOPY_EDGE_LOG` naming a fresh file, to which every transition any engine makes
/// (in the test process or in a `livecopy` it started) appends a line
/// (`Sources/LivecopyEngine/EdgeLog.swift`); then it runs this suite alone with
/// `LIVECOPY_EDGE_LOG_CHECK=1`. An edge no test reaches is dead (remove it from the
/// table) or untested (test it). Outside that second run there is no log to read, so the
/// suite is disabled; `scripts/test` always runs it, under CI too.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["LIVECOPY_EDGE_LOG_CHECK"] == "1",
                "runs as scripts/test's second phase, over the edge log of the whole suite"))
struct TransitionCoverageTests {
    /// Edges the code can take that no test takes yet, each a gap to close with a test
    /// (an in-memory backend scenario, `InMemoryEngineTests`, is the way for most). The
    /// check fails when one of them is taken after all, so the list only shrinks; it is
    /// empty now and should stay so.
    static let knownUntested: Set<String> = []

    /// The edges recorded by the suite's run, as `kind from→to`.
    static func recordedEdges() throws -> Set<String> {
        let path = try #require(ProcessInfo.processInfo.environment["LIVECOPY_EDGE_LOG"], "LIVECOPY_EDGE_LOG is not set")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return Set(text.split(separator: "\n").map(String.init))
    }

    @Test func everyDiskEdgeIsTakenBySomeTest() throws {
        let recorded = try Self.recordedEdges()
        var missing: [String] = []
        for from in DiskState.allCases {
            for to in from.allowedNext.sorted(by: { $0.rawValue < $1.rawValue }) where !recorded.contains("disk \(from.rawValue)→\(to.rawValue)") {
                missing.append("\(from.rawValue)→\(to.rawValue)")
            }
        }
        #expect(Set(missing) == Set(Self.knownUntested.filter { $0.hasPrefix("disk ") }.map { String($0.dropFirst(5)) }),
                "disk transitions in the table that no test took: \(missing.joined(separator: ", ")); known untested: \(Self.knownUntested.sorted())")
        // And nothing outside the table was ever taken (the ledger refuses it, so this holds unless the log is wrong).
        let outside = recorded.filter { $0.hasPrefix("disk ") }.filter { line in
            let pair = line.dropFirst(5).split(separator: "→").map(String.init)
            guard pair.count == 2, let from = DiskState(rawValue: pair[0]), let to = DiskState(rawValue: pair[1]) else { return true }
            return !from.canMove(to: to)
        }
        #expect(outside.isEmpty, "transitions outside the table: \(outside.sorted())")
    }

    @Test func everyPlanEdgeIsTakenBySomeTest() throws {
        let recorded = try Self.recordedEdges()
        var missing: [String] = []
        for from in PlanState.allCases {
            for to in from.allowedNext.sorted(by: { $0.rawValue < $1.rawValue }) where !recorded.contains("plan \(from.rawValue)→\(to.rawValue)") {
                missing.append("\(from.rawValue)→\(to.rawValue)")
            }
        }
        #expect(missing.isEmpty, "plan transitions in the table that no test took: \(missing.joined(separator: ", "))")
    }
}
