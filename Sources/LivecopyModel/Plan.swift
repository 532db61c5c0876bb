import Foundation
import LivecopyBackend

/// A copy plan as an operator writes it: which disks of which VMs go where.
///
/// ```yaml
/// name: evacuate-array-3
/// policy: default
/// vms:
///   - name: web01
///     qmp: /run/livecopy/web01.qmp
///     disks:
///       - device: drive0
///         destination: /srv/new/web01-root.qcow2
///   - name: db01
///     libvirt: {uri: "qemu:///system", domain: db01}
///     disks:
///       - device: vda
///         destination: /srv/new/db01-root.qcow2
/// ```
public struct Plan: Sendable, Equatable {
    /// One VM of a plan, reached through a QMP monitor reserved for livecopy or through
    /// libvirt.
    public struct VM: Sendable, Equatable {
        public var name: String
        /// Where the VM is reached: the path of livecopy's QMP socket (`qmp:`), or a
        /// libvirt domain (`libvirt:`).
        public var address: VMAddress
        public var disks: [Disk]
        /// Fleet mode: the host whose agent drives this VM (`host:`); nil in a single-host plan.
        public var host: String?

        public init(name: String, address: VMAddress, disks: [Disk], host: String? = nil) {
            self.host = host
            self.name = name
            self.address = address
            self.disks = disks
        }
    }

    /// One disk to move: a block device of the VM and the image it moves to.
    public struct Disk: Sendable, Equatable {
        /// QMP: the `query-block` device name, qdev id or node name. libvirt: the disk's
        /// target (`vda`) or its source path.
        public var device: String
        /// Absolute path of the new image, which must not exist yet; or, with the mirror
        /// strategy, of a block device that exists already.
        public var destination: String
        /// The destination's format as written (`format:`); nil: qcow2 for a file, raw for a
        /// block device. Anything but qcow2 needs the mirror strategy.
        public var format: DestinationFormat?

        public init(device: String, destination: String, format: DestinationFormat? = nil) {
            self.device = device
            self.destination = destination
            self.format = format
        }

        /// The format written, or the default: raw for a block device, qcow2 otherwise.
        public var resolvedFormat: DestinationFormat {
            format ?? (isBlockDevice(destination) ? .raw : .qcow2)
        }
    }

    /// An optional label.
    public var name: String?
    /// The `policy:` value as written (nil: `default`).
    public var policyReference: String?
    public var vms: [VM]

    public init(name: String?, policyReference: String?, vms: [VM]) {
        self.name = name
        self.policyReference = policyReference
        self.vms = vms
    }

    /// The libvirt URI of a `libvirt:` VM that names none.
    public static let defaultLibvirtURI = "qemu:///system"

    /// Every disk with its VM, in plan order.
    public var allDisks: [(vm: VM, disk: Disk)] {
        vms.flatMap { vm in vm.disks.map { (vm, $0) } }
    }
}

extension Plan {
    /// Reads and parses a plan file (YAML or JSON).
    public static func load(path: String) throws -> Plan {
        let text = try readTextFile(path, what: "plan file")
        return try parse(text, source: path)
    }

    /// Parses a plan strictly: unknown keys, missing keys, empty lists, relative paths
    /// and duplicates are `InputError`s naming the place.
    public static func parse(_ text: String, source: String) throws -> Plan {
        let document = try StrictYAML.parse(text, source: source)
        let top = try document.mapping(allowed: ["name", "policy", "vms"])
        guard let vmsNode = top["vms"] else { throw document.fail("has no 'vms' list") }
        let vmNodes = try vmsNode.sequence()
        guard !vmNodes.isEmpty else { throw vmsNode.fail("lists no VMs") }

        var vms: [VM] = []
        for vmNode in vmNodes {
            let members = try vmNode.mapping(allowed: ["name", "host", "qmp", "libvirt", "disks"])
            guard let name = try members["name"]?.string() else { throw vmNode.fail("has no 'name'") }
            let host = try members["host"].map { node in
                let host = try node.string()
                guard Self.isHostName(host) else {
                    throw node.fail("has invalid value '\(host)' (expected a host name: letters, digits, '.', '-' and '_')")
                }
                return host
            }
            let address = try address(of: vmNode, members, name: name)
            guard let disksNode = members["disks"] else { throw vmNode.fail("(VM '\(name)') has no 'disks' list") }
            let diskNodes = try disksNode.sequence()
            guard !diskNodes.isEmpty else { throw disksNode.fail("(VM '\(name)') lists no disks") }
            var disks: [Disk] = []
            for diskNode in diskNodes {
                let fields = try diskNode.mapping(allowed: ["device", "destination", "format"])
                guard let device = try fields["device"]?.string() else { throw diskNode.fail("has no 'device'") }
                guard let destinationNode = fields["destination"] else {
                    throw diskNode.fail("(device '\(device)') has no 'destination'")
                }
                let destination = try destinationNode.string()
                guard destination.hasPrefix("/") else {
                    throw destinationNode.fail("must be an absolute path, not '\(destination)'")
                }
                let format = try fields["format"]?.choice(DestinationFormat.self)
                disks.append(Disk(device: device, destination: normalize(destination), format: format))
            }
            vms.append(VM(name: name, address: address, disks: disks, host: host))
        }

        let plan = Plan(name: try top["name"]?.string(), policyReference: try top["policy"]?.string(), vms: vms)
        try plan.checkDuplicates(source: source)
        return plan
    }

    /// A host name as `host:` and `livecopy agent --host` take it: 1 to 253 letters, digits, '.', '-', '_'.
    public static func isHostName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 253
            && name.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || ".-_".unicodeScalars.contains($0) }
    }

    /// Fleet mode: the plan split by `host:`, one plan per host in the order the hosts first
    /// appear, each with the same name and policy. nil when some VM names no host (or none does).
    public var byHost: [(host: String, plan: Plan)]? {
        var order: [String] = []
        var vmsOf: [String: [VM]] = [:]
        for vm in vms {
            guard let host = vm.host else { return nil }
            if vmsOf[host] == nil { order.append(host) }
            vmsOf[host, default: []].append(vm)
        }
        return order.map { host in (host, Plan(name: name, policyReference: policyReference, vms: vmsOf[host] ?? [])) }
    }

    /// The VM's address: its `qmp:` socket (an absolute path) or its `libvirt:` domain
    /// (`uri`, by default `qemu:///system`, and `domain`), exactly one of them.
    private static func address(of vmNode: StrictYAML, _ members: [String: StrictYAML], name: String) throws -> VMAddress {
        switch (members["qmp"], members["libvirt"]) {
        case (let qmpNode?, nil):
            let socket = try qmpNode.string()
            guard socket.hasPrefix("/") else { throw qmpNode.fail("must be an absolute path, not '\(socket)'") }
            return .qmp(socket: socket)
        case (nil, let libvirtNode?):
            let fields = try libvirtNode.mapping(allowed: ["uri", "domain"])
            guard let domain = try fields["domain"]?.stringWithoutControlCharacters() else {
                throw libvirtNode.fail("(VM '\(name)') has no 'domain'")
            }
            guard let uriNode = fields["uri"] else { return .libvirt(uri: defaultLibvirtURI, domain: domain) }
            let uri = try uriNode.stringWithoutControlCharacters()
            // The stored address ends the URI at its first '#' (VMAddress); libvirt URIs have no fragment.
            guard !uri.unicodeScalars.contains("#") else {
                throw uriNode.fail("has invalid value '\(uri)' (expected a libvirt URI, with no '#', such as \(defaultLibvirtURI))")
            }
            return .libvirt(uri: uri, domain: domain)
        case (.some, .some):
            throw vmNode.fail("(VM '\(name)') has both 'qmp' and 'libvirt'; name one")
        case (nil, nil):
            throw vmNode.fail("(VM '\(name)') has neither 'qmp' nor 'libvirt'; name one")
        }
    }

    /// Two VMs with one name or one address, one device twice, or one destination twice.
    func checkDuplicates(source: String) throws {
        var names = Set<String>(), addresses = Set<VMAddress>(), destinations = Set<String>()
        for vm in vms {
            guard names.insert(vm.name).inserted else { throw InputError("\(source): VM '\(vm.name)' is listed twice") }
            guard addresses.insert(vm.address.identity).inserted else {
                throw InputError("\(source): \(vm.address) is listed for two VMs")
            }
            var devices = Set<String>()
            for disk in vm.disks {
                guard devices.insert(disk.device).inserted else {
                    throw InputError("\(source): VM '\(vm.name)' lists device '\(disk.device)' twice")
                }
                guard destinations.insert(disk.destination).inserted else {
                    throw InputError("\(source): destination \(disk.destination) is claimed by two disks")
                }
            }
        }
    }
}

extension VMAddress {
    /// What two VMs of a plan must not share: the socket's path normalized, or the libvirt
    /// URI and domain as written.
    var identity: VMAddress {
        switch self {
        case .qmp(let socket): return .qmp(socket: normalize(socket))
        case .libvirt: return self
        }
    }
}

/// Removes `.`/`..` components and duplicate slashes from an absolute path, without
/// touching the file system (symlinks are judged separately, at preflight).
public func normalize(_ path: String) -> String {
    var parts: [Substring] = []
    for part in path.split(separator: "/", omittingEmptySubsequences: true) {
        switch part {
        case ".": continue
        case "..": if !parts.isEmpty { parts.removeLast() }
        default: parts.append(part)
        }
    }
    return "/" + parts.joined(separator: "/")
}

/// Whether `path` (following links: LVM names its volumes by symlinks) is a block device.
public func isBlockDevice(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFBLK
}
