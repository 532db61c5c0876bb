import Foundation
import InMemoryBackend
@testable import LivecopyEngine
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

/// The quarantine's names and directory checks, and the whole of quarantine, purge and
/// restore on the in-memory backend (the real-QEMU cases: `QuarantineIntegrationTests`).
struct QuarantineTests {
    @Test func aQuarantinedSourceIsNamedByItsPlanAndDiskBesideIt() {
        #expect(Quarantine.directory(for: "/var/lib/images/web.qcow2") == "/var/lib/images/.livecopy-quarantine")
        #expect(Quarantine.path(for: "/var/lib/images/web.qcow2", planId: 12, diskId: 34)
                == "/var/lib/images/.livecopy-quarantine/12-34-web.qcow2")
    }

    @Test func anIntentNamesTheFileItMovesAndAResumedAttemptReadsItBack() {
        let identity = Quarantine.FileIdentity(device: UInt64.max, inode: 1 << 63, allocatedBytes: 0)
        let detail = "quarantine-source: /a (device 1, inode 2).qcow2 → /b/.livecopy-quarantine/1-1-a (device 1, inode 2).qcow2 "
            + Quarantine.identityText(identity)
        let read = Quarantine.identity(in: detail)
        #expect(read?.device == UInt64.max && read?.inode == 1 << 63, "the last one, whatever the paths hold")
        #expect(Quarantine.identity(in: "quarantine-source: /a → /b " + Quarantine.identityText(nil)) == nil)
    }

    @Test func theDirectoryMustBeARealOwnerOnlyDirectoryOfLivecopysUser() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-qdir")
        defer { scratch.remove() }
        let directory = scratch.appending(Quarantine.directoryName)
        #expect(Quarantine.directoryProblem(directory) == nil, "missing is fine: it is made when needed")
        #expect(Quarantine.prepareDirectory(directory) == nil)
        var info = stat()
        #expect(lstat(directory, &info) == 0 && info.st_mode & 0o7777 == 0o700)
        #expect(chmod(directory, 0o770) == 0)
        #expect(Quarantine.directoryProblem(directory)?.contains("writable by others") == true)
        #expect(chmod(directory, 0o700) == 0)
        if geteuid() == 0 {
            #expect(lchown(directory, 4321, 4321) == 0)
            #expect(Quarantine.directoryProblem(directory)?.contains("owned by uid 4321") == true)
            #expect(lchown(directory, 0, 0) == 0)
        }
        try FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createSymbolicLink(atPath: directory, withDestinationPath: scratch.path)
        #expect(Quarantine.prepareDirectory(directory)?.contains("is a symlink") == true)
        #expect(Quarantine.preflightProblem(source: scratch.appending("src.qcow2"))?.contains("is a symlink") == true)
    }

    @Test func aQMPSocketNobodyListensOnMeansTheVMIsOff() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-qmp-off")
        defer { scratch.remove() }
        guard case .off = VMPower.ofQMPSocket(scratch.appending("none.qmp")) else {
            Issue.record("a missing socket is a VM that is off")
            return
        }
        let peer = try await FakeQMPPeer.start { _, _, _ in nil }
        guard case .running = VMPower.ofQMPSocket(peer.socketPath) else {
            Issue.record("a socket that accepts is a VM that runs")
            return
        }
        peer.stop()
        // A socket file nobody listens on (what a killed QEMU leaves behind): refused, so off.
        let stale = scratch.appending("stale.qmp")
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(stale.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        #expect(bound == 0 && FileManager.default.fileExists(atPath: stale))
        guard case .off = VMPower.ofQMPSocket(stale) else {
            Issue.record("a socket that refuses is a VM that is off")
            return
        }
        guard case .unknown = VMPower.ofQMPSocket(scratch.path) else {
            Issue.record("a directory is no socket")
            return
        }
    }

    /// The in-memory VM: a plan with `retire_source: quarantine` completes with the source
    /// in quarantine and one row; purge waits for its time; restore waits for the VM to be
    /// off (what the caller says), then puts it back.
    @Test(.timeLimit(.minutes(1)))
    func quarantinePurgeAndRestoreOnTheInMemoryBackend() async throws {
        let rig = try InMemoryEngineTests.Rig("lc-mem-quarantine")
        defer { rig.scratch.remove() }
        var policy = try rig.policy()
        policy.retireSource = .quarantine
        policy.quarantineFor = 3600
        let planId = try await rig.record(policy)
        #expect(try await rig.run(planId).state == .completed)
        let disk = try rig.disk(planId)
        let quarantined = Quarantine.path(for: rig.source, planId: planId, diskId: disk.id)
        #expect(!FileManager.default.fileExists(atPath: rig.source) && FileManager.default.fileExists(atPath: quarantined))
        #expect(try rig.transitions(planId) == ["pending→snapshotting", "snapshotting→streaming", "streaming→retiring", "retiring→completed"])
        let image = try #require(try rig.store.quarantinedImage(ofDisk: disk.id))
        #expect(image.state == .held && image.quarantinePath == quarantined)

        let purge = QuarantinePurge(store: rig.store)
        #expect(try await purge.run(all: false, dryRun: false).isEmpty, "not expired")
        #expect(try await purge.run(all: false, dryRun: false, now: image.expiresAt.addingTimeInterval(-1)).isEmpty)

        let running = QuarantineRestore(store: rig.store) { _ in .running("it answers") }
        #expect(try await running.restore(diskId: disk.id).kind == .refused)
        let unknown = QuarantineRestore(store: rig.store) { _ in .unknown("no way to ask") }
        let refused = try await unknown.restore(diskId: disk.id)
        #expect(refused.kind == .refused && refused.message.contains("cannot tell whether VM 'vm' is off"), "\(refused.message)")
        let off = QuarantineRestore(store: rig.store) { _ in .off("its socket is gone") }
        let restored = try await off.restore(diskId: disk.id)
        #expect(restored.kind == .restored, "\(restored.message)")
        #expect(FileManager.default.fileExists(atPath: rig.source) && !FileManager.default.fileExists(atPath: quarantined))
        #expect(try rig.store.quarantinedImage(ofDisk: disk.id)?.state == .restored)
        #expect(try rig.disk(planId).state == .completed)
        await #expect(throws: InputError.self) { try await off.restore(diskId: 999) }
    }
}
