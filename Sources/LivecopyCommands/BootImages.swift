import LivecopyEngine
import LivecopyModel

/// The image each disk's VM must boot from, as `status` shows it: the answer of
/// `Engine.bootImage(of:)`, the one `recover` gives too.
enum BootImages {
    /// By disk id, for the disks that have an answer. The running VM is asked only when no
    /// live livecopy holds its monitor (that owner settles the answer itself). A fleet plan's
    /// VMs and files are on its host, not here: its answer is the record's alone.
    static func of(_ plan: PlanRecord, disks: [DiskRecord], store: any WorkflowStore) async -> [Int64: String] {
        // A fleet plan's images are on its host: only the record can answer here.
        if plan.host != nil {
            return Dictionary(uniqueKeysWithValues: disks.compactMap { disk in disk.bootImage.map { (disk.id, $0) } })
        }
        let engine = Engine(store: store, hypervisor: makeHypervisor(), commandTimeout: plan.policy.commandTimeout)
        let askingQEMU = plan.state != .pending && plan.state != .refused && (try? engine.liveOwner(ofPlan: plan.id)) == nil
        var images: [Int64: String] = [:]
        for disk in disks {
            if let image = await engine.bootImage(of: disk, askingQEMU: askingQEMU) { images[disk.id] = image }
        }
        await engine.shutdown()
        return images
    }
}
