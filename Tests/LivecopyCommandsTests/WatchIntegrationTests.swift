import Foundation
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `livecopy watch` as the built binary, beside a real `submit` copying from a real QEMU
/// VM: on a pseudo-terminal of a set size (the frame redrawn in place, fitted to the
/// width), to a file (plain text), as JSON lines, until the plan is done; and it neither
/// creates nor writes a database.
@Suite(.serialized, .requires(.qemu))
struct WatchIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig

    @Test(.timeLimit(.minutes(3)))
    func watchShowsARunningPlanOnATerminalInAFileAndAsJSON() async throws {
        let rig = try Rig("lc-watch", dataMiB: 16, policy: "speed: 2M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        let planId = try rig.planId()
        let pause = try await rig.livecopy.run(["pause", String(planId)])
        #expect(pause.status == 0, "pause: \(pause.stderr)")
        try await rig.waitForStreamJob(status: ["paused"], timeout: 30)

        // On a 100x30 terminal: one frame, redrawn in place, every line within 100 columns.
        let screen = try Self.runOnTerminal(["watch", "--once", "--db", rig.database], columns: 100, rows: 30)
        #expect(screen.status == 0, "watch on a terminal: \(screen.status)\n\(screen.output)")
        #expect(screen.output.contains("\u{1B}[H") && screen.output.contains("\u{1B}[J"), "redrawn in place: \(screen.output.debugDescription)")
        let lines = Self.strippingEscapes(screen.output).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.allSatisfy { $0.count <= 100 }, "nothing wider than the terminal:\n\(lines.joined(separator: "\n"))")
        #expect(lines.contains { $0.hasPrefix("plan \(planId) \"recovery\" running  0/1 disks completed  PAUSED") },
                "the plan's line:\n\(lines.joined(separator: "\n"))")
        let diskLine = try #require(lines.first { $0.hasPrefix("  vm/drive0") }, "\(lines)")
        #expect(diskLine.count == 100, "the bar is scaled to the width: \(diskLine)")
        #expect(diskLine.contains(" streaming ") && diskLine.range(of: #"\[#*-*\] +[0-9]+\.[0-9]%"#, options: .regularExpression) != nil,
                "a bar and a percent: \(diskLine)")
        #expect(diskLine.hasSuffix("—  ETA      —"), "one frame tells no rate: \(diskLine)")
        let eventLine = try #require(lines.first { $0.contains(" of 64.0 MiB  last ") }, "\(lines)")
        #expect(eventLine.range(of: #"last [0-9hms]+ ago: \S"#, options: .regularExpression) != nil, "the newest event: \(eventLine)")

        // A narrower terminal cuts the lines, never wraps them.
        let narrow = try Self.runOnTerminal(["watch", "--once", "--db", rig.database], columns: 50, rows: 20)
        let narrowLines = Self.strippingEscapes(narrow.output).split(separator: "\n").map(String.init)
        #expect(narrow.status == 0 && narrowLines.contains { $0.hasPrefix("  vm/drive0") })
        #expect(narrowLines.allSatisfy { $0.count <= 50 }, "\(narrowLines)")

        // Not a terminal: plain text, no escape codes.
        let plain = try await rig.livecopy.run(["watch", "--once"])
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(!plain.stdout.contains("\u{1B}"), "no escape codes: \(plain.stdout.debugDescription)")
        #expect(plain.stdout.contains("plan \(planId) \"recovery\" running") && plain.stdout.contains("  vm/drive0         "),
                "\(plain.stdout)")
        #expect(plain.stdout.range(of: #"\[[#-]{30}\]"#, options: .regularExpression) != nil, "a 30-cell bar: \(plain.stdout)")

        // --json --once: one line, one object.
        let once = try await rig.livecopy.run(["watch", "--once", "--json", "--plan", String(planId)])
        let onceLines = once.stdout.split(separator: "\n")
        #expect(once.status == 0 && onceLines.count == 1, "\(once.stdout)\n\(once.stderr)")
        let document = try Self.object(String(onceLines.first ?? ""))
        let plan = try #require((document["plans"] as? [[String: Any]])?.first)
        #expect(plan["id"] as? Int == Int(planId) && plan["state"] as? String == "running" && plan["paused"] as? Bool == true)
        let disk = try #require((plan["disks"] as? [[String: Any]])?.first)
        #expect(disk["state"] as? String == "streaming" && disk["bytes_total"] as? Int == 64 << 20, "\(disk)")
        #expect(disk["rate"] is NSNull && disk["eta_seconds"] is NSNull, "\(disk)")
        let at = try #require((disk["last_event"] as? [String: Any])?["at"] as? String)
        #expect((try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(at)) != nil, "an ISO 8601 date: \(at)")

        // --until-done: JSON lines while the copy runs, with a rate once two progress
        // writes are seen, and an exit once the plan is no longer running.
        let watching = try rig.livecopy.start(["watch", "--json", "--until-done", "--interval", "0.3"])
        defer { RecoveryIntegrationTests.killIfRunning(watching) }
        let resume = try await rig.livecopy.run(["resume", String(planId)])
        #expect(resume.status == 0, "resume: \(resume.stderr)")
        let owner = try await submit.wait(timeout: 120)
        #expect(owner.status == 0, "submit: \(owner.status)\n\(owner.stderr)")
        let watched = try await watching.wait(timeout: 60)
        #expect(watched.status == 0, "watch --until-done ends by itself: \(watched.status)\n\(watched.stderr)")
        let documents = try watched.stdout.split(separator: "\n").map { try Self.object(String($0)) }
        let rates = documents.compactMap { ($0["plans"] as? [[String: Any]])?.first?["disks"] as? [[String: Any]] }
            .compactMap { ($0.first?["rate"] as? NSNumber)?.doubleValue }
        #expect(rates.contains { $0 > 0 }, "a rate was measured while the copy ran: \(watched.stdout)")
        #expect((documents.last?["plans"] as? [Any])?.isEmpty == true, "the last frame shows no plan in progress")

        // Watching a finished database changes no byte of it, nor of its log (not even a
        // checkpoint as watch closes it).
        let files = [rig.database, rig.database + "-wal"]
        let before = files.map { FileManager.default.contents(atPath: $0) }
        let after = try await rig.livecopy.run(["watch", "--once", "--plan", String(planId)])
        #expect(after.status == 0 && after.stdout.contains("plan \(planId) \"recovery\" completed  1/1 disks completed"), "\(after.stdout)")
        #expect(files.map { FileManager.default.contents(atPath: $0) } == before, "watch wrote nothing")
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("watch")
    }

    @Test func noDatabaseIsOneLineAndCreatesNone() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-watchnodb")
        defer { scratch.remove() }
        let missing = scratch.appending("missing.db")
        let result = try await LivecopyProcess(database: missing).run(["watch", "--once"])
        #expect(result.status == 2)
        #expect(result.stderr == "livecopy: error: no database at \(missing) (from --db); livecopy submit creates one, or give the right one with --db or LIVECOPY_DB\n")
        #expect(result.stdout.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty, "nothing created")
        for bad in [["--interval", "0"], ["--interval", "soon"], ["--plan", "0"]] {
            let refused = try await LivecopyProcess(database: missing).run(["watch", "--once"] + bad)
            #expect(refused.status == 64 && refused.stderr.hasPrefix("Error: "), "\(bad): \(refused.stderr)")
        }
    }

    // MARK: - Helpers

    /// Runs the built `livecopy` with a pseudo-terminal of `columns` x `rows` as its stdout
    /// and returns what it wrote there (the pty turns each newline into CR LF; the CRs are
    /// dropped).
    static func runOnTerminal(_ arguments: [String], columns: UInt16, rows: UInt16) throws -> (status: Int32, output: String) {
        var master: Int32 = -1
        var slave: Int32 = -1
        guard openpty(&master, &slave, nil, nil, nil) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(master) }
        var size = winsize(ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0)
        guard ioctl(slave, UInt(TIOCSWINSZ), &size) == 0 else { close(slave); throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: LivecopyProcess.binaryPath)
        process.arguments = arguments
        process.standardOutput = FileHandle(fileDescriptor: slave, closeOnDealloc: false)
        process.standardError = FileHandle(fileDescriptor: slave, closeOnDealloc: false)
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { close(slave); throw error }
        close(slave)
        // Read until the child's end of the terminal closes (EIO), so no output is lost.
        var output = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(master, &buffer, buffer.count)
            if count > 0 { output.append(contentsOf: buffer[0..<count]); continue }
            if count < 0 && errno == EINTR { continue }
            break
        }
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self).replacingOccurrences(of: "\r", with: ""))
    }

    /// `text` without its ANSI escape sequences.
    static func strippingEscapes(_ text: String) -> String {
        text.replacingOccurrences(of: "\u{1B}\\[[0-9;?]*[A-Za-z]", with: "", options: .regularExpression)
    }

    static func object(_ line: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
    }
}
