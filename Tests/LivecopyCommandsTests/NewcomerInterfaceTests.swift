import Foundation
import LivecopyCommands
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

/// What tripped up a new user (issue 11), each fixed and checked: `--db` before the
/// subcommand, read-only commands never creating a database, refused plans hidden from
/// `history` by default, column headers, `status --json` with nothing to show, a running
/// plan whose owner is gone, and Ctrl-C naming the plan.
@Suite(.serialized)
struct NewcomerInterfaceTests {
    @Test func dbIsAcceptedBeforeTheSubcommand() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-dbfirst")
        defer { scratch.remove() }
        let database = scratch.appending("livecopy.db")
        _ = FileManager.default.createFile(atPath: database, contents: Data())
        #expect(await LivecopyCommand.execute(["--db", database, "history"]) == 0)
        #expect(await LivecopyCommand.execute(["--db=\(database)", "--log-level", "error", "status"]) == 0)
        let typo = scratch.appending("typo.db")
        #expect(await LivecopyCommand.execute(["--db", typo, "status"]) == 2)
        #expect(!FileManager.default.fileExists(atPath: typo), "a read-only command created no database")
    }

    @Test func refusedPlansAreKeptButListedOnlyWhenAskedFor() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-refused")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let plan = scratch.appending("plan.yaml")
        try BadInputTests.plan(socket: scratch.appending("no-vm.qmp"), destination: scratch.appending("d.qcow2"))
            .write(toFile: plan, atomically: true, encoding: .utf8)
        let submit = try await livecopy.run(["submit", plan])
        #expect(submit.status == 2, "\(submit.stderr)")

        let history = try await livecopy.run(["history"])
        #expect(history.status == 0)
        #expect(history.stdout == "no plans (plans refused at submission are listed with --all)\n", "\(history.stdout)")
        for arguments in [["history", "--all"], ["history", "--state", "refused"]] {
            let listed = try await livecopy.run(arguments)
            let lines = listed.stdout.split(separator: "\n")
            #expect(lines.count == 3, "\(arguments): \(listed.stdout)")
            #expect(lines.first?.hasPrefix("ID     STATE            DONE") == true, "a header: \(listed.stdout)")
            #expect(lines.dropFirst().first?.contains("refused") == true, "\(listed.stdout)")
            #expect(lines.last == "in all: 1 plan, 1 disk (0 completed), 0 B copied, mean rate unknown (no timed copy)",
                    "a summary line: \(listed.stdout)")
        }
        // A refused plan touched nothing: its VM boots as it did, and recover has nothing to do.
        let shown = try await livecopy.run(["show", "1"])
        #expect(shown.stdout.contains("boot from: unchanged (the plan was refused; nothing was done)"), "\(shown.stdout)")
        #expect(!shown.stdout.contains("run livecopy recover"), "\(shown.stdout)")

        let json = try await livecopy.run(["status", "--json"])
        #expect(json.stdout == "[]\n", "nothing in progress: \(json.stdout)")
        #expect(try await livecopy.run(["status"]).stdout == "no plan in progress\n")
    }

    @Test func statusSaysWhenARunningPlansOwnerIsGone() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-orphan")
        defer { scratch.remove() }
        let database = scratch.appending("livecopy.db")
        let store = try SQLiteStore(path: database)
        func runningPlan(_ name: String) throws -> Int64 {
            let new = NewPlan(name: name, policyReference: nil, policy: try Policy.resolve(nil), state: .running, disks: [
                NewPlan.Disk(vmName: "vm", vmAddress: scratch.appending("\(name).qmp"), device: "drive0",
                             destination: scratch.appending("\(name).qcow2"), source: "/s/\(name).qcow2", sourceFormat: "qcow2",
                             qmpDevice: "drive0"),
            ])
            return try store.insertPlan(new, at: Date()).0.id
        }
        let abandoned = try runningPlan("abandoned")
        let gone = PlanOwner(pid: 4242, host: "another-host boot 1234", heartbeat: Date(timeIntervalSinceNow: -3600))
        _ = try await store.acquireLease(planId: abandoned, owner: gone) { _ in true }
        let ownerless = try runningPlan("ownerless")

        let status = try await LivecopyProcess(database: database).run(["status"])
        #expect(status.status == 0, "\(status.stderr)")
        let lines = status.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.contains("NOT RUNNING: its owner (pid 4242 on another-host boot 1234, last heartbeat ")
            && $0.hasSuffix(") is gone; the progress below is as last recorded; livecopy recover --plan \(abandoned) picks the plan up") },
                "\(status.stdout)")
        #expect(lines.contains("  NOT RUNNING: no process owns it; the progress below is as last recorded; livecopy recover --plan \(ownerless) picks the plan up"),
                "\(status.stdout)")
        #expect(lines.filter { $0.hasPrefix("  VM/DEVICE") }.count == 2, "a disk header per plan: \(status.stdout)")
    }

    @Test(.requires(.qemu), .timeLimit(.minutes(3)))
    func ctrlCNamesThePlan() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-ctrlc")
        defer { scratch.remove() }
        // Throttled, so the copy is still streaming when interrupted.
        let disk = try SecurityTests.oneDisk(scratch, policy: "retire_source: keep\nspeed: 64k\n")
        defer { Task { await disk.vm.stop() } }
        let running = try disk.livecopy.start(["submit", disk.planPath])
        let store = try SQLiteStore(path: disk.livecopy.database)
        for _ in 0..<6000 {
            if let plan = try store.plans(states: nil, vm: nil, limit: 1).first,
               try store.disks(ofPlan: plan.id).first?.state == .streaming { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let plan = try #require(try store.plans(states: nil, vm: nil, limit: 1).first)
        #expect(try store.disks(ofPlan: plan.id).first?.state == .streaming)
        kill(running.process.processIdentifier, SIGINT)
        let result = try await running.wait()
        #expect(result.status == 128 + SIGINT)
        #expect(result.stderr.contains(
            "livecopy: interrupted; QEMU's jobs carry on and plan \(plan.id) is kept: livecopy recover --plan \(plan.id) resumes it, livecopy cancel \(plan.id) rolls it back"),
                "\(result.stderr)")
        #expect(!result.stderr.contains("cancel ID"))
    }
}
