import Foundation
import Logging
import LivecopyModel
import LivecopyPostgresStore
import LivecopyStore
import NIOPosix
import PostgresNIO
import TestSupport
import Testing

/// The two stores the contract suite runs on.
enum StoreBackend: String, CaseIterable, CustomStringConvertible, Sendable {
    case sqlite
    case postgres

    var description: String { rawValue }

    /// A new, empty store of this backend; nil when PostgreSQL is not available here (and
    /// not required: under CI=true its absence is recorded as a failure).
    func open() throws -> OpenedStore? {
        switch self {
        case .sqlite:
            let scratch = try Scratch()
            let path = scratch.path + "/livecopy.db"
            return OpenedStore(store: try SQLiteStore(path: path), another: { try SQLiteStore(path: path) }, close: { _ = scratch })
        case .postgres:
            guard let database = try PostgresTestDatabase.make() else { return nil }
            let store = try PostgresStore(database.location, reconnectFor: 30)
            return OpenedStore(store: store, another: { try PostgresStore(database.location, reconnectFor: 30) },
                               close: { store.shutdown(); database.drop() })
        }
    }
}

/// A store under test, a way to open a second one on the same database (as another
/// process would), and what to do at the end.
final class OpenedStore: @unchecked Sendable {
    let store: any PlanStore
    private let anotherStore: () throws -> any PlanStore
    private let closing: () -> Void
    private var others: [any PlanStore] = []

    init(store: any PlanStore, another: @escaping () throws -> any PlanStore, close: @escaping () -> Void) {
        self.store = store
        self.anotherStore = another
        self.closing = close
    }

    func another() throws -> any PlanStore {
        let other = try anotherStore()
        others.append(other)
        return other
    }

    func close() {
        for other in others { (other as? PostgresStore)?.shutdown() }
        closing()
    }
}

/// A throwaway database on the server `LIVECOPY_TEST_POSTGRES` names (`scripts/postgres
/// start`), made and dropped by TestSupport's `PostgresServer`, as the fleet tests do.
final class PostgresTestDatabase: Sendable {
    let url: String
    let location: PostgresLocation
    var name: String { location.database }

    /// A new database, or nil (skipped) when `LIVECOPY_TEST_POSTGRES` is unset; under
    /// `CI=true` that is recorded as a failure, never a silent pass.
    static func make() throws -> PostgresTestDatabase? {
        guard PostgresServer.url != nil else {
            if Requirement.isCI {
                Issue.record("LIVECOPY_TEST_POSTGRES is unset under CI=true: run eval \"$(scripts/postgres start)\" first")
            }
            return nil
        }
        let url = try PostgresServer.createDatabase(prefix: "lc")
        return PostgresTestDatabase(
            url: url, location: try PostgresLocation(url: url, passwordFile: PostgresServer.passwordFile, environment: [:]))
    }

    private init(url: String, location: PostgresLocation) {
        self.url = url
        self.location = location
    }

    /// Drops the database (best effort: a server restarting may refuse).
    func drop() {
        PostgresServer.dropDatabase(url)
    }

    /// Runs one statement on `location`'s database and returns its rows.
    @discardableResult
    static func query(_ location: PostgresLocation, _ sql: String) throws -> [PostgresRow] {
        let configuration = PostgresConnection.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password,
            database: location.database, tls: .disable)
        let connection = try PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration, id: 0,
            logger: Logger(label: "livecopy.tests.postgres")).wait()
        defer { try? connection.close().wait() }
        return try connection.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "livecopy.tests.postgres")).wait().rows
    }
}
