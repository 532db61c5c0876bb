// Drawing clusters at random, without repetition, for a sampled comparison.

/// Picks `count` distinct clusters out of a list of spans, uniformly, the same ones for
/// the same generator state: with Floyd's algorithm (a set of the picks) when they are few
/// next to the pool, else by selection sampling (one pass over the pool, no set), so
/// neither time nor memory grows with the pool and the picks together.
enum ClusterDraw {
    /// Floyd's algorithm when the picks are at most this fraction of the pool.
    static let sparseShare: Int64 = 64

    /// `count` distinct clusters of `pool` (sorted, disjoint spans), as sorted spans.
    static func choose(_ count: Int64, from pool: [ClusterSpan], using generator: inout SplitMix64) -> [ClusterSpan] {
        let size = ClusterSpan.count(pool)
        let wanted = min(max(0, count), size)
        if wanted == 0 { return [] }
        if wanted == size { return pool }
        if wanted <= size / sparseShare {
            return clusters(atPositions: floyd(wanted, below: size, using: &generator), in: pool)
        }
        // Selection sampling (Knuth's algorithm S): each cluster in turn is picked with
        // probability (still wanted) / (still unseen).
        var picked: [ClusterSpan] = []
        var needed = wanted
        var unseen = size
        for span in pool {
            var cluster = span.start
            while cluster < span.end && needed > 0 {
                if Int64(generator.next(below: UInt64(unseen))) < needed {
                    if let last = picked.last, last.end == cluster {
                        picked[picked.count - 1].end += 1
                    } else {
                        picked.append(ClusterSpan(start: cluster, end: cluster + 1))
                    }
                    needed -= 1
                }
                unseen -= 1
                cluster += 1
            }
            if needed == 0 { break }
        }
        return picked
    }

    /// `count` distinct numbers below `bound`, sorted (Floyd's algorithm).
    static func floyd(_ count: Int64, below bound: Int64, using generator: inout SplitMix64) -> [Int64] {
        var chosen = Set<Int64>(minimumCapacity: Int(count))
        for top in (bound - count) ..< bound {
            let candidate = Int64(generator.next(below: UInt64(top) + 1))
            chosen.insert(chosen.contains(candidate) ? top : candidate)
        }
        return chosen.sorted()
    }

    /// The clusters at `positions` (sorted) when `pool`'s clusters are numbered from 0 in order.
    static func clusters(atPositions positions: [Int64], in pool: [ClusterSpan]) -> [ClusterSpan] {
        var result: [ClusterSpan] = []
        var span = 0
        var before: Int64 = 0  // pool clusters in spans before `span`
        for position in positions {
            while position - before >= pool[span].count {
                before += pool[span].count
                span += 1
            }
            let cluster = pool[span].start + (position - before)
            if let last = result.last, last.end == cluster {
                result[result.count - 1].end += 1
            } else {
                result.append(ClusterSpan(start: cluster, end: cluster + 1))
            }
        }
        return result
    }
}

/// SplitMix64 (Steele, Lea and Flood), with its own unbiased draw below a bound (Lemire's
/// method), so a seed gives the same numbers on every platform and Swift version (the
/// standard library's `random(in:using:)` does not promise that).
struct SplitMix64: Sendable {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0 ..< bound`, uniformly (`bound` > 0).
    mutating func next(below bound: UInt64) -> UInt64 {
        precondition(bound > 0)
        var product = next().multipliedFullWidth(by: bound)
        if product.low < bound {
            let threshold = (0 &- bound) % bound
            while product.low < threshold { product = next().multipliedFullWidth(by: bound) }
        }
        return product.high
    }
}
