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
        #expect(plan.vms[0].qmp == "/run/livecopy/web01.qmp")
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
