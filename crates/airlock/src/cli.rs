//! The command line, as `../shared/design/cli.md` fixes it.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "A sandbox for autonomous AI agents: run a command in an isolated world that costs almost nothing to start",
    propagate_version = true
)]
pub struct Cli {
    /// Talk to an `airlock serve` daemon instead of working on this machine's sandboxes: unix:///path/to/socket
    /// or http://host:port (token in AIRLOCK_TOKEN). Also from AIRLOCK_HOST.
    #[arg(long, global = true, value_name = "URL")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new sandbox and wait for it.
    Run(Box<RunArgs>),
    /// Start a sandbox that stays up (same options as `run`); returns once it is set up.
    Create(Box<CreateArgs>),
    /// Run a command in a running sandbox (same namespaces, filesystem, limits and protections).
    Exec(ExecArgs),
    /// Stop a running sandbox: everything in it is killed; what it kept stays until `airlock rm`.
    Stop {
        /// The sandbox's name.
        name: String,
    },
    /// The supervisor of a sandbox started by `airlock create` (internal).
    #[command(name = "__supervise", hide = true)]
    Supervise(crate::longlived::SuperviseArgs),
    /// One file operation inside a running sandbox, for the daemon's files API (internal).
    #[command(name = "__files", hide = true)]
    Files(crate::files_cmd::FilesArgs),
    /// The network gateway of one `--net allow` sandbox, started by its supervisor (internal).
    #[command(name = "__netgw", hide = true)]
    NetGateway(crate::network::NetGatewayArgs),
    /// What this host supports, what blocks a protection, and how to fix it.
    Doctor {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Resource use of a named sandbox: live while it runs (from its cgroup; without limits it has none, and its
    /// processes' use now is read from /proc), final after it ended.
    Stats {
        /// The sandbox's --name.
        name: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What a sandbox changed in its copy-on-write workspace.
    Diff(crate::workspace_cmd::DiffArgs),
    /// Drop changes (all, or those under PATHs) from a sandbox's copy-on-write workspace.
    Discard(crate::workspace_cmd::DiscardArgs),
    /// Apply a sandbox's copy-on-write changes (all, or those under PATHs) to the host workspace.
    Commit(crate::workspace_cmd::CommitArgs),
    /// Freeze a sandbox's copy-on-write changes as a checkpoint (a read-only layer; a rename, whatever the size).
    Checkpoint {
        /// The sandbox's name.
        name: String,
        /// The checkpoint's label (default `cN`); letters, digits, `.`, `_`, `-`, unique in the sandbox.
        label: Option<String>,
    },
    /// A sandbox's checkpoints, oldest first: label, when it was taken, how many entries it holds.
    Checkpoints {
        /// The sandbox's name.
        name: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Return a sandbox's workspace to what it was right after `airlock checkpoint NAME LABEL`.
    Rollback {
        /// The sandbox's name.
        name: String,
        /// The checkpoint to return to.
        label: String,
    },
    /// Sandboxes that keep state: their status, workspace and pending changes.
    Ls {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove sandboxes and everything they kept (workspace layer, stats).
    Rm(RmArgs),
    /// Remove every ended sandbox and everything it kept (as `airlock rm --all`); running ones stay.
    Prune,
    /// Copy files or directories out of or into a running sandbox: `airlock cp NAME:/path/in/it HOSTPATH`,
    /// `airlock cp HOSTPATH NAME:/path/in/it` (a trailing `/` puts it under its own name). Inside, with the
    /// sandbox's rights; symlinks are not followed or copied
    Cp(crate::cp_cmd::CpArgs),
    /// A shell completion script on stdout: `airlock completions bash > /etc/bash_completion.d/airlock`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout (`airlock man | man -l -`), or with --dir every page written there.
    Man {
        /// Write airlock.1 and one airlock-SUBCOMMAND.1 per subcommand into DIR instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Policy profiles: list the built-ins, show one, validate a file.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Images: import an OCI image layout or a `docker save` tarball into the store, list, inspect, remove,
    /// prune.
    #[command(subcommand)]
    Image(crate::image_cmd::ImageCommand),
    /// A sandbox's audit log: a timeline of what ran in it (execs, refused syscalls, limits hit, file changes).
    Logs {
        /// The sandbox's name.
        name: String,
        /// Keep printing new records until the sandbox has ended (or Ctrl-C).
        #[arg(short = 'f', long)]
        follow: bool,
        /// The raw JSON lines.
        #[arg(long)]
        json: bool,
        /// Check the hash chain: exit 0 when intact, 1 naming the first line removed, moved, edited or cut.
        #[arg(long, conflicts_with_all = ["follow", "json"])]
        verify: bool,
    },
    /// The API daemon: agent programs create sandboxes, run commands and move files through it (HTTP, JSON).
    Serve(crate::serve_cmd::ServeArgs),
    /// An MCP server (Model Context Protocol) over stdio: the sandbox tools for AI agents (Claude Desktop, VS Code,
    /// Codex...). Uses the daemon named by --host or AIRLOCK_HOST, else this machine's sandboxes.
    Mcp {
        /// Streamable HTTP on ADDR:PORT (a loopback address; the endpoint is /mcp) instead of stdio.
        #[arg(long, value_name = "ADDR:PORT")]
        http: Option<std::net::SocketAddr>,
    },
    /// An OCI runtime with runc's command line, for containerd (`ctr run --runc-binary`, a runtime's
    /// `BinaryName`), Docker (`dockerd --add-runtime`) and Kubernetes (a RuntimeClass): `airlock oci --help`.
    #[command(disable_help_flag = true)]
    Oci {
        /// runc's global flags and subcommand (create, start, state, kill, delete, exec, ps, pause, resume, features).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "RUNC ARGS")]
        args: Vec<std::ffi::OsString>,
    },
}

/// `airlock rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop a running sandbox first (everything in it is killed), then remove it.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Every ended sandbox (with --force: every sandbox, running ones stopped first).
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// The sandboxes' names.
    #[arg(required_unless_present = "all", value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// The built-in profiles.
    List,
    /// A profile's TOML (a built-in name or a file).
    Show { name: String },
    /// Check a profile file; errors name the line and field.
    Validate { file: String },
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: SandboxOptions,
    /// The sandbox's name (what it keeps stays under it until `airlock rm NAME`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// With --name: run again in the kept, ended sandbox NAME's copy-on-write layers (same --workspace); its
    /// changes and checkpoints are what the workspace shows.
    #[arg(long, requires = "name")]
    pub resume: bool,
    /// Keep nothing after exit.
    #[arg(long)]
    pub rm: bool,
    /// A new pseudo-terminal for interactive use.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// After the command: one JSON object on stdout (name, exit_code, signal, oom, timed_out, duration_ms).
    #[arg(long)]
    pub json: bool,
    /// Learn mode: record what the command needed that the policy refused (paths written, syscalls, domains)
    /// and print a suggested profile snippet on stderr at exit.
    #[arg(long)]
    pub learn: bool,
    // (No `allow_hyphen_values` on COMMAND: a mistyped flag before the command must be an error, not the
    // command; everything after the command's name, or after `--`, is the command's, dashes and all.)
    /// The command and its arguments. With --image and no command: the image's Entrypoint and Cmd.
    #[arg(required_unless_present = "image", value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `airlock create`: the run options, and the sandbox's name.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: SandboxOptions,
    /// Once it is up: one JSON object on stdout (name, state, ids) instead of nothing.
    #[arg(long)]
    pub json: bool,
    /// The sandbox's name.
    #[arg(value_name = "NAME", id = "sandbox_name")]
    pub sandbox: String,
}

/// `airlock exec`.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// A new pseudo-terminal in the sandbox for interactive use, relayed to the caller's terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set a variable inside, besides the sandbox's own (repeatable; wins over --env-file).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Variables from a file: `KEY=VALUE` lines (blank lines and `#` comments skipped), or NUL-terminated
    /// `KEY=VALUE` entries when the file holds a NUL byte (as `env -0` writes; values may then span lines).
    /// Repeatable: later files win.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// The command's working directory inside (absolute; default: the workspace, else /).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Run the command as this user inside: `root` or UID[:GID] (default: the sandbox's own user). The id must be
    /// one the sandbox maps: a sandbox created as root maps 65,536 ids, a rootless one only its owner's.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// A limit for this command (30s, 5m, 500ms): then it and its process group are killed and exec exits 124.
    /// (The sandbox's own --timeout, from create, bounds the whole sandbox.)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// After the command: one JSON object on stdout (name, exit_code, signal, oom, timed_out, duration_ms).
    #[arg(long)]
    pub json: bool,
    /// The running sandbox.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The command and its arguments (after `--`).
    #[arg(required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The options of `run` and `create`: what the sandbox is.
#[derive(Debug, Args)]
pub struct SandboxOptions {
    /// An image from the store (`airlock image pull` / `import`) as `/`: its layers read-only and shared, under a
    /// writable layer of the sandbox's own (gone at exit; kept with --name and `create`); the image's Env,
    /// WorkingDir, User and Entrypoint/Cmd apply (the flags win).
    #[arg(long, value_name = "REF", conflicts_with_all = ["rootfs", "rootfs_layers"])]
    pub image: Option<String>,
    /// What `/` is: `host` (the host's /usr, /bin, /sbin, /lib*, /etc read-only, nothing else) or a directory tree.
    #[arg(long, value_name = "host|DIR")]
    pub rootfs: Option<String>,
    /// `/` writable: an overlay over the --rootfs directory, whose writes go to a layer of the sandbox's own —
    /// gone at exit, or with --name (and `create`) kept until `airlock rm`. The directory never changes. Not
    /// with --rootfs host, which stays read-only.
    #[arg(long)]
    pub writable_root: bool,
    /// What root inside keeps of its capabilities (in the sandbox's user namespace only; never over host files):
    /// `none`, or `package-manager` (chown, dac_override, fowner, kill, setuid, setgid: what apt, dpkg and
    /// useradd need). Default: package-manager with a writable `/` (--image, --writable-root), else none
    #[arg(long, value_name = "none|package-manager")]
    pub root_capabilities: Option<String>,
    /// HOME inside: `tmp` (the default: HOME=/tmp, the sandbox's private tmpfs) or `empty` (an empty private
    /// tmpfs at your home directory's path, and HOME set to it). Your home's content is never shown
    #[arg(long, value_name = "tmp|empty")]
    pub home: Option<String>,
    /// Your toolchain installations (~/.rustup, ~/.cargo/bin, ~/.pyenv, ~/.nvm, ~/.local/bin, ...), those that
    /// exist, read-only at the same paths, with their variables (RUSTUP_HOME, ...) and your PATH entries inside
    /// them before the default PATH
    #[arg(long)]
    pub toolchains: bool,
    /// Your git identity (user.name, user.email) as GIT_AUTHOR_* and GIT_COMMITTER_*, without ~/.gitconfig
    #[arg(long)]
    pub git_identity: bool,
    /// Internal (for the image integration and tests): the root's lower directories in overlayfs form, bottom
    /// first, instead of --rootfs.
    #[arg(long, value_name = "DIR[:DIR...]", hide = true)]
    pub rootfs_layers: Option<String>,
    /// A host directory shown at the same path inside; the working directory.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<String>,
    /// cow: writes go to a layer airlock keeps (see `airlock diff`); rw: straight to the host; ro: read-only.
    #[arg(long, value_name = "cow|rw|ro")]
    pub workspace_mode: Option<String>,
    /// An extra host path, read-only (repeatable).
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    pub ro_bind: Vec<String>,
    /// An extra host path, writable (repeatable).
    #[arg(long, value_name = "SRC[:DST]")]
    pub bind: Vec<String>,
    /// An empty private tmpfs (repeatable). /tmp is always private.
    #[arg(long, value_name = "DST[:SIZE]")]
    pub tmpfs: Vec<String>,
    /// none: loopback only; allow: only --allow destinations, enforced by airlock's network gateway for every
    /// program; host: the host's network (warned).
    #[arg(long, value_name = "none|allow|host")]
    pub net: Option<String>,
    /// An allowed destination, `*.example.com` wildcards; implies --net allow (repeatable).
    #[arg(long, value_name = "DOMAIN[:PORT]")]
    pub allow: Vec<String>,
    /// Where the sandbox runs: `namespaces` (the default: namespaces, seccomp, Landlock, on the host's kernel) or
    /// `vm` (in a virtual machine of its own, with its own kernel; `run` only for now: see the README's "VM
    /// isolation")
    #[arg(long, value_name = "namespaces|vm")]
    pub isolation: Option<String>,
    /// Memory limit (K/M/G suffixes).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Process limit.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub pids: Option<String>,
    /// CPU limit, in CPUs (e.g. 1.5).
    #[arg(long, value_name = "F", allow_hyphen_values = true)]
    pub cpus: Option<String>,
    /// Disk limit for the workspace layer and /tmp.
    #[arg(long, value_name = "SIZE")]
    pub disk: Option<String>,
    /// Wall-clock limit (30s, 5m, 2h); then the whole sandbox is killed and airlock exits 124.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Set a variable inside (repeatable; wins over --env-file).
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Variables from a file: `KEY=VALUE` lines (blank lines and `#` comments skipped), or NUL-terminated
    /// `KEY=VALUE` entries when the file holds a NUL byte (as `env -0` writes). Repeatable: later files win.
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Pass a variable of the caller's through (repeatable).
    #[arg(long = "pass-env", value_name = "KEY")]
    pub pass_env: Vec<String>,
    /// Identity inside: root or UID[:GID]. Root inside is never root outside.
    #[arg(long, value_name = "root|UID[:GID]")]
    pub user: Option<String>,
    /// Hostname inside.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// A TOML policy: a built-in name or a file; flags override it. Repeatable: each merges over the one before
    /// (e.g. `--profile strict --profile net-pypi`, an allow-list over the strict profile).
    #[arg(long, value_name = "NAME|FILE", default_value = "default")]
    pub profile: Vec<String>,
    /// Also append the sandbox's audit records, the JSON lines `airlock logs --json` shows, to FILE: the sandbox
    /// created, started and ended, every program executed in it (each execve) and each `airlock exec`, syscalls
    /// the filter refused, limits hit (timeout, memory, processes), workspace file changes, and with --net allow
    /// the network gateway's decisions.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<String>,
}
