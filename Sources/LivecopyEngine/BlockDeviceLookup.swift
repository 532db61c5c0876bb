// Finding a disk's entry in `query-block`'s answer.

import LivecopyModel
import QMP

extension Array where Element == BlockDeviceInfo {
    /// The `query-block` entry of `disk`: by the name QMP commands use, else by the
    /// plan's name, matching a device name, a qdev id or the top node name.
    func entry(for disk: DiskRecord) -> BlockDeviceInfo? {
        for name in [disk.qmpDevice, disk.device].compactMap({ $0 }) {
            if let found = first(where: { $0.device == name || $0.qdev == name || $0.inserted?.nodeName == name }) {
                return found
            }
        }
        return nil
    }
}
