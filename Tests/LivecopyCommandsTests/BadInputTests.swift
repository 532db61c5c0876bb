import Foundation
import LivecopyModel
import QMP
import TestSupport
import Testing

/// Bad input gets a one-line error and a non-zero exit, and nothing is touched: no
/// destination file, no plan left pending or running.
struct BadInputTests {
    /// The queries preflight may send (the first two at connect): none changes anything.
    static let readOnlyCommands: Set<String> = [
        "qmp_capabilities", "query-version", "query-commands", "query-block", "query-migrate", "query-jobs",
    ]

    /// A fake VM whose `query-block` shows one qcow2 disk `drive0` on `source`, with no job
    /// and no migration: what preflight asks, and nothing else.
    static func fakeVM(source: String) async throws -> FakeQMPPeer {
        let image: JSONValue = ["filename": .string(source), "format": "qcow2", "virtual-size": 1_048_576]
        let devices: JSONValue = [[
            "device": "drive0", "qdev": "",
            "inserted": ["file": .string(source), "node-name": "#block100", "drv": "qcow2", "image": image],
        ]]
        return try await FakeQMPPeer.start { name, _, _ in
            switch name {
            case "query-block": return .return(devices)
            case "query-jobs": return .return([])
            case "query-migrate": return .return([:])
            default: return nil
            }
        }
    }

    static func plan(socket: String, device: String = "drive0", destination: String, extra: String = "") -> String {
        """
        \(extra)vms:
          - name: vm1
            qmp: \(socket)
            disks:
              - device: \(device)
                destination: \(destination)
        """
    }

    /// Runs `livecopy ARGS`, expects exit `status` and one stderr line containing `fragment`.
    static func expectRefusal(_ livecopy: LivecopyProcess, _ arguments: [String], status: Int32 = 2,
                              _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let result = try await livecopy.run(arguments)
        #expect(result.status == status, "exit \(result.status): \(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "one line, got: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(fragment), "\(result.stderr)", sourceLocation: sourceLocation)
        #expect(!result.stderr.contains("Fatal error"), sourceLocation: sourceLocation)
    }

    /// No plan of the database is pending or running (or there is no database at all:
    /// bad input creates none).
    static func expectNothingInProgress(_ livecopy: LivecopyProcess, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        guard FileManager.default.fileExists(atPath: livecopy.database) else { return }
        let status = try await livecopy.run(["status", "--json"])
        let plans = try JSONDecoder().decode([PlanDocument].self, from: Data(status.stdout.utf8))
        #expect(plans.isEmpty, "plans in progress: \(plans.map(\.state))", sourceLocation: sourceLocation)
    }

    @Test func badPlanFilesAreRefusedInOneLine() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-bad")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let planPath = scratch.appending("plan.yaml")

        try await Self.expectRefusal(livecopy, ["submit", scratch.appending("missing.yaml")], "does not exist")
        try "".write(toFile: planPath, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(livecopy, ["submit", planPath], "empty")
        try "vms: [\n".write(toFile: planPath, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(livecopy, ["submit", planPath], "not valid YAML")
        try Self.plan(socket: "/s", destination: "/d.qcow2", extra: "colour: blue\n")
            .write(toFile: planPath, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(livecopy, ["submit", planPath], "unknown key 'colour'")
        try Self.plan(socket: "/s", destination: "relative.qcow2").write(toFile: planPath, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(livecopy, ["submit", planPath], "must be an absolute path")
        try Self.plan(socket: "/s", destination: "/d.qcow2", extra: "policy: turbo\n")
            .write(toFile: planPath, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(livecopy, ["submit", planPath], "unknown policy 'turbo'")
        try "speed: warp\n".write(toFile: scratch.appending("p.yaml"), atomically: true, encoding: .utf8)
        try Self.plan(socket: "/s", destination: "/d.qcow2", extra: "policy: ./p.yaml\n")
            .write(toFile: planPath, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(livecopy, ["submit", planPath], "'speed' has invalid value 'warp'")

        try await Self.expectNothingInProgress(livecopy)
        #expect(!FileManager.default.fileExists(atPath: livecopy.database), "no plan was recorded: not even a database was made")
    }

    /// A database, a fake VM whose drive0 is on `src.qcow2`, and where the plan goes.
    static func refusalRig(_ scratch: TemporaryDirectory) async throws
        -> (livecopy: LivecopyProcess, source: String, vm: FakeQMPPeer, planPath: String)
    {
        let source = scratch.appending("src.qcow2")
        return (LivecopyProcess(database: scratch.appending("livecopy.db")), source, try await fakeVM(source: source),
                scratch.appending("plan.yaml"))
    }

    @Test func preflightRefusalsTouchNothing() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-pre")
        defer { scratch.remove() }
        let (livecopy, source, vm, planPath) = try await Self.refusalRig(scratch)
        defer { vm.stop() }
        func submit(_ text: String, _ fragment: String) async throws {
            try text.write(toFile: planPath, atomically: true, encoding: .utf8)
            try await Self.expectRefusal(livecopy, ["submit", planPath], fragment)
        }

        try await submit(Self.plan(socket: scratch.appending("nosuch.qmp"), destination: scratch.appending("d.qcow2")),
                         "no such file")
        try await submit(Self.plan(socket: planPath, destination: scratch.appending("d.qcow2")), "not a socket")
        try await submit(Self.plan(socket: vm.socketPath, device: "drive9", destination: scratch.appending("d.qcow2")),
                         "disk 'drive9': no such device")
        let existing = scratch.appending("existing.qcow2")
        try "precious".write(toFile: existing, atomically: true, encoding: .utf8)
        try await submit(Self.plan(socket: vm.socketPath, destination: existing), "already exists")
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "precious")
        let link = scratch.appending("link.qcow2")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: scratch.appending("nowhere"))
        try await submit(Self.plan(socket: vm.socketPath, destination: link), "is a symlink")
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("nowhere")))
        try await submit(Self.plan(socket: vm.socketPath, destination: scratch.appending("no/dir/d.qcow2")),
                         "does not exist")
        try await submit(Self.plan(socket: vm.socketPath, destination: source), "source chain")

        // The VM saw queries only, never a command that changes anything.
        let sent = Set(vm.receivedCommandNames)
        #expect(sent.isSubset(of: Self.readOnlyCommands), "\(sent)")
        try await Self.expectNothingInProgress(livecopy)
        let refused = try await livecopy.run(["history", "--state", "refused", "--json"])
        let plans = try JSONDecoder().decode([PlanDocument].self, from: Data(refused.stdout.utf8))
        #expect(plans.count == 7)
        #expect(plans.allSatisfy { $0.error != nil })
    }

    @Test func moreRefusalsTouchNothing() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-pre2")
        defer { scratch.remove() }
        let (livecopy, _, vm, planPath) = try await Self.refusalRig(scratch)
        defer { vm.stop() }
        func submit(_ text: String, _ fragment: String) async throws {
            try text.write(toFile: planPath, atomically: true, encoding: .utf8)
            try await Self.expectRefusal(livecopy, ["submit", planPath], fragment)
        }

        // A plan "file" that is a directory.
        try await Self.expectRefusal(livecopy, ["submit", scratch.path], "is a directory")
        // A socket that answers, but not with QMP.
        let stranger = try await FakeQMPPeer.start(greeting: .raw("SSH-2.0-OpenSSH_9.2\r\n"))
        defer { stranger.stop() }
        try await submit(Self.plan(socket: stranger.socketPath, destination: scratch.appending("d.qcow2")), "does not speak QMP")
        // A destination directory livecopy cannot write to (immutable: root writes anywhere else).
        let locked = scratch.appending("locked")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: true)
        if (try? QEMUTools.run("chattr", ["+i", locked]))?.status == 0 {
            defer { _ = try? QEMUTools.run("chattr", ["-i", locked]) }
            try await submit(Self.plan(socket: vm.socketPath, destination: locked + "/d.qcow2"), "is not writable")
        } else {
            print("BadInputTests.moreRefusalsTouchNothing: chattr +i unavailable here; the unwritable-directory case was not run")
        }

        // A plan still in progress (recorded, not yet run) claims a destination and a disk.
        let claimed = scratch.appending("claimed.qcow2")
        try Self.plan(socket: vm.socketPath, destination: claimed).write(toFile: planPath, atomically: true, encoding: .utf8)
        let first = try await livecopy.run(["submit", "--detach", "--json", planPath])
        #expect(first.status == 0, "\(first.stderr)")
        let pending = try JSONDecoder().decode(PlanDocument.self, from: Data(first.stdout.utf8))
        let other = """
            vms:
              - name: vm2
                qmp: \(vm.socketPath)
                disks:
                  - device: drive7
                    destination: \(claimed)
            """
        try await submit(other, "destination \(claimed) is claimed by plan \(pending.id) (pending)")
        try await submit(Self.plan(socket: vm.socketPath, destination: scratch.appending("elsewhere.qcow2")),
                         "is already being copied by plan \(pending.id)")
        let cancel = try await livecopy.run(["cancel", String(pending.id)])
        #expect(cancel.status == 0, "\(cancel.stderr)")

        for name in ["d.qcow2", "claimed.qcow2", "elsewhere.qcow2", "locked/d.qcow2"] {
            #expect(!FileManager.default.fileExists(atPath: scratch.appending(name)), "\(name) was created")
        }
        #expect(Set(vm.receivedCommandNames).isSubset(of: Self.readOnlyCommands))
        try await Self.expectNothingInProgress(livecopy)
    }

    @Test func badCommandArgumentsAndDatabases() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-args")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        _ = FileManager.default.createFile(atPath: livecopy.database, contents: Data())  // an empty database
        try await Self.expectRefusal(livecopy, ["show", "999"], "no plan with id 999")
        let badState = try await livecopy.run(["history", "--state", "bogus"])
        #expect(badState.status != 0)
        #expect(badState.stderr.contains("unknown state 'bogus'"))

        let junk = scratch.appending("junk.db")
        try String(repeating: "not sqlite\n", count: 500).write(toFile: junk, atomically: true, encoding: .utf8)
        try await Self.expectRefusal(LivecopyProcess(database: junk), ["history"], "not an SQLite database")
        try await Self.expectRefusal(LivecopyProcess(database: "/proc/livecopy/x.db"), ["recover"], "cannot create database directory")

        // A mistyped database path: the commands that only read (and those that act on a
        // recorded plan) say there is none, and create nothing.
        let mistyped = scratch.appending("typo/livecopy.db")
        for arguments in [["history"], ["status"], ["show", "1"], ["cancel", "1"], ["pause", "1"]] {
            try await Self.expectRefusal(LivecopyProcess(database: mistyped), arguments, "no database at \(mistyped) (from --db)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.appending("typo")), "nothing was created")
    }
}
