import Foundation
import LivecopyModel
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `livecopy serve` driving a libvirt domain: a detached plan of two disks copying at
/// once share the host's budget through libvirt's own calls (virDomainBlockPull's
/// bandwidth, virDomainBlockJobSetSpeed), and the data is whole.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct ServeLibvirtTests {
    typealias Rig = LibvirtIntegrationTests.Rig

    @Test(.timeLimit(.minutes(4)))
    func aDetachedPlanOfALibvirtDomainSharesTheBudget() async throws {
        let budget: Int64 = 4 << 20
        let rig = try Rig("lv-serve", targets: ["vda", "vdb"], policy: "retire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.remove() }
        try await rig.write(slot: 0)
        let planId = try await ServeIntegrationTests.submitDetached(rig.livecopy, rig.planPath)
        let serve = try rig.livecopy.start(["serve", "--bandwidth", "4M"])
        defer { RecoveryIntegrationTests.killIfRunning(serve) }

        // Both disks copy at once; QEMU runs their jobs within the budget.
        var both: [Int64] = []
        for _ in 0..<2000 where both.count < 2 {
            let jobs = try await rig.domain.withTestMonitor { try await $0.queryBlockJobs() }
            both = jobs.filter { $0.device.hasPrefix("livecopy-stream-") }.map(\.speed)
            if both.count < 2 { try await Task.sleep(for: .milliseconds(30)) }
        }
        #expect(both.count == 2, "two copy jobs ran at once")
        #expect(both.allSatisfy { $0 > 0 } && both.reduce(0, +) <= budget, "QEMU's speeds \(both) within \(budget)")
        try await rig.write(slot: 1)

        try await ServeIntegrationTests.waitForPlan(try rig.store(), planId, .completed)
        kill(serve.process.processIdentifier, SIGTERM)
        let ended = try await serve.wait(timeout: 120)
        #expect(ended.status == 0, "serve: \(ended.status)\n\(ended.stderr)")
        try ServeIntegrationTests.expectSpeedsWithinBudget(try rig.store(), plans: [planId], budget: budget, changes: 1)
        try await rig.write(slot: 2)
        try rig.domain.destroy()
        try rig.expectDestinationsHold(slots: 0...2)
    }
}
