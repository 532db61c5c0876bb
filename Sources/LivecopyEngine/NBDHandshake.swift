// The NBD handshake of `NBDReader`: fixed newstyle, then NBD_OPT_GO.

/// What the server told of its export during the handshake.
struct NBDExportInfo: Sendable, Equatable {
    /// The export's size in bytes.
    let size: Int64
    /// NBD_FLAG_* transmission flags.
    let transmissionFlags: UInt16
    /// The largest request the server accepts (NBD_INFO_BLOCK_SIZE), when it said.
    let maximumBlockSize: Int?
}

/// The client's side of the fixed newstyle handshake, as the NBD protocol describes it:
/// the server's magic and handshake flags; the client flags FIXED_NEWSTYLE and (when the
/// server offers it) NO_ZEROES; one NBD_OPT_GO naming the export with no info requests;
/// the replies up to NBD_REP_ACK, with the size and transmission flags taken from
/// NBD_REP_INFO/NBD_INFO_EXPORT. An NBD_REP_ERR_* reply ends it with an error quoting the
/// server's message. Structured replies are never asked for, so the server answers
/// reads with simple replies only.
enum NBDHandshake {
    /// The longest option reply accepted (a message or an info; QEMU's are short).
    static let longestReply = 64 * 1024

    static func negotiate(_ socket: NBDSocket, export: String) throws(VerificationError) -> NBDExportInfo {
        let label = socket.label
        let name = Array(export.utf8)
        guard name.count <= NBDProtocol.longestExportName else {
            throw VerificationError("\(label): the export name is \(name.count) bytes long, more than NBD allows (\(NBDProtocol.longestExportName))")
        }
        var greeting = NBDFields(try socket.read(count: 18, what: "the server's greeting"))
        guard greeting.uint64() == NBDProtocol.initialMagic else {
            throw VerificationError("\(label): not an NBD server (its greeting lacks NBDMAGIC)")
        }
        let style = greeting.uint64()
        if style == NBDProtocol.oldstyleMagic {
            throw VerificationError("\(label): the server speaks the oldstyle NBD protocol, which livecopy does not support")
        }
        guard style == NBDProtocol.optionMagic else {
            throw VerificationError("\(label): not an NBD server (its greeting lacks IHAVEOPT)")
        }
        let handshakeFlags = greeting.uint16()
        guard handshakeFlags & NBDProtocol.flagFixedNewstyle != 0 else {
            throw VerificationError("\(label): the server does not offer the fixed newstyle handshake, which livecopy needs")
        }
        let clientFlags = NBDProtocol.flagFixedNewstyle | (handshakeFlags & NBDProtocol.flagNoZeroes)

        var message = NBDMessage()
        message.append(UInt32(clientFlags))
        message.append(NBDProtocol.optionMagic)
        message.append(NBDProtocol.optionGo)
        message.append(UInt32(4 + name.count + 2))
        message.append(UInt32(name.count))
        message.bytes += name
        message.append(UInt16(0))  // no information requests
        try socket.write(message.bytes, what: "NBD_OPT_GO")

        var announced: (size: Int64, flags: UInt16)?
        var maximumBlockSize: Int?
        while true {
            var header = NBDFields(try socket.read(count: 20, what: "a reply to NBD_OPT_GO"))
            let magic = header.uint64()
            let option = header.uint32()
            let type = header.uint32()
            let length = Int(header.uint32())
            guard magic == NBDProtocol.optionReplyMagic, option == NBDProtocol.optionGo else {
                throw VerificationError("\(label): malformed reply to NBD_OPT_GO (magic 0x\(String(magic, radix: 16)), option \(option))")
            }
            guard length <= Self.longestReply else {
                throw VerificationError("\(label): a reply to NBD_OPT_GO of \(length) bytes, more than livecopy accepts (\(Self.longestReply))")
            }
            var data = NBDFields(try socket.read(count: length, what: "the data of a reply to NBD_OPT_GO"))
            if type & NBDProtocol.replyErrorBit != 0 {
                let said = String(decoding: data.bytes, as: UTF8.self)
                throw VerificationError("\(label): the server refused export '\(export)': \(NBDProtocol.optionErrorName(type))\(said.isEmpty ? "" : ": \(said)")")
            }
            switch type {
            case NBDProtocol.replyAck:
                guard let announced else {
                    throw VerificationError("\(label): the server accepted NBD_OPT_GO without telling the export's size (no NBD_INFO_EXPORT)")
                }
                guard announced.flags & NBDProtocol.transmissionHasFlags != 0 else {
                    throw VerificationError("\(label): the server's transmission flags lack NBD_FLAG_HAS_FLAGS (0x\(String(announced.flags, radix: 16)))")
                }
                return NBDExportInfo(size: announced.size, transmissionFlags: announced.flags, maximumBlockSize: maximumBlockSize)
            case NBDProtocol.replyInfo:
                guard length >= 2 else {
                    throw VerificationError("\(label): an NBD_REP_INFO of \(length) bytes, too short for its type")
                }
                switch data.uint16() {
                case NBDProtocol.infoExport:
                    guard length == 12 else {
                        throw VerificationError("\(label): an NBD_INFO_EXPORT of \(length) bytes instead of 12")
                    }
                    let size = data.uint64()
                    guard size <= UInt64(Int64.max) else {
                        throw VerificationError("\(label): the export's size \(size) is out of range")
                    }
                    announced = (Int64(size), data.uint16())
                case NBDProtocol.infoBlockSize:
                    guard length == 14 else {
                        throw VerificationError("\(label): an NBD_INFO_BLOCK_SIZE of \(length) bytes instead of 14")
                    }
                    _ = data.uint32()  // minimum
                    _ = data.uint32()  // preferred
                    maximumBlockSize = Int(data.uint32())
                case _:
                    break  // information livecopy did not ask for and does not need (a name, a description)
                }
            case let other:
                throw VerificationError("\(label): unexpected reply \(other) to NBD_OPT_GO")
            }
        }
    }
}

/// Big-endian fields appended one after the other: an NBD message being built.
struct NBDMessage {
    var bytes: [UInt8] = []

    mutating func append<Value: FixedWidthInteger>(_ value: Value) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Big-endian fields read one after the other from bytes received whole (the caller
/// read exactly as many as the fields need).
struct NBDFields {
    let bytes: [UInt8]
    private var position = 0

    init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func uint64() -> UInt64 { take() }
    mutating func uint32() -> UInt32 { take() }
    mutating func uint16() -> UInt16 { take() }

    private mutating func take<Value: FixedWidthInteger>() -> Value {
        let size = MemoryLayout<Value>.size
        precondition(position + size <= bytes.count, "an NBD field past the bytes read")
        var value: Value = 0
        for byte in bytes[position ..< position + size] { value = value << 8 | Value(byte) }
        position += size
        return value
    }
}
