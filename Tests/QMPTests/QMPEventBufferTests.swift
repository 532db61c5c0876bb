import Foundation
import Testing
import TestSupport

@testable import QMP

/// The bounded event buffers of `QMPConnection`: a subscriber that does not read holds at
/// most the bound, the oldest unread events are dropped, and the drops and the high-water
/// mark are counted. Everything here is counted, nothing timed.
@Suite("QMP event buffers are bounded")
struct QMPEventBufferTests {
    /// An unrelated event numbered `index` (QEMU sends RTC_CHANGE when the guest sets its clock).
    private static func event(_ index: Int) -> QMPEvent {
        QMPEvent(name: "RTC_CHANGE", data: ["offset": .int(Int64(index))], timestamp: 1_700_000_000)
    }

    /// A peer that answers `sync` with `count` events sent just before its reply, in one
    /// write: once `sync` returns, the connection has handed every event to its subscribers.
    private static func stormPeer(events count: Int) async throws -> FakeQMPPeer {
        let storm = (0..<count).map { FakeQMPPeer.line(for: event($0)) }.joined()
        return try await FakeQMPPeer.start { name, _, id in
            name == "sync" ? .raw(storm + FakeQMPPeer.replyLine(("return", "synced"), id: id)) : nil
        }
    }

    /// The offsets of events, in the order they were read.
    private static func offsets(_ events: [QMPEvent]) -> [Int] {
        events.map { Int($0.data["offset"]?.int64Value ?? -1) }
    }

    @Test(.timeLimit(.minutes(10)))
    func aStormOfTwoHundredThousandEventsToAnIdleSubscriberStaysWithinTheBound() async throws {
        let total = 200_000
        let peer = try await Self.stormPeer(events: total)
        defer { peer.stop() }
        // Parsing 200 000 lines takes a while in a debug build: a generous watchdog, no bound.
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath, commandTimeout: 600)
        let bound = QMPConnection.defaultEventBufferLimit
        #expect(connection.eventBufferStats == QMPEventBufferStats(bound: bound))
        let idle = connection.events()  // never read until the storm is over

        #expect(try await connection.execute("sync") == "synced")
        let stats = connection.eventBufferStats
        #expect(stats.bound == bound)
        #expect(stats.highWaterMark <= bound, "the buffer never held more than its bound")
        #expect(stats.highWaterMark == bound, "the idle subscriber filled its buffer")
        #expect(stats.dropped == total - bound, "every event past the bound pushed out the oldest one")

        // What the subscriber still holds: the newest `bound` events, in order.
        await connection.close()
        let kept = try await drainUntilFinished(idle, within: 60)
        #expect(kept.count == bound)
        #expect(Self.offsets(kept) == Array((total - bound)..<total))
    }

    @Test func aSmallBoundKeepsTheNewestEventsAndCountsTheRest() async throws {
        let peer = try await Self.stormPeer(events: 25)
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath, eventBufferLimit: 10)
        let idle = connection.events()
        let reader = connection.events()
        let read = Task { try await drainUntilFinished(reader, within: 60) }

        #expect(try await connection.execute("sync") == "synced")
        let stats = connection.eventBufferStats
        await connection.close()
        // The reader may have fallen behind too; the idle subscriber alone accounts for 15
        // drops, and nobody held more than the bound.
        let delivered = try await read.value
        #expect(stats.highWaterMark == 10)
        #expect(stats.dropped >= 15)
        #expect(stats.dropped == 15 + (25 - delivered.count), "each drop is counted once, where it happened")
        #expect(Self.offsets(delivered) == Array(Self.offsets(delivered)).sorted(), "what is read comes in order")
        #expect(Self.offsets(delivered).last == 24, "the newest event is never the one dropped")
        let kept = try await drainUntilFinished(idle)
        #expect(Self.offsets(kept) == Array(15..<25))
    }

    @Test func aSubscriberThatKeepsUpDropsNothing() async throws {
        let peer = try await FakeQMPPeer.start { name, _, id in
            name == "one" ? .returnWithEvents("ok", before: [Self.event(1)], after: []) : nil
        }
        defer { peer.stop() }
        let connection = try await QMPConnection.connect(socketPath: peer.socketPath, eventBufferLimit: 4)
        defer { Task { await connection.close() } }
        let stream = connection.events()
        var iterator = stream.makeAsyncIterator()
        for _ in 0..<50 {
            #expect(try await connection.execute("one") == "ok")
            #expect(await iterator.next()?.name == "RTC_CHANGE")
        }
        let stats = connection.eventBufferStats
        #expect(stats.dropped == 0)
        #expect(stats.highWaterMark <= 1, "one event at a time, each read before the next came")
    }
}
