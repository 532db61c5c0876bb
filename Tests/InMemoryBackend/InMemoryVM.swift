// An in-memory VM: devices with image chains, and jobs that advance one step each time
// the job list is read, with faults a test can script.

import Foundation
import LivecopyBackend
import Synchronization

/// A VM of `InMemoryHypervisor`. Its jobs follow QEMU's job model: a pull runs for
/// `stepsPerJob` reads of the job list, then waits in `pending` (or, without
/// `.holdsFinishedPull`, finishes by itself); a commit or mirror becomes `ready`. Tests
/// script faults (`fail(_:)`), I/O errors (`stopJobByIOError`), the flush's answer and
/// restarts (`restart(on:)`), and read the chain (`chain(of:)`).
public final class InMemoryVM: Sendable {
    /// A device and its chain, top first.
    public struct Device: Sendable {
        public var name: String
        public var nodeName: String
        public var chain: [Image]

        public init(name: String, nodeName: String? = nil, chain: [Image]) {
            self.name = name
            self.nodeName = nodeName ?? "node-\(name)"
            self.chain = chain
        }
    }

    /// One image of a chain.
    public struct Image: Sendable, Equatable {
        public var file: String
        public var format: String
        public var virtualSize: Int64

        public init(file: String, format: String = "qcow2", virtualSize: Int64 = 1 << 20) {
            self.file = file
            self.format = format
            self.virtualSize = virtualSize
        }
    }

    /// What a scripted fault does to the next call of an operation.
    public enum Fault: Sendable {
        /// The VM refuses it; nothing happens.
        case refuse(reason: String, transient: Bool)
        /// The session breaks before the VM acts.
        case loseSessionBefore
        /// The VM acts, then the session breaks before the answer.
        case loseSessionAfter
    }

    enum JobKind: Sendable {
        case pull
        case commit(baseFile: String?)
        case mirror(target: String, format: String)

        var type: String {
            switch self {
            case .pull: return "stream"
            case .commit: return "commit"
            case .mirror: return "mirror"
            }
        }
    }

    struct Job: Sendable {
        var id: String
        var kind: JobKind
        var device: String
        var status: JobStatus
        var steps = 0
        var error: String?
        var ioError: String?
        var speed: Int64 = 0
    }

    struct State: Sendable {
        var devices: [Device]
        var jobs: [String: Job] = [:]
        var order: [String] = []
        var running = true
        var sessions: [Int: (session: InMemoryVMSession, events: [AsyncStream<JobEvent>.Continuation])] = [:]
        var nextSession = 0
        var faults: [String: [Fault]] = [:]
        var flushAnswer: FlushEvidence = .confirmed
        var migration: String?
        var failNextJobWith: String?
        var calls: [String] = []
    }

    public let address: String
    public let capabilities: Set<BackendCapability>
    /// How many reads of the job list a job takes to finish its work.
    public let stepsPerJob = 3
    let state: Mutex<State>

    init(address: String, capabilities: Set<BackendCapability>, devices: [Device]) {
        self.address = address
        self.capabilities = capabilities
        self.state = Mutex(State(devices: devices))
    }

    // MARK: - What tests script and read

    /// The next call of `operation` (`startPull`, `switchToOverlays`, `finalize`, …) meets `fault`.
    public func fail(_ operation: String, with fault: Fault) {
        state.withLock { $0.faults[operation, default: []].append(fault) }
    }

    /// What the next flushes answer.
    public func answerFlushes(_ answer: FlushEvidence) {
        state.withLock { $0.flushAnswer = answer }
    }

    /// The VM's migration status from now on.
    public func setMigration(_ status: String?) {
        state.withLock { $0.migration = status }
    }

    /// The next job started concludes with `error` at its first step.
    public func failNextJob(with error: String) {
        state.withLock { $0.failNextJobWith = error }
    }

    /// Job `id` stops on an I/O error (`nospace`, `failed`), as under `on-error: enospc`.
    public func stopJobByIOError(_ id: String, status: String = "nospace") {
        let events = state.withLock { state -> [AsyncStream<JobEvent>.Continuation] in
            guard state.jobs[id] != nil else { return [] }
            state.jobs[id]?.status = .paused
            state.jobs[id]?.ioError = status
            return state.sessions.values.flatMap(\.events)
        }
        for continuation in events {
            continuation.yield(.ioError(id: id, operation: "write", action: "stop"))
            continuation.yield(.statusChanged(id: id, status: .paused))
        }
    }

    /// The chain of `device`, top first.
    public func chain(of device: String) -> [String] {
        state.withLock { $0.devices.first { $0.name == device }?.chain.map(\.file) ?? [] }
    }

    /// The ids of the jobs the VM shows.
    public var jobIds: [String] { state.withLock { $0.order } }

    /// Every operation called, in order (`switchToOverlays`, `startPull`, …).
    public var calls: [String] { state.withLock { $0.calls } }

    /// The VM stops: every session breaks, jobs are gone; `restart(on:)` brings it back.
    public func stop() {
        let sessions = state.withLock { state -> [InMemoryVMSession] in
            state.running = false
            state.jobs = [:]
            state.order = []
            return state.sessions.values.map(\.session)
        }
        for session in sessions { closeSession(session) }
    }

    /// The VM starts again with `device` on the chain `chain` (a manager's restart).
    public func restart(device: String, on chain: [Image]) {
        stop()
        state.withLock { state in
            if let index = state.devices.firstIndex(where: { $0.name == device }) {
                state.devices[index].chain = chain
                state.devices[index].nodeName = "node-\(device)-restarted"
            }
            state.running = true
        }
    }

    var isRunning: Bool { state.withLock { $0.running } }
    var migration: String? { state.withLock { $0.migration } }

    // MARK: - Sessions

    func openSession() -> InMemoryVMSession {
        state.withLock { state in
            state.nextSession += 1
            let session = InMemoryVMSession(vm: self, id: state.nextSession)
            state.sessions[session.id] = (session, [])
            return session
        }
    }

    func closeSession(_ session: InMemoryVMSession) {
        session.markClosed()
        let events = state.withLock { $0.sessions.removeValue(forKey: session.id)?.events ?? [] }
        for continuation in events { continuation.finish() }
    }

    func subscribe(_ session: InMemoryVMSession) -> AsyncStream<JobEvent> {
        let (stream, continuation) = AsyncStream<JobEvent>.makeStream()
        let open = state.withLock { state -> Bool in
            guard state.sessions[session.id] != nil else { return false }
            state.sessions[session.id]?.events.append(continuation)
            return true
        }
        if !open { continuation.finish() }
        return stream
    }

    func emit(_ events: [JobEvent]) {
        let continuations = state.withLock { $0.sessions.values.flatMap(\.events) }
        for event in events {
            for continuation in continuations { continuation.yield(event) }
        }
    }

    /// Runs one operation under its scripted fault, if any.
    func perform<T>(_ operation: String, session: InMemoryVMSession, _ body: () throws -> T) throws -> T {
        let fault = state.withLock { state -> Fault? in
            state.calls.append(operation)
            guard var queue = state.faults[operation], !queue.isEmpty else { return nil }
            let first = queue.removeFirst()
            state.faults[operation] = queue
            return first
        }
        switch fault {
        case nil:
            return try body()
        case .refuse(let reason, let transient)?:
            throw BackendError(.refused(transient: transient), operation: operation, reason: reason,
                               description: "\(operation) failed: \(reason)")
        case .loseSessionBefore?:
            closeSession(session)
            throw BackendError(.sessionLost, operation: operation, reason: "connection lost before \(operation)")
        case .loseSessionAfter?:
            _ = try body()
            closeSession(session)
            throw BackendError(.sessionLost, operation: operation, reason: "connection lost after \(operation)")
        }
    }

    func refused(_ operation: String, _ reason: String) -> BackendError {
        BackendError(.refused(transient: false), operation: operation, reason: reason, description: "\(operation) failed: \(reason)")
    }
}
