// Which disk each of livecopy's jobs runs on, kept in the domain's live metadata.

import CLibvirt
import FoundationXML
import Foundation
import LivecopyBackend
import Synchronization

/// One of livecopy's jobs on a libvirt domain, and how the session follows it.
struct LibvirtJob: Sendable, Equatable {
    /// The stages of livecopy's jobs under libvirt.
    enum Kind: String, Sendable {
        /// The copy: a QEMU stream job named by livecopy, held in `pending` when done.
        case stream
        /// The copy is flushed; its QEMU job is being replaced by libvirt's own pull
        /// (`virDomainBlockPull`), which drops the backing file and updates libvirt's records.
        case finalizing
        /// A rollback's active commit (`virDomainBlockCommit`), pivoting onto `pivotTo`.
        case commit
        /// A rollback's block copy (`virDomainBlockCopy`), pivoting onto `pivotTo`.
        case copy
    }

    let id: String
    /// The disk's target (`vda`).
    let disk: String
    let kind: Kind
    /// The image the disk runs on once a commit or copy pivoted.
    let pivotTo: String?

    /// Whether libvirt runs the job (it has no job id; it is found by its disk).
    var isLibvirtsOwn: Bool {
        switch kind {
        case .stream: return false
        case .finalizing, .commit, .copy: return true
        }
    }
}

/// livecopy's jobs on one domain. libvirt names its own block jobs by disk, not by the
/// caller's id, so livecopy records which disk each of its jobs is on, in the domain's
/// live metadata (`virDomainSetMetadata`): the record lives as long as the running
/// domain does (across livecopy and libvirtd restarts) and no longer, like the jobs.
final class LibvirtJobRegistry: Sendable {
    static let namespace = "https://livecopy.dev/xmlns/jobs/1"
    private let domain: LibvirtDomainConnection
    private let jobs: Mutex<[String: LibvirtJob]>

    private init(domain: LibvirtDomainConnection, jobs: [String: LibvirtJob]) {
        self.domain = domain
        self.jobs = Mutex(jobs)
    }

    /// Reads the domain's record.
    static func load(_ domain: LibvirtDomainConnection) async throws -> LibvirtJobRegistry {
        let text = try await domain.call("virDomainGetMetadata") { pointer -> String? in
            guard let raw = virDomainGetMetadata(pointer, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), namespace,
                                                 UInt32(VIR_DOMAIN_AFFECT_LIVE.rawValue)) else {
                // No record yet is no failure.
                if let error = virGetLastError(), error.pointee.code == Int32(VIR_ERR_NO_DOMAIN_METADATA.rawValue) {
                    virResetLastError()
                    return ""
                }
                return nil
            }
            defer { free(raw) }
            return String(cString: raw)
        }
        var jobs: [String: LibvirtJob] = [:]
        if !text.isEmpty {
            let document = try XMLDocument(xmlString: text)
            for case let element as XMLElement in try document.nodes(forXPath: "/jobs/job") {
                guard let id = element.value(of: "id"), let disk = element.value(of: "disk"),
                      let kind = element.value(of: "kind").flatMap(LibvirtJob.Kind.init(rawValue:)) else { continue }
                jobs[id] = LibvirtJob(id: id, disk: disk, kind: kind, pivotTo: element.value(of: "pivot-to"))
            }
        }
        return LibvirtJobRegistry(domain: domain, jobs: jobs)
    }

    func job(_ id: String) -> LibvirtJob? { jobs.withLock { $0[id] } }

    var all: [LibvirtJob] { jobs.withLock { Array($0.values) } }

    /// Records `job` (replacing one with its id) in the domain before it is acted on.
    func record(_ job: LibvirtJob) async throws {
        try await save { $0[job.id] = job }
    }

    /// Forgets job `id`.
    func forget(_ id: String) async throws {
        guard job(id) != nil else { return }
        try await save { $0.removeValue(forKey: id) }
    }

    private func save(_ change: (inout [String: LibvirtJob]) -> Void) async throws {
        let snapshot: [String: LibvirtJob] = jobs.withLock { jobs in
            change(&jobs)
            return jobs
        }
        let root = XMLElement(name: "jobs")
        for job in snapshot.values.sorted(by: { $0.id < $1.id }) {
            let element = XMLElement(name: "job")
            element.setAttribute("id", job.id)
            element.setAttribute("disk", job.disk)
            element.setAttribute("kind", job.kind.rawValue)
            if let pivotTo = job.pivotTo { element.setAttribute("pivot-to", pivotTo) }
            root.addChild(element)
        }
        let text = root.xmlString
        try await domain.check("virDomainSetMetadata") { pointer in
            virDomainSetMetadata(pointer, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), text, "livecopy", Self.namespace,
                                 UInt32(VIR_DOMAIN_AFFECT_LIVE.rawValue))
        }
    }
}
