import LivecopyEngine
import LivecopyModel

/// Never runs qemu-img (the fake VM's images are placeholders): answers what the test
/// says, either way.
struct StubInspector: ImageInspector {
    /// What `hasOwnData` answers for every image.
    var ownData = false
    /// What `sameContents` answers for every pair.
    var same = true

    func hasOwnData(_ path: String) async throws -> Bool { ownData }
    func sameContents(_ first: String, format firstFormat: String, _ second: String, format secondFormat: String) async throws -> Bool { same }
    /// Nothing allocated: the placeholders hold nothing.
    func allocationMap(of path: String, format: String) async throws -> AllocationMap {
        AllocationMap(extents: [], diskSize: 0)
    }
}
