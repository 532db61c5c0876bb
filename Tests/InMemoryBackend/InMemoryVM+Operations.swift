// What an in-memory VM does for each operation of `VMSession`, following QEMU's rules
// closely enough for the engine's tests: a job id is unique, a job is dismissed only
// when concluded, a pull drops the backing file only when finalized.

import Foundation
import LivecopyBackend

extension InMemoryVM {
    func disksNow() -> [VMDisk] {
        state.withLock { $0.devices.map(Self.vmDisk) }
    }

    static func vmDisk(_ device: Device) -> VMDisk {
        var below: DiskImage?
        for image in device.chain.reversed() {
            below = DiskImage(filename: image.file, format: image.format, virtualSize: image.virtualSize,
                              backingFilename: below?.filename, backingFilenameFormat: below?.format, backingImage: below)
        }
        let medium = below.map { top in
            VMDisk.Medium(file: top.filename, nodeName: device.nodeName, backingFile: top.backingFilename, image: top)
        }
        return VMDisk(device: device.name, guestDevice: nil, medium: medium)
    }

    /// The job list; each read moves every running job one step on.
    func jobsAdvancingOneStep() -> [CopyJob] {
        var events: [JobEvent] = []
        let jobs = state.withLock { state -> [CopyJob] in
            for id in state.order {
                guard var job = state.jobs[id], job.status == .running else { continue }
                job.steps += 1
                if job.error != nil {
                    // A job scripted to fail aborts at its first step, then concludes.
                    job.status = .concluded
                    events.append(.statusChanged(id: id, status: .aborting))
                } else if job.steps >= stepsPerJob {
                    switch job.kind {
                    case .pull:
                        if capabilities.contains(.holdsFinishedPull) {
                            job.status = .pending
                        } else {
                            Self.dropBacking(of: job.device, in: &state)
                            job.status = .concluded
                        }
                    case .commit, .mirror:
                        job.status = .ready
                    }
                }
                if job.status != .running { events.append(.statusChanged(id: id, status: job.status)) }
                state.jobs[id] = job
            }
            return state.order.compactMap { state.jobs[$0] }.map { job in
                CopyJob(id: job.id, type: job.kind.type, status: job.status,
                        currentProgress: Int64(min(job.steps, stepsPerJob)) << 20, totalProgress: Int64(stepsPerJob) << 20,
                        error: job.status == .concluded ? job.error : nil)
            }
        }
        emit(events)
        return jobs
    }

    func ioErrorStatus(_ id: String) -> String? {
        state.withLock { $0.jobs[id]?.ioError }
    }

    func switchToOverlays(_ requests: [OverlayRequest]) throws {
        try state.withLock { state in
            var devices = state.devices
            for request in requests {
                guard let index = devices.firstIndex(where: { $0.name == request.disk.name || $0.nodeName == request.disk.name }) else {
                    throw refused("switchToOverlays", "Cannot find device='\(request.disk.name)' nor node-name='\(request.disk.name)'")
                }
                guard FileManager.default.fileExists(atPath: request.overlayFile) else {
                    throw refused("switchToOverlays", "Could not open '\(request.overlayFile)': No such file or directory")
                }
                guard let top = devices[index].chain.first else {
                    throw refused("switchToOverlays", "Device '\(devices[index].name)' has no medium")
                }
                devices[index].chain.insert(Image(file: request.overlayFile, format: "qcow2", virtualSize: top.virtualSize), at: 0)
                devices[index].nodeName = request.overlayNodeName
            }
            state.devices = devices  // all or nothing
        }
    }

    func startJob(_ kind: JobKind, disk: String, jobId: String) throws {
        try state.withLock { state in
            guard state.jobs[jobId] == nil else { throw refused("start", "Job ID '\(jobId)' already in use") }
            guard let device = state.devices.first(where: { $0.name == disk || $0.nodeName == disk }) else {
                throw refused("start", "Cannot find device='\(disk)' nor node-name='\(disk)'")
            }
            switch kind {
            case .pull:
                break
            case .commit(let baseFile):
                guard device.chain.count > 1 else { throw refused("start", "Top image has no backing file") }
                if let baseFile, !device.chain.dropFirst().contains(where: { $0.file == baseFile }) {
                    throw refused("start", "Can't find '\(baseFile)' in the backing chain")
                }
            case .mirror(let target, _):
                guard FileManager.default.fileExists(atPath: target) else {
                    throw refused("start", "Could not open '\(target)': No such file or directory")
                }
            }
            var job = Job(id: jobId, kind: kind, device: device.name, status: .running)
            job.error = state.failNextJobWith
            state.failNextJobWith = nil
            state.jobs[jobId] = job
            state.order.append(jobId)
        }
        emit([.statusChanged(id: jobId, status: .created), .statusChanged(id: jobId, status: .running)])
    }

    func finalize(_ id: String) throws {
        try state.withLock { state in
            guard let job = state.jobs[id], job.status == .pending else {
                throw refused("finalize", "Job '\(id)' in state '\(state.jobs[id]?.status.description ?? "none")' cannot accept command verb 'finalize'")
            }
            Self.dropBacking(of: job.device, in: &state)
            state.jobs[id]?.status = .concluded
        }
        emit([.statusChanged(id: id, status: .concluded)])
    }

    static func dropBacking(of device: String, in state: inout State) {
        guard let index = state.devices.firstIndex(where: { $0.name == device }) else { return }
        state.devices[index].chain = Array(state.devices[index].chain.prefix(1))
    }

    func flush(_ nodeName: String) -> FlushEvidence {
        state.withLock { state in
            guard state.devices.contains(where: { $0.nodeName == nodeName }) else {
                return .notConfirmed("no node \(nodeName)")
            }
            return state.flushAnswer
        }
    }

    func complete(_ id: String) throws {
        try state.withLock { state in
            guard let job = state.jobs[id], job.status == .ready,
                  let index = state.devices.firstIndex(where: { $0.name == job.device }) else {
                throw refused("complete", "The active block job '\(id)' cannot be completed")
            }
            switch job.kind {
            case .pull:
                throw refused("complete", "Job '\(id)' does not support completion")
            case .commit(let baseFile):
                let chain = state.devices[index].chain
                let base = baseFile.flatMap { file in chain.firstIndex { $0.file == file } } ?? chain.count - 1
                state.devices[index].chain = Array(chain[base...])
            case .mirror(let target, let format):
                let size = state.devices[index].chain.first?.virtualSize ?? 0
                state.devices[index].chain = [Image(file: target, format: format, virtualSize: size)]
            }
            state.devices[index].nodeName = "node-\(job.device)-pivoted"
            state.jobs[id]?.status = .concluded
        }
        emit([.statusChanged(id: id, status: .concluded)])
    }

    func cancel(_ id: String) throws {
        try state.withLock { state in
            guard let job = state.jobs[id], !job.status.isOver else {
                throw refused("cancel", "Block job '\(id)' not found")
            }
            state.jobs[id]?.status = .concluded
            state.jobs[id]?.error = "Operation cancelled"
        }
        emit([.statusChanged(id: id, status: .concluded)])
    }

    func pause(_ id: String) throws {
        guard capabilities.contains(.pauseJobs) else {
            throw BackendError(.unsupported, operation: "pause", reason: "this VM cannot pause jobs")
        }
        try state.withLock { state in
            guard let job = state.jobs[id], job.status.acceptsControls else { throw refused("pause", "Block job '\(id)' not found") }
            state.jobs[id]?.status = .paused
        }
        emit([.statusChanged(id: id, status: .paused)])
    }

    func resume(_ id: String) throws {
        try state.withLock { state in
            guard let job = state.jobs[id], job.status == .paused else { throw refused("resume", "Job '\(id)' is not paused") }
            state.jobs[id]?.status = .running
            state.jobs[id]?.ioError = nil
        }
        emit([.statusChanged(id: id, status: .running)])
    }

    func setSpeed(_ id: String, _ speed: Int64) throws {
        try state.withLock { state in
            guard state.jobs[id] != nil else { throw refused("setSpeed", "Block job '\(id)' not found") }
            state.jobs[id]?.speed = speed
        }
    }

    func dismiss(_ id: String) throws {
        try state.withLock { state in
            guard let job = state.jobs[id], job.status == .concluded else {
                throw refused("dismiss", "Job '\(id)' in state '\(state.jobs[id]?.status.description ?? "none")' cannot accept command verb 'dismiss'")
            }
            state.jobs[id] = nil
            state.order.removeAll { $0 == id }
        }
        emit([.statusChanged(id: id, status: .null)])
    }
}
