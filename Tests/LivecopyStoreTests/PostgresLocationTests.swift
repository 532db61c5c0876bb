import Foundation
import LivecopyModel
import LivecopyPostgresStore
import Testing

/// `PostgresLocation`: the URL's form, where the password comes from, and one-line refusals.
struct PostgresLocationTests {
    static func refusal(_ url: String, passwordFile: String? = nil, environment: [String: String] = [:]) -> String? {
        do {
            _ = try PostgresLocation(url: url, passwordFile: passwordFile, environment: environment)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func parsesAURLAndRedactsIt() throws {
        let location = try PostgresLocation(url: "postgresql://fleet@db.example:6543/livecopy?sslmode=require",
                                            passwordFile: nil, environment: ["LIVECOPY_DB_PASSWORD": "secret"])
        #expect(location.user == "fleet" && location.host == "db.example" && location.port == 6543)
        #expect(location.database == "livecopy" && location.tlsMode == .require)
        #expect(location.password == "secret")
        #expect(location.redacted == "postgres://fleet@db.example:6543/livecopy?sslmode=require")
        #expect(!location.redacted.contains("secret"))
        #expect(try PostgresLocation(url: "postgres://u@h/d", passwordFile: nil, environment: [:]).port == 5432)
        #expect(PostgresLocation.isPostgresURL("postgres://u@h/d") && PostgresLocation.isPostgresURL("postgresql://u@h/d"))
        #expect(!PostgresLocation.isPostgresURL("/var/lib/livecopy/livecopy.db"))
    }

    @Test func refusesAPasswordInTheURLInOneLine() throws {
        let message = try #require(Self.refusal("postgres://u:hunter2@h/d"))
        #expect(!message.contains("hunter2"))
        #expect(message.contains("password file") || message.contains("--db-password-file"))
        #expect(!message.contains("\n"))
    }

    @Test func refusesABadSSLModeAndUnknownParametersInOneLine() throws {
        let badMode = try #require(Self.refusal("postgres://u@h/d?sslmode=sometimes"))
        #expect(badMode.contains("sslmode") && badMode.contains("sometimes") && !badMode.contains("\n"))
        let unknown = try #require(Self.refusal("postgres://u@h/d?sslmode=require&application_name=x"))
        #expect(unknown.contains("application_name") && !unknown.contains("\n"))
        #expect(Self.refusal("postgres://u@h/") != nil, "no database")
        #expect(Self.refusal("postgres://h/d") != nil, "no user")
    }

    @Test func thePasswordComesFromTheFileThenTheEnvironment() throws {
        let scratch = try Scratch()
        let explicit = scratch.path + "/explicit"
        let named = scratch.path + "/named"
        try "from-explicit\n".write(toFile: explicit, atomically: true, encoding: .utf8)
        try "from-named\n".write(toFile: named, atomically: true, encoding: .utf8)
        let environment = ["LIVECOPY_DB_PASSWORD_FILE": named, "LIVECOPY_DB_PASSWORD": "from-env"]
        let url = "postgres://u@h/d"
        #expect(try PostgresLocation(url: url, passwordFile: explicit, environment: environment).password == "from-explicit")
        #expect(try PostgresLocation(url: url, passwordFile: nil, environment: environment).password == "from-named")
        #expect(try PostgresLocation(url: url, passwordFile: nil, environment: ["LIVECOPY_DB_PASSWORD": "from-env"]).password == "from-env")
        #expect(try PostgresLocation(url: url, passwordFile: nil, environment: [:]).password == nil)
        let unreadable = try #require(Self.refusal(url, passwordFile: scratch.path + "/missing"))
        #expect(unreadable.contains("password file") && !unreadable.contains("\n"))
    }
}
