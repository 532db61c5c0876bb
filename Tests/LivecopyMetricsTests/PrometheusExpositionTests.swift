import LivecopyEngine
import LivecopyMetrics
import LivecopyModel
import Metrics
import QMP
import TestSupport
import Testing

/// The text a scrape reads: Prometheus text format 0.0.4 with a `# HELP` and `# TYPE` line
/// per family, families sorted, state counts with every state, and the catalog agreeing
/// with what is recorded and with docs/metrics.md.
struct PrometheusExpositionTests {
    @Test func everyFamilyHasHelpThenTypeAndTheFamiliesAreSorted() {
        let exposition = PrometheusExposition()
        exposition.update(StateCounts(plans: [.running: 2], disks: [.streaming: 3, .completed: 1]))
        Counter(label: MetricName.bytesCopied, dimensions: [("plan", "1"), ("vm", "v"), ("device", "d")], factory: exposition.factory)
            .increment(by: 7)
        Timer(label: QMPMetrics.roundTrip, dimensions: [("command", "query-jobs")], factory: exposition.factory)
            .recordNanoseconds(1_500_000)
        let text = exposition.text()
        let lines = text.split(separator: "\n").map(String.init)
        let typeLines = lines.filter { $0.hasPrefix("# TYPE ") }
        let names = typeLines.map { $0.split(separator: " ")[2] }
        #expect(names == names.sorted(), "\(names)")
        for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) "), "a HELP line before \(line)")
            let description = MetricCatalog.description(of: String(name))
            #expect(description != nil, "\(name) is in the catalog")
            #expect(line == "# TYPE \(name) \(description?.type.rawValue ?? "?")")
        }
        #expect(text.hasSuffix("\n"))
        #expect(lines.contains(#"livecopy_bytes_copied_total{plan="1",vm="v",device="d"} 7"#), "\(text)")
        #expect(HTTPScrape.value(of: #"livecopy_qmp_round_trip_seconds_bucket{command="query-jobs",le="0.002"}"#, in: text) == 1)
        #expect(HTTPScrape.value(of: #"livecopy_qmp_round_trip_seconds_bucket{command="query-jobs",le="0.001"}"#, in: text) == 0)
        #expect(HTTPScrape.value(of: "livecopy_recoveries_total", in: text) == 0)
    }

    @Test func stateCountsListEveryStateZerosIncluded() {
        let exposition = PrometheusExposition()
        exposition.update(StateCounts(plans: [.running: 2], disks: [.streaming: 3]))
        exposition.update(StateCounts(plans: [.completed: 1], disks: [:]))
        let text = exposition.text()
        for state in PlanState.allCases {
            #expect(HTTPScrape.value(of: "livecopy_plans{state=\"\(state.rawValue)\"}", in: text) == (state == .completed ? 1 : 0))
        }
        for state in DiskState.allCases {
            #expect(HTTPScrape.value(of: "livecopy_disks{state=\"\(state.rawValue)\"}", in: text) == 0, "the last counts replace the earlier")
        }
    }

    @Test func theQMPClientCountsUnderTheEnginesFailureMetric() {
        #expect(QMPMetrics.failures == MetricName.failures)
        #expect(Set(MetricCatalog.failureKinds).count == FailureKind.allCases.count + QMPMetrics.FailureKind.allCases.count)
    }

    @Test func docsMetricsListsEveryMetricWithItsTypeAndLabels() {
        let page = DocumentTable.page("metrics.md")
        let rows = DocumentTable.rows("metrics", of: page, stripBackquotes: true) ?? []
        #expect(rows.map(\.first) == MetricCatalog.all.map(\.name), "docs/metrics.md's table, in the catalog's order")
        for metric in MetricCatalog.all {
            guard let row = rows.first(where: { $0.first == metric.name }), row.count >= 3 else { continue }
            #expect(row[1] == metric.type.rawValue, "\(metric.name)'s type")
            #expect(row[2] == (metric.labels.isEmpty ? "—" : metric.labels.joined(separator: ", ")), "\(metric.name)'s labels")
        }
        for kind in MetricCatalog.failureKinds {
            #expect(page.contains("`\(kind)`"), "docs/metrics.md explains failure kind \(kind)")
        }
    }
}
