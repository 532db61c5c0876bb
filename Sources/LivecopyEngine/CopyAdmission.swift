// Where a disk waits for its turn to copy: `livecopy serve`'s host slots (`HostLimits`),
// or a fleet's copy slots in the shared store (`FleetAdmission`).

import LivecopyModel

/// A turn to copy, given to a disk before its forward work starts and given back when its
/// drive ends.
public protocol CopyAdmission: Sendable {
    /// Waits until `disk` may copy, noting in its timeline why it waits (`note`). Returns
    /// the speed its copy job may run at most (`.granted(speedCap:)`, nil: no cap), or nil
    /// when the task was cancelled meanwhile (no turn taken).
    func admit(_ disk: DiskRecord, note: @escaping @Sendable (String) async -> Void) async -> CopySlotDecision?

    /// The drive of `disk` ended: its turn is given back, unless its copy job may still run
    /// (a halted drive leaves QEMU's job running, which still counts against the limits).
    func release(_ disk: DiskRecord) async

    /// The speed cap of a disk admitted now (nil: none, or not admitted).
    func speedCap(diskId: Int64) async -> Int64?
}

extension HostLimits: CopyAdmission {
    public func admit(_ disk: DiskRecord, note: @escaping @Sendable (String) async -> Void) async -> CopySlotDecision? {
        if let limit = await slots.fullAt {
            await note("waiting for a copy slot: \(limit) disk(s) copy at once on this host (livecopy serve's max_parallel_disks)")
        }
        guard await slots.acquire() else { return nil }
        return .granted(speedCap: nil)
    }

    public func release(_ disk: DiskRecord) async {
        await budget.release(diskId: disk.id)
        await slots.release()
    }

    public func speedCap(diskId: Int64) async -> Int64? { nil }
}

/// A job speed held at or below `cap` (nil: as it is): unlimited (0) becomes the cap.
func speed(_ wanted: Int64, cappedAt cap: Int64?) -> Int64 {
    guard let cap else { return wanted }
    return wanted == 0 ? cap : min(wanted, cap)
}

extension PlanControls {
    /// These settings with the job's speed held at or below `cap` (nil: as they are): an
    /// unlimited speed (0, or none set over an unlimited policy) becomes the cap.
    func capped(at cap: Int64?, policySpeed: Int64) -> PlanControls {
        guard cap != nil else { return self }
        var capped = self
        capped.speedOverride = speed(speedOverride ?? policySpeed, cappedAt: cap)
        return capped
    }
}
