import LivecopyBackend
import LivecopyModel
import Testing

struct PlanParsingTests {
    static let valid = """
        name: evacuate-array-3
        policy: default
        vms:
          - name: web01
            qmp: /run/livecopy/web01.qmp
            disks:
              - device: drive0
                destination: /srv/new/web01-root.qcow2
              - device: drive1
                destination: /srv/new/./web01-data.qcow2
          - name: db01
            qmp: /run/livecopy/db01.qmp
            disks:
              - device: virtio0
                destination: /srv/new/db01.qcow2
        """

    @Test func parsesAValidPlan() throws {
        let plan = try Plan.parse(Self.valid, source: "plan.yaml")
        #expect(plan.name == "evacuate-array-3")
        #expect(plan.policyReference == "default")
        #expect(plan.vms.map(\.name) == ["web01", "db01"])
        #expect(plan.vms[0].address == .qmp(socket: "/run/livecopy/web01.qmp"))
        #expect(plan.allDisks.map(\.disk.device) == ["drive0", "drive1", "virtio0"])
        #expect(plan.vms[0].disks[1].destination == "/srv/new/web01-data.qcow2")
    }

    @Test func acceptsJSON() throws {
        let json = #"{"vms": [{"name": "a", "qmp": "/q.sock", "disks": [{"device": "d", "destination": "/x.qcow2"}]}]}"#
        let plan = try Plan.parse(json, source: "plan.json")
        #expect(plan.name == nil)
        #expect(plan.policyReference == nil)
        #expect(plan.allDisks.count == 1)
    }

    /// QMP and libvirt VMs in one plan: the URI defaults to qemu:///system; a libvirt
    /// disk's device is its target or its source path, taken as written.
    @Test func parsesAMixedPlan() throws {
        let text = """
            vms:
              - name: web01
                libvirt: {uri: "qemu:///system", domain: web01}
                disks:
                  - device: vda
                    destination: /srv/new/web01-root.qcow2
                  - device: /srv/old/web01-data.qcow2
                    destination: /srv/new/web01-data.qcow2
              - name: db01
                libvirt:
                  domain: "db#01"
                disks:
                  - device: vda
                    destination: /srv/new/db01.qcow2
              - name: remote
                libvirt: {uri: "qemu+ssh://root@host2/system", domain: web01}
                disks:
                  - device: sda
                    destination: /srv/new/remote.qcow2
              - name: legacy
                qmp: /run/livecopy/legacy.qmp
                disks:
                  - device: drive0
                    destination: /srv/new/legacy.qcow2
            """
        let plan = try Plan.parse(text, source: "plan.yaml")
        #expect(plan.vms.map(\.address) == [
            .libvirt(uri: "qemu:///system", domain: "web01"),
            .libvirt(uri: Plan.defaultLibvirtURI, domain: "db#01"),
            .libvirt(uri: "qemu+ssh://root@host2/system", domain: "web01"),
            .qmp(socket: "/run/livecopy/legacy.qmp"),
        ])
        #expect(Plan.defaultLibvirtURI == "qemu:///system")
        #expect(plan.vms[0].disks.map(\.device) == ["vda", "/srv/old/web01-data.qcow2"])
        let json = #"{"vms": [{"name": "a", "libvirt": {"domain": "a"}, "disks": [{"device": "vda", "destination": "/x.qcow2"}]}]}"#
        #expect(try Plan.parse(json, source: "plan.json").vms[0].address == .libvirt(uri: "qemu:///system", domain: "a"))
    }

    /// Each bad VM address and its whole one-line error.
    @Test(arguments: [
        ("    qmp: /q\n    libvirt: {domain: a}\n", "plan.yaml:2: 'vms[0]' (VM 'a') has both 'qmp' and 'libvirt'; name one"),
        ("", "plan.yaml:2: 'vms[0]' (VM 'a') has neither 'qmp' nor 'libvirt'; name one"),
        ("    libvirt: {uri: 'qemu:///system'}\n", "plan.yaml:3: 'vms[0].libvirt' (VM 'a') has no 'domain'"),
        ("    libvirt: {domain: a, host: h}\n",
         "plan.yaml:3: unknown key 'host' in 'vms[0].libvirt' (allowed: domain, uri)"),
        ("    libvirt: {domain: ''}\n", "plan.yaml:3: 'vms[0].libvirt.domain' must not be empty"),
        ("    libvirt: {domain: \"a\\tb\"}\n", "plan.yaml:3: 'vms[0].libvirt.domain' must not contain control characters"),
        ("    libvirt: {domain: \"a\\nb\"}\n", "plan.yaml:3: 'vms[0].libvirt.domain' must not contain control characters"),
        ("    libvirt: {uri: '', domain: a}\n", "plan.yaml:3: 'vms[0].libvirt.uri' must not be empty"),
        ("    libvirt: {uri: 'qemu:///system#x', domain: a}\n",
         "plan.yaml:3: 'vms[0].libvirt.uri' has invalid value 'qemu:///system#x' (expected a libvirt URI, with no '#', such as qemu:///system)"),
        ("    libvirt: qemu:///system\n", "plan.yaml:3: 'vms[0].libvirt' must be a mapping"),
        ("    libvirt: {domain: [a]}\n", "plan.yaml:3: 'vms[0].libvirt.domain' must be a string"),
    ])
    func refusesBadVMAddresses(address: String, message: String) {
        let text = "vms:\n  - name: a\n\(address)    disks:\n      - device: vda\n        destination: /x.qcow2\n"
        #expect(throws: InputError(message)) { try Plan.parse(text, source: "plan.yaml") }
    }

    @Test func aDiskMayNameItsDestinationFormat() throws {
        let text = "vms:\n  - name: a\n    qmp: /q\n    disks:\n      - {device: vda, destination: /x.raw, format: raw}\n      - {device: vdb, destination: /y.qcow2}\n"
        let plan = try Plan.parse(text, source: "plan.yaml")
        #expect(plan.vms[0].disks.map(\.format) == [.raw, nil])
        #expect(plan.vms[0].disks.map(\.resolvedFormat) == [.raw, .qcow2])
        #expect(throws: InputError("plan.yaml:5: 'vms[0].disks[0].format' has invalid value 'vmdk' (expected qcow2 | raw)")) {
            try Plan.parse(text.replacingOccurrences(of: "format: raw", with: "format: vmdk"), source: "plan.yaml")
        }
    }

    /// Two VMs at one address: the same socket (however spelled), or the same URI and domain.
    @Test(arguments: [
        ("qmp: /run/q", "qmp: /run/./q", "plan.yaml: QMP socket /run/./q is listed for two VMs"),
        ("libvirt: {domain: web01}", "libvirt: {uri: 'qemu:///system', domain: web01}",
         "plan.yaml: libvirt domain web01 (qemu:///system) is listed for two VMs"),
    ])
    func refusesTwoVMsAtOneAddress(first: String, second: String, message: String) {
        let text = """
            vms:
              - {name: a, \(first), disks: [{device: vda, destination: /x.qcow2}]}
              - {name: b, \(second), disks: [{device: vda, destination: /y.qcow2}]}
            """
        #expect(throws: InputError(message)) { try Plan.parse(text, source: "plan.yaml") }
    }

    /// One domain name under two URIs (two hosts), or a domain and a socket of the same
    /// name, are two VMs.
    @Test func acceptsOneDomainNameUnderTwoURIs() throws {
        let text = """
            vms:
              - {name: a, libvirt: {domain: web01}, disks: [{device: vda, destination: /x.qcow2}]}
              - {name: b, libvirt: {uri: 'qemu+ssh://h2/system', domain: web01}, disks: [{device: vda, destination: /y.qcow2}]}
              - {name: c, qmp: /web01, disks: [{device: vda, destination: /z.qcow2}]}
            """
        #expect(try Plan.parse(text, source: "plan.yaml").vms.count == 3)
    }

    /// Each bad plan and a fragment its one-line error must contain.
    @Test(arguments: [
        ("", "empty"),
        ("vms: [", "not valid YAML"),
        ("- a\n- b", "must be a mapping"),
        ("name: x", "no 'vms'"),
        ("vms: []", "lists no VMs"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks: []", "lists no disks"),
        ("vmz: []", "unknown key 'vmz'"),
        ("vms:\n  - name: a\n    qmp: /q\n    color: red\n    disks: []", "unknown key 'color'"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: /x\n        size: 1G", "unknown key 'size'"),
        ("vms:\n  - name: a\n    qmp: q.sock\n    disks:\n      - device: d\n        destination: /x", "must be an absolute path"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: x.qcow2", "must be an absolute path"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d", "no 'destination'"),
        ("vms:\n  - qmp: /q\n    disks:\n      - device: d\n        destination: /x", "no 'name'"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: /x\n      - device: d\n        destination: /y", "device 'd' twice"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: /x\n  - name: b\n    qmp: /r\n    disks:\n      - device: e\n        destination: /x", "claimed by two disks"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: /x\n  - name: a\n    qmp: /r\n    disks:\n      - device: e\n        destination: /y", "listed twice"),
        ("vms:\n  - name: a\n    qmp: /q\n    disks:\n      - device: d\n        destination: /x\n  - name: b\n    qmp: /q\n    disks:\n      - device: e\n        destination: /y", "listed for two VMs"),
        ("vms:\n  - name: [1]\n    qmp: /q\n    disks: []", "must be a string"),
        ("vms: {a: 1}", "must be a list"),
    ])
    func refusesBadPlans(text: String, fragment: String) {
        do {
            _ = try Plan.parse(text, source: "plan.yaml")
            Issue.record("accepted a bad plan; expected an error containing '\(fragment)'")
        } catch let error as InputError {
            #expect(error.message.contains(fragment), "\(error.message)")
            #expect(error.message.contains("plan.yaml"), "\(error.message)")
            #expect(!error.message.contains("\n"), "one line: \(error.message)")
        } catch {
            Issue.record("unexpected error type: \(error)")
        }
    }

    @Test func missingPlanFileIsOneLine() {
        #expect(throws: InputError("plan file /nonexistent/plan.yaml does not exist")) {
            try Plan.load(path: "/nonexistent/plan.yaml")
        }
    }

    @Test func normalizesPaths() {
        #expect(normalize("/a/./b//c/../d") == "/a/b/d")
        #expect(normalize("/../x") == "/x")
    }
}
