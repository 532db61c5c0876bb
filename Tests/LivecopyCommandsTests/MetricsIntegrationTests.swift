import Foundation
import LivecopyModel
import LivecopyStore
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `livecopy run --metrics` scraped over HTTP while it streams a real disk: the bytes
/// counter rises between scrapes, and once the disk is `completed` (an `on_complete` hook
/// holds the process until the test has scraped) it equals the job's length, which for a
/// stream is the disk's virtual size. Every metric of the Grafana dashboard is in the scrapes.
@Suite(.serialized, .requires(.qemu))
struct MetricsIntegrationTests {
    typealias Rig = RecoveryIntegrationTests.Rig

    static let series = #"{plan="1",vm="vm",device="drive0"}"#

    /// The port `livecopy … --metrics 127.0.0.1:0` printed it listens on.
    static func metricsPort(of running: LivecopyProcess.Running) async throws -> Int {
        for _ in 0..<3000 {
            let stderr = running.stderrSoFar()
            if let range = stderr.range(of: "livecopy: metrics on http://127.0.0.1:") {
                let digits = stderr[range.upperBound...].prefix { $0.isNumber }
                if stderr[range.upperBound...].dropFirst(digits.count).hasPrefix("/metrics\n"), let port = Int(digits) { return port }
            }
            guard running.process.isRunning else { throw WaitTimeout(what: "the metrics address (livecopy exited: \(stderr))") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw WaitTimeout(what: "the metrics address on stderr")
    }

    @Test(.timeLimit(.minutes(4)))
    func scrapesDuringARealCopySeeTheBytesRiseAndEndAtTheJobsLength() async throws {
        let hooks = try HookDirectory()
        defer { hooks.remove() }
        let release = (hooks.path as NSString).appendingPathComponent("release")
        // Holds the run after the disk completed, until the test has scraped the final values.
        let hold = try hooks.install("hold", contents: "#!/bin/sh\nwhile [ ! -e '\(release)' ]; do sleep 0.1; done\n")
        // 16 MiB of data at 4 MiB/s: about four seconds of streaming, a progress report every 200 ms.
        let rig = try Rig("lc-metrics", dataMiB: 16, policy: """
            speed: 4M
            retire_source: rename
            progress_interval: 200ms
            hooks:
              on_complete: ["\(hold)"]
              timeout: 10m
            """)
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)
        let detach = try await rig.livecopy.run(["submit", "--detach", rig.planPath])
        #expect(detach.status == 0, "submit --detach: \(detach.stderr)")

        let run = try rig.livecopy.start(["run", "--metrics", "127.0.0.1:0"])
        defer { RecoveryIntegrationTests.killIfRunning(run) }
        let port = try await Self.metricsPort(of: run)

        // Scrape until the disk is completed (then the hook holds the process).
        var counted: [Double] = []
        var scrapes: [String] = []
        var completed = false
        for _ in 0..<2000 where !completed {
            completed = try rig.store().disks(ofPlan: 1).first?.state == .completed
            let response = try HTTPScrape.request(port: port)
            #expect(response.status == 200)
            scrapes.append(response.body)
            if let bytes = HTTPScrape.value(of: "livecopy_bytes_copied_total" + Self.series, in: response.body) { counted.append(bytes) }
            if !completed { try await Task.sleep(for: .milliseconds(250)) }
        }
        #expect(completed, "the disk completed while scraped")
        #expect(run.process.isRunning, "the on_complete hook holds the run")
        let final = try #require(scrapes.last)
        #expect(FileManager.default.createFile(atPath: release, contents: nil), "the hold is released")

        #expect(zip(counted, counted.dropFirst()).allSatisfy { $0 <= $1 }, "the counter never decreases: \(counted)")
        #expect(zip(counted, counted.dropFirst()).contains { $0 < $1 }, "the counter rose between two scrapes: \(counted)")
        let disk = try #require(try rig.store().disks(ofPlan: 1).first)
        let virtualSize = Double(64 * 1024 * 1024)  // the Rig's source: `qemu-img create … 64M`
        #expect(disk.bytesTotal == disk.bytesDone && Double(disk.bytesTotal) == virtualSize, "the job's length as QEMU reported it")
        #expect(HTTPScrape.value(of: "livecopy_bytes_copied_total" + Self.series, in: final) == Double(disk.bytesTotal),
                "the counter ends at the job's length:\n\(final)")
        #expect(!final.contains("livecopy_bytes_remaining{"), "a final disk's gauges are gone")
        #expect(HTTPScrape.value(of: #"livecopy_disks{state="completed"}"#, in: final) == 1)
        #expect(HTTPScrape.value(of: #"livecopy_disks{state="streaming"}"#, in: final) == 0, "every state, zeros included")
        #expect(HTTPScrape.value(of: #"livecopy_plans{state="running"}"#, in: final) == 1)
        for step in ["snapshotting", "streaming", "retiring"] {
            #expect(HTTPScrape.value(of: "livecopy_step_duration_seconds_count{step=\"\(step)\"}", in: final) == 1, "\(step)")
        }
        #expect((HTTPScrape.value(of: #"livecopy_step_duration_seconds_sum{step="streaming"}"#, in: final) ?? 0) > 1,
                "the throttled stream took seconds")
        for command in ["block-stream", "query-jobs", "transaction"] {
            #expect((HTTPScrape.value(of: "livecopy_qmp_round_trip_seconds_count{command=\"\(command)\"}", in: final) ?? 0) >= 1,
                    "\(command)")
        }
        for kind in ["failed", "needs_attention", "rolled_back", "io_error", "qmp_no_reply"] {
            #expect(HTTPScrape.value(of: "livecopy_failures_total{kind=\"\(kind)\"}", in: final) == 0, "\(kind)")
        }
        let remaining = scrapes.compactMap { HTTPScrape.value(of: "livecopy_bytes_remaining" + Self.series, in: $0) }
        #expect(remaining.contains { $0 > 0 }, "bytes remaining while streaming: \(remaining)")
        let scraped = scrapes.reduce(into: Set<String>()) { $0.formUnion(HTTPScrape.metricNames($1)) }
        // The host's gauges are serve's (ServeIntegrationTests scrapes them).
        let dashboard = try GrafanaDashboard.metricNames().filter { !$0.hasPrefix("livecopy_host_") }
        #expect(dashboard.subtracting(scraped).isEmpty, "the dashboard names metrics no scrape had: \(dashboard.subtracting(scraped).sorted())")

        let result = try await run.wait(timeout: 120)
        #expect(result.status == 0, "run: \(result.status)\n\(result.stderr)")
        #expect(try rig.store().plan(id: 1)?.state == .completed)
        #expect(throws: HTTPScrape.Failure.self, "the endpoint closed with the process") { try HTTPScrape.request(port: port) }
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("metrics")
    }
}
