import Foundation
import LivecopyBackend
@testable import LivecopyEngine
import LivecopyModel
import TestSupport
import Testing

/// `docs/recovery.md` shows how a stopped disk is picked up as the code decides it: its
/// table (between `<!-- resumption -->` markers) is `Resumption.allCases`' rules, in order.
struct ResumptionDocTests {
    @Test func theResumptionTableIsTheCodes() throws {
        let rows = try #require(DocumentTable.rows("resumption", of: DocumentTable.page("recovery.md"), stripBackquotes: false),
                                "docs/recovery.md has no resumption table")
        #expect(rows.map { $0[0] } == Resumption.allCases.map { "`\($0)`" }, "one row per case, in order")
        for (row, resumption) in zip(rows, Resumption.allCases) {
            #expect("\(row[1]) | \(row[2])" == resumption.rule, "\(resumption)")
            #expect(row[2].hasPrefix("`\(resumption.nextState.rawValue)`"), "\(resumption): the state it names")
        }
    }
}

/// `Resumption.decide` over every combination of what a stopped disk's record and its VM
/// can show: it always answers, only with a move the transition table allows, and never
/// away from a rollback under way.
struct ResumptionDecisionTests {
    static let source = "/images/source.qcow2"
    static let destination = "/images/destination.qcow2"

    static func job(_ id: String) -> CopyJob {
        CopyJob(id: id, type: "stream", status: .running, currentProgress: 0, totalProgress: 1, error: nil)
    }

    @Test func everyCombinationGetsALegalAnswer() {
        var combinations = 0
        for strategy in CopyStrategy.allCases {
        for state in [DiskState.failed, .needsAttention] {
            for intent in [nil] + DiskIntent.allCases.map(Optional.some) {
                for active in [Self.source, Self.destination, "/images/other.qcow2", nil] {
                    for backing in [nil, Self.source] {
                        for streamJob in [false, true] {
                            for rollbackJob in [false, true] {
                                let disk = DiskRecord(
                                    id: 1, planId: 1, vmName: "vm", vmAddress: "/mem/vm", device: "drive0",
                                    destination: Self.destination, source: Self.source, sourceFormat: "qcow2",
                                    qmpDevice: "drive0", state: state, bytesDone: 0, bytesTotal: 0, error: nil,
                                    intent: intent, destinationCreated: true, updatedAt: Date(), strategy: strategy)
                                let device = active.map { file in
                                    VMDisk(device: "drive0", guestDevice: nil, medium: .init(
                                        file: file, nodeName: "n", backingFile: backing,
                                        image: DiskImage(filename: file, format: "qcow2", virtualSize: 1 << 20)))
                                }
                                let seen = DiskSighting(device: device, copyJob: streamJob ? Self.job(disk.copyJobId) : nil,
                                                        rollbackJob: rollbackJob ? Self.job(disk.commitJobId) : nil)
                                let answer = Resumption.decide(disk, seen)
                                combinations += 1
                                let context = "\(strategy) \(state) \(intent.map(\.rawValue) ?? "-") \(active ?? "-") \(backing ?? "-") \(streamJob) \(rollbackJob) → \(answer)"
                                if answer.nextState != state {
                                    #expect(state.canMove(to: answer.nextState), "\(context)")
                                }
                                if rollbackJob || intent?.belongsToRollback == true {
                                    #expect(answer == .rollBack, "\(context)")
                                } else if active != Self.source && active != Self.destination {
                                    #expect(answer == .attention, "\(context)")
                                } else if strategy == .mirror {
                                    // The mirror step looks again; only a retirement resumes past it.
                                    #expect(answer == .mirrorAgain || answer == .retireAgain, "\(context)")
                                    if active == Self.source { #expect(answer == .mirrorAgain, "\(context)") }
                                } else if active == Self.source {
                                    #expect(answer == .snapshotAgain, "\(context)")
                                } else {
                                    #expect(answer != .mirrorAgain, "\(context)")
                                }
                            }
                        }
                    }
                }
            }
        }
        }
        #expect(combinations == 2 * 2 * (DiskIntent.allCases.count + 1) * 4 * 2 * 2 * 2)
    }
}
