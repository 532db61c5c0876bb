// Turning rows into records (never trapping on a damaged value), inserting events, and
// the cached-statement helpers.

import Foundation
import GRDB
import LivecopyModel

extension SQLiteStore {
    static func owner(_ row: Row) throws -> PlanOwner? {
        guard let pid = try column(row, "owner_pid", of: "plans") as Int32?,
              let host = try column(row, "owner_host", of: "plans") as String?,
              let heartbeat = try column(row, "owner_heartbeat", of: "plans") as Double? else { return nil }
        return PlanOwner(pid: pid, host: host, heartbeat: Date(timeIntervalSince1970: heartbeat))
    }

    static func insertEvent(_ db: Database, planId: Int64, diskId: Int64?, event: NewEvent, at: Date) throws {
        try db.executeCached(
            sql: "INSERT INTO events (plan_id, disk_id, at, kind, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [planId, diskId, at.timeIntervalSince1970, event.kind.rawValue, event.from, event.to, event.detail])
    }

    /// A column's value. GRDB's subscripts trap on a value of the wrong type (text in a REAL
    /// column, a blob that is not UTF-8): a database edited by hand or damaged must give an
    /// error, not a crash.
    static func column<Value: DatabaseValueConvertible>(_ row: Row, _ name: String, of table: String) throws -> Value {
        do {
            return try row.decode(Value.self, forColumn: name)
        } catch {
            let id = row["id"] as DatabaseValue
            let value = row[name] as DatabaseValue
            throw StoreError("\(table) row \(id) has an unreadable \(name) (\(value)); the database was edited or is damaged")
        }
    }

    static func date(_ row: Row, _ name: String, of table: String) throws -> Date? {
        (try column(row, name, of: table) as Double?).map(Date.init(timeIntervalSince1970:))
    }

    static func planRecord(_ row: Row) throws -> PlanRecord {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "plans") }
        let stateText: String = try value("state")
        guard let state = PlanState(rawValue: stateText) else { throw StoreError("plan has unknown state '\(stateText)'") }
        let policyJSON: String = try value("policy_json")
        let policy: Policy
        do {
            policy = try JSONDecoder().decode(Policy.self, from: Data(policyJSON.utf8))
        } catch {
            throw StoreError("plans row \(row["id"] as DatabaseValue) has an unreadable policy_json; the database was edited or is damaged")
        }
        return PlanRecord(
            id: try value("id"), name: try value("name"), policyReference: try value("policy_reference"), policy: policy,
            state: state, createdAt: try date(row, "created_at", of: "plans") ?? Date(timeIntervalSince1970: 0),
            finishedAt: try date(row, "finished_at", of: "plans"), error: try value("error"))
    }

    static func diskRecord(_ row: Row) throws -> DiskRecord {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "disks") }
        let stateText: String = try value("state")
        guard let state = DiskState(rawValue: stateText) else { throw StoreError("disk has unknown state '\(stateText)'") }
        let intentText: String? = try value("intent")
        let intent = try intentText.map { text in
            guard let intent = DiskIntent(rawValue: text) else { throw StoreError("disk has unknown intent '\(text)'") }
            return intent
        }
        return DiskRecord(
            id: try value("id"), planId: try value("plan_id"), vmName: try value("vm_name"), vmAddress: try value("vm_address"),
            device: try value("device"), destination: try value("destination"), source: try value("source"),
            sourceFormat: try value("source_format"), qmpDevice: try value("qmp_device"), state: state,
            bytesDone: try value("bytes_done"), bytesTotal: try value("bytes_total"), error: try value("error"),
            intent: intent, destinationCreated: try value("destination_created"),
            updatedAt: try date(row, "updated_at", of: "disks") ?? Date(),
            strategy: try choice(row, "strategy"), destinationFormat: try choice(row, "destination_format"),
            pivoted: try value("pivoted"), pendingHook: try optionalChoice(row, "pending_hook"),
            allocatedBytes: try value("allocated_bytes"))
    }

    /// A disks column holding one of an enumeration's raw values.
    private static func choice<T: RawRepresentable>(_ row: Row, _ name: String) throws -> T where T.RawValue == String {
        let text: String = try column(row, name, of: "disks")
        guard let value = T(rawValue: text) else { throw StoreError("disk has unknown \(name) '\(text)'") }
        return value
    }

    /// A nullable disks column holding one of an enumeration's raw values.
    private static func optionalChoice<T: RawRepresentable>(_ row: Row, _ name: String) throws -> T? where T.RawValue == String {
        let text: String? = try column(row, name, of: "disks")
        return try text.map { text in
            guard let value = T(rawValue: text) else { throw StoreError("disk has unknown \(name) '\(text)'") }
            return value
        }
    }

    static func eventRecord(_ row: Row) throws -> EventRecord {
        func value<Value: DatabaseValueConvertible>(_ name: String) throws -> Value { try column(row, name, of: "events") }
        let kindText: String = try value("kind")
        guard let kind = EventKind(rawValue: kindText) else { throw StoreError("event has unknown kind '\(kindText)'") }
        return EventRecord(
            id: try value("id"), planId: try value("plan_id"), diskId: try value("disk_id"),
            at: try date(row, "at", of: "events") ?? Date(), kind: kind,
            from: try value("from_state"), to: try value("to_state"), detail: try value("detail"))
    }
}

/// Statements the store runs again and again are prepared once per connection.
extension Database {
    func executeCached(sql: String, arguments: StatementArguments = []) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}

extension Row {
    static func fetchAllCached(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Row] {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }

    static func fetchOneCached(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Row? {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }
}
