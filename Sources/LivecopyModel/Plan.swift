import Foundation

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
/// ```
public struct Plan: Sendable, Equatable {
    /// One VM of a plan, reached through a QMP monitor reserved for livecopy.
    public struct VM: Sendable, Equatable {
        public var name: String
        /// Path of the VM's QMP UNIX socket.
        public var qmp: String
        public var disks: [Disk]

        public init(name: String, qmp: String, disks: [Disk]) {
            self.name = name
            self.qmp = qmp
            self.disks = disks
        }
    }

    /// One disk to move: a QEMU block device and the qcow2 image it moves to.
    public struct Disk: Sendable, Equatable {
        /// `query-block` device name, qdev id or node name.
        public var device: String
        /// Absolute path of the new qcow2 image; it must not exist yet.
        public var destination: String

        public init(device: String, destination: String) {
            self.device = device
            self.destination = destination
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
            let members = try vmNode.mapping(allowed: ["name", "qmp", "disks"])
            guard let name = try members["name"]?.string() else { throw vmNode.fail("has no 'name'") }
            guard let qmpNode = members["qmp"] else { throw vmNode.fail("(VM '\(name)') has no 'qmp' socket path") }
            let qmp = try qmpNode.string()
            guard qmp.hasPrefix("/") else { throw qmpNode.fail("must be an absolute path, not '\(qmp)'") }
            guard let disksNode = members["disks"] else { throw vmNode.fail("(VM '\(name)') has no 'disks' list") }
            let diskNodes = try disksNode.sequence()
            guard !diskNodes.isEmpty else { throw disksNode.fail("(VM '\(name)') lists no disks") }
            var disks: [Disk] = []
            for diskNode in diskNodes {
                let fields = try diskNode.mapping(allowed: ["device", "destination"])
                guard let device = try fields["device"]?.string() else { throw diskNode.fail("has no 'device'") }
                guard let destinationNode = fields["destination"] else {
                    throw diskNode.fail("(device '\(device)') has no 'destination'")
                }
                let destination = try destinationNode.string()
                guard destination.hasPrefix("/") else {
                    throw destinationNode.fail("must be an absolute path, not '\(destination)'")
                }
                disks.append(Disk(device: device, destination: normalize(destination)))
            }
            vms.append(VM(name: name, qmp: qmp, disks: disks))
        }

        let plan = Plan(name: try top["name"]?.string(), policyReference: try top["policy"]?.string(), vms: vms)
        try plan.checkDuplicates(source: source)
        return plan
    }

    /// Two VMs with one name or one socket, one device twice, or one destination twice.
    func checkDuplicates(source: String) throws {
        var names = Set<String>(), sockets = Set<String>(), destinations = Set<String>()
        for vm in vms {
            guard names.insert(vm.name).inserted else { throw InputError("\(source): VM '\(vm.name)' is listed twice") }
            guard sockets.insert(normalize(vm.qmp)).inserted else {
                throw InputError("\(source): QMP socket \(vm.qmp) is listed for two VMs")
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
