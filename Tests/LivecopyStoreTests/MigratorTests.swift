import Foundation
import LivecopyStore
import Testing

/// The migration runner against concurrent openers of one new database.
struct MigratorTests {
    @Test(.timeLimit(.minutes(1)))
    func processesOpeningANewDatabaseAtOnceApplyEachMigrationOnce() async throws {
        // Several rounds: the race needs the openers to read "nothing applied" together.
        for round in 0..<5 {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lc-migrate-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("livecopy.db").path
            let failures = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        do {
                            _ = try SQLiteStore(path: path)
                            return nil
                        } catch {
                            return String(describing: error)
                        }
                    }
                }
                var failures: [String] = []
                for try await failure in group { if let failure { failures.append(failure) } }
                return failures
            }
            #expect(failures.isEmpty, "round \(round): \(failures)")
            let store = try SQLiteStore(path: path)
            #expect(try store.plans(states: nil, vm: nil, limit: nil).isEmpty)
        }
    }
}
