import Foundation
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `livecopy serve` against real QEMU: it picks up detached plans, holds the host's
/// bandwidth budget (every speed livecopy gives a job, replayed from the events, sums to
/// at most the budget after every change, and QEMU's jobs run at those speeds), holds the
/// host's disk limit, reloads its settings on SIGHUP, tells systemd, serves its metrics, and on SIGTERM exits
/// 0 leaving QEMU's jobs running, for the next start to re-attach and finish.
@Suite(.serialized, .requires(.qemu))
struct ServeIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig
    static let policy = "retire_source: rename\nprogress_interval: 200ms\n"
    static let mebibyte: Int64 = 1024 * 1024

    @Test(.timeLimit(.minutes(5)))
    func twoDetachedPlansShareTheBudgetAndFinishAfterASIGTERM() async throws {
        let budget = 4 * Self.mebibyte
        let long = try Rig("lc-serve-long", dataMiB: 32, policy: Self.policy)
        let short = try Rig("lc-serve-short", dataMiB: 8, policy: Self.policy)
        defer { long.scratch.remove(); short.scratch.remove() }
        let livecopy = long.livecopy  // one database for both plans
        let settings = long.scratch.appending("serve.yaml")
        try "poll_interval: 200ms\n".write(toFile: settings, atomically: true, encoding: .utf8)
        let arguments = ["serve", "--config", settings, "--bandwidth", "4M"]
        let first = try livecopy.start(arguments)
        defer { RecoveryIntegrationTests.killIfRunning(first) }

        try await long.write(slot: 0)
        try await short.write(slot: 0)
        let longId = try await Self.submitDetached(livecopy, long.planPath)
        try await Self.waitForJob(long, "the first plan's job runs at the whole budget") { $0.speed == budget }
        let shortId = try await Self.submitDetached(livecopy, short.planPath)
        try await Self.waitForJob(short, "the second plan's job runs") { _ in true }
        // The first job slowed down before the second started.
        let slowed = try #require(try await Self.job(long))
        #expect(slowed.speed > 0 && slowed.speed <= budget / 2, "the first job runs at \(slowed.speed)")
        try await long.write(slot: 1)
        try await short.write(slot: 1)

        let store = try long.store()
        try await Self.waitForPlan(store, shortId, .completed)
        try await Self.waitForJob(long, "the first job gets the whole budget back") { $0.speed == budget }

        // SIGTERM mid-copy: exit 0, QEMU's job runs on, the lease is free, the stop recorded.
        kill(first.process.processIdentifier, SIGTERM)
        let stopped = try await first.wait(timeout: 120)
        #expect(stopped.status == 0, "serve after SIGTERM: \(stopped.status)\n\(stopped.stderr)")
        #expect(try await long.streamJob() != nil, "QEMU's job runs on after serve stopped")
        #expect(try store.plan(id: longId)?.state == .running)
        #expect(try store.owner(ofPlan: longId) == nil, "the lease was released")
        #expect(try store.events(ofPlan: longId).contains { $0.detail.contains("stopped driving (livecopy serve stopped)") })
        try await long.write(slot: 2)

        let second = try livecopy.start(arguments)
        defer { RecoveryIntegrationTests.killIfRunning(second) }
        try await Self.waitForPlan(store, longId, .completed)
        kill(second.process.processIdentifier, SIGTERM)
        let ended = try await second.wait(timeout: 120)
        #expect(ended.status == 0, "serve: \(ended.status)\n\(ended.stderr)")
        #expect(try store.events(ofPlan: longId).contains { $0.detail.hasPrefix("re-attaching to QEMU job") })

        // Lowered for the second job, raised when it ended, set at the re-attach.
        try Self.expectSpeedsWithinBudget(store, plans: [longId, shortId], budget: budget, changes: 3)
        try Self.expectUnbrokenTimelines(store, plans: [longId, shortId])
        try await long.write(slot: 3)
        await long.vm.stop()
        await short.vm.stop()
        try long.expectDestinationHoldsEverything("long plan")
        try short.expectDestinationHoldsEverything("short plan")
    }

    @Test(.timeLimit(.minutes(5)))
    func sighupReloadsTheSettingsAndOneDiskCopiesAtATime() async throws {
        let one = try Rig("lc-serve-one", dataMiB: 16, policy: Self.policy)
        let two = try Rig("lc-serve-two", dataMiB: 16, policy: Self.policy)
        defer { one.scratch.remove(); two.scratch.remove() }
        let livecopy = one.livecopy
        let settings = one.scratch.appending("serve.yaml")
        try "bandwidth: 2M\nmax_parallel_disks: 1\npoll_interval: 200ms\n".write(toFile: settings, atomically: true, encoding: .utf8)
        let notifications = try NotifySocket(path: one.scratch.appending("notify"))
        defer { notifications.close() }
        try await one.write(slot: 0)
        try await two.write(slot: 0)
        let oneId = try await Self.submitDetached(livecopy, one.planPath)
        let twoId = try await Self.submitDetached(livecopy, two.planPath)

        let serve = try livecopy.start(["serve", "--config", settings, "--metrics", "127.0.0.1:0"],
                                       environment: ["NOTIFY_SOCKET": notifications.path])
        defer { RecoveryIntegrationTests.killIfRunning(serve) }
        let port = try await MetricsIntegrationTests.metricsPort(of: serve)
        try await notifications.waitFor("READY=1")
        let (running, other) = try await Self.firstOfTwoJobs(one, two)
        #expect(try await Self.job(running)?.speed == 2 * Self.mebibyte, "the job runs at the budget")
        #expect(try await Self.job(other) == nil, "one disk copies at a time on this host")
        let during = try HTTPScrape.request(port: port).body
        #expect(HTTPScrape.value(of: "livecopy_host_disks_copying", in: during) == 1, "\(during)")
        #expect(HTTPScrape.value(of: "livecopy_host_bandwidth_budget_bytes_per_second", in: during) == Double(2 * Self.mebibyte))
        #expect(HTTPScrape.value(of: "livecopy_host_bandwidth_allocated_bytes_per_second", in: during) == Double(2 * Self.mebibyte))

        try "bandwidth: 4M\nmax_parallel_disks: 1\npoll_interval: 200ms\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(serve.process.processIdentifier, SIGHUP)
        try await notifications.waitFor("RELOADING=1")
        try await Self.waitForJob(running, "the reloaded budget applies to the running job") { $0.speed == 4 * Self.mebibyte }
        try "bandwidth: fast\n".write(toFile: settings, atomically: true, encoding: .utf8)
        kill(serve.process.processIdentifier, SIGHUP)
        try await Self.waitForOutput(serve, "settings not reloaded, the previous ones stay in force")
        try await running.write(slot: 1)

        let store = try one.store()
        try await Self.waitForPlan(store, oneId, .completed)
        try await Self.waitForPlan(store, twoId, .completed)
        // serve's metrics: each disk's counter ends at its job's length, both plans completed.
        let final = try HTTPScrape.request(port: port).body
        for id in [oneId, twoId] {
            let disk = try #require(try store.disks(ofPlan: id).first)
            #expect(HTTPScrape.value(of: "livecopy_bytes_copied_total{plan=\"\(id)\",vm=\"vm\",device=\"drive0\"}", in: final)
                    == Double(disk.bytesTotal), "plan \(id):\n\(final)")
        }
        #expect(HTTPScrape.value(of: #"livecopy_plans{state="completed"}"#, in: final) == 2)
        #expect(HTTPScrape.value(of: "livecopy_host_disks_copying", in: final) == 0)
        #expect(HTTPScrape.value(of: "livecopy_host_disks_waiting", in: final) == 0)
        #expect(HTTPScrape.value(of: "livecopy_host_bandwidth_budget_bytes_per_second", in: final) == Double(4 * Self.mebibyte),
                "the reloaded budget")
        #expect(HTTPScrape.value(of: "livecopy_host_bandwidth_allocated_bytes_per_second", in: final) == 0)
        let hostPanels = try GrafanaDashboard.metricNames().filter { $0.hasPrefix("livecopy_host_") }
        #expect(!hostPanels.isEmpty && hostPanels.isSubset(of: HTTPScrape.metricNames(final)), "the dashboard's host panels: \(hostPanels)")
        kill(serve.process.processIdentifier, SIGTERM)
        let ended = try await serve.wait(timeout: 120)
        #expect(ended.status == 0, "serve: \(ended.status)\n\(ended.stderr)")
        try await notifications.waitFor("STOPPING=1")
        #expect(ended.stderr.contains("settings reloaded: at most 1 disks copying, bandwidth budget 4.0 MiB/s"), "\(ended.stderr)")

        try Self.expectAtMostOneJobAtATime(store, plans: [oneId, twoId])
        let waited = try [oneId, twoId].flatMap { try store.events(ofPlan: $0) }.filter { $0.detail.hasPrefix("waiting for a copy slot") }
        #expect(waited.count == 1, "the second disk says why it waits: \(waited.map(\.detail))")
        // Raised by the reload (each job then starts at the budget).
        try Self.expectSpeedsWithinBudget(store, plans: [oneId, twoId], budget: 4 * Self.mebibyte, changes: 1)
        await one.vm.stop()
        await two.vm.stop()
        try one.expectDestinationHoldsEverything("first plan")
        try two.expectDestinationHoldsEverything("second plan")
    }

    @Test func badSettingsAreRefusedInOneLineAndTouchNothing() async throws {
        let scratch = try TemporaryDirectory(prefix: "lc-serve-bad")
        defer { scratch.remove() }
        let livecopy = LivecopyProcess(database: scratch.appending("livecopy.db"))
        let settings = scratch.appending("serve.yaml")
        try "bandwidth: 10M\nspeed: 1M\n".write(toFile: settings, atomically: true, encoding: .utf8)
        try await BadInputTests.expectRefusal(livecopy, ["serve", "--bandwidth", "fast"], "--bandwidth: invalid value 'fast'")
        try await BadInputTests.expectRefusal(livecopy, ["serve", "--bandwidth", "1K"], "at least 64K")
        try await BadInputTests.expectRefusal(livecopy, ["serve", "--max-parallel-disks=-3"], "--max-parallel-disks")
        try await BadInputTests.expectRefusal(livecopy, ["serve", "--config", scratch.appending("none.yaml")], "does not exist")
        try await BadInputTests.expectRefusal(livecopy, ["serve", "--config", settings], "unknown key 'speed'")
        #expect(!FileManager.default.fileExists(atPath: livecopy.database), "no database was created")
    }

    // MARK: - Helpers

    static func submitDetached(_ livecopy: LivecopyProcess, _ plan: String) async throws -> Int64 {
        let result = try await livecopy.run(["submit", "--detach", plan])
        #expect(result.status == 0, "submit --detach: \(result.status)\n\(result.stderr)")
        return try #require(Int64(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    /// livecopy's copy job on the rig's VM, as `query-block-jobs` shows it.
    static func job(_ rig: Rig) async throws -> BlockJobInfo? {
        try await rig.vm.testMonitor().queryBlockJobs().first { $0.device.hasPrefix("livecopy-stream-") }
    }

    static func waitForJob(_ rig: Rig, _ what: String, timeout: Double = 60,
                           _ condition: (BlockJobInfo) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let job = try await job(rig), condition(job) { return }
            try await Task.sleep(for: .milliseconds(30))
        }
        throw WaitTimeout(what: what)
    }

    /// Waits until one of the two rigs' VMs runs livecopy's job; returns it first.
    static func firstOfTwoJobs(_ one: Rig, _ two: Rig) async throws -> (Rig, Rig) {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if try await job(one) != nil { return (one, two) }
            if try await job(two) != nil { return (two, one) }
            try await Task.sleep(for: .milliseconds(30))
        }
        throw WaitTimeout(what: "a copy job on either VM")
    }

    static func waitForPlan(_ store: SQLiteStore, _ id: Int64, _ state: PlanState, timeout: Double = 180) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try store.plan(id: id)?.state == state { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw WaitTimeout(what: "plan \(id) is \(state.rawValue) (it is \(try store.plan(id: id)?.state.rawValue ?? "?"))")
    }

    static func waitForOutput(_ running: LivecopyProcess.Running, _ text: String, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if running.stderrSoFar().contains(text) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw WaitTimeout(what: "serve prints '\(text)'")
    }

    /// Every speed livecopy gave a copy job (the start's intent, the budget's changes; a
    /// job leaving the budget), replayed in the events' order: after each, the speeds of
    /// the jobs in the budget sum to at most `budget`. The budget changed a running job's
    /// speed at least `changes` times, so the replay saw it at work.
    static func expectSpeedsWithinBudget(_ store: SQLiteStore, plans: [Int64], budget: Int64, changes minimum: Int,
                                         sourceLocation: SourceLocation = #_sourceLocation) throws {
        let events = try plans.flatMap { try store.events(ofPlan: $0) }.sorted { $0.id < $1.id }
        var speeds: [String: Int64] = [:]
        var changes = 0
        for event in events {
            // An intent reads "block-stream: job ID, speed BYTES, …"; a note "job ID: speed BYTES bytes/s (…)".
            let words = event.detail.split(separator: " ").map(String.init).drop { $0.hasSuffix(":") && $0 != "job" }
                .map { $0 }
            guard words.count >= 4, words[0] == "job" else { continue }
            let job = words[1].trimmingCharacters(in: CharacterSet(charactersIn: ",:"))
            if event.kind == .intent, words[2] == "speed", let speed = Int64(words[3].trimmingCharacters(in: [","])) {
                speeds[job] = speed
            } else if event.kind == .note, words[2] == "speed", let speed = Int64(words[3]), words.count > 4, words[4] == "bytes/s" {
                speeds[job] = speed
                changes += 1
            } else if event.kind == .note, event.detail.hasSuffix("left the host's bandwidth budget") {
                speeds[job] = nil
            } else {
                continue
            }
            #expect(!speeds.values.contains(0), "a job ran unlimited: \(event.detail)", sourceLocation: sourceLocation)
            #expect(speeds.values.reduce(0, +) <= budget, "after '\(event.detail)': \(speeds)", sourceLocation: sourceLocation)
        }
        #expect(changes >= minimum, "the budget changed speeds \(changes) times", sourceLocation: sourceLocation)
    }

    /// From the events: never two copy jobs in the budget at once.
    static func expectAtMostOneJobAtATime(_ store: SQLiteStore, plans: [Int64], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let events = try plans.flatMap { try store.events(ofPlan: $0) }.sorted { $0.id < $1.id }
        var running = Set<String>()
        var started = 0
        for event in events where event.detail.hasPrefix("job livecopy-stream-") || event.detail.hasPrefix("block-stream: job livecopy-stream-") {
            let words = event.detail.split(separator: " ").drop { $0 != "job" }.map(String.init)
            let job = words[1].trimmingCharacters(in: CharacterSet(charactersIn: ",:"))
            if event.kind == .intent {
                running.insert(job)
                started += 1
            } else if event.detail.hasSuffix("left the host's bandwidth budget") {
                running.remove(job)
            }
            #expect(running.count <= 1, "jobs at once: \(running)", sourceLocation: sourceLocation)
        }
        #expect(started == 2, "two jobs started", sourceLocation: sourceLocation)
    }

    static func expectUnbrokenTimelines(_ store: SQLiteStore, plans: [Int64], sourceLocation: SourceLocation = #_sourceLocation) throws {
        for plan in plans {
            let transitions = try store.events(ofPlan: plan).filter { $0.kind == .transition }
            for subject in Set(transitions.map(\.diskId)) {
                let chain = transitions.filter { $0.diskId == subject }
                for (previous, next) in zip(chain, chain.dropFirst()) {
                    #expect(next.from == previous.to, "plan \(plan): \(previous.to ?? "") then \(next.from ?? "")→\(next.to ?? "")",
                            sourceLocation: sourceLocation)
                }
            }
        }
    }
}

/// A datagram socket standing in for systemd's notify socket: what `serve` sends to it.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw WaitTimeout(what: "a notify socket at \(path)") }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    private var received: [String] = []

    /// Waits until a message containing `line` arrived (messages already read count).
    func waitFor(_ line: String, timeout: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 { received.append(String(decoding: buffer[0..<count], as: UTF8.self)) }
            if received.contains(where: { $0.split(separator: "\n").contains(Substring(line)) }) { return }
            if count <= 0 { try await Task.sleep(for: .milliseconds(30)) }
        }
        throw WaitTimeout(what: "'\(line)' on the notify socket (got \(received))")
    }

    func close() { _ = Glibc.close(fd) }
}
