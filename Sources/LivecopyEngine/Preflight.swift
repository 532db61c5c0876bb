import Foundation
import LivecopyModel
import LivecopyBackend

/// A plan refused before anything was touched, with a one-line reason naming the disk.
public struct PreflightError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// File checks on a destination path, made without following links.
enum DestinationCheck {
    /// Refuses a destination that exists, even as a dangling symlink.
    static func refuseExisting(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) != 0 else {
            let kind = (info.st_mode & S_IFMT) == S_IFLNK ? "is a symlink" : "already exists"
            throw PreflightError("destination \(path) \(kind)")
        }
    }

    /// The destination as preflight checks it: its format and kind suit the strategy; a
    /// block device can take a disk of `virtualSize` bytes (nil: unknown, with no VM to
    /// ask) and nothing uses it; a file does not exist yet, in a writable directory.
    static func check(_ disk: Plan.Disk, strategy: CopyStrategy, virtualSize: Int64?) throws {
        try checkFormat(disk, strategy: strategy)
        if isBlockDevice(disk.destination) {
            if let problem = BlockDeviceDestination.problemIncludingHolders(disk.destination, virtualSize: virtualSize ?? 0) {
                throw PreflightError(problem)
            }
        } else {
            try refuseExisting(disk.destination)
            try checkDirectory(of: disk.destination)
        }
    }

    /// The destination's format and kind suit the strategy: the stream strategy makes
    /// qcow2 overlays only; a block device takes raw data (the mirror strategy) only.
    static func checkFormat(_ disk: Plan.Disk, strategy: CopyStrategy) throws {
        let blockDevice = isBlockDevice(disk.destination)
        switch strategy {
        case .stream:
            if blockDevice {
                throw PreflightError("destination \(disk.destination) is a block device, which needs strategy: mirror (streaming copies into a new qcow2 file)")
            }
            if disk.resolvedFormat != .qcow2 {
                throw PreflightError("format: \(disk.resolvedFormat.rawValue) needs strategy: mirror (streaming copies into a new qcow2 file)")
            }
        case .mirror:
            if blockDevice && disk.resolvedFormat != .raw {
                throw PreflightError("destination \(disk.destination) is a block device, which livecopy fills with raw data only; write format: raw or leave format out")
            }
        }
    }

    /// The destination's directory must exist, be a directory (not a symlink to one) and be writable.
    static func checkDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        var info = stat()
        if lstat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK {
            throw PreflightError("destination directory \(directory) is a symlink; name the real directory")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw PreflightError("destination directory \(directory) does not exist")
        }
        guard isDirectory.boolValue else { throw PreflightError("destination directory \(directory) is not a directory") }
        guard access(directory, W_OK) == 0 else { throw PreflightError("destination directory \(directory) is not writable") }
    }

    /// The path with its directory's symlinks resolved (the file itself need not exist).
    static func resolved(_ path: String) -> String {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        guard let real = realpath(directory, nil) else { return path }
        defer { free(real) }
        return (String(cString: real) as NSString).appendingPathComponent(name)
    }
}

/// Whether each destination filesystem can hold what the plan copies onto it: the
/// allocated size of every source chain (capped at the disk's virtual size, which a
/// destination never exceeds by more than metadata), times the policy's `space_margin`.
/// Disks whose destinations share a filesystem are added up; a block device destination
/// (the mirror strategy) has its size checked instead (`BlockDeviceDestination`).
struct FreeSpaceCheck {
    let margin: Double
    private var needs: [UInt64: (directory: String, disks: [String], bytes: Int64)] = [:]

    init(margin: Double) { self.margin = margin }

    mutating func add(name: String, destination: String, source: DiskImage) {
        guard margin > 0, !isBlockDevice(destination) else { return }
        let directory = (destination as NSString).deletingLastPathComponent
        var info = stat()
        guard stat(directory, &info) == 0 else { return }  // checkDirectory has refused it already
        let allocated = source.chain.reduce(Int64(0)) { total, image in
            var file = stat()
            guard stat(image.filename, &file) == 0 else { return total }
            return Self.sum(total, Self.product(Int64(file.st_blocks), 512))
        }
        let bytes = max(0, min(allocated, source.virtualSize))
        let device = UInt64(info.st_dev)
        var need = needs[device] ?? (directory, [], 0)
        need.disks.append(name)
        need.bytes = Self.sum(need.bytes, bytes)
        needs[device] = need
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

    func check() throws {
        for need in needs.values.sorted(by: { $0.directory < $1.directory }) {
            var fs = statvfs()
            guard statvfs(need.directory, &fs) == 0 else { continue }
            let free = Self.product(Int64(clamping: fs.f_bavail), Int64(clamping: fs.f_frsize))
            let required = Self.required(need.bytes, margin: margin)
            guard free < required else { continue }
            let others = need.disks.count > 1 ? " (with \(need.disks.count - 1) more disk(s) of the plan copied there)" : ""
            throw PreflightError(
                "\(need.disks[0])\(others): the filesystem of \(need.directory) has \(ByteSize.format(free)) free, but the copy needs \(ByteSize.format(required)) (\(ByteSize.format(need.bytes)) allocated in the source chain × space_margin \(margin)); free space there, or set space_margin in the policy")
        }
    }
}


/// Checks a plan against the VMs and the file system before anything is recorded or
/// touched, and discovers each disk's source image from `query-block`.
struct Preflight {
    let sessions: VMSessions
    let store: any WorkflowStore

    func run(_ plan: Plan, policy: Policy) async throws -> [NewPlan.Disk] {
        try checkOtherPlans(plan)
        try checkHooks(policy)
        var disks: [NewPlan.Disk] = []
        var sources = Set<String>()
        var space = FreeSpaceCheck(margin: policy.spaceMargin)
        for vm in plan.vms {
            let address = vm.address.stored
            do {
                try sessions.hypervisor.checkAddress(address, allowShared: policy.allowSharedSocket)
            } catch let error as BackendError {
                throw PreflightError("VM '\(vm.name)': \(error.description)")
            }
            let session: any VMSession
            do {
                session = try await sessions.session(for: address)
            } catch {
                throw PreflightError("VM '\(vm.name)': \(describe(error))")
            }
            let devices: [VMDisk]
            do {
                devices = try await session.disks()
            } catch {
                throw PreflightError("VM '\(vm.name)': query-block failed: \(describe(error))")
            }
            var planDevices = Set<String>()
            for disk in vm.disks {
                let name = "VM '\(vm.name)' disk '\(disk.device)'"
                let found = try Self.check(disk, vmName: vm.name, vmAddress: address, in: devices, name: name, policy: policy)
                planDevices.formUnion([disk.device, found.qmpDevice].compactMap { $0 })
                guard sources.insert(found.source ?? "").inserted else {
                    throw PreflightError("\(name): source \(found.source ?? "") is also the source of another disk of the plan")
                }
                disks.append(found)
                if let image = devices.first(where: { $0.medium?.image.filename == found.source })?.medium?.image {
                    space.add(name: name, destination: disk.destination, source: image)
                }
            }
            try await checkActivity(vmName: vm.name, vmAddress: address, session: session, devices: devices,
                                    planDevices: planDevices, strategy: policy.strategy)
        }
        try space.check()
        return disks
    }

    /// For one VM of the plan: its backend can do what the policy's strategy needs, and
    /// `VMActivityCheck` (no foreign job, no migration).
    func checkActivity(vmName: String, vmAddress: String, session: any VMSession, devices: [VMDisk],
                       planDevices: Set<String>, strategy: CopyStrategy) async throws {
        switch strategy {
        case .stream:
            let missing = BackendCapability.neededToStream.subtracting(session.capabilities)
            if !missing.isEmpty {
                throw PreflightError(
                    "VM '\(vmName)': its hypervisor backend cannot \(missing.map(\.rawValue).sorted().joined(separator: ", ")), which copying by streaming needs (a finished copy held until a confirmed flush, all disks switched at once); nothing was touched")
            }
        case .mirror:
            let missing = BackendCapability.neededToMirror.subtracting(session.capabilities)
            if !missing.isEmpty {
                throw PreflightError(
                    "VM '\(vmName)': its hypervisor backend cannot \(missing.map(\.rawValue).sorted().joined(separator: ", ")), which strategy: mirror needs; use strategy: stream for this VM; nothing was touched")
            }
        }
        let store = self.store
        try await VMActivityCheck.check(
            vmName: vmName, session: session, planDevices: planDevices,
            deviceNames: Set(devices.map(\.device).filter { !$0.isEmpty })
        ) { VMActivityCheck.isOwnJobOfAnotherDisk($0, vmAddress: vmAddress, planDevices: planDevices, store: store) }
    }

    /// Checks `disk` of the VM `vmName` at `vmAddress` (stored form) against the VM's
    /// `devices`, and returns it as it is to be recorded, with its source found.
    static func check(_ disk: Plan.Disk, vmName: String, vmAddress: String, in devices: [VMDisk], name: String,
                      policy: Policy) throws -> NewPlan.Disk {
        guard let entry = devices.device(named: disk.device) else {
            let known = devices.map { $0.device.isEmpty ? ($0.guestDevice ?? "?") : $0.device }.joined(separator: ", ")
            throw PreflightError("\(name): no such device in the VM (devices: \(known))")
        }
        if let reason = entry.notCopyable { throw PreflightError("\(name): \(reason)") }
        guard let medium = entry.medium else { throw PreflightError("\(name): the device has no medium") }
        let source = medium.image.filename
        guard source.hasPrefix("/") else {
            throw PreflightError("\(name): source \(source) is not a plain file (json: and network protocols are refused)")
        }
        try checkChain(medium.image, name: name)
        do {
            try DestinationCheck.check(disk, strategy: policy.strategy, virtualSize: medium.image.virtualSize)
        } catch let error as PreflightError {
            throw PreflightError("\(name): \(error.description)")
        }
        let destination = DestinationCheck.resolved(disk.destination)
        let realDestination = BlockDeviceDestination.realPath(disk.destination)
        for image in medium.image.chain {
            if image.filename == disk.destination || DestinationCheck.resolved(image.filename) == destination
                || BlockDeviceDestination.realPath(image.filename) == realDestination {
                throw PreflightError("\(name): destination \(disk.destination) is an image of the source chain (\(image.filename))")
            }
        }
        if policy.retireSource == .rename {
            var info = stat()
            if lstat(source + ".retired", &info) == 0 {
                throw PreflightError("\(name): \(source).retired already exists, so the source cannot be retired by renaming")
            }
        }
        do {
            // The destination overlay livecopy will write must be possible for this size: a
            // hostile image header's size is refused here, before anything is touched.
            _ = try Qcow2Overlay(virtualSize: medium.image.virtualSize, backing: source, backingFormat: medium.image.format)
        } catch let error as CreationFailed {
            throw PreflightError("\(name): source \(source): \(error.description)")
        }
        let qmpDevice = entry.device.isEmpty ? (entry.guestDevice ?? medium.nodeName ?? disk.device) : entry.device
        return NewPlan.Disk(
            vmName: vmName, vmAddress: vmAddress, device: disk.device, destination: disk.destination,
            source: source, sourceFormat: medium.image.format, qmpDevice: qmpDevice,
            strategy: policy.strategy, destinationFormat: disk.resolvedFormat)
    }

    /// Every image of the source chain is a plain file, and every backing link records its
    /// format: a link without one makes QEMU guess the format from the backing file's
    /// contents (a raw disk whose guest wrote a qcow2 header would open any file it names).
    static func checkChain(_ top: DiskImage, name: String) throws {
        for image in top.chain {
            guard image.filename.hasPrefix("/") else {
                throw PreflightError("\(name): image \(image.filename) of the source chain is not a plain file (json: and network protocols are refused)")
            }
            if let backing = image.backingFilename, image.backingFilenameFormat?.isEmpty ?? true {
                throw PreflightError("\(name): \(image.filename) names its backing file \(backing) without a backing format, so QEMU guesses it from the contents; record it with qemu-img rebase -u -F <format> -b \(backing) \(image.filename) while the VM is stopped")
            }
        }
    }

    /// The checks that need no VM.
    func checkOffline(_ plan: Plan, policy: Policy) throws {
        try checkOtherPlans(plan)
        try checkHooks(policy)
        for (vm, disk) in plan.allDisks {
            do {
                try sessions.hypervisor.checkAddress(vm.address.stored, allowShared: policy.allowSharedSocket)
                try DestinationCheck.check(disk, strategy: policy.strategy, virtualSize: nil)
            } catch let error as PreflightError {
                throw PreflightError("VM '\(vm.name)' disk '\(disk.device)': \(error.description)")
            } catch let error as BackendError {
                throw PreflightError("VM '\(vm.name)' disk '\(disk.device)': \(error.description)")
            }
        }
    }

    /// Every hook's program may be run as livecopy's user (`HookProgramCheck`).
    private func checkHooks(_ policy: Policy) throws {
        if let problem = HookProgramCheck.problems(policy.hooks).first { throw PreflightError(problem) }
    }

    /// A plan not yet final must not claim the same destination or the same VM disk.
    /// Checked here to refuse early; the store checks again when it records the plan, in
    /// the same transaction (a `.claimed` `StoreError`), which is what makes two concurrent submits safe.
    private func checkOtherPlans(_ plan: Plan) throws {
        let active = try store.plans(states: [.pending, .running, .failed, .needsAttention], vm: nil, limit: nil)
        for other in active {
            for claimed in try store.disks(ofPlan: other.id) where !claimed.state.isFinal {
                for (vm, disk) in plan.allDisks {
                    var claim: ClaimConflict.Claim?
                    if claimed.destination == disk.destination {
                        claim = .destination(disk.destination)
                    } else if claimed.vmAddress == vm.address.stored && claimed.device == disk.device {
                        claim = .vmDisk
                    }
                    if let claim {
                        throw PreflightError(ClaimConflict(vmName: vm.name, device: disk.device, claim: claim,
                                                           otherPlanId: other.id, otherPlanState: other.state).description)
                    }
                }
            }
        }
    }
}
