import Logging

/// The LivecopyStore module's logger (`livecopy.store`). Where it writes and at which level is the
/// process's choice (`LoggingSystem.bootstrap`, made by the `livecopy` executable); this
/// module never bootstraps the logging system itself.
let logger = Logger(label: "livecopy.store")
