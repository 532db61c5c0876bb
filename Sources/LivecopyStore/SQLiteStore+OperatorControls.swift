// Operator controls: throttle, pause and resume requests and their outcomes.

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    public func controls(ofPlan planId: Int64) throws -> PlanControls {
        try read { db in
            guard let row = try Row.fetchOneCached(db, sql: "SELECT id, speed_override, paused FROM plans WHERE id = ?", arguments: [planId])
            else { return PlanControls() }
            return PlanControls(speedOverride: try Self.column(row, "speed_override", of: "plans"),
                                paused: try Self.column(row, "paused", of: "plans"))
        }
    }

    public func requestControl(planId: Int64, _ action: OperatorAction, by requester: String, at: Date) throws -> OperatorRequest {
        let id: Int64 = try write { db in
            switch action {
            case .throttle(let speed):
                try db.executeCached(sql: "UPDATE plans SET speed_override = ? WHERE id = ?", arguments: [speed, planId])
            case .pause:
                try db.executeCached(sql: "UPDATE plans SET paused = 1 WHERE id = ?", arguments: [planId])
            case .resume:
                try db.executeCached(sql: "UPDATE plans SET paused = 0 WHERE id = ?", arguments: [planId])
            }
            guard db.changesCount == 1 else { throw StoreError("no plan with id \(planId)") }
            var speed: Int64?
            if case .throttle(let value) = action { speed = value }
            try db.executeCached(
                sql: "INSERT INTO operator_requests (plan_id, action, speed, requested_at, requested_by) VALUES (?, ?, ?, ?, ?)",
                arguments: [planId, action.name, speed, at.timeIntervalSince1970, requester])
            let id = db.lastInsertedRowID
            try Self.insertEvent(db, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .note, detail: "\(action) requested by \(requester) (request \(id))"), at: at)
            return id
        }
        guard let request = try controlRequest(id: id) else { throw StoreError("operator request \(id) vanished after insert") }
        return request
    }

    public func openControlRequests(planId: Int64) throws -> [OperatorRequest] {
        try read { db in
            try Row.fetchAllCached(db, sql: "SELECT * FROM operator_requests WHERE plan_id = ? AND finished_at IS NULL ORDER BY id",
                             arguments: [planId]).map(Self.operatorRequest)
        }
    }

    public func controlRequest(id: Int64) throws -> OperatorRequest? {
        try read { db in
            try Row.fetchOneCached(db, sql: "SELECT * FROM operator_requests WHERE id = ?", arguments: [id]).map(Self.operatorRequest)
        }
    }

    public func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) async throws {
        try await writeAwaiting { db in try Self.finishControlRequest(db, id: id, planId: planId, ok: ok, outcome: outcome, at: at) }
    }

    /// `finishControlRequest(id:planId:ok:outcome:at:)` on the calling thread (for `batch` and tools).
    public func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) throws {
        try write { db in try Self.finishControlRequest(db, id: id, planId: planId, ok: ok, outcome: outcome, at: at) }
    }

    private static func finishControlRequest(_ db: Database, id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) throws {
        try db.executeCached(
            sql: "UPDATE operator_requests SET finished_at = ?, ok = ?, outcome = ? WHERE id = ? AND finished_at IS NULL",
            arguments: [at.timeIntervalSince1970, ok, outcome, id])
        guard db.changesCount == 1 else { return }
        try insertEvent(db, planId: planId, diskId: nil,
                        event: NewEvent(kind: .outcome, detail: "request \(id): \(outcome)"), at: at)
    }

    private static func operatorRequest(_ row: Row) throws -> OperatorRequest {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "operator_requests") }
        let name: String = try value("action")
        let action: OperatorAction
        switch name {
        case "throttle": action = .throttle(speed: try value("speed") as Int64? ?? 0)
        case "pause": action = .pause
        case "resume": action = .resume
        default: throw StoreError("operator request has unknown action '\(name)'")
        }
        return OperatorRequest(
            id: try value("id"), planId: try value("plan_id"), action: action,
            requestedAt: try date(row, "requested_at", of: "operator_requests") ?? Date(),
            requestedBy: try value("requested_by"), finishedAt: try date(row, "finished_at", of: "operator_requests"),
            ok: try value("ok"), outcome: try value("outcome"))
    }
}
