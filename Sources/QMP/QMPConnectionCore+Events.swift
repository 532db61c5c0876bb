// Event subscriptions: `events()` streams, their bounded buffers and the drop statistics.

import Foundation
import NIOCore

extension QMPConnectionCore {
    /// A new event stream (see `QMPConnection.events()`), finished at once when the
    /// connection is closed already.
    func subscribe() -> AsyncStream<QMPEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: QMPEvent.self, bufferingPolicy: .bufferingNewest(eventBufferLimit))
        let key = state.withLock { state in
            defer { state.nextSubscriberKey += 1 }
            return state.nextSubscriberKey
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { state in
                state.subscribers[key] = nil
            }
        }
        let added = state.withLock { state -> Bool in
            guard state.closedReason == nil else { return false }
            state.subscribers[key] = continuation
            return true
        }
        if !added {
            continuation.finish()
        }
        return stream
    }

    /// The number of live event subscriptions (for tests).
    var subscriberCount: Int {
        state.withLock { $0.subscribers.count }
    }

    /// The event buffers' bound, drops and high-water mark so far.
    var eventBufferStats: QMPEventBufferStats {
        state.withLock { $0.eventBuffers }
    }

    /// Hands `event` to every subscriber and records what their buffers did with it.
    /// Called on the event loop only, so one event's yields are never interleaved with
    /// another's.
    func deliver(_ event: QMPEvent, to subscribers: [AsyncStream<QMPEvent>.Continuation]) {
        var dropped = 0
        var fullest = 0
        for subscriber in subscribers {
            switch subscriber.yield(event) {
            case .enqueued(let remaining):
                fullest = max(fullest, eventBufferLimit - remaining)
            case .dropped:
                dropped += 1
                fullest = eventBufferLimit
            case .terminated:
                continue
            @unknown default:
                continue
            }
        }
        guard dropped > 0 || fullest > 0 else { return }
        state.withLock { state in
            state.eventBuffers.dropped += dropped
            state.eventBuffers.highWaterMark = max(state.eventBuffers.highWaterMark, fullest)
        }
    }
}
