// One connection to libvirtd for one domain: the blocking calls, and the events libvirt
// delivers for it (QEMU monitor events, block job events, the connection closing).

import CLibvirt
import Foundation
import LivecopyBackend
import QMP
import Synchronization

/// A block job event from libvirt (`VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2`): the job on disk
/// `disk` (its target, `vda`) of type `type` (`virDomainBlockJobType`) reached `status`
/// (`virConnectDomainEventBlockJobStatus`: completed, failed, canceled, ready).
struct LibvirtBlockJobEvent: Sendable, Hashable {
    let disk: String
    let type: Int32
    let status: Int32
}

/// What libvirt's event thread hands to the sessions listening: QEMU monitor events,
/// block job events, and the connection closing. Shared with libvirt's C callbacks
/// through an opaque pointer, so it is a class.
final class LibvirtEventSink: Sendable {
    private struct State {
        var closedBecause: String?
        var nextID = 0
        var monitorListeners: [Int: AsyncStream<QMPEvent>.Continuation] = [:]
        var blockJobListeners: [Int: AsyncStream<LibvirtBlockJobEvent>.Continuation] = [:]
    }
    private let state = Mutex(State())

    /// Why the connection closed, or nil while it is open.
    var closedBecause: String? { state.withLock { $0.closedBecause } }

    func monitorEvents() -> AsyncStream<QMPEvent> { subscribe(\.monitorListeners) }

    func blockJobEvents() -> AsyncStream<LibvirtBlockJobEvent> { subscribe(\.blockJobListeners) }

    /// A new listener in `listeners`, removed when its stream ends; a stream that is over
    /// at once when the connection is closed already.
    private func subscribe<Event: Sendable>(
        _ listeners: WritableKeyPath<State, [Int: AsyncStream<Event>.Continuation]> & Sendable
    ) -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream<Event>.makeStream()
        let id: Int? = state.withLock { state in
            guard state.closedBecause == nil else { return nil }
            state.nextID += 1
            state[keyPath: listeners][state.nextID] = continuation
            return state.nextID
        }
        guard let id else { continuation.finish(); return stream }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0[keyPath: listeners].removeValue(forKey: id) } }
        return stream
    }

    func deliver(_ event: QMPEvent) {
        for listener in state.withLock({ Array($0.monitorListeners.values) }) { listener.yield(event) }
    }

    func deliver(_ event: LibvirtBlockJobEvent) {
        for listener in state.withLock({ Array($0.blockJobListeners.values) }) { listener.yield(event) }
    }

    /// Marks the connection closed and ends every listener's stream.
    func close(because reason: String) {
        let (monitors, blockJobs): ([AsyncStream<QMPEvent>.Continuation], [AsyncStream<LibvirtBlockJobEvent>.Continuation]) =
            state.withLock { state in
                if state.closedBecause == nil { state.closedBecause = reason }
                defer { state.monitorListeners = [:]; state.blockJobListeners = [:] }
                return (Array(state.monitorListeners.values), Array(state.blockJobListeners.values))
            }
        monitors.forEach { $0.finish() }
        blockJobs.forEach { $0.finish() }
    }
}

/// One connection to libvirtd and one running domain on it. Every libvirt call
/// runs on `LibvirtRuntime.calls`, never on Swift's cooperative threads; a failed call
/// throws `BackendError` in the words libvirt gave.
final class LibvirtDomainConnection: Sendable {
    let domainName: String
    let connection: LibvirtHandle
    let domain: LibvirtHandle
    let events: LibvirtEventSink
    private let callbacks: Mutex<(monitor: Int32, blockJob: Int32)?>
    /// How long a call may go unanswered before the session counts as lost (the
    /// policy's `command_timeout`): libvirt waits for QEMU's monitor without a limit.
    let commandTimeout: Double

    private init(domainName: String, connection: LibvirtHandle, domain: LibvirtHandle,
                 events: LibvirtEventSink, callbacks: (monitor: Int32, blockJob: Int32), commandTimeout: Double) {
        self.commandTimeout = commandTimeout
        self.domainName = domainName
        self.connection = connection
        self.domain = domain
        self.events = events
        self.callbacks = Mutex(callbacks)
    }

    /// Connects to libvirtd at `uri` and finds the running domain `name`; throws
    /// `.unreachable` naming what is wrong (no daemon, no such domain, not running).
    static func open(uri: String, domain name: String, commandTimeout: Double) async throws -> LibvirtDomainConnection {
        let opened = try await LibvirtRuntime.blocking(timeout: commandTimeout) { () throws -> LibvirtDomainConnection in
            guard LibvirtRuntime.start() else {
                throw BackendError(.unreachable, reason: "libvirt's event loop could not be registered")
            }
            guard let connection = virConnectOpen(uri) else {
                let failure = LibvirtFailure.last("virConnectOpen")
                throw BackendError(.unreachable, operation: "virConnectOpen", reason: failure.message,
                                   description: "cannot connect to libvirt at \(uri): \(failure.message)")
            }
            func fail(_ reason: String) -> BackendError {
                virConnectClose(connection)
                return BackendError(.unreachable, reason: reason)
            }
            // Notices a libvirtd that went away within about 15 s, even while nothing is sent.
            _ = virConnectSetKeepAlive(connection, 5, 3)
            guard let domain = virDomainLookupByName(connection, name) else {
                let failure = LibvirtFailure.last("virDomainLookupByName")
                throw fail("libvirt at \(uri) has no domain '\(name)' (\(failure.message))")
            }
            guard virDomainIsActive(domain) == 1 else {
                virDomainFree(domain)
                throw fail("libvirt domain '\(name)' at \(uri) is not running; start it first (virsh start \(name))")
            }
            let sink = LibvirtEventSink()
            let ids = register(sink, connection: connection, domain: domain)
            guard let ids else {
                let failure = LibvirtFailure.last("virConnectDomainEventRegisterAny")
                virDomainFree(domain)
                throw fail("libvirt at \(uri) refused livecopy's event registration: \(failure.message)")
            }
            return LibvirtDomainConnection(domainName: name, connection: LibvirtHandle(pointer: connection),
                                           domain: LibvirtHandle(pointer: domain), events: sink, callbacks: ids,
                                           commandTimeout: commandTimeout)
        }
        guard let opened else {
            throw BackendError(.unreachable, reason: "libvirt at \(uri) did not answer within \(Int(commandTimeout)) s")
        }
        return opened
    }

    /// Registers the QEMU monitor, block job and close callbacks; each holds a retained
    /// reference to `sink`, released by libvirt through `releaseSink` when deregistered.
    private static func register(_ sink: LibvirtEventSink, connection: OpaquePointer, domain: OpaquePointer)
        -> (monitor: Int32, blockJob: Int32)?
    {
        let monitor = virConnectDomainQemuMonitorEventRegister(
            connection, domain, nil, { _, _, event, seconds, micros, details, opaque in
                guard let opaque, let event else { return }
                let sink = Unmanaged<LibvirtEventSink>.fromOpaque(opaque).takeUnretainedValue()
                let data = details.flatMap { try? JSONDecoder().decode(JSONValue.self, from: Data(String(cString: $0).utf8)) }
                sink.deliver(QMPEvent(name: String(cString: event), data: data ?? .object([:]),
                                      timestamp: Double(seconds) + Double(micros) / 1_000_000))
            }, Unmanaged.passRetained(sink).toOpaque(), releaseSink, 0)
        guard monitor >= 0 else { return nil }
        let blockJobCallback: @convention(c) (OpaquePointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32, Int32, UnsafeMutableRawPointer?) -> Void = {
            _, _, disk, type, status, opaque in
            guard let opaque, let disk else { return }
            let sink = Unmanaged<LibvirtEventSink>.fromOpaque(opaque).takeUnretainedValue()
            sink.deliver(LibvirtBlockJobEvent(disk: String(cString: disk), type: type, status: status))
        }
        let blockJob = virConnectDomainEventRegisterAny(
            connection, domain, Int32(VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2.rawValue),
            unsafeBitCast(blockJobCallback, to: virConnectDomainEventGenericCallback.self),
            Unmanaged.passRetained(sink).toOpaque(), releaseSink)
        guard blockJob >= 0 else {
            _ = virConnectDomainQemuMonitorEventDeregister(connection, monitor)
            return nil
        }
        _ = virConnectRegisterCloseCallback(connection, closeCallback, Unmanaged.passRetained(sink).toOpaque(), releaseSink)
        return (monitor, blockJob)
    }

    /// One function for registering and unregistering (libvirt matches it by address).
    private static let closeCallback: virConnectCloseFunc = { _, reason, opaque in
        guard let opaque else { return }
        let sink = Unmanaged<LibvirtEventSink>.fromOpaque(opaque).takeUnretainedValue()
        sink.close(because: "the connection to libvirtd closed (\(LibvirtDomainConnection.closeReason(reason)))")
    }

    private static let releaseSink: virFreeCallback = { opaque in
        guard let opaque else { return }
        Unmanaged<LibvirtEventSink>.fromOpaque(opaque).release()
    }

    static func closeReason(_ reason: Int32) -> String {
        switch UInt32(reason) {
        case VIR_CONNECT_CLOSE_REASON_ERROR.rawValue: return "an I/O error"
        case VIR_CONNECT_CLOSE_REASON_EOF.rawValue: return "libvirtd went away"
        case VIR_CONNECT_CLOSE_REASON_KEEPALIVE.rawValue: return "keepalive timed out"
        case VIR_CONNECT_CLOSE_REASON_CLIENT.rawValue: return "closed by livecopy"
        default: return "reason \(reason)"
        }
    }

    /// True once the connection closed or broke.
    var isClosed: Bool { events.closedBecause != nil }

    /// Runs `body` with the domain on libvirt's call queue. `body` returns nil (or a
    /// negative status, through `check`) when libvirt failed; the failure is then read
    /// and thrown as a `BackendError`.
    func call<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (OpaquePointer) throws -> T?) async throws -> T {
        if let reason = events.closedBecause {
            throw BackendError(.sessionLost, operation: operation, reason: reason)
        }
        let domain = self.domain
        let answer: Result<T, LibvirtFailure>? = try await LibvirtRuntime.blocking(timeout: commandTimeout) {
            if let value = try body(domain.pointer) { return .success(value) }
            return .failure(LibvirtFailure.last(operation))
        }
        guard let result = answer else {
            // Left behind: whatever it does now, the session can no longer tell.
            let reason = "\(operation) got no answer from libvirt within \(formatted(commandTimeout)) s"
            events.close(because: reason)
            throw BackendError(.sessionLost, operation: operation, reason: reason)
        }
        switch result {
        case .success(let value): return value
        case .failure(let failure):
            if failure.isAboutTheConnection { events.close(because: failure.message) }
            throw failure.backendError
        }
    }

    /// `call` for libvirt functions that return a status (0 or more: success).
    func check(_ operation: String, _ body: @escaping @Sendable (OpaquePointer) -> Int32) async throws {
        _ = try await call(operation) { domain -> Int32? in
            let status = body(domain)
            return status < 0 ? nil : status
        }
    }

    private func formatted(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }

    /// Deregisters the callbacks and closes the connection; calls in flight fail.
    func close() async {
        guard let ids = callbacks.withLock({ ids in defer { ids = nil }; return ids }) else { return }
        let connection = self.connection, domain = self.domain
        _ = try? await LibvirtRuntime.blocking(timeout: commandTimeout) {
            _ = virConnectDomainQemuMonitorEventDeregister(connection.pointer, ids.monitor)
            _ = virConnectDomainEventDeregisterAny(connection.pointer, ids.blockJob)
            _ = virConnectUnregisterCloseCallback(connection.pointer, LibvirtDomainConnection.closeCallback)
            virDomainFree(domain.pointer)
            virConnectClose(connection.pointer)
        }
        events.close(because: "closed by livecopy")
    }
}
