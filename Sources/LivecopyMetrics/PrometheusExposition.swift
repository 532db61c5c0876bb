// `PrometheusExposition`: the Prometheus registry swift-metrics records into, and the
// text format a scrape reads.

import LivecopyEngine
import LivecopyModel
import Metrics
import Prometheus
import QMP

/// A Prometheus registry with its swift-metrics factory (the histograms' buckets set from
/// `MetricCatalog`), the plans and disks by state (`update`, before each scrape), and the
/// text of a scrape: the metric families sorted by name, each with its `# HELP` line.
public final class PrometheusExposition: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// What swift-metrics records into (`MetricsSystem.bootstrap`, or a task-local factory).
    public let factory: PrometheusMetricsFactory

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            MetricName.stepDuration: MetricCatalog.stepDurationBuckets,
            QMPMetrics.roundTrip: MetricCatalog.roundTripBuckets,
        ]
        self.factory = factory
        // Counters exist from the start, at zero, so a rate over them is defined.
        for kind in MetricCatalog.failureKinds {
            _ = Counter(label: MetricName.failures, dimensions: [("kind", kind)], factory: factory)
        }
        _ = Counter(label: MetricName.recoveries, factory: factory)
    }

    /// Sets `livecopy_plans{state}` and `livecopy_disks{state}`, every state included.
    public func update(_ counts: StateCounts) {
        for state in PlanState.allCases {
            Gauge(label: MetricCatalog.plans, dimensions: [("state", state.rawValue)], factory: factory).record(counts.plans[state] ?? 0)
        }
        for state in DiskState.allCases {
            Gauge(label: MetricCatalog.disks, dimensions: [("state", state.rawValue)], factory: factory).record(counts.disks[state] ?? 0)
        }
    }

    /// The scrape's text (Prometheus text format 0.0.4).
    public func text() -> String {
        Self.withHelp(registry.emitToString())
    }

    /// `text` with its metric families sorted by name, each preceded by a `# HELP` line
    /// when the catalog describes it (the registry writes none: swift-metrics has no help).
    static func withHelp(_ text: String) -> String {
        var families: [(name: String, lines: [Substring])] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst("# TYPE ".count).split(separator: " ").first.map(String.init) ?? ""
                let help = MetricCatalog.description(of: name).map { ["# HELP \(name) \($0.help)"[...]] } ?? []
                families.append((name, help + [line]))
            } else if families.isEmpty {
                families.append(("", [line]))
            } else {
                families[families.count - 1].lines.append(line)
            }
        }
        return families.sorted { $0.name < $1.name }.flatMap(\.lines).map { $0 + "\n" }.joined()
    }
}
