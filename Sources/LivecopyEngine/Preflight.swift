import Foundation
import LivecopyModel
import LivecopyBackend

/// A plan refused before anything was touched, with a one-line reason naming the disk.
public struct PreflightError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Checks a plan against the VMs and the file system before anything is recorded or
/// touched, and discovers each disk's source image from the VM. One pass makes every
/// check and returns a `PreflightReport`: every disk with what was found, every problem.
struct Preflight {
    let sessions: VMSessions
    let store: any WorkflowStore
    let inspector: any ImageInspector

    /// What the plan checked is.
    enum Purpose: Sendable {
        /// A new plan (`submit`, `validate`): every check, the other plans' claims included.
        case newPlan
        /// Plan `id`, recorded with `submit --detach`, on its first run: its claims were
        /// checked as it was recorded, it does not count against itself, and a VM that
        /// cannot be reached now is left to the run (which leaves its disks as they are).
        case detachedPlan(id: Int64)
    }

    /// One VM of the plan to check: its name, its address (stored form) and its disks.
    struct VMEntry: Sendable {
        let name: String
        let address: String
        let disks: [Plan.Disk]

        /// The VMs of `plan`, in plan order.
        static func of(_ plan: Plan) -> [VMEntry] {
            plan.vms.map { VMEntry(name: $0.name, address: $0.address.stored, disks: $0.disks) }
        }

        /// The VMs of recorded disks, in the order of their first disk.
        static func of(_ disks: [DiskRecord]) -> [VMEntry] {
            var order: [String] = []
            var byAddress: [String: (name: String, disks: [Plan.Disk])] = [:]
            for disk in disks {
                if byAddress[disk.vmAddress] == nil { order.append(disk.vmAddress) }
                byAddress[disk.vmAddress, default: (disk.vmName, [])].disks.append(
                    Plan.Disk(device: disk.device, destination: disk.destination, format: disk.destinationFormat))
            }
            return order.map { VMEntry(name: byAddress[$0]!.name, address: $0, disks: byAddress[$0]!.disks) }
        }
    }

    /// Every check, for every disk: throws only when the store cannot be read.
    func report(_ vms: [VMEntry], policy: Policy, purpose: Purpose) async throws -> PreflightReport {
        var report = PreflightReport()
        switch purpose {
        case .newPlan: report.problems += try otherPlanClaims(vms)
        case .detachedPlan: break
        }
        // Checked again at a detached plan's first run: the programs may have changed.
        report.problems += HookProgramCheck.problems(policy.hooks)
        var sources = Set<String>()
        var images: [Int: DiskImage] = [:]
        for vm in vms {
            let unchecked = vm.disks.map {
                PreflightReport.Disk(vmName: vm.name, device: $0.device, destination: $0.destination,
                                     destinationFormat: $0.resolvedFormat)
            }
            switch await reach(vm, policy: policy) {
            case .problem(let problem):
                switch purpose {
                case .newPlan:
                    report.problems.append(problem)
                    for (disk, entry) in zip(vm.disks, unchecked) {
                        report.problems += Self.offlineProblems(disk, name: entry.refusalName, policy: policy)
                    }
                case .detachedPlan:
                    break
                }
                report.disks += unchecked
            case .reached(let session, let devices):
                var planDevices = Set<String>()
                for (disk, var entry) in zip(vm.disks, unchecked) {
                    let checked = Self.examine(disk, vmName: vm.name, vmAddress: vm.address, in: devices,
                                               name: entry.refusalName, policy: policy)
                    report.problems += checked.problems
                    planDevices.formUnion(checked.deviceNames)
                    if let found = checked.found, let image = checked.image {
                        entry.found = found
                        entry.virtualSize = image.virtualSize
                        if !sources.insert(image.filename).inserted {
                            report.problems.append("\(entry.refusalName): source \(image.filename) is also the source of another disk of the plan")
                        }
                        images[report.disks.count] = image
                    }
                    report.disks.append(entry)
                }
                report.problems += await activityProblems(vmName: vm.name, vmAddress: vm.address, session: session,
                                                          devices: devices, planDevices: planDevices, policy: policy)
            }
        }

        var space = FreeSpaceCheck(margin: policy.spaceMargin)
        for (index, (bytes, source)) in await allocations(of: images).sorted(by: { $0.key < $1.key }) {
            report.disks[index].found?.allocatedBytes = bytes
            report.disks[index].allocationSource = source
            let disk = report.disks[index]
            space.add(name: disk.refusalName, label: disk.label, destination: disk.destination, bytes: bytes)
        }
        switch purpose {
        case .newPlan: try space.addInProgress(from: store, excluding: nil)
        case .detachedPlan(let id): try space.addInProgress(from: store, excluding: id)
        }
        for index in report.disks.indices {
            report.disks[index].filesystem = space.directory(for: report.disks[index].destination)
        }
        report.filesystems = space.filesystems()
        report.problems += space.problems(report.filesystems)
        return report
    }

    /// A VM reached, with its disks; or the one problem that stopped it.
    private enum Reach {
        case reached(any VMSession, [VMDisk])
        case problem(String)
    }

    /// Checks the VM's address, connects, and lists its disks.
    private func reach(_ vm: VMEntry, policy: Policy) async -> Reach {
        do {
            try sessions.hypervisor.checkAddress(vm.address, allowShared: policy.allowSharedSocket)
        } catch {
            return .problem("VM '\(vm.name)': \(describe(error))")
        }
        let session: any VMSession
        do {
            session = try await sessions.session(for: vm.address)
        } catch {
            return .problem("VM '\(vm.name)': \(describe(error))")
        }
        do {
            return .reached(session, try await session.disks())
        } catch {
            return .problem("VM '\(vm.name)': query-block failed: \(describe(error))")
        }
    }

    /// How many `qemu-img map`s run at once.
    static let concurrentMaps = 4

    /// Each source's allocated bytes (by the index given), from its map when it can be
    /// read, else from its files' sizes on disk.
    private func allocations(of images: [Int: DiskImage]) async -> [Int: (Int64, PreflightReport.AllocationSource)] {
        let inspector = self.inspector
        return await withTaskGroup(of: (Int, Int64, PreflightReport.AllocationSource).self) { group in
            var results: [Int: (Int64, PreflightReport.AllocationSource)] = [:]
            var running = 0
            for (index, image) in images.sorted(by: { $0.key < $1.key }) {
                if running == Self.concurrentMaps, let (done, bytes, source) = await group.next() {
                    results[done] = (bytes, source)
                    running -= 1
                }
                group.addTask {
                    let (bytes, source) = await Self.allocation(of: image, inspector: inspector)
                    return (index, bytes, source)
                }
                running += 1
            }
            for await (done, bytes, source) in group { results[done] = (bytes, source) }
            return results
        }
    }

    /// The bytes a copy of `image`'s chain really copies: allocated anywhere in the chain
    /// (`qemu-img map -U`), at most the virtual size; if the map cannot be read, the
    /// chain's files' sizes on disk.
    static func allocation(of image: DiskImage, inspector: any ImageInspector) async -> (Int64, PreflightReport.AllocationSource) {
        do {
            let map = try await inspector.allocationMap(of: image.filename, format: image.format)
            return (max(0, min(map.allocatedBytes, image.virtualSize)), .map)
        } catch {
            return (FreeSpaceCheck.chainBytes(image), .fileBlocks(reason: describe(error)))
        }
    }

    /// For one VM of the plan: its backend can do what the policy's strategy and `verify`
    /// need, and `VMActivityCheck` (no foreign job, no migration).
    func activityProblems(vmName: String, vmAddress: String, session: any VMSession, devices: [VMDisk],
                          planDevices: Set<String>, policy: Policy) async -> [String] {
        switch policy.strategy {
        case .stream:
            let missing = BackendCapability.neededToStream.subtracting(session.capabilities)
            if !missing.isEmpty {
                return ["VM '\(vmName)': its hypervisor backend cannot \(missing.map(\.rawValue).sorted().joined(separator: ", ")), which copying by streaming needs (a finished copy held until a confirmed flush, all disks switched at once); nothing was touched"]
            }
        case .mirror:
            let missing = BackendCapability.neededToMirror.subtracting(session.capabilities)
            if !missing.isEmpty {
                return ["VM '\(vmName)': its hypervisor backend cannot \(missing.map(\.rawValue).sorted().joined(separator: ", ")), which strategy: mirror needs; use strategy: stream for this VM; nothing was touched"]
            }
        }
        switch policy.verify {
        case .none: break
        case .sample, .full:
            if !session.capabilities.contains(.dirtyTracking) {
                return ["VM '\(vmName)': its hypervisor backend cannot track the guest's writes with a dirty bitmap in the switch's transaction, which verify: \(policy.verify.rawValue) needs to compare the copy with its source; set verify: none in the policy for this VM (docs/retirement.md#libvirt); nothing was touched"]
            }
        }
        let store = self.store
        return await VMActivityCheck.problems(
            vmName: vmName, session: session, planDevices: planDevices,
            deviceNames: Set(devices.map(\.device).filter { !$0.isEmpty })
        ) { VMActivityCheck.isOwnJobOfAnotherDisk($0, vmAddress: vmAddress, planDevices: planDevices, store: store) }
    }

    /// What one disk's check found: the disk as it is to be recorded and its source image
    /// (once the source is found), the names the VM knows its device by, and the problems.
    struct DiskCheck {
        var found: NewPlan.Disk?
        var image: DiskImage?
        var deviceNames: [String] = []
        var problems: [String] = []
    }

    /// Checks `disk` of the VM `vmName` at `vmAddress` (stored form) against the VM's
    /// `devices`; throws the first problem, or returns the disk as it is to be recorded.
    static func check(_ disk: Plan.Disk, vmName: String, vmAddress: String, in devices: [VMDisk], name: String,
                      policy: Policy) throws -> NewPlan.Disk {
        let checked = examine(disk, vmName: vmName, vmAddress: vmAddress, in: devices, name: name, policy: policy)
        if let first = checked.problems.first { throw PreflightError(first) }
        guard let found = checked.found else { throw PreflightError("\(name): no source found") }
        return found
    }

    /// Every check of `disk` against the VM's `devices`, and of its destination.
    static func examine(_ disk: Plan.Disk, vmName: String, vmAddress: String, in devices: [VMDisk], name: String,
                        policy: Policy) -> DiskCheck {
        // With no source to check against, the destination is still checked on its own.
        func offline() -> [String] { offlineProblems(disk, name: name, policy: policy) }
        guard let entry = devices.device(named: disk.device) else {
            let known = devices.map { $0.device.isEmpty ? ($0.guestDevice ?? "?") : $0.device }.joined(separator: ", ")
            return DiskCheck(problems: ["\(name): no such device in the VM (devices: \(known))"] + offline())
        }
        let qmpDevice = entry.device.isEmpty ? (entry.guestDevice ?? entry.medium?.nodeName ?? disk.device) : entry.device
        let deviceNames = [disk.device, qmpDevice]
        if let reason = entry.notCopyable {
            return DiskCheck(deviceNames: deviceNames, problems: ["\(name): \(reason)"] + offline())
        }
        guard let medium = entry.medium else {
            return DiskCheck(deviceNames: deviceNames, problems: ["\(name): the device has no medium"] + offline())
        }
        let source = medium.image.filename
        guard source.hasPrefix("/") else {
            return DiskCheck(deviceNames: deviceNames,
                             problems: ["\(name): source \(source) is not a plain file (json: and network protocols are refused)"] + offline())
        }
        var problems = chainProblems(medium.image, name: name)
        do {
            try DestinationCheck.check(disk, strategy: policy.strategy, virtualSize: medium.image.virtualSize)
        } catch {
            problems.append("\(name): \(describe(error))")
        }
        let destination = DestinationCheck.resolved(disk.destination)
        let realDestination = BlockDeviceDestination.realPath(disk.destination)
        if let image = medium.image.chain.first(where: {
            $0.filename == disk.destination || DestinationCheck.resolved($0.filename) == destination
                || BlockDeviceDestination.realPath($0.filename) == realDestination
        }) {
            problems.append("\(name): destination \(disk.destination) is an image of the source chain (\(image.filename))")
        }
        if policy.retireSource == .rename {
            var info = stat()
            if lstat(source + ".retired", &info) == 0 {
                problems.append("\(name): \(source).retired already exists, so the source cannot be retired by renaming")
            }
        }
        if policy.retireSource == .quarantine, let problem = Quarantine.preflightProblem(source: source) {
            problems.append("\(name): \(problem)")
        }
        do {
            // The destination overlay livecopy will write must be possible for this size: a
            // hostile image header's size is refused here, before anything is touched.
            _ = try Qcow2Overlay(virtualSize: medium.image.virtualSize, backing: source, backingFormat: medium.image.format)
        } catch {
            problems.append("\(name): source \(source): \(describe(error))")
        }
        let found = NewPlan.Disk(
            vmName: vmName, vmAddress: vmAddress, device: disk.device, destination: disk.destination,
            source: source, sourceFormat: medium.image.format, qmpDevice: qmpDevice,
            strategy: policy.strategy, destinationFormat: disk.resolvedFormat)
        return DiskCheck(found: found, image: medium.image, deviceNames: deviceNames, problems: problems)
    }

    /// The checks of `disk` that need no VM: its destination's kind, format and directory.
    static func offlineProblems(_ disk: Plan.Disk, name: String, policy: Policy) -> [String] {
        do {
            try DestinationCheck.check(disk, strategy: policy.strategy, virtualSize: nil)
            return []
        } catch {
            return ["\(name): \(describe(error))"]
        }
    }

    /// Every image of the source chain is a plain file, and every backing link records its
    /// format: a link without one makes QEMU guess the format from the backing file's
    /// contents (a raw disk whose guest wrote a qcow2 header would open any file it names).
    static func chainProblems(_ top: DiskImage, name: String) -> [String] {
        top.chain.compactMap { image -> String? in
            guard image.filename.hasPrefix("/") else {
                return "\(name): image \(image.filename) of the source chain is not a plain file (json: and network protocols are refused)"
            }
            if let backing = image.backingFilename, image.backingFilenameFormat?.isEmpty ?? true {
                return "\(name): \(image.filename) names its backing file \(backing) without a backing format, so QEMU guesses it from the contents; record it with qemu-img rebase -u -F <format> -b \(backing) \(image.filename) while the VM is stopped"
            }
            return nil
        }
    }

    /// The checks that need no VM.
    /// A fleet's submit, away from the plan's hosts: only what the store can tell (another
    /// plan not yet final claims a disk or destination); each host's agent runs the full
    /// preflight when it claims its plan.
    func checkClaims(_ plan: Plan) throws {
        if let first = try otherPlanClaims(VMEntry.of(plan)).first { throw PreflightError(first) }
    }

    func checkOffline(_ plan: Plan, policy: Policy) throws {
        if let first = try otherPlanClaims(VMEntry.of(plan)).first { throw PreflightError(first) }
        if let hook = HookProgramCheck.problems(policy.hooks).first { throw PreflightError(hook) }
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

    /// A plan not yet final must not claim the same destination or the same VM disk: one
    /// problem per disk of the plan that another plan claims. Checked here to refuse
    /// early; the store checks again when it records the plan, in the same transaction (a
    /// `.claimed` `StoreError`), which is what makes two concurrent submits safe.
    private func otherPlanClaims(_ vms: [VMEntry]) throws -> [String] {
        var problems: [String] = []
        var named = Set<[String]>()
        let active = try store.plans(states: [.pending, .running, .failed, .needsAttention], vm: nil, limit: nil)
        for other in active {
            for claimed in try store.disks(ofPlan: other.id) where !claimed.state.isFinal {
                for vm in vms {
                    for disk in vm.disks where !named.contains([vm.address, disk.device]) {
                        var claim: ClaimConflict.Claim?
                        if claimed.destination == disk.destination {
                            claim = .destination(disk.destination)
                        } else if claimed.vmAddress == vm.address && claimed.device == disk.device {
                            claim = .vmDisk
                        }
                        if let claim {
                            named.insert([vm.address, disk.device])
                            problems.append(ClaimConflict(vmName: vm.name, device: disk.device, claim: claim,
                                                          otherPlanId: other.id, otherPlanState: other.state).description)
                        }
                    }
                }
            }
        }
        return problems
    }
}
