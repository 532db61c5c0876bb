import Foundation
import LivecopyModel
import TestSupport
import Testing

/// Fleet mode's bad input: each refused in one line with exit 2, nothing recorded. On a
/// SQLite database (no server needed) and on a fleet store (the test PostgreSQL server).
struct FleetBadInputTests {
    static let sqlitePlan = """
        vms:
          - name: vm1
            host: alpha
            qmp: /tmp/lc-fleet-nowhere.sock
            disks:
              - device: drive0
                destination: /tmp/lc-fleet-nowhere/dst.qcow2
        """

    @Test func fleetCommandsOnASQLiteDatabaseAreRefused() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-fleet-bad-sqlite")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let plan = scratch.appending("plan.yaml")
        try Self.sqlitePlan.write(toFile: plan, atomically: true, encoding: .utf8)
        try await BadInputTests.expectRefusal(livecopy, ["submit", "--detach", plan], "host: is for a fleet store")
        try await BadInputTests.expectRefusal(livecopy, ["agent", "--host", "alpha"], "livecopy agent needs a fleet store")
        try await BadInputTests.expectRefusal(livecopy, ["agent", "--host", "al/pha"], "--host: invalid value 'al/pha'")
        try await BadInputTests.expectRefusal(livecopy, ["agent", "--host", "alpha", "--lease-timeout", "1s"],
                                              "--lease-timeout: invalid value '1s'")
        try await BadInputTests.expectRefusal(livecopy, ["limits", "set", "--host", "alpha", "--max-disks", "2"],
                                              "fleet limits live in a fleet store")
        try await BadInputTests.expectRefusal(livecopy, ["status", "--db-password-file", "/nonexistent"],
                                              "--db-password-file is for a fleet store")
        #expect(!FileManager.default.fileExists(atPath: livecopy.database), "no database was created")
    }

    @Test(.requires(.postgres)) func badFleetInputIsRefusedAndRecordsNothing() async throws {
        let database = try PostgresServer.createDatabase(prefix: "lc_fleet_bad")
        defer { PostgresServer.dropDatabase(database) }
        let scratch = try TemporaryDirectory(prefix: "lc-fleet-bad")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: database)
        func refuse(_ arguments: [String], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let result = try await livecopy.run(arguments, environment: PostgresServer.environment)
            #expect(result.status == 2, "exit \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
            #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(fragment), "\(result.stderr)",
                    sourceLocation: sourceLocation)
        }
        let withHost = scratch.appending("with-host.yaml"), withoutHost = scratch.appending("without-host.yaml")
        try Self.sqlitePlan.write(toFile: withHost, atomically: true, encoding: .utf8)
        try Self.sqlitePlan.replacingOccurrences(of: "    host: alpha\n", with: "").write(toFile: withoutHost, atomically: true,
                                                                                           encoding: .utf8)
        try await refuse(["submit", withHost], "submit them with --detach")
        try await refuse(["submit", "--detach", withoutHost], "VM 'vm1' names no host")
        try await refuse(["limits", "set", "--host", "alpha", "--bandwidth", "10M"], "give --target")
        try await refuse(["limits", "set", "--target", "/srv/a", "--bandwidth", "10M"], "give --max-disks too")
        try await refuse(["limits", "set", "--target", "srv/a", "--max-disks", "2"], "expected an absolute directory")
        try await refuse(["limits", "set", "--host", "a", "--target", "/srv/a", "--max-disks", "2"], "not both")
        try await refuse(["limits", "set", "--host", "alpha"], "give --max-disks, --bandwidth or both")
        try await refuse(["limits", "set", "--host", "alpha", "--max-disks", "0"], "--max-disks: invalid value '0'")
        try await refuse(["run"], "each host's agent drives its plans")
        try await refuse(["recover"], "each host's agent drives its plans")
        let withPassword = LivecopyProcess(database: database.replacingOccurrences(of: "livecopy@", with: "livecopy:secret@"))
        let password = try await withPassword.run(["status"])
        #expect(password.status != 0 && password.stderr.contains("must not hold a password") && !password.stderr.contains("secret"),
                "\(password.stderr)")

        // Nothing was recorded.
        let status = try await livecopy.run(["status", "--json"], environment: PostgresServer.environment)
        #expect(status.status == 0 && status.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[]", "\(status.stdout)\(status.stderr)")
        let limits = try await livecopy.run(["limits"], environment: PostgresServer.environment)
        #expect(limits.stdout.contains("no limits set"), "\(limits.stdout)\(limits.stderr)")
    }
}
