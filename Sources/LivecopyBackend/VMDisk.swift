/// A block device of a VM and the image chain it runs on.
public struct VMDisk: Sendable {
    /// The device's name as the hypervisor's commands take it (QEMU's `-drive id=…`);
    /// empty when the device has no such name (a `-blockdev` disk attached to a device).
    public let device: String
    /// The guest device's id or path, if any (QEMU's qdev).
    public let guestDevice: String?
    /// The image chain in the device; nil when it has no medium.
    public let medium: Medium?
    /// Why livecopy cannot copy this device, when the backend knows it cannot (a libvirt
    /// disk on a block device or a network volume); nil otherwise.
    public let notCopyable: String?

    public init(device: String, guestDevice: String?, medium: Medium?, notCopyable: String? = nil) {
        self.device = device
        self.guestDevice = guestDevice
        self.medium = medium
        self.notCopyable = notCopyable
    }

    /// The image chain in a device.
    public struct Medium: Sendable {
        /// The active (top) image's file name.
        public let file: String
        /// The name the hypervisor opened the active image as (QEMU's node name), if any.
        public let nodeName: String?
        /// The active image's backing file name, if it has one.
        public let backingFile: String?
        /// The active image with, recursively, its backing chain.
        public let image: DiskImage
        /// How the device's I/O is cached and zeros detected, when the hypervisor says: a
        /// mirror's destination is opened the same way, since the VM runs on it afterwards.
        public let ioSettings: IOSettings?
        /// The names of the active image's dirty bitmaps.
        public let dirtyBitmaps: [String]

        public init(file: String, nodeName: String?, backingFile: String?, image: DiskImage, ioSettings: IOSettings? = nil,
                    dirtyBitmaps: [String] = []) {
            self.dirtyBitmaps = dirtyBitmaps
            self.file = file
            self.nodeName = nodeName
            self.backingFile = backingFile
            self.image = image
            self.ioSettings = ioSettings
        }
    }

    /// A device's cache mode and zero detection (QEMU's `cache.direct`, `cache.no-flush`,
    /// `detect-zeroes`).
    public struct IOSettings: Sendable, Equatable {
        public let cacheDirect: Bool
        public let cacheNoFlush: Bool
        /// `off`, `on` or `unmap`.
        public let detectZeroes: String?

        public init(cacheDirect: Bool, cacheNoFlush: Bool, detectZeroes: String?) {
            self.cacheDirect = cacheDirect
            self.cacheNoFlush = cacheNoFlush
            self.detectZeroes = detectZeroes
        }
    }

}

extension Array where Element == VMDisk {
    /// The device `name` designates: a device name first, else a guest device, else an
    /// active node name, else (an absolute path) the active image's file (a name can be
    /// one kind for one device and another for another).
    public func device(named name: String) -> VMDisk? {
        first { $0.device == name } ?? first { $0.guestDevice == name } ?? first { $0.medium?.nodeName == name }
            ?? (name.hasPrefix("/") ? first { $0.medium?.file == name } : nil)
    }
}

/// One image of a chain and, recursively, the images below it.
public final class DiskImage: Sendable {
    public let filename: String
    /// `qcow2`, `raw`, …
    public let format: String
    public let virtualSize: Int64
    public let actualSize: Int64?
    /// The backing file as the image's header names it.
    public let backingFilename: String?
    /// The backing file's format as the header records it (nil or empty: not recorded).
    public let backingFilenameFormat: String?
    public let backingImage: DiskImage?

    public init(filename: String, format: String, virtualSize: Int64, actualSize: Int64? = nil,
                backingFilename: String? = nil, backingFilenameFormat: String? = nil, backingImage: DiskImage? = nil) {
        self.filename = filename
        self.format = format
        self.virtualSize = virtualSize
        self.actualSize = actualSize
        self.backingFilename = backingFilename
        self.backingFilenameFormat = backingFilenameFormat
        self.backingImage = backingImage
    }

    /// This image and every image below it, top first.
    public var chain: [DiskImage] {
        var images: [DiskImage] = [self]
        while let next = images.last?.backingImage { images.append(next) }
        return images
    }
}
