// What `livecopy validate` found, as the one JSON document `--json` prints:
// `ValidationDocument`. Its keys are a contract (docs/commands.md): add, never rename.

import LivecopyEngine
import LivecopyModel

/// `validate --json`: the plan's disks, its destination filesystems, the order its disks
/// would run in, the estimate and every problem. Every key is always present, with
/// `null` when there is no value (`NullEncoded`); sizes are bytes, times seconds from the plan's start.
struct ValidationDocument: Codable, Equatable {
    /// The plan and the policy settings the checks and the estimate use.
    struct PlanSummary: Codable, Equatable {
        @NullEncoded var name: String?
        var policy: String
        var strategy: String
        /// Bytes per second per disk; 0: unlimited.
        var speed: Int64
        var maxParallelDisks: Int
        var spaceMargin: Double

        enum CodingKeys: String, CodingKey {
            case name, policy, strategy, speed
            case maxParallelDisks = "max_parallel_disks"
            case spaceMargin = "space_margin"
        }
    }

    /// One disk of the plan, in plan order.
    struct Disk: Codable, Equatable {
        var vm: String
        var device: String
        /// The source found in the VM; null when the VM or the device was not found.
        @NullEncoded var source: String?
        @NullEncoded var sourceFormat: String?
        @NullEncoded var virtualSize: Int64?
        /// The bytes the copy copies; null while unknown.
        @NullEncoded var allocatedBytes: Int64?
        /// `map` (`qemu-img map` of the chain) or `file_blocks` (the map could not be read:
        /// the chain's sizes on disk); null while unknown.
        @NullEncoded var allocatedFrom: String?
        /// Why the map could not be read, with `file_blocks`.
        @NullEncoded var allocatedNote: String?
        var destination: String
        var destinationFormat: String
        /// The `directory` of its entry in `filesystems`; null for a block device.
        @NullEncoded var filesystem: String?

        enum CodingKeys: String, CodingKey {
            case vm, device, source, destination, filesystem
            case sourceFormat = "source_format"
            case virtualSize = "virtual_size"
            case allocatedBytes = "allocated_bytes"
            case allocatedFrom = "allocated_from"
            case allocatedNote = "allocated_note"
            case destinationFormat = "destination_format"
        }
    }

    /// A disk of another plan in progress, counted against a filesystem.
    struct InProgressDisk: Codable, Equatable {
        var plan: Int64
        var planState: String
        var vm: String
        var device: String
        var state: String
        /// What it still has to copy there; null when unknown (counted as 0).
        @NullEncoded var remainingBytes: Int64?

        enum CodingKeys: String, CodingKey {
            case plan, vm, device, state
            case planState = "plan_state"
            case remainingBytes = "remaining_bytes"
        }
    }

    /// One destination filesystem.
    struct Filesystem: Codable, Equatable {
        var directory: String
        @NullEncoded var freeBytes: Int64?
        /// The plan's disks copied there, `vm/device`.
        var disks: [String]
        var planBytes: Int64
        var inProgress: [InProgressDisk]
        var inProgressBytes: Int64
        var spaceMargin: Double
        /// `(plan_bytes + in_progress_bytes) × space_margin`.
        var requiredBytes: Int64
        /// False when `space_margin` is 0 or the free space is unknown.
        var checked: Bool
        var fits: Bool

        enum CodingKeys: String, CodingKey {
            case directory, disks, checked, fits
            case freeBytes = "free_bytes"
            case planBytes = "plan_bytes"
            case inProgress = "in_progress"
            case inProgressBytes = "in_progress_bytes"
            case spaceMargin = "space_margin"
            case requiredBytes = "required_bytes"
        }
    }

    /// One disk's place in the run: the order the engine starts disks in.
    struct Slot: Codable, Equatable {
        /// 1 for the first disk started.
        var position: Int
        var disk: String
        /// Starts with the plan (one of the first `max_parallel_disks`).
        var firstWave: Bool
        /// Estimated start and end; null without an estimate.
        @NullEncoded var startSeconds: Double?
        @NullEncoded var endSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case position, disk
            case firstWave = "first_wave"
            case startSeconds = "start_seconds"
            case endSeconds = "end_seconds"
        }
    }

    /// A history rate.
    struct History: Codable, Equatable {
        var strategy: String
        /// One disk copying alone (with no such copy, the host's whole rate).
        var bytesPerSecond: Double
        var copies: Int
        /// What the host moved in all with several disks at once; null: no such copy.
        @NullEncoded var aggregateBytesPerSecond: Double?
        var sharedCopies: Int

        enum CodingKeys: String, CodingKey {
            case strategy, copies
            case bytesPerSecond = "bytes_per_second"
            case aggregateBytesPerSecond = "aggregate_bytes_per_second"
            case sharedCopies = "shared_copies"
        }
    }

    /// The plan's estimated duration and what it rests on.
    struct Estimate: Codable, Equatable {
        /// Seconds from the start to the end of the last disk; null: no estimate.
        @NullEncoded var seconds: Double?
        /// `policy_speed`, `history` or `none`: which rate was used.
        var basis: String
        /// The rate per disk used; null: none.
        @NullEncoded var bytesPerSecond: Double?
        /// The basis in words (`policy speed 32.0 MiB/s per disk`, …).
        var description: String
        /// The policy's speed per disk; null when it sets none.
        @NullEncoded var policySpeed: Int64?
        /// This host's history rate for the strategy; null when its history tells none.
        @NullEncoded var history: History?
        /// Seconds added to each disk for the steps around its copy.
        var perDiskOverheadSeconds: Double
        /// Disks whose size is unknown (not found), counted as 0 bytes.
        var unknownDisks: Int

        enum CodingKeys: String, CodingKey {
            case seconds, basis, description, history
            case bytesPerSecond = "bytes_per_second"
            case policySpeed = "policy_speed"
            case perDiskOverheadSeconds = "per_disk_overhead_seconds"
            case unknownDisks = "unknown_disks"
        }
    }

    /// True when `submit` would accept the plan (`problems` is empty).
    var accepted: Bool
    var plan: PlanSummary
    var disks: [Disk]
    var filesystems: [Filesystem]
    var order: [Slot]
    var estimate: Estimate
    /// Every problem, each the one line `submit` would refuse with.
    var problems: [String]
}

extension ValidationDocument {
    /// The document of `report` for `plan` under `policy`, with its `estimate`.
    init(plan: Plan, policy: Policy, report: PreflightReport, estimate: PlanEstimate, history: HistoryRate?) {
        accepted = report.accepted
        self.plan = PlanSummary(name: plan.name, policy: plan.policyReference ?? "default", strategy: policy.strategy.rawValue,
                                speed: policy.speed, maxParallelDisks: policy.maxParallelDisks, spaceMargin: policy.spaceMargin)
        disks = report.disks.map { disk in
            var from: String?
            var note: String?
            switch disk.allocationSource {
            case .map?: from = "map"
            case .fileBlocks(let reason)?:
                from = "file_blocks"
                note = reason
            case nil: break
            }
            return Disk(vm: disk.vmName, device: disk.device, source: disk.found?.source, sourceFormat: disk.found?.sourceFormat,
                        virtualSize: disk.virtualSize, allocatedBytes: disk.found?.allocatedBytes, allocatedFrom: from,
                        allocatedNote: note, destination: disk.destination,
                        destinationFormat: disk.destinationFormat.rawValue, filesystem: disk.filesystem)
        }
        filesystems = report.filesystems.map { fs in
            Filesystem(directory: fs.directory, freeBytes: fs.freeBytes, disks: fs.disks, planBytes: fs.planBytes,
                       inProgress: fs.inProgress.map {
                           InProgressDisk(plan: $0.planId, planState: $0.planState.rawValue, vm: $0.vmName, device: $0.device,
                                          state: $0.state.rawValue, remainingBytes: $0.remainingBytes)
                       },
                       inProgressBytes: fs.inProgressBytes, spaceMargin: fs.margin, requiredBytes: fs.requiredBytes,
                       checked: fs.checked, fits: fs.fits)
        }
        order = report.disks.enumerated().map { index, disk in
            let timing = estimate.timings?[index]
            return Slot(position: index + 1, disk: disk.label,
                        firstWave: timing?.firstWave ?? (index < DiskSchedule(maxParallelDisks: policy.maxParallelDisks).slots),
                        startSeconds: timing?.start, endSeconds: timing?.end)
        }
        self.estimate = Estimate(
            seconds: estimate.seconds, basis: estimate.basis.key, bytesPerSecond: estimate.bytesPerSecond,
            description: estimate.basisDescription, policySpeed: policy.speed > 0 ? policy.speed : nil,
            history: history.map {
                History(strategy: $0.strategy.rawValue, bytesPerSecond: $0.bytesPerSecond, copies: $0.copies,
                        aggregateBytesPerSecond: $0.aggregateBytesPerSecond, sharedCopies: $0.sharedCopies)
            },
            perDiskOverheadSeconds: estimate.perDiskOverhead,
            unknownDisks: report.disks.filter { $0.found?.allocatedBytes == nil }.count)
        problems = report.problems
    }
}
