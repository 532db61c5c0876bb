import ArgumentParser
import Foundation
import LivecopyModel

/// `livecopy limits`: the fleet's limits, kept in the fleet store and honoured by every
/// agent together: disks copying at once per host and per storage target, and each
/// target's bandwidth.
struct Limits: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show or set the fleet's limits: disks copying per host and per storage target, and each target's bandwidth.",
        discussion: "Fleet stores only (--db postgres://…). Agents apply a change to the disks that start after it. See docs/fleet.md.",
        subcommands: [Show.self, SetLimits.self, Clear.self],
        defaultSubcommand: Show.self)

    /// Which scope a command names: exactly one of `--host` and `--target`.
    struct ScopeOptions: ParsableArguments {
        @Option(help: ArgumentHelp("A host, as the plans' `host:` and `livecopy agent --host` name it.", valueName: "name"))
        var host: String?

        @Option(help: ArgumentHelp(
            "A storage target: an absolute directory; its limit applies to every destination inside it.", valueName: "path"))
        var target: String?

        /// The scope named, or a one-line error.
        func scope() throws -> LimitScope {
            switch (host, target) {
            case (let host?, nil):
                guard Plan.isHostName(host) else {
                    throw InputError("--host: invalid value '\(host)' (expected a host name: letters, digits, '.', '-' and '_')")
                }
                return .host(host)
            case (nil, let target?):
                guard target.hasPrefix("/"), !target.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
                    throw InputError("--target: invalid value '\(target)' (expected an absolute directory, such as /srv/array2)")
                }
                let normalized = "/" + target.split(separator: "/").joined(separator: "/")
                guard normalized != "/" else { throw InputError("--target: '/' is not a storage target; name its directory") }
                return .target(normalized)
            case (.some, .some):
                throw InputError("give --host or --target, not both")
            case (nil, nil):
                throw InputError("give --host NAME or --target PATH")
            }
        }
    }

    /// `livecopy limits show`.
    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the fleet's limits and the copy slots held now.")

        @OptionGroup var common: CommonOptions

        func run() async throws {
            try await reportingErrors {
                let store = try fleetStore(common)
                let limits = try store.limits()
                let slots = try store.copySlots()
                if limits.isEmpty { print("no limits set (livecopy limits set --host NAME --max-disks N)") }
                for limit in limits { print(Self.line(limit, copying: Self.count(slots, in: limit.scope))) }
                return ExitStatus.success
            }
        }

        /// How many of `slots` count against `scope`'s limit.
        static func count(_ slots: [CopySlot], in scope: LimitScope) -> Int {
            slots.filter { slot in
                switch scope {
                case .host(let name): return slot.host == name
                case .target(let path): return slot.target == path
                }
            }.count
        }

        static func line(_ limit: FleetLimit, copying: Int) -> String {
            var parts = ["\(limit.scope): \(copying) copying"]
            parts.append(limit.maxDisks.map { "at most \($0) at once" } ?? "no disk limit")
            if let bandwidth = limit.bandwidth {
                let share = limit.speedPerSlot.map { ", \(OperatorAction.speedText($0)) per disk" } ?? ""
                parts.append("bandwidth \(OperatorAction.speedText(bandwidth))\(share)")
            }
            return parts.joined(separator: ", ")
        }
    }

    /// `livecopy limits set` (not named `Set`, which would hide Swift's `Set` in here).
    struct SetLimits: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Set a host's or a storage target's limits (values not given stay as they are).")

        @OptionGroup var common: CommonOptions
        @OptionGroup var scope: ScopeOptions

        @Option(help: ArgumentHelp("At most this many disks copying at once (1 to 10000).", valueName: "n"))
        var maxDisks: Int?

        @Option(help: ArgumentHelp(
            "Targets only: bytes per second for the target's copy jobs together, such as 400M; each of its --max-disks jobs runs at most at an even share.",
            valueName: "bytes"))
        var bandwidth: String?

        func run() async throws {
            try await reportingErrors {
                let scope = try scope.scope()
                if let maxDisks, !(1...10_000).contains(maxDisks) {
                    throw InputError("--max-disks: invalid value '\(maxDisks)' (expected a whole number from 1 to 10000)")
                }
                let bytes = try bandwidth.map { text in
                    guard let bytes = ByteSize.parse(text), bytes >= ServeSettings.minimumBandwidth else {
                        throw InputError("--bandwidth: invalid value '\(text)' (expected bytes per second of at least 64K, such as 400M)")
                    }
                    return bytes
                }
                guard maxDisks != nil || bytes != nil else { throw InputError("give --max-disks, --bandwidth or both") }
                let store = try fleetStore(common)
                var limit = try store.limits().first { $0.scope == scope } ?? FleetLimit(scope: scope, maxDisks: nil, bandwidth: nil)
                if let maxDisks { limit.maxDisks = maxDisks }
                if let bytes { limit.bandwidth = bytes }
                if limit.bandwidth != nil {
                    guard case .target = scope else {
                        throw InputError("--bandwidth is a storage target's budget, shared by every host writing to it; give --target")
                    }
                    guard limit.maxDisks != nil else {
                        throw InputError("a target's bandwidth is split evenly among its --max-disks copy slots; give --max-disks too")
                    }
                }
                try store.setLimit(limit, at: Date())
                print(Show.line(limit, copying: Show.count(try store.copySlots(), in: scope)))
                return ExitStatus.success
            }
        }
    }

    /// `livecopy limits clear`.
    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a host's or a storage target's limits.")

        @OptionGroup var common: CommonOptions
        @OptionGroup var scope: ScopeOptions

        func run() async throws {
            try await reportingErrors {
                let scope = try scope.scope()
                let store = try fleetStore(common)
                try store.setLimit(FleetLimit(scope: scope, maxDisks: nil, bandwidth: nil), at: Date())
                print("\(scope): no limits")
                return ExitStatus.success
            }
        }
    }
}

/// The fleet store `--db` names, or a one-line error when it is a single host's store.
func fleetStore(_ common: CommonOptions) throws -> any FleetStore {
    let refusal = InputError("fleet limits live in a fleet store: give --db postgres://USER@HOST/DATABASE (or LIVECOPY_DB); \(common.database.path) is this host's own")
    guard common.isFleetStore, let fleet = try common.openExistingStore() as? any FleetStore else { throw refusal }
    return fleet
}
