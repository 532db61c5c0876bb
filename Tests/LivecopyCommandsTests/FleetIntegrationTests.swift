import Foundation
import LivecopyModel
import QMP
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Fleet mode end to end: one real PostgreSQL server, "hosts" on this machine each with its
/// own directory, QEMU VMs, images and agent process (`livecopy agent --host`), and plans
/// submitted detached from another process. A plan spanning three hosts completes; an
/// agent killed mid-copy is restarted and finishes its disks, which no other agent touches;
/// two agents of one host name never both drive; PostgreSQL restarted mid-plan costs no
/// step; the per-host and per-target limits hold at every moment (replayed from the
/// store's events); an operator's pause from another process reaches the owning agent.
@Suite(.serialized, .requires(.qemu, .postgres))
struct FleetIntegrationTests {
    static let slowPolicy = "retire_source: rename\nprogress_interval: 200ms\nverify: none\nspeed: 2M\n"

    @Test(.timeLimit(.minutes(6)))
    func aPlanSpanningThreeHostsCompletes() async throws {
        let fleet = try FleetRig("lc-fleet-three", policy: "retire_source: rename\nprogress_interval: 200ms\n")
        let hosts = try ["alpha", "beta", "gamma"].map { try fleet.addHost($0, vmCount: 1, dataMiB: 8) }
        defer { fleet.remove() }
        for host in hosts { try fleet.startAgent(host) }
        for host in hosts { try await host.guestWrite(0x22) }
        let plans = try await fleet.submit()
        #expect(Set(plans.keys) == Set(["alpha", "beta", "gamma"]), "one plan per host: \(plans)")

        for (_, id) in plans { try await fleet.waitForPlan(id, .completed) }
        for host in hosts {
            let id = try #require(plans[host.name])
            // Only this host's agent took the plan's lease.
            let holders = try fleet.leaseHolders(id)
            let agentPid = try #require(host.agents.first).process.processIdentifier
            #expect(!holders.isEmpty && holders.allSatisfy { $0 == "pid \(agentPid) on \(host.name)" },
                    "plan \(id) of \(host.name) was driven by \(holders)")
            for vm in host.vms { await vm.stop() }
            try host.expectDestinationsHoldEverything(written: 0x22)
        }
        try fleet.expectUnbrokenTimelines(Array(plans.values))

        // status and history read the fleet store from any machine.
        let status = try await fleet.run(["status"])
        #expect(status.status == 0 && status.stdout.contains("no plan in progress"), "\(status.stdout)\n\(status.stderr)")
        for host in hosts {
            let pid = try #require(host.agents.first).process.processIdentifier
            #expect(status.stdout.contains("agent of host \(host.name): pid \(pid) on "), "status names each host's agent:\n\(status.stdout)")
        }
        let history = try await fleet.run(["history"])
        #expect(history.status == 0, "\(history.stderr)")
        for host in hosts { #expect(history.stdout.contains("on host \(host.name)"), "history:\n\(history.stdout)") }
        try await fleet.stopAgents()
    }

    @Test(.timeLimit(.minutes(6)))
    func anAgentKilledMidCopyIsRestartedAndCompletesItsDisksAlone() async throws {
        let fleet = try FleetRig("lc-fleet-kill", policy: Self.slowPolicy)
        let alpha = try fleet.addHost("alpha", vmCount: 1, dataMiB: 16)
        let beta = try fleet.addHost("beta", vmCount: 1, dataMiB: 16)
        defer { fleet.remove() }
        let first = try fleet.startAgent(alpha)
        try fleet.startAgent(beta)
        try await alpha.guestWrite(0x22)
        try await beta.guestWrite(0x22)
        let plans = try await fleet.submit()
        let alphaPlan = try #require(plans["alpha"])

        try await fleet.waitForJobs(alpha, "alpha's copy job runs") { !$0.isEmpty }
        _ = try await RecoveryIntegrationTests.sigkill(first)
        // QEMU's job runs on; alpha's plan stays alpha's while its agent is down.
        let jobsLeft = try await alpha.copyJobs()
        #expect(!jobsLeft.isEmpty, "the job runs on without its agent")
        try await alpha.guestWrite(0x23)
        try await Task.sleep(for: .seconds(4))  // past the 3 s lease: beta's agent could take it, and must not
        let second = try fleet.startAgent(alpha)

        try await fleet.waitForPlan(alphaPlan, .completed)
        try await fleet.waitForPlan(try #require(plans["beta"]), .completed)
        let holders = try fleet.leaseHolders(alphaPlan)
        let pids = [first, second].map { "pid \($0.process.processIdentifier) on alpha" }
        #expect(holders.count >= 2 && holders.allSatisfy { pids.contains($0) }, "alpha's plan was driven by \(holders)")
        #expect(try fleet.store().events(ofPlan: alphaPlan).contains { $0.detail.hasPrefix("re-attaching to QEMU job") },
                "the restarted agent re-attached to the job left running")
        for host in fleet.hosts { for vm in host.vms { await vm.stop() } }
        try alpha.expectDestinationsHoldEverything(written: 0x23)
        try beta.expectDestinationsHoldEverything(written: 0x22)
        try fleet.expectUnbrokenTimelines(Array(plans.values))
        try await fleet.stopAgents()
    }

    @Test(.timeLimit(.minutes(6)))
    func twoAgentsWithOneHostNameNeverBothDrive() async throws {
        let fleet = try FleetRig("lc-fleet-twin", policy: Self.slowPolicy)
        let alpha = try fleet.addHost("alpha", vmCount: 2, dataMiB: 8)
        defer { fleet.remove() }
        let one = try fleet.startAgent(alpha)
        try await ServeIntegrationTests.waitForOutput(one, "driving host alpha")
        let two = try fleet.startAgent(alpha)
        try await ServeIntegrationTests.waitForOutput(two, "standing by until its lease expires")
        let plans = try await fleet.submit()
        let id = try #require(plans["alpha"])
        try await fleet.waitForPlan(id, .completed)
        let holders = Set(try fleet.leaseHolders(id))
        #expect(holders == ["pid \(one.process.processIdentifier) on alpha"], "driven by \(holders)")
        #expect(!two.stderrSoFar().contains("driving host alpha"), "the second agent stood by:\n\(two.stderrSoFar())")

        // The one driving dies: the other takes the host over once the lease expired, and drives what comes next.
        _ = try await RecoveryIntegrationTests.sigkill(one)
        try await ServeIntegrationTests.waitForOutput(two, "driving host alpha")
        try await fleet.stopAgents()
    }

    @Test(.timeLimit(.minutes(6)))
    func postgresRestartedMidPlanCostsNoStep() async throws {
        let fleet = try FleetRig("lc-fleet-restart", policy: Self.slowPolicy)
        let alpha = try fleet.addHost("alpha", vmCount: 1, dataMiB: 16)
        let beta = try fleet.addHost("beta", vmCount: 1, dataMiB: 16)
        defer { fleet.remove() }
        for host in fleet.hosts { try fleet.startAgent(host) }
        try await alpha.guestWrite(0x22)
        try await beta.guestWrite(0x22)
        let plans = try await fleet.submit()
        try await fleet.waitForJobs(alpha, "alpha's copy job runs") { !$0.isEmpty }
        try await fleet.waitForJobs(beta, "beta's copy job runs") { !$0.isEmpty }

        try PostgresServer.restart()
        // The jobs ran on through the outage.
        let jobsAfter = try await alpha.copyJobs()
        let alphaState = try fleet.store().plan(id: plans["alpha"] ?? 0)?.state
        #expect(!jobsAfter.isEmpty || alphaState == .completed, "alpha's job ran on through the restart")
        for (_, id) in plans { try await fleet.waitForPlan(id, .completed) }
        for host in fleet.hosts {
            let survived = host.agents.allSatisfy { $0.process.isRunning }
            #expect(survived, "agent \(host.name) survived the restart")
            for vm in host.vms { await vm.stop() }
            try host.expectDestinationsHoldEverything(written: 0x22)
        }
        try fleet.expectUnbrokenTimelines(Array(plans.values))
        try await fleet.stopAgents()
    }

    @Test(.timeLimit(.minutes(8)))
    func theHostAndTargetLimitsHoldAtEveryMoment() async throws {
        let fleet = try FleetRig("lc-fleet-limits", policy: "retire_source: rename\nprogress_interval: 200ms\nverify: none\n")
        let target = fleet.shared.appending("array")
        let alpha = try fleet.addHost("alpha", vmCount: 3, dataMiB: 8, targetDirectory: target)
        let beta = try fleet.addHost("beta", vmCount: 3, dataMiB: 8, targetDirectory: target)
        defer { fleet.remove() }
        var set = try await fleet.run(["limits", "set", "--host", "alpha", "--max-disks", "1"])
        #expect(set.status == 0, "\(set.stderr)")
        set = try await fleet.run(["limits", "set", "--target", target, "--max-disks", "2", "--bandwidth", "4M"])
        #expect(set.status == 0 && set.stdout.contains("2.0 MiB/s per disk"), "\(set.stdout)\(set.stderr)")
        let refused = try await fleet.run(["limits", "set", "--host", "beta", "--bandwidth", "4M"])
        #expect(refused.status == 2 && refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")

        for host in fleet.hosts { try await host.guestWrite(0x22) }
        let plans = try await fleet.submit()
        for host in fleet.hosts { try fleet.startAgent(host) }
        // While disks wait, status says why; the jobs run at the target's share.
        let deadline = Date().addingTimeInterval(60)
        var sawWaiting = false, jobsSeen = 0
        while Date() < deadline && !(sawWaiting && jobsSeen > 0) {
            let status = try await fleet.run(["status"])
            sawWaiting = sawWaiting || status.stdout.contains("waiting for a copy slot")
            for host in [alpha, beta] {
                for job in try await host.copyJobs() {
                    jobsSeen += 1
                    #expect(job.speed > 0 && job.speed <= 2 * 1024 * 1024, "\(job.device) runs at \(job.speed)")
                }
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(sawWaiting, "status shows a disk waiting for a copy slot")
        #expect(jobsSeen > 0, "a copy job was seen running")
        for (_, id) in plans { try await fleet.waitForPlan(id, .completed) }

        // Replay every slot taken and released, in the store's order.
        let store = try fleet.store()
        var events: [EventRecord] = []
        for (_, id) in plans { events += try store.events(ofPlan: id) }
        events.sort { $0.id < $1.id }
        var perHost: [String: Int] = [:], perTarget: [String: Int] = [:]
        var peakHost: [String: Int] = [:], peakTarget = 0, taken = 0
        for event in events {
            let delta = event.detail.hasPrefix("copy slot taken") ? 1 : event.detail.hasPrefix("copy slot released") ? -1 : 0
            guard delta != 0 else { continue }
            if delta == 1 { taken += 1 }
            let host = try #require(Self.token("host", in: event.detail)), slotTarget = Self.token("target", in: event.detail)
            perHost[host, default: 0] += delta
            peakHost[host] = max(peakHost[host] ?? 0, perHost[host] ?? 0)
            if slotTarget == target {
                perTarget[target, default: 0] += delta
                peakTarget = max(peakTarget, perTarget[target] ?? 0)
            }
            #expect((perHost["alpha"] ?? 0) <= 1, "alpha over its limit after event \(event.id): \(event.detail)")
            #expect((perTarget[target] ?? 0) <= 2, "the target over its limit after event \(event.id): \(event.detail)")
        }
        #expect(taken == 6, "six disks took a slot: \(taken)")
        #expect(peakTarget == 2 && peakHost["alpha"] == 1, "the limits were reached: target \(peakTarget), hosts \(peakHost)")
        let slotsLeft = try store.copySlots()
        #expect(perHost.values.allSatisfy { $0 == 0 } && slotsLeft.isEmpty, "every slot was given back: \(slotsLeft)")
        for host in fleet.hosts {
            for vm in host.vms { await vm.stop() }
            try host.expectDestinationsHoldEverything(written: 0x22)
        }
        try await fleet.stopAgents()
    }

    @Test(.timeLimit(.minutes(6)))
    func pauseAndCancelFromAnotherProcessReachTheOwningAgent() async throws {
        let fleet = try FleetRig("lc-fleet-control", policy: Self.slowPolicy)
        let alpha = try fleet.addHost("alpha", vmCount: 1, dataMiB: 16)
        defer { fleet.remove() }
        try fleet.startAgent(alpha)
        let plans = try await fleet.submit()
        let id = try #require(plans["alpha"])
        try await fleet.waitForJobs(alpha, "alpha's copy job runs") { !$0.isEmpty }

        let pause = try await fleet.run(["pause", String(id)])
        #expect(pause.status == 0 && pause.stdout.contains("paused"), "\(pause.stdout)\(pause.stderr)")
        try await fleet.waitForJobs(alpha, "the job is paused") { $0.first?.paused == true }
        let resume = try await fleet.run(["resume", String(id)])
        #expect(resume.status == 0, "\(resume.stderr)")

        let cancel = try await fleet.run(["cancel", String(id)])
        #expect(cancel.status == 0, "cancel: \(cancel.status)\n\(cancel.stderr)")
        #expect(try fleet.store().plan(id: id)?.state == .rolledBack)
        for vm in alpha.vms { await vm.stop() }
        #expect(!FileManager.default.fileExists(atPath: alpha.destinations[0]), "the rollback removed the destination")
        let run = try await fleet.run(["run", "--plan", String(id)])
        #expect(run.status == 2 && run.stderr.contains("each host's agent drives its plans"), "\(run.stderr)")
        try await fleet.stopAgents()
    }

    @Test(.timeLimit(.minutes(4)))
    func aPlanItsHostRefusesIsRecordedRefusedWithTheReasonWhileTheOthersGoOn() async throws {
        let fleet = try FleetRig("lc-fleet-refused", policy: "retire_source: rename\nverify: none\n")
        let alpha = try fleet.addHost("alpha", vmCount: 1, dataMiB: 4)
        let beta = try fleet.addHost("beta", vmCount: 1, dataMiB: 4)
        defer { fleet.remove() }
        // beta's destination exists already: only beta's own preflight, on its host, can tell.
        try QEMUImage.create(beta.destinations[0], size: "1M")
        let plans = try await fleet.submit()
        for host in fleet.hosts { try fleet.startAgent(host) }
        let betaPlan = try #require(plans["beta"])
        try await fleet.waitForPlan(betaPlan, .refused)
        try await fleet.waitForPlan(try #require(plans["alpha"]), .completed)
        let refused = try #require(try fleet.store().plan(id: betaPlan))
        #expect(refused.error?.contains(beta.destinations[0]) == true, "the reason names the destination: \(refused.error ?? "")")
        let history = try await fleet.run(["history", "--state", "refused"])
        #expect(history.stdout.contains("on host beta") && history.stdout.contains("error:"), "\(history.stdout)")
        for vm in alpha.vms { await vm.stop() }
        try alpha.expectDestinationsHoldEverything(written: 0x11, guestWrote: false)
        try await fleet.stopAgents()
    }

    /// The value of `name=VALUE` in a slot event's detail.
    static func token(_ name: String, in detail: String) -> String? {
        detail.split(separator: " ").first { $0.hasPrefix("\(name)=") }.map { String($0.dropFirst(name.count + 1)) }
    }
}
