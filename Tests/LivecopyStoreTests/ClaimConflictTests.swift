import Foundation
import LivecopyModel
import LivecopyStore
import Synchronization
import Testing

/// A plan not yet final claims its destinations and VM disks. The store checks the claims
/// in the transaction that records a plan, so two submits at once never both win.
@Suite(.serialized)
struct ClaimConflictTests {
    /// A pending plan of one disk.
    static func plan(vm: String, device: String = "drive0", destination: String, state: PlanState = .pending) throws -> NewPlan {
        NewPlan(name: "claim", policyReference: nil, policy: try Policy.resolve(nil), state: state, disks: [
            NewPlan.Disk(vmName: vm, vmAddress: "/run/\(vm).qmp", device: device, destination: destination),
        ])
    }

    /// Inserts `plans` at the same moment from as many threads, each through its own store
    /// (as separate processes would), and returns what each got.
    static func race(_ stores: [any PlanStore], _ plans: [NewPlan]) -> [Result<Int64, Error>] {
        let results = ResultsBox(count: plans.count)
        let start = DispatchSemaphore(value: 0)
        let group = DispatchGroup()
        for index in plans.indices {
            group.enter()
            Thread.detachNewThread {
                start.wait()
                results.set(index, Result { try stores[index].insertPlan(plans[index], at: Date()).0.id })
                group.leave()
            }
        }
        for _ in plans { start.signal() }
        group.wait()
        return results.values
    }

    /// What the racing threads got, by index.
    final class ResultsBox: Sendable {
        private let storage: Mutex<[Result<Int64, Error>?]>
        init(count: Int) { storage = Mutex(Array(repeating: nil, count: count)) }
        func set(_ index: Int, _ value: Result<Int64, Error>) { storage.withLock { $0[index] = value } }
        var values: [Result<Int64, Error>] { storage.withLock { $0.map { $0! } } }
    }

    @Test(arguments: StoreBackend.allCases, ["destination", "vm disk"])
    func ofTwoConcurrentPlansClaimingTheSameThingExactlyOneIsRecorded(backend: StoreBackend, claim: String) throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let stores = [opened.store, try opened.another()]
        let rounds = 60
        for round in 0..<rounds {
            let plans: [NewPlan]
            if claim == "destination" {
                plans = try ["a", "b"].map { try Self.plan(vm: "\($0)\(round)", destination: "/dst/\(round).qcow2") }
            } else {
                plans = try ["a", "b"].map { try Self.plan(vm: "vm\(round)", destination: "/dst/\(round)-\($0).qcow2") }
            }
            let results = Self.race(stores, plans)
            let winners = results.compactMap { try? $0.get() }
            let conflicts = results.compactMap { result -> ClaimConflict? in
                if case .failure(let error) = result { return (error as? StoreError)?.kind.claim }
                return nil
            }
            #expect(winners.count == 1, "round \(round): \(results)")
            #expect(conflicts.count == 1, "round \(round): \(results)")
            let conflict = try #require(conflicts.first, "round \(round): \(results)")
            #expect(conflict.otherPlanId == winners.first)
            #expect(conflict.otherPlanState == .pending)
        }
        // Every loser left nothing: one plan a round, each with its one disk.
        let recorded = try stores[0].plans(states: nil, vm: nil, limit: nil)
        #expect(recorded.count == rounds)
        #expect(try recorded.allSatisfy { try stores[0].disks(ofPlan: $0.id).count == 1 })
    }

    @Test(arguments: StoreBackend.allCases)
    func theRefusalNamesTheDiskAndTheOtherPlanInOneLine(backend: StoreBackend) throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        let first = try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/web.qcow2"), at: Date()).0
        do {
            _ = try store.insertPlan(try Self.plan(vm: "db", destination: "/dst/web.qcow2"), at: Date())
            Issue.record("a second plan claiming /dst/web.qcow2 was recorded")
        } catch let error as StoreError {
            #expect(error.kind.claim != nil)
            #expect(error.description == "VM 'db' disk 'drive0': destination /dst/web.qcow2 is claimed by plan \(first.id) (pending)")
        }
        do {
            _ = try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/other.qcow2"), at: Date())
            Issue.record("a second plan of VM web's drive0 was recorded")
        } catch let error as StoreError {
            #expect(error.kind.claim != nil)
            #expect(error.description == "VM 'web' disk 'drive0' is already being copied by plan \(first.id) (pending)")
        }
        #expect(try store.plans(states: nil, vm: nil, limit: nil).count == 1)
    }

    @Test(arguments: StoreBackend.allCases)
    func onlyDisksNotFinalOfPlansNotFinalClaim(backend: StoreBackend) async throws {
        guard let opened = try backend.open() else { return }
        defer { opened.close() }
        let store = opened.store
        // A refused plan claims nothing, and recording one is never refused.
        _ = try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/web.qcow2", state: .refused), at: Date())
        _ = try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/web.qcow2", state: .refused), at: Date())
        // A pending plan claims; once its disk is rolled back and the plan final, it no longer does.
        let (plan, disks) = try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/web.qcow2"), at: Date())
        let claimed = #expect(throws: StoreError.self) {
            try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/web.qcow2"), at: Date())
        }
        #expect(claimed?.kind.claim != nil)
        var disk = disks[0]
        disk.state = .rolledBack
        try await store.save(disk: disk, expecting: .pending, event: nil, at: Date())
        // The plan is not final yet, but its only disk is: nothing is claimed.
        _ = try store.insertPlan(try Self.plan(vm: "web", destination: "/dst/web.qcow2"), at: Date())
        var failed = plan
        failed.state = .running
        try await store.save(plan: failed, expecting: .pending, event: nil, at: Date())
        failed.state = .failed
        try await store.save(plan: failed, expecting: .running, event: nil, at: Date())
        // A failed plan's disks that are not final still claim.
        let (_, others) = try store.insertPlan(try Self.plan(vm: "db", destination: "/dst/db.qcow2"), at: Date())
        var stopped = try #require(try store.plans(states: [.pending], vm: "db", limit: 1).first)
        stopped.state = .running
        try await store.save(plan: stopped, expecting: .pending, event: nil, at: Date())
        stopped.state = .failed
        try await store.save(plan: stopped, expecting: .running, event: nil, at: Date())
        var failedDisk = others[0]
        failedDisk.state = .failed
        try await store.save(disk: failedDisk, expecting: .pending, event: nil, at: Date())
        let stillClaimed = #expect(throws: StoreError.self) {
            try store.insertPlan(try Self.plan(vm: "db", device: "drive0", destination: "/dst/db2.qcow2"), at: Date())
        }
        #expect(stillClaimed?.kind.claim != nil)
    }
}
