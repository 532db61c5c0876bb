import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyStore
import QMP
import QMPBackend
import TestSupport
import Testing

/// A VM with one disk (`drive0`), played by a `FakeQMPPeer`: it answers the recipe's
/// commands from a small model of the block layer (active image, backing file, jobs),
/// and can be told to misbehave once on a given command.
// @unchecked: test fake; its model changes under `lock` (the peer's handler calls in from the event loop), `peer` is set once by attach.
final class FakeVM: @unchecked Sendable {
    /// What a new stream job does.
    enum StreamBehaviour {
        /// Runs and concludes at once, without error.
        case completeAtOnce
        /// Stays running until the test calls `concludeJobs()`.
        case stayRunning
        /// Pauses on an I/O error (`BLOCK_JOB_ERROR` with `operation`, `action: stop`,
        /// io-status `ioStatus`); `block-job-resume` succeeds only if `resumeSucceeds`.
        case pauseOnError(ioStatus: String, operation: String, resumeSucceeds: Bool)
        /// Concludes at once with this error (`on-error: report`); the backing file stays.
        case failAtOnce(error: String, operation: String)
    }

    struct Job {
        var type: String
        var status: String
        var error: String?
        var ioStatus = "ok"
    }

    /// A one-shot misbehaviour on a command. `executes`: the command takes effect in the
    /// fake VM although its reply is lost.
    struct Fault {
        let reply: FakeReply
        let executes: Bool
        /// How many more times the command misbehaves.
        var remaining = 1
    }

    let source: String
    let lock = NSLock()
    private var active: String
    private var backing: String?
    private var jobs: [String: Job] = [:]
    private var faults: [String: Fault] = [:]
    var streamBehaviour: StreamBehaviour = .completeAtOnce
    private weak var peer: FakeQMPPeer?

    init(source: String) {
        self.source = source
        self.active = source
    }

    func attach(_ peer: FakeQMPPeer) { lock.withLock { self.peer = peer } }

    func arm(_ command: String, _ reply: FakeReply, executes: Bool, times: Int = 1) {
        lock.withLock { faults[command] = Fault(reply: reply, executes: executes, remaining: times) }
    }

    func setStreamBehaviour(_ behaviour: StreamBehaviour) { lock.withLock { streamBehaviour = behaviour } }

    var chain: (active: String, backing: String?) { lock.withLock { (active, backing) } }
    var jobIds: [String] { lock.withLock { Array(jobs.keys) } }

    /// Concludes every running job successfully (a stream drops the backing file) and
    /// sends the events.
    func concludeJobs() {
        let ids = lock.withLock { () -> [String] in
            let running = jobs.filter { $0.value.status != "concluded" }.map(\.key)
            for id in running {
                jobs[id]?.status = "concluded"
                if jobs[id]?.type == "stream" { backing = nil }
            }
            return running
        }
        for id in ids { peer?.send(event: "JOB_STATUS_CHANGE", data: ["id": .string(id), "status": "concluded"]) }
    }

    func handle(_ name: String, _ arguments: JSONValue?, _ id: JSONValue?) -> FakeReply? {
        lock.lock()
        defer { lock.unlock() }
        if var fault = faults.removeValue(forKey: name) {
            fault.remaining -= 1
            if fault.remaining > 0 { faults[name] = fault }
            if fault.executes { _ = perform(name, arguments) }
            return fault.reply
        }
        return perform(name, arguments)
    }

    private static func event(_ name: String, _ data: JSONValue) -> QMPEvent {
        QMPEvent(name: name, data: data, timestamp: Date().timeIntervalSince1970)
    }

    private static func statusChange(_ id: String, _ status: String) -> QMPEvent {
        event("JOB_STATUS_CHANGE", ["id": .string(id), "status": .string(status)])
    }

    /// The fake's behaviour; called with the lock held.
    private func perform(_ name: String, _ arguments: JSONValue?) -> FakeReply? {
        let size: JSONValue = .int(64 << 20)
        switch name {
        case "query-block":
            var image: [String: JSONValue] = ["filename": .string(active), "format": "qcow2", "virtual-size": size]
            var inserted: [String: JSONValue] = ["file": .string(active), "node-name": "top", "drv": "qcow2"]
            if let backing {
                image["backing-filename"] = .string(backing)
                image["backing-filename-format"] = "qcow2"
                image["backing-image"] = ["filename": .string(backing), "format": "qcow2", "virtual-size": size]
                inserted["backing_file"] = .string(backing)
            }
            inserted["image"] = .object(image)
            return .return([["device": "drive0", "qdev": "disk0", "inserted": .object(inserted)]])
        case "transaction":
            // The one disk's blockdev-snapshot-sync action.
            guard case .array(let actions)? = arguments?["actions"], actions.count == 1,
                  actions[0]["type"]?.stringValue == "blockdev-snapshot-sync" else {
                return .error(class: "GenericError", desc: "the fake VM takes one blockdev-snapshot-sync action")
            }
            backing = active
            active = actions[0]["data"]?["snapshot-file"]?.stringValue ?? "?"
            return .return([:])
        case "query-migrate":
            return .return([:])  // never migrated
        case "query-jobs":
            return .return(.array(jobs.sorted { $0.key < $1.key }.map { id, job in
                var info: [String: JSONValue] = [
                    "id": .string(id), "type": .string(job.type), "status": .string(job.status),
                    "current-progress": 1, "total-progress": 1,
                ]
                if let error = job.error { info["error"] = .string(error) }
                return .object(info)
            }))
        case "query-block-jobs":
            return .return(.array(jobs.filter { $0.value.status != "concluded" }.sorted { $0.key < $1.key }.map { id, job in
                ["device": .string(id), "type": .string(job.type), "paused": .bool(job.status == "paused"),
                 "speed": 0, "io-status": .string(job.ioStatus)]
            }))
        case "block-stream":
            let id = arguments?["job-id"]?.stringValue ?? "?"
            switch streamBehaviour {
            case .completeAtOnce:
                jobs[id] = Job(type: "stream", status: "concluded")
                backing = nil
                return .returnWithEvents([:], before: [], after: [Self.statusChange(id, "running"), Self.statusChange(id, "concluded")])
            case .stayRunning:
                jobs[id] = Job(type: "stream", status: "running")
                return .returnWithEvents([:], before: [], after: [Self.statusChange(id, "running")])
            case .pauseOnError(let ioStatus, let operation, _):
                jobs[id] = Job(type: "stream", status: "paused", ioStatus: ioStatus)
                return .returnWithEvents([:], before: [], after: [
                    Self.statusChange(id, "running"),
                    Self.event("BLOCK_JOB_ERROR", ["device": .string(id), "operation": .string(operation), "action": "stop"]),
                    Self.statusChange(id, "paused"),
                ])
            case .failAtOnce(let error, let operation):
                jobs[id] = Job(type: "stream", status: "concluded", error: error)
                return .returnWithEvents([:], before: [], after: [
                    Self.statusChange(id, "running"),
                    Self.event("BLOCK_JOB_ERROR", ["device": .string(id), "operation": .string(operation), "action": "report"]),
                    Self.statusChange(id, "concluded"),
                ])
            }
        case "block-job-resume":
            let id = arguments?["device"]?.stringValue ?? "?"
            guard jobs[id]?.status == "paused" else { return .error(class: "GenericError", desc: "The active block job '\(id)' is not paused") }
            if case .pauseOnError(_, let operation, let succeeds) = streamBehaviour, !succeeds {
                return .returnWithEvents([:], before: [], after: [
                    Self.statusChange(id, "running"),
                    Self.event("BLOCK_JOB_ERROR", ["device": .string(id), "operation": .string(operation), "action": "stop"]),
                    Self.statusChange(id, "paused"),
                ])
            }
            jobs[id]?.status = "concluded"
            jobs[id]?.ioStatus = "ok"
            if jobs[id]?.type == "stream" { backing = nil }
            return .returnWithEvents([:], before: [], after: [Self.statusChange(id, "running"), Self.statusChange(id, "concluded")])
        case "block-job-cancel":
            let id = arguments?["device"]?.stringValue ?? "?"
            guard let job = jobs[id] else { return .error(class: "DeviceNotActive", desc: "Block job '\(id)' not found") }
            if job.status == "paused" && arguments?["force"]?.boolValue != true {
                return .error(class: "GenericError", desc: "Job '\(id)' is paused; force needed")  // what livecopy must avoid
            }
            jobs[id]?.status = "concluded"
            jobs[id]?.error = "Operation canceled"
            return .returnWithEvents([:], before: [], after: [Self.statusChange(id, "concluded")])
        case "block-commit":
            let id = arguments?["job-id"]?.stringValue ?? "?"
            jobs[id] = Job(type: "commit", status: "ready")
            return .returnWithEvents([:], before: [], after: [
                Self.statusChange(id, "running"), Self.event("BLOCK_JOB_READY", ["device": .string(id)]), Self.statusChange(id, "ready"),
            ])
        case "block-job-complete":
            let id = arguments?["device"]?.stringValue ?? "?"
            guard jobs[id]?.status == "ready" else { return .error(class: "GenericError", desc: "job \(id) not ready") }
            jobs[id]?.status = "concluded"
            if let backing { active = backing }
            backing = nil
            return .returnWithEvents([:], before: [], after: [Self.statusChange(id, "concluded")])
        case "job-dismiss":
            let id = arguments?["id"]?.stringValue ?? "?"
            guard jobs[id]?.status == "concluded" else { return .error(class: "GenericError", desc: "job \(id) not concluded") }
            jobs[id] = nil
            return .return([:])
        default:
            return nil
        }
    }
}


/// Creates the destination as an empty file, exclusively.
struct StubCreator: DestinationCreator {
    func createOverlay(at path: String, backing: String, backingFormat: String, virtualSize: Int64) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StubCreationFailed(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        close(fd)
    }
    func createImage(at path: String, format: DestinationFormat, virtualSize: Int64) throws {
        try createOverlay(at: path, backing: "", backingFormat: "", virtualSize: virtualSize)
    }
}

struct StubCreationFailed: Error, CustomStringConvertible { let description: String }

/// A fake VM, its peer, a store, and a plan for its one disk.
struct FakeSetup {
    let scratch: TemporaryDirectory
    let vm: FakeVM
    let peer: FakeQMPPeer
    let store: SQLiteStore
    let destination: String
    var source: String { vm.source }

    /// `observe` sees each command's name, with the store, before the fake VM answers it.
    static func start(_ name: String, observe: (@Sendable (String, SQLiteStore) -> Void)? = nil) async throws -> FakeSetup {
        let scratch = try TemporaryDirectory(prefix: name)
        let source = scratch.appending("src.qcow2")
        _ = FileManager.default.createFile(atPath: source, contents: Data())
        let vm = FakeVM(source: source)
        let store = try SQLiteStore(path: scratch.appending("livecopy.db"))
        let peer = try await FakeQMPPeer.start { name, arguments, id in
            observe?(name, store)
            return vm.handle(name, arguments, id)
        }
        vm.attach(peer)
        return FakeSetup(scratch: scratch, vm: vm, peer: peer, store: store, destination: scratch.appending("dst.qcow2"))
    }

    func stop() {
        peer.stop()
        scratch.remove()
    }

    var plan: Plan {
        Plan(name: "fake", policyReference: nil, vms: [
            .init(name: "fake", address: .qmp(socket: peer.socketPath), disks: [.init(device: "drive0", destination: destination)]),
        ])
    }

    static func policy(_ adjust: (inout Policy) -> Void = { _ in }) throws -> Policy {
        var policy = try Policy.resolve(nil)
        policy.retireSource = .keep
        policy.verify = .none  // the fake VM keeps no data to compare (VerificationIntegrationTests do, on real QEMU)
        policy.progressInterval = 0.1
        policy.commandTimeout = 1
        adjust(&policy)
        return policy
    }

    func engine(_ policy: Policy) -> Engine {
        Engine(store: store, hypervisor: QMPHypervisor(connector: TestConnector()), inspector: StubInspector(), creator: StubCreator(),
               commandTimeout: policy.commandTimeout)
    }

    /// Checks and records the plan with a first engine.
    func record(_ engine: Engine, _ policy: Policy) async throws -> Int64 {
        let disks = try await engine.preflight(plan, policy: policy)
        return try engine.record(plan, policy: policy, disks: disks).id
    }

    /// Every disk transition recorded, as `from→to`, each one allowed by the table.
    func transitions(_ planId: Int64) throws -> [String] {
        let events = try store.events(ofPlan: planId).filter { $0.kind == .transition && $0.diskId != nil }
        for event in events {
            let from = try #require(DiskState(rawValue: event.from ?? ""))
            let to = try #require(DiskState(rawValue: event.to ?? ""))
            #expect(from.canMove(to: to), "illegal transition \(from)→\(to)")
        }
        return events.map { "\($0.from ?? "")→\($0.to ?? "")" }
    }

    /// Records the plan under `policy`, arms the fake VM, and runs the plan once with an
    /// engine of its own.
    func runOnce(_ policy: Policy, arm: (FakeVM) -> Void) async throws -> (planId: Int64, plan: PlanRecord) {
        let engine = self.engine(policy)
        let planId = try await record(engine, policy)
        arm(vm)
        let plan = try await engine.run(planId: planId)
        await engine.shutdown()
        return (planId, plan)
    }

    func details(_ planId: Int64) throws -> [String] {
        try store.events(ofPlan: planId).map(\.detail)
    }
}

/// QMP faults against a scripted fake VM: each must leave a one-line error in the disk's
/// record and the events table, a legal state in SQLite, and a plan that the next run
/// (what `recover` does) finishes once the peer behaves.
@Suite(.serialized)
struct QMPFaultTests {
    /// Runs the plan once with `fault` armed on `command`, checks the failed disk, then
    /// runs it again with a new engine (a new connection; the peer now behaves) to completion.
    func faultThenRecover(
        _ name: String, command: String, reply: FakeReply, executes: Bool, times: Int = 1, expectError: String,
        streamBehaviour: FakeVM.StreamBehaviour = .completeAtOnce, policy adjust: (inout Policy) -> Void = { _ in },
        stoppedOn image: KeyPath<FakeSetup, String> = \.destination
    ) async throws {
        let setup = try await FakeSetup.start(name)
        defer { setup.stop() }
        let policy = try FakeSetup.policy(adjust)
        let (planId, stopped) = try await setup.runOnce(policy) { vm in
            vm.setStreamBehaviour(streamBehaviour)
            vm.arm(command, reply, executes: executes, times: times)
        }

        #expect(stopped.state == .failed, "\(name): plan \(stopped.state)")
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.state == .failed)
        let error = disk.error ?? ""
        #expect(error.contains(expectError), "\(name): disk error is \(error)")
        #expect(!error.contains("\n"), "one line")
        #expect(try setup.details(planId).contains { $0.contains(expectError) }, "\(name): the events table names the error")
        #expect(stopped.error?.contains(expectError) == true, "\(name): the plan's error names it")
        #expect(setup.peer.receivedCommandNames.filter { $0 == command }.count == times, "\(name): \(command) sent once per fault")
        #expect(setup.vm.chain.active == setup[keyPath: image], "\(name): VM on \(setup.vm.chain.active)")
        #expect(disk.bootImage == setup[keyPath: image])
        if image == \FakeSetup.source {
            #expect(!FileManager.default.fileExists(atPath: setup.destination), "the file livecopy made is removed")
        } else {
            #expect(FileManager.default.fileExists(atPath: setup.destination), "the VM's image is kept")
        }
        _ = try setup.transitions(planId)

        // The peer behaves now; a new engine (as recover would) finishes the plan.
        setup.vm.setStreamBehaviour(.completeAtOnce)
        let second = setup.engine(policy)
        let finished = try await second.run(planId: planId)
        await second.shutdown()
        #expect(finished.state == .completed, "\(name): second run \(finished.state) \(finished.error ?? "")")
        #expect(setup.vm.chain.active == setup.destination)
        #expect(setup.vm.chain.backing == nil)
        #expect(setup.vm.jobIds.isEmpty, "the job was dismissed")
        let transitions = try setup.transitions(planId)
        #expect(transitions.last == "retiring→completed")
        #expect(setup.peer.connectionCount == 2)
    }

    @Test(.timeLimit(.minutes(1)))
    func socketClosedDuringBlockStream() async throws {
        // QEMU started the job, then the connection dropped before the reply.
        try await faultThenRecover("lc-close", command: "block-stream", reply: .closeConnection, executes: true,
                                   expectError: "QMP connection lost")
    }

    @Test(.timeLimit(.minutes(1)))
    func garbageInsteadOfAReply() async throws {
        try await faultThenRecover("lc-garbage", command: "block-stream", reply: .raw("}}garbage{{ \u{1}\r\n"), executes: false,
                                   expectError: "QMP protocol violation")
    }

    @Test(.timeLimit(.minutes(1)))
    func truncatedJSONReply() async throws {
        try await faultThenRecover("lc-truncated", command: "block-stream", reply: .raw("{\"return\": {}, \"id\": \"\r\n"),
                                   executes: true, expectError: "QMP protocol violation")
    }

    @Test(.timeLimit(.minutes(1)))
    func truncatedJSONThenSilence() async throws {
        // Half a line and nothing more: the command times out (command_timeout 1 s).
        try await faultThenRecover("lc-half", command: "block-stream", reply: .raw("{\"return\": {"), executes: true,
                                   expectError: "got no reply within")
    }

    @Test(.timeLimit(.minutes(1)))
    func neverAnswering() async throws {
        try await faultThenRecover("lc-silent", command: "block-stream", reply: .noReply, executes: true,
                                   expectError: "QMP command block-stream got no reply within 1")
    }

    @Test(.timeLimit(.minutes(1)))
    func neverAnsweringAPoll() async throws {
        // The job runs; the poll of query-jobs gets no answer.
        try await faultThenRecover("lc-silentpoll", command: "query-block-jobs", reply: .noReply, executes: false,
                                   expectError: "query-block-jobs got no reply",
                                   streamBehaviour: .pauseOnError(ioStatus: "nospace", operation: "write", resumeSucceeds: true))
    }

    @Test(.timeLimit(.minutes(1)))
    func errorClassReply() async throws {
        try await faultThenRecover("lc-errclass", command: "block-stream",
                                   reply: .error(class: "DeviceNotFound", desc: "Cannot find device='drive0' nor node-name='drive0'"),
                                   executes: false, expectError: "block-stream failed: DeviceNotFound: Cannot find device")
    }

    // MARK: - Transient errors, retried with backoff (qmp_retries, qmp_retry_backoff)

    static let busy = FakeReply.error(class: "GenericError", desc: "Node 'drive0' is busy: block device is in use by block job: backup")

    @Test(.timeLimit(.minutes(1)))
    func aBusyDeviceIsRetriedWithBackoffUntilItIsFree() async throws {
        let setup = try await FakeSetup.start("lc-busy")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.qmpRetries = 3; $0.qmpRetryBackoff = 0.1 }
        let started = Date()
        let (planId, plan) = try await setup.runOnce(policy) { vm in
            vm.arm("block-stream", Self.busy, executes: false, times: 2)
            vm.arm("transaction", Self.busy, executes: false, times: 1)
        }
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        #expect(setup.peer.receivedCommandNames.filter { $0 == "block-stream" }.count == 3, "two refusals, then the job started")
        #expect(setup.peer.receivedCommandNames.filter { $0 == "transaction" }.count == 2)
        // Backoff: 0.1 s before the snapshot's retry; 0.1 s then 0.2 s before the stream's.
        #expect(Date().timeIntervalSince(started) >= 0.4)
        let details = try setup.details(planId)
        #expect(details.contains { $0.contains("is busy") && $0.contains("retry 1 of 3 in 0.10 s") }, "\(details)")
        #expect(details.contains { $0.contains("block-stream failed") && $0.contains("retry 2 of 3 in 0.20 s") }, "\(details)")
        #expect(setup.vm.chain.backing == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func aDeviceStillBusyAfterTheRetriesFailsTheDiskResumably() async throws {
        try await faultThenRecover("lc-busylong", command: "block-stream", reply: Self.busy, executes: false, times: 3,
                                   expectError: "block-stream failed: GenericError: Node 'drive0' is busy",
                                   policy: { $0.qmpRetries = 2; $0.qmpRetryBackoff = 0.05 })
    }

    @Test(.timeLimit(.minutes(1)))
    func aPermanentErrorIsNotRetried() async throws {
        let setup = try await FakeSetup.start("lc-noretry")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.qmpRetries = 5; $0.qmpRetryBackoff = 0.05 }
        let (planId, plan) = try await setup.runOnce(policy) { vm in
            vm.arm("block-stream", .error(class: "GenericError", desc: "Invalid parameter 'speed'"), executes: false)
        }
        #expect(plan.state == .failed)
        #expect(setup.peer.receivedCommandNames.filter { $0 == "block-stream" }.count == 1)
        let details = try setup.details(planId)
        #expect(!details.contains { $0.contains("transient, retry") }, "\(details)")
    }

    @Test(.timeLimit(.minutes(1)))
    func aRefusedSnapshotSwitchesNothingAndRemovesTheFileItMade() async throws {
        try await faultThenRecover("lc-txnrefused", command: "transaction",
                                   reply: .error(class: "GenericError", desc: "Could not open 'x': Permission denied"), executes: false,
                                   expectError: "transaction failed: GenericError: Could not open", stoppedOn: \.source)
    }

    @Test(.timeLimit(.minutes(1)))
    func socketClosedWhileTheJobRuns() async throws {
        let setup = try await FakeSetup.start("lc-closejob")
        defer { setup.stop() }
        let policy = try FakeSetup.policy()
        let first = setup.engine(policy)
        let planId = try await setup.record(first, policy)
        setup.vm.setStreamBehaviour(.stayRunning)
        let run = Task { try await first.run(planId: planId) }
        try await setup.peer.waitForCommand(named: "block-stream")
        try await Task.sleep(for: .milliseconds(300))
        setup.peer.disconnectClients()
        let stopped = try await run.value
        await first.shutdown()
        #expect(stopped.state == .failed)
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.state == .failed)
        #expect(disk.error?.contains("connection lost") == true, "\(disk.error ?? "")")
        _ = try setup.transitions(planId)

        // Meanwhile the job finished in QEMU; the next run re-attaches, dismisses and completes.
        setup.vm.concludeJobs()
        let second = setup.engine(policy)
        let finished = try await second.run(planId: planId)
        await second.shutdown()
        #expect(finished.state == .completed, "\(finished.error ?? "")")
        #expect(try setup.details(planId).contains { $0.contains("re-attaching to QEMU job") })
        #expect(setup.vm.jobIds.isEmpty)
        #expect(setup.vm.chain.backing == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func unrelatedEventStormWhileTheJobRuns() async throws {
        let setup = try await FakeSetup.start("lc-storm")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.commandTimeout = 30 }
        let engine = setup.engine(policy)
        let planId = try await setup.record(engine, policy)
        setup.vm.setStreamBehaviour(.stayRunning)
        let run = Task { try await engine.run(planId: planId) }
        try await setup.peer.waitForCommand(named: "block-stream")
        var storm = ""
        for index in 0..<20_000 {
            let event: QMPEvent
            switch index % 4 {
            case 0: event = QMPEvent(name: "JOB_STATUS_CHANGE", data: ["id": .string("other-\(index)"), "status": "concluded"], timestamp: 1)
            case 1: event = QMPEvent(name: "BLOCK_JOB_ERROR", data: ["device": "other", "operation": "read", "action": "stop"], timestamp: 1)
            case 2: event = QMPEvent(name: "BLOCK_IO_ERROR", data: ["device": "drive9", "operation": "write", "action": "report", "nospace": false], timestamp: 1)
            default: event = QMPEvent(name: "RTC_CHANGE", data: ["offset": .int(Int64(index))], timestamp: 1)
            }
            storm += FakeQMPPeer.line(for: event)
            if index % 1000 == 999 {
                setup.peer.sendRaw(storm)
                storm = ""
            }
        }
        setup.vm.concludeJobs()
        let plan = try await run.value
        await engine.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        let events = try setup.store.events(ofPlan: planId)
        #expect(events.count < 60, "unrelated events leave no trace: \(events.count) rows")
        #expect(!events.contains { $0.detail.contains("other") })
        #expect(setup.vm.jobIds.isEmpty)
    }

    // MARK: - I/O errors, engine level (the EIO paths that real QEMU cannot be made to show here)

    @Test(.timeLimit(.minutes(1)))
    func readErrorWithOnErrorStopPausesThenResumeSucceeds() async throws {
        let setup = try await FakeSetup.start("lc-eio-stop")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.onError = .stop; $0.ioErrorWait = 30 }
        let engine = setup.engine(policy)
        let planId = try await setup.record(engine, policy)
        setup.vm.setStreamBehaviour(.pauseOnError(ioStatus: "failed", operation: "read", resumeSucceeds: true))
        let plan = try await engine.run(planId: planId)
        await engine.shutdown()
        #expect(plan.state == .completed, "\(plan.error ?? "")")
        let stream = try #require(setup.peer.receivedCommands.first { $0.name == "block-stream" })
        #expect(stream.arguments?["on-error"]?.stringValue == "stop")
        #expect(setup.peer.receivedCommandNames.contains("block-job-resume"))
        let details = try setup.details(planId)
        #expect(details.contains { $0.contains("paused by an I/O error (io-status failed)") }, "\(details)")
        #expect(details.contains { $0.contains("I/O error on read, action stop") }, "\(details)")
        #expect(setup.vm.chain.backing == nil)
    }

    @Test(.timeLimit(.minutes(1)))
    func readErrorWithOnErrorReportRollsBackToTheSource() async throws {
        let setup = try await FakeSetup.start("lc-eio-report")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.onError = .report; $0.onFailure = .rollback }
        let engine = setup.engine(policy)
        let planId = try await setup.record(engine, policy)
        setup.vm.setStreamBehaviour(.failAtOnce(error: "Input/output error", operation: "read"))
        let plan = try await engine.run(planId: planId)
        await engine.shutdown()
        #expect(plan.state == .rolledBack, "\(plan.error ?? "")")
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.error?.contains("Input/output error") == true, "\(disk.error ?? "")")
        // The error event came just before the conclusion: it is recorded all the same.
        let details = try setup.details(planId)
        #expect(details.contains { $0.contains("I/O error on read, action report") }, "\(details)")
        #expect(setup.vm.chain.active == setup.vm.source)
        #expect(setup.vm.chain.backing == nil)
        #expect(!FileManager.default.fileExists(atPath: setup.destination))
        #expect(try setup.transitions(planId) == ["pending→snapshotting", "snapshotting→streaming", "streaming→rolling_back", "rolling_back→rolled_back"])
        #expect(setup.vm.jobIds.isEmpty)
    }

    @Test(.timeLimit(.minutes(1)))
    func ioErrorOutlastingTheWaitCancelsWithForceAndStops() async throws {
        let setup = try await FakeSetup.start("lc-eio-wait")
        defer { setup.stop() }
        let policy = try FakeSetup.policy { $0.onError = .enospc; $0.ioErrorWait = 1; $0.onFailure = .stop }
        let engine = setup.engine(policy)
        let planId = try await setup.record(engine, policy)
        setup.vm.setStreamBehaviour(.pauseOnError(ioStatus: "nospace", operation: "read", resumeSucceeds: false))
        let plan = try await engine.run(planId: planId)
        await engine.shutdown()
        #expect(plan.state == .failed)
        let disk = try #require(try setup.store.disks(ofPlan: planId).first)
        #expect(disk.state == .failed)
        #expect(disk.error?.contains("stayed paused by an I/O error (nospace)") == true, "\(disk.error ?? "")")
        let cancel = try #require(setup.peer.receivedCommands.first { $0.name == "block-job-cancel" })
        #expect(cancel.arguments?["force"]?.boolValue == true)
        #expect(setup.vm.chain.active == setup.destination)
        #expect(setup.vm.jobIds.isEmpty, "the cancelled job was dismissed")

        // Space freed: the next run streams again and completes.
        setup.vm.setStreamBehaviour(.completeAtOnce)
        let second = setup.engine(policy)
        let finished = try await second.run(planId: planId)
        await second.shutdown()
        #expect(finished.state == .completed, "\(finished.error ?? "")")
    }
}
