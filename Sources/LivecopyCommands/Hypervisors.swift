import LivecopyBackend
import QMPBackend

/// The hypervisor every command reaches VMs through: a QMP socket goes to QEMU's monitor,
/// a libvirt domain to libvirt (`RoutingHypervisor`, which says so when this build has no
/// libvirt backend).
func makeHypervisor() -> any Hypervisor {
    RoutingHypervisor(
        qmp: QMPHypervisor(),
        // LibvirtHypervisor plugs in here
        libvirt: nil)
}
