import Foundation
import LivecopyBackend
import QMP
import QMPBackend
import TestSupport
import Testing

/// The QMP backend checks at connect what it needs of QEMU (`query-version`,
/// `query-commands`) and refuses, in one line naming what is missing, before sending
/// anything else.
@Suite struct QMPConnectChecksTests {
    /// Connects through the QMP backend to a fake QEMU answering `version` and offering
    /// `commands`; returns the error and the commands the peer received.
    static func connect(version: JSONValue, commands: [String]) async throws -> (BackendError?, [String]) {
        let peer = try await FakeQMPPeer.start { name, _, _ in
            switch name {
            case "query-version": return .return(version)
            case "query-commands": return .return(.array(commands.map { ["name": .string($0)] }))
            default: return nil
            }
        }
        defer { peer.stop() }
        var failure: BackendError?
        do {
            let session = try await QMPHypervisor().connect(to: peer.socketPath, commandTimeout: 5)
            await session.close()
        } catch let error as BackendError {
            failure = error
        }
        return (failure, peer.receivedCommands.map(\.name))
    }

    static func version(_ major: Int64, _ minor: Int64) -> JSONValue {
        ["qemu": ["major": .int(major), "minor": .int(minor), "micro": 0], "package": ""]
    }

    @Test func qemu72WithEveryCommandIsAccepted() async throws {
        let (error, sent) = try await Self.connect(version: Self.version(7, 2), commands: FakeQMPPeer.qemu72Commands)
        #expect(error == nil, "\(String(describing: error))")
        #expect(sent == ["qmp_capabilities", "query-version", "query-commands"])
    }

    @Test func aQEMUTooOldIsRefusedByName() async throws {
        let (error, sent) = try await Self.connect(version: Self.version(2, 12), commands: FakeQMPPeer.qemu72Commands)
        let refusal = try #require(error)
        #expect(refusal.kind == .unsupported)
        #expect(refusal.description.contains("QEMU 2.12.0 at "), "\(refusal)")
        #expect(refusal.description.contains("is too old: livecopy needs QEMU 3.0 or newer (tested with 7.2)"), "\(refusal)")
        #expect(!refusal.description.contains("\n"))
        #expect(!sent.contains("query-commands"), "refused on the version alone")
    }

    @Test func aMissingCommandIsNamed() async throws {
        let offered = FakeQMPPeer.qemu72Commands.filter { $0 != "job-finalize" && $0 != "human-monitor-command" }
        let (error, sent) = try await Self.connect(version: Self.version(7, 2), commands: offered)
        let refusal = try #require(error)
        #expect(refusal.kind == .unsupported)
        #expect(refusal.description.contains("lacks the QMP command(s) job-finalize, human-monitor-command that livecopy needs"), "\(refusal)")
        #expect(sent == ["qmp_capabilities", "query-version", "query-commands"], "nothing else was sent")
    }

    @Test func aVersionThatIsNoVersionIsRefused() async throws {
        let (error, _) = try await Self.connect(version: ["qemu": "seven"], commands: FakeQMPPeer.qemu72Commands)
        #expect(error?.kind == .unsupported)
        #expect(error?.description.contains("not a QEMU version") == true, "\(String(describing: error))")
    }
}
