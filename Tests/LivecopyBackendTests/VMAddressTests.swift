import LivecopyBackend
import PropertyBased
import Testing

/// `VMAddress`'s stored form (what the database holds) and its form for people.
struct VMAddressTests {
    /// Each address, its stored form and its description.
    @Test(arguments: [
        (VMAddress.qmp(socket: "/run/livecopy/web01.qmp"), "/run/livecopy/web01.qmp", "QMP socket /run/livecopy/web01.qmp"),
        (.libvirt(uri: "qemu:///system", domain: "web01"), "libvirt:qemu:///system#web01",
         "libvirt domain web01 (qemu:///system)"),
        (.libvirt(uri: "qemu+ssh://root@h2/system?keyfile=/k", domain: "db#01"), "libvirt:qemu+ssh://root@h2/system?keyfile=/k#db#01",
         "libvirt domain db#01 (qemu+ssh://root@h2/system?keyfile=/k)"),
    ])
    func storedFormAndDescription(address: VMAddress, stored: String, description: String) throws {
        #expect(address.stored == stored)
        #expect(address.description == description)
        #expect(try VMAddress(stored: stored) == address)
        #expect(VMAddress.describe(stored: stored) == description)
    }

    /// A QMP address is stored as the socket's path and nothing else, as every release
    /// before libvirt stored it: the rows of an older database read as QMP addresses.
    @Test func aSocketPathAsEarlierReleasesStoredItIsAQMPAddress() throws {
        #expect(try VMAddress(stored: "/tmp/livecopy-fixture-0004/vm.qmp") == .qmp(socket: "/tmp/livecopy-fixture-0004/vm.qmp"))
        #expect(try VMAddress(stored: "/run/libvirt:x#y") == .qmp(socket: "/run/libvirt:x#y"))
        // Read by scalars: a '/' with a combining mark on it is still a '/'.
        #expect(try VMAddress(stored: "/\u{301}q") == .qmp(socket: "/\u{301}q"))
    }

    /// The domain starts after the first '#' that follows the prefix.
    @Test func aLibvirtAddressSplitsAtItsFirstHash() throws {
        #expect(try VMAddress(stored: "libvirt:qemu:///system##") == .libvirt(uri: "qemu:///system", domain: "#"))
        #expect(try VMAddress(stored: "libvirt:test:///default#a#b#") == .libvirt(uri: "test:///default", domain: "a#b#"))
        #expect(try VMAddress(stored: "libvirt:test:///default#\u{301}a") == .libvirt(uri: "test:///default", domain: "\u{301}a"))
    }

    /// Each string that is no address, and a fragment of its one-line error.
    @Test(arguments: [
        ("", "neither a QMP socket path"),
        ("run/web01.qmp", "neither a QMP socket path"),
        ("mem:vm", "neither a QMP socket path"),
        ("LIBVIRT:qemu:///system#web01", "neither a QMP socket path"),
        ("libvirt:", "names its domain after a '#'"),
        ("libvirt:qemu:///system", "names its domain after a '#'"),
        ("libvirt:#web01", "needs a URI and a domain"),
        ("libvirt:qemu:///system#", "needs a URI and a domain"),
    ])
    func refusesWhatIsNoAddress(stored: String, fragment: String) {
        #expect {
            try VMAddress(stored: stored)
        } throws: { error in
            let description = String(describing: error)
            return description.hasPrefix("'\(stored)' is not a VM address: ") && description.contains(fragment)
                && !description.contains("\n")
        }
        #expect(VMAddress.describe(stored: stored) == stored, "what does not read is shown as stored")
    }

    // MARK: - Properties

    /// Any QMP socket path reads back from its stored form.
    @Test func qmpAddressesRoundTrip() async {
        await propertyCheck(count: 500, input: AddressGen.text(0...40)) { tail in
            let address = VMAddress.qmp(socket: "/" + tail)
            #expect(address.stored == "/" + tail)
            #expect((try? VMAddress(stored: address.stored)) == address, "\(address.stored.debugDescription)")
        }
    }

    /// Any libvirt URI without '#' (libvirt URIs have no fragment) and any domain, '#'s
    /// and all, read back from their stored form.
    @Test func libvirtAddressesRoundTrip() async {
        await propertyCheck(count: 500, input: AddressGen.text(0...40), AddressGen.text(1...40)) { text, domain in
            let uri = "u" + String(String.UnicodeScalarView(text.unicodeScalars.filter { $0 != "#" }))
            let address = VMAddress.libvirt(uri: uri, domain: domain)
            #expect((try? VMAddress(stored: address.stored)) == address, "\(address.stored.debugDescription)")
        }
    }

    /// Whatever the string, it either reads as an address whose stored form is that very
    /// string, or is refused in one line naming it.
    @Test func everyStringIsOneAddressOrRefused() async {
        await propertyCheck(count: 1_000, input: AddressGen.prefix, AddressGen.text(0...30)) { prefix, rest in
            let stored = prefix + rest
            do {
                #expect(try VMAddress(stored: stored).stored == stored, "\(stored.debugDescription)")
            } catch {
                #expect(String(describing: error).hasPrefix("'\(stored)' is not a VM address"), "\(error)")
            }
        }
    }
}

/// Generators of the text of addresses.
enum AddressGen {
    /// One of `choices`, without shrinking.
    static func one<T: Sendable>(of choices: [T]) -> Generator<T, some SendableSequenceType> {
        Gen<T?>.element(of: choices).map { $0! }
    }

    /// What the stored form's reading turns on ('#', '/', ':', the prefix's letters),
    /// else any ASCII or a few characters beyond it.
    static let character: Generator<Character, some SendableSequenceType> = Gen<Character>.frequency(
        (3, Gen.ascii),
        (2, one(of: Array("#/:libvrt") as [Character])),
        (1, one(of: ["é", "日", "🙂", "\u{0301}", "\u{0}", "\n", "\u{85}", "\u{2028}", "\u{FEFF}"] as [Character])))

    static func text(_ count: ClosedRange<Int>) -> Generator<String, some SendableSequenceType> {
        character.string(of: count)
    }

    /// How a string may start: as each form does, nearly so, or anyhow.
    static let prefix: Generator<String, some SendableSequenceType> = one(of: [
        "", "/", "libvirt:", "libvirt:qemu:///system#", "libvirt:#", "libvirt", "Libvirt:", " /", "qmp:/",
    ])
}
