// What one preflight pass found: `PreflightReport`, every disk with its source and sizes,
// every destination filesystem with its free space, and every problem (not only the first).

import Foundation
import LivecopyModel

/// The outcome of a preflight: what was found for each disk, each destination filesystem
/// and the space counted against it, and every problem, each in the one line `submit`
/// refuses with. Nothing was recorded or touched to make it.
public struct PreflightReport: Sendable {
    /// How a disk's allocated bytes were found.
    public enum AllocationSource: Sendable, Equatable {
        /// `qemu-img map -U` of the source's whole chain: the ranges a copy job copies.
        case map
        /// The map could not be read (`reason`): the sizes on disk (`st_blocks`) of the
        /// chain's files, capped at the virtual size, as the free-space check always did.
        case fileBlocks(reason: String)
    }

    /// One disk of the plan, as far as preflight got with it.
    public struct Disk: Sendable {
        public let vmName: String
        public let device: String
        public let destination: String
        public let destinationFormat: DestinationFormat
        /// The disk as `submit` records it, once its source was found in the VM (even if
        /// some other check failed); nil when the VM or the device was not found.
        public internal(set) var found: NewPlan.Disk?
        /// The source's virtual size, once found.
        public internal(set) var virtualSize: Int64?
        /// Where `found.allocatedBytes` comes from; nil while unknown.
        public internal(set) var allocationSource: AllocationSource?
        /// The directory naming the destination's filesystem in `filesystems`; nil for a
        /// block device or a directory that cannot be looked at.
        public internal(set) var filesystem: String?

        /// `vm/device`, as the plan document names a disk.
        public var label: String { "\(vmName)/\(device)" }
        /// `VM 'vm' disk 'device'`, as refusals name a disk.
        public var refusalName: String { "VM '\(vmName)' disk '\(device)'" }
    }

    /// A disk of another plan not final whose destination is on a filesystem of this plan.
    public struct InProgressDisk: Sendable, Equatable {
        public let planId: Int64
        public let planState: PlanState
        public let vmName: String
        public let device: String
        public let state: DiskState
        /// What it has still to copy there: its allocated bytes (else its source file's
        /// size on disk) less what its destination holds already; nil when its source is
        /// not known yet (a plan recorded detached that never ran).
        public let remainingBytes: Int64?
    }

    /// One destination filesystem of the plan.
    public struct Filesystem: Sendable {
        /// The first (in sorted order) of the plan's destination directories on it.
        public let directory: String
        /// Free space for an unprivileged writer (`statvfs` `f_bavail`); nil when unknown.
        public let freeBytes: Int64?
        /// The plan's disks copied there, as `vm/device`.
        public let disks: [String]
        /// What they copy: the sum of their allocated bytes.
        public let planBytes: Int64
        /// Other plans' disks still to copy there.
        public let inProgress: [InProgressDisk]
        /// The sum of their remaining bytes (unknown ones count 0).
        public let inProgressBytes: Int64
        /// The policy's `space_margin`; 0 turns the check off.
        public let margin: Double
        /// `(planBytes + inProgressBytes) × margin`, rounded up.
        public let requiredBytes: Int64

        /// Whether the check was made: a margin above 0 and the free space known.
        public var checked: Bool { margin > 0 && freeBytes != nil }
        /// False only when the check was made and the free space is short.
        public var fits: Bool {
            guard checked, let freeBytes else { return true }
            return freeBytes >= requiredBytes
        }
    }

    /// Every disk of the plan, in plan order.
    public internal(set) var disks: [Disk] = []
    /// Every file destination filesystem, by directory.
    public internal(set) var filesystems: [Filesystem] = []
    /// Every problem, each one line, in the order the checks ran.
    public internal(set) var problems: [String] = []

    /// True when `submit` would accept the plan.
    public var accepted: Bool { problems.isEmpty }

    /// The one line `submit` refuses with: the first problem, and how many more there are.
    public var refusal: String? {
        guard let first = problems.first else { return nil }
        let more = problems.count - 1
        guard more > 0 else { return first }
        return "\(first) (and \(more) more problem\(more == 1 ? "" : "s"): livecopy validate lists them)"
    }
}
