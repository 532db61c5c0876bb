import ArgumentParser
import Foundation
import LivecopyModel
import LivecopyStore

/// `livecopy history`: plans, newest first, and a summary line of the plans selected. Plans
/// refused at submission stay recorded (an audit trail) but are listed only with `--all`
/// or `--state refused`.
struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List plans, newest first, with a summary line.",
        discussion: """
            Plans refused at submission are kept for the record; --all or --state refused lists them. \
            --since and --until take a date (2026-11-30, 2026-11-30T12:00:00Z) or a time ago (90m, 24h, 7d, 2w).
            """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Only plans in this state (\(PlanState.allCases.map(\.rawValue).joined(separator: ", "))).",
                               valueName: "state"))
    var state: String?

    @Option(help: ArgumentHelp("Only plans with a disk of this VM.", valueName: "name"))
    var vm: String?

    @Option(help: ArgumentHelp("Only plans created at or after this date, or this long ago (24h, 7d).", valueName: "when"))
    var since: String?

    @Option(help: ArgumentHelp("Only plans created before this date, or this long ago.", valueName: "when"))
    var until: String?

    @Option(help: "At most this many plans (the summary counts every plan selected).")
    var limit: Int = 20

    @Flag(help: "Also list plans refused at submission.")
    var all = false

    @Flag(help: "Print only the summary (with --json, as one object).")
    var summary = false

    @Flag(help: "Print a JSON array of plan documents.")
    var json = false

    func validate() throws {
        if let state, PlanState(rawValue: state) == nil {
            throw ValidationError("unknown state '\(state)' (expected \(PlanState.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        // One line and exit 2, as for bad input.
        do {
            _ = try filter(now: Date())
        } catch let error as InputError {
            printStderr(error.message, asError: true)
            throw ExitCode(ExitStatus.refused)
        }
    }

    /// The plans selected, with `--since` and `--until` read against `now`.
    func filter(now: Date) throws -> PlanFilter {
        let states: Set<PlanState>?
        if let state = state.flatMap(PlanState.init(rawValue:)) {
            states = [state]
        } else {
            states = all ? nil : Set(PlanState.allCases).subtracting([.refused])
        }
        let from = try since.map { try TimeBound.date($0, option: "--since", now: now) }
        let before = try until.map { try TimeBound.date($0, option: "--until", now: now) }
        if let from, let before, from >= before {
            throw InputError("--since \(since ?? "") (\(ISO8601.string(from))) is not before --until \(until ?? "") (\(ISO8601.string(before)))")
        }
        return PlanFilter(states: states, vm: vm, createdFrom: from, createdBefore: before)
    }

    func run() async throws {
        try await reportingErrors {
            let store = try common.openExistingStore()
            let filter = try self.filter(now: Date())
            if summary {
                let totals = try store.summary(filter)
                print(json ? try PlanDocument.json(SummaryDocument(totals, filter: filter)) : Self.summaryLine(totals))
                return ExitStatus.success
            }
            let plans = try store.plans(filter, limit: limit)
            if json {
                print(try PlanDocument.json(plans.map { PlanDocument(plan: $0, disks: try store.disks(ofPlan: $0.id)) }))
                return ExitStatus.success
            }
            if plans.isEmpty {
                print(all || state != nil ? "no plans" : "no plans (plans refused at submission are listed with --all)")
                return ExitStatus.success
            }
            print(PlanText.summaryHeader)
            for plan in plans { print(PlanText.summary(plan, disks: try store.disks(ofPlan: plan.id))) }
            print(Self.summaryLine(try store.summary(filter)))
            return ExitStatus.success
        }
    }

    /// `in all: 3 plans, 4 disks (3 completed), 1.5 GiB copied, mean rate 32.0 MiB/s`.
    static func summaryLine(_ totals: PlanSummary) -> String {
        let rate = totals.meanRate.map { "\(ByteSize.format(ProgressLine.bytes($0)))/s" } ?? "unknown (no timed copy)"
        return "in all: \(totals.plans) plan\(totals.plans == 1 ? "" : "s"), \(totals.disks) disk\(totals.disks == 1 ? "" : "s")"
            + " (\(totals.completedDisks) completed), \(ByteSize.format(totals.bytes)) copied, mean rate \(rate)"
    }
}

/// `history --summary --json`: the totals, with the range they cover (docs/commands.md).
struct SummaryDocument: Encodable {
    let plans: Int
    let disks: Int
    let completedDisks: Int
    let bytes: Int64
    let timedBytes: Int64
    let copySeconds: Double
    @NullEncoded var meanRate: Double?
    @NullEncoded var since: String?
    @NullEncoded var until: String?

    init(_ totals: PlanSummary, filter: PlanFilter) {
        plans = totals.plans
        disks = totals.disks
        completedDisks = totals.completedDisks
        bytes = totals.bytes
        timedBytes = totals.timedBytes
        copySeconds = totals.copySeconds
        meanRate = totals.meanRate
        since = filter.createdFrom.map(ISO8601.string)
        until = filter.createdBefore.map(ISO8601.string)
    }

    enum CodingKeys: String, CodingKey {
        case plans, disks, bytes, since, until
        case completedDisks = "completed_disks", timedBytes = "timed_bytes", copySeconds = "copy_seconds", meanRate = "mean_rate"
    }
}

/// A `--since` or `--until` value: a date, or a time ago.
enum TimeBound {
    /// Seconds per unit of a time ago.
    static let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]

    /// `2026-11-30` (midnight UTC), `2026-11-30T12:00:00Z` (or with an offset, or
    /// fractional seconds), or `N` followed by s, m, h, d or w: that long before `now`.
    static func date(_ text: String, option: String, now: Date) throws -> Date {
        if let unit = text.last, let seconds = units[unit], let count = Int(text.dropLast()), count >= 0,
           text.first?.isNumber == true {
            return now.addingTimeInterval(-Double(count) * seconds)
        }
        let formats = [Date.ISO8601FormatStyle(), Date.ISO8601FormatStyle(includingFractionalSeconds: true),
                       Date.ISO8601FormatStyle().year().month().day()]
        for format in formats where hasRealDay(text) {
            if let date = try? format.parse(text) { return date }
        }
        throw InputError("\(option) '\(text)' is neither a date (2026-11-30, 2026-11-30T12:00:00Z) nor a time ago (90m, 24h, 7d, 2w)")
    }

    /// The text starts with a day that exists (Foundation's parser reads 2026-11-31 as
    /// December 1).
    static func hasRealDay(_ text: String) -> Bool {
        let parts = text.prefix(10).split(separator: "-").compactMap { Int($0) }
        guard parts.count == 3 else { return false }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt
        return DateComponents(calendar: calendar, year: parts[0], month: parts[1], day: parts[2]).isValidDate
    }
}
