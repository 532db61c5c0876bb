import Foundation
import InMemoryBackend
import LibvirtBackend
import LivecopyBackend
import TestSupport
import Testing

/// The conformance suite, run against every backend: each check of
/// `ConformanceCheck.all` on a fresh VM with one disk. A new backend (libvirt) adds a
/// suite here with its own rig; the checks stay the same.
enum BackendConformance {
    static func run(_ check: ConformanceCheck, on rig: ConformanceRig) async throws {
        let vm: any VMSession
        do {
            vm = try await rig.hypervisor.connect(to: rig.address, commandTimeout: 30)
        } catch {
            await rig.tearDown()
            throw error
        }
        do {
            try await check.run(rig, vm)
        } catch {
            await vm.close()
            await rig.tearDown()
            throw error
        }
        await vm.close()
        await rig.tearDown()
    }
}

/// The in-memory backend the engine's fast tests use behaves as the real one does.
@Suite struct InMemoryConformanceTests {
    @Test(.timeLimit(.minutes(2)), arguments: ConformanceCheck.all)
    func inMemoryBackend(_ check: ConformanceCheck) async throws {
        try await BackendConformance.run(check, on: try ConformanceRig.inMemory("lc-conf-mem"))
    }

    @Test func anAddressWithNoVMIsUnreachable() async throws {
        let error = try await #require(throws: BackendError.self) {
            _ = try await InMemoryHypervisor().connect(to: "mem:nobody", commandTimeout: 1)
        }
        #expect(error.kind == .unreachable)
    }
}

/// The QMP backend against a real QEMU.
@Suite(.serialized, .requires(.qemu))
struct QMPConformanceTests {
    @Test(.timeLimit(.minutes(2)), arguments: ConformanceCheck.all)
    func qmpBackend(_ check: ConformanceCheck) async throws {
        try await BackendConformance.run(check, on: try ConformanceRig.qemu("lc-conf-qmp"))
    }
}

/// The libvirt backend against a real libvirtd and QEMU: the same checks, through
/// libvirt's API (virDomainSnapshotCreateXML, virDomainBlockPull, virDomainBlockCommit,
/// virDomainBlockCopy, virDomainBlockJobAbort, BLOCK_JOB_2 events) and its monitor
/// pass-through (the held copy, the confirmed flush).
@Suite(.serialized, .requires(.libvirt, .qemu))
struct LibvirtConformanceTests {
    @Test(.timeLimit(.minutes(3)), arguments: ConformanceCheck.all)
    func libvirtBackend(_ check: ConformanceCheck) async throws {
        try await BackendConformance.run(check, on: try ConformanceRig.libvirt("lc-conf-lv"))
    }

    @Test func aDomainLibvirtDoesNotHaveIsUnreachable() async throws {
        let error = try await #require(throws: BackendError.self) {
            _ = try await LibvirtHypervisor().connect(to: "libvirt:qemu:///system#lctest-no-such-domain", commandTimeout: 5)
        }
        #expect(error.kind == .unreachable)
        #expect(error.description.contains("no domain 'lctest-no-such-domain'"), "\(error)")
    }
}
