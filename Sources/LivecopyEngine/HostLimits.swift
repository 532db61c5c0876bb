// `livecopy serve`'s host-wide limits, shared by the engines of every plan it runs.

import LivecopyModel

/// The limits of one host over every plan `livecopy serve` drives: how many disks copy
/// at once (`HostSlots`) and the bandwidth their jobs share (`BandwidthBudget`).
public final class HostLimits: Sendable {
    public let slots: HostSlots
    public let budget: BandwidthBudget

    public init(_ settings: ServeSettings) {
        slots = HostSlots(limit: settings.maxParallelDisks)
        budget = BandwidthBudget(total: settings.bandwidth)
    }

    /// New limits (SIGHUP): waiting disks start if they now fit; jobs are re-balanced.
    public func apply(_ settings: ServeSettings) async {
        await slots.setLimit(settings.maxParallelDisks)
        await budget.setTotal(settings.bandwidth)
    }
}
