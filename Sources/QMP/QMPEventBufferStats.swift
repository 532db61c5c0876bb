/// What the bounded event buffers of one `QMPConnection` have held and dropped.
///
/// Each `events()` subscription buffers at most `bound` events its consumer has not read
/// yet. When a subscription is full, the **oldest** unread event is dropped to make room
/// for the new one (`AsyncStream`'s `.bufferingNewest(bound)`): a storm of events can never
/// grow memory without limit, and what a slow consumer still gets is the latest news (a
/// job's last status change supersedes the earlier ones). Dropping is recoverable: the job
/// watchers poll `query-jobs` as a safety net, and read a job's fate from there.
public struct QMPEventBufferStats: Sendable, Equatable {
    /// The most unread events one subscription may hold.
    public let bound: Int
    /// Events dropped, over all subscriptions, since the connection opened (an event that
    /// pushed the oldest unread one out of a full subscription counts one drop there).
    public internal(set) var dropped: Int
    /// The most unread events any one subscription held at once.
    public internal(set) var highWaterMark: Int

    public init(bound: Int, dropped: Int = 0, highWaterMark: Int = 0) {
        self.bound = bound
        self.dropped = dropped
        self.highWaterMark = highWaterMark
    }
}
