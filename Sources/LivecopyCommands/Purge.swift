import ArgumentParser
import Foundation
import LivecopyEngine
import LivecopyModel

/// `livecopy purge [--dry-run] [--all]`: delete quarantined sources whose time is up.
struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete the quarantined sources (retire_source: quarantine) whose quarantine_for has passed.",
        discussion: """
            Each deletion is recorded first (an intent in the disk's timeline), and made only after livecopy \
            checks again that the file in quarantine is the one it moved there (device and inode), that no \
            process holds it open, and that no disk it knows still uses it. A refused image is one line on \
            stderr and stays held; the others go on. A purge a crash interrupted is finished by the next one. \
            Exit status: 0 when every image due was purged (or none was due), 1 when one or more was refused.
            """)

    @OptionGroup var common: CommonOptions

    @Flag(help: "Say what would be deleted, and what would be refused; change nothing.")
    var dryRun = false

    @Flag(help: "Every quarantined source still held, whatever its expiry (with every check still made).")
    var all = false

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            try refuseFleetStore(store, command: "purge")
            let outcomes = try await QuarantinePurge(store: store).run(all: all, dryRun: dryRun)
            if outcomes.isEmpty {
                let summary = try store.quarantineSummary()
                let next = summary.nextExpiry.map { "; the next expires \(ISO8601.string($0))" } ?? ""
                print("nothing to purge (\(summary.count) held in quarantine\(next))")
                return ExitStatus.success
            }
            var refused = 0
            for outcome in outcomes {
                switch outcome.kind {
                case .refused:
                    refused += 1
                    printStderr("livecopy: \(outcome.message)")
                case .purged, .alreadyPurged, .goneBefore, .wouldPurge:
                    print(outcome.message)
                }
            }
            return refused > 0 ? ExitStatus.planNotCompleted : ExitStatus.success
        }
    }
}
