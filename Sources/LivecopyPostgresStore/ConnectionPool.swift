// The store's own small pool of PostgreSQL connections, connected on demand.

import Foundation
import Logging
import LivecopyModel
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// Open connections to one database, reused: `lease` hands out an idle one (or connects a
/// new one, blocking the calling thread, which must not be an event loop), `giveBack`
/// keeps it for the next caller, `discard` closes one whose connection failed. A leased
/// connection is the caller's alone (a transaction holds it to its end). The connections
/// run on the pool's own event loop group of two threads.
final class ConnectionPool: Sendable {
    let group: MultiThreadedEventLoopGroup
    private let configuration: PostgresConnection.Configuration
    private let idle = Mutex<[PostgresConnection]>([])
    private let nextID = Atomic<Int>(1)
    private let isShutDown = Atomic<Bool>(false)
    /// At most this many idle connections are kept; more are closed when given back.
    let maxIdle: Int
    private let logger: Logger

    init(location: PostgresLocation, maxIdle: Int = 8, logger: Logger) throws {
        self.maxIdle = maxIdle
        self.logger = logger
        var configuration = PostgresConnection.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password,
            database: location.database, tls: try Self.tls(location))
        configuration.options.connectTimeout = .seconds(5)
        // No JIT compilation: livecopy's statements are short, and a summary over many disks
        // crossed jit_above_cost, spending more time compiling (365 ms seen, with inlining and
        // optimization) than running. Sent in the startup packet: no extra round trip.
        configuration.options.additionalStartupParameters = [("jit", "off")]
        if location.tlsMode == .verifyFull { configuration.options.tlsServerName = location.host }
        self.configuration = configuration
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    }

    /// The TLS of `location`'s `sslmode`.
    private static func tls(_ location: PostgresLocation) throws -> PostgresConnection.Configuration.TLS {
        switch location.tlsMode {
        case .disable:
            return .disable
        case .prefer, .require:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            let context = try sslContext(tls)
            return location.tlsMode == .prefer ? .prefer(context) : .require(context)
        case .verifyFull:
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .fullVerification
            if let file = location.rootCertificate {
                guard FileManager.default.isReadableFile(atPath: file) else {
                    throw StoreError("cannot read the CA certificate \(file) (sslrootcert)")
                }
                tls.trustRoots = .file(file)
            }
            return .require(try sslContext(tls))
        }
    }

    private static func sslContext(_ configuration: TLSConfiguration) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw StoreError("cannot set up TLS for the database: \(error)")
        }
    }

    /// An idle connection, or a new one.
    func lease() throws -> PostgresConnection {
        if isShutDown.load(ordering: .relaxed) { throw StoreError("the PostgreSQL store is shut down") }
        while let connection = idle.withLock({ $0.popLast() }) {
            if !connection.isClosed { return connection }
        }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        return try PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger).wait()
    }

    /// A connection of its own, never pooled (a listener holds it), connected without
    /// blocking a thread. `discard` closes it.
    func connectDedicated() async throws -> PostgresConnection {
        if isShutDown.load(ordering: .relaxed) { throw StoreError("the PostgreSQL store is shut down") }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        return try await PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger).get()
    }

    /// Keeps a healthy connection for the next caller.
    func giveBack(_ connection: PostgresConnection) {
        guard !connection.isClosed else { return }
        let kept = !isShutDown.load(ordering: .relaxed) && idle.withLock { connections in
            guard connections.count < maxIdle else { return false }
            connections.append(connection)
            return true
        }
        if !kept { discard(connection) }
    }

    /// Closes a connection whose state is unknown (it failed mid-way).
    /// The connection is kept alive until its close completes (postgres-nio asserts that a
    /// connection is closed before it is deinitialized).
    func discard(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Closes every idle connection and stops the event loops (blocking).
    func shutdown() {
        guard !isShutDown.exchange(true, ordering: .relaxed) else { return }
        let connections = idle.withLock { connections in
            defer { connections = [] }
            return connections
        }
        for connection in connections { try? connection.close().wait() }
        try? group.syncShutdownGracefully()
    }
}
