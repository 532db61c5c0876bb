// Turning rows of the operator, quarantine and fleet tables into records.

import Foundation
import LivecopyModel
import PostgresNIO

extension PostgresStore {
    static func operatorRequest(_ row: PostgresRow) throws -> OperatorRequest {
        let columns = Columns(row, of: "operator_requests")
        let name: String = try columns.value("action")
        let action: OperatorAction
        switch name {
        case "throttle": action = .throttle(speed: try columns.value("speed", as: Int64?.self) ?? 0)
        case "pause": action = .pause
        case "resume": action = .resume
        default: throw StoreError("operator request has unknown action '\(name)'")
        }
        return OperatorRequest(
            id: try columns.value("id"), planId: try columns.value("plan_id"), action: action,
            requestedAt: try columns.date("requested_at") ?? Date(), requestedBy: try columns.value("requested_by"),
            finishedAt: try columns.date("finished_at"), ok: try columns.value("ok"), outcome: try columns.value("outcome"))
    }

    static func quarantinedImage(_ row: PostgresRow) throws -> QuarantinedImage {
        let columns = Columns(row, of: "quarantined_images")
        let device: Int64 = try columns.value("device")
        let inode: Int64 = try columns.value("inode")
        return QuarantinedImage(
            id: try columns.value("id"), diskId: try columns.value("disk_id"), planId: try columns.value("plan_id"),
            originalPath: try columns.value("original_path"), quarantinePath: try columns.value("quarantine_path"),
            sizeBytes: try columns.value("size_bytes"), device: UInt64(bitPattern: device), inode: UInt64(bitPattern: inode),
            quarantinedAt: try columns.date("quarantined_at") ?? Date(timeIntervalSince1970: 0),
            expiresAt: try columns.date("expires_at") ?? Date(timeIntervalSince1970: 0),
            state: try columns.choice("state"), endedAt: try columns.date("ended_at"))
    }

    static func hostLease(_ row: PostgresRow) throws -> HostLeaseRecord {
        let columns = Columns(row, of: "host_leases")
        let host: String = try columns.value("host")
        return HostLeaseRecord(
            host: host,
            agent: AgentIdentity(host: host, machine: try columns.value("machine"), pid: try columns.value("pid"),
                                 instance: try columns.value("instance")),
            heartbeat: try columns.date("heartbeat") ?? Date(timeIntervalSince1970: 0))
    }

    static func fleetLimit(_ row: PostgresRow) throws -> FleetLimit {
        let columns = Columns(row, of: "fleet_limits")
        let scopeName: String = try columns.value("scope")
        let name: String = try columns.value("name")
        let scope: LimitScope
        switch scopeName {
        case "host": scope = .host(name)
        case "target": scope = .target(name)
        default: throw StoreError("fleet_limits row has unknown scope '\(scopeName)'")
        }
        return FleetLimit(scope: scope, maxDisks: try columns.value("max_disks", as: Int32?.self).map(Int.init),
                          bandwidth: try columns.value("bandwidth"), updatedAt: try columns.date("updated_at"))
    }

    static func copySlot(_ row: PostgresRow) throws -> CopySlot {
        let columns = Columns(row, of: "copy_slots")
        return CopySlot(diskId: try columns.value("disk_id"), planId: try columns.value("plan_id"), host: try columns.value("host"),
                        target: try columns.value("target"), speedCap: try columns.value("speed_cap"),
                        takenAt: try columns.date("taken_at") ?? Date(timeIntervalSince1970: 0))
    }
}

extension LimitScope {
    /// The `fleet_limits.scope` column's value and the `name` column's.
    var columns: (scope: String, name: String) {
        switch self {
        case .host(let name): return ("host", name)
        case .target(let path): return ("target", path)
        }
    }
}
