import ArgumentParser
import Foundation
import LibvirtBackend
import LivecopyBackend
import LivecopyEngine
import LivecopyModel

/// `livecopy restore DISK`: put a quarantined source back at its original path, while the VM is off.
struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Put a disk's quarantined source back at its original path, while its VM is off.",
        discussion: """
            DISK is the disk's id (livecopy show PLAN lists it with the quarantined sources). livecopy \
            restores only while the VM is off: for a QMP address, its socket must be gone or refuse \
            connections; for a libvirt domain, libvirt must say it is not running; and no process may \
            hold the disk's destination or the quarantined file open. It never overwrites a file at the \
            original path. The disk stays completed; the timeline and the output say which image the VM's \
            manager must now boot from. Exit status: 0 restored, 1 refused (nothing touched), 2 bad input.
            """)

    @OptionGroup var common: CommonOptions

    @Argument(help: ArgumentHelp("The disk's id.", valueName: "disk"))
    var disk: Int64

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            try refuseFleetStore(store, command: "restore")
            let outcome = try await QuarantineRestore(store: store, power: Self.power).restore(diskId: disk)
            switch outcome.kind {
            case .refused:
                printStderr("livecopy: \(outcome.message)")
                return ExitStatus.planNotCompleted
            case .restored, .alreadyRestored, .wasRestored:
                print(outcome.message)
                return ExitStatus.success
            }
        }
    }

    /// Whether the disk's VM runs: its QMP socket answers, or libvirt says its domain is active.
    @Sendable static func power(of disk: DiskRecord) async -> VMPower {
        switch try? VMAddress(stored: disk.vmAddress) {
        case .qmp(let socket)?:
            return VMPower.ofQMPSocket(socket)
        case .libvirt(let uri, let domain)?:
            do {
                let active = try await LibvirtHypervisor.domainIsActive(disk.vmAddress)
                return active ? .running("libvirt at \(uri) says domain '\(domain)' is active")
                    : .off("libvirt at \(uri) says domain '\(domain)' is not running")
            } catch {
                return .unknown(describe(error))
            }
        case nil:
            return .unknown("its recorded address '\(disk.vmAddress)' is not one livecopy can ask")
        }
    }
}
