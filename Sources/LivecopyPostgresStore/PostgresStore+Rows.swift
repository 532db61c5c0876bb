// Turning rows of plans, disks and events into records (never trapping on a damaged
// value), and inserting events.

import Foundation
import LivecopyModel
import PostgresNIO

/// One row's columns by name, each decoded or refused in one line naming the table.
struct Columns {
    let row: PostgresRandomAccessRow
    let table: String

    init(_ row: PostgresRow, of table: String) {
        self.row = row.makeRandomAccess()
        self.table = table
    }

    func value<Value: PostgresDecodable>(_ name: String, as type: Value.Type = Value.self) throws -> Value {
        do {
            return try row[name].decode(Value.self)
        } catch {
            let id = (try? row["id"].decode(Int64?.self)).flatMap { $0 }.map(String.init) ?? "?"
            throw StoreError("\(table) row \(id) has an unreadable \(name); the database was edited or is damaged")
        }
    }

    /// A column of epoch seconds.
    func date(_ name: String) throws -> Date? {
        try value(name, as: Double?.self).map(Date.init(timeIntervalSince1970:))
    }

    /// A column holding one of an enumeration's raw values.
    func choice<T: RawRepresentable>(_ name: String, as type: T.Type = T.self) throws -> T where T.RawValue == String {
        let text: String = try value(name)
        guard let choice = T(rawValue: text) else { throw StoreError("\(table) row has unknown \(name) '\(text)'") }
        return choice
    }

    /// A nullable column holding one of an enumeration's raw values.
    func optionalChoice<T: RawRepresentable>(_ name: String, as type: T.Type = T.self) throws -> T? where T.RawValue == String {
        guard let text = try value(name, as: String?.self) else { return nil }
        guard let choice = T(rawValue: text) else { throw StoreError("\(table) row has unknown \(name) '\(text)'") }
        return choice
    }
}

extension PostgresStore {
    static func owner(_ row: PostgresRow) throws -> PlanOwner? {
        let columns = Columns(row, of: "plans")
        guard let pid = try columns.value("owner_pid", as: Int32?.self),
              let host = try columns.value("owner_host", as: String?.self),
              let heartbeat = try columns.date("owner_heartbeat") else { return nil }
        return PlanOwner(pid: pid, host: host, heartbeat: heartbeat)
    }

    static func insertEvent(_ statements: Statements, planId: Int64, diskId: Int64?, event: NewEvent, at: Date) throws {
        try statements.execute("""
            INSERT INTO events (plan_id, disk_id, at, kind, from_state, to_state, detail)
            VALUES (\(planId), \(diskId), \(at.timeIntervalSince1970), \(event.kind.rawValue), \(event.from), \(event.to), \(event.detail))
            """)
    }

    static func planRecord(_ row: PostgresRow) throws -> PlanRecord {
        let columns = Columns(row, of: "plans")
        let policyJSON: String = try columns.value("policy_json")
        let policy: Policy
        do {
            policy = try JSONDecoder().decode(Policy.self, from: Data(policyJSON.utf8))
        } catch {
            throw StoreError("plans row \(try columns.value("id", as: Int64.self)) has an unreadable policy_json; the database was edited or is damaged")
        }
        return PlanRecord(
            id: try columns.value("id"), name: try columns.value("name"), policyReference: try columns.value("policy_reference"),
            policy: policy, state: try columns.choice("state"),
            createdAt: try columns.date("created_at") ?? Date(timeIntervalSince1970: 0),
            finishedAt: try columns.date("finished_at"), error: try columns.value("error"), host: try columns.value("host"))
    }

    static func diskRecord(_ row: PostgresRow) throws -> DiskRecord {
        let columns = Columns(row, of: "disks")
        return DiskRecord(
            id: try columns.value("id"), planId: try columns.value("plan_id"), vmName: try columns.value("vm_name"),
            vmAddress: try columns.value("vm_address"), device: try columns.value("device"),
            destination: try columns.value("destination"), source: try columns.value("source"),
            sourceFormat: try columns.value("source_format"), qmpDevice: try columns.value("qmp_device"),
            state: try columns.choice("state"), bytesDone: try columns.value("bytes_done"),
            bytesTotal: try columns.value("bytes_total"), error: try columns.value("error"),
            intent: try columns.optionalChoice("intent"), destinationCreated: try columns.value("destination_created"),
            updatedAt: try columns.date("updated_at") ?? Date(),
            strategy: try columns.choice("strategy"), destinationFormat: try columns.choice("destination_format"),
            pivoted: try columns.value("pivoted"), pendingHook: try columns.optionalChoice("pending_hook"),
            allocatedBytes: try columns.value("allocated_bytes"))
    }

    static func eventRecord(_ row: PostgresRow) throws -> EventRecord {
        let columns = Columns(row, of: "events")
        return EventRecord(
            id: try columns.value("id"), planId: try columns.value("plan_id"), diskId: try columns.value("disk_id"),
            at: try columns.date("at") ?? Date(), kind: try columns.choice("kind"),
            from: try columns.value("from_state"), to: try columns.value("to_state"), detail: try columns.value("detail"))
    }
}
