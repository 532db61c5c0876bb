// Finding a disk's device among the VM's.

import LivecopyModel
import LivecopyBackend

extension Array where Element == VMDisk {
    /// The device of `disk`: by the name the backend's operations use, else by the plan's
    /// name, matching a device name, a guest device or the active node name.
    func entry(for disk: DiskRecord) -> VMDisk? {
        for name in [disk.qmpDevice, disk.device].compactMap({ $0 }) {
            if let found = first(where: { $0.answers(to: name) }) { return found }
        }
        return nil
    }
}
