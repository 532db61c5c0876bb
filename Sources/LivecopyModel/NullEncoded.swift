// An optional that a JSON document always carries, as `null` when absent.

/// An optional value that JSON documents always carry: `null` when absent, never left
/// out. Synthesized `Codable` leaves a nil optional out, while the documents livecopy
/// prints (`PlanDocument`, `validate --json`, a hook's stdin) promise every key. A key
/// left out of a document being read reads as nil.
@propertyWrapper
public struct NullEncoded<Value: Codable & Equatable>: Codable, Equatable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) {
        self.wrappedValue = wrappedValue
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        wrappedValue = container.decodeNil() ? nil : try container.decode(Value.self)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue {
            try container.encode(wrappedValue)
        } else {
            try container.encodeNil()
        }
    }
}

extension NullEncoded: Sendable where Value: Sendable {}

extension KeyedDecodingContainer {
    /// A `NullEncoded` key left out of the document reads as nil.
    public func decode<Value>(_ type: NullEncoded<Value>.Type, forKey key: Key) throws -> NullEncoded<Value> {
        try decodeIfPresent(type, forKey: key) ?? NullEncoded(wrappedValue: nil)
    }
}
