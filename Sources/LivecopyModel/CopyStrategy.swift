// How a disk is copied: the policy's `strategy` and `copy_mode`, and a disk's destination
// format (docs/mirror.md).

/// How livecopy copies a disk.
public enum CopyStrategy: String, Codable, CaseIterable, Sendable {
    /// QEMU's image-streaming recipe: the VM switches at once onto a new qcow2 overlay
    /// backed by the source, and `block-stream` copies the source into it. The default.
    case stream
    /// `blockdev-mirror`: the VM stays on the source while its data is copied into the
    /// destination, which may be qcow2, a raw file or a block device, and pivots onto the
    /// destination once both hold the same data.
    case mirror
}

/// How a mirror treats the guest's writes made during the copy (QEMU's `copy-mode`).
public enum CopyMode: String, Codable, CaseIterable, Sendable {
    /// Guest writes go to the source and are copied later: lighter on the guest, but a
    /// guest writing faster than the copy can delay READY indefinitely.
    case background
    /// Each guest write goes to the destination too before it completes: the copy
    /// converges under any write rate, at the cost of the guest's write latency.
    case writeBlocking = "write-blocking"
}

/// The format of a mirror's destination (a plan disk's `format:`).
public enum DestinationFormat: String, Codable, CaseIterable, Sendable {
    /// A qcow2 image (the stream strategy's only format, the mirror's default for files).
    case qcow2
    /// Raw: a file livecopy creates, or a block device that exists already.
    case raw
}
