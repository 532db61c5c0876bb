import EmbeddedFiles
import Foundation

/// How a plan is carried out: throttling, parallelism, what to do on failure and
/// after a restart, and what becomes of each source image.
///
/// Policies are YAML files. The shipped ones (`Policies/*.yaml`) are compiled into
/// the binary; a `policy:` value containing a `/` names a file instead. A policy
/// file may leave keys out: they take the value of the shipped `default` policy.
public struct Policy: Codable, Sendable, Equatable {
    /// What becomes of the source image once the destination stands alone.
    public enum RetireSource: String, Codable, CaseIterable, Sendable {
        /// Remove the source file.
        case delete
        /// Rename the source file to `<source>.retired`.
        case rename
        /// Leave the source file where it is.
        case keep
        /// Move the source file into `.livecopy-quarantine/` beside it, for
        /// `quarantine_for`; `livecopy purge` deletes it then, `livecopy restore` puts it back.
        case quarantine
    }

    /// What a failed copy does.
    public enum OnFailure: String, Codable, CaseIterable, Sendable {
        /// Commit the destination back into the source and pivot the VM back to it.
        case rollback
        /// Leave the disk `failed` on its destination overlay, resumable later.
        case stop
    }

    /// What `recover` does with a plan interrupted by a crash.
    public enum AfterRestart: String, Codable, CaseIterable, Sendable {
        /// Carry on copying.
        case resume
        /// Undo the copy, back to the source.
        case rollback
    }

    /// QEMU's `on-error` for the stream job.
    public enum OnIOError: String, Codable, CaseIterable, Sendable {
        /// Pause the job on any I/O error.
        case stop
        /// Pause on "no space left", fail on other errors.
        case enospc
        /// Fail the job at once.
        case report
    }

    /// How each disk is copied (`stream` or `mirror`).
    public var strategy: CopyStrategy
    /// How a mirror treats guest writes made during the copy (mirror strategy only).
    public var copyMode: CopyMode
    public var retireSource: RetireSource
    /// Bytes per second per disk; 0 means unlimited.
    public var speed: Int64
    /// How many disks are copied at the same time across the plan.
    public var maxParallelDisks: Int
    public var onFailure: OnFailure
    public var afterRestart: AfterRestart
    public var onError: OnIOError
    /// How long a job paused by an I/O error waits for the operator (for example to
    /// free space) before `on_failure` applies, in seconds.
    public var ioErrorWait: Double
    /// How often running jobs are asked for progress, in seconds.
    public var progressInterval: Double
    /// How long any single QMP command may take, in seconds.
    public var commandTimeout: Double
    /// Whether a QMP socket that others may write to (group- or world-writable, or owned
    /// by another user) is accepted. The socket is root-equivalent, so the default is no.
    public var allowSharedSocket: Bool
    /// How many times a QMP command QEMU refused for a transient reason (a busy device,
    /// a lock held for a moment) is sent again; 0 never retries.
    public var qmpRetries: Int
    /// The wait before the first retry, in seconds; each further retry waits twice as long.
    public var qmpRetryBackoff: Double
    /// Preflight refuses a plan unless each destination filesystem has free space for the
    /// allocated size of the sources copied onto it, times this factor; 0 skips the check.
    public var spaceMargin: Double
    /// Commands that tell the VM's manager where each disk went (`hooks:`, docs/hooks.md).
    public var hooks: HookSettings
    /// How much of the copied data is compared with the source before it is retired.
    public var verify: VerifyMode
    /// How many clusters `verify: sample` draws at random.
    public var verifySample: VerifySample
    /// What becomes of the source when its data cannot be compared exactly.
    public var onUnverifiable: OnUnverifiable
    /// `retire_source: quarantine`: how long a quarantined source is kept before
    /// `livecopy purge` may delete it, in seconds.
    public var quarantineFor: Double = Policy.defaultQuarantineFor

    enum CodingKeys: String, CodingKey, CaseIterable {
        case strategy
        case copyMode = "copy_mode"
        case retireSource = "retire_source"
        case speed
        case maxParallelDisks = "max_parallel_disks"
        case onFailure = "on_failure"
        case afterRestart = "after_restart"
        case onError = "on_error"
        case ioErrorWait = "io_error_wait"
        case progressInterval = "progress_interval"
        case commandTimeout = "command_timeout"
        case allowSharedSocket = "allow_shared_socket"
        case qmpRetries = "qmp_retries"
        case qmpRetryBackoff = "qmp_retry_backoff"
        case spaceMargin = "space_margin"
        case hooks
        case verify
        case verifySample = "verify_sample"
        case onUnverifiable = "on_unverifiable"
        case quarantineFor = "quarantine_for"
    }

    /// `quarantine_for` when neither the policy nor the shipped default names it: 24 hours.
    public static let defaultQuarantineFor: Double = 86_400

    /// The built-in values, used only if the shipped `default.yaml` is somehow absent.
    static let fallback = Policy(
        retireSource: .rename, speed: 0, maxParallelDisks: 4, onFailure: .stop, afterRestart: .resume,
        onError: .enospc, ioErrorWait: 300, progressInterval: 1, commandTimeout: 30, allowSharedSocket: false,
        qmpRetries: 3, qmpRetryBackoff: 0.5, spaceMargin: 1.1, strategy: .stream, copyMode: .background,
        verify: .sample)

    public init(
        retireSource: RetireSource, speed: Int64, maxParallelDisks: Int, onFailure: OnFailure,
        afterRestart: AfterRestart, onError: OnIOError, ioErrorWait: Double, progressInterval: Double,
        commandTimeout: Double, allowSharedSocket: Bool = false, qmpRetries: Int = 3, qmpRetryBackoff: Double = 0.5,
        spaceMargin: Double = 1.1, strategy: CopyStrategy = .stream, copyMode: CopyMode = .background,
        hooks: HookSettings = .none, verify: VerifyMode = .none, verifySample: VerifySample = .fraction(0.01),
        onUnverifiable: OnUnverifiable = .keepSource
    ) {
        self.hooks = hooks
        self.verify = verify
        self.verifySample = verifySample
        self.onUnverifiable = onUnverifiable
        self.strategy = strategy
        self.copyMode = copyMode
        self.retireSource = retireSource
        self.speed = speed
        self.maxParallelDisks = maxParallelDisks
        self.onFailure = onFailure
        self.afterRestart = afterRestart
        self.onError = onError
        self.ioErrorWait = ioErrorWait
        self.progressInterval = progressInterval
        self.commandTimeout = commandTimeout
        self.allowSharedSocket = allowSharedSocket
        self.qmpRetries = qmpRetries
        self.qmpRetryBackoff = qmpRetryBackoff
        self.spaceMargin = spaceMargin
    }

    /// Decodes a stored policy; keys added after it was recorded take the built-in values.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        strategy = try container.decodeIfPresent(CopyStrategy.self, forKey: .strategy) ?? Self.fallback.strategy
        copyMode = try container.decodeIfPresent(CopyMode.self, forKey: .copyMode) ?? Self.fallback.copyMode
        retireSource = try container.decode(RetireSource.self, forKey: .retireSource)
        speed = try container.decode(Int64.self, forKey: .speed)
        maxParallelDisks = try container.decode(Int.self, forKey: .maxParallelDisks)
        onFailure = try container.decode(OnFailure.self, forKey: .onFailure)
        afterRestart = try container.decode(AfterRestart.self, forKey: .afterRestart)
        onError = try container.decode(OnIOError.self, forKey: .onError)
        ioErrorWait = try container.decode(Double.self, forKey: .ioErrorWait)
        progressInterval = try container.decode(Double.self, forKey: .progressInterval)
        commandTimeout = try container.decode(Double.self, forKey: .commandTimeout)
        allowSharedSocket = try container.decodeIfPresent(Bool.self, forKey: .allowSharedSocket) ?? false
        qmpRetries = try container.decodeIfPresent(Int.self, forKey: .qmpRetries) ?? Self.fallback.qmpRetries
        qmpRetryBackoff = try container.decodeIfPresent(Double.self, forKey: .qmpRetryBackoff) ?? Self.fallback.qmpRetryBackoff
        spaceMargin = try container.decodeIfPresent(Double.self, forKey: .spaceMargin) ?? Self.fallback.spaceMargin
        hooks = try container.decodeIfPresent(HookSettings.self, forKey: .hooks) ?? .none
        // A plan recorded before verification existed keeps what it was promised: no comparison.
        verify = try container.decodeIfPresent(VerifyMode.self, forKey: .verify) ?? .none
        verifySample = try container.decodeIfPresent(VerifySample.self, forKey: .verifySample) ?? Self.fallback.verifySample
        onUnverifiable = try container.decodeIfPresent(OnUnverifiable.self, forKey: .onUnverifiable) ?? Self.fallback.onUnverifiable
        quarantineFor = try container.decodeIfPresent(Double.self, forKey: .quarantineFor) ?? Self.defaultQuarantineFor
    }
}

extension Policy {
    /// The names of the policies compiled into this binary.
    public static var shippedNames: [String] {
        EmbeddedFiles.policies.map { ($0.name as NSString).deletingPathExtension }
    }

    /// The shipped `default` policy.
    public static func shippedDefault() throws -> Policy {
        guard let file = EmbeddedFiles.policies.first(where: { $0.name == "default.yaml" }) else { return fallback }
        return try parse(file.contents, source: "policy 'default'", base: fallback)
    }

    /// Resolves a plan's `policy:` value: nil means `default`; a value with a `/` is a
    /// file path (relative paths are taken from `relativeTo`); anything else names a
    /// shipped policy.
    public static func resolve(_ reference: String?, relativeTo directory: URL? = nil) throws -> Policy {
        let base = try shippedDefault()
        guard let reference, reference != "default" else { return base }
        if reference.contains("/") {
            let folder = directory ?? URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            let url = reference.hasPrefix("/")
                ? URL(fileURLWithPath: reference) : folder.appendingPathComponent(reference).standardizedFileURL
            let text = try readTextFile(url.path, what: "policy file")
            return try parse(text, source: url.path, base: base)
        }
        guard let file = EmbeddedFiles.policies.first(where: { $0.name == "\(reference).yaml" }) else {
            throw InputError(
                "unknown policy '\(reference)' (shipped: \(shippedNames.joined(separator: ", ")); a path must contain '/')")
        }
        return try parse(file.contents, source: "policy '\(reference)'", base: base)
    }

    /// Parses a policy document; keys it leaves out keep `base`'s values.
    public static func parse(_ text: String, source: String, base: Policy) throws -> Policy {
        let document = try StrictYAML.parse(text, source: source)
        let members = try document.mapping(allowed: Set(CodingKeys.allCases.map(\.rawValue)))
        var policy = base
        for key in CodingKeys.allCases {
            guard let value = members[key.rawValue] else { continue }
            switch key {
            case .strategy: policy.strategy = try value.choice(CopyStrategy.self)
            case .copyMode: policy.copyMode = try value.choice(CopyMode.self)
            case .retireSource: policy.retireSource = try value.choice(RetireSource.self)
            case .speed: policy.speed = try value.byteSize()
            case .maxParallelDisks:
                let count = try value.positiveInteger()
                policy.maxParallelDisks = count
            case .onFailure: policy.onFailure = try value.choice(OnFailure.self)
            case .afterRestart: policy.afterRestart = try value.choice(AfterRestart.self)
            case .onError: policy.onError = try value.choice(OnIOError.self)
            case .ioErrorWait: policy.ioErrorWait = try value.duration(allowZero: true)
            case .progressInterval: policy.progressInterval = try value.duration(allowZero: false, atLeast: 0.05)
            case .commandTimeout: policy.commandTimeout = try value.duration(allowZero: false)
            case .allowSharedSocket: policy.allowSharedSocket = try value.boolean()
            case .qmpRetries: policy.qmpRetries = try value.integer(in: 0...100)
            case .qmpRetryBackoff: policy.qmpRetryBackoff = try value.duration(allowZero: true)
            case .spaceMargin: policy.spaceMargin = try value.factor(in: 0...100)
            case .hooks: policy.hooks = try HookSettings.parse(value)
            case .verify: policy.verify = try value.choice(VerifyMode.self)
            case .verifySample: policy.verifySample = try value.verifySample()
            case .onUnverifiable: policy.onUnverifiable = try value.choice(OnUnverifiable.self)
            case .quarantineFor: policy.quarantineFor = try value.duration(allowZero: false)
            }
        }
        return policy
    }
}
