// What `livecopy serve` prints while it runs (to stderr, which systemd's journal keeps).

import Foundation
import LivecopyEngine
import LivecopyModel

/// One line per disk transition and per note, naming the plan; no live progress (the
/// journal is no terminal: `livecopy watch` and the metrics show progress).
struct ServeLog: EngineObserver {
    func diskMoved(_ disk: DiskRecord, from: DiskState, detail: String) {
        printStderr("livecopy serve: plan \(disk.planId) \(disk.vmName)/\(disk.device): \(from.rawValue) → \(disk.state.rawValue): \(detail)")
    }

    func diskProgress(_ disk: DiskRecord, bytesDone: Int64, bytesTotal: Int64) {}

    func note(_ disk: DiskRecord?, _ message: String) {
        let subject = disk.map { "plan \($0.planId) \($0.vmName)/\($0.device): " } ?? ""
        printStderr("livecopy serve: \(subject)\(message)")
    }
}
