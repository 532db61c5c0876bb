import LibvirtBackend
import LivecopyBackend
import QMPBackend

/// The hypervisor every command reaches VMs through: a QMP socket goes to QEMU's monitor,
/// a libvirt domain to libvirt (`RoutingHypervisor`).
func makeHypervisor() -> any Hypervisor {
    RoutingHypervisor(qmp: QMPHypervisor(), libvirt: LibvirtHypervisor())
}
