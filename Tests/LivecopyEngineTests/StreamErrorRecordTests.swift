import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import Synchronization
import TestSupport
import Testing

/// A concluded stream job's `error` exists only until `job-dismiss`: livecopy writes it
/// into the disk's record and the timeline before it sends the dismiss.
struct StreamErrorRecordTests {
    /// What the store held when the fake VM received `job-dismiss`.
    final class AtDismiss: Sendable {
        private let seen = Mutex<[(error: String?, details: [String])]>([])
        func record(_ store: SQLiteStore) {
            var error: String?
            var details: [String] = []
            if let plan = try? store.plans(states: nil, vm: nil, limit: 1).first {
                error = (try? store.disks(ofPlan: plan.id))?.first?.error
                details = (try? store.events(ofPlan: plan.id))?.map(\.detail) ?? []
            }
            seen.withLock { $0.append((error, details)) }
        }
        var snapshots: [(error: String?, details: [String])] { seen.withLock { $0 } }
    }

    @Test(.timeLimit(.minutes(1)))
    func theStreamJobsErrorIsRecordedBeforeJobDismiss() async throws {
        let atDismiss = AtDismiss()
        let setup = try await FakeSetup.start("lc-error-first") { name, store in
            if name == "job-dismiss" { atDismiss.record(store) }
        }
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.onError = .report; $0.onFailure = .stop }
        let (planId, plan) = try await setup.runOnce(policy) { vm in
            vm.setStreamBehaviour(.failAtOnce(error: "Input/output error", operation: "read"))
        }
        #expect(plan.state == .failed)
        let snapshot = try #require(atDismiss.snapshots.first, "job-dismiss was never sent")
        #expect(atDismiss.snapshots.count == 1)
        #expect(snapshot.error?.contains("Input/output error") == true, "disk error at job-dismiss: \(snapshot.error ?? "none")")
        #expect(snapshot.details.contains { $0.contains("Input/output error") }, "timeline at job-dismiss: \(snapshot.details)")
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.error == "stream job \(disk.streamJobId) failed: Input/output error")
    }
}
