import ArgumentParser

/// The `livecopy` command line.
public struct LivecopyCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "livecopy",
        abstract: "Live block copy orchestrator for QEMU virtual machines.")

    public init() {}
}
