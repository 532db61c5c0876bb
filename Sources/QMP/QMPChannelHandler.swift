// The NIO channel handler that reads a QMP socket.

import NIOCore

/// Reads the socket: splits bytes into lines, parses them and hands the messages to the
/// connection's core. Closes the channel on a protocol violation.
final class QMPChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let core: QMPConnectionCore
    private var framer = QMPLineFramer()
    /// Set after a violation: nothing more is read from a stream that cannot be trusted.
    private var broken = false

    init(core: QMPConnectionCore) {
        self.core = core
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !broken else { return }
        let buffer = unwrapInboundIn(data)
        do {
            for line in try framer.feed(buffer.readableBytesView) {
                let outcome = core.receive(try QMPMessage.parse(line: line))
                switch outcome {
                case .keepOpen:
                    continue
                case .close:
                    broken = true
                    context.close(promise: nil)
                    return
                }
            }
        } catch {
            broken = true
            core.protocolViolation(error as? QMPClientError ?? .protocolViolation(String(describing: error)))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        core.connectionLost(reason: "the peer closed the connection")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        core.connectionLost(reason: "reading failed: \(error)")
        context.close(promise: nil)
    }
}
