import Foundation
import LivecopyCommands

// The tiny executable: everything lives in LivecopyCommands, so commands are testable in-process.
LivecopyCommand.bootstrapLogging()
exit(await LivecopyCommand.execute(Array(CommandLine.arguments.dropFirst())))
