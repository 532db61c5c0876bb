import Foundation

/// The JSON document scripts read from `submit --json`, `history --json`, `status --json`
/// and `show --json`. Its shape is a contract: add fields, never rename them. Every key
/// is always present, `null` when there is no value (`NullEncoded`), but `events`
/// (`show`), `controls` and `quarantined` (`status`, `show`), present only there.
public struct PlanDocument: Codable, Sendable, Equatable {
    /// One disk in a plan document.
    public struct Disk: Codable, Sendable, Equatable {
        public var vm: String
        public var device: String
        @NullEncoded public var source: String?
        public var destination: String
        public var state: String
        public var bytesDone: Int64
        public var bytesTotal: Int64
        @NullEncoded public var error: String?
        /// The image the VM must boot from if restarted now (null while unknown).
        @NullEncoded public var bootImage: String?
        /// A hook whose run was announced and whose outcome is not recorded yet (null: none).
        @NullEncoded public var pendingHook: String?

        enum CodingKeys: String, CodingKey {
            case vm, device, source, destination, state, error
            case bytesDone = "bytes_done"
            case bytesTotal = "bytes_total"
            case bootImage = "boot_image"
            case pendingHook = "pending_hook"
        }
    }

    /// One entry of a plan's timeline (`show` only).
    public struct Event: Codable, Sendable, Equatable {
        public var at: String
        /// `vm/device` of the disk, or null for plan-level events.
        @NullEncoded public var disk: String?
        public var kind: String
        @NullEncoded public var from: String?
        @NullEncoded public var to: String?
        public var detail: String
    }

    /// The operator's settings for the plan's jobs (`status` and `show`).
    public struct Controls: Codable, Sendable, Equatable {
        /// Bytes per second set by `livecopy throttle` (0 = unlimited); null: the policy's `speed`.
        @NullEncoded public var speedOverride: Int64?
        /// Whether `livecopy pause` holds the plan's jobs.
        public var paused: Bool

        enum CodingKeys: String, CodingKey {
            case paused
            case speedOverride = "speed_override"
        }

        public init(_ controls: PlanControls) {
            speedOverride = controls.speedOverride
            paused = controls.paused
        }
    }

    /// A source of the plan moved into quarantine (`retire_source: quarantine`; `status`, `show`).
    public struct Quarantined: Codable, Sendable, Equatable {
        /// The disk's id (what `livecopy restore` takes).
        public var diskId: Int64
        /// `vm/device` of the disk.
        public var disk: String
        public var originalPath: String
        public var quarantinePath: String
        public var sizeBytes: Int64
        public var quarantinedAt: String
        public var expiresAt: String
        /// `held`, `purging`, `purged`, `restoring` or `restored`.
        public var state: String
        @NullEncoded public var endedAt: String?

        enum CodingKeys: String, CodingKey {
            case disk, state
            case diskId = "disk_id"
            case originalPath = "original_path"
            case quarantinePath = "quarantine_path"
            case sizeBytes = "size_bytes"
            case quarantinedAt = "quarantined_at"
            case expiresAt = "expires_at"
            case endedAt = "ended_at"
        }
    }

    public var id: Int64
    @NullEncoded public var name: String?
    public var state: String
    public var policy: String
    public var createdAt: String
    @NullEncoded public var finishedAt: String?
    @NullEncoded public var error: String?
    public var disks: [Disk]
    public var events: [Event]?
    public var controls: Controls?
    public var quarantined: [Quarantined]?

    enum CodingKeys: String, CodingKey {
        case id, name, state, policy, error, disks, events, controls, quarantined
        case createdAt = "created_at"
        case finishedAt = "finished_at"
    }

    /// `bootImages` (by disk id) replaces the record's own answer (`DiskRecord.bootImage`)
    /// with the engine's (`Engine.bootImage(of:)`), which also asks QEMU and the files.
    public init(plan: PlanRecord, disks: [DiskRecord], events: [EventRecord]? = nil, controls: PlanControls? = nil,
                bootImages: [Int64: String]? = nil, quarantined: [QuarantinedImage]? = nil) {
        self.controls = controls.map(Controls.init)
        id = plan.id
        name = plan.name
        state = plan.state.rawValue
        policy = plan.policyReference ?? "default"
        createdAt = ISO8601.string(plan.createdAt)
        finishedAt = plan.finishedAt.map(ISO8601.string)
        error = plan.error
        self.disks = disks.map { disk in
            let boot: String? = bootImages.map { $0[disk.id] } ?? disk.bootImage
            return Disk(vm: disk.vmName, device: disk.device, source: disk.source, destination: disk.destination,
                        state: disk.state.rawValue, bytesDone: disk.bytesDone, bytesTotal: disk.bytesTotal,
                        error: disk.error, bootImage: boot, pendingHook: disk.pendingHook?.rawValue)
        }
        let names = Dictionary(uniqueKeysWithValues: disks.map { ($0.id, "\($0.vmName)/\($0.device)") })
        self.quarantined = quarantined?.map {
            Quarantined(diskId: $0.diskId, disk: names[$0.diskId] ?? "disk \($0.diskId)", originalPath: $0.originalPath,
                        quarantinePath: $0.quarantinePath, sizeBytes: $0.sizeBytes,
                        quarantinedAt: ISO8601.string($0.quarantinedAt), expiresAt: ISO8601.string($0.expiresAt),
                        state: $0.state.rawValue, endedAt: $0.endedAt.map(ISO8601.string))
        }
        self.events = events?.map {
            Event(at: ISO8601.string($0.at), disk: $0.diskId.flatMap { names[$0] }, kind: $0.kind.rawValue,
                  from: $0.from, to: $0.to, detail: $0.detail)
        }
    }

    /// Pretty, stable JSON (sorted keys); an empty array is `[]`.
    public static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try encoder.encode(value), as: UTF8.self)
        // Foundation pretty-prints an empty array over three lines.
        return text.filter { !$0.isWhitespace } == "[]" ? "[]" : text
    }
}

/// ISO-8601 timestamps with milliseconds, in UTC.
public enum ISO8601 {
    public static func string(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}
