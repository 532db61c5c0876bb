import Foundation
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs `qemu-img ARGUMENTS` (found on PATH through `/usr/bin/env`) and returns its exit
/// status, its output and its error text on one line.
///
/// The child is run and awaited through swift-subprocess: its pipes are read and its exit
/// is waited for without blocking a thread of the concurrency pool, so a long
/// `qemu-img compare` of two whole images never stalls the engine's other tasks (the lease
/// heartbeat, operator requests, other disks). A child killed by signal N reports 128 + N,
/// as a shell would.
func runQemuImg(_ arguments: [String]) async throws -> (status: Int32, stdout: Data, stderr: String) {
    let result = try await Subprocess.run(
        .path(FilePath("/usr/bin/env")),
        arguments: Arguments(["qemu-img"] + arguments),
        input: .none,
        output: .bytes(limit: .max),
        error: .bytes(limit: .max))
    let status: Int32
    switch result.terminationStatus {
    case .exited(let code): status = code
    case .signaled(let signal): status = 128 + signal
    }
    let text = String(decoding: result.standardError, as: UTF8.self)
        .split(whereSeparator: \.isNewline).joined(separator: " ")
    return (status, Data(result.standardOutput), text)
}
