import Foundation
import LivecopyModel
import LivecopyStore
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `livecopy throttle`, `pause` and `resume` from a second process against real QEMU: the
/// live owner applies them over its own QMP session (QEMU serves one client per monitor),
/// and the settings hold for jobs started later. Data is checked offline at the end.
@Suite(.serialized, .requires(.qemu))
struct OperatorControlTests {
    typealias Rig = RecoveryIntegrationTests.Rig

    /// livecopy's stream job in `query-block-jobs` (speed, paused, io-status).
    static func blockJob(_ rig: Rig) async throws -> BlockJobInfo? {
        try await rig.vm.testMonitor().queryBlockJobs().first { $0.device.hasPrefix("livecopy-stream-") }
    }

    // MARK: - Throttle

    @Test(.timeLimit(.minutes(2)))
    func throttleFromASecondProcessChangesTheRunningJobsSpeed() async throws {
        // 16 MiB at 2 MiB/s: about eight seconds of streaming.
        let rig = try Rig("lc-throttle", dataMiB: 16, policy: "speed: 2M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        try await rig.write(slot: 1)  // into the destination
        let planId = try rig.planId()
        #expect(try await Self.blockJob(rig)?.speed == 2 * 1024 * 1024, "the job starts at the policy's speed")

        let slower = try await rig.livecopy.run(["throttle", String(planId), "--speed", "1M"])
        #expect(slower.status == 0, "throttle 1M: \(slower.status)\n\(slower.stderr)")
        #expect(slower.stdout.contains("speed 1.0 MiB/s"), "throttle prints the owner's outcome:\n\(slower.stdout)")
        #expect(try await Self.blockJob(rig)?.speed == 1024 * 1024, "QEMU's job runs at the new speed")
        #expect(try rig.store().controls(ofPlan: planId).speedOverride == 1024 * 1024, "the new speed is recorded")

        let unlimited = try await rig.livecopy.run(["throttle", String(planId), "--speed", "0"])
        #expect(unlimited.status == 0, "throttle 0: \(unlimited.status)\n\(unlimited.stderr)")
        // The owner's outcome names the running job it set unlimited (a job already over
        // would not be named: the outcome would say no stream job runs).
        #expect(unlimited.stdout.contains("job livecopy-stream-") && unlimited.stdout.contains("speed unlimited"), "\(unlimited.stdout)")
        let owner = try await submit.wait(timeout: 120)
        #expect(owner.status == 0, "submit: \(owner.status)\n\(owner.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)
        let events = try rig.store().events(ofPlan: planId).map(\.detail)
        #expect(events.contains { $0.contains("throttle to unlimited requested") }, "the request is in the timeline")
        #expect(events.contains { $0.contains("speed unlimited") && $0.contains("request") }, "so is its outcome")

        try await rig.write(slot: 2)  // after the copy
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("throttle")
        try rig.expectUnbrokenTimeline("throttle")

        // A final plan, an unknown plan and a bad speed: one line, exit 2.
        try await BadInputTests.expectRefusal(rig.livecopy, ["throttle", String(planId), "--speed", "0"], "is completed")
        try await BadInputTests.expectRefusal(rig.livecopy, ["pause", String(planId)], "is completed")
        try await BadInputTests.expectRefusal(rig.livecopy, ["resume", "999"], "no plan with id 999")
        try await BadInputTests.expectRefusal(rig.livecopy, ["throttle", "999", "--speed", "1M"], "no plan with id 999")
        try await BadInputTests.expectRefusal(rig.livecopy, ["throttle", String(planId), "--speed", "fast"], "invalid value 'fast'")
        try await BadInputTests.expectRefusal(rig.livecopy, ["throttle", String(planId), "--speed=-1M"], "invalid value")
    }

    // MARK: - Pause and resume

    @Test(.timeLimit(.minutes(2)))
    func pauseStopsTheJobAndResumeFinishesIt() async throws {
        let rig = try Rig("lc-pause", dataMiB: 16, policy: "speed: 2M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let submit = try rig.livecopy.start(["submit", rig.planPath])
        defer { RecoveryIntegrationTests.killIfRunning(submit) }
        try await rig.waitForStreamJob(status: ["running"])
        let planId = try rig.planId()

        let pause = try await rig.livecopy.run(["pause", String(planId)])
        #expect(pause.status == 0, "pause: \(pause.status)\n\(pause.stderr)")
        #expect(pause.stdout.contains("paused"), "\(pause.stdout)")
        let paused = try await rig.waitForStreamJob(status: ["paused"], timeout: 5)
        try await rig.write(slot: 1)  // the guest keeps writing while the job is paused
        try await Task.sleep(for: .seconds(2))
        let later = try await rig.streamJob()
        #expect(later?.status == "paused", "the job stays paused: \(later?.status ?? "gone")")
        #expect(later?.currentProgress == paused.currentProgress, "no progress while paused")
        #expect(try await Self.blockJob(rig)?.ioStatus == "ok")
        #expect(submit.process.isRunning, "the owner waits for the paused job")

        let status = try await rig.livecopy.run(["status", String(planId)])
        #expect(status.stdout.contains("PAUSED"), "status shows the plan is paused:\n\(status.stdout)")
        #expect(try rig.store().controls(ofPlan: planId).paused)

        let resume = try await rig.livecopy.run(["resume", String(planId)])
        #expect(resume.status == 0, "resume: \(resume.status)\n\(resume.stderr)")
        #expect(resume.stdout.contains("resumed"), "\(resume.stdout)")
        #expect(try rig.store().controls(ofPlan: planId).paused == false)
        let owner = try await submit.wait(timeout: 60)
        #expect(owner.status == 0, "submit: \(owner.status)\n\(owner.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)

        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("pause and resume")
        try rig.expectUnbrokenTimeline("pause and resume")
    }

    // MARK: - Settings recorded with no owner hold for jobs started later

    @Test(.timeLimit(.minutes(2)))
    func settingsRecordedWithoutAnOwnerApplyWhenThePlanRuns() async throws {
        let rig = try Rig("lc-later", dataMiB: 16, policy: "speed: 8M\nretire_source: rename\nprogress_interval: 200ms\n")
        defer { rig.scratch.remove() }
        try await rig.write(slot: 0)

        let detach = try await rig.livecopy.run(["submit", "--detach", rig.planPath])
        #expect(detach.status == 0, "submit --detach: \(detach.stderr)")
        let planId = try rig.planId()

        let throttle = try await rig.livecopy.run(["throttle", String(planId), "--speed", "1M"])
        #expect(throttle.status == 0, "throttle: \(throttle.stderr)")
        #expect(throttle.stdout.contains("applies when the plan next runs"), "\(throttle.stdout)")
        let pause = try await rig.livecopy.run(["pause", String(planId)])
        #expect(pause.status == 0, "pause: \(pause.stderr)")
        #expect(pause.stdout.contains("applies when the plan next runs"), "\(pause.stdout)")
        let status = try await rig.livecopy.run(["status", String(planId)])
        #expect(status.stdout.contains("PAUSED") && status.stdout.contains("1.0 MiB/s"), "\(status.stdout)")
        for command in [["status", String(planId), "--json"], ["show", String(planId), "--json"]] {
            let json = try await rig.livecopy.run(command)
            let document = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            let controls = document?["controls"] as? [String: Any]
            #expect(controls?["paused"] as? Bool == true, "\(command): \(json.stdout)")
            #expect((controls?["speed_override"] as? NSNumber)?.int64Value == 1 << 20, "\(command): \(json.stdout)")
        }

        let run = try rig.livecopy.start(["run", "--plan", String(planId)])
        defer { RecoveryIntegrationTests.killIfRunning(run) }
        try await rig.waitForStreamJob(status: ["paused"], timeout: 30)
        let speed = try await Self.blockJob(rig)?.speed ?? -1
        #expect(speed == 1024 * 1024, "the job starts at the recorded speed: \(speed)")
        try await rig.write(slot: 1)
        try await Task.sleep(for: .seconds(1.5))
        #expect(try await rig.streamJob()?.status == "paused", "the job stays paused")

        let resume = try await rig.livecopy.run(["resume", String(planId)])
        #expect(resume.status == 0, "resume: \(resume.stderr)")
        let unlimited = try await rig.livecopy.run(["throttle", String(planId), "--speed", "0"])
        #expect(unlimited.status == 0, "throttle 0: \(unlimited.stderr)")
        let owner = try await run.wait(timeout: 30)
        #expect(owner.status == 0, "run: \(owner.status)\n\(owner.stderr)")
        #expect(try rig.store().plan(id: planId)?.state == .completed)

        try await rig.write(slot: 2)
        await rig.vm.stop()
        try rig.expectDestinationHoldsEverything("settings recorded before the run")
        try rig.expectUnbrokenTimeline("settings recorded before the run")
    }
}
