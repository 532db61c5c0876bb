/// A migration file's name, `NNNN_name.sql` (SQLite's `Migrations/` and the fleet store's
/// `Migrations/postgres/` alike): its version, above 0, and its name.
public struct MigrationFileName: Sendable, Equatable {
    public let version: Int
    public let name: String

    /// Parses `0003_add_lease.sql` into version 3, name `add_lease`; nil for anything else.
    public init?(_ fileName: String) {
        guard fileName.hasSuffix(".sql") else { return nil }
        let stem = fileName.dropLast(4)
        guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]), version > 0 else {
            return nil
        }
        self.version = version
        self.name = String(stem[stem.index(after: underscore)...])
    }
}
