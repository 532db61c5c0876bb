/// SplitMix64: a tiny deterministic random number generator, so a random schedule or
/// random bytes can be replayed from a seed.
///
/// For the integration tests that draw a few random values around real processes (the
/// SIGKILL moments of `RecoveryIntegrationTests`, the junk pages of `DatabaseFaultTests`);
/// use it with the standard library's `random(in:using:)`, `randomElement(using:)` and
/// friends. Generated inputs for properties come from PropertyBased instead (see the
/// fuzz tests).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
