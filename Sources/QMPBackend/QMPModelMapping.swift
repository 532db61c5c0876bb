// QMP's answers (`query-block`, `query-jobs`, events) in the backend's words.

import Foundation
import LivecopyBackend
import QMP

extension VMDisk {
    /// A `query-block` entry.
    init(_ entry: BlockDeviceInfo) {
        self.init(device: entry.device, guestDevice: entry.qdev, medium: entry.inserted.map { inserted in
            Medium(file: plainFilename(inserted.file), nodeName: inserted.nodeName, backingFile: inserted.backingFile,
                   image: DiskImage(inserted.image),
                   ioSettings: inserted.cache.map {
                       VMDisk.IOSettings(cacheDirect: $0.direct, cacheNoFlush: $0.noFlush, detectZeroes: inserted.detectZeroes)
                   },
                   dirtyBitmaps: (inserted.dirtyBitmaps ?? []).compactMap(\.name))
        })
    }
}

/// The file a `json:` filename names when it is only a raw image limited to its first
/// bytes (`{"driver": "raw", "size": N, "file": {"driver": "file" | "host_device",
/// "filename": F}}`, the mirror strategy's block device larger than its disk): `F`.
/// Any other name is returned as it is.
func plainFilename(_ name: String) -> String {
    guard name.hasPrefix("json:"), let data = name.dropFirst(5).data(using: .utf8),
          let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
          object["driver"] as? String == "raw", Set(object.keys).isSubset(of: ["driver", "size", "file"]),
          let file = object["file"] as? [String: Any], Set(file.keys) == ["driver", "filename"],
          let driver = file["driver"] as? String, driver == "file" || driver == "host_device",
          let filename = file["filename"] as? String, filename.hasPrefix("/") else { return name }
    return filename
}

extension DiskImage {
    /// QEMU's `ImageInfo`, with its chain.
    convenience init(_ info: ImageInfo) {
        self.init(filename: plainFilename(info.filename), format: info.format, virtualSize: info.virtualSize, actualSize: info.actualSize,
                  backingFilename: info.backingFilename, backingFilenameFormat: info.backingFilenameFormat,
                  backingImage: info.backingImage.map(DiskImage.init))
    }
}

extension CopyJob {
    /// A `query-jobs` entry.
    init(_ job: JobInfo) {
        self.init(id: job.id, type: job.type, status: JobStatus(job.status), currentProgress: job.currentProgress,
                  totalProgress: job.totalProgress, error: job.error)
    }
}

extension JobEvent {
    /// A QMP event about a job, or nil for any other event. Block jobs name themselves
    /// `device` in their `BLOCK_JOB_*` events.
    init?(_ event: QMPEvent) {
        switch event.name {
        case "JOB_STATUS_CHANGE":
            guard let id = event.data["id"]?.stringValue else { return nil }
            self = .statusChanged(id: id, status: JobStatus(event.data["status"]?.stringValue ?? ""))
        case "BLOCK_JOB_READY":
            guard let id = event.data["device"]?.stringValue else { return nil }
            self = .statusChanged(id: id, status: .ready)
        case "BLOCK_JOB_ERROR":
            guard let id = event.data["device"]?.stringValue else { return nil }
            self = .ioError(id: id, operation: event.data["operation"]?.stringValue ?? "?",
                            action: event.data["action"]?.stringValue ?? "?")
        default:
            return nil
        }
    }
}
