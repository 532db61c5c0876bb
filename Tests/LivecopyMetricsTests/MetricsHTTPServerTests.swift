import Foundation
import LivecopyMetrics
import Synchronization
import TestSupport
import Testing

/// The endpoint over a real socket: `/metrics` in Prometheus' content type, 404 elsewhere,
/// 405 for another method, a taken port refused in one line, and nothing left listening
/// after `stop`.
@Suite(.serialized)
struct MetricsHTTPServerTests {
    static func start(port: Int = 0, body: @escaping @Sendable () async -> String = { "m 1\n" }) async throws -> (MetricsHTTPServer, Int) {
        let server = try await MetricsHTTPServer.start(host: "127.0.0.1", port: port, body: body)
        return (server, try #require(server.address.port))
    }

    @Test func metricsIsServedAndEverythingElseIsNotFound() async throws {
        let (server, port) = try await Self.start { "livecopy_test 42\n" }
        let metrics = try HTTPScrape.request(port: port)
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(metrics.headers["content-length"] == "17")
        #expect(metrics.body == "livecopy_test 42\n")
        #expect(try HTTPScrape.request(port: port, path: "/metrics?name[]=x").status == 200, "a query string is ignored")
        for path in ["/", "/metrics/", "/metricsx", "/favicon.ico"] {
            let other = try HTTPScrape.request(port: port, path: path)
            #expect(other.status == 404, "\(path)")
            #expect(other.body.contains("/metrics"))
        }
        let post = try HTTPScrape.request(port: port, method: "POST")
        #expect(post.status == 405)
        #expect(post.headers["allow"] == "GET, HEAD")
        let head = try HTTPScrape.request(port: port, method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty)
        await server.stop()
        #expect(throws: HTTPScrape.Failure.self, "nothing listens after stop") { try HTTPScrape.request(port: port) }
    }

    @Test func eachScrapeAsksForTheTextAgain() async throws {
        let scrapes = Counter()
        let (server, port) = try await Self.start { "scrape \(scrapes.next())\n" }
        defer { Task { await server.stop() } }
        #expect(try HTTPScrape.request(port: port).body == "scrape 1\n")
        #expect(try HTTPScrape.request(port: port).body == "scrape 2\n")
    }

    @Test func aTakenPortIsRefusedInOneLine() async throws {
        let (server, port) = try await Self.start()
        defer { Task { await server.stop() } }
        await #expect {
            _ = try await MetricsHTTPServer.start(host: "127.0.0.1", port: port) { "" }
        } throws: { error in
            let text = "\(error)"
            return text == "--metrics 127.0.0.1:\(port): cannot listen there: Address already in use" && !text.contains("\n")
        }
    }

    /// A thread-safe count.
    final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
    }
}
