import LivecopyModel
import PropertyBased
import Testing

/// `BandwidthShares` (how serve's host budget is split) and `ServeSettings` (its file).
@Suite struct ServeSettingsTests {
    static let speeds = Gen.int(in: 0...64).map { Int64($0) * 256 * 1024 }.array(of: 1...12)
    static let budgets = Gen.int(in: 1...256).map { Int64($0) * 64 * 1024 }

    /// The shares never sum past the budget, none is 0 (QEMU's unlimited) or above what
    /// its job wants, and the budget is used up whenever some job wants more than it got.
    @Test func sharesStayWithinTheBudgetAndUseItWhenWanted() async {
        await propertyCheck(count: 2_000, input: Self.speeds, Self.budgets) { wanted, budget in
            let jobs = Dictionary(uniqueKeysWithValues: wanted.enumerated().map { (Int64($0.offset), $0.element) })
            let shares = BandwidthShares.split(budget, among: jobs)
            #expect(shares.keys.sorted() == jobs.keys.sorted())
            #expect(shares.values.reduce(0, +) <= budget, "\(wanted) over \(budget): \(shares)")
            for (id, share) in shares {
                #expect(share > 0)
                if jobs[id]! != 0 { #expect(share <= jobs[id]!) }
            }
            let unsatisfied = shares.contains { id, share in jobs[id]! == 0 || share < jobs[id]! }
            if unsatisfied {
                #expect(budget - shares.values.reduce(0, +) < Int64(jobs.count), "leftover only from rounding: \(shares)")
            }
        }
    }

    @Test func aModestJobLeavesItsShareToTheOthers() {
        let shares = BandwidthShares.split(30, among: ["slow": 4, "fast": 0, "other": 0])
        #expect(shares == ["slow": 4, "fast": 13, "other": 13])
        #expect(BandwidthShares.split(nil, among: ["a": 0, "b": 5]) == ["a": 0, "b": 5], "no budget: each its own")
    }

    @Test func theSettingsFileIsParsedStrictly() throws {
        let settings = try ServeSettings.parse("max_parallel_disks: 3\nbandwidth: 200M\nlog_level: info\npoll_interval: 500ms\n",
                                               source: "serve.yaml")
        #expect(settings == ServeSettings(maxParallelDisks: 3, bandwidth: 200 * 1024 * 1024, logLevel: "info", pollInterval: 0.5))
        #expect(try ServeSettings.parse("bandwidth: 0\nmax_parallel_disks: 0\n", source: "s") == ServeSettings())
        #expect(try ServeSettings.parse("# nothing set yet\n\n", source: "s") == ServeSettings(), "an empty file keeps the defaults")
        let refusals = [
            ("bandwidth: fast\n", "'bandwidth' has invalid value 'fast'"),
            ("bandwidth: 1K\n", "at least 64K"),
            ("max_parallel_disks: -1\n", "'max_parallel_disks' has invalid value '-1'"),
            ("log_level: loud\n", "'log_level' has invalid value 'loud'"),
            ("speed: 1M\n", "unknown key 'speed'"),
        ]
        for (text, message) in refusals {
            #expect(throws: InputError.self) { try ServeSettings.parse(text, source: "serve.yaml") }
            do {
                _ = try ServeSettings.parse(text, source: "serve.yaml")
            } catch let error as InputError {
                #expect(error.message.contains(message), "\(text): \(error.message)")
                #expect(!error.message.contains("\n"))
            }
        }
    }
}
