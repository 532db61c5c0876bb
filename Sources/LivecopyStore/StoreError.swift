// The store's error for database and file failures (a lost compare-and-set is
// `StoreConflict`, a plan owned elsewhere `LeaseHeld`: both in LivecopyModel's StoreErrors.swift).

/// A one-line error about the database, for the operator.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
