import Foundation
import PackagePlugin

/// Compiles the package's top-level `Migrations/*.sql`, `Migrations/postgres/*.sql` (the
/// fleet store's, kept apart from SQLite's list) and `Policies/*.yaml` into the
/// target it is applied to (EmbeddedFiles), so a lone copied binary still has them.
///
/// How the build notices changes (checked with Swift 6.3.1): SwiftPM runs this plugin
/// only when it re-plans the build, which happens when Package.swift or a target's
/// directory structure changes, not when these folders change. So the command's inputs
/// are both the two folders and every file in them, and EmbedFilesTool lists the
/// folders again itself each time it runs:
/// - a file added or removed changes its folder's modification time, so the command
///   re-runs and sees the current set of files;
/// - a file edited in place is caught through its own input.
/// Known gaps until the next re-plan (any change to Package.swift or to the file
/// structure under Sources/, Tests/ or Plugins/; `touch Package.swift` forces one):
/// a file added since the last plan and then edited in place is not re-read, and
/// deleting a file that existed at the last plan fails with "missing inputs".
@main
struct EmbedFilesPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) async throws -> [Command] {
        let root = context.package.directoryURL
        let folders = [
            (flag: "--migrations", url: root.appendingPathComponent("Migrations"), ext: "sql"),
            (flag: "--postgres-migrations", url: root.appendingPathComponent("Migrations/postgres"), ext: "sql"),
            (flag: "--policies", url: root.appendingPathComponent("Policies"), ext: "yaml"),
        ]
        let output = context.pluginWorkDirectoryURL.appendingPathComponent("EmbeddedFilesData.swift")

        var arguments = [output.path]
        var inputs: [URL] = []
        var counts: [Int] = []
        for folder in folders {
            arguments += [folder.flag, folder.url.path]
            guard isDirectory(folder.url) else {
                counts.append(0)
                continue
            }
            let files = try filesIn(folder.url, withExtension: folder.ext)
            inputs.append(folder.url)
            inputs += files
            counts.append(files.count)
        }

        return [
            .buildCommand(
                displayName: "Embedding \(counts[0]) migration(s), \(counts[1]) PostgreSQL migration(s) and \(counts[2]) policy file(s)",
                executable: try context.tool(named: "EmbedFilesTool").url,
                arguments: arguments,
                inputFiles: inputs,
                outputFiles: [output])
        ]
    }

    private func isDirectory(_ url: URL) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Regular files directly in `directory` whose extension is `ext`, sorted by name.
    private func filesIn(_ directory: URL, withExtension ext: String) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { !$0.hasPrefix(".") && ($0 as NSString).pathExtension == ext }
            .sorted()
            .map { directory.appendingPathComponent($0) }
            .filter { !isDirectory($0) }
    }
}
