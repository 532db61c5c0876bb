import Foundation
import LivecopyModel
import LivecopyPostgresStore
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fleet on this machine for the fleet tests: one PostgreSQL database (a fresh one on the
/// test server), and "hosts", each with its own directory, QEMU VMs, images and agent
/// process (`livecopy agent --host NAME`).
final class FleetRig {
    /// One host of the fleet.
    final class Host {
        let name: String
        let scratch: TemporaryDirectory
        /// The VMs, each with one disk: `drive0` on `sources[i]`, moving to `destinations[i]`.
        var vms: [QEMUVirtualMachine] = []
        var sources: [String] = []
        var destinations: [String] = []
        let dataMiB: Int
        /// The agent processes started for this host, oldest first.
        var agents: [LivecopyProcess.Running] = []

        /// `vmCount` VMs whose disks hold `dataMiB` MiB of 0x11, each moving to
        /// `targetDirectory` (default: the host's own `new/`).
        init(_ name: String, vmCount: Int, dataMiB: Int, targetDirectory: String? = nil) throws {
            self.name = name
            self.dataMiB = dataMiB
            scratch = try TemporaryDirectory(prefix: "lc-fleet-\(name)")
            let target = targetDirectory ?? scratch.appending("new")
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            for index in 0..<vmCount {
                let source = scratch.appending("src\(index).qcow2")
                try QEMUImage.create(source, size: "64M")
                try QEMUImage.write(source, pattern: 0x11, offset: "0", length: "\(dataMiB)M")
                let vmDirectory = scratch.url.appendingPathComponent("vm\(index)")
                try FileManager.default.createDirectory(at: vmDirectory, withIntermediateDirectories: true)
                vms.append(try QEMUVirtualMachine(name: "\(name)-vm\(index)", directory: vmDirectory,
                                                  drives: [(id: "drive0", image: source, format: "qcow2")]))
                sources.append(source)
                destinations.append("\(target)/\(name)-vm\(index).qcow2")
            }
        }

        /// This host's VMs as entries of a plan's `vms:` list.
        var planEntries: String {
            vms.indices.map { index in
                """
                  - name: \(vms[index].name)
                    host: \(name)
                    qmp: \(vms[index].livecopySocket)
                    disks:
                      - device: drive0
                        destination: \(destinations[index])
                """
            }.joined(separator: "\n")
        }

        /// A flushed guest write of `pattern` at 1 MiB (over the offline data) and at 40 MiB
        /// (where the source had nothing), on every VM of the host.
        func guestWrite(_ pattern: UInt8) async throws {
            for vm in vms {
                try await vm.guestWrite(drive: "drive0", pattern: pattern, offset: "1M", length: "64k")
                try await vm.guestWrite(drive: "drive0", pattern: pattern, offset: "40M", length: "64k")
            }
        }

        /// Every destination reads back the offline data and the guest's writes, and stands alone.
        /// `guestWrote: false`: no guest write was made (zeroes at 40 MiB).
        func expectDestinationsHoldEverything(written pattern: UInt8, guestWrote: Bool = true,
                                              sourceLocation: SourceLocation = #_sourceLocation) throws {
            for destination in destinations {
                let checks: [(UInt8, String, String)] = [(0x11, "0", "1M"), (pattern, "1M", "64k"),
                                                         (0x11, "1088k", "\(dataMiB * 1024 - 1088)k"),
                                                         (guestWrote ? pattern : 0, "40M", "64k")]
                let result = try RecoveryIntegrationTests.verify(destination, checks)
                #expect(result.ok, "host \(name): \(destination) lacks data:\n\(result.output)", sourceLocation: sourceLocation)
                let info = try QEMUImage.info(destination)
                #expect(info.backingFilename == nil, "host \(name): \(destination) stands alone", sourceLocation: sourceLocation)
            }
        }

        /// livecopy's copy jobs on this host's VMs now.
        func copyJobs() async throws -> [BlockJobInfo] {
            var jobs: [BlockJobInfo] = []
            for vm in vms where vm.isRunning {
                jobs += try await vm.testMonitor().queryBlockJobs().filter { $0.device.hasPrefix("livecopy-") }
            }
            return jobs
        }

        /// Kills what is left (agents, VMs) and removes the host's directory.
        func remove() {
            for agent in agents where agent.process.isRunning { kill(agent.process.processIdentifier, SIGKILL) }
            for vm in vms { vm.kill() }
            scratch.remove()
        }
    }

    let database: String
    let livecopy: LivecopyProcess
    let shared: TemporaryDirectory
    var hosts: [Host] = []
    private var openedStore: PostgresStore?

    /// A fresh database, and a directory for the plan, the policy and the agents' settings.
    init(_ prefix: String, policy: String) throws {
        database = try PostgresServer.createDatabase(prefix: prefix.replacingOccurrences(of: "-", with: "_"))
        livecopy = LivecopyProcess(database: database)
        shared = try TemporaryDirectory(prefix: prefix)
        try policy.write(toFile: shared.appending("policy.yaml"), atomically: true, encoding: .utf8)
        try "poll_interval: 200ms\n".write(toFile: shared.appending("agent.yaml"), atomically: true, encoding: .utf8)
    }

    func addHost(_ name: String, vmCount: Int = 1, dataMiB: Int = 8, targetDirectory: String? = nil) throws -> Host {
        let host = try Host(name, vmCount: vmCount, dataMiB: dataMiB, targetDirectory: targetDirectory)
        hosts.append(host)
        return host
    }

    /// Runs `livecopy ARGS --db DATABASE` with the server's password.
    func run(_ arguments: [String]) async throws -> LivecopyProcess.Result {
        try await livecopy.run(arguments, environment: PostgresServer.environment)
    }

    /// Starts an agent for `host`, with a short lease so that a killed agent's plans are
    /// taken over within seconds.
    @discardableResult
    func startAgent(_ host: Host, leaseTimeout: String = "3s") throws -> LivecopyProcess.Running {
        let agent = try livecopy.start(["agent", "--host", host.name, "--config", shared.appending("agent.yaml"),
                                        "--lease-timeout", leaseTimeout],
                                       environment: PostgresServer.environment)
        host.agents.append(agent)
        return agent
    }

    /// Writes one plan naming every host's VMs and submits it detached; returns each
    /// host's plan id, by host name.
    func submit(name: String = "fleet") async throws -> [String: Int64] {
        let plan = "name: \(name)\npolicy: ./policy.yaml\nvms:\n" + hosts.map(\.planEntries).joined(separator: "\n") + "\n"
        let path = shared.appending("plan.yaml")
        try plan.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await run(["submit", "--detach", path])
        #expect(result.status == 0, "submit --detach: \(result.status)\n\(result.stderr)")
        let ids = result.stdout.split(whereSeparator: \.isNewline).compactMap { Int64($0) }
        let store = try self.store()
        var byHost: [String: Int64] = [:]
        for id in ids {
            let record = try #require(try store.plan(id: id))
            byHost[try #require(record.host)] = id
        }
        return byHost
    }

    /// The fleet store, opened once (the test's own connections).
    func store() throws -> any FleetStore {
        if let openedStore { return openedStore }
        let store = try PostgresStore(PostgresLocation(url: database, passwordFile: PostgresServer.passwordFile, environment: [:]))
        openedStore = store
        return store
    }

    func waitForPlan(_ id: Int64, _ state: PlanState, timeout: Double = 240) async throws {
        let store = try self.store()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try store.plan(id: id)?.state == state { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw WaitTimeout(what: "plan \(id) is \(state.rawValue) (it is \(try store.plan(id: id)?.state.rawValue ?? "?"))")
    }

    /// Waits until `condition` holds of `host`'s copy jobs.
    func waitForJobs(_ host: Host, _ what: String, timeout: Double = 120, _ condition: ([BlockJobInfo]) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition(try await host.copyJobs()) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw WaitTimeout(what: what)
    }

    /// Every agent gets SIGTERM and must exit 0.
    func stopAgents(sourceLocation: SourceLocation = #_sourceLocation) async throws {
        for host in hosts {
            for agent in host.agents where agent.process.isRunning {
                kill(agent.process.processIdentifier, SIGTERM)
                let ended = try await agent.wait(timeout: 120)
                #expect(ended.status == 0, "agent \(host.name): \(ended.status)\n\(ended.stderr)", sourceLocation: sourceLocation)
            }
        }
    }

    /// Kills what is left, removes every directory and drops the database.
    func remove() {
        for host in hosts { host.remove() }
        openedStore?.shutdown()
        shared.remove()
        PostgresServer.dropDatabase(database)
    }

    /// The timeline of each plan and of each disk is one unbroken chain of transitions, and
    /// no event was recorded twice (no two events alike but for their id and time).
    func expectUnbrokenTimelines(_ plans: [Int64], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let store = try self.store()
        for planId in plans {
            let events = try store.events(ofPlan: planId)
            RecoveryIntegrationTests.expectUnbrokenChains(events, "plan \(planId)", sourceLocation: sourceLocation)
            let intents = events.filter { $0.kind == .intent }.map { "\($0.diskId ?? 0) \($0.detail)" }
            #expect(Set(intents).count == intents.count, "plan \(planId): an intent recorded twice: \(intents)",
                    sourceLocation: sourceLocation)
        }
    }

    /// The processes (pid on host) that took each plan's lease, from its events.
    func leaseHolders(_ planId: Int64) throws -> [String] {
        try store().events(ofPlan: planId).compactMap { event in
            guard event.detail.hasPrefix("lease taken") else { return nil }
            return event.detail.components(separatedBy: " by ").last
        }
    }
}
