import Foundation
import LivecopyModel
import Testing

/// The policy's `hooks:` (docs/hooks.md): argv lists, per-hook timeouts, what a failing
/// `on_switch` does, and one-line errors for what is not a command.
struct HookPolicyTests {
    static func parse(_ text: String) throws -> Policy {
        try Policy.parse(text, source: "p.yaml", base: try Policy.resolve(nil))
    }

    @Test func noHooksByDefault() throws {
        let policy = try Policy.resolve(nil)
        #expect(policy.hooks.commands.isEmpty && policy.hooks.onSwitchFailure == .rollback && policy.hooks.timeout == 60)
    }

    @Test func eachMomentTakesAnArgvListOrACommandWithItsOwnTimeout() throws {
        let policy = try Self.parse("""
            hooks:
              timeout: 30s
              on_switch_failure: record
              on_switch: [/usr/local/sbin/vm-config-switch, --format, qemu-cmdline, "/etc/vms/web 01.sh"]
              on_complete:
                command: [/usr/local/sbin/inventory-update, --json, /var/lib/inventory.json]
                timeout: 2m
              on_rollback: [/bin/true]
            """)
        let hooks = policy.hooks
        #expect(hooks.onSwitchFailure == .record && hooks.timeout == 30)
        #expect(hooks.command(for: .onSwitch) == HookCommand(
            argv: ["/usr/local/sbin/vm-config-switch", "--format", "qemu-cmdline", "/etc/vms/web 01.sh"], timeout: 30))
        #expect(hooks.command(for: .onComplete)?.timeout == 120)
        #expect(hooks.command(for: .onRollback)?.argv == ["/bin/true"])
        #expect(hooks.command(for: .onNeedsAttention) == nil)
    }

    @Test func argumentsAreKeptExactlyAsWritten() throws {
        let policy = try Self.parse("hooks:\n  on_complete: [/bin/echo, \"  two  spaces \", \"\", \"$HOME; rm -rf /\"]\n")
        #expect(policy.hooks.command(for: .onComplete)?.argv == ["/bin/echo", "  two  spaces ", "", "$HOME; rm -rf /"])
    }

    @Test func aPolicyStoredWithHooksReadsBackTheSame() throws {
        let policy = try Self.parse("hooks:\n  on_switch: [/bin/true, x]\n  on_switch_failure: record\n")
        let decoded = try JSONDecoder().decode(Policy.self, from: JSONEncoder().encode(policy))
        #expect(decoded == policy)
        let withoutHooks = try JSONSerialization.jsonObject(with: JSONEncoder().encode(try Policy.resolve(nil))) as? [String: Any]
        var older = withoutHooks ?? [:]
        older.removeValue(forKey: "hooks")
        let stored = try JSONDecoder().decode(Policy.self, from: JSONSerialization.data(withJSONObject: older))
        #expect(stored.hooks == .none, "a policy stored before hooks existed has none")
    }

    @Test(arguments: [
        ("hooks:\n  on_switch: /usr/local/bin/update --all\n", "'hooks.on_switch' must be a list"),
        ("hooks:\n  on_switch: []\n", "'hooks.on_switch' must name the program"),
        ("hooks:\n  on_switch: [\"\"]\n", "'hooks.on_switch[0]' must name the program"),
        ("hooks:\n  on_switch: [[a]]\n", "'hooks.on_switch[0]' must be a string"),
        ("hooks:\n  on_swich: [/bin/true]\n", "unknown key 'on_swich' in 'hooks'"),
        ("hooks:\n  on_switch:\n    timeout: 5s\n", "needs 'command'"),
        ("hooks:\n  on_switch:\n    command: [/bin/true]\n    retries: 2\n", "unknown key 'retries'"),
        ("hooks:\n  timeout: 0s\n", "'hooks.timeout'"),
        ("hooks:\n  on_switch_failure: ignore\n", "'ignore' (expected rollback | record)"),
        ("hooks: [/bin/true]\n", "'hooks' must be a mapping"),
    ])
    func whatIsNotACommandIsAOneLineError(text: String, expected: String) {
        do {
            _ = try Self.parse(text)
            Issue.record("accepted \(text)")
        } catch let error as InputError {
            #expect(error.message.contains(expected) && !error.message.contains("\n"), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
