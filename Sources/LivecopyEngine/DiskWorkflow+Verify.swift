// The data verification before retirement (docs/retirement.md#verification): the
// destination, read through a read-only NBD export of its node with a frozen copy of the
// dirty bitmap that records the guest's writes since the switch, against the source read
// directly (qemu-nbd, read-only), on every cluster (`full`) or a seeded sample (`sample`)
// of the source's allocated clusters the guest left alone.

import Foundation
import LivecopyBackend
import LivecopyModel

extension DiskWorkflow {
    /// The comparison unit: QEMU's default qcow2 cluster and dirty bitmap granularity.
    static let verificationCluster: Int64 = 65536

    /// Compares the destination's data with `source`'s before the source is retired.
    /// Returns true when retirement may go on; false when the disk completed with its
    /// source kept (`on_unverifiable: keep_source`). A difference on a cluster the guest
    /// never wrote stops the disk in `needs_attention`, both images untouched.
    func verifyBeforeRetiring(_ source: String) async throws -> Bool {
        switch policy.verify {
        case .none: return true
        case .sample, .full: break
        }
        // A retirement step already announced was announced after a comparison passed (or
        // the policy's fallback allowed it): the source may be gone or moved by now.
        if let intent = disk.intent, intent.belongsToRetirement, intent != .verify { return true }
        // A source already gone leaves nothing to compare, and nothing to destroy: the
        // retirement records how it found it.
        if !exists(source) {
            try await ledger.note("nothing to verify against: the source \(source) is gone")
            return true
        }
        guard session.capabilities.contains(.dirtyTracking) else {
            return try await unverifiable(source, because: "this VM's hypervisor backend cannot track the guest's writes")
        }
        let entry = try await locateDevice()
        guard let medium = entry.medium, medium.file == disk.destination, medium.backingFile == nil,
              let node = medium.nodeName else {
            throw NeedsAttention(
                description: "before verifying: VM '\(disk.vmName)' device '\(disk.device)' runs on \(entry.medium?.file ?? "no image")\(entry.medium?.backingFile.map { " backed by \($0)" } ?? ""), not on \(disk.destination) standing alone; nothing was touched")
        }
        guard medium.dirtyBitmaps.contains(disk.dirtyBitmapName) else {
            return try await unverifiable(source, because: "the dirty bitmap \(disk.dirtyBitmapName) that recorded the guest's writes to \(disk.destination) is gone (QEMU was restarted since the switch), so a difference could not be told from a guest's write")
        }
        let seed = UInt64.random(in: 1 ... UInt64.max)
        let selection = comparisonSelection
        try await ledger.intend(.verify, "compare \(disk.destination) with \(source) (\(selection.summary(seed: seed))), except the clusters the guest wrote since the switch; read-only NBD export of node \(node)")
        let started = ContinuousClock.now
        let export = VerificationExport(nodeName: node, bitmap: disk.dirtyBitmapName)
        let verdict: VerificationVerdict
        do {
            verdict = try await compare(source, export: export, selection: selection, seed: seed)
            ledger.sent()  // the export still open: recover must clear it away
        } catch _ where Task.isCancelled {
            // Stopped on purpose: the intent stays open, and the next run compares again.
            try? await session.closeVerificationExport(export)
            throw CancellationError()
        } catch let error as VerificationError {
            try await comparisonFailed(export, source, error)
        } catch let error as BackendError where !error.isAboutTheSession {
            try await comparisonFailed(export, source, error)
        } catch {
            // A lost session, a halt or a cancellation: the intent stays open, and the
            // next run compares again.
            try? await session.closeVerificationExport(export)
            throw error
        }
        try? await session.closeVerificationExport(export)
        let elapsed = ContinuousClock.now - started
        let took = String(format: "%.2f s", Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        switch verdict {
        case .identical(let summary):
            try await ledger.outcome("identical: \(summary), in \(took)")
            return true
        case .different(let summary, let offsets):
            try await ledger.outcome("different: \(summary)")
            throw NeedsAttention(
                description: "\(disk.destination) differs from the source \(source) at \(offsets) that the guest never wrote since the switch: the copy cannot be trusted, and neither image was touched; compare them (qemu-img compare), find which holds the VM's data, then decide (docs/retirement.md#what-happens)")
        }
    }

    /// The comparison could not run (the export, qemu-nbd or a read failed): closes the
    /// export, records why as the outcome, and fails the disk (nothing was touched).
    private func comparisonFailed(_ export: VerificationExport, _ source: String, _ error: Error) async throws -> Never {
        try? await session.closeVerificationExport(export)
        try await ledger.outcome("failed: \(describe(error))")
        throw VerificationFailed(
            description: "the comparison of \(disk.destination) with \(source) could not run: \(describe(error)); nothing was touched; livecopy recover tries again")
    }

    /// What the comparison found.
    enum VerificationVerdict {
        /// Every compared byte is the same; the summary says how much was compared.
        case identical(String)
        /// Some cluster the guest never wrote differs, even against a later frozen bitmap.
        case different(String, offsets: String)
    }

    /// The comparison could not run (the export, the source's server, a read failed).
    struct VerificationFailed: Error, CustomStringConvertible { let description: String }

    /// The policy's choice of clusters (never asked with `verify: none`, which compares nothing).
    var comparisonSelection: ComparisonPlan.Selection {
        switch (policy.verify, policy.verifySample) {
        case (.full, _), (.none, _): return .full
        case (.sample, .count(let count)): return .sample(count: count)
        case (.sample, .fraction(let share)): return .sampleFraction(share)
        }
    }

    /// Exports, reads both sides, and re-checks any difference against a later frozen copy
    /// of the bitmap: a cluster the guest wrote meanwhile is then dirty, and skipped.
    private func compare(_ source: String, export: VerificationExport, selection: ComparisonPlan.Selection,
                         seed: UInt64) async throws -> VerificationVerdict {
        let cluster = Self.verificationCluster
        let endpoint = try await session.openVerificationExport(export)
        // The two maps at once (each a qemu-img of its own).
        async let dirtyMap = DirtyMap.read(socketPath: endpoint.socketPath, export: endpoint.exportName, bitmap: endpoint.frozenBitmap)
        let allocated = try await inspector.allocationMap(of: source, format: disk.sourceFormat ?? "qcow2")
        let dirty = try await dirtyMap
        let plan = ComparisonPlan(sourceAllocation: allocated, dirty: dirty, clusterSize: cluster, selection: selection, seed: seed)
        let first = try await Self.readBoth(source: source, format: disk.sourceFormat ?? "qcow2", endpoint: endpoint) { readers, stop in
            try DataComparison.compare(ranges: plan.ranges, source: readers.source, destination: readers.destination,
                                       clusterSize: cluster, stop: stop)
        }
        let compared = "\(first.clustersCompared) of \(plan.cleanClusters) clusters the guest left alone (\(ByteSize.format(first.bytesCompared))), \(plan.dirtyClusters) written by the guest skipped, \(selection.summary(seed: seed))"
        guard first.mismatchedClusters > 0 else { return .identical(compared) }

        // A difference may be a guest write made after the bitmap was frozen: freeze it again.
        let again = try await session.openVerificationExport(export)
        let dirtyLater = try await DirtyMap.read(socketPath: again.socketPath, export: again.exportName, bitmap: again.frozenBitmap)
        let suspects = first.mismatchedClusters <= first.firstMismatches.count
            ? first.firstMismatches.map(\.clusterOffset)
            : plan.ranges.flatMap { range in stride(from: range.start - range.start % cluster, to: range.end, by: Int(cluster)).map { $0 } }
        let stillClean = suspects.filter { !dirtyLater.overlaps(start: $0, length: cluster) }
        let confirmed = try await Self.readBoth(source: source, format: disk.sourceFormat ?? "qcow2", endpoint: again) { readers, stop in
            try DataComparison.recheck(clusters: stillClean, source: readers.source, destination: readers.destination,
                                       clusterSize: cluster, stop: stop)
        }
        guard confirmed.mismatchedClusters > 0 else {
            return .identical(compared + "; \(first.mismatchedClusters) differing clusters were written by the guest meanwhile (a later frozen bitmap shows them dirty)")
        }
        let offsets = confirmed.firstMismatches.map { "offset \($0.firstDifferingByte) (cluster \($0.clusterOffset))" }
        let listed = offsets.joined(separator: ", ") + (confirmed.mismatchedClusters > offsets.count ? ", …" : "")
        return .different("\(confirmed.mismatchedClusters) clusters differ, confirmed against a later frozen bitmap; first at \(listed); \(compared)",
                          offsets: "\(confirmed.mismatchedClusters) cluster\(confirmed.mismatchedClusters == 1 ? "" : "s"), first at \(listed)")
    }

    /// The two sides of a comparison, handed to the thread that reads them; only that
    /// thread uses them until it is done.
    struct Readers: @unchecked Sendable {
        let source: NBDReader
        let destination: NBDReader
    }

    /// Serves the source read-only (qemu-nbd) and connects to the destination's export,
    /// runs `body` with both readers on a thread of its own, then lets go of both.
    private static func readBoth<T: Sendable>(source: String, format: String, endpoint: VerificationEndpoint,
                                              _ body: @escaping @Sendable (Readers, StopRequest) throws -> T) async throws -> T {
        let served = try await SourceExport.start(image: source, format: format, in: NSTemporaryDirectory())
        do {
            let destination = try NBDReader(socketPath: endpoint.socketPath, export: endpoint.exportName)
            defer { destination.close() }
            let readers = Readers(source: served.reader, destination: destination)
            let result = try await offThePool { stop in try body(readers, stop) }
            await served.stop()
            return result
        } catch {
            await served.stop()
            throw error
        }
    }

    /// Runs blocking reads on a thread of their own, never on one of the concurrency
    /// pool's few threads (the job watchers and the lease's heartbeat run there). When the
    /// task is cancelled (serve stopping, a plan cancelled), `body`'s `StopRequest` is set,
    /// and the reads stop within a chunk; the task then throws `CancellationError`.
    static func offThePool<T: Sendable>(_ body: @escaping @Sendable (StopRequest) throws -> T) async throws -> T {
        let stop = StopRequest()
        let result = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let thread = Thread {
                    continuation.resume(with: Result { try body(stop) })
                }
                thread.name = "livecopy-verify"
                thread.start()
            }
        } onCancel: {
            stop.request()
        }
        try Task.checkCancellation()
        return result
    }

    /// The data cannot be compared exactly: `on_unverifiable` decides. Returns true when
    /// retirement goes on.
    private func unverifiable(_ source: String, because reason: String) async throws -> Bool {
        switch policy.onUnverifiable {
        case .keepSource:
            try await ledger.note("warning: cannot verify \(disk.destination) against \(source): \(reason)")
            try await ledger.transition(to: .completed, "source kept at \(source), untouched, because its data could not be verified (on_unverifiable: keep_source); remove it yourself once you trust \(disk.destination)")
            return false
        case .needsAttention:
            throw NeedsAttention(
                description: "cannot verify \(disk.destination) against \(source): \(reason); nothing was touched (on_unverifiable: needs_attention); check the copy yourself, then retire the source by hand")
        case .retire:
            try await ledger.note("warning: cannot verify \(disk.destination) against \(source): \(reason); retiring it unverified (on_unverifiable: retire)")
            return true
        }
    }

    /// Removes the dirty bitmap once the disk completed (best effort: it is not persistent,
    /// and goes with QEMU anyway).
    func dropDirtyBitmap() async {
        guard tracksGuestWrites, let node = try? await locateDevice().medium?.nodeName else { return }
        try? await session.removeDirtyBitmap(nodeName: node, name: disk.dirtyBitmapName)
    }
}
