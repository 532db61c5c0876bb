import LivecopyMetrics
import TestSupport
import Testing

/// `contrib/grafana/livecopy-dashboard.json`: valid JSON, a Prometheus data source
/// variable every panel uses, and only metrics livecopy exports (a real scrape checks the
/// same in `MetricsIntegrationTests`).
struct GrafanaDashboardTests {
    @Test func theDashboardIsJSONWithAPrometheusDataSourceVariable() throws {
        let document = try GrafanaDashboard.document()
        let variables = (document["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        #expect(variables.contains { $0["name"] as? String == "datasource" && $0["type"] as? String == "datasource"
            && $0["query"] as? String == "prometheus" })
        let panels = try GrafanaDashboard.panels()
        #expect(panels.count >= 6)
        for panel in panels {
            let source = panel["datasource"] as? [String: Any]
            #expect(source?["type"] as? String == "prometheus" && source?["uid"] as? String == "${datasource}", "\(panel["title"] ?? "?")")
            #expect(!(panel["targets"] as? [[String: Any]] ?? []).isEmpty, "\(panel["title"] ?? "?") has a query")
        }
        let ids = panels.compactMap { $0["id"] as? Int }
        #expect(Set(ids).count == panels.count, "unique panel ids")
    }

    @Test func everyMetricTheDashboardNamesIsExported() throws {
        var exported: Set<String> = []
        for metric in MetricCatalog.all {
            switch metric.type {
            case .counter, .gauge: exported.insert(metric.name)
            case .histogram: exported.formUnion(["_bucket", "_sum", "_count"].map { metric.name + $0 })
            }
        }
        let named = try GrafanaDashboard.metricNames()
        #expect(named.subtracting(exported).isEmpty, "not exported: \(named.subtracting(exported).sorted())")
        for wanted in ["livecopy_bytes_copied_total", "livecopy_bytes_remaining", "livecopy_disks", "livecopy_step_duration_seconds_bucket",
                       "livecopy_qmp_round_trip_seconds_bucket", "livecopy_failures_total"] {
            #expect(named.contains(wanted), "a panel shows \(wanted)")
        }
    }
}
