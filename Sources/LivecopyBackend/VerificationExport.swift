// What a data verification asks of the hypervisor: the destination exported read-only,
// with the guest's writes since the switch frozen in a bitmap.

/// A read-only export of a destination for comparing it with its source.
public struct VerificationExport: Sendable, Equatable {
    /// The destination's node (the VM's active image for the disk).
    public let nodeName: String
    /// The recording dirty bitmap on that node (added at the switch, or a mirror's READY).
    public let bitmap: String

    public init(nodeName: String, bitmap: String) {
        self.nodeName = nodeName
        self.bitmap = bitmap
    }

    /// The export's name (and id), and the frozen copy's name.
    public var exportName: String { bitmap + "-frozen" }
    public var frozenBitmap: String { bitmap + "-frozen" }
}

/// Where an open `VerificationExport` is read: an NBD export on a UNIX socket, whose
/// dirty bitmap context is `qemu:dirty-bitmap:<frozenBitmap>`.
public struct VerificationEndpoint: Sendable, Equatable {
    public let socketPath: String
    public let exportName: String
    public let frozenBitmap: String

    public init(socketPath: String, exportName: String, frozenBitmap: String) {
        self.socketPath = socketPath
        self.exportName = exportName
        self.frozenBitmap = frozenBitmap
    }
}
