// Finding a disk's device among the VM's.

import LivecopyModel
import LivecopyBackend

extension Array where Element == VMDisk {
    /// The device of `disk`: by the name the backend's operations use, else by the plan's
    /// name (`device(named:)`, as preflight found it).
    func entry(for disk: DiskRecord) -> VMDisk? {
        [disk.qmpDevice, disk.device].compactMap { $0 }.lazy.compactMap { device(named: $0) }.first
    }
}
