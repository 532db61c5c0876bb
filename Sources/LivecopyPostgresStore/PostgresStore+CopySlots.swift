// Fleet: the limits (`livecopy limits`) and the copy slots they govern, taken and given
// back under a lock of the limits' rows so that every limit holds at every moment.

import Foundation
import LivecopyModel
import PostgresNIO

extension PostgresStore {
    public func setLimit(_ limit: FleetLimit, at: Date) throws {
        let (scope, name) = limit.scope.columns
        let maxDisks = limit.maxDisks.map { Int32(clamping: $0) }
        try transaction { statements in
            if limit.maxDisks == nil && limit.bandwidth == nil {
                try statements.execute("DELETE FROM fleet_limits WHERE scope = \(scope) AND name = \(name)")
            } else {
                try statements.execute("""
                    INSERT INTO fleet_limits (scope, name, max_disks, bandwidth, updated_at)
                    VALUES (\(scope), \(name), \(maxDisks), \(limit.bandwidth), \(at.timeIntervalSince1970))
                    ON CONFLICT (scope, name) DO UPDATE
                    SET max_disks = EXCLUDED.max_disks, bandwidth = EXCLUDED.bandwidth, updated_at = EXCLUDED.updated_at
                    """)
            }
            // Delivered at COMMIT, with the change: waiting disks may fit now.
            try Self.notifySlotChange(statements, .anything)
        }
    }

    /// The channel of `copySlotChanges`.
    static let slotChannel = "livecopy_copy_slots"

    private static func notifySlotChange(_ statements: Statements, _ change: CopySlotChange) throws {
        _ = try statements.row("SELECT pg_notify(\(slotChannel), \(change.payload))")
    }

    public func copySlotChanges() -> AsyncStream<CopySlotChange> {
        AsyncStream { continuation in
            let task = Task { [pool, logger] in
                var delay = 0.1
                while !Task.isCancelled {
                    do {
                        let connection = try await pool.connectDedicated()
                        defer { pool.discard(connection) }
                        // (Re)connected: what was released meanwhile is not known.
                        continuation.yield(.anything)
                        delay = 0.1
                        for try await notification in try await connection.listen(Self.slotChannel) {
                            continuation.yield(CopySlotChange(payload: notification.payload))
                        }
                    } catch {
                        if Task.isCancelled { break }
                        logger.debug("listening for copy slot changes failed; listening again",
                                     metadata: ["reason": "\(PostgresFailure.reason(error))"])
                    }
                    try? await Task.sleep(for: .seconds(delay))
                    delay = min(delay * 2, 2)
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    public func limits() throws -> [FleetLimit] {
        try read { statements in try statements.query("SELECT * FROM fleet_limits ORDER BY scope, name").map(Self.fleetLimit) }
    }

    public func copySlots() throws -> [CopySlot] {
        try read { statements in try statements.query("SELECT * FROM copy_slots ORDER BY disk_id").map(Self.copySlot) }
    }

    /// The host's limit row and the limit row of the deepest target holding `destination`,
    /// each locked `FOR UPDATE` (in that order, in every caller: no deadlock between them).
    private static func lockLimits(_ statements: Statements, host: String, destination: String) throws
        -> (host: FleetLimit?, target: FleetLimit?)
    {
        let hostLimit = try statements.row("SELECT * FROM fleet_limits WHERE scope = 'host' AND name = \(host) FOR UPDATE")
            .map(fleetLimit)
        let targetLimit = try statements.row("""
            SELECT * FROM fleet_limits
            WHERE scope = 'target' AND left(\(destination), length(name) + 1) = name || '/'
            ORDER BY length(name) DESC LIMIT 1
            FOR UPDATE
            """).map(fleetLimit)
        return (hostLimit, targetLimit)
    }

    public func takeCopySlot(_ request: CopySlotRequest, at: Date) async throws -> CopySlotDecision {
        try await writeAwaiting { statements in
            let (hostLimit, targetLimit) = try Self.lockLimits(statements, host: request.host, destination: request.destination)
            if let held = try statements.row("SELECT speed_cap FROM copy_slots WHERE disk_id = \(request.diskId)") {
                return .granted(speedCap: try held.decode(Int64?.self))
            }
            let target = targetLimit.map(\.scope.columns.name)
            let hostCount = try Self.count(statements, "SELECT COUNT(*) FROM copy_slots WHERE host = \(request.host)")
            if let max = hostLimit?.maxDisks, hostCount >= max {
                return .waiting(reason: "host \(request.host) has \(hostCount) of \(max) disks copying (livecopy limits)")
            }
            var targetCount = 0
            if let target {
                targetCount = try Self.count(statements, "SELECT COUNT(*) FROM copy_slots WHERE target = \(target)")
                if let max = targetLimit?.maxDisks, targetCount >= max {
                    return .waiting(reason: "target \(target) has \(targetCount) of \(max) disks copying (livecopy limits)")
                }
            }
            let speedCap = targetLimit?.speedPerSlot
            try statements.execute("""
                INSERT INTO copy_slots (disk_id, plan_id, host, target, speed_cap, taken_at)
                VALUES (\(request.diskId), \(request.planId), \(request.host), \(target), \(speedCap), \(at.timeIntervalSince1970))
                """)
            func share(_ count: Int, _ limit: FleetLimit?) -> String {
                "(\(count) of \(limit?.maxDisks.map(String.init) ?? "unlimited"))"
            }
            let targetText = target.map { "target=\($0) \(share(targetCount + 1, targetLimit))" } ?? "target=-"
            let capText = speedCap.map { "speed cap \($0) B/s (\(ByteSize.format($0))/s)" } ?? "no speed cap"
            let detail = "copy slot taken: host=\(request.host) \(share(hostCount + 1, hostLimit)) \(targetText), \(capText)"
            try Self.insertEvent(statements, planId: request.planId, diskId: request.diskId,
                                 event: NewEvent(kind: .note, detail: detail), at: at)
            return .granted(speedCap: speedCap)
        }
    }

    public func releaseCopySlot(diskId: Int64, at: Date) async throws {
        try await writeAwaiting { statements in
            guard let slot = try statements.row("SELECT * FROM copy_slots WHERE disk_id = \(diskId)").map(Self.copySlot) else {
                return
            }
            // The same row locks as takeCopySlot, in the same order, before the slot goes.
            _ = try statements.row("SELECT 1 FROM fleet_limits WHERE scope = 'host' AND name = \(slot.host) FOR UPDATE")
            if let target = slot.target {
                _ = try statements.row("SELECT 1 FROM fleet_limits WHERE scope = 'target' AND name = \(target) FOR UPDATE")
            }
            guard try statements.execute("DELETE FROM copy_slots WHERE disk_id = \(diskId)") == 1 else { return }
            try Self.insertEvent(statements, planId: slot.planId, diskId: diskId,
                                 event: NewEvent(kind: .note, detail: "copy slot released: host=\(slot.host) target=\(slot.target ?? "-")"),
                                 at: at)
            // Delivered at COMMIT to every listener (`copySlotChanges`).
            try Self.notifySlotChange(statements, .released(host: slot.host, target: slot.target))
        }
    }

    private static func count(_ statements: Statements, _ query: PostgresQuery) throws -> Int {
        Int(try statements.row(query)?.decode(Int64.self) ?? 0)
    }
}
