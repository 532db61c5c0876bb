// Reading the policy's `hooks:` mapping.

extension HookEvent: CodingKeyRepresentable {}

extension HookSettings {
    /// The policy keys inside `hooks:` besides the four moments.
    enum SettingKey: String, CaseIterable {
        case timeout
        case onSwitchFailure = "on_switch_failure"
    }

    /// Parses `hooks:`. Each moment takes an argv list, or a mapping with `command` (the
    /// list) and its own `timeout`:
    ///
    ///     hooks:
    ///       on_switch: [/usr/local/sbin/vm-config-switch, --config-dir, /etc/vms]
    ///       on_complete:
    ///         command: [/usr/local/sbin/inventory-update]
    ///         timeout: 2m
    ///       timeout: 30s                 # the others' (default 60s)
    ///       on_switch_failure: rollback  # or record
    static func parse(_ node: StrictYAML) throws -> HookSettings {
        let allowed = Set(HookEvent.allCases.map(\.rawValue) + SettingKey.allCases.map(\.rawValue))
        let members = try node.mapping(allowed: allowed)
        var settings = HookSettings.none
        if let value = members[SettingKey.timeout.rawValue] {
            settings.timeout = try value.duration(allowZero: false)
        }
        if let value = members[SettingKey.onSwitchFailure.rawValue] {
            settings.onSwitchFailure = try value.choice(OnSwitchFailure.self)
        }
        for event in HookEvent.allCases {
            guard let value = members[event.rawValue] else { continue }
            settings.commands[event] = try command(value, defaultTimeout: settings.timeout)
        }
        return settings
    }

    private static func command(_ node: StrictYAML, defaultTimeout: Double) throws -> HookCommand {
        guard case .mapping = node.node else {
            return HookCommand(argv: try argv(node), timeout: defaultTimeout)
        }
        let members = try node.mapping(allowed: ["command", "timeout"])
        guard let command = members["command"] else { throw node.fail("needs 'command', the program and its arguments as a list") }
        let timeout = try members["timeout"].map { try $0.duration(allowZero: false) } ?? defaultTimeout
        return HookCommand(argv: try argv(command), timeout: timeout)
    }

    /// An argv list: strings taken exactly as written (no shell, no word splitting); the
    /// program first, not empty.
    private static func argv(_ node: StrictYAML) throws -> [String] {
        guard case .sequence = node.node else {
            throw node.fail("must be a list: the program and its arguments, such as [/usr/local/sbin/update-vm, --verbose] (no shell string)")
        }
        let items = try node.sequence()
        guard !items.isEmpty else { throw node.fail("must name the program to run") }
        let argv = try items.map { try $0.argument() }
        guard !argv[0].isEmpty else { throw items[0].fail("must name the program to run") }
        return argv
    }
}
