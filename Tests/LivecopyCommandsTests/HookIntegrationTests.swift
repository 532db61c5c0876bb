import Foundation
import GRDB
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hooks end to end against real QEMU (docs/hooks.md): `on_switch` rewrites the VM's
/// command-line file and the VM, restarted from it, runs on the destination with every
/// guest write; a crash while a hook runs is followed by `recover` running it again; a
/// failing `on_switch` rolls the disk back or is only recorded; a hook that outlives its
/// timeout is killed with what it started; a program others could replace is refused.
@Suite(.serialized, .requires(.qemu, .python3))
struct HookIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig

    /// A VM started, as its manager does, from a shell script that `exec`s QEMU: the
    /// command-line file the hook rewrites.
    struct ManagedVM {
        let script: String

        /// Stops the rig's VM and starts it again from a new script naming its source.
        static func adopt(_ rig: Rig) async throws -> ManagedVM {
            let script = rig.scratch.appending("vm.sh")
            let line = try QEMUVirtualMachine.commandLine(name: "vm", directory: rig.scratch.url,
                                                          drives: [(id: "drive0", image: rig.source, format: "qcow2")])
            try "# started by the test's VM manager\nexec \(line)\n".write(toFile: script, atomically: true, encoding: .utf8)
            let managed = ManagedVM(script: script)
            try await managed.restart(rig)
            return managed
        }

        /// Stops the rig's VM (if running) and starts it from the script as it is now.
        func restart(_ rig: Rig) async throws {
            await rig.vm.stop()
            rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [], launchScript: script)
        }

        var text: String { (try? String(contentsOfFile: script, encoding: .utf8)) ?? "" }
    }

    /// A policy with `hooks:` (each a YAML flow list) and `extra` keys.
    static func policy(hooks: [String: [String]], hookSettings: String = "", extra: String) -> String {
        var text = "progress_interval: 200ms\nretire_source: rename\n" + extra + "hooks:\n"
        for (name, argv) in hooks.sorted(by: { $0.key < $1.key }) {
            text += "  \(name): [\(argv.map { "\"\($0)\"" }.joined(separator: ", "))]\n"
        }
        return text + hookSettings
    }

    /// The hook events of the plan's disk: (kind, detail).
    static func hookEvents(_ rig: Rig, _ hook: String) throws -> [(kind: EventKind, detail: String)] {
        try rig.store().events(ofPlan: rig.planId()).filter { $0.detail.hasPrefix("hook:\(hook):") }.map { ($0.kind, $0.detail) }
    }

    /// Waits until `condition` holds (a watchdog of `timeout` seconds catches a hang).
    static func wait(_ what: String, timeout: Double = 120, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !(try condition()) {
            guard Date() < deadline else { throw WaitTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: - on_switch tells the VM's manager, and the VM restarts on the destination

    @Test(.timeLimit(.minutes(4)), arguments: [("stream", "qcow2"), ("mirror", "raw")])
    func onSwitchRewritesTheCommandLineAndTheRestartedVMRunsOnTheDestination(strategy: String, format: String) async throws {
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let switcher = try hooks.installContrib("vm-config-switch")
        let rig = try Rig("lc-hook-\(strategy)", dataMiB: 16, policy: "", format: format == "qcow2" ? nil : format)
        defer { rig.scratch.remove() }
        let managed = try await ManagedVM.adopt(rig)
        let rewrite = [switcher, "--format", "qemu-cmdline", managed.script]
        try Self.policy(hooks: ["on_switch": rewrite, "on_complete": rewrite],
                        extra: "strategy: \(strategy)\nspeed: 4M\n").write(toFile: rig.scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)

        try await rig.write(slot: 0)  // before the copy
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        try await Self.wait("on_switch rewrote \(managed.script)") { managed.text.contains(rig.destination) }
        #expect(!managed.text.contains(rig.source), "the source is no longer named:\n\(managed.text)")
        try await rig.write(slot: 1)  // after the switch (during the stream, or right after the pivot)
        let result = try await submit.wait()
        #expect(result.status == 0, "submit: \(result.status)\n\(result.stderr)")
        try await rig.write(slot: 2)  // after the copy

        // The manager restarts the VM from its file: it comes up on the destination.
        try await managed.restart(rig)
        let active = try await rig.activeImage()
        #expect(active.file == rig.destination && active.backing == nil, "restarted on \(active)")
        try await rig.write(slot: 3)  // the restarted VM writes into the destination
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("\(strategy) restarted from \(managed.script)")
        #expect(managed.text.contains("format=\(format)"), "the drive's format follows the destination:\n\(managed.text)")

        let switched = try Self.hookEvents(rig, "on_switch")
        #expect(switched.map(\.kind) == [.intent, .outcome], "\(switched)")
        #expect(switched.last?.detail.contains("succeeded: exit 0") == true && switched.last?.detail.contains("vm-config-switch:") == true,
                "the outcome records the exit status and the output: \(switched)")
        let completed = try Self.hookEvents(rig, "on_complete")
        #expect(completed.last?.detail.contains("already names \(rig.destination)") == true, "on_complete found nothing to do: \(completed)")
        #expect(try rig.store().disks(ofPlan: rig.planId()).allSatisfy { $0.pendingHook == nil })
    }

    // MARK: - A crash while the hook runs

    /// With `hostReboot`, QEMU dies too and `recover` runs with the VM down: the hook runs
    /// all the same (the manager must know before anyone starts the VM), then the VM is
    /// started from the file the hook rewrote and a second `recover` finishes the copy.
    @Test(.timeLimit(.minutes(4)), arguments: [false, true])
    func aCrashWhileTheHookRunsIsFollowedByRecoverRunningItAgain(hostReboot: Bool) async throws {
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let switcher = try hooks.installContrib("vm-config-switch")
        // The first run rewrites the file, then kills livecopy before its outcome is recorded.
        let dying = try hooks.install("switch-then-crash", contents: """
            #!/bin/sh
            "\(switcher)" "$@" || exit $?
            if [ "$LIVECOPY_HOOK_ATTEMPT" = 1 ]; then kill -9 "$PPID"; sleep 2; fi
            exit 0
            """)
        let rig = try Rig("lc-hook-crash", dataMiB: 16, policy: "")
        defer { rig.scratch.remove() }
        let managed = try await ManagedVM.adopt(rig)
        try Self.policy(hooks: ["on_switch": [dying, "--format", "qemu-cmdline", managed.script]], extra: "speed: 8M\n")
            .write(toFile: rig.scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)

        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status == 128 + SIGKILL || submit.status == SIGKILL, "livecopy was killed by its hook: \(submit.status)\n\(submit.stderr)")
        let afterCrash = try rig.store().disks(ofPlan: rig.planId())
        #expect(afterCrash.map(\.pendingHook) == [.onSwitch], "the hook's run is still pending: \(afterCrash)")
        #expect(try Self.hookEvents(rig, "on_switch").map(\.kind) == [.intent])
        try await rig.write(slot: 1)  // the VM writes into the destination meanwhile
        if hostReboot {
            rig.vm.kill()
            let down = try await rig.livecopy.run(["recover"])
            #expect(down.status != 0, "the VM is down: the plan cannot finish yet\n\(down.stderr)")
            let events = try Self.hookEvents(rig, "on_switch")
            #expect(events.map(\.kind) == [.intent, .intent, .outcome], "recover ran the hook with the VM down: \(events)")
            #expect(try rig.store().disks(ofPlan: rig.planId()).first?.pendingHook == nil)
            try await managed.restart(rig)  // the manager starts it from the rewritten file
            let active = try await rig.activeImage()
            #expect(active.file == rig.destination, "the VM came back on the destination: \(active)")
        }

        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "recover: \(recover.status)\n\(recover.stderr)")
        if !hostReboot {
            #expect((recover.stdout + recover.stderr).contains("recorded streaming (hook on_switch to run again)"),
                    "recover's report names the pending hook:\n\(recover.stdout)\(recover.stderr)")
        }
        let events = try Self.hookEvents(rig, "on_switch")
        #expect(events.map(\.kind) == [.intent, .intent, .outcome], "recover ran the hook again, once: \(events)")
        #expect(events[1].detail.contains("attempt 2") && events[2].detail.contains("succeeded: exit 0"), "\(events)")
        #expect(try rig.store().plan(id: rig.planId())?.state == .completed)

        try await rig.write(slot: 2)
        try await managed.restart(rig)
        let active = try await rig.activeImage()
        #expect(active.file == rig.destination && active.backing == nil, "restarted on \(active)")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("after the crash in the hook and recover")
    }

    // MARK: - needs_attention and on_complete, through an inventory

    @Test(.timeLimit(.minutes(4)))
    func theInventoryFollowsTheDiskThroughASplitBrainToCompletion() async throws {
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let inventory = try hooks.installContrib("inventory-update")
        let rig = try Rig("lc-hook-inventory", dataMiB: 16, policy: "")
        defer { rig.scratch.remove() }
        let database = rig.scratch.appending("inventory.sqlite")
        let update = [inventory, "--sqlite", database]
        try Self.policy(hooks: ["on_switch": update, "on_needs_attention": update, "on_complete": update], extra: "speed: 4M\n")
            .write(toFile: rig.scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        func recorded() throws -> [String?] {
            try DatabaseQueue(path: database).read { db in
                let row = try Row.fetchOne(db, sql: "SELECT image, state, hook FROM disks WHERE vm = 'vm' AND device = 'drive0'")
                return ["image", "state", "hook"].map { row?[$0] as String? }
            }
        }

        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        try await rig.waitForStreamJob(status: ["running"])
        #expect(try recorded() == [rig.destination, "streaming", "on_switch"])
        try await rig.write(slot: 1)
        kill(submit.process.processIdentifier, SIGKILL)
        rig.vm.kill()
        _ = try await submit.wait(timeout: 60)
        // The wrong restart, on the source: livecopy touches nothing and asks for attention.
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.source, format: "qcow2")])
        let refused = try await rig.livecopy.run(["recover"])
        #expect(refused.status != 0)
        #expect(try recorded() == [rig.destination, "needs_attention", "on_needs_attention"],
                "the inventory keeps the image that holds the newest writes")

        await rig.vm.stop()
        rig.vm = try QEMUVirtualMachine(name: "vm", directory: rig.scratch.url, drives: [(id: "drive0", image: rig.destination, format: "qcow2")])
        let recover = try await rig.livecopy.run(["recover"])
        #expect(recover.status == 0, "\(recover.stderr)")
        #expect(try recorded() == [rig.destination, "completed", "on_complete"])
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("after the split brain")
    }

    // MARK: - A failing on_switch

    @Test(.timeLimit(.minutes(4)), arguments: ["stream", "mirror"])
    func aFailingOnSwitchRollsTheDiskBackOntoItsSource(strategy: String) async throws {
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let failing = try hooks.install("failing-switch", contents: """
            #!/bin/sh
            for i in 1 2 3 4 5 6 7; do echo "line $i of $LIVECOPY_DEVICE"; done
            echo "cannot reach the inventory" >&2
            exit 3
            """)
        let inventory = try hooks.installContrib("inventory-update")
        let rig = try Rig("lc-hook-fail-\(strategy)", dataMiB: 16, policy: "")
        defer { rig.scratch.remove() }
        let json = rig.scratch.appending("inventory.json")
        try Self.policy(hooks: ["on_switch": [failing], "on_rollback": [inventory, "--json", json]],
                        extra: "strategy: \(strategy)\nspeed: 8M\n")
            .write(toFile: rig.scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)

        try await rig.write(slot: 0)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status == 1, "the plan did not complete: \(submit.status)\n\(submit.stderr)")
        let disk = try #require(try rig.store().disks(ofPlan: rig.planId()).first)
        #expect(disk.state == .rolledBack && disk.pendingHook == nil, "\(disk)")
        let outcome = try Self.hookEvents(rig, "on_switch").last?.detail ?? ""
        #expect(outcome.contains("failed: exit 3") && outcome.contains("output (8 lines): line 1 of drive0 | line 2 of drive0 | line 3 of drive0 | … |")
                && outcome.hasSuffix("line 7 of drive0 | cannot reach the inventory"), "first and last lines recorded: \(outcome)")
        let active = try await rig.activeImage()
        #expect(active.file == rig.source, "the VM is back on its source: \(active)")
        try await rig.write(slot: 1)
        await rig.vm.stop()
        try rig.expectSourceHoldsEverything("rolled back after on_switch failed")
        #expect(!FileManager.default.fileExists(atPath: rig.destination), "the destination livecopy made is gone")
        let recorded = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
        let entry = ((recorded?["vms"] as? [String: Any])?["vm"] as? [String: Any]).flatMap { ($0["disks"] as? [String: Any])?["drive0"] } as? [String: Any]
        #expect(entry?["image"] as? String == rig.source && entry?["state"] as? String == "rolled_back",
                "on_rollback told the inventory: \(String(describing: recorded))")
    }

    @Test(.timeLimit(.minutes(4)))
    func aHookPastItsTimeoutIsKilledWithWhatItStartedAndOnlyRecorded() async throws {
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let pids = try TemporaryDirectory(prefix: "lc-hook-pids")
        defer { pids.remove() }
        let hanging = try hooks.install("hanging", contents: """
            #!/bin/sh
            sleep 300 &
            echo $! > "\(pids.appending("child"))"
            echo $$ > "\(pids.appending("hook"))"
            echo "waiting for a lock that never comes"
            sleep 300
            """)
        let rig = try Rig("lc-hook-timeout", dataMiB: 8, policy: "")
        defer { rig.scratch.remove() }
        try Self.policy(hooks: [:], hookSettings: "  on_switch_failure: record\n  on_switch:\n    command: [\"\(hanging)\"]\n    timeout: 1s\n",
                        extra: "")
            .write(toFile: rig.scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
        let submit = try await rig.livecopy.run(["submit", rig.planPath])
        #expect(submit.status == 0, "a failed hook is only recorded: \(submit.status)\n\(submit.stderr)")
        let outcome = try Self.hookEvents(rig, "on_switch").last?.detail ?? ""
        #expect(outcome.contains("failed: timed out after 1.0 s") && outcome.contains("waiting for a lock that never comes"), "\(outcome)")
        let notes = try rig.store().events(ofPlan: rig.planId()).filter { $0.kind == .note }.map(\.detail)
        #expect(notes.contains { $0.hasPrefix("warning: hook on_switch failed") }, "\(notes)")
        for name in ["hook", "child"] {
            let pid = try #require(Int32(String(contentsOfFile: pids.appending(name), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            try await Self.wait("the hook's \(name) (pid \(pid)) is gone", timeout: 30) { !Self.isAlive(pid) }
        }
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("completed despite the hook")
    }

    /// Whether `pid` runs (a zombie, which only its parent can reap, counts as gone).
    static func isAlive(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        let state = stat.split(separator: ")").last?.split(separator: " ").first
        return state != "Z"
    }

    // MARK: - Programs livecopy refuses to run

    @Test(.timeLimit(.minutes(2)))
    func preflightRefusesAHookProgramOthersCouldReplace() async throws {
        let rig = try Rig("lc-hook-unsafe", dataMiB: 8, policy: "")
        defer { rig.scratch.remove() }
        let unsafe = rig.scratch.appending("hook.sh")  // under /tmp, which everyone may write to
        try "#!/bin/sh\nexit 0\n".write(toFile: unsafe, atomically: true, encoding: .utf8)
        _ = chmod(unsafe, 0o755)
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let groupWritable = try hooks.install("group-writable", contents: "#!/bin/sh\nexit 0\n", mode: 0o775)
        let cases: [(argv: String, expected: String)] = [
            (unsafe, "is writable by others"),
            (groupWritable, "program \(groupWritable) is writable by its group"),
            ("bin/hook", "is a relative path"),
            ("no-such-hook-program", "was not found in"),
        ]
        for (argv, expected) in cases {
            try Self.policy(hooks: ["on_complete": [argv]], extra: "")
                .write(toFile: rig.scratch.appending("policy.yaml"), atomically: true, encoding: .utf8)
            let submit = try await rig.livecopy.run(["submit", rig.planPath])
            let lines = submit.stderr.split(whereSeparator: \.isNewline)
            #expect(submit.status == 2 && lines.count == 1 && lines[0].contains("hooks.on_complete: ") && lines[0].contains(expected),
                    "\(argv): \(submit.status)\n\(submit.stderr)")
            #expect(!FileManager.default.fileExists(atPath: rig.destination), "nothing was touched")
            let validate = try await rig.livecopy.run(["validate", rig.planPath])
            #expect(validate.status == 2 && validate.stderr.contains("livecopy: refused: hooks.on_complete: ") && validate.stderr.contains(expected),
                    "validate names the same problem: \(validate.status)\n\(validate.stderr)")
        }
        let active = try await rig.activeImage()
        #expect(active.file == rig.source)
    }
}
