import Foundation
import LivecopyBackend

/// Why watching a job stopped without the job concluding.
enum JobWatchError: Error, CustomStringConvertible {
    /// The job is no longer in `query-jobs` (someone else dismissed it).
    case vanished(String)
    /// The job stayed paused by an I/O error for longer than the policy allows.
    case ioErrorTimeout(jobId: String, ioStatus: String, seconds: Double)

    var description: String {
        switch self {
        case .vanished(let id): return "job \(id) vanished from query-jobs"
        case .ioErrorTimeout(let id, let status, let seconds):
            return "job \(id) stayed paused by an I/O error (\(status)) for \(Int(seconds)) s"
        }
    }
}

/// Follows one job to its conclusion. Completion is driven by the VM's job events
/// (QMP's `JOB_STATUS_CHANGE`, `BLOCK_JOB_*`); the job list is polled only for progress and
/// as a safety net, so the poll interval never adds to the wall time.
struct JobWatcher {
    let session: any VMSession
    let jobId: String
    let pollInterval: Double
    let ioErrorWait: Double
    /// An events subscription taken before the job was started, so an event sent at once
    /// (an I/O error on the first read, say) is not missed; nil subscribes now.
    var subscription: AsyncStream<JobEvent>? = nil

    /// What the watcher tells its caller while it waits.
    struct Callbacks {
        var progress: (CopyJob) async -> Void = { _ in }
        /// Called once when the job is ready (commit jobs: time to `block-job-complete`).
        var ready: (() async throws -> Void)?
        /// Called once when the job waits in `pending` (started with auto-finalize off).
        var pending: (() async throws -> Void)?
        /// Called after each progress poll that finds the job running.
        var running: (() async -> Void)?
        /// Called for `BLOCK_JOB_ERROR` and for a job paused by an I/O error.
        var ioError: (String) async -> Void = { _ in }
        /// Called with the concluded job's error before `job-dismiss`, so the caller can
        /// persist what the conclusion proves while QEMU still shows the job.
        var concluded: ((String?) async throws -> Void)?
    }

    private enum Signal {
        case status(JobStatus)
        case ioErrorEvent(String)
        case tick
        /// The poll saw the job concluded, a moment ago: events sent before the
        /// conclusion (an I/O error, say) have been read by now.
        case settled
        case lost
    }

    /// How long a conclusion seen by polling waits for the events QEMU sent before it.
    /// QEMU sends a job's events before it shows the new status in `query-jobs`, so they
    /// are already on their way; the wait matters only when the job concluded before the
    /// subscription began (re-attaching after a restart), and then costs this once.
    static let settleDelay: Double = 0.2

    /// Waits until the job concludes, reads its `error`, dismisses it and returns the
    /// error (nil on success). The events subscription starts before the first query,
    /// so nothing is missed.
    func waitForConclusion(_ callbacks: Callbacks) async throws -> String? {
        let (signals, continuation) = AsyncStream<Signal>.makeStream()
        let events = subscription ?? session.jobEvents()
        let jobId = self.jobId
        let eventTask = Task {
            for await event in events {
                switch event {
                case .statusChanged(let id, let status):
                    if id == jobId { continuation.yield(.status(status)) }
                case .ioError(let id, let operation, let action):
                    if id == jobId { continuation.yield(.ioErrorEvent("I/O error on \(operation), action \(action)")) }
                }
            }
            continuation.yield(.lost)
        }
        let interval = pollInterval
        let tickTask = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(interval))
                continuation.yield(.tick)
            }
        }
        defer {
            eventTask.cancel()
            tickTask.cancel()
            continuation.finish()
        }
        continuation.yield(.tick)

        // Each called once, whether the event or a poll shows the status first.
        var onReady = Once(action: callbacks.ready)
        var onPending = Once(action: callbacks.pending)
        var settling = false
        var pausedByErrorSince: Date?
        var lastResumeAttempt = Date.distantPast
        for await signal in signals {
            switch signal {
            case .settled:
                return try await concludeAndDismiss(callbacks)
            case .status(let status):
                switch status {
                case .concluded:
                    return try await concludeAndDismiss(callbacks)
                case .ready:
                    try await onReady.run()
                case .pending:
                    try await onPending.run()
                case .undefined, .created, .running, .paused, .standby, .waiting, .aborting, .null, .unrecognized:
                    continue  // the next poll tells what to do, if anything
                }
            case .ioErrorEvent(let what):
                await callbacks.ioError(what)
            case .lost:
                throw BackendError(.sessionLost, reason: "connection lost: the VM's event stream ended while watching job \(jobId)")
            case .tick:
                guard let job = try await session.jobs().first(where: { $0.id == jobId }) else {
                    throw JobWatchError.vanished(jobId)
                }
                await callbacks.progress(job)
                switch job.status {
                case .concluded:
                    // Not yet: let the events before the conclusion be read first, so an
                    // error event just ahead of it is recorded.
                    guard !settling else { continue }
                    settling = true
                    Task {
                        try? await Task.sleep(for: .seconds(Self.settleDelay))
                        continuation.yield(.settled)
                    }
                case .ready:
                    try await onReady.run()
                case .pending:
                    try await onPending.run()
                case .paused:
                    guard let ioStatus = try await session.ioErrorStatus(ofJob: jobId) else {
                        pausedByErrorSince = nil  // paused on purpose (block-job-pause)
                        continue
                    }
                    let now = Date()
                    if pausedByErrorSince == nil {
                        pausedByErrorSince = now
                        await callbacks.ioError("job paused by an I/O error (io-status \(ioStatus)); waiting up to \(Int(ioErrorWait)) s, retrying every 10 s")
                    }
                    if let since = pausedByErrorSince, now.timeIntervalSince(since) >= ioErrorWait {
                        throw JobWatchError.ioErrorTimeout(jobId: jobId, ioStatus: ioStatus, seconds: ioErrorWait)
                    }
                    if now.timeIntervalSince(lastResumeAttempt) >= 10 {
                        lastResumeAttempt = now
                        try? await session.resume(jobId: jobId)
                    }
                case .running:
                    pausedByErrorSince = nil
                    await callbacks.running?()
                case .undefined, .created, .standby, .waiting, .aborting, .null:
                    pausedByErrorSince = nil
                case .unrecognized:
                    pausedByErrorSince = nil  // a newer QEMU's status: watch on, act on nothing
                }
            }
        }
        throw BackendError(.sessionLost, reason: "connection lost: stopped watching job \(jobId)")
    }

    /// A callback run at most once.
    private struct Once {
        var action: (() async throws -> Void)?

        mutating func run() async throws {
            guard let action else { return }
            self.action = nil
            try await action()
        }
    }

    /// Reads the concluded job's error, then dismisses it.
    private func concludeAndDismiss(_ callbacks: Callbacks) async throws -> String? {
        let job = try await session.jobs().first(where: { $0.id == jobId })
        guard let job else { throw JobWatchError.vanished(jobId) }
        await callbacks.progress(job)
        try await callbacks.concluded?(job.error)
        try await session.dismiss(jobId: jobId)
        CrashPoint.reach("sent:job-dismiss")
        return job.error
    }
}
