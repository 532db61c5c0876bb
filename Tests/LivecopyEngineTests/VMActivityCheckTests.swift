import Foundation
@testable import LivecopyEngine
import QMP
import QMPBackend
import TestSupport
import Testing

/// Preflight refuses a VM that migrates, or that runs a job livecopy did not make on a
/// disk of the plan (or VM-wide); it lets through jobs on other devices and jobs over.
struct VMActivityCheckTests {
    /// Runs the check against a fake VM answering `query-migrate` and `query-jobs` so.
    static func check(migration: JSONValue = [:], jobs: [JSONValue] = [], ownOfAnotherDisk: Set<String> = []) async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            switch name {
            case "query-migrate": return .return(migration)
            case "query-jobs": return .return(.array(jobs))
            default: return nil
            }
        }
        defer { peer.stop() }
        let session = QMPVMSession(try await QMPConnection.connect(socketPath: peer.socketPath))
        defer { Task { await session.close() } }
        try await VMActivityCheck.check(vmName: "vm", session: session, planDevices: ["drive0"],
                                        deviceNames: ["drive0", "drive1"]) { ownOfAnotherDisk.contains($0) }
    }

    static func job(_ id: String, _ type: String, _ status: String) -> JSONValue {
        ["id": .string(id), "type": .string(type), "status": .string(status), "current-progress": 0, "total-progress": 1]
    }

    @Test(arguments: ["setup", "active", "pre-switchover", "device", "postcopy-active", "postcopy-paused",
                      "postcopy-recover", "wait-unplug", "cancelling", "colo"])
    func aVMMigratingIsRefused(status: String) async throws {
        let error = try await #require(throws: PreflightError.self) {
            try await Self.check(migration: ["status": .string(status)])
        }
        #expect(error.description == "VM 'vm' is migrating (query-migrate status \(status)); livecopy touches nothing until the migration ends")
    }

    @Test(arguments: ["none", "completed", "failed", "cancelled", nil])
    func aVMNotMigratingPasses(status: String?) async throws {
        try await Self.check(migration: status.map { ["status": .string($0)] } ?? [:])
    }

    @Test(arguments: [
        ("drive0", "stream"), ("other-tool", "mirror"), ("nightly", "backup"), ("c1", "commit"), ("save", "snapshot-save"),
    ])
    func aForeignJobThatMayHoldThePlansDiskIsRefused(id: String, type: String) async throws {
        let error = try await #require(throws: PreflightError.self) {
            try await Self.check(jobs: [Self.job(id, type, "running")])
        }
        #expect(error.description.contains("job '\(id)' (\(type), running) of another tool"), "\(error)")
        #expect(!error.description.contains("\n"))
    }

    @Test func jobsOnOtherDevicesOrOverOrLivecopysOwnPass() async throws {
        try await Self.check(jobs: [
            Self.job("drive1", "stream", "running"),  // QEMU's default id: the other device's job
            Self.job("old", "mirror", "concluded"),
            Self.job("livecopy-stream-7", "stream", "running"),
        ], ownOfAnotherDisk: ["livecopy-stream-7"])
        // A livecopy-looking id that is not of another recorded disk is refused like any other.
        await #expect(throws: PreflightError.self) {
            try await Self.check(jobs: [Self.job("livecopy-stream-7", "stream", "running")])
        }
    }

    @Test func everyProblemIsListedForValidate() async throws {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            switch name {
            case "query-migrate": return .return(["status": "active"])
            case "query-jobs": return .return([Self.job("nightly", "backup", "running"), Self.job("save", "snapshot-save", "running")])
            default: return nil
            }
        }
        defer { peer.stop() }
        let session = QMPVMSession(try await QMPConnection.connect(socketPath: peer.socketPath))
        defer { Task { await session.close() } }
        let problems = await VMActivityCheck.problems(vmName: "vm", session: session, planDevices: ["drive0"],
                                                      deviceNames: ["drive0"]) { _ in false }
        #expect(problems.count == 3, "\(problems)")
        #expect(problems.first?.contains("is migrating") == true && problems.dropFirst().allSatisfy { $0.contains("of another tool") })
    }
}
