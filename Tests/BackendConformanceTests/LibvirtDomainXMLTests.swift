// How the libvirt backend reads and writes libvirt's domain XML (no libvirtd needed).

import Foundation
import FoundationXML
@testable import LibvirtBackend
import Testing

@Suite struct LibvirtDomainXMLTests {
    static let domain = """
        <domain type='qemu'>
          <name>web01</name>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/srv/new/root.qcow2' index='2'/>
              <backingStore type='file' index='1'>
                <format type='qcow2'/>
                <source file='/srv/old/root.qcow2'/>
                <backingStore/>
              </backingStore>
              <target dev='vda' bus='virtio'/>
              <alias name='ua-vda'/>
            </disk>
            <disk type='block' device='disk'>
              <driver name='qemu' type='raw'/>
              <source dev='/dev/sdb'/>
              <target dev='vdb' bus='virtio'/>
              <alias name='virtio-disk1'/>
            </disk>
            <disk type='network' device='disk'>
              <driver name='qemu' type='raw'/>
              <source protocol='rbd' name='pool/image'/>
              <target dev='vdc' bus='virtio'/>
            </disk>
            <disk type='file' device='cdrom'>
              <target dev='sda' bus='sata'/>
            </disk>
          </devices>
        </domain>
        """

    @Test func readsEachDiskWithItsChainAndWhetherItCanBeCopied() throws {
        let disks = try LibvirtDomainXML.disks(Self.domain)
        #expect(disks.map(\.target) == ["vda", "vdb", "vdc", "sda"])
        let root = disks[0]
        #expect(root.source == "/srv/new/root.qcow2")
        #expect(root.backing == ["/srv/old/root.qcow2"])
        #expect(root.alias == "ua-vda" && root.format == "qcow2")
        #expect(root.notCopyable == nil)
        #expect(disks[1].notCopyable?.contains("libvirt disk vdb is a block device (/dev/sdb)") == true)
        #expect(disks[2].notCopyable == "libvirt disk vdc is a 'network' disk; livecopy copies file-backed disks only")
        #expect(disks[3].notCopyable?.contains("no source file") == true)
    }

    @Test func theSnapshotNamesEveryDiskAndSnapshotsOnlyThePlansDisks() throws {
        let disks = try LibvirtDomainXML.disks(Self.domain)
        let xml = LibvirtDomainXML.snapshot(overlays: ["vda": "/srv/new/a&b.qcow2"], disks: disks)
        let document = try XMLDocument(xmlString: xml)
        let entries = try document.nodes(forXPath: "/domainsnapshot/disks/disk").compactMap { $0 as? XMLElement }
        #expect(entries.map { $0.attribute(forName: "name")?.stringValue } == ["vda", "vdb", "vdc", "sda"])
        #expect(entries.map { $0.attribute(forName: "snapshot")?.stringValue } == ["external", "no", "no", "no"])
        #expect(try document.nodes(forXPath: "/domainsnapshot/disks/disk/source/@file").map { $0.stringValue } == ["/srv/new/a&b.qcow2"])
    }

    @Test func redefiningChangesOnlyThatDisksSourceAndDropsItsChain() throws {
        let updated = try #require(try LibvirtDomainXML.redefining(Self.domain, target: "vda", file: "/srv/new/root.qcow2", format: "qcow2"))
        let disks = try LibvirtDomainXML.disks(updated)
        #expect(disks[0].source == "/srv/new/root.qcow2" && disks[0].backing.isEmpty)
        #expect(disks[1] == (try LibvirtDomainXML.disks(Self.domain))[1], "the other disks are untouched")
        #expect(try LibvirtDomainXML.redefining(Self.domain, target: "vdz", file: "/x", format: "qcow2") == nil)
    }

    @Test func libvirtsJobsAreFoundByTheirDisk() {
        #expect(LibvirtVMSession.isLibvirtJob("pull-vda-libvirt-2-format", onDisk: "vda"))
        #expect(LibvirtVMSession.isLibvirtJob("commit-vda-libvirt-2-format", onDisk: "vda"))
        #expect(!LibvirtVMSession.isLibvirtJob("pull-vdab-libvirt-2-format", onDisk: "vda"))
        #expect(!LibvirtVMSession.isLibvirtJob("livecopy-stream-1", onDisk: "vda"))
    }
}
