// How libvirt's block jobs ended, from libvirt's events, for as long as a session lasts.

import CLibvirt
import Synchronization

/// The failures and cancellations libvirt reported for its block jobs during the
/// session (`VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2`), by disk. libvirt dismisses its jobs
/// itself, so once a job is gone its event is the only word on how it ended; a session
/// opened later finds the disk's images instead (`LibvirtVMSession.jobs`).
final class LibvirtJobEndings: Sendable {
    /// Shared with the listening task.
    private final class Failures: Sendable {
        let byDisk = Mutex<[String: String]>([:])
        func withLock<T>(_ body: (inout [String: String]) -> T) -> T { byDisk.withLock { body(&$0) } }
    }
    private let failures = Failures()
    private let listener: Task<Void, Never>

    init(_ events: AsyncStream<LibvirtBlockJobEvent>) {
        let failures = self.failures
        listener = Task {
            for await event in events {
                switch UInt32(event.status) {
                case VIR_DOMAIN_BLOCK_JOB_FAILED.rawValue:
                    failures.withLock { $0[event.disk] = "failed (libvirt's block job event)" }
                case VIR_DOMAIN_BLOCK_JOB_CANCELED.rawValue:
                    failures.withLock { $0[event.disk] = "was cancelled" }
                default:
                    // A new job on the disk, ready or completed: no failure to keep.
                    failures.withLock { _ = $0.removeValue(forKey: event.disk) }
                }
            }
        }
    }

    /// How the last libvirt job on `disk` failed, or nil.
    func failure(of disk: String) -> String? { failures.withLock { $0[disk] } }

    /// Forgets a failure once a new job starts on the disk.
    func clear(_ disk: String) { failures.withLock { _ = $0.removeValue(forKey: disk) } }

    func stop() { listener.cancel() }
}
