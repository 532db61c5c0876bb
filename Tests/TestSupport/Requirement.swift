import Foundation
import Testing

/// Something a test needs of the machine. Without it the test is skipped, except under
/// `CI=true`: there a skipped suite would hide a broken CI machine, so the test fails
/// instead, with a message naming what is missing.
public enum Requirement: Sendable, CustomStringConvertible {
    /// qemu-system-x86_64, qemu-img and qemu-io on PATH.
    case qemu
    /// Root, with mount(8): to mount a small or read-only tmpfs.
    case tmpfs
    /// `chattr +i` works here (root with CAP_LINUX_IMMUTABLE, on a file system with immutable files).
    case chattr
    /// Root, and libvirtd answering `virsh -c qemu:///system version` (as root,
    /// `scripts/libvirtd start` starts it). Asked once per test process.
    case libvirt
    /// Root, and `losetup` attaches a file as a loop device (a block device destination).
    case loopDevice
    /// `python3` on PATH (the hooks of contrib/hooks are Python scripts).
    case python3
    /// A PostgreSQL server for the fleet store: `LIVECOPY_TEST_POSTGRES` names it (scripts/test
    /// starts one with scripts/postgres) and `psql` reaches it.
    case postgres

    public var description: String {
        switch self {
        case .qemu: return "QEMU (\(QEMUTools.requiredTools.joined(separator: ", ")))"
        case .tmpfs: return "root and mount(8), to mount a tmpfs"
        case .chattr: return "chattr +i (root, on a file system with immutable files)"
        case .libvirt: return "libvirt (root, and libvirtd answering virsh -c \(Virsh.uri) version)"
        case .loopDevice: return "a loop device (root, and losetup)"
        case .python3: return "python3 (for contrib/hooks)"
        case .postgres: return "a PostgreSQL server (LIVECOPY_TEST_POSTGRES, as scripts/postgres start prints it)"
        }
    }

    /// Nil when the machine has it; else what is missing, in a few words.
    public var missing: String? {
        switch self {
        case .qemu:
            let absent = QEMUTools.requiredTools.filter { QEMUTools.find($0) == nil }
            return absent.isEmpty ? nil : "\(absent.joined(separator: ", ")) not on PATH"
        case .tmpfs:
            if getuid() != 0 { return "not root (uid \(getuid())), so no tmpfs can be mounted" }
            return FileManager.default.isExecutableFile(atPath: "/bin/mount") ? nil : "/bin/mount is missing"
        case .chattr:
            return Self.chattrWorks ? nil : "chattr +i does not make a file immutable here"
        case .libvirt:
            if getuid() != 0 { return "not root (uid \(getuid())), so no domain can be defined on \(Virsh.uri)" }
            return Self.libvirtMissing
        case .loopDevice:
            if getuid() != 0 { return "not root (uid \(getuid())), so no loop device can be attached" }
            return LoopDevice.missing
        case .python3:
            let found = ["/usr/bin/python3", "/usr/local/bin/python3"].contains { FileManager.default.isExecutableFile(atPath: $0) }
            return found ? nil : "python3 is neither /usr/bin/python3 nor /usr/local/bin/python3 (the PATH hooks run with)"
        case .postgres:
            return Self.postgresMissing
        }
    }

    private static let postgresMissing: String? = PostgresServer.missing

    private static let chattrWorks: Bool = {
        guard let scratch = try? TemporaryDirectory(prefix: "lc-chattr-probe") else { return false }
        defer { scratch.remove() }
        let file = scratch.appending("f")
        guard FileManager.default.createFile(atPath: file, contents: Data("x".utf8)),
              (try? QEMUTools.run("chattr", ["+i", file]))?.status == 0 else { return false }
        let immutable = (try? "y".write(toFile: file, atomically: false, encoding: .utf8)) == nil
        _ = try? QEMUTools.run("chattr", ["-i", file])
        return immutable
    }()

    /// Nil when `virsh -c qemu:///system version` answers; else why not, in one line.
    private static let libvirtMissing: String? = {
        guard QEMUTools.find(Virsh.program) != nil else { return "virsh not on PATH" }
        guard let result = try? Virsh.run(["version"], timeout: 20) else { return "virsh could not be started" }
        if result.status == 0 { return nil }
        let reason = (result.stderr + result.stdout).split(whereSeparator: \.isNewline).first.map(String.init) ?? "no output"
        return "virsh -c \(Virsh.uri) version does not answer (as root, scripts/libvirtd start starts libvirtd): \(reason)"
    }()

    /// Whether the CI switch is on (`CI=true` in the environment).
    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// True when every requirement is met; false (skip) when one is not; under CI=true,
    /// throws `RequirementMissing` naming every missing one instead of skipping.
    public static func met(_ requirements: [Requirement]) throws -> Bool {
        let missing = requirements.compactMap(\.missing)
        if missing.isEmpty { return true }
        if isCI { throw RequirementMissing(missing: missing) }
        return false
    }
}

/// Under `CI=true`, a test's requirement is missing: the test fails rather than skip.
public struct RequirementMissing: Error, CustomStringConvertible {
    public let missing: [String]
    public var description: String {
        "CI=true and this test needs what the machine lacks: \(missing.joined(separator: "; ")) (a skipped test would hide it)"
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test or suite only where `requirements` are met: skipped elsewhere, failed
    /// (naming what is missing) under `CI=true`.
    public static func requires(_ requirements: Requirement..., sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        let needs = requirements.map(\.description).joined(separator: " and ")
        return .enabled("needs \(needs)", sourceLocation: sourceLocation) { try Requirement.met(requirements) }
    }
}
