import Foundation
@testable import LivecopyEngine
import Testing

/// The check behind "nothing opens the source": a write lease, then /proc to name the holder.
struct OpenFilesTests {
    @Test(.timeLimit(.minutes(1)))
    func aFileHeldByAnotherProcessIsFoundAndNamedThenReleased() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("lc-open-\(UUID().uuidString)").path
        try Data("image".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(await OpenFiles.holder(of: path, settle: 0) == nil, "nobody has it open")

        // Another process holds it open (as its standard input; this process never opens it).
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/bin/sh")
        holder.arguments = ["-c", "exec sleep 30 < '\(path)'"]
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
        var found: String?
        for _ in 0..<100 {  // until the shell has opened it and become sleep
            found = await OpenFiles.holder(of: path, settle: 0)
            if found?.contains("(sleep)") == true { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(found == "process \(holder.processIdentifier) (sleep)", "\(found ?? "nil")")

        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        #expect(await OpenFiles.holder(of: path, settle: 0) == nil)
        #expect(await OpenFiles.holder(of: path + ".missing", settle: 0) == nil, "a missing file has no holder")
    }
}
