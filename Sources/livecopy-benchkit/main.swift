// livecopy-benchkit: helpers for scripts/bench that need the store's own API.
//
//   livecopy-benchkit synth --db PATH [--plans N] [--disks-per-plan K] [--batch B]
//       Fills a new database with N finished plans of K disks each, every one with the
//       timeline a real run writes (lease, plan and disk transitions, intents, outcomes,
//       notes), through SQLiteStore's WorkflowStore calls, B plans per transaction.
//   livecopy-benchkit transitions --db PATH [--seconds S] [--disks D]
//       Times single store writes as the engine makes them (save(disk:) with an event,
//       one transaction each, synchronous=FULL as the store configures it, awaited as the
//       engine awaits them) for S seconds.
//
// Each prints one JSON object on stdout. Not part of livecopy itself.
import Foundation
import LivecopyModel
import LivecopyStore
import Logging

struct Failure: Error, CustomStringConvertible {
    let description: String
}

func option(_ name: String, in args: [String]) -> String? {
    guard let index = args.firstIndex(of: name), index + 1 < args.count else { return nil }
    return args[index + 1]
}

func intOption(_ name: String, in args: [String], default value: Int) throws -> Int {
    guard let text = option(name, in: args) else { return value }
    guard let number = Int(text), number > 0 else { throw Failure(description: "\(name) wants a positive integer, not \(text)") }
    return number
}

func emit(_ object: [String: Any]) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

func monotonic() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// One disk driven through the steps a forward copy records (DiskWorkflow's order).
func forwardCopy(_ disk: DiskRecord, store: SQLiteStore, at: Date) throws -> Int {
    var record = disk
    var writes = 0
    func save(_ kind: EventKind, to next: DiskState? = nil, _ detail: String, _ update: (inout DiskRecord) -> Void = { _ in }) throws {
        let previous = record.state
        var updated = record
        update(&updated)
        if let next { updated.state = next }
        try store.save(disk: updated, expecting: previous,
                       event: NewEvent(kind: kind, from: previous.rawValue, to: updated.state.rawValue, detail: detail), at: at)
        record = updated
        writes += 1
    }
    let source = record.source ?? "?"
    try save(.transition, to: .snapshotting, "snapshot \(source) → \(record.destination)")
    try save(.intent, "create-destination: creating \(record.destination)") { $0.intent = .createDestination }
    try save(.outcome, "create-destination: created \(record.destination) (mode 0600, backing \(source), backing format qcow2)") {
        $0.intent = nil
        $0.destinationCreated = true
    }
    try save(.intent, "blockdev-snapshot-sync: switching \(record.device) to \(record.destination)") { $0.intent = .snapshot }
    try save(.outcome, "blockdev-snapshot-sync: the VM now writes into \(record.destination)") { $0.intent = nil }
    try save(.transition, to: .streaming, "destination overlay active, backing \(source)")
    try save(.intent, "block-stream: job \(record.streamJobId)") { $0.intent = .stream }
    try save(.outcome, "block-stream: job \(record.streamJobId) started") { $0.intent = nil }
    try store.saveProgress(diskId: record.id, bytesDone: 1 << 30, bytesTotal: 1 << 30, at: at)
    try save(.intent, "job-finalize: flushing \(record.destination)") { $0.intent = .finalize }
    try save(.outcome, "job-finalize: destination flushed; job finalized") { $0.intent = nil }
    try save(.transition, to: .retiring, "\(record.destination) stands alone") {
        $0.bytesDone = 1 << 30
        $0.bytesTotal = 1 << 30
    }
    try store.appendEvent(planId: record.planId, diskId: record.id,
                          event: NewEvent(kind: .note, detail: "verified: \(record.destination) is active with no backing file; nothing opens the source"),
                          at: at)
    writes += 1
    try save(.transition, to: .completed, "source retired to \(source).retired")
    return writes
}

/// One disk rolled back after its snapshot (a cancelled plan).
func rolledBack(_ disk: DiskRecord, store: SQLiteStore, at: Date) throws -> Int {
    var record = disk
    var writes = 0
    for (next, detail) in [(DiskState.snapshotting, "snapshot"), (.streaming, "destination overlay active"),
                           (.rollingBack, "plan cancelled"), (.rolledBack, "the VM is back on the source with every write")] {
        var updated = record
        updated.state = next
        updated.destinationCreated = next != .rolledBack
        try store.save(disk: updated, expecting: record.state,
                       event: NewEvent(kind: .transition, from: record.state.rawValue, to: next.rawValue, detail: detail), at: at)
        record = updated
        writes += 1
    }
    return writes
}

func synth(_ args: [String]) throws {
    guard let path = option("--db", in: args) else { throw Failure(description: "synth needs --db PATH") }
    let plans = try intOption("--plans", in: args, default: 100_000)
    let disksPerPlan = try intOption("--disks-per-plan", in: args, default: 3)
    let batchSize = try intOption("--batch", in: args, default: 500)
    guard !FileManager.default.fileExists(atPath: path) else { throw Failure(description: "\(path) exists; synth wants a new database") }
    let store = try SQLiteStore(path: path)
    let policy = try Policy.shippedDefault()
    let host = "bench-host boot synthetic"
    let started = monotonic()
    var writes = 0
    var disks = 0
    // Plans a day apart going back from now, so ids and times rise together as in real use.
    let base = Date().addingTimeInterval(-Double(plans) * 60)
    var planNumber = 0
    while planNumber < plans {
        let end = min(plans, planNumber + batchSize)
        try store.batch {
            for number in planNumber..<end {
                let at = base.addingTimeInterval(Double(number) * 60)
                let vm = "vm\(number % 5000)"
                let newDisks = (0..<disksPerPlan).map { index in
                    NewPlan.Disk(vmName: vm, vmAddress: "/run/livecopy/\(vm).qmp", device: "drive\(index)",
                                 destination: "/srv/new/\(vm)-\(number)-disk\(index).qcow2",
                                 source: "/srv/old/\(vm)-disk\(index).qcow2", sourceFormat: "qcow2", qmpDevice: "drive\(index)")
                }
                // 1 in 100 refused by preflight, 2 in 100 cancelled and rolled back, the rest completed.
                if number % 100 == 7 {
                    _ = try store.insertPlan(NewPlan(name: "synthetic-\(number)", policyReference: nil, policy: policy, state: .refused,
                                                     error: "VM '\(vm)' disk 'drive0': destination already exists", disks: newDisks), at: at)
                    writes += 1
                    disks += disksPerPlan
                    continue
                }
                let (plan, records) = try store.insertPlan(
                    NewPlan(name: "synthetic-\(number)", policyReference: nil, policy: policy, state: .pending, disks: newDisks), at: at)
                disks += records.count
                let owner = PlanOwner(pid: Int32(1000 + number % 30000), host: host, heartbeat: at)
                _ = try store.acquireLease(planId: plan.id, owner: owner, isGone: { _ in true })
                var running = plan
                running.state = .running
                try store.save(plan: running, expecting: .pending,
                               event: NewEvent(kind: .transition, from: "pending", to: "running", detail: "driven by \(owner)"), at: at)
                writes += 3
                let rollback = number % 100 == 13 || number % 100 == 71
                for record in records {
                    writes += rollback ? try rolledBack(record, store: store, at: at) : try forwardCopy(record, store: store, at: at)
                }
                var final = running
                final.state = rollback ? .rolledBack : .completed
                final.finishedAt = at.addingTimeInterval(30)
                try store.save(plan: final, expecting: .running,
                               event: NewEvent(kind: .transition, from: "running", to: final.state.rawValue,
                                               detail: rollback ? "plan cancelled" : "\(records.count) of \(records.count) disk(s) completed"),
                               at: at)
                try store.releaseLease(planId: plan.id, owner: owner)
                writes += 2
            }
        }
        planNumber = end
    }
    let seconds = monotonic() - started
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    try emit(["plans": plans, "disks": disks, "store_calls": writes, "seconds": seconds, "batch": batchSize, "db_bytes": size])
}

func transitions(_ args: [String]) async throws {
    guard let path = option("--db", in: args) else { throw Failure(description: "transitions needs --db PATH") }
    let seconds = Double(try intOption("--seconds", in: args, default: 3))
    let diskCount = try intOption("--disks", in: args, default: 2000)
    let store = try SQLiteStore(path: path)
    let policy = try Policy.shippedDefault()
    let newDisks = (0..<diskCount).map { index in
        NewPlan.Disk(vmName: "vm\(index / 2)", vmAddress: "/run/livecopy/vm\(index / 2).qmp", device: "drive\(index % 2)",
                     destination: "/srv/new/transitions-\(index).qcow2", source: "/srv/old/transitions-\(index).qcow2",
                     sourceFormat: "qcow2", qmpDevice: "drive\(index % 2)")
    }
    let (_, records) = try store.insertPlan(
        NewPlan(name: "transitions", policyReference: nil, policy: policy, state: .pending, disks: newDisks), at: Date())
    // Each disk walks pending → snapshotting → streaming → retiring → completed, one
    // transaction (compare-and-set plus event) per step, as DiskLedger.transition writes them.
    let path4: [DiskState] = [.snapshotting, .streaming, .retiring, .completed]
    var count = 0
    var latencies: [Double] = []
    let started = monotonic()
    outer: for record in records {
        var current = record
        for next in path4 {
            var updated = current
            updated.state = next
            let before = monotonic()
            try await store.save(disk: updated, expecting: current.state,
                                 event: NewEvent(kind: .transition, from: current.state.rawValue, to: next.rawValue, detail: "benchkit"),
                                 at: Date())
            latencies.append(monotonic() - before)
            current = updated
            count += 1
            if monotonic() - started >= seconds { break outer }
        }
    }
    let elapsed = monotonic() - started
    latencies.sort()
    let median = latencies[latencies.count / 2]
    let p99 = latencies[min(latencies.count - 1, latencies.count * 99 / 100)]
    try emit(["transitions": count, "seconds": elapsed, "per_second": Double(count) / elapsed,
              "median_ms": median * 1000, "p99_ms": p99 * 1000, "synchronous_level": try store.synchronousLevel()])
}

// The store logs its opening at info: only warnings and worse here, so scripts/bench (which
// reads stdout and stderr together) sees the one JSON object alone.
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}
let arguments = Array(CommandLine.arguments.dropFirst())
do {
    switch arguments.first {
    case "synth": try synth(arguments)
    case "transitions": try await transitions(arguments)
    default:
        FileHandle.standardError.write(Data("usage: livecopy-benchkit synth|transitions --db PATH [options]\n".utf8))
        exit(2)
    }
} catch {
    FileHandle.standardError.write(Data("livecopy-benchkit: \(error)\n".utf8))
    exit(1)
}
