// The numbers of the NBD protocol that `NBDReader` uses (doc/proto.md of the NBD project).

/// Magic numbers, option, reply, info and command codes, and flags of the NBD protocol,
/// as far as a read-only client with simple replies needs them. All travel big-endian.
enum NBDProtocol {
    // Handshake.
    /// "NBDMAGIC": the server's first 8 bytes.
    static let initialMagic: UInt64 = 0x4E42_444D_4147_4943
    /// "IHAVEOPT": newstyle negotiation follows; also the prefix of each option the client sends.
    static let optionMagic: UInt64 = 0x4948_4156_454F_5054
    /// The oldstyle protocol's second magic (no options), which this client refuses.
    static let oldstyleMagic: UInt64 = 0x0000_4202_8186_1253
    /// Prefix of each option reply.
    static let optionReplyMagic: UInt64 = 0x0003_E889_0455_65A9

    /// Handshake flags (server) and client flags: bit 0 fixed newstyle, bit 1 no zeroes.
    static let flagFixedNewstyle: UInt16 = 1 << 0
    static let flagNoZeroes: UInt16 = 1 << 1

    /// NBD_OPT_GO: select an export and enter transmission.
    static let optionGo: UInt32 = 7
    /// Option replies.
    static let replyAck: UInt32 = 1
    static let replyInfo: UInt32 = 3
    /// Error replies have this bit set.
    static let replyErrorBit: UInt32 = 1 << 31
    /// Info types inside NBD_REP_INFO.
    static let infoExport: UInt16 = 0
    static let infoBlockSize: UInt16 = 3
    /// The longest export name the protocol allows.
    static let longestExportName = 4096

    /// Transmission flags: bit 0 says the others are meaningful; bit 1 read-only.
    static let transmissionHasFlags: UInt16 = 1 << 0
    static let transmissionReadOnly: UInt16 = 1 << 1

    // Transmission.
    static let requestMagic: UInt32 = 0x2560_9513
    static let simpleReplyMagic: UInt32 = 0x6744_6698
    static let structuredReplyMagic: UInt32 = 0x668E_33EF
    static let commandRead: UInt16 = 0
    static let commandDisconnect: UInt16 = 2
    /// A request's size on the wire: magic, flags, type, handle, offset, length.
    static let requestSize = 28
    /// A simple reply's header: magic, error, handle.
    static let simpleReplySize = 16

    /// An NBD_REP_ERR_* reply in words.
    static func optionErrorName(_ type: UInt32) -> String {
        switch type & ~replyErrorBit {
        case 1: return "NBD_REP_ERR_UNSUP (the option is not supported)"
        case 2: return "NBD_REP_ERR_POLICY (refused by the server's policy)"
        case 3: return "NBD_REP_ERR_INVALID (invalid option)"
        case 4: return "NBD_REP_ERR_PLATFORM (not supported on the server's platform)"
        case 5: return "NBD_REP_ERR_TLS_REQD (the server requires TLS)"
        case 6: return "NBD_REP_ERR_UNKNOWN (no such export)"
        case 7: return "NBD_REP_ERR_SHUTDOWN (the server is shutting down)"
        case 8: return "NBD_REP_ERR_BLOCK_SIZE_REQD (the server requires block size negotiation)"
        case 9: return "NBD_REP_ERR_TOO_BIG (request too big)"
        case 10: return "NBD_REP_ERR_EXT_HEADER_REQD (the server requires extended headers)"
        case let other: return "error reply \(other) (0x\(String(type, radix: 16)))"
        }
    }

    /// An error value of a simple reply in words (the protocol's own errno numbers).
    static func transmissionErrorName(_ error: UInt32) -> String {
        switch error {
        case 1: return "EPERM"
        case 5: return "EIO"
        case 12: return "ENOMEM"
        case 22: return "EINVAL"
        case 28: return "ENOSPC"
        case 75: return "EOVERFLOW"
        case 95: return "ENOTSUP"
        case 108: return "ESHUTDOWN"
        case let other: return "error \(other)"
        }
    }
}
