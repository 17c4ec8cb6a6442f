//! Profiles: a sandbox policy written as TOML, and the same shape filled in from command-line flags.
//!
//! A [`Profile`] holds what someone wrote, as they wrote it (`timeout = "30m"`), so that a file and a set of
//! flags can be layered with [`Profile::merge`] before anything is interpreted. [`resolve`] then turns the merged
//! profile into a [`SandboxPolicy`], the typed form the runtime builds. Every value is checked twice over:
//! [`Profile::parse`] checks a file on its own so that its mistakes are reported with a line and a field, and
//! [`resolve`] checks the merged result, which is where mistakes in flags surface.
//!
//! ```toml
//! description = "..."
//! [filesystem]
//! rootfs = "host"            # or an absolute directory
//! workspace = "/abs/dir"
//! workspace_mode = "cow"     # cow | rw | ro
//! ro_bind = ["/src[:/dst]"]
//! bind = ["/src[:/dst]"]
//! tmpfs = ["/dst[:SIZE]"]
//! [network]
//! mode = "none"              # none | allow | host
//! allow = ["pypi.org", "*.github.com:443"]
//! [env]
//! set = { KEY = "value" }
//! pass = ["KEY"]
//! [process]
//! user = "root"              # root | UID[:GID]
//! hostname = "airlock"
//! timeout = "30m"
//! [limits]
//! memory = "2G"
//! pids = 512
//! cpus = 1.5
//! disk = "10G"
//! nofile = 1024              # open files per process (RLIMIT_NOFILE), 1 to 1048576
//! fsize = "4G"               # largest file the command may write (RLIMIT_FSIZE)
//! enforce = "required"       # required | best-effort (run without the cgroup limits the host cannot enforce)
//! [security]
//! landlock = "required"      # required | best-effort
//! root_capabilities = "none" # none | package-manager (default: package-manager when `/` is writable)
//! isolation = "namespaces"   # namespaces | vm (a QEMU VM of its own per sandbox; `run` only for now)
//! [vm]                       # with isolation = "vm"
//! accel = "kvm"              # kvm | tcg (emulated: slow, no KVM needed); AIRLOCK_VM_ACCEL wins
//! kernel = "/boot/vmlinuz-6.1.0-57-amd64"  # default: the newest with /lib/modules/VERSION; AIRLOCK_VM_KERNEL wins
//! ```

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::{self, NameError, Quoted};
use crate::sandbox::{
    BindMount, Identity, Isolation, Limits, Network, Requirement, RootCapabilities, Rootfs, SandboxPolicy, TmpfsMount,
    Workspace, WorkspaceMode,
};
use crate::units::{self, UnitError};

/// The command's `PATH` unless a profile sets one: the usual system directories, nothing from the caller (whose
/// `PATH` may name directories the sandbox cannot see, or that an attacker could have prepared).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command's `HOME` unless a profile sets one, for every identity including root. `/tmp` is always a private,
/// writable tmpfs inside the sandbox, whereas `/root` and `/home/...` are not shown with `rootfs = "host"`; a
/// `HOME` that cannot be written makes many tools fail in confusing ways.
pub const DEFAULT_HOME: &str = "/tmp";

/// The host name inside unless a profile or `--hostname` sets one.
pub const DEFAULT_HOSTNAME: &str = "airlock";

/// The smallest memory limit accepted. Below this no program starts at all, so a smaller value is almost always
/// a missing suffix (`memory = "512"` meant as megabytes).
pub const MIN_MEMORY: u64 = 1 << 20;

/// The largest process limit accepted: the kernel's `PID_MAX_LIMIT`; no namespace can hold more.
pub const MAX_PIDS: u64 = 4_194_304;

/// The largest open-file limit accepted: the kernel's default `fs.nr_open`, above which `setrlimit` refuses
/// `RLIMIT_NOFILE` anyway.
pub const MAX_NOFILE: u64 = 1_048_576;

/// A profile: every field optional, every value as written. See the module documentation for the format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// One line for `airlock profile list`.
    pub description: Option<String>,
    pub filesystem: FilesystemSection,
    pub network: NetworkSection,
    pub env: EnvSection,
    pub process: ProcessSection,
    pub limits: LimitsSection,
    pub security: SecuritySection,
    pub audit: AuditSection,
    /// `[security] isolation = "vm"`'s machine (see [`VmSection`]).
    #[serde(skip_serializing_if = "VmSection::is_empty")]
    pub vm: VmSection,
}

/// The VM of `--isolation vm`: how QEMU runs the guest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmSection {
    /// `kvm` (the default) or `tcg` (emulated: no KVM needed, slow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// The guest kernel image (`/boot/vmlinuz-VERSION`, its modules in `/lib/modules/VERSION`); default: the
    /// newest such pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

impl VmSection {
    pub fn is_empty(&self) -> bool {
        self.accel.is_none() && self.kernel.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemSection {
    /// `host` or an absolute directory (`--rootfs`).
    pub rootfs: Option<String>,
    /// Internal (`--rootfs-layers`, for image support): the root's lower directories, bottom first, instead of
    /// `rootfs`. Left out when empty (or unset), so a profile without these serializes as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rootfs_layers: Vec<String>,
    /// `/` writable: an overlay over the rootfs, its writes in a layer of the sandbox's (`--writable-root`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writable_root: Option<bool>,
    /// Absolute host directory (`--workspace`).
    pub workspace: Option<String>,
    /// `cow`, `rw` or `ro` (`--workspace-mode`).
    pub workspace_mode: Option<String>,
    /// `SRC[:DST]` entries (`--ro-bind`). The first `:` separates source from destination.
    pub ro_bind: Vec<String>,
    /// `SRC[:DST]` entries (`--bind`).
    pub bind: Vec<String>,
    /// `DST[:SIZE]` entries (`--tmpfs`).
    pub tmpfs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// `none`, `allow` or `host` (`--net`). Unset means `allow` when there are allow entries, else `none`.
    pub mode: Option<String>,
    /// `DOMAIN[:PORT]` entries (`--allow`).
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvSection {
    /// Variables set inside (`--env KEY=VALUE`); they override everything else.
    pub set: BTreeMap<String, String>,
    /// Variables copied from the caller's environment when present (`--pass-env KEY`).
    pub pass: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessSection {
    /// `root` or `UID[:GID]` (`--user`).
    pub user: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// A duration such as `30m` (`--timeout`).
    pub timeout: Option<String>,
    /// The command's working directory, an absolute path inside the sandbox (an image's `WorkingDir`); without
    /// it, the workspace, else `/`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// A size such as `2G` (`--memory`).
    pub memory: Option<String>,
    /// Most processes and threads at once (`--pids`).
    pub pids: Option<u64>,
    /// CPUs' worth of time, fractions allowed (`--cpus`).
    pub cpus: Option<f64>,
    /// A size such as `10G` for what the sandbox may write (`--disk`).
    pub disk: Option<String>,
    /// Most open files per process (`RLIMIT_NOFILE`). Profile only.
    pub nofile: Option<u64>,
    /// A size such as `4G`: the largest file the command may write (`RLIMIT_FSIZE`). Profile only.
    pub fsize: Option<String>,
    /// `required` or `best-effort`: whether a run whose cgroup limits this host cannot enforce fails, or goes on
    /// without them, saying which. Profile only.
    pub enforce: Option<String>,
}

/// The audit log (see the README's "Audit log").
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Record every exec in the sandbox's audit log (one seccomp notification per exec), as `--audit` does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// `required` or `best-effort`.
    pub landlock: Option<String>,
    /// `none` or `package-manager`: what root inside keeps (see [`RootCapabilities`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_capabilities: Option<String>,
    /// `namespaces` (the default) or `vm`: where the sandbox runs (`--isolation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

/// A setting of a profile, named as in the file and as the flag that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Rootfs,
    RootfsLayers,
    WritableRoot,
    Workspace,
    WorkspaceMode,
    RoBind,
    Bind,
    Tmpfs,
    NetworkMode,
    NetworkAllow,
    EnvSet,
    EnvPass,
    User,
    Hostname,
    Timeout,
    Cwd,
    Memory,
    Pids,
    Cpus,
    Disk,
    Nofile,
    Fsize,
    LimitsEnforce,
    Landlock,
    RootCapabilities,
    Isolation,
}

impl Field {
    /// The dotted TOML key (`process.timeout`).
    pub fn key(self) -> &'static str {
        match self {
            Field::Rootfs => "filesystem.rootfs",
            Field::RootfsLayers => "filesystem.rootfs_layers",
            Field::WritableRoot => "filesystem.writable_root",
            Field::Workspace => "filesystem.workspace",
            Field::WorkspaceMode => "filesystem.workspace_mode",
            Field::RoBind => "filesystem.ro_bind",
            Field::Bind => "filesystem.bind",
            Field::Tmpfs => "filesystem.tmpfs",
            Field::NetworkMode => "network.mode",
            Field::NetworkAllow => "network.allow",
            Field::EnvSet => "env.set",
            Field::EnvPass => "env.pass",
            Field::User => "process.user",
            Field::Hostname => "process.hostname",
            Field::Timeout => "process.timeout",
            Field::Cwd => "process.cwd",
            Field::Memory => "limits.memory",
            Field::Pids => "limits.pids",
            Field::Cpus => "limits.cpus",
            Field::Disk => "limits.disk",
            Field::Nofile => "limits.nofile",
            Field::Fsize => "limits.fsize",
            Field::LimitsEnforce => "limits.enforce",
            Field::Landlock => "security.landlock",
            Field::RootCapabilities => "security.root_capabilities",
            Field::Isolation => "security.isolation",
        }
    }

    /// The `airlock run` flag that sets it, if any.
    pub fn flag(self) -> Option<&'static str> {
        Some(match self {
            Field::Rootfs => "--rootfs",
            Field::RootfsLayers => "--rootfs-layers",
            Field::WritableRoot => "--writable-root",
            Field::Workspace => "--workspace",
            Field::WorkspaceMode => "--workspace-mode",
            Field::RoBind => "--ro-bind",
            Field::Bind => "--bind",
            Field::Tmpfs => "--tmpfs",
            Field::NetworkMode => "--net",
            Field::NetworkAllow => "--allow",
            Field::EnvSet => "--env",
            Field::EnvPass => "--pass-env",
            Field::User => "--user",
            Field::Hostname => "--hostname",
            Field::Timeout => "--timeout",
            Field::Memory => "--memory",
            Field::Pids => "--pids",
            Field::Cpus => "--cpus",
            Field::Disk => "--disk",
            Field::RootCapabilities => "--root-capabilities",
            Field::Isolation => "--isolation",
            Field::Cwd | Field::Nofile | Field::Fsize | Field::LimitsEnforce | Field::Landlock => return None,
        })
    }
}

/// Which part of a list or table field a [`FieldError`] is about; used to point at the exact line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The entry at this position of a list field.
    Index(usize),
    /// The entry with this key of `env.set`.
    Key(String),
}

/// Why a value of a profile is not acceptable. Each message quotes the value and says what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error(transparent)]
    Name(#[from] NameError),
    /// A setting with a fixed set of values.
    #[error("unknown value {}: expected {expected}", Quoted(.value))]
    Choice { value: String, expected: &'static str },
    /// `rootfs = "/"` would show every host file, which `host` exists to avoid.
    #[error(
        "rootfs \"/\" would show the whole host, including /home and /root; use \"host\" for the host's system directories, or a prepared root directory"
    )]
    RootfsIsHostRoot,
    /// `writable_root` with `rootfs = "host"`: the host's system directories are shared read-only by design.
    #[error("a writable root needs a rootfs directory or layers: rootfs \"host\" shares the host's system directories, which stay read-only")]
    WritableHostRoot,
    /// Both `rootfs` (other than the default) and `rootfs_layers`.
    #[error("rootfs {} and rootfs_layers both say what / is; give one", Quoted(.rootfs))]
    RootfsAndLayers { rootfs: String },
    /// airlock builds `/`, `/proc` and `/dev` itself; something mounted there would replace or hide its masking.
    #[error("{} cannot be a mount destination: airlock builds /, /proc and /dev itself; choose another path", Quoted(.path))]
    ReservedDestination { path: String },
    /// The host's `/proc` shows the host's processes and their environments, which the sandbox must never see.
    #[error(
        "{} cannot be shared: the host's /proc would show host processes; the sandbox has its own /proc",
        Quoted(.path)
    )]
    HostProc { path: String },
    /// A writable `/sys` reaches kernel and cgroup settings that change the host (a cgroup `release_agent`).
    #[error(
        "{} cannot be shared writable: the host's /sys holds kernel and cgroup settings; use ro_bind (--ro-bind)",
        Quoted(.path)
    )]
    WritableSys { path: String },
    /// Two mounts on one path: the second would hide the first, which is never what the author meant.
    #[error("{} is a mount destination more than once (workspace, binds and tmpfs); give each destination once", Quoted(.path))]
    DuplicateDestination { path: String },
    /// A `SRC:DST` or `DST:SIZE` entry with nothing after the `:`.
    #[error("invalid entry {}: nothing after ':'; write {form}", Quoted(.entry))]
    EmptyAfterColon { entry: String, form: &'static str },
    /// Allow entries with a mode that would ignore them.
    #[error(
        "allow entries need network mode \"allow\", but the mode is {}; remove the mode or the allow entries",
        Quoted(.mode)
    )]
    AllowWithOtherMode { mode: String },
    /// Mode `allow` with nothing allowed is `none` said confusingly; more likely the list was forgotten.
    #[error(
        "network mode \"allow\" needs at least one allow entry (e.g. --allow pypi.org); for no network use \"none\""
    )]
    AllowModeWithoutEntries,
    #[error(
        "invalid user {}: expected root or UID[:GID] with ids from 0 to 4294967294 (e.g. 1000 or 1000:1000)",
        Quoted(.value)
    )]
    User { value: String },
    #[error("the value of {} contains a NUL byte, which a program's environment cannot hold", Quoted(.key))]
    EnvValue { key: String },
    #[error("memory limit {} is below 1M, too little to start any program; give a suffix (e.g. 512M)", Quoted(.value))]
    MemoryTooSmall { value: String },
    #[error("process limit {value} is out of range: expected 1 to 4194304 (e.g. 512)")]
    Pids { value: u64 },
    #[error("open-file limit {value} is out of range: expected 1 to 1048576 (e.g. 1024)")]
    Nofile { value: u64 },
}

/// A value of a profile that is not acceptable, with the setting it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: Field,
    /// The entry of a list or table, when the error is about one.
    pub item: Option<Item>,
    pub error: ValueError,
}

impl FieldError {
    fn new(field: Field, error: impl Into<ValueError>) -> FieldError {
        FieldError { field, item: None, error: error.into() }
    }

    fn at(field: Field, index: usize, error: impl Into<ValueError>) -> FieldError {
        FieldError { field, item: Some(Item::Index(index)), error: error.into() }
    }

    fn key(field: Field, key: &str, error: impl Into<ValueError>) -> FieldError {
        FieldError { field, item: Some(Item::Key(key.to_owned())), error: error.into() }
    }
}

/// `process.timeout (--timeout): invalid duration ...`: both names, because by the time the profile and the flags
/// are merged either may have supplied the value.
impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.flag() {
            Some(flag) => write!(f, "{} ({flag}): {}", self.field.key(), self.error),
            None => write!(f, "{}: {}", self.field.key(), self.error),
        }
    }
}

// The inner error is part of the message above, so it is not also offered as `source()`: an error chain printed
// at the edge would otherwise say it twice.
impl std::error::Error for FieldError {}

/// Where in a profile file an error is. Any part may be unknown (a syntax error has no field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key (`process.timeout`).
    pub field: Option<String>,
}

/// ` line 4, column 11, field process.timeout`, with a leading space, or nothing.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = " ";
        if let Some(line) = self.line {
            write!(f, "{separator}line {line}")?;
            separator = ", ";
        }
        if let Some(column) = self.column {
            write!(f, "{separator}column {column}")?;
            separator = ", ";
        }
        if let Some(field) = &self.field {
            write!(f, "{separator}field {field}")?;
        }
        Ok(())
    }
}

/// A profile that cannot be used. `origin` is the file path or `builtin:NAME`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// Not TOML, or not the shape of a profile: a syntax error, an unknown key, a value of the wrong type.
    #[error("profile {}{location}: {message}", .origin.escape_debug())]
    Toml { origin: String, location: Location, message: String },
    /// A value of the right type that is not acceptable.
    #[error("profile {}{location}: {error}", .origin.escape_debug())]
    Value { origin: String, location: Location, error: Box<ValueError> },
    #[error(
        "unknown built-in profile {}: choose one of {} (airlock profile list), or give a file path containing '/' or ending in .toml",
        Quoted(.name),
        BUILTIN_NAMES.join(", ")
    )]
    UnknownBuiltin { name: String },
}

/// A merged profile and command that cannot make a sandbox.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Field(FieldError),
    #[error("no command to run: give it after the options (e.g. airlock run -- python3 main.py)")]
    EmptyCommand,
    #[error("the command's program name is empty: give the program to run as the first word after the options")]
    EmptyProgram,
    /// A NUL ends a C string, so the program would receive a different argument from the one given.
    #[error("argument {index} of the command ({}) contains a NUL byte, which cannot be passed to a program; remove it", Quoted(.argument))]
    CommandNul { index: usize, argument: String },
    #[error(
        "{} in your environment contains a NUL byte and cannot be passed into the sandbox; unset it or leave it out of env.pass",
        Quoted(.key)
    )]
    CallerEnv { key: String },
}

impl From<FieldError> for PolicyError {
    fn from(error: FieldError) -> PolicyError {
        PolicyError::Field(error)
    }
}

/// Who runs airlock: the ids and environment a default identity and environment are taken from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    /// Whether the invoker is root on the host; then the default identity inside is root too.
    pub is_root: bool,
    /// The invoker's whole environment. Only `TERM`, `LANG` and the keys of `env.pass` are read from it.
    pub env: Vec<(String, String)>,
    /// The invoker's login name, for `USER` inside when the identity inside is the invoker's (uid 0 is always
    /// `root`, so the caller may leave it `None` for root).
    pub user_name: Option<String>,
}

impl Invoker {
    /// The first value of `key`, as `getenv` would find it.
    fn var(&self, key: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// How a `--profile` argument names a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileRef {
    Builtin(String),
    File(PathBuf),
}

impl ProfileRef {
    /// A value containing `/` or ending in `.toml` is a file (`./strict.toml`, `my.toml`); anything else names a
    /// built-in. The rule is textual so that a file in the current directory never silently shadows a built-in.
    pub fn from_arg(arg: &str) -> ProfileRef {
        if arg.contains('/') || arg.ends_with(".toml") {
            ProfileRef::File(PathBuf::from(arg))
        } else {
            ProfileRef::Builtin(arg.to_owned())
        }
    }
}

const BUILTIN_NAMES: &[&str] =
    &["default", "strict", "dev", "net-debian", "net-pypi", "net-npm", "net-crates", "net-github"];

/// The built-in profiles' sources, compiled in so that airlock works without any file installed.
const BUILTINS: &[(&str, &str)] = &[
    ("default", include_str!("../profiles/default.toml")),
    ("strict", include_str!("../profiles/strict.toml")),
    ("dev", include_str!("../profiles/dev.toml")),
    // Network allow-lists: only a [network] section, to layer over another profile (`--profile` repeats).
    ("net-debian", include_str!("../profiles/net-debian.toml")),
    ("net-pypi", include_str!("../profiles/net-pypi.toml")),
    ("net-npm", include_str!("../profiles/net-npm.toml")),
    ("net-crates", include_str!("../profiles/net-crates.toml")),
    ("net-github", include_str!("../profiles/net-github.toml")),
];

/// The built-in profile names, `default` first.
pub fn builtin_profile_names() -> &'static [&'static str] {
    BUILTIN_NAMES
}

/// The TOML text of a built-in profile, comments included (`airlock profile show NAME`).
pub fn builtin_profile_source(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(builtin, _)| *builtin == name).map(|(_, source)| *source)
}

/// A built-in profile, parsed; `ProfileError::UnknownBuiltin` when there is none by that name.
pub fn load_builtin_profile(name: &str) -> Result<Profile, ProfileError> {
    let source = builtin_profile_source(name).ok_or_else(|| ProfileError::UnknownBuiltin { name: name.to_owned() })?;
    Profile::parse(source, &format!("builtin:{name}"))
}

/// A built-in profile, parsed. The tests parse every built-in, so `None` means only that there is no such name;
/// [`load_builtin_profile`] gives an error to show instead.
pub fn builtin_profile(name: &str) -> Option<Profile> {
    load_builtin_profile(name).ok()
}

impl Profile {
    /// Parses and checks a profile file. `origin` names it in errors (a path, or `builtin:NAME`). Every value is
    /// checked here, on its own, so that a mistake is reported with the line and field where it was made rather
    /// than later, mixed with flags.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let toml_error = |span: Option<Range<usize>>, field: Option<String>, message: &str| ProfileError::Toml {
            origin: origin.to_owned(),
            location: location(text, span, field),
            message: one_line(message),
        };
        // Parsed once: the document is checked, then deserialized (what `toml::from_str` does, without parsing
        // the text a second time: a profile is parsed at every `run`, issue 15). Its spans name the line and field
        // of a later error; the document is consumed by the deserializer, so an error's field is looked up in a
        // fresh parse of the same text, which costs only the failing command.
        let document =
            toml_edit::ImDocument::parse(text).map_err(|error| toml_error(error.span(), None, error.message()))?;
        check_sections_are_tables(&document).map_err(|(section, span)| {
            toml_error(span, Some(section.to_owned()), "expected a table, e.g. [section]")
        })?;
        let reparsed = || toml_edit::ImDocument::parse(text).ok();
        let profile = Profile::deserialize(toml_edit::de::Deserializer::from(document)).map_err(|error| {
            let span = error.span();
            let field =
                span.as_ref().and_then(|span| reparsed().and_then(|document| field_at_offset(&document, span.start)));
            toml_error(span, field, error.message())
        })?;
        profile.check().map_err(|error| ProfileError::Value {
            origin: origin.to_owned(),
            location: location(
                text,
                reparsed().and_then(|document| span_of(&document, error.field, error.item.as_ref())),
                Some(error.field.key().to_owned()),
            ),
            error: Box::new(error.error),
        })?;
        Ok(profile)
    }

    /// Layers `overlay` (typically the flags) on top of `self` (typically a file):
    /// - a setting that holds one value takes the overlay's when it has one;
    /// - lists are joined, the overlay's entries after `self`'s;
    /// - `env.set` entries of the overlay replace those with the same key.
    ///
    /// One exception keeps the network settings coherent: allow entries belong to the mode they came with. When
    /// the overlay sets `network.mode` to `none` or `host`, `self`'s allow entries are dropped (`--net none` over a
    /// profile with an allow list means no network); when the overlay adds allow entries without a mode, the mode
    /// becomes `allow` (as `--allow` implies `--net allow`).
    pub fn merge(self, overlay: Profile) -> Profile {
        let Profile { description, filesystem, network, env, process, limits, security, audit, vm } = overlay;
        let FilesystemSection { rootfs, rootfs_layers, writable_root, workspace, workspace_mode, ro_bind, bind, tmpfs } =
            filesystem;
        let NetworkSection { mode, allow } = network;
        let EnvSection { set, pass } = env;
        let ProcessSection { user, hostname, timeout, cwd } = process;
        let LimitsSection { memory, pids, cpus, disk, nofile, fsize, enforce } = limits;
        let SecuritySection { landlock, root_capabilities, isolation } = security;

        let (network_mode, network_allow) = match mode {
            Some(mode) if mode == "allow" => (Some(mode), joined(self.network.allow, allow)),
            Some(mode) => (Some(mode), allow),
            None if !allow.is_empty() => (Some("allow".to_owned()), joined(self.network.allow, allow)),
            None => (self.network.mode, self.network.allow),
        };
        let mut env_set = self.env.set;
        env_set.extend(set);

        Profile {
            description: description.or(self.description),
            filesystem: FilesystemSection {
                rootfs: rootfs.or(self.filesystem.rootfs),
                // One value (the root's layer stack), not a list to join.
                rootfs_layers: if rootfs_layers.is_empty() { self.filesystem.rootfs_layers } else { rootfs_layers },
                writable_root: writable_root.or(self.filesystem.writable_root),
                workspace: workspace.or(self.filesystem.workspace),
                workspace_mode: workspace_mode.or(self.filesystem.workspace_mode),
                ro_bind: joined(self.filesystem.ro_bind, ro_bind),
                bind: joined(self.filesystem.bind, bind),
                tmpfs: joined(self.filesystem.tmpfs, tmpfs),
            },
            network: NetworkSection { mode: network_mode, allow: network_allow },
            env: EnvSection { set: env_set, pass: joined(self.env.pass, pass) },
            process: ProcessSection {
                user: user.or(self.process.user),
                hostname: hostname.or(self.process.hostname),
                timeout: timeout.or(self.process.timeout),
                cwd: cwd.or(self.process.cwd),
            },
            limits: LimitsSection {
                memory: memory.or(self.limits.memory),
                pids: pids.or(self.limits.pids),
                cpus: cpus.or(self.limits.cpus),
                disk: disk.or(self.limits.disk),
                nofile: nofile.or(self.limits.nofile),
                fsize: fsize.or(self.limits.fsize),
                enforce: enforce.or(self.limits.enforce),
            },
            security: SecuritySection {
                landlock: landlock.or(self.security.landlock),
                root_capabilities: root_capabilities.or(self.security.root_capabilities),
                isolation: isolation.or(self.security.isolation),
            },
            audit: AuditSection { exec: audit.exec.or(self.audit.exec) },
            vm: VmSection { accel: vm.accel.or(self.vm.accel), kernel: vm.kernel.or(self.vm.kernel) },
        }
    }

    /// `[security] isolation` (`--isolation`): namespaces unless the profile says otherwise.
    pub fn isolation(&self) -> Result<Isolation, FieldError> {
        match self.security.isolation.as_deref() {
            None => Ok(Isolation::default()),
            Some(name) => Isolation::from_name(name).ok_or_else(|| {
                FieldError::new(
                    Field::Isolation,
                    ValueError::Choice { value: name.to_owned(), expected: Isolation::EXPECTED },
                )
            }),
        }
    }

    /// Interprets every setting, without anything from the invoker. The first error found is returned.
    fn check(&self) -> Result<Checked, FieldError> {
        // Checked here so that `profile validate` refuses a bad value; the backend is the caller's to pick.
        self.isolation()?;
        let filesystem = check_filesystem(&self.filesystem)?;
        let network = check_network(&self.network)?;
        let env_set = check_env(&self.env)?;
        let process = &self.process;
        let user = match &process.user {
            None => None,
            Some(user) => Some(
                parse_user(user)
                    .ok_or_else(|| FieldError::new(Field::User, ValueError::User { value: user.clone() }))?,
            ),
        };
        let hostname = match &process.hostname {
            None => DEFAULT_HOSTNAME.to_owned(),
            Some(name) => {
                names::validate_hostname(name).map_err(|error| FieldError::new(Field::Hostname, error))?;
                name.clone()
            }
        };
        let timeout = match &process.timeout {
            None => None,
            Some(text) => Some(units::parse_duration(text).map_err(|error| FieldError::new(Field::Timeout, error))?),
        };
        let cwd = match &process.cwd {
            None => None,
            Some(path) => {
                Some(names::validate_absolute_path(path).map_err(|error| FieldError::new(Field::Cwd, error))?)
            }
        };
        let limits = check_limits(&self.limits)?;
        let limits_enforcement = check_requirement(Field::LimitsEnforce, self.limits.enforce.as_deref())?;
        let landlock = check_requirement(Field::Landlock, self.security.landlock.as_deref())?;
        let root_capabilities = match self.security.root_capabilities.as_deref() {
            None => None,
            Some("none") => Some(RootCapabilities::None),
            Some("package-manager") => Some(RootCapabilities::PackageManager),
            Some(other) => {
                return Err(FieldError::new(
                    Field::RootCapabilities,
                    ValueError::Choice { value: other.to_owned(), expected: "none or package-manager" },
                ))
            }
        };

        Ok(Checked {
            filesystem,
            network,
            env_set,
            env_pass: self.env.pass.clone(),
            user,
            hostname,
            timeout,
            cwd,
            limits,
            limits_enforcement,
            landlock,
            root_capabilities,
        })
    }
}

/// The profile's settings interpreted, before the invoker's identity and environment are filled in.
struct Checked {
    filesystem: CheckedFilesystem,
    network: Network,
    env_set: Vec<(String, String)>,
    env_pass: Vec<String>,
    /// `None`: the invoker's ids.
    user: Option<Identity>,
    hostname: String,
    timeout: Option<Duration>,
    cwd: Option<String>,
    limits: Limits,
    limits_enforcement: Requirement,
    landlock: Requirement,
    /// `None`: the default for the root filesystem (see `resolve`).
    root_capabilities: Option<RootCapabilities>,
}

struct CheckedFilesystem {
    rootfs: Rootfs,
    writable_root: bool,
    workspace: Option<Workspace>,
    binds: Vec<BindMount>,
    tmpfs: Vec<TmpfsMount>,
}

fn check_filesystem(filesystem: &FilesystemSection) -> Result<CheckedFilesystem, FieldError> {
    let rootfs = check_rootfs(filesystem.rootfs.as_deref(), &filesystem.rootfs_layers)?;
    let writable_root = filesystem.writable_root.unwrap_or(false);
    if writable_root && rootfs == Rootfs::Host {
        return Err(FieldError::new(Field::WritableRoot, ValueError::WritableHostRoot));
    }
    let mode = check_workspace_mode(filesystem.workspace_mode.as_deref())?;
    let workspace = match &filesystem.workspace {
        None => None,
        Some(path) => {
            let path = check_destination(path).map_err(|error| FieldError::new(Field::Workspace, error))?;
            Some(Workspace { path, mode })
        }
    };

    // Each mount with the field and position it came from, to point a duplicate at its entry.
    let mut binds = Vec::new();
    for (field, list, writable) in [(Field::RoBind, &filesystem.ro_bind, false), (Field::Bind, &filesystem.bind, true)]
    {
        for (index, entry) in list.iter().enumerate() {
            let (source, destination) =
                check_bind(entry, writable).map_err(|error| FieldError::at(field, index, error))?;
            binds.push((field, index, BindMount { source, destination, writable }));
        }
    }
    let mut tmpfs = Vec::new();
    for (index, entry) in filesystem.tmpfs.iter().enumerate() {
        tmpfs.push(check_tmpfs(entry).map_err(|error| FieldError::at(Field::Tmpfs, index, error))?);
    }
    check_unique_destinations(workspace.as_ref(), &binds, &tmpfs)?;

    // Deeper destinations after shallower ones (stable, so the order given is kept otherwise): a mount inside
    // another's destination must come after it, or the outer one would hide it. With `--bind /data` and
    // `--ro-bind /data/keys`, `/data/keys` must stay read-only whichever flag came first.
    let mut binds: Vec<BindMount> = binds.into_iter().map(|(_, _, bind)| bind).collect();
    binds.sort_by_key(|bind| path_depth(&bind.destination));

    Ok(CheckedFilesystem { rootfs, writable_root, workspace, binds, tmpfs })
}

/// `env.set` checked, in key order; `env.pass` keys checked.
fn check_env(env: &EnvSection) -> Result<Vec<(String, String)>, FieldError> {
    for (index, key) in env.pass.iter().enumerate() {
        names::validate_env_key(key).map_err(|error| FieldError::at(Field::EnvPass, index, error))?;
    }
    let mut set = Vec::with_capacity(env.set.len());
    for (key, value) in &env.set {
        names::validate_env_key(key).map_err(|error| FieldError::key(Field::EnvSet, key, error))?;
        if names::validate_env_value(value).is_err() {
            let error = ValueError::EnvValue { key: key.clone() };
            return Err(FieldError::key(Field::EnvSet, key, error));
        }
        set.push((key.clone(), value.clone()));
    }
    Ok(set)
}

/// Turns a (merged) profile and a command into the policy the runtime builds.
///
/// Filled in from the invoker: the identity inside when `process.user` is unset (the invoker's ids, or root when
/// the invoker is root), and the environment, which is exactly:
/// `PATH` ([`DEFAULT_PATH`]), `HOME` ([`DEFAULT_HOME`]), `TERM` and `LANG` when the caller has them, `USER`
/// (`root` for uid 0 inside, the invoker's name when the identity is the invoker's, else the uid); then the
/// `env.pass` variables the caller has (missing ones are skipped); then `env.set`, which overrides all of these.
/// The result is sorted by name so the same policy always gives the same environment.
pub fn resolve(profile: &Profile, command: Vec<String>, invoker: &Invoker) -> Result<SandboxPolicy, PolicyError> {
    let checked = profile.check()?;
    let filesystem = checked.filesystem;
    check_command(&command)?;

    let identity = match checked.user {
        Some(identity) => identity,
        None if invoker.is_root => Identity { uid: 0, gid: 0 },
        None => Identity { uid: invoker.uid, gid: invoker.gid },
    };
    let env = environment(&checked.env_pass, &checked.env_set, identity, invoker)?;
    let cwd = checked.cwd.clone().unwrap_or_else(|| {
        filesystem.workspace.as_ref().map_or_else(|| "/".to_owned(), |workspace| workspace.path.clone())
    });

    Ok(SandboxPolicy {
        rootfs: filesystem.rootfs,
        writable_root: filesystem.writable_root,
        workspace: filesystem.workspace,
        binds: filesystem.binds,
        tmpfs: filesystem.tmpfs,
        network: checked.network,
        env,
        identity,
        hostname: checked.hostname,
        timeout: checked.timeout,
        limits: checked.limits,
        limits_enforcement: checked.limits_enforcement,
        landlock: checked.landlock,
        // A writable `/` (an image, `--writable-root`) is where package managers run, and they need root's
        // file-ownership capabilities; a read-only root has no use for them.
        root_capabilities: checked.root_capabilities.unwrap_or(if filesystem.writable_root {
            RootCapabilities::PackageManager
        } else {
            RootCapabilities::None
        }),
        cwd,
        command,
    })
}

/// The environment described at [`resolve`].
fn environment(
    pass: &[String],
    set: &[(String, String)],
    identity: Identity,
    invoker: &Invoker,
) -> Result<Vec<(String, String)>, PolicyError> {
    let caller = |key: &str| -> Result<Option<String>, PolicyError> {
        match invoker.var(key) {
            Some(value) if value.contains('\0') => Err(PolicyError::CallerEnv { key: key.to_owned() }),
            value => Ok(value.map(str::to_owned)),
        }
    };
    let user = match (identity.uid, &invoker.user_name) {
        (0, _) => "root".to_owned(),
        (uid, Some(name)) if uid == invoker.uid && !name.is_empty() && !name.contains('\0') => name.clone(),
        (uid, _) => uid.to_string(),
    };

    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    env.insert("HOME".to_owned(), DEFAULT_HOME.to_owned());
    env.insert("USER".to_owned(), user);
    for key in ["TERM", "LANG"].iter().copied().chain(pass.iter().map(String::as_str)) {
        if let Some(value) = caller(key)? {
            env.insert(key.to_owned(), value);
        }
    }
    env.extend(set.iter().cloned());
    Ok(env.into_iter().collect())
}

fn check_command(command: &[String]) -> Result<(), PolicyError> {
    let Some(program) = command.first() else {
        return Err(PolicyError::EmptyCommand);
    };
    if program.is_empty() {
        return Err(PolicyError::EmptyProgram);
    }
    if let Some((index, argument)) = command.iter().enumerate().find(|(_, argument)| argument.contains('\0')) {
        return Err(PolicyError::CommandNul { index, argument: argument.clone() });
    }
    Ok(())
}

fn check_rootfs(rootfs: Option<&str>, layers: &[String]) -> Result<Rootfs, FieldError> {
    if !layers.is_empty() {
        if let Some(rootfs) = rootfs.filter(|r| *r != "host") {
            return Err(FieldError::new(
                Field::RootfsLayers,
                ValueError::RootfsAndLayers { rootfs: rootfs.to_owned() },
            ));
        }
        let mut checked = Vec::with_capacity(layers.len());
        for (index, layer) in layers.iter().enumerate() {
            match names::validate_absolute_path(layer) {
                Ok(dir) if dir == "/" => {
                    return Err(FieldError::at(Field::RootfsLayers, index, ValueError::RootfsIsHostRoot))
                }
                Ok(dir) => checked.push(dir),
                Err(error) => return Err(FieldError::at(Field::RootfsLayers, index, error)),
            }
        }
        return Ok(Rootfs::Layers(checked));
    }
    match rootfs {
        None | Some("host") => Ok(Rootfs::Host),
        Some(dir) => match names::validate_absolute_path(dir) {
            Ok(dir) if dir == "/" => Err(FieldError::new(Field::Rootfs, ValueError::RootfsIsHostRoot)),
            Ok(dir) => Ok(Rootfs::Dir(dir)),
            Err(error) => Err(FieldError::new(Field::Rootfs, error)),
        },
    }
}

fn check_workspace_mode(mode: Option<&str>) -> Result<WorkspaceMode, FieldError> {
    match mode {
        None | Some("cow") => Ok(WorkspaceMode::Cow),
        Some("rw") => Ok(WorkspaceMode::Rw),
        Some("ro") => Ok(WorkspaceMode::Ro),
        Some(other) => Err(FieldError::new(
            Field::WorkspaceMode,
            ValueError::Choice { value: other.to_owned(), expected: "cow, rw or ro" },
        )),
    }
}

/// An absolute path that may be mounted on inside: not `/`, `/dev`, or `/proc` and below, which airlock builds
/// itself (a bind over `/proc` would undo the masking of its sensitive entries).
fn check_destination(path: &str) -> Result<String, ValueError> {
    let path = names::validate_absolute_path(path)?;
    let reserved = path == "/" || path == "/dev" || is_at_or_below(&path, "/proc");
    if reserved {
        return Err(ValueError::ReservedDestination { path });
    }
    Ok(path)
}

/// `SRC[:DST]`; DST defaults to SRC.
fn check_bind(entry: &str, writable: bool) -> Result<(String, String), ValueError> {
    let (source, destination) = match entry.split_once(':') {
        None => (entry, entry),
        Some((_, "")) => return Err(ValueError::EmptyAfterColon { entry: entry.to_owned(), form: "SRC[:DST]" }),
        Some((source, destination)) => (source, destination),
    };
    let source = names::validate_absolute_path(source)?;
    if is_at_or_below(&source, "/proc") {
        return Err(ValueError::HostProc { path: source });
    }
    if writable && is_at_or_below(&source, "/sys") {
        return Err(ValueError::WritableSys { path: source });
    }
    let destination = check_destination(destination)?;
    Ok((source, destination))
}

/// `DST[:SIZE]`.
fn check_tmpfs(entry: &str) -> Result<TmpfsMount, ValueError> {
    let (destination, size_bytes) = match entry.split_once(':') {
        None => (entry, None),
        Some((_, "")) => return Err(ValueError::EmptyAfterColon { entry: entry.to_owned(), form: "DST[:SIZE]" }),
        Some((destination, size)) => (destination, Some(units::parse_nonzero_size(size)?)),
    };
    Ok(TmpfsMount { destination: check_destination(destination)?, size_bytes })
}

fn check_unique_destinations(
    workspace: Option<&Workspace>,
    binds: &[(Field, usize, BindMount)],
    tmpfs: &[TmpfsMount],
) -> Result<(), FieldError> {
    let mut seen: HashSet<&str> = workspace.iter().map(|workspace| workspace.path.as_str()).collect();
    let binds = binds.iter().map(|(field, index, bind)| (*field, *index, bind.destination.as_str()));
    let tmpfs = tmpfs.iter().enumerate().map(|(index, mount)| (Field::Tmpfs, index, mount.destination.as_str()));
    for (field, index, destination) in binds.chain(tmpfs) {
        if !seen.insert(destination) {
            return Err(FieldError::at(
                field,
                index,
                ValueError::DuplicateDestination { path: destination.to_owned() },
            ));
        }
    }
    Ok(())
}

/// Whether normalised `path` is `dir` or inside it (`/proc/1` is in `/proc`, `/procfs` is not).
fn is_at_or_below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn path_depth(path: &str) -> usize {
    path.split('/').filter(|component| !component.is_empty()).count()
}

fn check_network(network: &NetworkSection) -> Result<Network, FieldError> {
    let mut rules = Vec::with_capacity(network.allow.len());
    for (index, entry) in network.allow.iter().enumerate() {
        rules.push(
            names::validate_allow_pattern(entry).map_err(|error| FieldError::at(Field::NetworkAllow, index, error))?,
        );
    }
    let mode_error = |error| Err(FieldError::new(Field::NetworkMode, error));
    match (network.mode.as_deref(), rules.is_empty()) {
        (None, true) | (Some("none"), true) => Ok(Network::None),
        (Some("host"), true) => Ok(Network::Host),
        (None, false) | (Some("allow"), false) => Ok(Network::Allow(rules)),
        (Some("allow"), true) => mode_error(ValueError::AllowModeWithoutEntries),
        (Some(mode @ ("none" | "host")), false) => mode_error(ValueError::AllowWithOtherMode { mode: mode.to_owned() }),
        (Some(other), _) => mode_error(ValueError::Choice { value: other.to_owned(), expected: "none, allow or host" }),
    }
}

/// `root`, `UID` or `UID:GID` (`--user`, `process.user`). `4294967295` is refused: it is `(uid_t)-1`, which the
/// id-setting calls read as "leave unchanged".
pub fn parse_user(user: &str) -> Option<Identity> {
    if user == "root" {
        return Some(Identity { uid: 0, gid: 0 });
    }
    let parse_id = |id: &str| -> Option<u32> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        id.parse::<u32>().ok().filter(|id| *id != u32::MAX)
    };
    match user.split_once(':') {
        None => parse_id(user).map(|uid| Identity { uid, gid: uid }),
        Some((uid, gid)) => Some(Identity { uid: parse_id(uid)?, gid: parse_id(gid)? }),
    }
}

fn check_limits(limits: &LimitsSection) -> Result<Limits, FieldError> {
    let memory_bytes = match &limits.memory {
        None => None,
        Some(text) => {
            let bytes = units::parse_nonzero_size(text).map_err(|error| FieldError::new(Field::Memory, error))?;
            if bytes < MIN_MEMORY {
                return Err(FieldError::new(Field::Memory, ValueError::MemoryTooSmall { value: text.clone() }));
            }
            Some(bytes)
        }
    };
    let pids = match limits.pids {
        None => None,
        Some(pids) if (1..=MAX_PIDS).contains(&pids) => Some(pids),
        Some(pids) => return Err(FieldError::new(Field::Pids, ValueError::Pids { value: pids })),
    };
    let cpus = match limits.cpus {
        None => None,
        Some(cpus) => Some(units::validate_cpus(cpus).map_err(|error| FieldError::new(Field::Cpus, error))?),
    };
    let disk_bytes = match &limits.disk {
        None => None,
        Some(text) => Some(units::parse_nonzero_size(text).map_err(|error| FieldError::new(Field::Disk, error))?),
    };
    let nofile = match limits.nofile {
        None => None,
        Some(nofile) if (1..=MAX_NOFILE).contains(&nofile) => Some(nofile),
        Some(nofile) => return Err(FieldError::new(Field::Nofile, ValueError::Nofile { value: nofile })),
    };
    let fsize_bytes = match &limits.fsize {
        None => None,
        Some(text) => Some(units::parse_nonzero_size(text).map_err(|error| FieldError::new(Field::Fsize, error))?),
    };
    Ok(Limits { memory_bytes, pids, cpus, disk_bytes, nofile, fsize_bytes })
}

/// `required` (the default) or `best-effort`, for `field`.
fn check_requirement(field: Field, value: Option<&str>) -> Result<Requirement, FieldError> {
    match value {
        None | Some("required") => Ok(Requirement::Required),
        Some("best-effort") => Ok(Requirement::BestEffort),
        Some(other) => Err(FieldError::new(
            field,
            ValueError::Choice { value: other.to_owned(), expected: "required or best-effort" },
        )),
    }
}

fn joined(mut first: Vec<String>, second: Vec<String>) -> Vec<String> {
    first.extend(second);
    first
}

/// toml's messages can span lines ("invalid table header\nexpected `.`, `]`") and quote keys from the file as
/// they are; ours are one line, without control characters, and of bounded length.
fn one_line(message: &str) -> String {
    let joined = message.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join("; ");
    printable(&joined, 240)
}

/// `text` with control characters escaped, cut after `max_chars` characters.
fn printable(text: &str, max_chars: usize) -> String {
    let mut shown = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            shown.push_str("...");
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

fn location(text: &str, span: Option<Range<usize>>, field: Option<String>) -> Location {
    let (line, column) = match span {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    Location { line, column, field }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |newline| newline + 1);
    let column = match text.get(line_start..offset) {
        Some(prefix) => prefix.chars().count() + 1,
        None => offset - line_start + 1,
    };
    (line, column)
}

/// serde fills a struct from an array too, by position (`limits = ["2G", 512]` would set memory and pids), so
/// that each section is a table is checked here; a profile should mean what it plainly says.
fn check_sections_are_tables(
    document: &toml_edit::ImDocument<&str>,
) -> Result<(), (&'static str, Option<Range<usize>>)> {
    for section in ["filesystem", "network", "env", "process", "limits", "security"] {
        if let Some(item) = document.as_table().get(section) {
            if item.as_table_like().is_none() {
                return Err((section, item.span()));
            }
        }
    }
    Ok(())
}

/// The dotted key of the innermost key or value of `document` that contains `offset`, to name the field of an
/// error that toml reports only with a position.
fn field_at_offset(document: &toml_edit::ImDocument<&str>, offset: usize) -> Option<String> {
    let mut path = Vec::new();
    field_at(document.as_table(), offset, &mut path).then(|| printable(&path.join("."), 80))
}

fn field_at(table: &dyn toml_edit::TableLike, offset: usize, path: &mut Vec<String>) -> bool {
    let contains = |span: Option<Range<usize>>| span.is_some_and(|span| span.contains(&offset));
    for (name, item) in table.iter() {
        path.push(name.to_owned());
        let key_span = table.get_key_value(name).and_then(|(key, _)| key.span());
        if contains(key_span) {
            return true;
        }
        // A table's span may cover only its header, or be missing for an implicit table (`[env.set]` implies
        // `env`), so its entries are searched whatever its span.
        if let Some(inner) = item.as_table_like() {
            if field_at(inner, offset, path) {
                return true;
            }
        }
        if contains(item.span()) {
            return true;
        }
        path.pop();
    }
    false
}

/// Where in `text` the value of `field` (or its entry `item`) is, to point an error at it.
fn span_of(document: &toml_edit::ImDocument<&str>, field: Field, item: Option<&Item>) -> Option<Range<usize>> {
    let mut table: &dyn toml_edit::TableLike = document.as_table();
    let mut value = None;
    for name in field.key().split('.') {
        let (_, item) = table.get_key_value(name)?;
        value = Some(item);
        if let Some(inner) = item.as_table_like() {
            table = inner;
        }
    }
    let value = value?;
    match item {
        None => value.span(),
        Some(Item::Index(index)) => value.as_array()?.get(*index)?.span(),
        Some(Item::Key(key)) => {
            let (key, entry) = value.as_table_like()?.get_key_value(key)?;
            key.span().or_else(|| entry.span())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "./p.toml";

    fn parse(text: &str) -> Result<Profile, ProfileError> {
        Profile::parse(text, ORIGIN)
    }

    fn parse_error(text: &str) -> ProfileError {
        parse(text).expect_err(text)
    }

    fn location_of(error: &ProfileError) -> &Location {
        match error {
            ProfileError::Toml { location, .. } | ProfileError::Value { location, .. } => location,
            ProfileError::UnknownBuiltin { .. } => panic!("no location in {error:?}"),
        }
    }

    fn at(line: usize, column: usize, field: &str) -> Location {
        Location { line: Some(line), column: Some(column), field: Some(field.to_owned()) }
    }

    fn invoker() -> Invoker {
        Invoker {
            uid: 1000,
            gid: 1000,
            is_root: false,
            env: vec![
                ("TERM".into(), "xterm-256color".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("SECRET_TOKEN".into(), "hunter2".into()),
                ("EDITOR".into(), "vi".into()),
                ("PATH".into(), "/home/u/bin:/usr/bin".into()),
                ("HOME".into(), "/home/u".into()),
            ],
            user_name: Some("alice".into()),
        }
    }

    fn command() -> Vec<String> {
        vec!["python3".into(), "main.py".into()]
    }

    fn resolve_text(text: &str) -> Result<SandboxPolicy, PolicyError> {
        resolve(&parse(text).unwrap(), command(), &invoker())
    }

    /// Checks a profile both ways: on its own as a file (the error names the field) and as flags merged over
    /// nothing (resolve names the field).
    fn field_error(text: &str) -> (Field, ValueError) {
        let profile: Profile = toml::from_str(text).unwrap();
        let resolved = resolve(&Profile::default().merge(profile), command(), &invoker()).expect_err(text);
        let PolicyError::Field(FieldError { field, error, .. }) = resolved else {
            panic!("not a field error: {resolved:?}");
        };
        match parse_error(text) {
            ProfileError::Value { location, error: file_error, .. } => {
                assert_eq!(location.field.as_deref(), Some(field.key()), "{text}");
                assert!(location.line.is_some(), "{text}");
                // By message: a NaN in the error would never compare equal.
                assert_eq!(file_error.to_string(), error.to_string(), "{text}");
            }
            other => panic!("not a value error: {other:?}"),
        }
        (field, error)
    }

    const FULL: &str = r#"
description = "everything"
[filesystem]
rootfs = "/srv/root"
workspace = "/work/app/"
workspace_mode = "rw"
ro_bind = ["/opt/tools", "/data/in:/in"]
bind = ["/data/out:/out"]
tmpfs = ["/scratch:64M", "/cache"]
[network]
mode = "allow"
allow = ["PyPI.org", "*.github.com:443"]
[env]
set = { CI = "1", PATH = "/opt/tools/bin:/usr/bin" }
pass = ["EDITOR", "MISSING"]
[process]
user = "1000:100"
hostname = "box"
timeout = "30m"
[limits]
memory = "2G"
pids = 512
cpus = 1.5
disk = "10G"
nofile = 2048
fsize = "1G"
enforce = "best-effort"
[security]
landlock = "best-effort"
"#;

    #[test]
    fn full_profile_parses_and_resolves() {
        let profile = parse(FULL).unwrap();
        assert_eq!(profile.description.as_deref(), Some("everything"));
        assert_eq!(profile.filesystem.ro_bind, ["/opt/tools", "/data/in:/in"]);
        assert_eq!(profile.limits.pids, Some(512));
        assert_eq!(profile.limits.cpus, Some(1.5));

        let policy = resolve(&profile, command(), &invoker()).unwrap();
        assert_eq!(policy.rootfs, Rootfs::Dir("/srv/root".into()));
        assert_eq!(policy.workspace, Some(Workspace { path: "/work/app".into(), mode: WorkspaceMode::Rw }));
        assert_eq!(policy.cwd, "/work/app");
        assert_eq!(
            policy.binds,
            // Shallower destinations first; otherwise in the order given, ro_bind before bind.
            [
                BindMount { source: "/data/in".into(), destination: "/in".into(), writable: false },
                BindMount { source: "/data/out".into(), destination: "/out".into(), writable: true },
                BindMount { source: "/opt/tools".into(), destination: "/opt/tools".into(), writable: false },
            ]
        );
        assert_eq!(
            policy.tmpfs,
            [
                TmpfsMount { destination: "/scratch".into(), size_bytes: Some(64 << 20) },
                TmpfsMount { destination: "/cache".into(), size_bytes: None },
            ]
        );
        assert_eq!(
            policy.network,
            Network::Allow(vec![
                crate::sandbox::AllowRule { domain: "pypi.org".into(), port: None },
                crate::sandbox::AllowRule { domain: "*.github.com".into(), port: Some(443) },
            ])
        );
        assert_eq!(
            policy.env,
            [
                ("CI", "1"),
                ("EDITOR", "vi"),
                ("HOME", "/tmp"),
                ("LANG", "C.UTF-8"),
                ("PATH", "/opt/tools/bin:/usr/bin"),
                ("TERM", "xterm-256color"),
                ("USER", "alice"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(policy.identity, Identity { uid: 1000, gid: 100 });
        assert_eq!(policy.hostname, "box");
        assert_eq!(policy.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(
            policy.limits,
            Limits {
                memory_bytes: Some(2 << 30),
                pids: Some(512),
                cpus: Some(1.5),
                disk_bytes: Some(10 << 30),
                nofile: Some(2048),
                fsize_bytes: Some(1 << 30),
            }
        );
        assert_eq!(policy.limits_enforcement, Requirement::BestEffort);
        assert_eq!(policy.landlock, Requirement::BestEffort);
        assert_eq!(policy.command, command());
    }

    #[test]
    fn empty_profile_resolves_to_the_defaults() {
        assert_eq!(parse("").unwrap(), Profile::default());
        assert_eq!(parse("# nothing\n\n").unwrap(), Profile::default());
        let policy = resolve(&Profile::default(), command(), &invoker()).unwrap();
        assert_eq!(policy.rootfs, Rootfs::Host);
        assert_eq!(policy.workspace, None);
        assert!(policy.binds.is_empty() && policy.tmpfs.is_empty());
        assert_eq!(policy.network, Network::None);
        assert_eq!(policy.identity, Identity { uid: 1000, gid: 1000 });
        assert_eq!(policy.hostname, "airlock");
        assert_eq!(policy.timeout, None);
        assert!(policy.limits.is_empty());
        assert_eq!((policy.limits.nofile, policy.limits.fsize_bytes), (None, None));
        assert_eq!(policy.limits_enforcement, Requirement::Required);
        assert_eq!(policy.landlock, Requirement::Required);
        assert_eq!(policy.cwd, "/");
        // Exactly these: the caller's PATH, HOME, SECRET_TOKEN and EDITOR stay outside.
        assert_eq!(
            policy.env,
            [
                ("HOME", "/tmp"),
                ("LANG", "C.UTF-8"),
                ("PATH", DEFAULT_PATH),
                ("TERM", "xterm-256color"),
                ("USER", "alice"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn environment_without_term_or_lang() {
        let bare = Invoker { env: Vec::new(), user_name: None, ..invoker() };
        let policy = resolve(&Profile::default(), command(), &bare).unwrap();
        assert_eq!(
            policy.env,
            [("HOME", "/tmp"), ("PATH", DEFAULT_PATH), ("USER", "1000")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn environment_user_follows_the_identity_inside() {
        let user_of = |profile: &str, invoker: &Invoker| {
            let policy = resolve(&parse(profile).unwrap(), command(), invoker).unwrap();
            policy.env.into_iter().find(|(k, _)| k == "USER").map(|(_, v)| v).unwrap()
        };
        assert_eq!(user_of("", &invoker()), "alice");
        assert_eq!(user_of("process.user = \"root\"", &invoker()), "root");
        assert_eq!(user_of("process.user = \"0:1000\"", &invoker()), "root");
        assert_eq!(user_of("process.user = \"1000\"", &invoker()), "alice");
        assert_eq!(user_of("process.user = \"2000\"", &invoker()), "2000");
        let root = Invoker { uid: 0, gid: 0, is_root: true, user_name: Some("root".into()), ..invoker() };
        assert_eq!(user_of("", &root), "root");
    }

    #[test]
    fn environment_pass_and_set() {
        let text = "[env]\npass = [\"EDITOR\", \"NOT_SET\", \"EDITOR\"]\nset = { TERM = \"dumb\", HOME = \"/work\" }\n";
        let env = resolve_text(text).unwrap().env;
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("EDITOR"), Some("vi"));
        assert_eq!(get("NOT_SET"), None);
        assert_eq!(get("TERM"), Some("dumb"));
        assert_eq!(get("HOME"), Some("/work"));
        assert_eq!(get("SECRET_TOKEN"), None);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(keys, sorted, "sorted and without duplicates");
    }

    #[test]
    fn environment_from_the_caller_with_nul_is_refused() {
        let mut hostile = invoker();
        hostile.env.insert(0, ("TERM".into(), "xterm\0evil".into()));
        assert_eq!(
            resolve(&Profile::default(), command(), &hostile).unwrap_err(),
            PolicyError::CallerEnv { key: "TERM".into() }
        );
        // The first value wins, as with getenv, so a later NUL duplicate is never read.
        let mut later = invoker();
        later.env.push(("TERM".into(), "x\0".into()));
        assert!(resolve(&Profile::default(), command(), &later).is_ok());
    }

    #[test]
    fn identity() {
        let identity =
            |text: &str, invoker: &Invoker| resolve(&parse(text).unwrap(), command(), invoker).unwrap().identity;
        let root = Invoker { uid: 0, gid: 0, is_root: true, ..invoker() };
        assert_eq!(identity("", &invoker()), Identity { uid: 1000, gid: 1000 });
        assert_eq!(identity("", &root), Identity { uid: 0, gid: 0 });
        assert_eq!(identity("process.user = \"root\"", &invoker()), Identity { uid: 0, gid: 0 });
        assert_eq!(identity("process.user = \"1234\"", &invoker()), Identity { uid: 1234, gid: 1234 });
        assert_eq!(identity("process.user = \"1234:5\"", &root), Identity { uid: 1234, gid: 5 });
        assert_eq!(identity("process.user = \"0\"", &invoker()), Identity { uid: 0, gid: 0 });
        assert_eq!(
            identity("process.user = \"4294967294\"", &invoker()),
            Identity { uid: 4_294_967_294, gid: 4_294_967_294 }
        );
        for bad in [
            "",
            "Root",
            "alice",
            "-1",
            "+1",
            "1000:",
            ":1000",
            "1000:100:1",
            "4294967295",
            "1:4294967295",
            "4294967296",
            "1 ",
            "0x10",
            "1\0",
        ] {
            let text = format!("process.user = {:?}", bad);
            let text = text.replace("\\0", "\\u0000");
            assert_eq!(field_error(&text), (Field::User, ValueError::User { value: bad.into() }), "{bad:?}");
        }
    }

    #[test]
    fn filesystem_values() {
        assert_eq!(resolve_text("filesystem.rootfs = \"host\"").unwrap().rootfs, Rootfs::Host);
        assert_eq!(resolve_text("filesystem.rootfs = \"//srv/r/\"").unwrap().rootfs, Rootfs::Dir("/srv/r".into()));
        assert_eq!(field_error("filesystem.rootfs = \"/\"").1, ValueError::RootfsIsHostRoot);
        let layers = resolve_text("[filesystem]\nrootfs_layers = [\"/l/0\", \"/l/1/\"]\nwritable_root = true").unwrap();
        assert_eq!(layers.rootfs, Rootfs::Layers(vec!["/l/0".into(), "/l/1".into()]));
        assert!(layers.writable_root);
        assert!(!resolve_text("filesystem.rootfs = \"/srv/r\"").unwrap().writable_root);
        assert_eq!(field_error("filesystem.writable_root = true").1, ValueError::WritableHostRoot);
        let both = field_error("[filesystem]\nrootfs = \"/srv/r\"\nrootfs_layers = [\"/l\"]");
        assert_eq!(both, (Field::RootfsLayers, ValueError::RootfsAndLayers { rootfs: "/srv/r".into() }));
        assert_eq!(field_error("filesystem.rootfs_layers = [\"rel\"]").0, Field::RootfsLayers);
        assert_eq!(field_error("filesystem.rootfs = \"/.//\"").1, ValueError::RootfsIsHostRoot);
        for bad in ["relative", "", "/srv/../etc", "Host"] {
            assert_eq!(field_error(&format!("filesystem.rootfs = {bad:?}")).0, Field::Rootfs, "{bad}");
        }
        for bad in ["/", "/proc", "/proc/1", "/dev", "rel", "/a/../b"] {
            assert_eq!(field_error(&format!("filesystem.workspace = {bad:?}")).0, Field::Workspace, "{bad}");
        }
        for (mode, expected) in [("cow", WorkspaceMode::Cow), ("rw", WorkspaceMode::Rw), ("ro", WorkspaceMode::Ro)] {
            let text = format!("[filesystem]\nworkspace = \"/w\"\nworkspace_mode = \"{mode}\"");
            assert_eq!(resolve_text(&text).unwrap().workspace.unwrap().mode, expected);
        }
        assert_eq!(
            field_error("filesystem.workspace_mode = \"COW\""),
            (Field::WorkspaceMode, ValueError::Choice { value: "COW".into(), expected: "cow, rw or ro" })
        );
        // A mode alone is fine: the workspace may come from a flag.
        assert_eq!(resolve_text("filesystem.workspace_mode = \"ro\"").unwrap().workspace, None);
    }

    fn normal(path: &str) -> String {
        names::validate_absolute_path(path).unwrap()
    }

    #[test]
    fn binds() {
        let binds = |text: &str| resolve_text(text).unwrap().binds;
        let bind = |source: &str, destination: &str, writable| BindMount {
            source: source.into(),
            destination: destination.into(),
            writable,
        };
        assert_eq!(binds("filesystem.bind = [\"/a\"]"), [bind("/a", "/a", true)]);
        assert_eq!(binds("filesystem.ro_bind = [\"/a//b/:/c/./d\"]"), [bind("/a/b", "/c/d", false)]);
        assert_eq!(binds("filesystem.ro_bind = [\"/dev/kvm\"]"), [bind("/dev/kvm", "/dev/kvm", false)]);
        assert_eq!(binds("filesystem.ro_bind = [\"/:/host\"]"), [bind("/", "/host", false)]);
        // The first ':' separates; a destination may contain more.
        assert_eq!(binds("filesystem.bind = [\"/a:/b:c\"]"), [bind("/a", "/b:c", true)]);
        // Deeper destinations come after shallower ones, whichever list they are in.
        assert_eq!(
            binds("[filesystem]\nro_bind = [\"/d/keys\", \"/x\"]\nbind = [\"/d\"]"),
            [bind("/x", "/x", false), bind("/d", "/d", true), bind("/d/keys", "/d/keys", false)]
        );
        for bad in ["/", "/proc", "/proc/sys", "/proc/1/root", "/dev", "/dev/"] {
            for field in ["ro_bind", "bind"] {
                let text = format!("filesystem.{field} = [\"/src:{bad}\"]");
                assert!(matches!(field_error(&text).1, ValueError::ReservedDestination { .. }), "{text}");
            }
            // Without a destination, a /proc source is refused as a source first.
            let text = format!("filesystem.bind = [\"{bad}\"]");
            assert!(
                matches!(field_error(&text).1, ValueError::ReservedDestination { .. } | ValueError::HostProc { .. }),
                "{text}"
            );
        }
        for bad in ["", "a", "/a:", "/a:b", "a:/b", ":/b", "/a/../b", "/a:/b/..", "/a\\u0000b"] {
            let text = format!("filesystem.bind = [\"{bad}\"]");
            assert_eq!(field_error(&text).0, Field::Bind, "{text}");
        }
        assert!(matches!(
            field_error("filesystem.ro_bind = [\"/a:\"]").1,
            ValueError::EmptyAfterColon { form: "SRC[:DST]", .. }
        ));
        // /procfoo is not /proc.
        assert_eq!(binds("filesystem.bind = [\"/procfoo\"]"), [bind("/procfoo", "/procfoo", true)]);
        // Never the host's /proc; /sys only read-only.
        for source in ["/proc", "/proc/", "//proc/1/environ", "/proc/self"] {
            for field in ["ro_bind", "bind"] {
                let text = format!("filesystem.{field} = [\"{source}:/x\"]");
                assert!(matches!(field_error(&text).1, ValueError::HostProc { .. }), "{text}");
            }
        }
        for source in ["/sys", "/sys/fs/cgroup", "/sys/"] {
            let text = format!("filesystem.bind = [\"{source}:/x\"]");
            assert!(matches!(field_error(&text).1, ValueError::WritableSys { .. }), "{text}");
            let text = format!("filesystem.ro_bind = [\"{source}:/x\"]");
            assert_eq!(binds(&text), [bind(&normal(source), "/x", false)]);
        }
        assert_eq!(binds("filesystem.bind = [\"/system:/x\"]"), [bind("/system", "/x", true)]);
    }

    #[test]
    fn tmpfs() {
        let tmpfs = |text: &str| resolve_text(text).unwrap().tmpfs;
        assert_eq!(
            tmpfs("filesystem.tmpfs = [\"/t\", \"/u/:1.5G\"]"),
            [
                TmpfsMount { destination: "/t".into(), size_bytes: None },
                TmpfsMount { destination: "/u".into(), size_bytes: Some(1_610_612_736) },
            ]
        );
        assert_eq!(
            field_error("filesystem.tmpfs = [\"/t:0\"]"),
            (Field::Tmpfs, ValueError::Unit(UnitError::SizeZero { value: "0".into() }))
        );
        assert_eq!(
            field_error("filesystem.tmpfs = [\"/t:lots\"]"),
            (Field::Tmpfs, ValueError::Unit(UnitError::Size { value: "lots".into() }))
        );
        for bad in ["/", "/proc", "/dev", "t", "/t:", "/t:-1M"] {
            assert_eq!(field_error(&format!("filesystem.tmpfs = [{bad:?}]")).0, Field::Tmpfs, "{bad}");
        }
    }

    #[test]
    fn duplicate_destinations() {
        for text in [
            "[filesystem]\nbind = [\"/a\", \"/b:/a\"]",
            "[filesystem]\nbind = [\"/a\"]\nro_bind = [\"/x:/a/\"]",
            "[filesystem]\nbind = [\"/a\"]\ntmpfs = [\"/a:1M\"]",
            "[filesystem]\nworkspace = \"/w\"\nro_bind = [\"/other:/w\"]",
            "[filesystem]\nworkspace = \"/w\"\ntmpfs = [\"//w\"]",
        ] {
            assert!(matches!(field_error(text).1, ValueError::DuplicateDestination { .. }), "{text}");
        }
        // A mount inside another is not a duplicate.
        assert!(resolve_text("[filesystem]\nworkspace = \"/w\"\ntmpfs = [\"/w/node_modules\"]").is_ok());
    }

    #[test]
    fn network_modes() {
        let network = |text: &str| resolve_text(text).unwrap().network;
        assert_eq!(network(""), Network::None);
        assert_eq!(network("network.mode = \"none\""), Network::None);
        assert_eq!(network("network.mode = \"host\""), Network::Host);
        let pypi = Network::Allow(vec![crate::sandbox::AllowRule { domain: "pypi.org".into(), port: None }]);
        assert_eq!(network("network.allow = [\"pypi.org\"]"), pypi);
        assert_eq!(network("network = { mode = \"allow\", allow = [\"pypi.org\"] }"), pypi);
        assert_eq!(field_error("network.mode = \"allow\""), (Field::NetworkMode, ValueError::AllowModeWithoutEntries));
        for mode in ["none", "host"] {
            assert_eq!(
                field_error(&format!("network = {{ mode = \"{mode}\", allow = [\"pypi.org\"] }}")),
                (Field::NetworkMode, ValueError::AllowWithOtherMode { mode: mode.into() })
            );
        }
        assert_eq!(
            field_error("network.mode = \"off\""),
            (Field::NetworkMode, ValueError::Choice { value: "off".into(), expected: "none, allow or host" })
        );
        for bad in ["*", "https://pypi.org", "pypi.org:0", "a.*.com", ""] {
            assert_eq!(field_error(&format!("network.allow = [{bad:?}]")).0, Field::NetworkAllow, "{bad}");
        }
    }

    #[test]
    fn env_values() {
        for bad in ["\"1A\" = \"x\"", "\"A=B\" = \"x\"", "\"\" = \"x\"", "\"A-B\" = \"x\""] {
            assert_eq!(field_error(&format!("[env.set]\n{bad}")).0, Field::EnvSet, "{bad}");
        }
        assert_eq!(field_error("env.set.A = \"x\\u0000y\""), (Field::EnvSet, ValueError::EnvValue { key: "A".into() }));
        for bad in ["", "A=B", "1A", "A\\u0000"] {
            assert_eq!(field_error(&format!("env.pass = [\"{bad}\"]")).0, Field::EnvPass, "{bad}");
        }
    }

    #[test]
    fn process_values() {
        assert_eq!(field_error("process.hostname = \"-x\"").0, Field::Hostname);
        assert_eq!(field_error("process.hostname = \"\"").0, Field::Hostname);
        assert_eq!(
            field_error("process.timeout = \"soon\""),
            (Field::Timeout, ValueError::Unit(UnitError::Duration { value: "soon".into() }))
        );
        assert_eq!(field_error("process.timeout = \"0s\"").0, Field::Timeout);
        assert_eq!(field_error("process.timeout = \"9999d\"").0, Field::Timeout);
        assert_eq!(resolve_text("process.timeout = \"90\"").unwrap().timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn limit_values() {
        assert_eq!(
            field_error("limits.memory = \"512\""),
            (Field::Memory, ValueError::MemoryTooSmall { value: "512".into() })
        );
        assert_eq!(field_error("limits.memory = \"0\"").0, Field::Memory);
        assert_eq!(field_error("limits.memory = \"2X\"").0, Field::Memory);
        assert_eq!(resolve_text("limits.memory = \"1M\"").unwrap().limits.memory_bytes, Some(1 << 20));
        assert_eq!(field_error("limits.pids = 0"), (Field::Pids, ValueError::Pids { value: 0 }));
        assert_eq!(field_error("limits.pids = 4194305"), (Field::Pids, ValueError::Pids { value: 4_194_305 }));
        assert_eq!(resolve_text("limits.pids = 4194304").unwrap().limits.pids, Some(4_194_304));
        for bad in ["0", "0.001", "1025", "nan", "inf", "-1"] {
            assert_eq!(field_error(&format!("limits.cpus = {bad}")).0, Field::Cpus, "{bad}");
        }
        // An integer is a number of CPUs too.
        assert_eq!(resolve_text("limits.cpus = 2").unwrap().limits.cpus, Some(2.0));
        assert_eq!(field_error("limits.disk = \"0\"").0, Field::Disk);
        assert_eq!(resolve_text("limits.disk = \"1K\"").unwrap().limits.disk_bytes, Some(1024));
    }

    #[test]
    fn nofile_values() {
        assert_eq!(resolve_text("limits.nofile = 1").unwrap().limits.nofile, Some(1));
        assert_eq!(resolve_text("limits.nofile = 1048576").unwrap().limits.nofile, Some(MAX_NOFILE));
        assert_eq!(field_error("limits.nofile = 0"), (Field::Nofile, ValueError::Nofile { value: 0 }));
        assert_eq!(field_error("limits.nofile = 1048577"), (Field::Nofile, ValueError::Nofile { value: 1_048_577 }));
        let error = parse_error("# open files\n[limits]\npids = 64\nnofile = 0\n");
        assert_eq!(location_of(&error), &at(4, 10, "limits.nofile"));
        assert_eq!(
            error.to_string(),
            "profile ./p.toml line 4, column 10, field limits.nofile: open-file limit 0 is out of range: expected 1 \
             to 1048576 (e.g. 1024)"
        );
        // Not a number, or negative: refused by type, still with line and field.
        for bad in ["\"1024\"", "-1", "1.5", "true"] {
            let error = parse_error(&format!("[limits]\nnofile = {bad}\n"));
            assert!(matches!(error, ProfileError::Toml { .. }), "{bad}: {error:?}");
            assert_eq!(location_of(&error), &at(2, 10, "limits.nofile"), "{bad}");
        }
    }

    #[test]
    fn fsize_values() {
        assert_eq!(resolve_text("limits.fsize = \"1G\"").unwrap().limits.fsize_bytes, Some(1 << 30));
        assert_eq!(resolve_text("limits.fsize = \"1\"").unwrap().limits.fsize_bytes, Some(1));
        assert_eq!(resolve_text("limits.fsize = \"1.5M\"").unwrap().limits.fsize_bytes, Some(3 << 19));
        assert_eq!(
            field_error("limits.fsize = \"0\""),
            (Field::Fsize, ValueError::Unit(UnitError::SizeZero { value: "0".into() }))
        );
        assert_eq!(
            field_error("limits.fsize = \"big\""),
            (Field::Fsize, ValueError::Unit(UnitError::Size { value: "big".into() }))
        );
        assert_eq!(field_error("limits.fsize = \"16777216T\"").0, Field::Fsize);
        let error = parse_error("[limits]\n\nfsize = \"4X\"\n");
        assert_eq!(location_of(&error), &at(3, 9, "limits.fsize"));
        assert!(error.to_string().starts_with("profile ./p.toml line 3, column 9, field limits.fsize: invalid size"));
        let error = parse_error("[limits]\nfsize = 4096\n");
        assert_eq!(location_of(&error), &at(2, 9, "limits.fsize"));
        assert!(error.to_string().contains("expected a string"), "{error}");
    }

    #[test]
    fn limits_enforce_values() {
        let enforcement = |text: &str| resolve_text(text).unwrap().limits_enforcement;
        assert_eq!(enforcement(""), Requirement::Required);
        assert_eq!(enforcement("limits.enforce = \"required\""), Requirement::Required);
        assert_eq!(enforcement("limits.enforce = \"best-effort\""), Requirement::BestEffort);
        // Independent of Landlock's setting, both ways.
        let policy = resolve_text("limits.enforce = \"best-effort\"\nsecurity.landlock = \"required\"").unwrap();
        assert_eq!((policy.limits_enforcement, policy.landlock), (Requirement::BestEffort, Requirement::Required));
        let policy = resolve_text("security.landlock = \"best-effort\"").unwrap();
        assert_eq!((policy.limits_enforcement, policy.landlock), (Requirement::Required, Requirement::BestEffort));
        for bad in ["off", "best_effort", "Required", ""] {
            assert_eq!(
                field_error(&format!("limits.enforce = \"{bad}\"")),
                (Field::LimitsEnforce, ValueError::Choice { value: bad.into(), expected: "required or best-effort" }),
                "{bad}"
            );
        }
        let error = parse_error("[limits]\nmemory = \"1G\"\nenforce = \"maybe\"\n");
        assert_eq!(location_of(&error), &at(3, 11, "limits.enforce"));
        assert_eq!(
            error.to_string(),
            "profile ./p.toml line 3, column 11, field limits.enforce: unknown value \"maybe\": expected required or \
             best-effort"
        );
        // Profile-only: the message after merging names no flag.
        let flags = Profile {
            limits: LimitsSection { enforce: Some("no".into()), ..LimitsSection::default() },
            ..Profile::default()
        };
        let message = resolve(&flags, command(), &invoker()).unwrap_err().to_string();
        assert!(message.starts_with("limits.enforce: unknown value \"no\""), "{message}");
    }

    #[test]
    fn merge_new_limits() {
        let base = parse("[limits]\nnofile = 1024\nfsize = \"1G\"\nenforce = \"required\"\n").unwrap();
        let overlay = parse("[limits]\nnofile = 4096\nenforce = \"best-effort\"\n").unwrap();
        let merged = base.clone().merge(overlay.clone());
        assert_eq!(merged.limits.nofile, Some(4096));
        assert_eq!(merged.limits.fsize.as_deref(), Some("1G"));
        assert_eq!(merged.limits.enforce.as_deref(), Some("best-effort"));
        let policy = resolve(&merged, command(), &invoker()).unwrap();
        assert_eq!((policy.limits.nofile, policy.limits.fsize_bytes), (Some(4096), Some(1 << 30)));
        assert_eq!(policy.limits_enforcement, Requirement::BestEffort);
        // The other way round, the base's values win where the overlay says nothing.
        let merged = overlay.merge(base.clone());
        assert_eq!(merged.limits.nofile, Some(1024));
        assert_eq!(merged.limits.fsize.as_deref(), Some("1G"));
        assert_eq!(merged.limits.enforce.as_deref(), Some("required"));
        // Flags (which never set these) leave them as the profile has them.
        let flags = Profile {
            limits: LimitsSection { memory: Some("2G".into()), ..LimitsSection::default() },
            ..Profile::default()
        };
        let merged = base.clone().merge(flags);
        assert_eq!(
            (merged.limits.nofile, merged.limits.fsize, merged.limits.enforce),
            (base.limits.nofile, base.limits.fsize, base.limits.enforce)
        );
    }

    #[test]
    fn landlock_values() {
        assert_eq!(resolve_text("security.landlock = \"required\"").unwrap().landlock, Requirement::Required);
        assert_eq!(resolve_text("security.landlock = \"best-effort\"").unwrap().landlock, Requirement::BestEffort);
        assert_eq!(
            field_error("security.landlock = \"off\""),
            (Field::Landlock, ValueError::Choice { value: "off".into(), expected: "required or best-effort" })
        );
    }

    #[test]
    fn root_capabilities_default_to_the_roots_writability_and_take_two_values() {
        let resolve = |text: &str| resolve_text(text).map(|p| p.root_capabilities);
        assert_eq!(resolve("").unwrap(), RootCapabilities::None);
        let writable = "[filesystem]\nrootfs = \"/srv/root\"\nwritable_root = true\n";
        assert_eq!(resolve(writable).unwrap(), RootCapabilities::PackageManager);
        let off = format!("{writable}[security]\nroot_capabilities = \"none\"\n");
        assert_eq!(resolve(&off).unwrap(), RootCapabilities::None);
        let on = "[security]\nroot_capabilities = \"package-manager\"\n";
        assert_eq!(resolve(on).unwrap(), RootCapabilities::PackageManager);
        let bad = parse("[security]\nroot_capabilities = \"all\"\n").unwrap_err();
        assert!(bad.to_string().contains("none or package-manager"), "{bad}");
    }

    #[test]
    fn isolation_is_namespaces_by_default_takes_vm_and_nothing_else() {
        assert_eq!(parse("").unwrap().isolation().unwrap(), Isolation::Namespaces);
        let vm = parse("[security]\nisolation = \"vm\"\n").unwrap();
        assert_eq!(vm.isolation().unwrap(), Isolation::Vm);
        let bad = parse("[security]\nisolation = \"kvm\"\n").unwrap_err();
        assert!(bad.to_string().contains("unknown value \"kvm\": expected namespaces or vm"), "{bad}");
        assert_eq!(location_of(&bad).field.as_deref(), Some("security.isolation"));
    }

    #[test]
    fn command_is_checked() {
        let resolve_command = |command: &[&str]| {
            resolve(&Profile::default(), command.iter().map(|s| s.to_string()).collect(), &invoker())
        };
        assert_eq!(resolve_command(&[]).unwrap_err(), PolicyError::EmptyCommand);
        assert_eq!(resolve_command(&[""]).unwrap_err(), PolicyError::EmptyProgram);
        assert_eq!(
            resolve_command(&["sh", "-c", "a\0b"]).unwrap_err(),
            PolicyError::CommandNul { index: 2, argument: "a\0b".into() }
        );
        assert_eq!(resolve_command(&["sh", ""]).unwrap().command, ["sh", ""]);
    }

    #[test]
    fn value_error_names_origin_line_column_and_field() {
        let text = "description = \"x\"\n\n[process]\ntimeout = \"soon\"\n";
        let error = parse_error(text);
        assert_eq!(location_of(&error), &at(4, 11, "process.timeout"));
        assert_eq!(
            error.to_string(),
            "profile ./p.toml line 4, column 11, field process.timeout: invalid duration \"soon\": expected a number \
             with an optional ms, s, m, h or d suffix (e.g. 30s, 5m, 2h)"
        );
    }

    #[test]
    fn value_error_in_a_list_points_at_the_entry() {
        let text = "[network]\nallow = [\n  \"pypi.org\",\n  \"https://evil.example\",\n]\n";
        let error = parse_error(text);
        assert_eq!(location_of(&error), &at(4, 3, "network.allow"));
        let text = "[filesystem]\nbind = [\"/a\",\n        \"/b:/a\"]\n";
        assert_eq!(location_of(&parse_error(text)), &at(3, 9, "filesystem.bind"));
    }

    #[test]
    fn value_error_in_a_table_points_at_the_key() {
        let text = "[env.set]\nGOOD = \"1\"\n\"BAD-KEY\" = \"2\"\n";
        assert_eq!(location_of(&parse_error(text)), &at(3, 1, "env.set"));
        let text = "[env]\nset = { GOOD = \"1\", \"9X\" = \"2\" }\n";
        assert_eq!(location_of(&parse_error(text)), &at(2, 21, "env.set"));
    }

    #[test]
    fn value_error_with_dotted_keys_and_inline_tables() {
        assert_eq!(location_of(&parse_error("\n\nprocess.timeout = \"soon\"")), &at(3, 19, "process.timeout"));
        assert_eq!(location_of(&parse_error("limits = { pids = 1, memory = \"lots\" }")), &at(1, 31, "limits.memory"));
        // A column counts characters, not bytes.
        assert_eq!(
            location_of(&parse_error("description = \"ééé\" \nprocess.hostname = \"ü\"")),
            &at(2, 20, "process.hostname")
        );
    }

    #[test]
    fn cross_field_error_points_at_the_mode() {
        let text = "[network]\nallow = [\"pypi.org\"]\nmode = \"none\"\n";
        assert_eq!(location_of(&parse_error(text)), &at(3, 8, "network.mode"));
    }

    #[test]
    fn unknown_key_names_line_and_field() {
        let error = parse_error("[process]\ntimeout = \"5m\"\ntiemout = \"5m\"\n");
        assert_eq!(location_of(&error), &at(3, 1, "process.tiemout"));
        let message = error.to_string();
        assert!(
            message.starts_with("profile ./p.toml line 3, column 1, field process.tiemout: unknown field `tiemout`"),
            "{message}"
        );
        assert!(message.contains("`timeout`"), "{message}");

        let error = parse_error("\n[netwrk]\nmode = \"none\"\n");
        assert_eq!(location_of(&error).line, Some(2));
        assert_eq!(location_of(&error).field.as_deref(), Some("netwrk"));
        let error = parse_error("filesystem.rootfz = \"host\"");
        assert_eq!(location_of(&error).line, Some(1));
        assert!(error.to_string().contains("unknown field `rootfz`"), "{error}");
    }

    #[test]
    fn wrong_type_names_line_and_field() {
        let error = parse_error("[process]\ntimeout = 30\n");
        assert_eq!(location_of(&error), &at(2, 11, "process.timeout"));
        assert!(error.to_string().contains("invalid type: integer `30`, expected a string"), "{error}");

        let error = parse_error("[filesystem]\nro_bind = \"/a\"\n");
        assert_eq!(location_of(&error), &at(2, 11, "filesystem.ro_bind"));

        let error = parse_error("[limits]\npids = -1\n");
        assert_eq!(location_of(&error), &at(2, 8, "limits.pids"));

        let error = parse_error("[limits]\npids = \"512\"\n");
        assert_eq!(location_of(&error), &at(2, 8, "limits.pids"));

        let error = parse_error("network = \"none\"\n");
        assert_eq!(location_of(&error), &at(1, 11, "network"));

        // serde would take a struct from an array by position; a section must be a table.
        for text in
            ["limits = [\"2G\", 512]", "[[filesystem]]\nrootfs = \"host\"", "env = []", "security = [\"required\"]"]
        {
            let error = parse_error(text);
            assert!(error.to_string().contains("expected a table"), "{text}: {error}");
            assert_eq!(location_of(&error).line, Some(1), "{text}");
        }

        let error = parse_error("[env]\nset = { A = 1 }\n");
        assert_eq!(location_of(&error).line, Some(2));
        assert_eq!(location_of(&error).field.as_deref(), Some("env.set.A"));

        let error = parse_error("[process]\ntimeout = 1979-05-27T07:32:00Z\n");
        assert_eq!(location_of(&error).line, Some(2));
    }

    #[test]
    fn syntax_error_has_a_line_and_one_line_message() {
        for text in ["[process\ntimeout = \"5m\"", "a = ", "timeout = \"unterminated\n", "[a]\n[a]\n", "x = 1\nx = 2"] {
            let error = parse_error(text);
            assert!(matches!(error, ProfileError::Toml { .. }), "{text}: {error:?}");
            assert!(location_of(&error).line.is_some(), "{text}: {error:?}");
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with("profile ./p.toml line "), "{message}");
        }
    }

    #[test]
    fn merge_scalars_lists_and_env() {
        let base = parse(FULL).unwrap();
        let overlay = parse(
            r#"
[filesystem]
workspace = "/other"
ro_bind = ["/extra"]
[env]
set = { CI = "0", NEW = "n" }
pass = ["TERM"]
[process]
timeout = "5m"
[limits]
cpus = 4
"#,
        )
        .unwrap();
        let merged = base.clone().merge(overlay);
        assert_eq!(merged.description.as_deref(), Some("everything"));
        assert_eq!(merged.filesystem.workspace.as_deref(), Some("/other"));
        assert_eq!(merged.filesystem.workspace_mode.as_deref(), Some("rw"));
        assert_eq!(merged.filesystem.ro_bind, ["/opt/tools", "/data/in:/in", "/extra"]);
        assert_eq!(merged.filesystem.bind, base.filesystem.bind);
        assert_eq!(merged.env.set.get("CI").map(String::as_str), Some("0"));
        assert_eq!(merged.env.set.get("NEW").map(String::as_str), Some("n"));
        assert_eq!(merged.env.set.get("PATH"), base.env.set.get("PATH"));
        assert_eq!(merged.env.pass, ["EDITOR", "MISSING", "TERM"]);
        assert_eq!(merged.process.timeout.as_deref(), Some("5m"));
        assert_eq!(merged.process.user.as_deref(), Some("1000:100"));
        assert_eq!(merged.limits.cpus, Some(4.0));
        assert_eq!(merged.limits.pids, Some(512));
        assert_eq!(merged.network, base.network);

        // Merging nothing changes nothing, either way round.
        assert_eq!(base.clone().merge(Profile::default()), base);
        assert_eq!(Profile::default().merge(base.clone()), base);
    }

    #[test]
    fn merge_network() {
        let profile = |mode: Option<&str>, allow: &[&str]| Profile {
            network: NetworkSection {
                mode: mode.map(str::to_owned),
                allow: allow.iter().map(|s| s.to_string()).collect(),
            },
            ..Profile::default()
        };
        let network = |base: Profile, overlay: Profile| {
            resolve(&base.merge(overlay), command(), &invoker()).map(|policy| policy.network)
        };
        let domains = |network: Network| match network {
            Network::Allow(rules) => rules.into_iter().map(|rule| rule.domain).collect::<Vec<_>>(),
            other => panic!("not allow: {other:?}"),
        };
        // --allow over a profile that says none: the flag implies allow.
        assert_eq!(domains(network(profile(Some("none"), &[]), profile(None, &["a.com"])).unwrap()), ["a.com"]);
        // --allow over an allow list: joined.
        assert_eq!(
            domains(network(profile(Some("allow"), &["a.com"]), profile(None, &["b.com"])).unwrap()),
            ["a.com", "b.com"]
        );
        // --net none or --net host over an allow list: the list goes with the mode it came with.
        assert_eq!(network(profile(None, &["a.com"]), profile(Some("none"), &[])).unwrap(), Network::None);
        assert_eq!(network(profile(Some("allow"), &["a.com"]), profile(Some("host"), &[])).unwrap(), Network::Host);
        // --net allow --allow b over a list: joined.
        assert_eq!(
            domains(network(profile(None, &["a.com"]), profile(Some("allow"), &["b.com"])).unwrap()),
            ["a.com", "b.com"]
        );
        // --net none --allow b contradicts itself.
        assert!(network(profile(None, &[]), profile(Some("none"), &["b.com"])).is_err());
        // Nothing said: the base stays.
        assert_eq!(network(profile(Some("host"), &[]), profile(None, &[])).unwrap(), Network::Host);
    }

    #[test]
    fn resolve_names_field_and_flag() {
        let flags = Profile {
            process: ProcessSection { timeout: Some("soon".into()), ..ProcessSection::default() },
            ..Profile::default()
        };
        let error = resolve(&flags, command(), &invoker()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "process.timeout (--timeout): invalid duration \"soon\": expected a number with an optional ms, s, m, h \
             or d suffix (e.g. 30s, 5m, 2h)"
        );
        let flags = Profile {
            security: SecuritySection { landlock: Some("no".into()), ..SecuritySection::default() },
            ..Profile::default()
        };
        let message = resolve(&flags, command(), &invoker()).unwrap_err().to_string();
        assert!(message.starts_with("security.landlock: unknown value \"no\""), "{message}");
    }

    #[test]
    fn builtins_parse_and_resolve() {
        assert_eq!(builtin_profile_names(), BUILTINS.iter().map(|(name, _)| *name).collect::<Vec<_>>());
        assert_eq!(builtin_profile_names()[0], "default");
        for name in builtin_profile_names() {
            let profile = load_builtin_profile(name).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(builtin_profile(name).as_ref(), Some(&profile));
            assert!(profile.description.is_some(), "{name} has no description");
            let policy = resolve(&profile, command(), &invoker()).unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(policy.rootfs, Rootfs::Host, "{name}");
            // The net-* built-ins are allow-lists: they set the network and nothing else.
            if name.starts_with("net-") {
                assert!(matches!(&policy.network, Network::Allow(rules) if !rules.is_empty()), "{name}");
                assert_eq!(
                    Profile { network: NetworkSection::default(), description: None, ..profile.clone() },
                    Profile::default(),
                    "{name}"
                );
            } else {
                assert_eq!(policy.network, Network::None, "{name}");
            }
            assert_eq!(policy.landlock, Requirement::Required, "{name}");
            // A built-in with a workspace and an --allow on top still resolves.
            let flags = Profile {
                filesystem: FilesystemSection { workspace: Some("/work".into()), ..FilesystemSection::default() },
                network: NetworkSection { mode: None, allow: vec!["pypi.org".into()] },
                ..Profile::default()
            };
            let policy = resolve(&profile.merge(flags), command(), &invoker()).unwrap();
            assert_eq!(policy.workspace.map(|workspace| workspace.mode), Some(WorkspaceMode::Cow), "{name}");
            assert!(matches!(policy.network, Network::Allow(_)), "{name}");
        }
        assert_eq!(builtin_profile("nope"), None);
        assert_eq!(builtin_profile_source("nope"), None);
        assert!(builtin_profile_source("strict").unwrap().contains("pids = 256"));
    }

    #[test]
    fn builtin_specifics() {
        let default = resolve(&builtin_profile("default").unwrap(), command(), &invoker()).unwrap();
        assert!(default.limits.is_empty());
        assert_eq!(default.limits_enforcement, Requirement::Required);
        assert_eq!(default.timeout, None);

        let strict = resolve(&builtin_profile("strict").unwrap(), command(), &invoker()).unwrap();
        assert_eq!(strict.limits.pids, Some(256));
        assert_eq!(strict.limits.memory_bytes, Some(1 << 30));
        assert_eq!(strict.limits.nofile, Some(1024));
        assert_eq!(strict.limits.fsize_bytes, Some(4 << 30));
        assert_eq!(strict.limits_enforcement, Requirement::Required);
        assert_eq!(strict.timeout, Some(Duration::from_secs(30 * 60)));

        let dev = resolve(&builtin_profile("dev").unwrap(), command(), &invoker()).unwrap();
        assert_eq!(dev.timeout, None);
        assert!(dev.env.iter().any(|(key, value)| key == "EDITOR" && value == "vi"));
        assert!(dev.limits.pids.is_some_and(|pids| pids > 256));
        assert_eq!(dev.limits.nofile, Some(4096));
        assert_eq!(dev.limits.fsize_bytes, None);
        // Runs rootless without a delegated cgroup, saying which limits are not enforced.
        assert_eq!(dev.limits_enforcement, Requirement::BestEffort);
    }

    #[test]
    fn builtins_explain_every_setting() {
        for (name, source) in BUILTINS {
            let lines: Vec<&str> = source.lines().map(str::trim).collect();
            for (number, line) in lines.iter().enumerate() {
                if !line.contains('=') || line.starts_with('#') {
                    continue;
                }
                let above = lines[..number].iter().rev().find(|line| !line.contains('=') || line.starts_with('#'));
                assert!(
                    above.is_some_and(|line| line.starts_with('#')),
                    "{name}.toml line {}: {line:?} has no comment above it",
                    number + 1
                );
            }
        }
    }

    #[test]
    fn unknown_builtin() {
        let error = load_builtin_profile("strcit").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown built-in profile \"strcit\": choose one of default, strict, dev, net-debian, net-pypi, net-npm, \
             net-crates, net-github (airlock profile list), or give a file path containing '/' or ending in .toml"
        );
    }

    #[test]
    fn profile_ref_from_arg() {
        assert_eq!(ProfileRef::from_arg("strict"), ProfileRef::Builtin("strict".into()));
        assert_eq!(ProfileRef::from_arg(""), ProfileRef::Builtin("".into()));
        assert_eq!(ProfileRef::from_arg("my.toml"), ProfileRef::File("my.toml".into()));
        assert_eq!(ProfileRef::from_arg("./strict"), ProfileRef::File("./strict".into()));
        assert_eq!(ProfileRef::from_arg("/etc/airlock/p.toml"), ProfileRef::File("/etc/airlock/p.toml".into()));
        assert_eq!(ProfileRef::from_arg("dir/p"), ProfileRef::File("dir/p".into()));
    }

    #[test]
    fn hostile_inputs_give_short_errors() {
        let long = "a".repeat(10_000);
        for text in [
            format!("filesystem.rootfs = \"/{long}\""),
            format!("\"{long}\" = 1"),
            format!("[process]\n\"{long}\" = 1"),
            "\"\\u001b[2J\" = 1".to_owned(),
            "[\"\\u001b[2J\"]\nx = 1".to_owned(),
            format!("filesystem.workspace = \"/{}\"", "a/".repeat(5_000)),
            format!("filesystem.bind = [\"/{long}\"]"),
            format!("filesystem.tmpfs = [\"/t:{long}\"]"),
            format!("filesystem.workspace_mode = \"{long}\""),
            format!("network.allow = [\"{long}\"]"),
            format!("network.mode = \"{long}\""),
            format!("env.pass = [\"{long}=\"]"),
            format!("process.user = \"{}\"", "9".repeat(10_000)),
            format!("process.hostname = \"{long}\""),
            format!("process.timeout = \"{}s\"", "9".repeat(10_000)),
            format!("limits.memory = \"{}G\"", "9".repeat(10_000)),
            format!("limits.disk = \"{long}\""),
            format!("limits.fsize = \"{long}\""),
            format!("limits.fsize = \"{}T\"", "9".repeat(10_000)),
            format!("limits.enforce = \"{long}\""),
            "limits.enforce = \"\\u001b[2J\"".to_owned(),
            "limits.nofile = 99999999999999999999999".to_owned(),
            "limits.nofile = 18446744073709551615".to_owned(),
            format!("security.landlock = \"{long}\""),
            format!("{long} = 1"),
            "limits.pids = 99999999999999999999999".to_owned(),
            "limits.pids = 18446744073709551615".to_owned(),
            "limits.cpus = 1e308".to_owned(),
            "filesystem.bind = [\"/a\\u0000:/b\"]".to_owned(),
            "process.hostname = \"a\\u001b[2Jb\"".to_owned(),
        ] {
            let message = parse_error(&text).to_string();
            assert!(message.len() < 400, "{} bytes: {message}", message.len());
            assert!(!message.contains('\n') && !message.contains('\0') && !message.contains('\u{1b}'), "{message:?}");
        }
    }

    #[test]
    fn hostile_env_is_kept_as_given() {
        // Values are data: no NUL, but anything else, including very long values and shell syntax.
        let long = "v".repeat(10_000);
        let text = format!("[env.set]\nA = \"{long}\"\nB = \"$(rm -rf /); `x`\"\n");
        let env = resolve_text(&text).unwrap().env;
        assert!(env.contains(&("A".to_owned(), long)));
        assert!(env.contains(&("B".to_owned(), "$(rm -rf /); `x`".to_owned())));
    }

    #[test]
    fn field_keys_and_flags() {
        assert_eq!(Field::Timeout.key(), "process.timeout");
        assert_eq!(Field::Timeout.flag(), Some("--timeout"));
        assert_eq!(Field::NetworkMode.flag(), Some("--net"));
        assert_eq!(Field::Landlock.flag(), None);
        assert_eq!(Field::Nofile.key(), "limits.nofile");
        assert_eq!(Field::Fsize.key(), "limits.fsize");
        assert_eq!(Field::LimitsEnforce.key(), "limits.enforce");
        // Profile-only settings: no flag.
        for field in [Field::Nofile, Field::Fsize, Field::LimitsEnforce] {
            assert_eq!(field.flag(), None, "{}", field.key());
        }
        // Every key is a real key of the format: a file setting it to a wrong type is refused as such.
        for field in [
            Field::Rootfs,
            Field::RootfsLayers,
            Field::Workspace,
            Field::WorkspaceMode,
            Field::RoBind,
            Field::Bind,
            Field::Tmpfs,
            Field::NetworkMode,
            Field::NetworkAllow,
            Field::EnvSet,
            Field::EnvPass,
            Field::User,
            Field::Hostname,
            Field::Timeout,
            Field::Memory,
            Field::Pids,
            Field::Cpus,
            Field::Disk,
            Field::Nofile,
            Field::Fsize,
            Field::LimitsEnforce,
            Field::Landlock,
            Field::RootCapabilities,
            Field::Isolation,
        ] {
            let error = parse_error(&format!("{} = true", field.key()));
            assert!(error.to_string().contains("invalid type: boolean"), "{}: {error}", field.key());
            assert_eq!(location_of(&error).field.as_deref(), Some(field.key()));
        }
    }
}
