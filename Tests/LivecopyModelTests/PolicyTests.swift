import Foundation
import LivecopyModel
import Testing

struct PolicyTests {
    @Test func shippedPoliciesAreCarriedInTheBinaryAndParse() throws {
        let names = Policy.shippedNames
        #expect(names.contains("default"))
        #expect(names.count >= 2)
        for name in names { _ = try Policy.resolve(name) }
    }

    @Test func defaultPolicyValues() throws {
        let policy = try Policy.resolve(nil)
        #expect(policy.retireSource == .rename)
        #expect(policy.speed == 0)
        #expect(policy.maxParallelDisks == 4)
        #expect(policy.onFailure == .stop)
        #expect(policy.afterRestart == .resume)
        #expect(policy.onError == .enospc)
        #expect(policy.progressInterval == 1)
        #expect(try Policy.resolve("default") == policy)
    }

    @Test func gentlePolicyThrottlesAndRollsBack() throws {
        let policy = try Policy.resolve("gentle")
        #expect(policy.speed == 64 << 20)
        #expect(policy.maxParallelDisks == 1)
        #expect(policy.onFailure == .rollback)
        #expect(policy.retireSource == .keep)
    }

    @Test func aPolicyFileOverridesOnlyWhatItNames() throws {
        let base = try Policy.resolve(nil)
        let policy = try Policy.parse("speed: 512K\nretire_source: delete\nio_error_wait: 90s", source: "p.yaml", base: base)
        #expect(policy.speed == 512 * 1024)
        #expect(policy.retireSource == .delete)
        #expect(policy.ioErrorWait == 90)
        #expect(policy.maxParallelDisks == base.maxParallelDisks)
    }

    @Test func theStrategyDefaultsToStreamingAndAcceptsMirror() throws {
        let base = try Policy.resolve(nil)
        #expect(base.strategy == .stream && base.copyMode == .background)
        let mirror = try Policy.parse("strategy: mirror\ncopy_mode: write-blocking", source: "p.yaml", base: base)
        #expect(mirror.strategy == .mirror && mirror.copyMode == .writeBlocking)
        // A policy stored before the keys existed reads as streaming.
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(mirror)) as? [String: Any] ?? [:]
        json["strategy"] = nil
        json["copy_mode"] = nil
        let stored = try JSONDecoder().decode(Policy.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(stored.strategy == .stream && stored.copyMode == .background)
    }

    @Test func quarantineKeepsTheSourceForQuarantineForDefaulting24Hours() throws {
        let base = try Policy.resolve(nil)
        #expect(base.retireSource == .rename, "the default stays rename")
        #expect(base.quarantineFor == 24 * 3600)
        let policy = try Policy.parse("retire_source: quarantine\nquarantine_for: 30m", source: "p.yaml", base: base)
        #expect(policy.retireSource == .quarantine && policy.quarantineFor == 1800)
        // A policy stored before the key existed reads as 24 hours; one stored with it, as stored.
        var json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(policy)) as? [String: Any] ?? [:]
        #expect(json["quarantine_for"] as? Double == 1800)
        json["quarantine_for"] = nil
        let stored = try JSONDecoder().decode(Policy.self, from: JSONSerialization.data(withJSONObject: json))
        #expect(stored.quarantineFor == 24 * 3600 && stored.retireSource == .quarantine)
    }

    @Test func aReferenceWithASlashIsAFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lc-policy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "max_parallel_disks: 2\n".write(to: directory.appendingPathComponent("mine.yaml"), atomically: true, encoding: .utf8)
        #expect(try Policy.resolve("./mine.yaml", relativeTo: directory).maxParallelDisks == 2)
        #expect(try Policy.resolve(directory.appendingPathComponent("mine.yaml").path).maxParallelDisks == 2)
        #expect(throws: InputError.self) { try Policy.resolve("./missing.yaml", relativeTo: directory) }
    }

    @Test(arguments: [
        ("retire_source: shred", "retire_source", "shred"),
        ("speed: fast", "speed", "fast"),
        ("speed: -1M", "speed", "-1M"),
        ("max_parallel_disks: 0", "max_parallel_disks", "0"),
        ("max_parallel_disks: two", "max_parallel_disks", "two"),
        ("on_failure: panic", "on_failure", "panic"),
        ("after_restart: maybe", "after_restart", "maybe"),
        ("on_error: ignore", "on_error", "ignore"),
        ("progress_interval: 0s", "progress_interval", "0s"),
        ("command_timeout: soon", "command_timeout", "soon"),
        ("strategy: copy", "strategy", "copy"),
        ("copy_mode: sync", "copy_mode", "sync"),
        ("quarantine_for: 0s", "quarantine_for", "0s"),
        ("quarantine_for: abc", "quarantine_for", "abc"),
        ("quarantine_for: -1h", "quarantine_for", "-1h"),
    ])
    func invalidValuesNameTheKeyAndTheValue(text: String, key: String, value: String) {
        do {
            _ = try Policy.parse(text, source: "p.yaml", base: try Policy.resolve(nil))
            Issue.record("accepted \(text)")
        } catch let error as InputError {
            #expect(error.message.contains("'\(key)'"), "\(error.message)")
            #expect(error.message.contains("'\(value)'"), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func unknownKeysAndUnknownPoliciesAreRefused() {
        #expect(throws: InputError.self) { try Policy.parse("sped: 1M", source: "p.yaml", base: try Policy.resolve(nil)) }
        do {
            _ = try Policy.resolve("nonesuch")
            Issue.record("accepted an unknown policy")
        } catch let error as InputError {
            #expect(error.message.contains("unknown policy 'nonesuch'"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test(arguments: [
        ("0", Int64(0)), ("4096", 4096), ("512K", 524_288), ("64M", 67_108_864), ("1G", 1_073_741_824),
        ("2T", 2_199_023_255_552), ("64MiB", 67_108_864), ("64mb", 67_108_864), ("1k", 1024),
    ])
    func byteSizes(text: String, bytes: Int64) {
        #expect(ByteSize.parse(text) == bytes)
    }

    @Test(arguments: ["", "M", "1.5G", "-1", "1X", "99999999999999999999", "9999999999T"])
    func invalidByteSizes(text: String) {
        #expect(ByteSize.parse(text) == nil)
    }
}
