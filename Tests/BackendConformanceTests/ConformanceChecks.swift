// What every backend must do, checked the same way on each: the operations the engine
// relies on, in the boundary's words.

import Foundation
import LivecopyBackend
import Testing

/// One check of the conformance suite, named for the test report.
struct ConformanceCheck: Sendable, CustomTestStringConvertible {
    let name: String
    let run: @Sendable (ConformanceRig, any VMSession) async throws -> Void

    var testDescription: String { name }

    /// Every check; each backend's suite runs them all.
    static let all: [ConformanceCheck] = [
        ConformanceCheck(name: "shows the disk and its image", run: showsTheDisk),
        ConformanceCheck(name: "switches all disks or none", run: switchesAllOrNone),
        ConformanceCheck(name: "holds a finished pull until a confirmed flush and finalize", run: pullWaitsForFinalize),
        ConformanceCheck(name: "commits back and pivots onto the base", run: commitsBack),
        ConformanceCheck(name: "mirrors back and pivots onto the target", run: mirrorsBack),
        ConformanceCheck(name: "pauses, resumes, throttles and cancels a job", run: controlsAJob),
        ConformanceCheck(name: "refuses what cannot be done, as a refusal", run: refusesAsRefusals),
        ConformanceCheck(name: "ends its events when the session closes", run: endsEventsOnClose),
    ]

    // MARK: - The checks

    static func showsTheDisk(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        #expect(vm.capabilities.isSuperset(of: BackendCapability.neededToStream))
        let disk = try #require(try await vm.disks().device(named: rig.disk))
        let medium = try #require(disk.medium)
        #expect(medium.file == rig.source)
        #expect(medium.backingFile == nil)
        #expect(medium.image.format == "qcow2")
        #expect(medium.image.virtualSize == ConformanceRig.virtualSize)
        #expect(medium.image.chain.map(\.filename) == [rig.source])
        #expect(try await vm.migrationStatus() == nil)
        #expect(try await vm.jobs().isEmpty)
    }

    static func switchesAllOrNone(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        let overlay = try rig.makeOverlay("overlay.qcow2")
        let error = try await #require(throws: BackendError.self) {
            try await vm.switchToOverlays([
                OverlayRequest(disk: .device(rig.disk), overlayFile: overlay, overlayNodeName: "lc-overlay"),
                OverlayRequest(disk: .device("no-such-drive"), overlayFile: rig.path("other.qcow2"), overlayNodeName: "lc-other"),
            ])
        }
        #expect(error.isRefusal, "\(error)")
        #expect(try await active(rig, vm)?.file == rig.source, "a refused switch switches nothing")

        try await vm.switchToOverlays([OverlayRequest(disk: .device(rig.disk), overlayFile: overlay, overlayNodeName: "lc-overlay")])
        let medium = try #require(try await active(rig, vm))
        #expect(medium.file == overlay)
        #expect(medium.backingFile == rig.source)
        if rig.namesNodes { #expect(medium.nodeName == "lc-overlay") } else { #expect(medium.nodeName != nil) }
        #expect(medium.image.chain.map(\.filename) == [overlay, rig.source])
    }

    static func pullWaitsForFinalize(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        let overlay = try await switchToOverlay(rig, vm)
        let events = vm.jobEvents()
        try await vm.startPull(disk: rig.disk, jobId: "pull-1", speed: 0, onError: "report")
        try await waitFor("pull-1", .pending, in: vm)
        #expect(try await active(rig, vm)?.backingFile == rig.source, "a pending pull keeps the backing file")
        let node = try #require(try await active(rig, vm)?.nodeName)
        #expect(try await vm.flush(nodeName: node) == .confirmed)
        try await vm.finalize(jobId: "pull-1")
        let concluded = try await waitFor("pull-1", .concluded, in: vm)
        #expect(concluded.error == nil)
        #expect(concluded.type == "stream")
        try await vm.dismiss(jobId: "pull-1")
        #expect(try await vm.jobs().contains { $0.id == "pull-1" } == false)
        let medium = try #require(try await active(rig, vm))
        #expect(medium.file == overlay)
        #expect(medium.backingFile == nil)
        let seen = await statuses(of: "pull-1", in: events, until: .concluded)
        #expect(seen.contains(.pending), "events: \(seen)")
    }

    static func commitsBack(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        _ = try await switchToOverlay(rig, vm)
        try await vm.startCommit(disk: rig.disk, jobId: "commit-1", baseFile: nil, speed: 0)
        let ready = try await waitFor("commit-1", .ready, in: vm)
        #expect(ready.type == "commit")
        try await vm.complete(jobId: "commit-1")
        let concluded = try await waitFor("commit-1", .concluded, in: vm)
        #expect(concluded.error == nil)
        try await vm.dismiss(jobId: "commit-1")
        let medium = try #require(try await active(rig, vm))
        #expect(medium.file == rig.source)
        #expect(medium.backingFile == nil)
    }

    static func mirrorsBack(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        _ = try await switchToOverlay(rig, vm)
        try await vm.startPull(disk: rig.disk, jobId: "pull-2", speed: 0, onError: "report")
        try await waitFor("pull-2", .pending, in: vm)
        try await vm.finalize(jobId: "pull-2")
        try await waitFor("pull-2", .concluded, in: vm)
        try await vm.dismiss(jobId: "pull-2")
        // The overlay stands alone; mirror it back into the source file.
        try await vm.startMirror(disk: rig.disk, jobId: "mirror-1", target: rig.source, format: "qcow2")
        let ready = try await waitFor("mirror-1", .ready, in: vm)
        #expect(ready.type == "mirror")
        try await vm.complete(jobId: "mirror-1")
        let concluded = try await waitFor("mirror-1", .concluded, in: vm)
        #expect(concluded.error == nil)
        try await vm.dismiss(jobId: "mirror-1")
        #expect(try await active(rig, vm)?.file == rig.source)
    }

    static func controlsAJob(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        _ = try await switchToOverlay(rig, vm)
        // 1 byte/s: the pull cannot finish while it is controlled.
        try await vm.startPull(disk: rig.disk, jobId: "pull-3", speed: 1, onError: "report")
        try await vm.pause(jobId: "pull-3")
        try await waitFor("pull-3", .paused, in: vm)
        #expect(try await vm.ioErrorStatus(ofJob: "pull-3") == nil, "paused on purpose, not by an I/O error")
        try await vm.resume(jobId: "pull-3")
        try await waitFor("pull-3", .running, in: vm)
        try await vm.setSpeed(jobId: "pull-3", speed: 2)
        try await vm.cancel(jobId: "pull-3", force: true)
        try await waitFor("pull-3", .concluded, in: vm)
        try await vm.dismiss(jobId: "pull-3")
        #expect(try await active(rig, vm)?.backingFile == rig.source, "a cancelled pull keeps the backing file")
    }

    static func refusesAsRefusals(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        let attempts: [(String, @Sendable () async throws -> Void)] = [
            ("dismiss an unknown job", { try await vm.dismiss(jobId: "nobody") }),
            ("finalize an unknown job", { try await vm.finalize(jobId: "nobody") }),
            ("cancel an unknown job", { try await vm.cancel(jobId: "nobody", force: true) }),
            ("complete an unknown job", { try await vm.complete(jobId: "nobody") }),
            ("pull an unknown disk", { try await vm.startPull(disk: "no-such-drive", jobId: "p", speed: 0, onError: "report") }),
            ("commit a disk with no backing file", { try await vm.startCommit(disk: rig.disk, jobId: "c", baseFile: nil, speed: 0) }),
        ]
        for (what, attempt) in attempts {
            do {
                try await attempt()
                Issue.record("\(what): accepted")
            } catch let error as BackendError {
                #expect(error.isRefusal, "\(what): \(error.kind) \(error)")
                #expect(!error.description.isEmpty)
            }
        }
        #expect(try await vm.jobs().isEmpty, "nothing was started")
    }

    static func endsEventsOnClose(_ rig: ConformanceRig, _ vm: any VMSession) async throws {
        let events = vm.jobEvents()
        await vm.close()
        #expect(vm.isClosed)
        for await _ in events {}  // finishes: the watchdog of the test catches a hang
        await #expect(throws: BackendError.self) { try await vm.disks() }
    }

    // MARK: - Helpers

    /// The active medium of the rig's disk.
    static func active(_ rig: ConformanceRig, _ vm: any VMSession) async throws -> VMDisk.Medium? {
        try await vm.disks().device(named: rig.disk)?.medium
    }

    /// Switches the rig's disk to a new overlay `lc-overlay` and returns its file.
    static func switchToOverlay(_ rig: ConformanceRig, _ vm: any VMSession) async throws -> String {
        let overlay = try rig.makeOverlay("overlay.qcow2")
        try await vm.switchToOverlays([OverlayRequest(disk: .device(rig.disk), overlayFile: overlay, overlayNodeName: "lc-overlay")])
        return overlay
    }

    /// Polls the job list until job `id` shows `status` (at most 3 000 reads, 10 ms apart).
    @discardableResult
    static func waitFor(_ id: String, _ status: JobStatus, in vm: any VMSession) async throws -> CopyJob {
        var last: CopyJob?
        for _ in 0..<3000 {
            if let job = try await vm.jobs().first(where: { $0.id == id }) {
                if job.status == status { return job }
                last = job
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw BackendError(.protocolViolation, reason: "job \(id) never became \(status) (last seen: \(last.map { "\($0.status)" } ?? "absent"))")
    }

    /// The statuses of job `id` among `events`, up to `last`.
    static func statuses(of id: String, in events: AsyncStream<JobEvent>, until last: JobStatus) async -> [JobStatus] {
        var seen: [JobStatus] = []
        for await event in events {
            guard case .statusChanged(id, let status) = event else { continue }
            seen.append(status)
            if status == last { break }
        }
        return seen
    }
}
