//! `airlock oci`: runc's command line, as containerd's runc shim (v2), Docker and runtime-tools call it, over
//! airlock's long-lived sandboxes.
//!
//! A container is a held sandbox (`airlock create`'s supervisor, named `oci-HASH-ID`) plus its workload process
//! (`airlock oci __workload ID`): the pid runc's `--pid-file` names. `create` sets the sandbox up (from the
//! bundle's `config.json`, translated by the `airlock-oci` crate), starts the workload process with runc's own
//! standard streams (or the pseudo-terminal whose master it sent to `--console-socket`), and returns; the workload
//! process waits on the start gate (`exec.fifo` in the container's state directory, as runc does: it blocks
//! opening the FIFO for writing until `start` opens it for reading), then runs `process.args` in the sandbox as
//! `airlock exec` does, stops the sandbox, and exits with the command's status (128+N when killed by signal N).
//! Once `create` has returned, the workload process is a child of the caller's subreaper (the shim), which reaps
//! it and reports that status.
//!
//! The container's state lives in `--root`/ID (`state.json`, the start gate); the sandbox's in airlock's state
//! directory. Errors go to `--log` as JSON lines (`{"level":"error","msg":…,"time":…}`), and so does every part of
//! the bundle airlock refuses (`"level":"warning"`) or does its own way (`"level":"info"`). Failures exit 1, as
//! runc's do.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::state;

/// runc's default `--root` is `/run/runc`; airlock's is its own.
const DEFAULT_ROOT: &str = "/run/airlock-oci";
/// The OCI runtime-spec version airlock reads (`state`'s `ociVersion`).
const OCI_VERSION: &str = "1.0.2";
/// The start gate's name in the container's state directory.
const EXEC_FIFO: &str = "exec.fifo";
/// How long `start` waits for the workload process to pass the gate.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long `delete --force` and `kill` wait for a process to be gone.
const GONE_WAIT: Duration = Duration::from_secs(10);
/// Where `dev.airlock.profile` may name a profile file: a directory only the host's administrator writes.
const OCI_PROFILE_DIR: &str = "/etc/airlock/profiles";

/// The profile a bundle is layered over: `default`, or the one `dev.airlock.profile` names — a built-in by name,
/// or a file in [`OCI_PROFILE_DIR`] by its file name (`NAME.toml`). Annotations can come from whoever writes a
/// pod or a container's spec (a Kubernetes pod's annotations, `ctr run --annotation`), who is not the host's
/// administrator: a profile can widen what a sandbox sees (binds, `--net host`), so an annotation never names an
/// arbitrary file.
fn oci_base_profile(annotation: Option<&str>) -> Result<policy::profile::Profile> {
    let Some(name) = annotation else {
        return crate::run::load_profile("default");
    };
    if let Some(builtin) = policy::profile::builtin_profile(name) {
        return Ok(builtin);
    }
    let file = name.strip_suffix(".toml").unwrap_or(name);
    let plain = !file.is_empty() && file.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !plain || file.starts_with('.') {
        bail!(
            "annotation dev.airlock.profile={name:?}: expected a built-in profile or the name of a file in \
             {OCI_PROFILE_DIR} (an annotation never names a path)"
        );
    }
    let path = Path::new(OCI_PROFILE_DIR).join(format!("{file}.toml"));
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("annotation dev.airlock.profile={name:?}: no built-in profile and cannot read {}", path.display())
    })?;
    Ok(policy::profile::Profile::parse(&text, &path.display().to_string())?)
}

/// The signals the workload process (an `airlock exec`) forwards to the container's command.
const FORWARDED: &[i32] =
    &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

#[derive(Debug, Parser)]
#[command(name = "airlock oci", about = "An OCI runtime with runc's command line", disable_version_flag = true)]
struct OciCli {
    /// Where containers' state lives.
    #[arg(long, default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Where errors and notes go (runc's --log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// `json` (what containerd asks) or `text`.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Accepted for runc compatibility: airlock manages its own cgroups.
    #[arg(long)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    debug: bool,
    /// Accepted for runc compatibility (airlock decides rootless by itself).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// The version.
    #[arg(short = 'v', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<OciCommand>,
}

#[derive(Debug, Subcommand)]
enum OciCommand {
    /// Set a container up from a bundle; its process waits for `start`.
    Create {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        no_pivot: bool,
        #[arg(long)]
        no_new_keyring: bool,
        #[arg(long)]
        preserve_fds: Option<u32>,
        id: String,
    },
    /// Let a created container's process run.
    Start { id: String },
    /// The container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's process.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a stopped container (--force: stop it first).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Run a process in a running container.
    Exec {
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(short, long)]
        tty: bool,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(short, long)]
        env: Vec<String>,
        #[arg(short, long)]
        user: Option<String>,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// The container's processes (host pids).
    Ps {
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Suspend every process of the container.
    Pause { id: String },
    /// Resume a paused container.
    Resume { id: String },
    /// What this runtime supports, as JSON.
    Features,
    /// Every container's state, as JSON (`--format json`) or a table.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// The container's process (internal): waits on the start gate, runs the bundle's process.
    #[command(name = "__workload", hide = true)]
    Workload { id: String },
    /// An `exec --detach`'s process (internal).
    #[command(name = "__exec", hide = true)]
    ExecProcess { id: String, process: PathBuf },
}

/// Where errors and notes go: `--log` (as JSON lines or runc's text lines), else standard error.
struct Log {
    file: Option<std::fs::File>,
    json: bool,
}

impl Log {
    fn open(path: Option<&Path>, format: &str) -> Log {
        let file = path.and_then(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).ok());
        Log { file, json: format == "json" }
    }

    fn line(&mut self, level: &str, msg: &str) {
        let time = rfc3339_now();
        let text = if self.json {
            serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
        } else {
            format!("time={time:?} level={level} msg={msg:?}")
        };
        match &mut self.file {
            Some(file) => {
                let _ = writeln!(file, "{text}");
            }
            None => eprintln!("{text}"),
        }
    }
}

/// `airlock oci ARGS…` (the arguments after `oci`): runc's exit statuses (0, or 1 with the error in the log).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let argv = std::iter::once(OsString::from("airlock oci")).chain(args);
    let cli = match OciCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(1) } else { ExitCode::SUCCESS };
        }
    };
    let mut log = Log::open(cli.log.as_deref(), &cli.log_format);
    if cli.version {
        println!("airlock version {}\nspec: {OCI_VERSION}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(command) = cli.command else {
        log.line("error", "no command given (see `airlock oci --help`)");
        return ExitCode::from(1);
    };
    let ctx = Ctx { root: cli.root.clone(), log_path: cli.log.clone(), log_format: cli.log_format.clone() };
    let result = run(&ctx, command, &mut log);
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            let msg = crate::one_line(&err);
            log.line("error", &msg);
            // The log is what containerd reads; a person at a terminal reads this.
            if log.file.is_some() {
                crate::say(&msg);
            }
            ExitCode::from(1)
        }
    }
}

/// The global flags a command needs.
struct Ctx {
    root: PathBuf,
    log_path: Option<PathBuf>,
    log_format: String,
}

impl Ctx {
    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// `airlock oci` with the same global flags, for the processes `create` and `exec --detach` start.
    fn self_command(&self) -> Result<Command> {
        let exe = std::env::current_exe().context("cannot find airlock's own executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("oci").arg("--root").arg(&self.root).arg("--log-format").arg(&self.log_format);
        if let Some(log) = &self.log_path {
            cmd.arg("--log").arg(log);
        }
        Ok(cmd)
    }
}

fn run(ctx: &Ctx, command: OciCommand, log: &mut Log) -> Result<i32> {
    match command {
        OciCommand::Create { bundle, pid_file, console_socket, id, .. } => {
            create(ctx, &bundle, pid_file.as_deref(), console_socket.as_deref(), &id, log)
        }
        OciCommand::Start { id } => start(ctx, &id),
        OciCommand::State { id } => {
            let c = Container::load(ctx, &id)?;
            println!("{}", serde_json::to_string_pretty(&c.state_json(ctx))?);
            Ok(0)
        }
        OciCommand::Kill { id, signal, all } => kill(ctx, &id, signal.as_deref().unwrap_or("SIGTERM"), all),
        OciCommand::Delete { id, force } => delete(ctx, &id, force),
        OciCommand::Exec { process, detach, pid_file, console_socket, tty, cwd, env, user, id, command } => {
            let process = match process {
                Some(path) => oci::read_process(&path)?,
                None => {
                    if command.is_empty() {
                        bail!("exec: give --process FILE or a command");
                    }
                    oci::Process {
                        terminal: tty,
                        args: command,
                        env,
                        cwd: cwd.unwrap_or_default(),
                        user: parse_user(user.as_deref())?,
                        ..Default::default()
                    }
                }
            };
            exec(ctx, &id, process, detach, pid_file.as_deref(), console_socket.as_deref(), log)
        }
        OciCommand::Ps { format, id, .. } => ps(ctx, &id, &format),
        OciCommand::Pause { id } => pause(ctx, &id, true),
        OciCommand::Resume { id } => pause(ctx, &id, false),
        OciCommand::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
        OciCommand::List { format, quiet } => list(ctx, &format, quiet),
        OciCommand::Workload { id } => workload(ctx, &id),
        OciCommand::ExecProcess { id, process } => exec_process(ctx, &id, &process),
    }
}

fn parse_user(user: Option<&str>) -> Result<oci::User> {
    let Some(user) = user else { return Ok(oci::User::default()) };
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    Ok(oci::User {
        uid: uid.parse().map_err(|_| anyhow!("--user {user:?}: expected UID[:GID]"))?,
        gid: gid.parse().map_err(|_| anyhow!("--user {user:?}: expected UID[:GID]"))?,
        additional_gids: Vec::new(),
    })
}

/// A container's `state.json` in `--root`/ID.
#[derive(Debug, Serialize, Deserialize)]
struct Container {
    id: String,
    bundle: PathBuf,
    rootfs: PathBuf,
    /// The airlock sandbox it runs in.
    sandbox: String,
    /// The workload process (the pid in `--pid-file`) and its start time (so a reused pid is not taken for it).
    pid: i32,
    pid_start: u64,
    created: String,
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

impl Container {
    fn load(ctx: &Ctx, id: &str) -> Result<Container> {
        validate_id(id)?;
        let path = ctx.dir(id).join("state.json");
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("container {id} does not exist"),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_slice(&text).with_context(|| format!("{} is not a container's state", path.display()))
    }

    fn save(&self, ctx: &Ctx) -> Result<()> {
        let path = ctx.dir(&self.id).join("state.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    fn alive(&self) -> bool {
        runtime::host::process_alive(self.pid, self.pid_start)
    }

    fn status(&self, ctx: &Ctx) -> Status {
        if !self.alive() {
            Status::Stopped
        } else if ctx.dir(&self.id).join(EXEC_FIFO).exists() {
            Status::Created
        } else if self.paused {
            Status::Paused
        } else {
            Status::Running
        }
    }

    fn state_json(&self, ctx: &Ctx) -> serde_json::Value {
        let status = self.status(ctx);
        let mut doc = serde_json::json!({
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "pid": if status == Status::Stopped { 0 } else { self.pid },
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
        });
        if !self.annotations.is_empty() {
            doc["annotations"] = serde_json::json!(self.annotations);
        }
        doc
    }

    /// The host pid of the sandbox's init, while the sandbox runs.
    fn init_pid(&self) -> Option<i32> {
        let dir = state::sandbox_dir(&self.sandbox);
        if !state::is_running(&dir) {
            return None;
        }
        state::read_record(&dir).ok()?.init_pid
    }
}

/// runc's rule for ids: letters, digits, `_+-.`, not `.` or `..`.
fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if !ok {
        bail!("invalid container id {id:?}: letters, digits, '_', '+', '-' and '.' only");
    }
    Ok(())
}

/// The sandbox's name: unique per `--root` and id (two containerd namespaces may use the same id), within
/// airlock's 64 bytes.
fn sandbox_name(root: &Path, id: &str) -> String {
    // FNV-1a: stable across builds (the name must be found again by later commands).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes().iter().chain(b"\0").chain(id.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let readable: String =
        id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).take(40).collect();
    if readable.is_empty() {
        format!("oci-{hash:016x}")
    } else {
        format!("oci-{hash:016x}-{readable}")
    }
}

fn create(
    ctx: &Ctx,
    bundle: &Path,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
    id: &str,
    log: &mut Log,
) -> Result<i32> {
    validate_id(id)?;
    let bundle = std::fs::canonicalize(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let spec = oci::read_spec(&bundle)?;
    let mut translation = oci::translate(&spec, &bundle)?;
    stack_overlay_root(&mut translation);
    for note in &translation.notes {
        log.line(note.level.as_str(), &note.message);
    }
    let base = oci_base_profile(translation.base_profile.as_deref())?;
    let mut merged = base.merge(translation.profile.clone());
    if translation.audit {
        merged.audit.exec = Some(true);
    }
    // The bundle's process must resolve now: a mistake is create's error, not a container that dies at start.
    policy::profile::resolve(&merged, translation.process.args.clone(), &session::invoker())?;

    std::fs::create_dir_all(&ctx.root).with_context(|| format!("cannot create {}", ctx.root.display()))?;
    let dir = ctx.dir(id);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!("container with id exists: {id}"),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let made = create_in(ctx, &bundle, &spec, &translation, merged, pid_file, console_socket, id, log);
    if made.is_err() {
        let name = sandbox_name(&ctx.root, id);
        let _ = crate::longlived::stop(&name);
        let _ = store::sandbox::remove_sandbox(&state::sandbox_dir(&name));
        let _ = std::fs::remove_dir_all(&dir);
    }
    made
}

use std::os::unix::fs::DirBuilderExt;

#[allow(clippy::too_many_arguments)]
fn create_in(
    ctx: &Ctx,
    bundle: &Path,
    spec: &oci::Spec,
    translation: &oci::Translation,
    merged: policy::profile::Profile,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
    id: &str,
    log: &mut Log,
) -> Result<i32> {
    let dir = ctx.dir(id);
    let name = sandbox_name(&ctx.root, id);
    // dev.airlock.audit: the audit log (every exec recorded) is copied where `delete` leaves it.
    let audit = match translation.audit {
        true => Some(audit_copy_path(&name)?.display().to_string()),
        false => None,
    };
    // What the supervisor says (warnings, or why the setup failed) goes to the log: our standard streams are the
    // container's.
    let mut said = String::new();
    let ready = crate::longlived::spawn_supervisor(&name, merged, audit, &mut |text| said.push_str(text))?;
    let mut failure = Vec::new();
    for line in said.lines() {
        let line = line.trim_start_matches("airlock: ");
        match line.strip_prefix("warning: ") {
            Some(warning) => log.line("warning", warning),
            None => failure.push(line),
        }
    }
    if !ready {
        bail!("cannot set up the sandbox: {}", failure.join("; "));
    }

    let fifo = dir.join(EXEC_FIFO);
    make_fifo(&fifo)?;
    let mut cmd = ctx.self_command()?;
    cmd.arg("__workload").arg(id);
    let console = console_socket.map(|s| console_for(s, translation.process.terminal)).transpose()?;
    if let Some(slave) = &console {
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?));
    }
    let child = cmd.spawn().context("cannot start the container's process")?;
    drop(console);
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    let pid_start = runtime::host::process_start_time(pid).unwrap_or(0);
    let container = Container {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        rootfs: translation.rootfs.clone(),
        sandbox: name,
        pid,
        pid_start,
        created: rfc3339_now(),
        annotations: spec.annotations.clone(),
        paused: false,
    };
    container.save(ctx)?;
    if let Some(path) = pid_file {
        write_pid_file(path, pid)?;
    }
    // Not waited for: once we exit, it is the caller's (the shim, a subreaper) to reap.
    std::mem::forget(child);
    Ok(0)
}

/// A root that is an overlayfs mount (Docker's overlay2, containerd's snapshotters) cannot be idmapped: airlock
/// stacks its layers itself (the bundle's upper layer read-only among them), under a writable layer of its own.
fn stack_overlay_root(translation: &mut oci::Translation) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let Ok(root) = std::fs::canonicalize(&translation.rootfs) else { return };
    let Some(layers) = oci::overlay_layers(&mountinfo, &root) else { return };
    let layers: Vec<String> = layers
        .iter()
        .map(|l| std::fs::canonicalize(l).map(|p| p.display().to_string()).unwrap_or_else(|_| l.clone()))
        .collect();
    translation.profile.filesystem.rootfs = None;
    translation.profile.filesystem.rootfs_layers = layers;
    translation.notes.push(oci::Note {
        level: oci::Level::Info,
        message: format!(
            "root.path {} is an overlayfs mount: airlock mounts its layers itself, under a writable layer of its \
             own (the container's writes do not reach the bundle's upper layer)",
            root.display()
        ),
    });
}

/// Where a container's audit log is copied with `dev.airlock.audit=true`: `$AIRLOCK_STATE/oci-audit/SANDBOX.jsonl`
/// (the sandbox's own log goes with it at `delete`; this copy stays).
fn audit_copy_path(sandbox: &str) -> Result<PathBuf> {
    let dir = state::state().path().join("oci-audit");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir.join(format!("{sandbox}.jsonl")))
}

/// A new pseudo-terminal on the host: its master goes to the console socket (SCM_RIGHTS, as runc sends it), its
/// slave is returned for the process's standard streams.
fn console_for(socket: &Path, _terminal: bool) -> Result<OwnedFd> {
    let master = sys::fd::open(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(|e| anyhow!("cannot open /dev/ptmx: errno {e}"))?;
    sys::terminal::unlock_pseudo_terminal(master.as_fd()).map_err(|e| anyhow!("cannot unlock a pty: errno {e}"))?;
    let slave = sys::terminal::open_peer(master.as_fd(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(|e| anyhow!("cannot open a pty's slave: errno {e}"))?;
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to the console socket {}", socket.display()))?;
    sys::socket::send_fd(stream.as_raw_fd(), master.as_raw_fd())
        .map_err(|e| anyhow!("cannot send the console to {}: errno {e}", socket.display()))?;
    Ok(slave)
}

fn make_fifo(path: &Path) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| anyhow!("{} has a NUL byte", path.display()))?;
    sys::fs::mknodat(libc::AT_FDCWD, &c, libc::S_IFIFO | 0o600, 0, 0)
        .map_err(|e| anyhow!("cannot make the start gate {}: errno {e}", path.display()))
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    // Written whole, then renamed: the shim reads it as soon as we exit.
    let tmp = path.with_extension("pid.airlock-tmp");
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The container's process: passes the start gate, runs the bundle's process in the sandbox, stops the sandbox.
fn workload(ctx: &Ctx, id: &str) -> Result<i32> {
    let fifo = ctx.dir(id).join(EXEC_FIFO);
    // Blocks until `start` opens the gate for reading.
    let mut gate = std::fs::OpenOptions::new().write(true).open(&fifo).context("the start gate")?;
    gate.write_all(b"0").context("the start gate")?;
    drop(gate);
    let container = Container::load(ctx, id)?;
    let spec = oci::read_spec(&container.bundle)?;
    let process = spec.process.ok_or(oci::OciError::NoProcess)?;
    // Running the command joins the sandbox's namespaces, where airlock's state directory is out of sight (a
    // `longlived::stop` afterwards finds no sandbox): the supervisor to stop is found now, on the host side, and
    // held by a pidfd, which still names it afterwards (this process's own pid namespace does not change).
    let supervisor = supervisor_pidfd(&container.sandbox);
    let code = run_process(&container, &process);
    // The container ends with its process: nothing of it keeps running.
    match supervisor {
        Some(pidfd) => stop_supervisor(&pidfd),
        None => {
            let _ = crate::longlived::stop(&container.sandbox);
        }
    }
    code
}

/// A pidfd of sandbox `name`'s supervisor, when its record names one that is still the process it recorded.
fn supervisor_pidfd(name: &str) -> Option<OwnedFd> {
    let record = state::read_record(&state::sandbox_dir(name)).ok()?;
    let (pid, start) = (record.supervisor_pid?, record.supervisor_start_time?);
    let pidfd = sys::process::pidfd_open(pid).ok()?;
    // Checked after the pidfd is open: if the start time still matches, the pidfd is the recorded supervisor's,
    // not a later process's that reused its pid.
    (runtime::host::process_start_time(pid) == Some(start)).then_some(pidfd)
}

/// SIGTERM to the supervisor (it stops the sandbox: kills what runs in it, removes its cgroup, marks it ended),
/// then waits until it has exited, as `airlock stop` does, so that a `delete` right after finds it finished.
fn stop_supervisor(pidfd: &OwnedFd) {
    if sys::process::pidfd_send_signal(pidfd.as_fd(), libc::SIGTERM).is_err() {
        return;
    }
    let started = Instant::now();
    // Signal 0 fails (ESRCH) once the supervisor has exited.
    while sys::process::pidfd_send_signal(pidfd.as_fd(), 0).is_ok() && started.elapsed() < GONE_WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `process` in the container's sandbox as `airlock exec` does; its exit status.
fn run_process(container: &Container, process: &oci::Process) -> Result<i32> {
    let mut notes = Vec::new();
    let plan = oci::process_plan(process, &mut notes)?;
    let args = crate::cli::ExecArgs {
        tty: plan.terminal,
        env: plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        env_file: Vec::new(),
        cwd: plan.cwd,
        user: Some(plan.user),
        timeout: None,
        json: false,
        name: container.sandbox.clone(),
        command: plan.args,
    };
    if plan.terminal {
        // Our terminal (the console's slave) becomes the controlling one, so that a resize reaches us.
        let _ = sys::process::new_session();
        let stdin = std::io::stdin();
        let _ = sys::terminal::set_controlling_terminal(stdin.as_fd());
        // Raw: the sandbox's own terminal does the line discipline (echo, CR-LF); this one only carries bytes,
        // as the console runc hands to the shim would (a second discipline would turn "\n" into "\r\r\n").
        if let Ok(t) = sys::terminal::attributes(stdin.as_fd()) {
            let _ = sys::terminal::set_attributes(stdin.as_fd(), &sys::terminal::raw(&t));
        }
    }
    crate::longlived::exec(args)
}

fn start(ctx: &Ctx, id: &str) -> Result<i32> {
    let container = Container::load(ctx, id)?;
    match container.status(ctx) {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        _ => bail!("cannot start an already running container"),
    }
    let fifo = ctx.dir(id).join(EXEC_FIFO);
    let mut gate =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).context("the start gate")?;
    let started = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        match std::io::Read::read(&mut gate, &mut byte) {
            Ok(1) => break,
            // No writer yet (0), or one that has not written: the workload process is on its way.
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("the start gate"),
        }
        if !container.alive() {
            bail!("the container's process exited before it started");
        }
        if started.elapsed() > START_WAIT {
            bail!("the container's process did not start within {}s", START_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::remove_file(&fifo).context("cannot remove the start gate")?;
    Ok(0)
}

fn parse_signal(text: &str) -> Result<i32> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = text.trim_start_matches("SIG");
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "ALRM" => libc::SIGALRM,
        "WINCH" => libc::SIGWINCH,
        "PIPE" => libc::SIGPIPE,
        _ => bail!("unknown signal {text:?}"),
    };
    Ok(n)
}

fn kill(ctx: &Ctx, id: &str, signal: &str, all: bool) -> Result<i32> {
    let container = Container::load(ctx, id)?;
    let sig = parse_signal(signal)?;
    let status = container.status(ctx);
    if status == Status::Stopped {
        bail!("container not running");
    }
    let send =
        |pid: i32, sig: i32| sys::signal::kill(pid, sig).map_err(|e| anyhow!("cannot signal pid {pid}: errno {e}"));
    if status == Status::Created || sig == libc::SIGKILL {
        // The workload process itself: the shim reaps it with this signal's status (137 for SIGKILL), and the
        // sandbox it ran in is stopped (everything in it killed) before `kill` returns.
        if status == Status::Paused {
            pause(ctx, id, false)?;
        }
        send(container.pid, sig)?;
        if sig == libc::SIGKILL || status == Status::Created {
            let _ = crate::longlived::stop(&container.sandbox);
        }
        return Ok(0);
    }
    if FORWARDED.contains(&sig) && !all {
        // The workload process forwards it to the command, as `airlock exec` does.
        send(container.pid, sig)?;
        return Ok(0);
    }
    // Any other signal, or any with --all: every process of the container but airlock's own (the sandbox's init,
    // which holds it, and its exec agent).
    for pid in workload_pids(&container)? {
        let _ = send(pid, sig);
    }
    Ok(0)
}

fn delete(ctx: &Ctx, id: &str, force: bool) -> Result<i32> {
    let container = Container::load(ctx, id)?;
    let status = container.status(ctx);
    if status != Status::Stopped {
        if !force {
            bail!("cannot delete container {id} that is not stopped: {}", status.as_str());
        }
        if status == Status::Paused {
            let _ = pause(ctx, id, false);
        }
        let _ = sys::signal::kill(container.pid, libc::SIGKILL);
        let started = Instant::now();
        while container.alive() && started.elapsed() < GONE_WAIT {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let dir = state::sandbox_dir(&container.sandbox);
    if state::is_running(&dir) {
        crate::longlived::stop(&container.sandbox)?;
    }
    if dir.path().exists() {
        store::sandbox::remove_sandbox(&dir)
            .map_err(|e| anyhow!("cannot remove sandbox {}: {}", container.sandbox, session::error_chain(&e)))?;
    }
    remove_freezer_v1(&container.sandbox);
    let cdir = ctx.dir(id);
    std::fs::remove_dir_all(&cdir).with_context(|| format!("cannot remove {}", cdir.display()))?;
    Ok(0)
}

/// The host pids of every process in the container's sandbox (its pid namespace).
fn container_pids(container: &Container) -> Result<Vec<i32>> {
    let Some(init) = container.init_pid() else { return Ok(Vec::new()) };
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).context("the container's pid namespace")?;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot read /proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|link| link == ns) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The container's own processes: those of its sandbox but airlock's (the sandbox's init and exec agent, which
/// run the `airlock` executable: its supervisor's, next to this airlock-server).
fn workload_pids(container: &Container) -> Result<Vec<i32>> {
    let exe = crate::siblings::airlock().ok();
    let mut pids = container_pids(container)?;
    pids.retain(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok() != exe);
    Ok(pids)
}

fn ps(ctx: &Ctx, id: &str, format: &str) -> Result<i32> {
    let container = Container::load(ctx, id)?;
    if container.status(ctx) == Status::Stopped {
        bail!("container not running");
    }
    let pids = workload_pids(&container)?;
    if format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
    } else {
        println!("PID CMD");
        for pid in pids {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd: Vec<String> =
                cmd.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into()).collect();
            println!("{pid} {}", cmd.join(" "));
        }
    }
    Ok(0)
}

/// Pause or resume every process in the container: the sandbox's cgroup v2 `cgroup.freeze` when it has one, else
/// a v1 freezer cgroup of the container's own, else (no freezer at all) SIGSTOP and SIGCONT.
fn pause(ctx: &Ctx, id: &str, stop: bool) -> Result<i32> {
    let mut container = Container::load(ctx, id)?;
    match (container.status(ctx), stop) {
        (Status::Running, true) | (Status::Paused, false) => {}
        (Status::Stopped, _) => bail!("container not running"),
        (Status::Paused, true) => bail!("container {id} is already paused"),
        (_, true) => bail!("container {id} is not running"),
        (_, false) => bail!("container {id} is not paused"),
    }
    if !freeze_v2(&container.sandbox, stop) && !freeze_v1(&container, stop)? {
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        for pid in container_pids(&container)? {
            let _ = sys::signal::kill(pid, sig);
        }
    }
    container.paused = stop;
    container.save(ctx)?;
    Ok(0)
}

/// Writes the sandbox's v2 `cgroup.freeze`; `false` when it has none (no cgroup, or cgroup v1).
fn freeze_v2(sandbox: &str, freeze: bool) -> bool {
    use runtime::cgroups;
    let Ok(layout) = cgroups::detect_layout(Path::new(cgroups::SYS_FS_CGROUP)) else { return false };
    let Ok(Some(cgroup)) = cgroups::find_sandbox_cgroup(&layout, sandbox) else { return false };
    let file = cgroup.paths().into_iter().map(|d| d.join("cgroup.freeze")).find(|f| f.exists());
    match file {
        Some(file) => std::fs::write(file, if freeze { "1" } else { "0" }).is_ok(),
        None => false,
    }
}

/// The v1 freezer hierarchy's mount point, if the host has one.
fn freezer_v1_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let (fstype, _source, options) = (fields.next()?, fields.next()?, fields.next()?);
        let mount_point = left.split(' ').nth(4)?;
        (fstype == "cgroup" && options.split(',').any(|o| o == "freezer")).then(|| PathBuf::from(mount_point))
    })
}

/// The container's own v1 freezer cgroup (`FREEZER/airlock-oci/SANDBOX`).
fn freezer_v1_dir(sandbox: &str) -> Option<PathBuf> {
    Some(freezer_v1_root()?.join("airlock-oci").join(sandbox))
}

/// Freezes (every process of the container moved into its freezer cgroup first) or thaws; `false` when the host
/// has no v1 freezer.
fn freeze_v1(container: &Container, freeze: bool) -> Result<bool> {
    let Some(dir) = freezer_v1_dir(&container.sandbox) else { return Ok(false) };
    let state = dir.join("freezer.state");
    if !freeze {
        if !state.exists() {
            return Ok(false);
        }
        std::fs::write(&state, "THAWED").with_context(|| format!("cannot thaw {}", dir.display()))?;
        return Ok(true);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // A process forks into its parent's cgroup: once a pass finds nothing left outside, nothing can escape.
    for _ in 0..100 {
        let inside = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let inside: Vec<i32> = inside.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let outside: Vec<i32> = container_pids(container)?.into_iter().filter(|p| !inside.contains(p)).collect();
        if outside.is_empty() {
            break;
        }
        for pid in outside {
            // A process that exited meanwhile: nothing to freeze.
            let _ = std::fs::write(dir.join("cgroup.procs"), pid.to_string());
        }
    }
    std::fs::write(&state, "FROZEN").with_context(|| format!("cannot freeze {}", dir.display()))?;
    let started = Instant::now();
    while std::fs::read_to_string(&state).unwrap_or_default().trim() != "FROZEN" {
        if started.elapsed() > GONE_WAIT {
            let _ = std::fs::write(&state, "THAWED");
            bail!("the container's processes did not freeze within {}s", GONE_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(true)
}

/// Removes the container's v1 freezer cgroup (empty once its processes are gone), and the shared parent when it
/// is empty.
fn remove_freezer_v1(sandbox: &str) {
    if let Some(dir) = freezer_v1_dir(sandbox) {
        let _ = std::fs::remove_dir(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn exec(
    ctx: &Ctx,
    id: &str,
    process: oci::Process,
    detach: bool,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
    _log: &mut Log,
) -> Result<i32> {
    let container = Container::load(ctx, id)?;
    if !matches!(container.status(ctx), Status::Running | Status::Created) {
        bail!("container not running");
    }
    // Checked now: a bad process is exec's error.
    oci::process_plan(&process, &mut Vec::new())?;
    if !detach && console_socket.is_none() {
        if let Some(path) = pid_file {
            write_pid_file(path, std::process::id() as i32)?;
        }
        return run_process(&container, &process);
    }
    // The caller may remove its process file as soon as we return: the detached process reads a copy.
    let copy = ctx.dir(id).join(format!("exec-{}-{}.json", std::process::id(), rfc3339_now().replace(':', "")));
    let text = serde_json::to_vec(&process_json(&process))?;
    std::fs::write(&copy, text).with_context(|| format!("cannot write {}", copy.display()))?;
    let mut cmd = ctx.self_command()?;
    cmd.arg("__exec").arg(id).arg(&copy);
    let console = console_socket.map(|s| console_for(s, process.terminal)).transpose()?;
    if let Some(slave) = &console {
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?));
    }
    let mut child = cmd.spawn().context("cannot start the exec's process")?;
    drop(console);
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    if let Some(path) = pid_file {
        write_pid_file(path, pid)?;
    }
    if detach {
        std::mem::forget(child);
        return Ok(0);
    }
    let status = child.wait().context("the exec's process")?;
    Ok(status.code().unwrap_or(1))
}

/// A process as JSON again (for the detached exec's copy).
fn process_json(p: &oci::Process) -> serde_json::Value {
    serde_json::json!({
        "terminal": p.terminal,
        "user": {"uid": p.user.uid, "gid": p.user.gid},
        "args": p.args,
        "env": p.env,
        "cwd": p.cwd,
    })
}

fn exec_process(ctx: &Ctx, id: &str, path: &Path) -> Result<i32> {
    let process = oci::read_process(path);
    let _ = std::fs::remove_file(path);
    let container = Container::load(ctx, id)?;
    run_process(&container, &process?)
}

fn list(ctx: &Ctx, format: &str, quiet: bool) -> Result<i32> {
    let mut states = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&ctx.root) {
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_string) else { continue };
            if let Ok(c) = Container::load(ctx, &id) {
                states.push(c.state_json(ctx));
            }
        }
    }
    if format == "json" {
        println!("{}", serde_json::to_string(&states)?);
    } else {
        for s in &states {
            if quiet {
                println!("{}", s["id"].as_str().unwrap_or(""));
            } else {
                println!("{}\t{}\t{}\t{}", s["id"], s["pid"], s["status"], s["bundle"]);
            }
        }
    }
    Ok(0)
}

fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "size"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": [],
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": true, "actions": [], "operators": [], "archs": []},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "dev.airlock.net.allow": "comma-separated DOMAIN[:PORT] reachable through airlock's gateway",
            "dev.airlock.profile": "the airlock profile the bundle is layered over",
            "dev.airlock.audit": "true: the audit log records every exec",
        },
    })
}

/// Now, as RFC 3339 in UTC with nanoseconds (what runc writes).
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_are_valid_and_distinct_per_root() {
        let a = sandbox_name(Path::new("/run/a"), "t1");
        let b = sandbox_name(Path::new("/run/b"), "t1");
        assert_ne!(a, b);
        policy::names::validate_sandbox_name(&a).unwrap();
        let long = "f".repeat(64);
        policy::names::validate_sandbox_name(&sandbox_name(Path::new("/r"), &long)).unwrap();
        policy::names::validate_sandbox_name(&sandbox_name(Path::new("/r"), "...")).unwrap();
    }

    #[test]
    fn ids_and_signals_parse_as_runc_has_them() {
        assert!(validate_id("abc_1.2+3-4").is_ok());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("..").is_err());
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn the_time_is_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
