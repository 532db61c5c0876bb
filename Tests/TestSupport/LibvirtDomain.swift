import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway libvirt domain on `qemu:///system`: `type='qemu'` (TCG), machine `pc`,
/// 64 MiB, no graphics, no guest OS, one virtio qcow2 disk per `disks` entry with the
/// user alias `ua-<target>`, and a test-only QMP monitor (`testSocket`) added through
/// `<qemu:commandline>`, as `QEMUVirtualMachine` has one. Needs root and a running
/// libvirtd (`.requires(.libvirt)`).
///
/// The domain is named `lctest-<name>-<random>`, so a leftover of an earlier run never
/// collides with it (`scripts/libvirtd stop` removes leftovers). Persistent domains are
/// defined, then started; transient ones are created. `undefineAndDestroy()` removes
/// the domain; deinit does so too, best effort.
///
/// QEMU runs as `libvirt-qemu`: `directory` is made at least 0755 (its parents must let
/// others through), libvirt's DAC driver chowns the images to that user, and the
/// monitor's socket lives in a directory owned by it. QEMU's stdout and stderr, where
/// qemu-io reports, go to `/var/log/libvirt/qemu/<name>.log` (through virtlogd).
public final class LibvirtDomain: Sendable {
    /// A disk of the domain: its guest target (`vda`) and its image at start.
    public struct Disk: Sendable, Hashable {
        public let target: String
        public let image: String
    }

    /// The domain's name: `lctest-<name>-<random>`.
    public let name: String
    /// The directory given at init, holding the XML and the monitor's directory.
    public let directory: URL
    /// The disks as defined.
    public let disks: [Disk]
    /// Defined and started (true), or created (false, gone once it stops).
    public let persistent: Bool
    /// The test's own QMP monitor (one client at a time; see `withTestMonitor`).
    public let testSocket: String
    /// QEMU's stdout and stderr, as libvirt's virtlogd writes them.
    public let logPath: String
    /// The domain XML given to `virsh define` or `virsh create`.
    public let xmlPath: String
    /// More `<devices>` XML, as given at init.
    let extraDevices: String

    private let removed = Mutex(false)

    /// Writes the domain XML to `<directory>/<name>.xml`, then defines and starts the
    /// domain (`persistent`) or creates it, and waits until the test monitor exists.
    /// `extraDevices`: more `<devices>` XML, as given (a network disk, say).
    public init(name: String, directory: URL, disks: [(target: String, image: String)], persistent: Bool,
                extraDevices: String = "") throws {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
        let base = String(name.map { allowed.contains($0) ? $0 : "-" })
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        self.name = "lctest-\(base)-\(suffix)"
        self.directory = directory
        self.disks = disks.map { Disk(target: $0.target, image: $0.image) }
        self.persistent = persistent
        self.extraDevices = extraDevices
        let socketDirectory = directory.appendingPathComponent("qmp-\(suffix)").path
        testSocket = socketDirectory + "/test.qmp"
        logPath = "/var/log/libvirt/qemu/\(self.name).log"
        xmlPath = directory.appendingPathComponent("\(self.name).xml").path
        guard testSocket.utf8.count <= 107 else { throw QEMUFixtureError.socketPathTooLong(testSocket) }

        try Self.makeReachable(directory.path)
        try Self.makeSocketDirectory(socketDirectory)
        try domainXML().write(toFile: xmlPath, atomically: true, encoding: .utf8)
        do {
            if persistent {
                try Virsh.checked(["define", xmlPath])
                try start()
            } else {
                try Virsh.checked(["create", xmlPath])
                try waitForTestSocket()
            }
        } catch {
            // Defined but not started, or started without a monitor: nothing may stay behind.
            undefineAndDestroy()
            throw error
        }
    }

    deinit {
        undefineAndDestroy()
    }

    /// `virsh start NAME` (a persistent domain that is shut off), then waits until the test monitor exists.
    public func start() throws {
        try Virsh.checked(["start", name])
        try waitForTestSocket()
    }

    /// `virsh destroy NAME`: QEMU is stopped at once. A transient domain is then gone.
    public func destroy() throws {
        try Virsh.checked(["destroy", name])
    }

    /// QEMU's pid, from `/var/run/libvirt/qemu/<name>.pid`; throws when the domain does not run.
    public func qemuPID() throws -> pid_t {
        let file = "/var/run/libvirt/qemu/\(name).pid"
        guard let text = try? String(contentsOfFile: file, encoding: .utf8),
              let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw LibvirtRigError.unusable("domain \(name) has no QEMU pid in \(file) (is it running?)")
        }
        return pid
    }

    /// SIGKILLs QEMU (a host crash, as far as the domain can tell), then waits until
    /// libvirt has noticed: `virsh domstate` says shut off, or the transient domain is gone.
    public func killQEMU() async throws {
        let pid = try qemuPID()
        _ = kill(pid, SIGKILL)
        try await Virsh.waitUntil("domain \(name) is not shut off 30 s after SIGKILL of QEMU (pid \(pid))", timeout: 30) {
            guard let state = try self.state() else { return true }
            return state.hasPrefix("shut off")
        }
    }

    /// `virsh domstate NAME` ("running", "shut off", …), or nil when libvirt has no such domain.
    public func state() throws -> String? {
        let result = try Virsh.run(["domstate", name])
        if result.status == 0 { return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) }
        if Self.saysNoSuchDomain(result.stderr) { return nil }
        throw LibvirtRigError.virshFailed(
            command: "virsh domstate \(name)", status: result.status, output: result.stderr + result.stdout)
    }

    /// `virsh dumpxml NAME`: the running domain's XML (or the definition when shut off).
    public func liveXML() throws -> String {
        try Virsh.checked(["dumpxml", name])
    }

    /// `virsh dumpxml --inactive NAME`: the persistent definition, as the next start would use it.
    public func inactiveXML() throws -> String {
        try Virsh.checked(["dumpxml", "--inactive", name])
    }

    /// Destroys the domain if it runs and undefines it if it is defined. A domain already
    /// gone is fine; never throws (deinit calls it).
    public func undefineAndDestroy() {
        let already = removed.withLock { removed in
            defer { removed = true }
            return removed
        }
        guard !already else { return }
        _ = try? Virsh.run(["destroy", name])
        _ = try? Virsh.run(["undefine", name])
    }

    /// The same as `Virsh.restartLibvirtd()`: libvirtd stops and starts again; domains keep running.
    public static func restartLibvirtd() async throws {
        try await Virsh.restartLibvirtd()
    }

    // MARK: - Helpers

    /// True when virsh's error says the domain does not exist.
    static func saysNoSuchDomain(_ stderr: String) -> Bool {
        stderr.contains("failed to get domain") || stderr.contains("Domain not found")
    }

    /// Waits (10 s) for QEMU's test monitor socket; libvirt returns once QEMU runs, and
    /// QEMU binds its monitors before that, so this rarely waits.
    private func waitForTestSocket() throws {
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: testSocket) {
            guard Date() < deadline else {
                let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "(no log at \(logPath))"
                throw LibvirtRigError.domainDidNotStart(
                    domain: name, reason: "the test monitor \(testSocket) did not appear within 10 s", log: log)
            }
            usleep(20_000)
        }
    }

    /// Adds r-x for group and others to `path`, and checks that every parent lets others through:
    /// QEMU, as libvirt-qemu, opens the images and binds the monitor below it.
    private static func makeReachable(_ path: String) throws {
        var info = stat()
        guard stat(path, &info) == 0 else { throw LibvirtRigError.unusable("\(path): \(String(cString: strerror(errno)))") }
        if info.st_mode & 0o755 != 0o755 {
            guard chmod(path, (info.st_mode & 0o7777) | 0o755) == 0 else {
                throw LibvirtRigError.unusable("chmod 0755 \(path): \(String(cString: strerror(errno)))")
            }
        }
        var parent = URL(fileURLWithPath: path).deletingLastPathComponent()
        while parent.path != "/" {
            guard stat(parent.path, &info) == 0, info.st_mode & 0o001 != 0 else {
                throw LibvirtRigError.unusable(
                    "\(parent.path) does not let others through (o+x), so QEMU (user libvirt-qemu) cannot reach \(path)")
            }
            parent.deleteLastPathComponent()
        }
    }

    /// Creates the monitor's directory, owned by libvirt-qemu (QEMU binds the socket there), mode 0755.
    private static func makeSocketDirectory(_ path: String) throws {
        guard let user = getpwnam("libvirt-qemu") else {
            throw LibvirtRigError.unusable("no user libvirt-qemu (scripts/libvirtd start creates it)")
        }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        guard chown(path, user.pointee.pw_uid, user.pointee.pw_gid) == 0, chmod(path, 0o755) == 0 else {
            throw LibvirtRigError.unusable("cannot give \(path) to libvirt-qemu: \(String(cString: strerror(errno)))")
        }
    }
}
