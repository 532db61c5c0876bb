// `MetricsHTTPServer`: a small HTTP/1.1 server on SwiftNIO that answers `GET /metrics`.

import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves `GET /metrics` (and `HEAD`) with the text `body` returns, as Prometheus text
/// format 0.0.4; any other path is 404, another method on `/metrics` 405. It listens from
/// `start` until `stop`, which also closes the connections still open.
public final class MetricsHTTPServer: Sendable {
    /// The content type of Prometheus' text format.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The address it listens on (the port chosen by the system when 0 was asked for).
    public let address: SocketAddress
    private let listener: any Channel
    private let connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>

    private init(listener: any Channel, address: SocketAddress, connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>) {
        self.listener = listener
        self.address = address
        self.connections = connections
    }

    /// Binds `host:port` and serves from now on; throws `MetricsEndpointError` when it
    /// cannot listen there (the port taken, an address not of this host).
    public static func start(host: String, port: Int, body: @escaping @Sendable () async -> String) async throws -> MetricsHTTPServer {
        let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let key = ObjectIdentifier(channel)
                connections.withLockedValue { $0[key] = channel }
                channel.closeFuture.whenComplete { _ in _ = connections.withLockedValue { $0.removeValue(forKey: key) } }
                return channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(MetricsRequestHandler(body: body))
                }
            }
        let listener: any Channel
        do {
            listener = try await bootstrap.bind(host: host, port: port).get()
        } catch let error as IOError {
            throw MetricsEndpointError.cannotListen(host: host, port: port, reason: String(cString: strerror(error.errnoCode)))
        } catch {
            throw MetricsEndpointError.cannotListen(host: host, port: port, reason: "\(error)")
        }
        guard let address = listener.localAddress else {
            try? await listener.close()
            throw MetricsEndpointError.cannotListen(host: host, port: port, reason: "no local address after bind")
        }
        return MetricsHTTPServer(listener: listener, address: address, connections: connections)
    }

    /// Stops listening and closes the open connections.
    public func stop() async {
        try? await listener.close()
        for connection in connections.withLockedValue({ Array($0.values) }) {
            try? await connection.close()
        }
    }
}

/// Why the endpoint could not start.
public enum MetricsEndpointError: Error, CustomStringConvertible, Sendable {
    case cannotListen(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case .cannotListen(let host, let port, let reason):
            return "--metrics \(MetricsAddress.bracketed(host)):\(port): cannot listen there: \(reason)"
        }
    }
}

/// Answers each request of one connection; NIO's pipeline handler keeps pipelined
/// requests in order while a scrape's text is being made.
final class MetricsRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let body: @Sendable () async -> String
    private var head: HTTPRequestHead?

    init(body: @escaping @Sendable () async -> String) {
        self.body = body
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break  // a scrape has no body; whatever comes is ignored
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard path == "/metrics" else {
            write(.notFound, "not found: livecopy serves its metrics at /metrics\n", to: head, context: context)
            return
        }
        guard head.method == .GET || head.method == .HEAD else {
            write(.methodNotAllowed, "method not allowed: GET /metrics\n", extra: [("Allow", "GET, HEAD")], to: head, context: context)
            return
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let body = self.body
        context.eventLoop.makeFutureWithTask { await body() }.whenSuccess { text in
            let (handler, context) = bound.value
            handler.write(.ok, text, contentType: MetricsHTTPServer.contentType, to: head, context: context)
        }
    }

    private func write(_ status: HTTPResponseStatus, _ text: String, contentType: String = "text/plain; charset=utf-8",
                       extra: [(String, String)] = [], to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let bytes = context.channel.allocator.buffer(string: text)
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", String(bytes.readableBytes))] + extra)
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
        }
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        guard !keepAlive else { return }
        written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
