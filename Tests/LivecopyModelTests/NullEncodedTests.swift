import Foundation
import LivecopyModel
import Testing

/// The JSON documents keep every key: an absent value is `null`, never left out; a key
/// left out of a document read back reads as nil.
struct NullEncodedTests {
    @Test func aPlanDocumentWritesEveryKeyAndReadsBackWhatItWrote() throws {
        let plan = PlanRecord(id: 4, name: nil, policyReference: nil, policy: try Policy.resolve(nil), state: .pending,
                              createdAt: Date(timeIntervalSince1970: 0), finishedAt: nil, error: nil)
        let disk = DiskRecord(id: 1, planId: 4, vmName: "web01", vmAddress: "/run/web01.qmp", device: "drive0",
                              destination: "/srv/new/a.qcow2", source: nil, sourceFormat: nil, qmpDevice: nil, state: .pending,
                              bytesDone: 0, bytesTotal: 0, error: nil, intent: nil, destinationCreated: false, updatedAt: Date())
        let document = PlanDocument(plan: plan, disks: [disk])
        let data = try JSONEncoder().encode(document)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        for key in ["name", "finished_at", "error"] {
            #expect(object[key] is NSNull, "\(key): \(String(describing: object[key]))")
        }
        #expect(object["events"] == nil && object["controls"] == nil, "shown only by show and status")
        let first = try #require((object["disks"] as? [[String: Any]])?.first)
        for key in ["source", "error", "boot_image", "pending_hook"] {
            #expect(first[key] is NSNull, "disk \(key): \(String(describing: first[key]))")
        }
        #expect(try JSONDecoder().decode(PlanDocument.self, from: data) == document)
    }

    @Test func aKeyLeftOutReadsAsNil() throws {
        struct Sample: Codable, Equatable {
            @NullEncoded var note: String?
            var count: Int
        }
        #expect(try JSONDecoder().decode(Sample.self, from: Data(#"{"count": 2}"#.utf8)) == Sample(note: nil, count: 2))
        #expect(try JSONDecoder().decode(Sample.self, from: Data(#"{"count": 2, "note": "x"}"#.utf8)) == Sample(note: "x", count: 2))
        #expect(String(decoding: try JSONEncoder().encode(Sample(note: nil, count: 2)), as: UTF8.self).contains(#""note":null"#))
    }
}
