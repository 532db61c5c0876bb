import Foundation
import LivecopyModel
import TestSupport
import Testing

/// Two `livecopy submit --detach` processes at once, for plans claiming the same
/// destination: exactly one is recorded; the other is refused in one line, exit 2.
struct ConcurrentSubmitTests {
    static func plan(vm: String, destination: String) -> String {
        """
        vms:
          - name: \(vm)
            qmp: /run/livecopy-test-\(vm).qmp
            disks:
              - device: drive0
                destination: \(destination)
        """
    }

    @Test(.timeLimit(.minutes(3)))
    func ofTwoConcurrentSubmitsForOneDestinationExactlyOneWins() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-claims")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        // The database exists before the race (both would otherwise create it).
        #expect(try await livecopy.run(["recover"]).status == 0)
        let rounds = 8
        for round in 0..<rounds {
            let destination = scratch.appending("dst-\(round).qcow2")
            let paths = try ["a", "b"].map { vm -> String in
                let path = scratch.appending("plan-\(round)-\(vm).yaml")
                try Self.plan(vm: "\(vm)\(round)", destination: destination).write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            let running = try paths.map { try livecopy.start(["submit", "--detach", $0]) }
            var results: [LivecopyProcess.Result] = []
            for process in running { results.append(try await process.wait(timeout: 120)) }
            let statuses = results.map(\.status).sorted()
            #expect(statuses == [0, 2], "round \(round): \(results.map { "\($0.status): \($0.stderr)" })")
            let refusal = try #require(results.first { $0.status == 2 }?.stderr.trimmingCharacters(in: .newlines))
            #expect(!refusal.contains("\n"), "one line: \(refusal)")
            #expect(refusal.hasPrefix("livecopy: error: VM '"), "\(refusal)")
            #expect(refusal.contains("destination \(destination) is claimed by plan"), "\(refusal)")
        }
        let history = try await livecopy.run(["history", "--json"])
        let plans = try JSONDecoder().decode([PlanDocument].self, from: Data(history.stdout.utf8))
        #expect(plans.count == rounds, "one plan recorded a round: \(plans.map(\.state))")
        #expect(plans.allSatisfy { $0.state == "pending" })
    }
}
