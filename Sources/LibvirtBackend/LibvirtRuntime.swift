// libvirt's process-wide setup: initialization, a silent error handler, and the event
// loop thread that delivers events and keepalives.

import CLibvirt
import Foundation
import Synchronization

/// libvirt's process-wide state, set up once before the first connection.
///
/// libvirt delivers domain events (block jobs, QEMU monitor events) and connection
/// keepalives from its default event loop, which someone must run: `start()` registers
/// it and runs `virEventRunDefaultImpl` on a thread of its own for the life of the
/// process. libvirt's default error handler prints every error to stderr; livecopy reads
/// errors itself (`LibvirtFailure`), so the handler is replaced by a silent one.
enum LibvirtRuntime {
    /// Runs once: `start()` reads it.
    private static let started: Bool = {
        _ = virInitialize()
        virSetErrorFunc(nil) { _, _ in }
        guard virEventRegisterDefaultImpl() == 0 else { return false }
        let thread = Thread {
            while true {
                if virEventRunDefaultImpl() != 0 {
                    // Never expected; a pause keeps a broken loop from spinning.
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
        }
        thread.name = "libvirt-event-loop"
        thread.start()
        return true
    }()

    /// Sets libvirt up and starts its event loop (once per process); false when the
    /// event loop could not be registered.
    @discardableResult
    static func start() -> Bool { started }

    /// A queue for libvirt's blocking calls, so they never hold a thread of Swift's
    /// cooperative pool (libvirt's connections are safe to use from several threads).
    static let calls = DispatchQueue(label: "livecopy.libvirt.calls", attributes: .concurrent)

    /// Runs one blocking libvirt call on `calls` and returns its result. With a
    /// `timeout`, a call with no answer by then is left behind: nil is returned at once
    /// (the call's result, when it comes, is dropped).
    static func blocking<T: Sendable>(timeout: Double? = nil, _ body: @escaping @Sendable () throws -> T) async throws -> T? {
        let answered = Answered()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T?, Error>) in
            calls.async {
                let result = Result { try body() }
                if answered.first() { continuation.resume(with: result.map { $0 }) }
            }
            if let timeout {
                DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                    if answered.first() { continuation.resume(returning: nil) }
                }
            }
        }
    }

    /// Whether a continuation was resumed yet: `first()` is true once.
    private final class Answered: Sendable {
        private let done = Mutex(false)
        func first() -> Bool { done.withLock { done in defer { done = true }; return !done } }
    }
}

/// A libvirt object pointer (a connection, a domain) that may cross threads: libvirt's
/// objects are reference-counted and safe to use from several threads.
struct LibvirtHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}
