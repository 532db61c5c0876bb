// What `recover` and `status` report without changing anything: each disk's findings and
// the image its VM must boot from.

import Foundation
import LivecopyModel
import LivecopyBackend

extension Engine {
    /// What QEMU and the files say about each disk of a plan that is not final, in one
    /// line per disk, without changing anything. `recover` prints it before acting.
    public func reconciliationReport(planId: Int64) async throws -> [(disk: DiskRecord, finding: String)] {
        var report: [(disk: DiskRecord, finding: String)] = []
        for disk in try store.disks(ofPlan: planId) where !disk.isSettled {
            var recorded = "recorded \(disk.state.rawValue)"
            if let intent = disk.intent { recorded += " (unfinished: \(intent.rawValue))" }
            if let hook = disk.pendingHook { recorded += " (hook \(hook.rawValue) to run again)" }
            if disk.state.isFinal {
                report.append((disk, "\(recorded); final, only its hook runs"))
                continue
            }
            let session: any VMSession
            do {
                session = try await sessions.session(for: disk.vmAddress, commandTimeout: commandTimeout)
            } catch {
                report.append((disk, "\(recorded); VM unreachable (\(describe(error))); \(await bootAdvice(for: disk))"))
                continue
            }
            do {
                let seen = try await DiskSighting.look(at: disk, in: session)
                let image = seen.device?.medium.map { "VM on \($0.file)" + ($0.backingFile.map { " (backing \($0))" } ?? " (no backing file)") }
                    ?? "device not found"
                let jobs = [seen.copyJob, seen.rollbackJob].compactMap { $0 }
                let jobText = jobs.isEmpty ? "no livecopy job in QEMU"
                    : jobs.map { "QEMU job \($0.id) \($0.status.explanation)" }.joined(separator: ", ")
                var finding = "\(recorded); \(image); \(jobText)"
                switch disk.state {
                case .failed, .needsAttention:
                    // What run, recover and cancel will do with it: the same decision.
                    finding += "; next: \(Resumption.decide(disk, seen).summary)"
                case .pending, .snapshotting, .streaming, .mirroring, .retiring, .rollingBack, .completed, .rolledBack:
                    break
                }
                report.append((disk, finding))
            } catch {
                report.append((disk, "\(recorded); QEMU did not answer (\(describe(error)))"))
            }
        }
        return report
    }

    /// The image a disk's VM must be started from if it is restarted now: the record's
    /// answer when it has one; else QEMU's, when the VM runs; else the files'. Nil when
    /// nobody can tell (a pivot back to the source was requested just before QEMU
    /// stopped, and the two images differ).
    /// `askingQEMU: false` skips the running VM (its monitor is held by a live owner, which
    /// settles the answer itself); `status` and `recover` both answer through this function.
    public func bootImage(of disk: DiskRecord, askingQEMU: Bool = true) async -> String? {
        if let image = disk.bootImage { return image }
        guard let source = disk.source else { return nil }
        if disk.strategy == .mirror && disk.intent != .pivotBack {
            return await mirrorBootImage(of: disk, source: source, askingQEMU: askingQEMU)
        }
        if disk.intent == .pivotBack {
            return await inspector.sourceMatchesDestination(disk) ? source : nil
        }
        var info = stat()
        guard disk.destinationCreated, lstat(disk.destination, &info) == 0 else { return source }
        // A running VM on the destination: that is the image with every write. (Its qcow2
        // metadata may not be on disk yet, so the file alone would mislead.)
        // Only the devices are asked: the boot image does not depend on the jobs.
        if askingQEMU, let session = try? await sessions.session(for: disk.vmAddress, commandTimeout: commandTimeout),
           let devices = try? await session.disks(), devices.entry(for: disk)?.medium?.file == disk.destination {
            return disk.destination
        }
        // QEMU does not hold the destination: its own data, if any, is newer than the source.
        return (try? await inspector.hasOwnData(disk.destination)) == false ? source : disk.destination
    }

    /// `bootImage(of:)` for a mirror disk the record cannot answer for: a pivot under way,
    /// or a disk needing attention. The running VM on the destination, or on the source
    /// with its mirror job still listed, answers; otherwise the images must be equal for
    /// the source to be safe, and nobody can tell when they differ.
    private func mirrorBootImage(of disk: DiskRecord, source: String, askingQEMU: Bool) async -> String? {
        if disk.intent != .pivot {
            return disk.pivoted ? disk.destination : source
        }
        if askingQEMU, let session = try? await sessions.session(for: disk.vmAddress, commandTimeout: commandTimeout),
           let devices = try? await session.disks(), let active = devices.entry(for: disk)?.medium?.file {
            if active == disk.destination { return disk.destination }
            if active == source, let jobs = try? await session.jobs(), jobs.contains(where: { $0.id == disk.mirrorJobId }) {
                return source
            }
        }
        return await inspector.sourceMatchesDestination(disk) ? source : nil
    }

    /// `bootImage(of:)` as a sentence for the operator.
    public func bootAdvice(for disk: DiskRecord) async -> String {
        if let image = await bootImage(of: disk) { return "the VM must boot from \(image)" }
        let source = disk.source ?? "the source"
        if disk.strategy == .mirror && disk.intent == .pivot {
            return "nobody can tell which image the VM must boot from: a pivot onto \(disk.destination) was under way when QEMU stopped, and \(source) and \(disk.destination) differ; compare them and start the VM on the one with the newest writes, then run livecopy recover"
        }
        return "nobody can tell which image the VM must boot from: a pivot back to \(source) was requested just before QEMU stopped, and \(source) and \(disk.destination) differ; \(DiskWorkflow.ambiguousPivotAdvice(source: source, destination: disk.destination))"
    }
}
