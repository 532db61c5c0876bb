// The one error of the data comparison (verified retirement, issue 16).

import LivecopyModel

/// Why a comparison of a copy's source and destination could not be made or finished:
/// an NBD connection, a `qemu-nbd` or a `qemu-img map` that failed. One line, naming the
/// socket, image or export and what failed (line breaks in quoted text, a server's
/// message or a program's stderr, are escaped). A difference in the data is no error:
/// it is a `ComparisonResult` with mismatches.
struct VerificationError: Error, CustomStringConvertible, Sendable {
    let description: String

    init(description: String) {
        self.description = InputError.escapingLineBreaks(description)
    }

    init(_ description: String) {
        self.init(description: description)
    }
}
