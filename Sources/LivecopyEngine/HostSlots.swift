// The host-wide limit on disks copying at once (`livecopy serve`'s max_parallel_disks).

import Metrics

/// At most `limit` disks copy at once on this host, over every plan `serve` drives: a
/// disk waits here, first come first served, before its forward work starts.
public actor HostSlots {
    /// nil: no limit.
    private var limit: Int?
    private var inUse = 0
    private var waiting: [(id: Int, continuation: CheckedContinuation<Bool, Never>)] = []
    private var nextWaiter = 0

    public init(limit: Int?) {
        self.limit = limit
        Self.publish(inUse: 0, waiting: 0)
    }

    private func publish() {
        Self.publish(inUse: inUse, waiting: waiting.count)
    }

    /// The counts as metrics (`livecopy_host_disks_copying`, `_waiting`).
    private static func publish(inUse: Int, waiting: Int) {
        Gauge(label: MetricName.hostDisksCopying).record(inUse)
        Gauge(label: MetricName.hostDisksWaiting).record(waiting)
    }

    /// The disks copying now, and those waiting for a slot.
    public var counts: (inUse: Int, waiting: Int) { (inUse, waiting.count) }

    /// The limit when every slot is taken (a disk asking now waits); nil when one is free.
    public var fullAt: Int? {
        guard let limit, !(waiting.isEmpty && fits) else { return nil }
        return limit
    }

    /// Waits for a slot; false when the task was cancelled meanwhile (no slot taken).
    public func acquire() async -> Bool {
        if Task.isCancelled { return false }
        if waiting.isEmpty && fits {
            inUse += 1
            publish()
            return true
        }
        let id = nextWaiter
        nextWaiter += 1
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // Cancelled before this ran: the handler found no waiter to drop.
                if Task.isCancelled {
                    continuation.resume(returning: false)
                } else {
                    waiting.append((id, continuation))
                    publish()
                }
            }
        } onCancel: {
            Task { await self.cancelWaiter(id) }
        }
    }

    /// Gives a slot back; the longest waiter takes it if it fits.
    public func release() {
        inUse -= 1
        admitWaiters()
    }

    /// A new limit (SIGHUP): waiters start at once if it is higher.
    public func setLimit(_ newLimit: Int?) {
        limit = newLimit
        admitWaiters()
    }

    private var fits: Bool { limit.map { inUse < $0 } ?? true }

    private func admitWaiters() {
        while !waiting.isEmpty && fits {
            inUse += 1
            waiting.removeFirst().continuation.resume(returning: true)
        }
        publish()
    }

    private func cancelWaiter(_ id: Int) {
        guard let index = waiting.firstIndex(where: { $0.id == id }) else { return }
        waiting.remove(at: index).continuation.resume(returning: false)
        publish()
    }
}
