// `livecopy serve`'s own settings: host-wide limits and its log level, read from its
// settings file (and the command line), again on SIGHUP. A plan keeps its own policy.

import Foundation

/// The host-wide limits and the log level `livecopy serve` runs with. They bound every
/// plan it drives together; each plan's policy still bounds that plan.
public struct ServeSettings: Sendable, Equatable {
    /// At most this many disks copy at once on this host, over all plans (nil: no host
    /// limit, only each plan's `max_parallel_disks`).
    public var maxParallelDisks: Int?
    /// The host's bandwidth budget in bytes per second, shared by every running copy job
    /// (nil: none; each job runs at its plan's speed).
    public var bandwidth: Int64?
    /// The log level's name (`trace` … `critical`); nil: the command line's.
    public var logLevel: String?
    /// How often the store is read for newly detached plans, in seconds.
    public var pollInterval: Double

    public init(maxParallelDisks: Int? = nil, bandwidth: Int64? = nil, logLevel: String? = nil, pollInterval: Double = 1) {
        self.maxParallelDisks = maxParallelDisks
        self.bandwidth = bandwidth
        self.logLevel = logLevel
        self.pollInterval = pollInterval
    }

    /// The settings file's keys.
    public enum Key: String, CaseIterable, Sendable {
        case maxParallelDisks = "max_parallel_disks"
        case bandwidth
        case logLevel = "log_level"
        case pollInterval = "poll_interval"
    }

    /// The log levels a settings file may name (swift-log's).
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

    /// Parses a settings file; keys it leaves out keep `base`'s values. `bandwidth: 0`
    /// and `max_parallel_disks: 0` mean no host limit.
    /// A file holding only comments (or nothing) keeps every default.
    public static func parse(_ text: String, source: String, base: ServeSettings = ServeSettings()) throws -> ServeSettings {
        let meaningful = text.split(whereSeparator: \.isNewline).contains {
            let line = $0.trimmingCharacters(in: .whitespaces)
            return !line.isEmpty && !line.hasPrefix("#")
        }
        guard meaningful else { return base }
        let document = try StrictYAML.parse(text, source: source)
        let members = try document.mapping(allowed: Set(Key.allCases.map(\.rawValue)))
        var settings = base
        for key in Key.allCases {
            guard let value = members[key.rawValue] else { continue }
            switch key {
            case .maxParallelDisks:
                let count = try value.integer(in: 0...10_000)
                settings.maxParallelDisks = count == 0 ? nil : count
            case .bandwidth:
                let bytes = try value.byteSize()
                guard bytes == 0 || bytes >= minimumBandwidth else {
                    throw value.fail("has invalid value '\(try value.string())' (expected 0 for none, or at least 64K)")
                }
                settings.bandwidth = bytes == 0 ? nil : bytes
            case .logLevel:
                let level = try value.string()
                guard logLevels.contains(level) else {
                    throw value.fail("has invalid value '\(level)' (expected \(logLevels.joined(separator: " | ")))")
                }
                settings.logLevel = level
            case .pollInterval:
                settings.pollInterval = try value.duration(allowZero: false, atLeast: 0.05)
            }
        }
        return settings
    }

    /// Reads and parses the settings file at `path`.
    public static func load(path: String, base: ServeSettings = ServeSettings()) throws -> ServeSettings {
        try parse(try readTextFile(path, what: "settings file"), source: path, base: base)
    }

    /// The smallest budget accepted: below it a job's share could round to nothing, and
    /// QEMU reads a speed of 0 as unlimited.
    public static let minimumBandwidth: Int64 = 64 * 1024

    /// One line for the log and the events.
    public var summary: String {
        let disks = maxParallelDisks.map { "at most \($0) disks copying" } ?? "no host limit on disks"
        let budget = bandwidth.map { "bandwidth budget \(ByteSize.format($0))/s" } ?? "no bandwidth budget"
        return "\(disks), \(budget)"
    }
}
