// Who owns a plan: this host's name in lease records, and whether a lease holder is gone.

import Foundation
import LivecopyModel

extension Engine {
    /// This host as lease records name it: the host name and the kernel's boot id, so a
    /// lease left by a process before a reboot is never mistaken for a live one.
    public static let thisHost: String = {
        let bootId = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines).prefix(8) ?? "unknown"
        return "\(ProcessInfo.processInfo.hostName) boot \(bootId)"
    }()

    /// Whether a lease holder is gone. On this host (same boot) the process itself is
    /// asked: a live owner keeps its plan even when stalled (stopped, swapped out), since
    /// taking over would make two processes drive one disk. A holder elsewhere, or from
    /// before a reboot, is gone once its heartbeat is older than `leaseTimeout`. A fleet
    /// agent's plans are owned under its host's name (`Plan.isHostName`: no spaces), which
    /// never equals `thisHost` ("NAME boot ID"): from any other process, by heartbeat alone.
    public static func isGone(_ owner: PlanOwner, now: Date = Date(), host: String = thisHost,
                              leaseTimeout: Double = leaseTimeout) -> Bool {
        if owner.host == host {
            return !isLivecopyProcess(owner.pid)
        }
        return now.timeIntervalSince(owner.heartbeat) > leaseTimeout
    }

    /// `isGone` as this engine judges it (its host, its lease timeout).
    var isGoneHere: @Sendable (PlanOwner) -> Bool {
        let host = me.host
        let timeout = lease.timeout
        return { Self.isGone($0, host: host, leaseTimeout: timeout) }
    }

    /// Whether `pid` is a running process of a livecopy binary (not a reused pid).
    private static func isLivecopyProcess(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return true }
        let own = (try? String(contentsOfFile: "/proc/self/comm", encoding: .utf8)) ?? ""
        return name == own || name.contains("livecopy")
    }

    /// Whether a live process other than this one drives plan `id`.
    public func liveOwner(ofPlan id: Int64) throws -> PlanOwner? {
        guard let owner = try store.owner(ofPlan: id), owner != me, !isGoneHere(owner) else { return nil }
        return owner.pid == me.pid && owner.host == me.host ? nil : owner
    }
}
