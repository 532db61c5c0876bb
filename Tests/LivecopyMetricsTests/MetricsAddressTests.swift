import LivecopyMetrics
import Testing

/// `--metrics HOST:PORT`: what is accepted, and a one-line reason for what is not.
struct MetricsAddressTests {
    @Test(arguments: [
        ("127.0.0.1:9464", "127.0.0.1", 9464), ("0.0.0.0:0", "0.0.0.0", 0), ("[::1]:9464", "::1", 9464),
        ("localhost:65535", "localhost", 65535),
    ])
    func accepted(text: String, host: String, port: Int) throws {
        let address = try MetricsAddress(parsing: text)
        #expect(address.host == host && address.port == port)
        #expect(address.description == text)
    }

    @Test(arguments: [
        ("9464", "no port"), (":9464", "no host"), ("127.0.0.1:", "the port must be"), ("127.0.0.1:65536", "the port must be"),
        ("127.0.0.1:-1", "the port must be"), ("127.0.0.1:http", "the port must be"), ("::1:9464", "[ADDRESS]:PORT"),
        ("[::1]9464", "[ADDRESS]:PORT"), ("example.com:9464", "'example.com' is not an IP address nor localhost"),
        ("127.0.0.1:٩٤٦٤", "the port must be"),
    ])
    func refused(text: String, reason: String) {
        #expect {
            _ = try MetricsAddress(parsing: text)
        } throws: { error in
            let message = "\(error)"
            return message.hasPrefix("--metrics '\(text)': ") && message.contains(reason) && !message.contains("\n")
        }
    }
}
