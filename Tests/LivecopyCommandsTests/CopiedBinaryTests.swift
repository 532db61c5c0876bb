import Foundation
import LivecopyModel
import TestSupport
import Testing

/// The `livecopy` binary carries its migrations and its shipped policies: copied alone
/// into an empty directory (no `*.resources` folder beside it, no repository around it)
/// and run from elsewhere, it still creates a database and resolves every shipped policy.
struct CopiedBinaryTests {
    /// What one run of the copied binary printed and returned.
    struct Outcome {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Runs `binary ARGS` in `directory`, with `LIVECOPY_DB` unset and no stdin.
    static func run(_ binary: String, _ arguments: [String], in directory: String) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory, isDirectory: true)
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "LIVECOPY_DB")
        process.environment = environment
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The outputs are small; read them to their end, then reap the process.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                       stderr: String(decoding: stderr, as: UTF8.self))
    }

    @Test(arguments: ["default", "gentle", "evacuate"])
    func aLoneCopyOfTheBinaryRecordsAPlan(policy: String) throws {
        let built = LivecopyProcess.binaryPath
        try #require(FileManager.default.isExecutableFile(atPath: built), "no built livecopy at \(built)")

        // The binary, alone in a fresh directory.
        let binDirectory = try TemporaryDirectory(prefix: "lc-bin")
        defer { binDirectory.remove() }
        let binary = binDirectory.appending("livecopy")
        try FileManager.default.copyItem(atPath: built, toPath: binary)
        #expect(try FileManager.default.contentsOfDirectory(atPath: binDirectory.path) == ["livecopy"])

        // The plan, the destination directory and the database live elsewhere; the
        // working directory is yet another empty directory.
        let scratch = try TemporaryDirectory(prefix: "lc-lone")
        defer { scratch.remove() }
        let workingDirectory = try TemporaryDirectory(prefix: "lc-cwd")
        defer { workingDirectory.remove() }
        try FileManager.default.createDirectory(atPath: scratch.appending("new"), withIntermediateDirectories: true)
        let database = scratch.appending("sub/x.db")
        let destination = scratch.appending("new/disk0.qcow2")
        let planPath = scratch.appending("plan.yaml")
        try """
            name: lone-\(policy)
            policy: \(policy)
            vms:
              - name: vm1
                qmp: \(scratch.appending("vm1.qmp"))
                disks:
                  - device: drive0
                    destination: \(destination)
            """.write(toFile: planPath, atomically: true, encoding: .utf8)

        let submit = try Self.run(binary, ["submit", planPath, "--detach", "--db", database], in: workingDirectory.path)
        #expect(submit.status == 0, "exit \(submit.status): \(submit.stderr)")
        let id = Int64(submit.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(id != nil, "stdout is not a plan id: '\(submit.stdout)'")
        #expect(FileManager.default.fileExists(atPath: database), "no database at \(database)")
        let created = try FileManager.default.attributesOfItem(atPath: scratch.appending("sub"))
        #expect((created[.posixPermissions] as? NSNumber)?.intValue == 0o700, "database directory not owner-only")
        #expect(!FileManager.default.fileExists(atPath: destination), "--detach must not create the destination")

        let history = try Self.run(binary, ["history", "--json", "--db", database], in: workingDirectory.path)
        #expect(history.status == 0, "exit \(history.status): \(history.stderr)")
        let plans = try JSONDecoder().decode([PlanDocument].self, from: Data(history.stdout.utf8))
        #expect(plans.count == 1, "\(history.stdout)")
        let plan = try #require(plans.first)
        #expect(plan.id == id)
        #expect(plan.name == "lone-\(policy)")
        #expect(plan.state == "pending")
        #expect(plan.policy == policy)
        #expect(plan.disks.map(\.destination) == [destination])
        #expect(plan.disks.map(\.state) == ["pending"])

        // Nothing was written next to the binary.
        #expect(try FileManager.default.contentsOfDirectory(atPath: binDirectory.path) == ["livecopy"])
    }
}
