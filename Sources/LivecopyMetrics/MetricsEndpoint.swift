// `MetricsEndpoint`: `--metrics` running: swift-metrics bootstrapped onto a Prometheus
// registry (once per process) and the HTTP endpoint that serves it.

import LivecopyEngine
import LivecopyModel
import Logging
import Metrics
import NIOCore

/// The process's metrics, served at `http://HOST:PORT/metrics` until `stop`. The first
/// endpoint started bootstraps swift-metrics (`MetricsSystem.bootstrap`, once per
/// process); a process without `--metrics` bootstraps nothing and records nothing.
public final class MetricsEndpoint: Sendable {
    /// The registry of this process, bootstrapped as swift-metrics' backend on first use.
    static let process: PrometheusExposition = {
        let exposition = PrometheusExposition()
        MetricsSystem.bootstrap(exposition.factory)
        return exposition
    }()

    /// `http://HOST:PORT/metrics`, with the port actually bound.
    public let url: String
    /// Records the disks' progress and steps; shared by every observer this endpoint makes.
    public let recorder: DiskMetricsRecorder
    private let server: MetricsHTTPServer

    private init(url: String, recorder: DiskMetricsRecorder, server: MetricsHTTPServer) {
        self.url = url
        self.recorder = recorder
        self.server = server
    }

    /// Bootstraps the metrics (first call of the process) and listens at `address`; each
    /// scrape first reads `stateCounts` (the database's plans and disks by state). Throws
    /// `MetricsEndpointError` when it cannot listen.
    public static func start(_ address: MetricsAddress, stateCounts: @escaping @Sendable () throws -> StateCounts) async throws
        -> MetricsEndpoint {
        let exposition = process
        let server = try await MetricsHTTPServer.start(host: address.host, port: address.port) {
            do {
                exposition.update(try stateCounts())
            } catch {
                logger.warning("metrics: cannot count plans and disks by state; the last counts are served", metadata: ["error": "\(error)"])
            }
            return exposition.text()
        }
        let bound = MetricsAddress.bracketed(server.address.ipAddress ?? address.host)
        return MetricsEndpoint(url: "http://\(bound):\(server.address.port ?? address.port)/metrics", recorder: DiskMetricsRecorder(factory: exposition.factory),
                               server: server)
    }

    /// `observer`, with every report also recorded as metrics: give this to the engine.
    public func observing(_ observer: any EngineObserver) -> any EngineObserver {
        MetricsObserver(wrapping: observer, recorder: recorder)
    }

    /// Stops serving (the recorded values stay in the process's registry).
    public func stop() async {
        await server.stop()
    }
}

/// The metrics module's logger (`livecopy.metrics`).
let logger = Logger(label: "livecopy.metrics")
