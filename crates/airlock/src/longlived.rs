//! Long-lived sandboxes: `airlock create`, `airlock exec`, `airlock stop`.
//!
//! `create` starts a supervisor in the background (this binary, hidden subcommand `__supervise`, its own
//! process group), hands it what to launch on its standard input (the merged profile as JSON: never on its
//! command line, which every user of the host can read in `/proc/PID/cmdline`, and which would hold the values
//! of `--env`), and returns once the sandbox is set up: the supervisor prints `ready` on its standard output
//! then moves its output to `$STATE/sandboxes/NAME/supervisor.log`. The supervisor runs the same setup as
//! `airlock run`, but its init holds the sandbox instead of running a command; it records init's pid and start
//! time in `sandbox.json` and keeps the merged profile in `profile.json`, which is what `exec` needs.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use policy::names::validate_sandbox_name;
use policy::profile::{self, Profile};
use policy::sandbox::SandboxPolicy;
use runtime::attach::AttachError;
use runtime::sandbox::RunOutcome;
use session::backend::{BackendError, NamespaceBackend};
use session::handle::{lookup, Lookup};
use session::launch::{launch, Hooks, LaunchSpec, Lifetime};
use session::SessionError;

use crate::cli::{CreateArgs, ExecArgs};
use crate::run::{check_workspace_outside_state, flags_profile, load_profiles, lock_dir};
use crate::state;

/// What the supervisor prints once the sandbox is set up.
const READY: &str = "ready";
/// How long `airlock stop` waits for the supervisor to take the sandbox down.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The command init's plan is built with: never run (init holds the sandbox), but a plan needs one.
const HOLD_COMMAND: &str = "/bin/true";

pub fn create(args: CreateArgs) -> Result<i32> {
    let name = &args.sandbox;
    let (merged, policy, image_id) = create_policy(&args)?;
    if policy.network == policy::sandbox::Network::Host {
        crate::say("warning: --net host: the sandbox shares the host's network (no network isolation)");
    }
    if state::sandbox_dir(name).exists() {
        bail!("a sandbox named {name} exists already (see `airlock ls`; `airlock rm {name}` removes it)");
    }
    // Its image is kept (`image rm`, `prune`) while the sandbox's directory exists.
    if let Some(id) = &image_id {
        crate::image_cmd::mark_in_use(id, name)?;
    }
    let ready = spawn_supervisor(name, merged, args.opts.audit.clone(), &mut |text| eprint!("{text}"))?;
    if ready {
        if args.json {
            print_created_json(name, image_id.as_deref())?;
        }
        return Ok(0);
    }
    Ok(i32::from(crate::EXIT_SETUP_FAILED))
}

/// Starts the supervisor of the held sandbox `name` (from its merged profile) and waits until it is set up:
/// `true` once it is, `false` when its setup failed (its `airlock:` lines, warnings or the setup error, go to
/// `report`).
pub(crate) fn spawn_supervisor(
    name: &str,
    merged: Profile,
    audit: Option<String>,
    report: &mut dyn FnMut(&str),
) -> Result<bool> {
    // `airlock` itself, or next to airlock-server's OCI runtime.
    let exe = crate::siblings::airlock()?;
    let request = SuperviseRequest { profile: merged, audit };
    let request = serde_json::to_vec(&request).context("cannot encode the sandbox's profile")?;
    let mut child = Command::new(exe)
        .args(["__supervise", "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: Ctrl-C at the terminal that ran `create` does not reach the sandbox.
        .process_group(0)
        .spawn()
        .context("cannot start the sandbox's supervisor")?;
    // The request, then end of file. A supervisor that died before reading it says why on its stderr, below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = runtime::host::with_sigpipe_ignored(|| stdin.write_all(&request));
    }
    // Both streams end once the supervisor is ready (it moves them to its log; init's point at /dev/null) or
    // gone.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    // Warnings, or the setup error: already `airlock:` lines.
    report(&err);
    if out.lines().any(|l| l == READY) {
        return Ok(true);
    }
    let _ = child.wait();
    // The supervisor removes what it created when the setup fails; make sure nothing half-made stays.
    let dir = state::sandbox_dir(name);
    if dir.exists() && !state::is_running(&dir) {
        let _ = store::sandbox::remove_sandbox(&dir);
    }
    if err.trim().is_empty() {
        bail!("the supervisor of sandbox {name} exited before the sandbox was set up");
    }
    Ok(false)
}

/// `create --json`: the sandbox's name, state and ids (its init's and supervisor's host pids, its image's id).
fn print_created_json(name: &str, image_id: Option<&str>) -> Result<()> {
    let dir = state::sandbox_dir(name);
    let record = state::read_record(&dir)?;
    let doc = serde_json::json!({
        "name": name,
        "state": if state::is_running(&dir) { "running" } else { "exited" },
        "ids": {
            "init_pid": record.init_pid,
            "supervisor_pid": record.supervisor_pid,
            "image": image_id,
        },
    });
    println!("{doc}");
    Ok(())
}

/// The hidden `airlock __supervise --name NAME`: what to launch comes on standard input ([`SuperviseRequest`]).
#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    #[arg(long)]
    pub name: String,
}

/// What `create` hands its supervisor.
#[derive(serde::Serialize, serde::Deserialize)]
struct SuperviseRequest {
    /// The merged profile: `--profile` files and every flag.
    profile: Profile,
    /// `--audit FILE`.
    audit: Option<String>,
}

/// Most bytes of a request the supervisor reads.
const MAX_REQUEST: u64 = 16 << 20;

/// `create`'s options as a merged profile, the policy it resolves to (with a placeholder command), and the id of
/// its `--image`.
fn create_policy(args: &CreateArgs) -> Result<(Profile, SandboxPolicy, Option<String>)> {
    let name = &args.sandbox;
    validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let opts = &args.opts;
    // --image: the image is the bottom of the profile (its command is for `run`; `exec` names its own).
    let image = match &opts.image {
        Some(reference) => Some(crate::image_cmd::image_base(reference, &[], opts.workspace.is_some())?),
        None => None,
    };
    let base = load_profiles(&opts.profile)?;
    let base = match &image {
        Some(image) => image.profile.clone().merge(base),
        None => base,
    };
    let merged = base.merge(flags_profile(opts)?);
    let policy = held_policy(&merged)?;
    Ok((merged, policy, image.map(|i| i.id)))
}

/// The policy a merged profile resolves to for a held sandbox (with a placeholder command).
fn held_policy(merged: &Profile) -> Result<SandboxPolicy> {
    // Checked here (an unknown isolation is refused before anything starts).
    crate::run::vm_isolation(merged)?;
    let policy = profile::resolve(merged, vec![HOLD_COMMAND.to_string()], &session::invoker())?;
    check_workspace_outside_state(&policy)?;
    Ok(policy)
}

/// The hidden `__supervise`: sets the sandbox up, says `ready`, and supervises it until it is stopped.
pub fn supervise(args: SuperviseArgs) -> Result<i32> {
    let name = args.name;
    validate_sandbox_name(&name).map_err(|e| anyhow!("{e}"))?;
    let mut text = Vec::new();
    std::io::stdin().take(MAX_REQUEST).read_to_end(&mut text).context("cannot read the supervisor's request")?;
    let request: SuperviseRequest =
        serde_json::from_slice(&text).context("the supervisor's request is not what `airlock create` sends")?;
    let merged = request.profile;
    let policy = held_policy(&merged)?;
    let state = state::state();
    let spec = LaunchSpec {
        state: &state,
        merged: &merged,
        policy: &policy,
        name: Some(name.clone()),
        record_name: name.clone(),
        lifetime: Lifetime::Held,
        audit_copy: request.audit.as_deref(),
        lock_dir: lock_dir(),
    };
    let warn = &mut |w: &str| crate::say(&format!("warning: {w}"));
    let mut agent_server = None;
    // `--isolation vm`: the supervisor holds the guest (its QEMU is the sandbox's recorded init), and serves
    // execs itself: no exec agent (see `session::vm::held`).
    let vm_backend;
    let backend: &dyn session::backend::Backend = match crate::run::vm_isolation(&merged)? {
        false => &NamespaceBackend,
        true => {
            vm_backend = session::vm::VmBackend {
                config: session::vm::VmConfig::new(&policy, &merged.vm, state.path().join("cache").join("vm"))?,
            };
            &vm_backend
        }
    };
    let vm = backend.name() == "vm";
    let on_ready = &mut || {
        // The exec agent first, so that a sandbox is ready with it (the daemon's pools wait for its socket).
        if !vm {
            agent_server = start_exec_agent(&state, &name);
        }
        println!("{READY}");
        let _ = std::io::stdout().flush();
    };
    let ended = launch(backend, spec, Hooks { warn, on_ready });
    // Its agent ended with the sandbox (init's pid namespace took it); the process that served it follows once
    // it has written its last audit records. Reaped here, so nothing of the sandbox outlives its supervisor.
    if let Some(pid) = agent_server {
        reap_agent_server(pid);
    }
    let ended = ended?;
    if let RunOutcome::TimedOut(elapsed) = &ended.outcome {
        crate::say(&format!("sandbox {name} timed out after {:.1}s: it was killed", elapsed.as_secs_f64()));
    }
    Ok(0)
}

pub fn exec(args: ExecArgs) -> Result<i32> {
    let started = Instant::now();
    let name = &args.name;
    validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let state = state::state();
    let sandbox = match lookup(&state, name)? {
        Lookup::Running(sandbox) => sandbox,
        Lookup::Missing => {
            crate::say(&format!("no sandbox named {name} (see `airlock ls`)"));
            return Ok(i32::from(crate::EXIT_FAILED));
        }
        Lookup::NotLongLived => {
            crate::say(&format!("sandbox {name} was not started by `airlock create`; there is nothing to exec in"));
            return Ok(i32::from(crate::EXIT_FAILED));
        }
        Lookup::NotRunning => {
            crate::say(&format!(
                "sandbox {name} is not running (it has exited; `airlock diff {name}` still shows its changes)"
            ));
            return Ok(i32::from(crate::EXIT_FAILED));
        }
    };
    let mut merged = sandbox.profile()?;
    for file in &args.env_file {
        for (key, value) in read_env_file(file)? {
            merged.env.set.insert(key, value);
        }
    }
    if let Some(user) = &args.user {
        let Some(ids) = policy::profile::parse_user(user) else {
            bail!("--user {user:?}: expected root or UID[:GID]");
        };
        if !sandbox.maps_inside_ids(ids.uid, ids.gid)? {
            bail!(
                "--user {user}: sandbox {name} maps no such id (a sandbox created rootless maps only its owner's \
                 id; one created as root maps 0-65535)"
            );
        }
        merged.process.user = Some(user.clone());
    }
    // After the file: a variable given on the command line wins.
    for kv in &args.env {
        let (key, value) = kv.split_once('=').ok_or_else(|| anyhow!("--env {kv:?}: expected KEY=VALUE"))?;
        merged.env.set.insert(key.to_string(), value.to_string());
    }
    let exec_timeout = args
        .timeout
        .as_deref()
        .map(|t| policy::units::parse_duration(t).map_err(|e| anyhow!("--timeout {t:?}: {e}")))
        .transpose()?;
    let mut policy = profile::resolve(&merged, args.command.clone(), &session::invoker())?;
    session::gateway::add_proxy_environment(&mut policy, &|key| merged.env.set.contains_key(key));
    if let Some(cwd) = &args.cwd {
        policy.cwd = policy::names::validate_absolute_path(cwd).map_err(|e| anyhow!("--cwd: {e}"))?;
    }
    // The stored profile's timeout is the sandbox's, enforced by its supervisor; an exec's limit is its own.
    policy.timeout = exec_timeout;
    let mut host = sandbox.host_context(&policy, lock_dir())?;
    // With -t: a new pseudo-terminal in the sandbox, relayed to ours (never ours itself).
    host.tty = args.tty.then(runtime::host::caller_window_size);
    // The sandbox's cgroup counts OOM kills over its whole life: one more during this command, and the command
    // killed by SIGKILL, is this command's (as `run` tells it from its own cgroup). Its files are opened now:
    // starting the command moves this process into the sandbox's mount namespace, where the host's cgroupfs is
    // out of sight.
    let mut oom_watch = OomWatch::open(name);
    // `--isolation vm`: through the supervisor's socket into the guest (see `session::vm::held`).
    let held_vm;
    let backend: &dyn session::backend::Backend = match crate::run::vm_isolation(&merged)? {
        false => &NamespaceBackend,
        true => {
            held_vm = session::vm::held::HeldVm { socket: sandbox.dir.path().join(session::vm::held::SOCKET_NAME) };
            &held_vm
        }
    };
    match sandbox.exec(backend, &state, &policy, &host) {
        Ok(outcome) => {
            let outcome = match oom_watch.as_mut() {
                Some(watch) if outcome == RunOutcome::Exited(runtime::sandbox::EXIT_OUT_OF_MEMORY) => {
                    watch.outcome().unwrap_or(outcome)
                }
                _ => outcome,
            };
            match &outcome {
                RunOutcome::ExecFailed { message, .. } => crate::say(message),
                RunOutcome::TimedOut(_) => crate::say(&format!(
                    "command timed out after {} (--timeout): it and its session were killed",
                    args.timeout.as_deref().unwrap_or("?")
                )),
                RunOutcome::OutOfMemory { summary } => crate::say(&format!("killed: out of memory ({summary})")),
                RunOutcome::Exited(_) => {}
            }
            if args.json {
                crate::run::print_result_json(Some(name), &outcome, started.elapsed())?;
            }
            Ok(outcome.exit_code())
        }
        Err(SessionError::Backend(BackendError::Attach(AttachError::NotRunning(_)))) => {
            crate::say(&format!("sandbox {name} is not running"));
            Ok(i32::from(crate::EXIT_FAILED))
        }
        Err(e) => Err(e.into()),
    }
}

/// The memory files of a running sandbox's cgroup, held open across an exec: its OOM kill count before, and
/// what tells a SIGKILL after it apart as an OOM kill (`run` reads the same numbers from its own cgroup).
struct OomWatch {
    /// `memory.events` (v2) or `memory.oom_control` (v1): the `oom_kill` line.
    events: std::fs::File,
    /// `memory.peak` (v2) or `memory.max_usage_in_bytes` (v1), when the kernel has it.
    peak: Option<std::fs::File>,
    /// The limit and the count before the command, from the same reading as `airlock stats`.
    before: runtime::cgroups::CgroupStats,
}

impl OomWatch {
    /// `None` when the sandbox has no cgroup (no limits) or no memory controller in it.
    fn open(name: &str) -> Option<OomWatch> {
        use runtime::cgroups;
        let layout = cgroups::detect_layout(std::path::Path::new(cgroups::SYS_FS_CGROUP)).ok()?;
        // Opened, not created: dropping it leaves the cgroup.
        let cgroup = cgroups::find_sandbox_cgroup(&layout, name).ok().flatten()?;
        let before = cgroup.stats().ok()?;
        let open = |file: &str| cgroup.paths().into_iter().find_map(|dir| std::fs::File::open(dir.join(file)).ok());
        let events = open("memory.events").or_else(|| open("memory.oom_control"))?;
        let peak = open("memory.peak").or_else(|| open("memory.max_usage_in_bytes"));
        Some(OomWatch { events, peak, before })
    }

    /// `OutOfMemory` when the cgroup counted an OOM kill since [`OomWatch::open`].
    fn outcome(&mut self) -> Option<RunOutcome> {
        let kills = keyed(&reread(&mut self.events)?, "oom_kill")?;
        if kills <= self.before.oom_kills.unwrap_or(0) {
            return None;
        }
        let peak = self.peak.as_mut().and_then(reread).and_then(|t| t.trim().parse().ok());
        let stats = runtime::cgroups::CgroupStats { memory_peak: peak, ..self.before.clone() };
        Some(RunOutcome::OutOfMemory { summary: stats.memory_summary() })
    }
}

/// A cgroup file's text now (from its start again).
fn reread(file: &mut std::fs::File) -> Option<String> {
    use std::io::Seek;
    file.rewind().ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// The number after `key` in a `key value` per line file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--env-file`: `KEY=VALUE` lines, or NUL-terminated entries when the file holds a NUL byte. Every key and value
/// is checked as `--env`'s are; an error names the entry.
pub(crate) fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>> {
    let bytes = std::fs::read(path).with_context(|| format!("--env-file {}: cannot read it", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("--env-file {}: not UTF-8 text", path.display()))?;
    let nul_separated = text.contains('\0');
    let entries: Vec<&str> = if nul_separated { text.split('\0').collect() } else { text.lines().collect() };
    let mut out = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        if !nul_separated && (entry.trim().is_empty() || entry.trim_start().starts_with('#')) {
            continue;
        }
        if nul_separated && entry.is_empty() {
            continue;
        }
        // `FILE:LINE` (or `FILE: entry N` for NUL-terminated entries), as compilers name a place.
        let place = if nul_separated {
            format!("{}: entry {}", path.display(), i + 1)
        } else {
            format!("{}:{}", path.display(), i + 1)
        };
        let (key, value) = entry.split_once('=').ok_or_else(|| anyhow!("--env-file {place}: expected KEY=VALUE"))?;
        policy::names::validate_env_key(key)
            .and_then(|()| policy::names::validate_env_value(value))
            .map_err(|e| anyhow!("--env-file {place}: {e}"))?;
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

pub fn stop(name: &str) -> Result<i32> {
    validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let dir = state::sandbox_dir(name);
    if !dir.exists() {
        bail!("no sandbox named {name} (see `airlock ls`)");
    }
    if !state::is_running(&dir) {
        bail!("sandbox {name} is not running");
    }
    let record = state::read_record(&dir)?;
    let (Some(pid), Some(start)) = (record.supervisor_pid, record.supervisor_start_time) else {
        bail!("sandbox {name} was started by `airlock run`; it stops when its command ends (or on Ctrl-C there)");
    };
    // The recorded supervisor, not a process that reused its pid.
    if runtime::host::process_start_time(pid) != Some(start) {
        bail!("sandbox {name} is not running (its supervisor, pid {pid}, is gone)");
    }
    sys::signal::kill(pid, libc::SIGTERM)
        .map_err(|e| anyhow!("cannot signal the supervisor of sandbox {name} (pid {pid}): errno {e}"))?;
    let started = Instant::now();
    // Until the supervisor itself has exited, not only until the sandbox is marked ended: it still removes the
    // cgroup and writes its last records after that, and an `airlock rm` right after `stop` must find the
    // sandbox's directory finished (else the removal races those writes: "Directory not empty").
    while state::is_running(&dir) || runtime::host::process_alive(pid, start) {
        if started.elapsed() > STOP_WAIT {
            bail!("sandbox {name} did not stop within {}s (supervisor pid {pid})", STOP_WAIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(0)
}

/// The argv the agent's plan is built for. Never executed: the agent serves where its command would `execve`
/// (an absolute path, so no `PATH` lookup is made for it).
const AGENT_COMMAND: &str = "/airlock-exec-agent";

/// Starts the process that serves the held sandbox `name`'s exec agent: a fork of its supervisor (which is
/// single-threaded: the fork checks it), so it costs the pages it writes, not a new airlock process. `None` (the
/// sandbox runs without an agent: execs take the long way) when it cannot be forked.
fn start_exec_agent(state: &store::StateDir, name: &str) -> Option<libc::pid_t> {
    match sys::process::fork() {
        Ok(sys::process::Forked::Child) => {
            // Nothing of the supervisor's: its lock on the sandbox, its signalfd, `create`'s pipes (which must
            // end when the supervisor says ready). This process never returns into the supervisor's frames, so
            // no owner of those descriptors closes them again.
            let _ = sys::fd::close_range(3, u32::MAX);
            if let Ok(log) = std::fs::OpenOptions::new().append(true).open(state.sandbox(name).supervisor_log()) {
                let _ = runtime::host::redirect_stdout_stderr_to(&log);
            }
            let code = match serve_agent(state, name) {
                Ok(code) => code,
                Err(e) => {
                    crate::say(&format!("the exec agent of {name} stopped: {e:#}"));
                    125
                }
            };
            sys::process::exit_immediately(code)
        }
        Ok(sys::process::Forked::Parent(pid)) => Some(pid),
        Err(errno) => {
            crate::say(&format!(
                "warning: no exec agent for {name} (cannot fork: {}); execs run through airlock exec",
                std::io::Error::from_raw_os_error(errno)
            ));
            None
        }
    }
}

/// Waits for the agent's server to end, killing it after a while (its agent is gone with the sandbox by now).
fn reap_agent_server(pid: libc::pid_t) {
    let Ok(pidfd) = sys::process::pidfd_open(pid) else { return };
    let mut fds = [libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd), events: libc::POLLIN, revents: 0 }];
    if !matches!(sys::fd::poll(&mut fds, 5000), Ok(1)) {
        let _ = sys::process::pidfd_send_signal(std::os::fd::AsFd::as_fd(&pidfd), libc::SIGKILL);
    }
    let _ = sys::wait::wait_for_exit(pid);
}

/// Serves the sandbox's exec agent until the sandbox ends: binds `agent.sock` in its directory (mode 0600, given
/// to the sandbox's user), makes the agent inside it exactly as `exec` makes a command, and stays as the holder
/// of its seccomp listener (the commands it starts are audited like an exec's). Returns 0 at once when another
/// process serves it already (`agent.lock`).
fn serve_agent(state: &store::StateDir, name: &str) -> Result<i32> {
    let sandbox = match lookup(state, name)? {
        Lookup::Running(sandbox) => sandbox,
        _ => {
            crate::say(&format!("sandbox {name} is not running; it has no exec agent"));
            return Ok(i32::from(crate::EXIT_FAILED));
        }
    };
    let dir = state.sandbox(name);
    let lock_path = dir.agent_lock_file();
    let Some(lock) =
        runtime::host::try_lock_file(&lock_path).with_context(|| format!("cannot lock {}", lock_path.display()))?
    else {
        return Ok(0);
    };
    let published = dir.agent_socket();
    let socket = runtime::agent::AgentSocket { bound: published.with_extension("sock.new"), published };
    // Sockets left by an agent that ended with its sandbox's earlier life (the lock says none serves now).
    let _ = std::fs::remove_file(&socket.published);
    let _ = std::fs::remove_file(&socket.bound);
    let listener = std::os::unix::net::UnixListener::bind(&socket.bound)
        .with_context(|| format!("cannot bind the exec agent's socket {}", socket.bound.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&socket.bound, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", socket.bound.display()))?;
    // The agent polls it and accepts what is there: a wakeup whose connection is gone must not block it.
    listener.set_nonblocking(true).context("cannot make the exec agent's socket non-blocking")?;
    let merged = sandbox.profile()?;
    let mut policy = profile::resolve(&merged, vec![AGENT_COMMAND.to_string()], &session::invoker())?;
    session::gateway::add_proxy_environment(&mut policy, &|key| merged.env.set.contains_key(key));
    policy.timeout = None;
    let host = sandbox.host_context(&policy, lock_dir())?;
    let served = sandbox.serve_exec_agent(&NamespaceBackend, state, &policy, &host, listener.into(), &socket);
    // The socket goes before the lock: a new agent never finds a socket another one's end removes under it.
    let _ = std::fs::remove_file(&socket.published);
    let _ = std::fs::remove_file(&socket.bound);
    drop(lock);
    match served {
        Ok(outcome) => Ok(outcome.exit_code()),
        Err(SessionError::Backend(BackendError::Attach(AttachError::NotRunning(_)))) => Ok(0),
        Err(e) => Err(e.into()),
    }
}
