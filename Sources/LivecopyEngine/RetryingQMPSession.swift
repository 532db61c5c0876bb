import Foundation
import Logging
import LivecopyModel
import QMP

/// A QMP session that sends a command again when QEMU refused it for a transient reason
/// (a busy device or node, an image lock held for a moment), with exponential backoff,
/// as the policy says (`qmp_retries`, `qmp_retry_backoff`).
///
/// Only error replies are retried: QEMU did nothing for them. A command that got no
/// reply, or whose connection broke, is never sent again blindly; the workflow asks
/// QEMU what happened instead.
final class RetryingQMPSession: QMPSession, Sendable {
    private let base: any QMPSession
    private let retries: Int
    private let backoff: Double
    private let onRetry: @Sendable (String) async -> Void

    /// The longest single wait between two attempts, in seconds.
    static let maxBackoff: Double = 60

    init(_ base: any QMPSession, policy: Policy, onRetry: @escaping @Sendable (String) async -> Void) {
        self.base = base
        self.retries = policy.qmpRetries
        self.backoff = policy.qmpRetryBackoff
        self.onRetry = onRetry
    }

    func execute(_ command: String, arguments: [String: JSONValue]?, timeout: Double?) async throws -> JSONValue {
        var attempt = 0
        while true {
            do {
                return try await base.execute(command, arguments: arguments, timeout: timeout)
            } catch let error as QMPCommandError where attempt < retries && Self.isTransient(error) {
                attempt += 1
                let wait = min(backoff * pow(2, Double(attempt - 1)), Self.maxBackoff)
                logger.notice("QMP command refused for a transient reason; retrying", metadata: [
                    "command": "\(command)", "attempt": "\(attempt)", "of": "\(retries)", "wait": "\(wait)",
                    "error": "\(error.description)",
                ])
                await onRetry("\(error.description); transient, retry \(attempt) of \(retries) in \(String(format: "%.2f", wait)) s")
                try await Task.sleep(for: .seconds(wait))
            }
        }
    }

    func events() -> AsyncStream<QMPEvent> { base.events() }
    var isClosed: Bool { base.isClosed }
    func close() async { await base.close() }

    /// Whether QEMU's refusal may go away by itself: its description says a device,
    /// node or image is busy or locked right now. Everything else (an unknown device, a
    /// bad argument, a job in the wrong state) fails at once.
    static func isTransient(_ error: QMPCommandError) -> Bool {
        guard error.errorClass == "GenericError" else { return false }
        let text = error.desc.lowercased()
        return transientPhrases.contains { text.contains($0) }
    }

    /// Phrases of QEMU's messages for conditions that pass: `Node '…' is busy: …`,
    /// `Device '…' is in use`, `Failed to get "write" lock`, EAGAIN.
    static let transientPhrases = ["is busy", "is in use", "failed to get \"write\" lock", "failed to get shared \"write\" lock",
                                   "resource temporarily unavailable", "try again"]
}
