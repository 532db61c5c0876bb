/// Where a VM is reached: QEMU's QMP monitor socket, or a libvirt domain.
///
/// The database stores it as one string (`stored`), which the engine hands to
/// `Hypervisor.connect(to:)` as it is:
///
/// | address | stored |
/// |---|---|
/// | `.qmp(socket: "/run/livecopy/web01.qmp")` | `/run/livecopy/web01.qmp` (the path itself, as every release stored it) |
/// | `.libvirt(uri: "qemu:///system", domain: "web01")` | `libvirt:qemu:///system#web01` |
///
/// A libvirt address is split at the first `#` after `libvirt:`: libvirt URIs carry no
/// fragment, and a domain name may contain `#`. So a URI with a `#` has no stored form
/// that reads back (plans refuse one). The stored form is read by Unicode scalars, not
/// characters: a `/` or a `#` followed by a combining mark is still one.
public enum VMAddress: Sendable, Hashable, CustomStringConvertible {
    /// The absolute path of a QMP monitor's UNIX socket reserved for livecopy.
    case qmp(socket: String)
    /// A domain of the libvirt daemon at `uri` (`qemu:///system`).
    case libvirt(uri: String, domain: String)

    /// The prefix of a libvirt address's stored form.
    static let libvirtPrefix = "libvirt:"

    /// Reads a stored address: one starting with `/` is a QMP socket, one starting with
    /// `libvirt:` a libvirt domain; anything else throws `InvalidVMAddress`.
    public init(stored: String) throws(InvalidVMAddress) {
        let scalars = stored.unicodeScalars
        if scalars.first == "/" {
            self = .qmp(socket: stored)
            return
        }
        guard scalars.starts(with: Self.libvirtPrefix.unicodeScalars) else {
            throw InvalidVMAddress(stored: stored, problem: "it is neither a QMP socket path (starting with '/') nor libvirt:<uri>#<domain>")
        }
        let rest = scalars.dropFirst(Self.libvirtPrefix.unicodeScalars.count)
        guard let hash = rest.firstIndex(of: "#") else {
            throw InvalidVMAddress(stored: stored, problem: "a libvirt address names its domain after a '#' (libvirt:<uri>#<domain>)")
        }
        let uri = rest[..<hash], domain = rest[rest.index(after: hash)...]
        guard !uri.isEmpty, !domain.isEmpty else {
            throw InvalidVMAddress(stored: stored, problem: "a libvirt address needs a URI and a domain (libvirt:<uri>#<domain>)")
        }
        self = .libvirt(uri: String(Substring(uri)), domain: String(Substring(domain)))
    }

    /// The form the database stores and `Hypervisor.connect(to:)` takes.
    public var stored: String {
        switch self {
        case .qmp(let socket): return socket
        case .libvirt(let uri, let domain): return "\(Self.libvirtPrefix)\(uri)#\(domain)"
        }
    }

    /// For people: `QMP socket /run/x.qmp`, `libvirt domain web01 (qemu:///system)`.
    public var description: String {
        switch self {
        case .qmp(let socket): return "QMP socket \(socket)"
        case .libvirt(let uri, let domain): return "libvirt domain \(domain) (\(uri))"
        }
    }

    /// `description` of the address stored as `stored`, or `stored` itself when it does
    /// not read as one (a database written by hand, a test's made-up address).
    public static func describe(stored: String) -> String {
        (try? VMAddress(stored: stored))?.description ?? stored
    }
}

/// A stored VM address that `VMAddress(stored:)` cannot read.
public struct InvalidVMAddress: Error, Sendable, Hashable, CustomStringConvertible {
    /// The string as stored.
    public let stored: String
    /// What is wrong with it.
    public let problem: String

    public var description: String { "'\(stored)' is not a VM address: \(problem)" }
}
