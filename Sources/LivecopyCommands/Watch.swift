import ArgumentParser
import Foundation
import LivecopyModel
import LivecopyStore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `livecopy watch`: a live view of the plans in progress, read from the store only,
/// beside whatever process drives them.
struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watch the plans in progress: each disk's bar, rate, ETA, state and newest event.",
        discussion: """
            Reads the database only (never creates nor writes it), every --interval. On a terminal the \
            frame is redrawn in place, fitted to its width; otherwise a plain block is printed per \
            refresh. Ctrl-C ends it (exit 0).
            """)

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("Watch only this plan (final or not).", valueName: "id"))
    var plan: Int64?

    @Option(help: ArgumentHelp("Seconds between refreshes (default 1).", valueName: "seconds"))
    var interval: Double = 1

    @Flag(help: "Print one frame and exit.")
    var once = false

    @Flag(help: "Exit once no watched plan is running.")
    var untilDone = false

    @Flag(help: "Print one JSON object per refresh, one a line.")
    var json = false

    func validate() throws {
        guard interval.isFinite, interval >= 0.1, interval <= 3600 else {
            throw ValidationError("--interval must be between 0.1 and 3600 seconds")
        }
        if let plan, plan < 1 { throw ValidationError("--plan must be a plan id (1 or more)") }
    }

    func run() async throws {
        try await reportingErrors {
            WatchStop.install()
            let output = WatchOutput(json: json)
            var reader = WatchReader(planId: plan)
            // Opened once: each read sees the owner's latest commit. A copy in memory (an
            // older schema) does not, so it is read afresh at every refresh.
            var opened: (any PlanStore)?
            while true {
                let store = try opened.flatMap { ($0 as? SQLiteStore)?.isCopy == true ? nil : $0 }
                    ?? common.openExistingStoreReadingOnly()
                opened = store
                let frame = try reader.read(store, at: Date())
                try output.write(frame)
                if once || (untilDone && !frame.isAnyPlanRunning) { return ExitStatus.success }
                if await WatchStop.sleep(seconds: interval) { return ExitStatus.success }
            }
        }
    }
}

/// Where and how frames are written: JSON lines, the terminal's in-place redraw, or plain blocks.
struct WatchOutput {
    let json: Bool
    /// Stdout is a terminal (and not `--json`): frames are redrawn in place.
    let isTerminal: Bool

    init(json: Bool) {
        self.json = json
        isTerminal = !json && isatty(STDOUT_FILENO) == 1
    }

    func write(_ frame: WatchFrame) throws {
        let text: String
        if json {
            text = try WatchDocument(frame).line() + "\n"
        } else if isTerminal {
            let size = Self.terminalSize()
            text = WatchText.terminalFrame(frame, width: size?.columns ?? 80, height: size?.rows)
        } else {
            text = WatchText.plainBlock(frame)
        }
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    /// Stdout's terminal size (`TIOCGWINSZ`), read at each frame (the terminal may be
    /// resized); nil when it cannot be told.
    static func terminalSize() -> (columns: Int, rows: Int?)? {
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
        return (Int(size.ws_col), size.ws_row > 0 ? Int(size.ws_row) : nil)
    }
}

/// Ctrl-C and SIGTERM end `watch` cleanly: the handler only sets a flag, which the wait
/// between refreshes looks at.
enum WatchStop {
    static let requested = Atomic<Bool>(false)

    static func install() {
        _ = requested.load(ordering: .relaxed)
        let handler: @convention(c) (Int32) -> Void = { _ in
            WatchStop.requested.store(true, ordering: .relaxed)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
    }

    /// Waits `seconds`, or less if a stop was asked for; true when it was.
    static func sleep(seconds: Double) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if requested.load(ordering: .relaxed) { return true }
            try? await Task.sleep(for: min(.milliseconds(50), deadline - ContinuousClock.now))
        }
        return requested.load(ordering: .relaxed)
    }
}
