import Foundation

/// One file carried inside the binary.
public struct EmbeddedFile: Sendable, Hashable {
    /// The file name, without its folder (for example `0001_initial.sql`).
    public let name: String
    /// The file's text (UTF-8).
    public let contents: String

    public init(name: String, contents: String) {
        self.name = name
        self.contents = contents
    }
}

/// The package's `Migrations/`, `Migrations/postgres/` and `Policies/` folders, compiled into the binary by
/// the EmbedFilesPlugin build-tool plugin (the data lives in a generated file).
public enum EmbeddedFiles {
    /// Migrations/*.sql sorted by file name.
    public static var migrations: [EmbeddedFile] { decodedMigrations }

    /// Migrations/postgres/*.sql (the fleet store's) sorted by file name; never among `migrations`.
    public static var postgresMigrations: [EmbeddedFile] { decodedPostgresMigrations }

    /// Policies/*.yaml sorted by file name.
    public static var policies: [EmbeddedFile] { decodedPolicies }

    // Decoded once, at first use (static lets are lazy and thread-safe).
    private static let decodedMigrations = decode(GeneratedEmbeddedFiles.migrations)
    private static let decodedPostgresMigrations = decode(GeneratedEmbeddedFiles.postgresMigrations)
    private static let decodedPolicies = decode(GeneratedEmbeddedFiles.policies)

    private static func decode(_ entries: [(name: String, base64: String)]) -> [EmbeddedFile] {
        entries.map { entry in
            guard let data = Data(base64Encoded: entry.base64) else {
                fatalError("EmbeddedFiles: corrupt embedded data for \(entry.name)")
            }
            return EmbeddedFile(name: entry.name, contents: String(decoding: data, as: UTF8.self))
        }
    }
}
