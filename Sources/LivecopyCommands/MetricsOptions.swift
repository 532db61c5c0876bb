// `--metrics HOST:PORT`: the option, and starting the Prometheus endpoint it asks for.

import ArgumentParser
import LivecopyEngine
import LivecopyMetrics
import LivecopyModel
import LivecopyStore

/// `--metrics HOST:PORT`, for the commands that drive plans (`@OptionGroup var metrics:
/// MetricsOptions`). A command calls `start(store:)` once, gives the engine
/// `observing(display)` of what it returns, and `stop()`s it at the end.
struct MetricsOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Serve Prometheus metrics at http://HOST:PORT/metrics while the command runs.",
        discussion: "HOST is an IP address (IPv6 in brackets) or localhost, e.g. 127.0.0.1:9464; port 0 picks a free port. The address is printed on stderr. See docs/metrics.md.",
        valueName: "host:port"))
    var metrics: String?

    /// The address asked for, nil without `--metrics`.
    var address: MetricsAddress? {
        get throws { try metrics.map { try MetricsAddress(parsing: $0) } }
    }

    func validate() throws {
        do {
            _ = try address
        } catch {
            // One line and exit 2, as for bad input (a ValidationError adds the usage, exit 64).
            printStderr("\(error)", asError: true)
            throw ExitCode(ExitStatus.refused)
        }
    }

    /// Starts the endpoint when `--metrics` was given (printing its address on stderr), an
    /// inert `ServedMetrics` otherwise. A port that cannot be listened on is bad input.
    func start(store: any PlanStore) async throws -> ServedMetrics {
        guard let address = try address else { return ServedMetrics(endpoint: nil) }
        do {
            let endpoint = try await MetricsEndpoint.start(address) { try store.stateCounts() }
            printStderr("livecopy: metrics on \(endpoint.url)")
            return ServedMetrics(endpoint: endpoint)
        } catch let error as MetricsEndpointError {
            throw InputError(error.description)
        }
    }
}

/// What `MetricsOptions.start` returns: the running endpoint, or nothing to do when
/// `--metrics` was not given.
struct ServedMetrics: Sendable {
    let endpoint: MetricsEndpoint?

    /// The observer to give the engine: `observer`, recording metrics too when served.
    func observing(_ observer: any EngineObserver) -> any EngineObserver {
        endpoint?.observing(observer) ?? observer
    }

    /// Stops serving.
    func stop() async {
        await endpoint?.stop()
    }
}
