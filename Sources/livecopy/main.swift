import LivecopyCommands

// The tiny executable: everything lives in LivecopyCommands, so commands are testable in-process.
await LivecopyCommand.main()
