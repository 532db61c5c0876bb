// `livecopy purge`: deleting quarantined sources whose time is up, each after an intent
// and the same kind of reality check as every other destructive step.

import Foundation
import LivecopyModel

/// Deletes quarantined sources whose time is up (`all`: every one held). For each:
///
/// 1. a look first (nothing recorded): a file livecopy must not delete is refused at
///    once, leaving no trace but the one-line refusal;
/// 2. the intent: the row moves `held` → `purging`, with an `intent` event in its
///    disk's timeline (crash point `intent:purge`);
/// 3. right before the unlink, the checks again: the file at the quarantine path is the
///    one moved there (device and inode), no process holds it, no disk livecopy knows
///    uses it, and the disk's destination (the data's new home) exists and is not backed
///    by it; a refusal returns the row to `held` with an `outcome` event;
/// 4. the unlink (crash point `sent:purge`), then the outcome: `purged`, with `ended_at`.
///
/// A row left `purging` by a crash is resumed by the next run, whatever its expiry: the
/// file gone means the unlink happened ("already purged"); the file still there is
/// checked again and deleted.
public struct QuarantinePurge: Sendable {
    /// What became of one image.
    public struct Outcome: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            /// Deleted now.
            case purged
            /// The interrupted purge had deleted it; recorded now.
            case alreadyPurged
            /// The file was gone before livecopy purged it: recorded as ended, nothing deleted.
            case goneBefore
            /// `--dry-run`: it would be deleted.
            case wouldPurge
            /// Not deleted, and why: the row stays `held`.
            case refused
        }
        public let image: QuarantinedImage
        public let kind: Kind
        /// One line for the operator.
        public let message: String
    }

    let store: any WorkflowStore

    public init(store: any WorkflowStore) {
        self.store = store
    }

    /// The images a run takes: those left `purging` by a crash, then those held whose time
    /// is up by `now` (every held one with `all`), in the order they were quarantined.
    public func candidates(all: Bool, now: Date) throws -> [QuarantinedImage] {
        let interrupted = try store.quarantinedImages(in: [.purging], expiredBy: nil)
        let due = try store.quarantinedImages(in: [.held], expiredBy: all ? nil : now)
        return (interrupted + due).sorted { $0.id < $1.id }
    }

    /// Purges every candidate, one after the other; a refusal of one does not stop the others.
    public func run(all: Bool, dryRun: Bool, now: Date = Date()) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        for image in try candidates(all: all, now: now) {
            outcomes.append(try await purge(image, dryRun: dryRun))
        }
        return outcomes
    }

    /// What stands in the way of deleting `image`'s file right now.
    enum Verdict {
        /// Nothing is at the quarantine path.
        case absent
        /// It must not be deleted, because of this.
        case refuse(String)
        /// It is the file moved there, and nothing uses it.
        case deletable
    }

    func purge(_ image: QuarantinedImage, dryRun: Bool) async throws -> Outcome {
        let path = image.quarantinePath
        let disk = try store.disk(id: image.diskId)
        let resuming = image.state == .purging
        if !resuming || dryRun {
            switch try await verdict(image, disk: disk) {
            case .refuse(let problem):
                return Outcome(image: image, kind: .refused, message: "not purging \(path): \(problem)")
            case .absent where dryRun:
                return Outcome(image: image, kind: .wouldPurge,
                               message: "would record \(path) as gone (it is no longer there; nothing to delete)")
            case .absent, .deletable:
                if dryRun {
                    let why = resuming ? "an interrupted purge" : "expired \(ISO8601.string(image.expiresAt))"
                    return Outcome(image: image, kind: .wouldPurge,
                                   message: "would purge \(path) (\(ByteSize.format(image.sizeBytes)), \(why))")
                }
            }
        }
        let ledger = QuarantineLedger(action: "purge", store: store, image: image, diskState: disk?.state.rawValue)
        if !resuming {
            try await ledger.intend(
                "\(path) (quarantined from \(image.originalPath) at \(ISO8601.string(image.quarantinedAt)), expires \(ISO8601.string(image.expiresAt)); device \(image.device), inode \(image.inode))")
        }
        func refuse(_ problem: String) async throws -> Outcome {
            try await ledger.refuse(problem)
            return Outcome(image: image, kind: .refused, message: "not purging \(path): \(problem)")
        }
        func gone() async throws -> Outcome {
            if resuming {
                try await ledger.finish("already purged by the interrupted attempt: \(path) is gone")
                return Outcome(image: image, kind: .alreadyPurged, message: "purged \(path) (the interrupted purge had deleted it)")
            }
            let truth = "\(path) was gone before livecopy purged it: livecopy deleted nothing"
            try await ledger.finish(truth)
            return Outcome(image: image, kind: .goneBefore, message: "warning: \(truth); recorded as ended")
        }
        // Right before the unlink: reality again.
        switch try await verdict(image, disk: disk) {
        case .absent: return try await gone()
        case .refuse(let problem): return try await refuse(problem)
        case .deletable: break
        }
        guard unlink(path) == 0 else {
            let code = errno
            if code == ENOENT { return try await gone() }
            return try await refuse("cannot delete it: \(String(cString: strerror(code)))")
        }
        CrashPoint.reach("sent:purge")
        Quarantine.syncDirectory((path as NSString).deletingLastPathComponent)
        try await ledger.finish("deleted \(path) (\(ByteSize.format(image.sizeBytes)) freed), quarantined from \(image.originalPath) at \(ISO8601.string(image.quarantinedAt))")
        return Outcome(image: image, kind: .purged, message: "purged \(path) (\(ByteSize.format(image.sizeBytes)))")
    }

    /// Whether `image`'s file may be deleted now: it must be the very file moved there,
    /// no process may hold it, no disk livecopy knows may use it, and its disk's data must
    /// live on without it (the destination, or where a later plan copied it, exists and is
    /// not backed by it).
    func verdict(_ image: QuarantinedImage, disk: DiskRecord?) async throws -> Verdict {
        let path = image.quarantinePath
        switch Quarantine.lookUp(path) {
        case .absent: return .absent
        case .other(let why): return .refuse(why)
        case .file(let found):
            guard found.matches(image) else {
                return .refuse("it is not the file livecopy quarantined (recorded device \(image.device), inode \(image.inode); now \(found)); livecopy deletes only the file it moved there")
            }
        }
        if let holder = await OpenFiles.holder(of: path) {
            return .refuse("\(holder) holds it open")
        }
        if let user = try store.disks(usingPath: path).first {
            let role = user.source == path ? "source" : "destination"
            return .refuse("plan \(user.planId) records it as the \(role) of \(user.vmName)/\(user.device)")
        }
        guard let disk else { return .refuse("its disk \(image.diskId) is gone from the database") }
        if let problem = try await dataHomeProblem(disk, image: image) { return .refuse(problem) }
        return .deletable
    }

    /// What says the disk's data may still need the quarantined file: its destination (or,
    /// when a later plan of livecopy's copied that on, the last destination of the line)
    /// is missing, is the quarantined file, or has it (or its original path) as backing file.
    func dataHomeProblem(_ disk: DiskRecord, image: QuarantinedImage) async throws -> String? {
        var home = disk
        var seen: Set<Int64> = [disk.id]
        // A later completed plan whose source was this destination moved the data on.
        while case .absent = Quarantine.lookUpAny(home.destination),
              let next = try store.disks(usingPath: home.destination).first(where: {
                  $0.source == home.destination && $0.state == .completed && !seen.contains($0.id)
              }) {
            seen.insert(next.id)
            home = next
        }
        let destination = home.destination
        switch Quarantine.lookUpAny(destination) {
        case .absent:
            return "the disk's destination \(destination) is gone, so this may be the only copy of \(disk.vmName)/\(disk.device)"
        case .other(let why):
            return why
        case .file(let found):
            if found.matches(image) { return "it is the disk's destination \(destination)" }
        }
        guard home.destinationFormat == .qcow2 else { return nil }
        let named: String?
        do {
            named = try await backingFile(of: destination)
        } catch {
            return "\(error), so nothing proves it does not need this image"
        }
        guard let backing = named else { return nil }
        if backing == image.originalPath || backing == image.quarantinePath {
            return "the disk's destination \(destination) has \(backing) as its backing file"
        }
        if case .file(let found) = Quarantine.lookUpAny(backing), found.matches(image) {
            return "the disk's destination \(destination) has it as its backing file (\(backing))"
        }
        return nil
    }

    /// The backing file a qcow2 image names, nil when it has none (`qemu-img info`, shared
    /// lock: the image may be open in a running VM). Throws when the image cannot be read.
    func backingFile(of path: String) async throws -> String? {
        let (status, data, error) = try await runQemuImg(["info", "-U", "--output=json", "-f", "qcow2", path])
        guard status == 0, let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw QuarantineCheckFailed(description: "cannot read \(path) with qemu-img info: \(error)")
        }
        return (object["full-backing-filename"] as? String) ?? (object["backing-filename"] as? String)
    }
}

/// A check of `purge` or `restore` that could not be made (the image's header unreadable).
struct QuarantineCheckFailed: Error, CustomStringConvertible {
    let description: String
}

extension Quarantine {
    /// `lookUp`, for a path that may be a block device as well as a file (a destination).
    static func lookUpAny(_ path: String) -> Lookup {
        var info = stat()
        guard stat(path, &info) == 0 else {
            return errno == ENOENT ? .absent : .other("cannot inspect \(path): \(String(cString: strerror(errno)))")
        }
        return .file(FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino),
                                  allocatedBytes: Int64(info.st_blocks) * 512))
    }
}
