// Whether each destination filesystem can hold what is to be copied onto it:
// `FreeSpaceCheck`, for this plan's disks and the other plans' still in progress.

import Foundation
import LivecopyModel
import LivecopyBackend

/// Whether each destination filesystem can hold what is copied onto it: the allocated
/// bytes of every disk of the plan landing there, plus what the disks of other plans not
/// final still have to copy there, times the policy's `space_margin` (0 skips the check).
/// Filesystems are told apart by `st_dev`. A block device destination (the mirror
/// strategy) has its size checked instead (`BlockDeviceDestination`).
struct FreeSpaceCheck {
    let margin: Double

    /// What is counted on one filesystem.
    private struct Need {
        var directories: [String] = []
        var names: [String] = []
        var labels: [String] = []
        var bytes: Int64 = 0
        var inProgress: [PreflightReport.InProgressDisk] = []
        var inProgressBytes: Int64 = 0
        var directory: String { directories.min() ?? "" }
    }
    private var needs: [UInt64: Need] = [:]

    init(margin: Double) { self.margin = margin }

    /// The filesystem (`st_dev`) of a file destination's directory; nil for a block device,
    /// or a directory that cannot be looked at (`DestinationCheck` refuses it).
    static func filesystem(of destination: String) -> UInt64? {
        guard !isBlockDevice(destination) else { return nil }
        var info = stat()
        guard stat(directory(of: destination), &info) == 0 else { return nil }
        return UInt64(info.st_dev)
    }

    static func directory(of destination: String) -> String {
        (destination as NSString).deletingLastPathComponent
    }

    /// Counts `bytes` for the plan's disk `name` (`VM 'vm' disk 'd'`, labelled `vm/d`)
    /// copied to `destination`. Returns the directory naming its filesystem, or nil when
    /// the destination is a block device or its directory cannot be looked at.
    @discardableResult
    mutating func add(name: String, label: String? = nil, destination: String, bytes: Int64) -> String? {
        guard let device = Self.filesystem(of: destination) else { return nil }
        var need = needs[device] ?? Need()
        need.directories.append(Self.directory(of: destination))
        need.names.append(name)
        need.labels.append(label ?? name)
        need.bytes = Self.sum(need.bytes, max(0, bytes))
        needs[device] = need
        return need.directory
    }

    /// `add` with the source chain's size on disk as the bytes (`chainBytes`).
    mutating func add(name: String, destination: String, source: DiskImage) {
        add(name: name, destination: destination, bytes: Self.chainBytes(source))
    }

    /// The directory naming the filesystem of `destination` once every disk of the plan
    /// is added (the smallest of the plan's directories there).
    func directory(for destination: String) -> String? {
        Self.filesystem(of: destination).flatMap { needs[$0]?.directory }
    }

    /// Counts, on the plan's filesystems, what the disks of other plans not final still
    /// have to copy there (`remainingBytes`). Plan `excluded` (the one being checked, if
    /// it is recorded already) is left out.
    mutating func addInProgress(from store: any WorkflowStore, excluding excluded: Int64?) throws {
        guard !needs.isEmpty else { return }
        let plans = try store.plans(states: Set(ClaimConflict.claimingPlanStates), vm: nil, limit: nil)
        for plan in plans.sorted(by: { $0.id < $1.id }) where plan.id != excluded {
            for disk in try store.disks(ofPlan: plan.id) where Self.stillCopies(disk.state) {
                guard let device = Self.filesystem(of: disk.destination), var need = needs[device] else { continue }
                let remaining = Self.remainingBytes(of: disk)
                need.inProgress.append(PreflightReport.InProgressDisk(
                    planId: plan.id, planState: plan.state, vmName: disk.vmName, device: disk.device, state: disk.state,
                    remainingBytes: remaining))
                need.inProgressBytes = Self.sum(need.inProgressBytes, remaining ?? 0)
                needs[device] = need
            }
        }
    }

    /// Whether a disk in `state` may still write its destination: not final, and not
    /// rolling back (its destination is about to be deleted).
    static func stillCopies(_ state: DiskState) -> Bool {
        switch state {
        case .pending, .snapshotting, .streaming, .mirroring, .retiring, .failed, .needsAttention: return true
        case .rollingBack, .completed, .rolledBack: return false
        }
    }

    /// What `disk` still has to copy into its destination: its allocated bytes if
    /// recorded, else its source file's size on disk, less its destination file's size
    /// on disk, at least 0; nil when neither size is known.
    static func remainingBytes(of disk: DiskRecord) -> Int64? {
        guard let total = disk.allocatedBytes ?? disk.source.flatMap(fileBytes) else { return nil }
        return max(0, total - (fileBytes(disk.destination) ?? 0))
    }

    /// A regular file's size on disk (`st_blocks` × 512); nil for anything else.
    static func fileBytes(_ path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return product(Int64(info.st_blocks), 512)
    }

    /// The sizes on disk of every file of the chain, capped at the virtual size (a
    /// destination never exceeds it by more than metadata).
    static func chainBytes(_ image: DiskImage) -> Int64 {
        let allocated = image.chain.reduce(Int64(0)) { total, link in sum(total, fileBytes(link.filename) ?? 0) }
        return max(0, min(allocated, image.virtualSize))
    }

    /// Every filesystem with its free space, what is counted against it and whether it fits.
    func filesystems() -> [PreflightReport.Filesystem] {
        needs.values.sorted { $0.directory < $1.directory }.map { need in
            var fs = statvfs()
            let free = statvfs(need.directory, &fs) == 0
                ? Self.product(Int64(clamping: fs.f_bavail), Int64(clamping: fs.f_frsize)) : nil
            return PreflightReport.Filesystem(
                directory: need.directory, freeBytes: free, disks: need.labels, planBytes: need.bytes,
                inProgress: need.inProgress, inProgressBytes: need.inProgressBytes, margin: margin,
                requiredBytes: Self.required(Self.sum(need.bytes, need.inProgressBytes), margin: margin))
        }
    }

    /// One line per filesystem of `filesystems` (as `filesystems()` found them) that is
    /// short of space, naming every disk of the plan copied there and the plans in
    /// progress counted.
    func problems(_ filesystems: [PreflightReport.Filesystem]) -> [String] {
        let byDirectory = Dictionary(needs.values.map { ($0.directory, $0) }, uniquingKeysWith: { first, _ in first })
        return filesystems.compactMap { fs -> String? in
            guard !fs.fits, let free = fs.freeBytes, let need = byDirectory[fs.directory] else { return nil }
            return Self.refusal(need.names, fs, free: free)
        }
    }

    /// The refusal for filesystem `fs` holding `free` bytes, for the plan's disks `names`.
    private static func refusal(_ names: [String], _ fs: PreflightReport.Filesystem, free: Int64) -> String {
        var with: [String] = []
        if names.count > 1 { with.append("with \(list(Array(names.dropFirst()))) of the plan copied there") }
        if !fs.inProgress.isEmpty {
            let plans = Set(fs.inProgress.map(\.planId)).sorted().map(String.init).joined(separator: ", ")
            with.append("\(names.count > 1 ? "and " : "with ")\(fs.inProgress.count) disk(s) of plan(s) \(plans) still in progress there")
        }
        let subject = names[0] + (with.isEmpty ? "" : " (\(with.joined(separator: ", ")))")
        let counted: String
        if fs.inProgress.isEmpty {
            counted = "\(ByteSize.format(fs.planBytes)) allocated in the source chain\(names.count > 1 ? "s" : "")"
        } else {
            counted = "(\(ByteSize.format(fs.planBytes)) allocated in the source chain\(names.count > 1 ? "s" : "") + \(ByteSize.format(fs.inProgressBytes)) still to copy for plans in progress)"
        }
        let copies = names.count > 1 || !fs.inProgress.isEmpty ? "copies need" : "copy needs"
        return "\(subject): the filesystem of \(fs.directory) has \(ByteSize.format(free)) free, but the \(copies) \(ByteSize.format(fs.requiredBytes)) (\(counted) × space_margin \(fs.margin)); free space there, or set space_margin in the policy"
    }

    /// `a`, `a and b`, `a, b and c`.
    private static func list(_ items: [String]) -> String {
        guard items.count > 1 else { return items.first ?? "" }
        return items.dropLast().joined(separator: ", ") + " and " + items[items.count - 1]
    }

    /// Throws the first problem (for callers that stop at one).
    func check() throws {
        if let first = problems(filesystems()).first { throw PreflightError(first) }
    }

    /// `a + b`, or Int64.max where that overflows (sizes are never negative).
    static func sum(_ a: Int64, _ b: Int64) -> Int64 {
        let (total, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : total
    }

    /// `a × b`, or Int64.max where that overflows.
    static func product(_ a: Int64, _ b: Int64) -> Int64 {
        let (total, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? .max : total
    }

    /// `bytes × margin`, rounded up, or Int64.max where that does not fit.
    static func required(_ bytes: Int64, margin: Double) -> Int64 {
        let value = (Double(bytes) * margin).rounded(.up)
        // Int64.max is not a Double: 2^63 is the first value that does not fit.
        guard value.isFinite, value < 0x1p63 else { return .max }
        return Int64(value)
    }
}
