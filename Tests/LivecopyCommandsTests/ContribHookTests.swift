import Foundation
import GRDB
@testable import LivecopyEngine
import TestSupport
import Testing

/// The two hooks of contrib/hooks, run as livecopy runs a hook (`HookRunner`: the minimal
/// environment, the JSON document on stdin), on the files their docs describe; and what
/// `HookRunner` gives a hook.
@Suite(.requires(.python3))
struct ContribHookTests {
    static let source = "/srv/old/web01 root.qcow2"
    static let destination = "/srv/new/web01-root.raw"

    /// What livecopy tells a hook about disk drive0 of VM web01 at `hook`.
    static func facts(_ hook: String, state: String, boot: String?, bootFormat: String?) -> (env: [String: String], json: Data) {
        let document: [String: Any] = [
            "hook": hook, "attempt": 1, "plan": ["id": 7, "name": "evacuate"],
            "disk": ["id": 3, "vm": "web01", "vm_address": "/run/web01.qmp", "device": "drive0", "source": source,
                     "source_format": "qcow2", "destination": destination, "destination_format": "raw", "strategy": "mirror",
                     "state": state, "error": NSNull()],
            "boot_image": boot ?? NSNull(), "boot_format": bootFormat ?? NSNull(),
        ]
        let env = [
            "LIVECOPY_HOOK": hook, "LIVECOPY_SOURCE": source, "LIVECOPY_DESTINATION": destination,
            "LIVECOPY_DEVICE": "drive0", "LIVECOPY_BOOT_IMAGE": boot ?? "", "LIVECOPY_BOOT_FORMAT": bootFormat ?? "",
        ]
        return (env, try! JSONSerialization.data(withJSONObject: document))
    }

    static func run(_ program: String, _ arguments: [String], hook: String, state: String, boot: String?,
                    bootFormat: String?) async throws -> HookResult {
        let facts = Self.facts(hook, state: state, boot: boot, bootFormat: bootFormat)
        return try await HookRunner.run(program: (HookDirectory.contrib as NSString).appendingPathComponent(program),
                                        arguments: arguments, environment: facts.env, input: facts.json, timeout: 60)
    }

    // MARK: - vm-config-switch

    @Test func keyValueConfigFollowsTheSwitchAndTheRollbackAndIsLeftAloneWhenItAlreadyNamesTheImage() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-contrib-kv")
        defer { scratch.remove() }
        let config = scratch.appending("101.conf")
        let original = """
            # web01, managed by hand
            name: web01
            virtio0: \(Self.source),format=qcow2,size=64M
            virtio1 = "/srv/old/data.qcow2,size=1G"
            description: moved from \(Self.source) once
            """ + "\n"
        try original.write(toFile: config, atomically: true, encoding: .utf8)
        _ = chmod(config, 0o640)

        let switched = try await Self.run("vm-config-switch", ["--format", "key-value", config], hook: "on_switch",
                                          state: "mirroring", boot: Self.destination, bootFormat: "raw")
        #expect(switched.succeeded, "\(switched)")
        let after = try String(contentsOfFile: config, encoding: .utf8)
        #expect(after == original.replacingOccurrences(of: "virtio0: \(Self.source),format=qcow2", with: "virtio0: \(Self.destination),format=raw"),
                "only the image's own entry changed:\n\(after)")
        var info = stat()
        #expect(stat(config, &info) == 0 && info.st_mode & 0o777 == 0o640, "the mode is kept")

        let again = try await Self.run("vm-config-switch", ["--format", "key-value", config], hook: "on_complete",
                                       state: "completed", boot: Self.destination, bootFormat: "raw")
        #expect(again.succeeded && again.firstLines.first?.contains("nothing to do") == true, "\(again)")
        #expect(try String(contentsOfFile: config, encoding: .utf8) == after, "idempotent")

        let back = try await Self.run("vm-config-switch", ["--format", "key-value", config], hook: "on_rollback",
                                      state: "rolled_back", boot: Self.source, bootFormat: "qcow2")
        #expect(back.succeeded, "\(back)")
        #expect(try String(contentsOfFile: config, encoding: .utf8) == original, "the rollback restores the source")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch.path)
        #expect(leftovers == ["101.conf"], "no temporary file is left: \(leftovers)")
    }

    @Test func aFileNamingNeitherImageFailsTheHookAndIsNotChanged() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-contrib-neither")
        defer { scratch.remove() }
        let file = scratch.appending("vm.sh")
        let text = "exec qemu-system-x86_64 -drive if=none,id=drive0,file=/srv/other.qcow2\n"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await Self.run("vm-config-switch", ["--format", "qemu-cmdline", file], hook: "on_switch",
                                        state: "streaming", boot: Self.destination, bootFormat: "raw")
        #expect(result.ending == .exited(1) && result.firstLines.joined().contains("names neither"), "\(result)")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == text)
        let needsAttention = try await Self.run("vm-config-switch", ["--format", "qemu-cmdline", file], hook: "on_needs_attention",
                                                state: "needs_attention", boot: nil, bootFormat: nil)
        #expect(needsAttention.succeeded && needsAttention.firstLines.joined().contains("left alone"), "\(needsAttention)")
    }

    @Test func aQuotedCommandLineKeepsEverythingElseByteForByte() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-contrib-cmdline")
        defer { scratch.remove() }
        let file = scratch.appending("vm.sh")
        let text = """
            #!/bin/sh
            # the drive's path holds a space and a comma (doubled, as QEMU wants it)
            exec qemu-system-x86_64 -name "web01" \\
              -drive 'if=none,id=drive0,format=qcow2,file=\(Self.source)' \\
              -drive if=none,id=drive1,format=raw,file=/srv/old/a,,b.raw \\
              -device virtio-blk-pci,drive=drive0
            """ + "\n"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await Self.run("vm-config-switch", ["--format", "qemu-cmdline", file], hook: "on_switch",
                                        state: "mirroring", boot: Self.destination, bootFormat: "raw")
        #expect(result.succeeded, "\(result)")
        let expected = text.replacingOccurrences(of: "'if=none,id=drive0,format=qcow2,file=\(Self.source)'",
                                                 with: "if=none,id=drive0,format=raw,file=\(Self.destination)")
        #expect(try String(contentsOfFile: file, encoding: .utf8) == expected)
    }

    // MARK: - inventory-update

    @Test func theInventoryRecordsWhereEachDiskBootsInSQLiteAndJSON() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-contrib-inventory")
        defer { scratch.remove() }
        let database = scratch.appending("inventory.sqlite")
        let json = scratch.appending("inventory.json")
        let steps: [(hook: String, state: String, boot: String?, format: String?)] = [
            ("on_switch", "mirroring", Self.destination, "raw"),
            ("on_switch", "mirroring", Self.destination, "raw"),  // run again after a crash: the same record
            ("on_needs_attention", "needs_attention", nil, nil),   // livecopy cannot tell: the image is kept
            ("on_complete", "completed", Self.destination, "raw"),
        ]
        for step in steps {
            for arguments in [["--sqlite", database], ["--json", json]] {
                let result = try await Self.run("inventory-update", arguments, hook: step.hook, state: step.state,
                                                boot: step.boot, bootFormat: step.format)
                #expect(result.succeeded, "\(step) \(arguments): \(result)")
            }
            let row = try DatabaseQueue(path: database).read { db in
                try Row.fetchAll(db, sql: "SELECT vm, device, image, format, state, plan, hook FROM disks")
            }
            #expect(row.count == 1, "\(row)")
            let recorded: [String?] = ["vm", "device", "image", "state", "hook"].map { row.first?[$0] as String? }
            #expect(recorded == ["web01", "drive0", Self.destination, step.state, step.hook], "\(step): \(row)")
            #expect(row.first?["plan"] as Int64? == 7)
            let document = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any]
            let entry = (((document?["vms"] as? [String: Any])?["web01"] as? [String: Any])?["disks"] as? [String: Any])?["drive0"] as? [String: Any]
            #expect(entry?["image"] as? String == Self.destination && entry?["format"] as? String == "raw"
                    && entry?["state"] as? String == step.state, "\(step): \(String(describing: document))")
        }
        let refused = try await Self.run("inventory-update", ["--sqlite", database, "--table", "disks; DROP TABLE disks"],
                                         hook: "on_complete", state: "completed", boot: Self.destination, bootFormat: "raw")
        #expect(refused.ending == .exited(2), "a table name that is not a plain SQL name is refused: \(refused)")
    }

    // MARK: - What a hook is given

    @Test func aHookGetsAMinimalEnvironmentItsFactsAndTheJSONOnStdin() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-hook-env")
        defer { scratch.remove() }
        let script = scratch.appending("show")
        try "#!/bin/sh\nenv > \"$1\"\ncat > \"$2\"\necho done\n".write(toFile: script, atomically: true, encoding: .utf8)
        _ = chmod(script, 0o755)
        setenv("LIVECOPY_TEST_SECRET", "not for hooks", 1)
        defer { unsetenv("LIVECOPY_TEST_SECRET") }
        let facts = Self.facts("on_complete", state: "completed", boot: Self.destination, bootFormat: "raw")
        let result = try await HookRunner.run(program: script, arguments: [scratch.appending("env"), scratch.appending("stdin")],
                                              environment: facts.env, input: facts.json, timeout: 60)
        #expect(result.succeeded && result.firstLines == ["done"] && result.lineCount == 1, "\(result)")
        let env = try String(contentsOfFile: scratch.appending("env"), encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(env.contains("PATH=\(HookRunner.safePath)") && env.contains("LIVECOPY_DEVICE=drive0")
                && env.contains("LIVECOPY_BOOT_IMAGE=\(Self.destination)"), "\(env)")
        #expect(!env.contains { $0.contains("LIVECOPY_TEST_SECRET") }, "livecopy's own environment is not passed on: \(env)")
        let stdin = try Data(contentsOf: URL(fileURLWithPath: scratch.appending("stdin")))
        #expect(stdin == facts.json, "the document arrives whole on stdin")
    }
}
