// A libvirt call with no answer is a lost session, not a hang.

import Foundation
import LibvirtBackend
import LivecopyBackend
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// libvirt waits for QEMU's monitor without a limit. A QEMU that stops answering
/// (SIGSTOP here; a QEMU stuck on dead storage in life) must cost a session no more
/// than the policy's `command_timeout`: the call fails as `sessionLost` and the session
/// closes, as a QMP session's does.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct LibvirtTimeoutTests {
    @Test(.timeLimit(.minutes(2)))
    func aCallQEMUNeverAnswersLosesTheSession() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-timeout")
        defer { scratch.remove() }
        let source = scratch.appending("source.qcow2")
        try QEMUImage.create(source, size: "16M")
        let domain = try LibvirtDomain(name: "timeout", directory: scratch.url, disks: [(target: "vda", image: source)], persistent: false)
        defer { domain.undefineAndDestroy() }
        let vm = try await LibvirtHypervisor().connect(to: "libvirt:qemu:///system#\(domain.name)", commandTimeout: 2)
        #expect(try await vm.jobs().isEmpty)

        let qemu = try domain.qemuPID()
        kill(qemu, SIGSTOP)
        defer { kill(qemu, SIGCONT) }
        let started = Date()
        let error = try await #require(throws: BackendError.self) { _ = try await vm.jobs() }
        #expect(error.kind == .sessionLost, "\(error)")
        #expect(error.description.contains("no answer from libvirt within 2 s"), "\(error)")
        #expect(Date().timeIntervalSince(started) >= 2, "it waited for the timeout")
        #expect(vm.isClosed)
        await #expect(throws: BackendError.self) { _ = try await vm.disks() }
        kill(qemu, SIGCONT)
        await vm.close()
    }
}
