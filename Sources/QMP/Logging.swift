import Logging

/// The QMP module's logger (`livecopy.qmp`). Where it writes and at which level is the
/// process's choice (`LoggingSystem.bootstrap`, made by the `livecopy` executable); this
/// module never bootstraps the logging system itself.
let logger = Logger(label: "livecopy.qmp")
