import Foundation
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `--metrics HOST:PORT` refused in one line, exit 2, with nothing driven: a value that is
/// not HOST:PORT, and a port already taken.
@Suite(.serialized)
struct MetricsOptionTests {
    @Test func aBadAddressIsRefusedInOneLine() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-metrics-bad")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        for (command, value, fragment) in [("run", "9464", "no port"), ("recover", "127.0.0.1:99999", "the port must be"),
                                           ("run", "example.com:9464", "'example.com' is not an IP address")] {
            try await BadInputTests.expectRefusal(livecopy, [command, "--metrics", value], "--metrics '\(value)': \(fragment)")
        }
        #expect(!FileManager.default.fileExists(atPath: livecopy.database), "nothing was created")
    }

    @Test func aTakenPortIsRefusedAndNoPlanIsDriven() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-metrics-taken")
        defer { scratch.remove() }
        let database = scratch.appending("livecopy.db")
        let store = try SQLiteStore(path: database)
        let plan = NewPlan(name: "waiting", policyReference: nil, policy: try Policy.resolve(nil), state: .pending, disks: [
            NewPlan.Disk(vmName: "vm", vmAddress: scratch.appending("vm.qmp"), device: "drive0", destination: scratch.appending("d.qcow2"),
                         source: "/s/d.qcow2", sourceFormat: "qcow2", qmpDevice: "drive0"),
        ])
        let planId = try store.insertPlan(plan, at: Date()).0.id
        let (fd, port) = try HTTPScrape.occupyPort()
        defer { close(fd) }
        try await BadInputTests.expectRefusal(LivecopyProcess(database: database), ["run", "--metrics", "127.0.0.1:\(port)"],
                                              "--metrics 127.0.0.1:\(port): cannot listen there: Address already in use")
        #expect(try store.plan(id: planId)?.state == .pending, "the plan was not driven")
    }
}
