// Operator controls: throttle, pause and resume requests and their outcomes.

import Foundation
import LivecopyModel
import PostgresNIO

extension PostgresStore {
    public func controls(ofPlan planId: Int64) throws -> PlanControls {
        try read { statements in
            guard let row = try statements.row("SELECT id, speed_override, paused FROM plans WHERE id = \(planId)")
            else { return PlanControls() }
            let columns = Columns(row, of: "plans")
            return PlanControls(speedOverride: try columns.value("speed_override"), paused: try columns.value("paused"))
        }
    }

    public func requestControl(planId: Int64, _ action: OperatorAction, by requester: String, at: Date) throws -> OperatorRequest {
        try transaction { statements in
            let changed: Int
            switch action {
            case .throttle(let speed):
                changed = try statements.execute("UPDATE plans SET speed_override = \(speed) WHERE id = \(planId)")
            case .pause:
                changed = try statements.execute("UPDATE plans SET paused = TRUE WHERE id = \(planId)")
            case .resume:
                changed = try statements.execute("UPDATE plans SET paused = FALSE WHERE id = \(planId)")
            }
            guard changed == 1 else { throw StoreError("no plan with id \(planId)") }
            var speed: Int64?
            if case .throttle(let value) = action { speed = value }
            guard let row = try statements.row("""
                INSERT INTO operator_requests (plan_id, action, speed, requested_at, requested_by)
                VALUES (\(planId), \(action.name), \(speed), \(at.timeIntervalSince1970), \(requester))
                RETURNING *
                """) else { throw StoreError("database \(location): the operator request's insert returned no row") }
            let request = try Self.operatorRequest(row)
            try Self.insertEvent(statements, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .note, detail: "\(action) requested by \(requester) (request \(request.id))"),
                                 at: at)
            return request
        }
    }

    public func openControlRequests(planId: Int64) throws -> [OperatorRequest] {
        try read { statements in
            try statements.query("SELECT * FROM operator_requests WHERE plan_id = \(planId) AND finished_at IS NULL ORDER BY id")
                .map(Self.operatorRequest)
        }
    }

    public func controlRequest(id: Int64) throws -> OperatorRequest? {
        try read { statements in
            try statements.row("SELECT * FROM operator_requests WHERE id = \(id)").map(Self.operatorRequest)
        }
    }

    public func finishControlRequest(id: Int64, planId: Int64, ok: Bool, outcome: String, at: Date) async throws {
        try await writeAwaiting { statements in
            let changed = try statements.execute("""
                UPDATE operator_requests SET finished_at = \(at.timeIntervalSince1970), ok = \(ok), outcome = \(outcome)
                WHERE id = \(id) AND finished_at IS NULL
                """)
            guard changed == 1 else { return }
            try Self.insertEvent(statements, planId: planId, diskId: nil,
                                 event: NewEvent(kind: .outcome, detail: "request \(id): \(outcome)"), at: at)
        }
    }
}
