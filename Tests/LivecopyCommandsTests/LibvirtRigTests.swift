import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The libvirt test rig (`LibvirtDomain`) against the real libvirtd: a domain starts,
/// guest writes land in the disk's current top image (also after a disk-only snapshot),
/// persistent and transient domains stop as libvirt says they do, and a libvirtd restart
/// leaves the domain running. Each write is checked offline with `qemu-io` after QEMU stopped.
@Suite(.serialized, .requires(.libvirt, .qemu))
struct LibvirtRigTests {
    @Test(.timeLimit(.minutes(2)))
    func aDomainWithOneDiskStarts() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-start")
        defer { scratch.remove() }
        let image = scratch.appending("src.qcow2")
        try QEMUImage.create(image, size: "64M")
        let domain = try LibvirtDomain(name: "start", directory: scratch.url, disks: [("vda", image)], persistent: false)
        defer { domain.undefineAndDestroy() }

        #expect(domain.name.hasPrefix("lctest-start-"))
        #expect(try domain.state() == "running")
        let pid = try domain.qemuPID()
        #expect(kill(pid, 0) == 0)
        #expect(try domain.diskSource(target: "vda") == LibvirtDiskSource(file: image, backingFile: nil))
        #expect(try domain.liveXML().contains("<alias name='ua-vda'/>"))
    }

    @Test(.timeLimit(.minutes(2)))
    func aDomainThatCannotStartLeavesNothingDefined() throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-fail")
        defer { scratch.remove() }
        let missing = scratch.appending("missing.qcow2")
        let error = #expect(throws: LibvirtRigError.self) {
            _ = try LibvirtDomain(name: "fail", directory: scratch.url, disks: [("vda", missing)], persistent: true)
        }
        #expect(error?.description.contains(missing) == true)
        let names = try Virsh.checked(["list", "--all", "--name"]).split(whereSeparator: \.isNewline)
        #expect(!names.contains { $0.hasPrefix("lctest-fail-") })
    }

    @Test(.timeLimit(.minutes(2)))
    func guestWritesLandInEveryDisk() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-write")
        defer { scratch.remove() }
        let vda = scratch.appending("a.qcow2")
        let vdb = scratch.appending("b.qcow2")
        try QEMUImage.create(vda, size: "64M")
        try QEMUImage.create(vdb, size: "64M")
        let domain = try LibvirtDomain(
            name: "write", directory: scratch.url, disks: [("vda", vda), ("vdb", vdb)], persistent: false)
        defer { domain.undefineAndDestroy() }

        try await domain.write(pattern: 0x22, offset: "1M", length: "64k", target: "vda")
        try await domain.write(pattern: 0x44, offset: "2M", length: "64k", target: "vdb")
        try domain.destroy()

        #expect(try QEMUImage.verify(vda, pattern: 0x22, offset: "1M", length: "64k"))
        #expect(try QEMUImage.verify(vdb, pattern: 0x44, offset: "2M", length: "64k"))
        #expect(try QEMUImage.verify(vdb, pattern: 0x00, offset: "1M", length: "64k"))
    }

    @Test(.timeLimit(.minutes(2)))
    func aWriteAfterASnapshotLandsInTheDestination() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-snap")
        defer { scratch.remove() }
        let source = scratch.appending("src.qcow2")
        let destination = scratch.appending("dst.qcow2")
        try QEMUImage.create(source, size: "64M")
        let domain = try LibvirtDomain(name: "snap", directory: scratch.url, disks: [("vda", source)], persistent: true)
        defer { domain.undefineAndDestroy() }

        try await domain.write(pattern: 0x22, offset: "1M", length: "64k", target: "vda")
        let before = try await domain.withTestMonitor { try await domain.topNode(target: "vda", on: $0) }
        try QEMUImage.create(destination, size: "64M", backing: source, backingFormat: "qcow2")
        try Virsh.checked([
            "snapshot-create-as", domain.name, "s", "--disk-only", "--no-metadata", "--reuse-external", "--atomic",
            "--diskspec", "vda,file=\(destination)",
        ])
        let after = try await domain.withTestMonitor { try await domain.topNode(target: "vda", on: $0) }
        #expect(after != before)
        #expect(try domain.diskSource(target: "vda") == LibvirtDiskSource(file: destination, backingFile: source))
        #expect(try domain.diskSource(target: "vda", inactive: true) == LibvirtDiskSource(file: destination, backingFile: source))

        try await domain.write(pattern: 0x33, offset: "2M", length: "64k", target: "vda")
        try domain.destroy()

        #expect(try QEMUImage.verify(destination, pattern: 0x33, offset: "2M", length: "64k"))
        #expect(try QEMUImage.verify(destination, pattern: 0x22, offset: "1M", length: "64k"))  // through the backing file
        #expect(try QEMUImage.verify(source, pattern: 0x22, offset: "1M", length: "64k"))
        #expect(try !QEMUImage.verify(source, pattern: 0x33, offset: "2M", length: "64k"))
    }

    @Test(.timeLimit(.minutes(2)))
    func aPersistentDomainSurvivesDestroyAndAKilledQEMU() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-persist")
        defer { scratch.remove() }
        let image = scratch.appending("src.qcow2")
        try QEMUImage.create(image, size: "64M")
        let domain = try LibvirtDomain(name: "persist", directory: scratch.url, disks: [("vda", image)], persistent: true)
        defer { domain.undefineAndDestroy() }

        try domain.destroy()
        #expect(try domain.state() == "shut off")
        #expect(try domain.diskSource(target: "vda", inactive: true) == LibvirtDiskSource(file: image, backingFile: nil))

        try domain.start()
        let first = try domain.qemuPID()
        try await domain.write(pattern: 0x22, offset: "1M", length: "64k", target: "vda")
        try await domain.killQEMU()
        #expect(try domain.state() == "shut off")
        #expect(kill(first, 0) != 0)

        try domain.start()
        #expect(try domain.qemuPID() != first)
        try await domain.write(pattern: 0x33, offset: "2M", length: "64k", target: "vda")
        try domain.destroy()
        #expect(try QEMUImage.verify(image, pattern: 0x22, offset: "1M", length: "64k"))
        #expect(try QEMUImage.verify(image, pattern: 0x33, offset: "2M", length: "64k"))

        domain.undefineAndDestroy()
        #expect(try domain.state() == nil)
    }

    @Test(.timeLimit(.minutes(2)))
    func aTransientDomainIsGoneOnceItStops() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-transient")
        defer { scratch.remove() }
        let image = scratch.appending("src.qcow2")
        try QEMUImage.create(image, size: "64M")

        let destroyed = try LibvirtDomain(name: "transient", directory: scratch.url, disks: [("vda", image)], persistent: false)
        defer { destroyed.undefineAndDestroy() }
        #expect(try destroyed.state() == "running")
        #expect(try Virsh.checked(["dominfo", destroyed.name]).contains(#/Persistent:\s+no/#))
        try destroyed.destroy()
        #expect(try destroyed.state() == nil)

        let killed = try LibvirtDomain(name: "transient", directory: scratch.url, disks: [("vda", image)], persistent: false)
        defer { killed.undefineAndDestroy() }
        #expect(killed.name != destroyed.name)
        try await killed.write(pattern: 0x22, offset: "1M", length: "64k", target: "vda")
        try await killed.killQEMU()
        #expect(try killed.state() == nil)
        #expect(try QEMUImage.verify(image, pattern: 0x22, offset: "1M", length: "64k"))
    }

    @Test(.timeLimit(.minutes(3)))
    func restartingLibvirtdKeepsTheDomainRunning() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-lv-restart")
        defer { scratch.remove() }
        let image = scratch.appending("src.qcow2")
        try QEMUImage.create(image, size: "64M")
        let domain = try LibvirtDomain(name: "restart", directory: scratch.url, disks: [("vda", image)], persistent: true)
        defer { domain.undefineAndDestroy() }
        let pid = try domain.qemuPID()
        let libvirtd = try #require(Virsh.libvirtdPID())

        try await LibvirtDomain.restartLibvirtd()
        let restarted = try #require(Virsh.libvirtdPID())
        #expect(restarted != libvirtd)
        // Again: the libvirtd the rig started stops on SIGTERM too (it must not inherit
        // the test thread's blocked signals).
        try await LibvirtDomain.restartLibvirtd()
        #expect(Virsh.libvirtdPID() != restarted)

        #expect(try domain.state() == "running")
        #expect(try domain.qemuPID() == pid)
        try await domain.write(pattern: 0x22, offset: "1M", length: "64k", target: "vda")
        try domain.destroy()  // the new libvirtd controls the domain
        #expect(kill(pid, 0) != 0)
        #expect(try QEMUImage.verify(image, pattern: 0x22, offset: "1M", length: "64k"))
    }
}
