// The number of plans and disks in each state, for the metrics endpoint.

import GRDB
import LivecopyModel

extension SQLiteStore {
    /// Plans and disks by state: two aggregate queries (`GROUP BY state`) in one read. A
    /// state this release does not know (written by a newer one) is left out.
    public func stateCounts() throws -> StateCounts {
        try read { db in
            func counts(_ table: String) throws -> [(String, Int)] {
                try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM \(table) GROUP BY state").map { ($0["state"], $0["n"]) }
            }
            var plans: [PlanState: Int] = [:]
            for (state, count) in try counts("plans") { if let known = PlanState(rawValue: state) { plans[known] = count } }
            var disks: [DiskState: Int] = [:]
            for (state, count) in try counts("disks") { if let known = DiskState(rawValue: state) { disks[known] = count } }
            return StateCounts(plans: plans, disks: disks)
        }
    }
}
