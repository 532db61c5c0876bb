@testable import LivecopyCommands
import LivecopyModel
import Testing

/// What a disk's progress line prints, on a terminal and elsewhere.
@Suite struct ProgressLineTests {
    static let sample = ProgressLine(
        label: "web01/drive0", state: .streaming, fraction: 0.42,
        bytesCopied: 1288490188, bytesToCopy: 4 << 30, rate: 32 * 1048576, timeLeft: .seconds(62))

    @Test func theBarShowsPercentBytesRateAndETA() {
        #expect(Self.sample.bar
            == "web01/drive0       [############------------------]  42.0%  1.2 GiB of 4.0 GiB  32.0 MiB/s  ETA 1m02s")
    }

    @Test func thePlainLineSaysTheSame() {
        #expect(Self.sample.plain == "web01/drive0: streaming 42.0% (1.2 GiB of 4.0 GiB, 32.0 MiB/s, ETA 1m02s)")
    }

    @Test func anUnknownRateOrETAIsDashes() {
        var line = Self.sample
        line.rate = nil
        line.timeLeft = nil
        #expect(line.plain == "web01/drive0: streaming 42.0% (1.2 GiB of 4.0 GiB, --/s, ETA --)")
    }

    @Test(arguments: [
        (Duration.zero, "0s"), (.milliseconds(400), "0s"), (.milliseconds(700), "1s"), (.seconds(42), "42s"),
        (.milliseconds(59_499), "59s"), (.milliseconds(59_500), "1m00s"), (.seconds(62), "1m02s"),
        (.seconds(3599), "59m59s"), (.seconds(3600 * 3 + 7 * 60 + 5), "3h07m"),
    ])
    func theETAIsReadable(timeLeft: Duration, text: String) {
        var line = Self.sample
        line.timeLeft = timeLeft
        #expect(line.etaText == text)
    }

    @Test func fractionsOutsideTheBarAreClamped() {
        var line = Self.sample
        for fraction in [-1, .nan, .infinity, 2.5] {
            line.fraction = fraction
            #expect(line.bar.contains("["), "\(fraction)")
        }
        line.fraction = 2
        #expect(line.plain.contains("100.0%"))
    }
}
