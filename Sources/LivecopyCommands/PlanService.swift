// `livecopy serve`'s work: recover at start, then run detached plans as they appear,
// within the host's limits; reload on SIGHUP; stop cleanly on SIGTERM.

import Foundation
import LivecopyEngine
import LivecopyModel
import LivecopyPostgresStore
import LivecopyStore
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The service `livecopy serve` runs (swift-service-lifecycle's `Service`).
///
/// Every plan it drives gets its own `Engine` (its own lease and policy), all sharing one
/// connection per VM and the host's limits (`HostLimits`). On graceful shutdown it halts
/// every engine (`Engine.halt`): each records that it stopped with QEMU's jobs running
/// and releases its lease, and the next start of serve re-attaches.
final class PlanService: Service, Sendable {
    let store: any PlanStore
    let limits: HostLimits
    let sessions: VMSessions
    let notifier = SystemdNotifier()
    /// Reads the settings again (the file and the command line), for SIGHUP.
    let reload: @Sendable () throws -> ServeSettings
    /// The log level when the settings file names none.
    let commandLineLogLevel: Logger.Level
    /// What the engines tell: the journal's lines, and the metrics when served.
    let observer: any EngineObserver
    /// `livecopy agent --host`: the fleet host this service drives (nil: `serve`, this host's own store).
    let fleet: FleetRole?
    private let state: Mutex<State>

    /// What changes while serve runs.
    private struct State {
        var settings: ServeSettings
        /// The plans being driven now, each by its engine.
        var driving: [Int64: Engine] = [:]
        /// When each plan that is not being driven was last tried (interrupted plans are
        /// tried again every `retryInterval`).
        var lastTried: [Int64: Date] = [:]
        var stopping = false
        /// Fleet mode: whether this agent holds its host's lease (else it stands by).
        var holdsHost = false
        /// Fleet mode: the agent holding the host's lease when this one last stood by.
        var standingBehind: AgentIdentity?
    }

    /// How long an interrupted plan (its VM unreachable, say) waits before serve tries it again.
    static let retryInterval: Double = 60

    init(store: any PlanStore, settings: ServeSettings, reload: @escaping @Sendable () throws -> ServeSettings,
         commandLineLogLevel: Logger.Level, observer: any EngineObserver, fleet: FleetRole? = nil) {
        self.fleet = fleet
        self.observer = observer
        self.store = store
        self.limits = HostLimits(settings)
        self.sessions = VMSessions(hypervisor: makeHypervisor(), commandTimeout: 30)
        self.reload = reload
        self.commandLineLogLevel = commandLineLogLevel
        self.state = Mutex(State(settings: settings))
        applyLogLevel(settings)
    }

    func run() async throws {
        let settings = state.withLock { $0.settings }
        let role = fleet.map { " as fleet agent \($0.agent.instance) for host \($0.host)" } ?? ""
        say("started (pid \(getpid()), database \(store.location))\(role): \(settings.summary)")
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.reloadOnHangup() }
            await withGracefulShutdownHandler {
                await holdHostOrStandBy()
                if !isStopping { await recoverAtStart(&group) }
                notifier.ready(status: "serving: \(settings.summary)")
                while !isStopping {
                    if await keepsHost() {
                        await startWaitingPlans(&group)
                    } else {
                        // The host's lease went to another agent (this one was silent too long): stop driving.
                        await haltDriving(reason: "host \(fleet?.host ?? "") is driven by another agent now")
                        await holdHostOrStandBy()
                        if !isStopping { await recoverAtStart(&group) }
                    }
                    await sleepUntilNextPoll()
                }
            } onGracefulShutdown: {
                self.state.withLock { $0.stopping = true }
            }
            await stopDriving()
            group.cancelAll()
            await group.waitForAll()
        }
        await sessions.closeAll()
        // A fleet store counts the statements it sent (the benchmark's round trips per disk).
        say("stopped" + ((store as? PostgresStore).map { " (fleet store round trips: \($0.roundTrips))" } ?? ""))
    }

    private var isStopping: Bool { state.withLock { $0.stopping } }

    // MARK: - Which plans to run

    /// At start: every interrupted plan that no live livecopy drives is reconciled and
    /// resumed (or rolled back, per its policy's `after_restart`), as `recover` does.
    /// Disks whose jobs may still run count against the bandwidth budget until each
    /// re-attaches or ends.
    private func recoverAtStart(_ group: inout TaskGroup<Void>) async {
        let interrupted: [PlanRecord]
        if let fleet {
            interrupted = await fleet.claimPlans(in: [.running, .failed, .needsAttention], excluding: drivingNow, say: say)
        } else {
            do {
                interrupted = try store.plans(states: [.running, .failed, .needsAttention], vm: nil, limit: nil).reversed()
            } catch {
                say("cannot read the interrupted plans: \(describe(error))")
                return
            }
        }
        for plan in interrupted {
            let copying = ((try? store.disks(ofPlan: plan.id)) ?? []).filter { $0.state == .streaming || $0.state == .mirroring }
            await limits.budget.expect(diskIds: copying.map(\.id))
            if start(plan, mode: plan.policy.afterRestart == .rollback ? .rollback : .resume, why: "recovering", &group) {
                RecoveryMetrics.planRecovered()
            }
        }
    }

    /// Starts every detached plan waiting (`pending`), and every interrupted (`running`)
    /// plan no one drives; a plan serve tried already waits `retryInterval` after that try.
    private func startWaitingPlans(_ group: inout TaskGroup<Void>) async {
        let waiting: [PlanRecord]
        if let fleet {
            // Claimed for this host: each plan's lease is this agent's from the claim on.
            waiting = await fleet.claimPlans(in: [.pending, .running], excluding: drivingNow.union(triedRecently), say: say)
        } else {
            do {
                waiting = try store.plans(states: [.pending, .running], vm: nil, limit: nil).reversed()
            } catch {
                say("cannot read the waiting plans: \(describe(error))")
                return
            }
        }
        let now = Date()
        for plan in waiting {
            let due = state.withLock { state -> Bool in
                guard state.driving[plan.id] == nil else { return false }
                guard let last = state.lastTried[plan.id] else { return true }
                return now.timeIntervalSince(last) >= Self.retryInterval
            }
            if due { start(plan, mode: .resume, why: plan.state == .pending ? "starting" : "trying again", &group) }
        }
    }

    /// The plans being driven now.
    private var drivingNow: Set<Int64> { state.withLock { Set($0.driving.keys) } }

    /// The plans tried less than `retryInterval` ago and not being driven.
    private var triedRecently: Set<Int64> {
        let now = Date()
        return state.withLock { state in
            Set(state.lastTried.filter { now.timeIntervalSince($0.value) < Self.retryInterval }.keys)
        }
    }

    // MARK: - Fleet mode: the host's lease

    /// Fleet mode: waits until this agent holds its host's lease (another live agent of the
    /// same host drives it meanwhile), or serve stops. Returns at once without a fleet.
    private func holdHostOrStandBy() async {
        guard let fleet else { return }
        while !isStopping {
            switch await fleet.holdHostLease(say: say) {
            case .held?:
                state.withLock { $0.holdsHost = true; $0.standingBehind = nil }
                say("driving host \(fleet.host)")
                return
            case .heldBy(let other, let heartbeat)?:
                let first = state.withLock { state -> Bool in
                    defer { state.standingBehind = other }
                    return state.standingBehind != other
                }
                if first {
                    let age = String(format: "%.1f", Date().timeIntervalSince(heartbeat))
                    say("host \(fleet.host) is driven by \(other) (heartbeat \(age) s ago); standing by until its lease expires")
                }
            case nil:
                break
            }
            await sleepUntilNextPoll()
        }
    }

    /// Fleet mode: renews the host's lease; false when another agent holds it now. A store
    /// that cannot be reached keeps the engines driving (QEMU's jobs run on; the store
    /// retries), so only a lease seen held by another agent stops them.
    private func keepsHost() async -> Bool {
        guard let fleet else { return true }
        switch await fleet.holdHostLease(say: say) {
        case .held?, nil: return true
        case .heldBy?:
            state.withLock { $0.holdsHost = false }
            return false
        }
    }

    /// Drives `plan` on a task of the group, unless a live livecopy drives it already;
    /// returns whether it started.
    @discardableResult
    private func start(_ plan: PlanRecord, mode: RunMode, why: String, _ group: inout TaskGroup<Void>) -> Bool {
        let engine = Engine(store: store, hypervisor: sessions.hypervisor, observer: observer,
                            commandTimeout: plan.policy.commandTimeout, host: fleet?.host ?? Engine.thisHost,
                            sessions: sessions, hostLimits: limits, admission: fleet?.admission)
        let owner: PlanOwner?
        do {
            owner = try engine.liveOwner(ofPlan: plan.id)
        } catch {
            say("plan \(plan.id): cannot read its owner: \(describe(error))")
            return false
        }
        let started = state.withLock { state -> Bool in
            state.lastTried[plan.id] = Date()
            guard owner == nil, !state.stopping, state.driving[plan.id] == nil else { return false }
            state.driving[plan.id] = engine
            return true
        }
        guard started else { return false }
        say("plan \(plan.id)\(plan.name.map { " (\($0))" } ?? ""): \(why) (\(mode == .rollback ? "rolling back" : "resuming"))")
        group.addTask {
            let ended = await self.drive(plan.id, mode: mode, engine: engine)
            self.state.withLock { state in
                state.driving[plan.id] = nil
                // A final plan is never tried again: its entry would only grow the map.
                if ended { state.lastTried[plan.id] = nil }
            }
        }
        return true
    }

    /// Drives the plan and says how it ended; true when it is final.
    private func drive(_ planId: Int64, mode: RunMode, engine: Engine) async -> Bool {
        do {
            let final = try await engine.run(planId: planId, mode: mode)
            let disks = (try? store.disks(ofPlan: planId)) ?? []
            let completed = disks.filter { $0.state == .completed }.count
            say("plan \(planId): \(final.state.rawValue) (\(completed) of \(disks.count) disk(s) completed)")
            return final.state.isFinal
        } catch let halted as DrivingHalted {
            say(halted.description)
        } catch {
            say("plan \(planId): \(describe(error)); serve tries it again later")
        }
        return false
    }

    /// Waits `poll_interval`, or less if serve is stopping.
    private func sleepUntilNextPoll() async {
        let interval = state.withLock { $0.settings.pollInterval }
        let deadline = Date().addingTimeInterval(interval)
        while !isStopping && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(min(100, Int(interval * 1000))))
        }
    }

    // MARK: - Stopping and reloading

    /// SIGTERM: no job's speed changes any more, and every engine stops where it stands.
    private func stopDriving() async {
        let count = state.withLock { state -> Int in
            state.stopping = true
            return state.driving.count
        }
        notifier.stopping(status: "stopping: \(count) plan(s) left running in QEMU")
        say("stopping: \(count) plan(s) being driven; their QEMU jobs run on, and the next start re-attaches")
        await limits.budget.freeze()
        await haltDriving(reason: "livecopy \(fleet == nil ? "serve" : "agent") stopped")
        if let fleet, state.withLock({ $0.holdsHost }) {
            try? await fleet.store.releaseHostLease(host: fleet.host, agent: fleet.agent)
        }
    }

    /// Every engine stops where it stands, leaving QEMU's jobs running.
    private func haltDriving(reason: String) async {
        let engines = state.withLock { Array($0.driving.values) }
        for engine in engines { engine.halt(reason: reason) }
    }

    /// Reads the settings again at each SIGHUP; a bad file keeps the settings in force.
    private func reloadOnHangup() async {
        for await _ in await UnixSignalsSequence(trapping: .sighup) {
            if Task.isCancelled || isStopping { return }
            notifier.reloading()
            do {
                let settings = try reload()
                state.withLock { $0.settings = settings }
                applyLogLevel(settings)
                await limits.apply(settings)
                say("settings reloaded: \(settings.summary)")
                notifier.ready(status: "serving: \(settings.summary)")
            } catch {
                say("settings not reloaded, the previous ones stay in force: \(describe(error))")
                notifier.ready(status: "serving (reload failed)")
            }
        }
    }

    private func applyLogLevel(_ settings: ServeSettings) {
        ProcessLogLevel.current = settings.logLevel.flatMap(Logger.Level.init(rawValue:)) ?? commandLineLogLevel
    }

    private func say(_ message: String) {
        printStderr("livecopy \(fleet == nil ? "serve" : "agent"): \(message)")
    }
}
