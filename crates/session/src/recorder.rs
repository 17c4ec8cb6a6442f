//! The audit recorder: when a run keeps an audit log and what it captures, the lifecycle, resource and file
//! records written around the run, the sink the runtime hands exec/denial records to, and learn mode's
//! suggestion. (`airlock logs`, which reads the log, is the binary's.)
//!
//! When (see README "Audit log"):
//! - a sandbox that keeps state (`--name`, or a generated name for a `cow` workspace) and is not `--rm`: a log
//!   at `$STATE/sandboxes/NAME/audit.jsonl` with lifecycle, denial, resource and file records;
//! - exec records too (one seccomp notification per exec) with `--audit FILE`, with `--learn`, with a profile's
//!   `[audit] exec = true`, and for every `airlock exec` into a sandbox made by `airlock create`;
//! - `--audit FILE`: the same lines also appended to FILE (for an anonymous `run --rm`, FILE is the only log);
//! - an anonymous `run --rm` without `--audit` writes no log and installs no listener: its start-up cost is
//!   unchanged.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use audit::{AuditLog, Event};
use policy::profile::Profile;
use policy::sandbox::{Network, Rootfs, SandboxPolicy, WorkspaceMode};
use runtime::cgroups::CgroupStats;
use runtime::sandbox::{RunOutcome, RunReport};
use runtime::seccomp::NotifyOptions;
use serde_json::{json, Value};

use store::StateDir;

use crate::error::SessionError;

/// A file in the state directory naming the `--audit FILE` copy of a long-lived sandbox, so that each
/// `airlock exec` appends there too.
const COPY_FILE: &str = "audit-copy";

/// The audit log of the sandbox `name`.
pub fn log_path(state: &StateDir, name: &str) -> PathBuf {
    state.sandbox(name).audit_log()
}

/// Where a sandbox's audit events go, and the runtime's sink for the ones it sees (execs, denials, writes).
pub struct Recorder {
    log: Option<AuditLog>,
    pub notify: NotifyOptions,
    warned: bool,
    started: Instant,
    learn: Option<Learned>,
    /// When the oldest buffered record was kept (`None`: none is).
    first_pending: Option<Instant>,
    /// The log is learn mode's scratch log, removed when the recorder goes.
    scratch: bool,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(log) = self.log.as_ref().filter(|_| self.scratch) {
            let _ = std::fs::remove_file(log.path());
        }
    }
}

/// What learn mode collected.
#[derive(Default)]
struct Learned {
    /// What is mounted over the sandbox's root (see [`places`]).
    places: Vec<Place>,
    /// The workspace's path, for the advice to write there instead.
    workspace: Option<String>,
    denied_paths: BTreeSet<String>,
    /// The refused paths that were a directory the command tried to create (`mkdir`).
    denied_mkdirs: BTreeSet<String>,
    denied_syscalls: BTreeSet<(String, String)>,
}

/// A mount over the sandbox's root, as learn mode needs it: where, whether the sandbox may write there, and the
/// host directory behind it (`None`: a tmpfs or the kernel's own).
#[derive(Debug, Clone)]
struct Place {
    dest: String,
    writable: bool,
    source: Option<String>,
    /// The read-only workspace: the narrowest change is `workspace_mode = "cow"`, not a writable bind.
    workspace: bool,
}

impl runtime::notify::AuditSink for Recorder {
    fn record(&mut self, event: Event) {
        let event = match (event, &mut self.learn) {
            (Event::FileWrite { pid, syscall, path, .. }, learn) => {
                let text = String::from_utf8_lossy(&path).into_owned();
                let writable = learn.as_ref().is_some_and(|l| l.is_writable(&text));
                if let Some(l) = learn {
                    if !writable && !text.is_empty() {
                        if matches!(syscall.as_str(), "mkdir" | "mkdirat") {
                            l.denied_mkdirs.insert(text.clone());
                        }
                        l.denied_paths.insert(text);
                    }
                }
                // Only the refused ones are worth a record: the others are ordinary work.
                if writable {
                    return;
                }
                Event::FileWrite { pid, syscall, path, writable }
            }
            (Event::Denied(d), Some(l)) => {
                l.denied_syscalls.insert((d.syscall.clone(), d.errno_name.clone()));
                Event::Denied(d)
            }
            (event, _) => event,
        };
        self.buffer(&event);
    }

    fn flush_due(&self) -> Option<Duration> {
        self.first_pending.map(|t| FLUSH_AFTER.saturating_sub(t.elapsed()))
    }

    fn flush(&mut self) {
        self.first_pending = None;
        if let Some(log) = &mut self.log {
            if let Err(e) = log.flush() {
                self.warn(e);
            }
        }
    }
}

/// How long the runtime's records (execs, denials) may wait in memory before they are written: a burst of execs
/// is written in a few writes instead of one per exec, off the path of the waiting processes.
const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// ... and how many.
const FLUSH_COUNT: usize = 512;

/// The environment variable that chooses where a run's exec records come from: `auto` (the default), `seccomp`
/// or `kernel` (see `runtime::exec_tracepoints`).
pub const EXEC_RECORDS_VAR: &str = "AIRLOCK_EXEC_RECORDS";

/// [`EXEC_RECORDS_VAR`]'s choice; unset is `auto`. The binary refuses a bad value before any run starts
/// ([`exec_source_from_env_checked`]), so one that slipped through here is `auto`.
pub fn exec_source_from_env() -> runtime::exec_tracepoints::ExecSource {
    exec_source_from_env_checked().unwrap_or_default()
}

/// [`EXEC_RECORDS_VAR`]'s choice, or the bad value it holds.
pub fn exec_source_from_env_checked() -> Result<runtime::exec_tracepoints::ExecSource, String> {
    match std::env::var_os(EXEC_RECORDS_VAR) {
        None => Ok(runtime::exec_tracepoints::ExecSource::Auto),
        Some(v) => v
            .to_str()
            .and_then(runtime::exec_tracepoints::ExecSource::parse)
            .ok_or_else(|| v.to_string_lossy().into_owned()),
    }
}

/// The environment variable naming the bpffs directory where the kernel exec source's program is pinned, to be
/// loaded once instead of by every run (default `runtime::exec_tracepoints::DEFAULT_PIN_DIR`); empty: every run
/// loads its own.
pub const BPF_PIN_DIR_VAR: &str = "AIRLOCK_BPF_PIN_DIR";

/// [`BPF_PIN_DIR_VAR`]'s directory: `None` when it is set empty.
pub fn exec_tracer_pins_from_env() -> Option<std::path::PathBuf> {
    match std::env::var_os(BPF_PIN_DIR_VAR) {
        None => Some(runtime::exec_tracepoints::DEFAULT_PIN_DIR.into()),
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.into()),
    }
}

impl Recorder {
    /// For `airlock run`: `None` when nothing is recorded (an anonymous `--rm` run without `--audit` or
    /// `--learn`).
    #[allow(clippy::too_many_arguments)]
    pub fn for_run(
        state: &StateDir,
        name: Option<&str>,
        record_name: &str,
        rm: bool,
        copy: Option<&str>,
        learn: bool,
        profile_exec: bool,
        policy: &SandboxPolicy,
    ) -> Result<Option<Recorder>, SessionError> {
        let keeps_state = name.is_some() && !rm;
        if !keeps_state && copy.is_none() && !learn {
            return Ok(None);
        }
        let mut log = match (name.filter(|_| keeps_state), copy) {
            (Some(name), _) => Some(AuditLog::open(log_path(state, name))?.with_sandbox(name)),
            (None, Some(file)) => Some(AuditLog::open(file)?.with_sandbox(record_name)),
            // Learn mode alone keeps no log, but reads the network gateway's refusals from one: a private
            // scratch log in the state directory, removed when the recorder goes.
            (None, None) => {
                let path = state.learn_file(std::process::id());
                std::fs::create_dir_all(state.path())
                    .map_err(|source| SessionError::CreateStateDir { path: state.path().to_path_buf(), source })?;
                let _ = std::fs::remove_file(&path);
                Some(AuditLog::open(&path)?.with_sandbox(record_name))
            }
        };
        let scratch = !keeps_state && copy.is_none();
        if let (Some(log), Some(file), true) = (&mut log, copy, keeps_state) {
            log.add_copy(file)?;
        }
        let notify = NotifyOptions { exec: copy.is_some() || learn || profile_exec, denials: true, writes: learn };
        let learn = learn.then(|| Learned {
            places: places(policy),
            workspace: policy.workspace.as_ref().map(|w| w.path.clone()),
            ..Default::default()
        });
        Ok(Some(Recorder { log, notify, warned: false, started: Instant::now(), learn, first_pending: None, scratch }))
    }

    /// For `airlock create`'s supervisor: the sandbox's log (and the `--audit FILE` copy, remembered for
    /// `airlock exec`). It records the lifecycle only; commands come with `airlock exec`, which records their
    /// execs itself.
    pub fn for_create(state: &StateDir, name: &str, copy: Option<&str>) -> Result<Recorder, SessionError> {
        let mut log = AuditLog::open(log_path(state, name))?.with_sandbox(name);
        if let Some(file) = copy {
            log.add_copy(file)?;
            let absolute = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
            let marker = state.sandbox(name).file(COPY_FILE);
            std::fs::write(&marker, absolute.as_os_str().as_encoded_bytes())
                .map_err(|source| SessionError::RememberAuditCopy { path: marker, source })?;
        }
        Ok(Recorder {
            log: Some(log),
            notify: NotifyOptions::default(),
            warned: false,
            started: Instant::now(),
            learn: None,
            first_pending: None,
            scratch: false,
        })
    }

    /// For `airlock exec NAME`: appends to the sandbox's log (next to its supervisor and other `exec`s), with
    /// every exec recorded. `None` when the sandbox has no log (made before this build).
    pub fn for_exec(state: &StateDir, name: &str) -> Result<Option<Recorder>, SessionError> {
        let path = log_path(state, name);
        if !path.exists() {
            return Ok(None);
        }
        let mut log = AuditLog::open(&path)?.with_sandbox(name);
        if let Ok(copy) = std::fs::read(state.sandbox(name).file(COPY_FILE)) {
            log.add_copy(PathBuf::from(String::from_utf8_lossy(&copy).into_owned()))?;
        }
        Ok(Some(Recorder {
            log: Some(log),
            notify: NotifyOptions { exec: true, denials: true, writes: false },
            warned: false,
            started: Instant::now(),
            learn: None,
            first_pending: None,
            scratch: false,
        }))
    }

    /// The request the runtime takes, or `None` when nothing is notified.
    pub fn request(&mut self) -> Option<runtime::sandbox::AuditRequest<'_>> {
        let notify = self.notify;
        let exec_source = exec_source_from_env();
        let exec_tracer_pins = exec_tracer_pins_from_env();
        notify.any().then_some(runtime::sandbox::AuditRequest { notify, sink: self, exec_source, exec_tracer_pins })
    }

    pub fn append(&mut self, event: &Event) {
        self.first_pending = None;
        let Some(log) = &mut self.log else { return };
        if let Err(e) = log.append(event) {
            self.warn(e);
        }
    }

    /// A runtime record: kept for the next flush (see [`FLUSH_AFTER`]).
    fn buffer(&mut self, event: &Event) {
        let Some(log) = &mut self.log else { return };
        log.buffer(event);
        if log.pending() >= FLUSH_COUNT {
            runtime::notify::AuditSink::flush(self);
        } else if self.first_pending.is_none() {
            self.first_pending = Some(Instant::now());
        }
    }

    fn warn(&mut self, e: audit::AuditError) {
        if !self.warned {
            self.warned = true;
            crate::say(&format!("warning: audit log: {}", crate::error_chain(&e)));
        }
    }

    /// `created` and `started`: the command, a policy summary, and the merged profile's fingerprint.
    pub fn start(&mut self, merged: &Profile, policy: &SandboxPolicy, long_lived: bool) {
        self.started = Instant::now();
        self.append(&Event::Created {
            // A long-lived sandbox's plan carries a placeholder command that never runs: not worth recording.
            command: (!long_lived).then(|| policy.command.clone()),
            workspace: policy.workspace.as_ref().map(|w| w.path.clone()),
            long_lived,
            rootfs: Some(rootfs_summary(policy)),
            network: Some(network_summary(&policy.network)),
        });
        let profile = serde_json::to_value(merged).unwrap_or(Value::Null);
        let fingerprint = audit::chain::sha256_hex(
            audit::chain::canonical_json(&json!({ "profile": profile, "command": policy.command })).as_bytes(),
        );
        self.append(&Event::Started { policy: policy_summary(policy), policy_sha256: fingerprint });
    }

    /// `attached`: an `airlock exec` command started.
    pub fn attached(&mut self, command: &[String]) {
        self.started = Instant::now();
        self.append(&Event::Attached { command: command.to_vec() });
    }

    /// Resource, file and `exited` records at the end of a run.
    pub fn finish(&mut self, outcome: &RunOutcome, report: &RunReport, layer: Option<&store::layer::LayerStack>) {
        match outcome {
            RunOutcome::TimedOut(elapsed) => self.append(&Event::Resource {
                resource: "timeout".into(),
                message: format!("killed after {:.1}s", elapsed.as_secs_f64()),
            }),
            RunOutcome::OutOfMemory { summary } => {
                self.append(&Event::Resource { resource: "oom_kill".into(), message: summary.clone() })
            }
            _ => {}
        }
        if let Some(stats) = &report.stats {
            if stats.pids_max_hits.unwrap_or(0) > 0 {
                self.append(&Event::Resource {
                    resource: "pids_limit".into(),
                    message: format!(
                        "fork refused {} time(s) at the limit of {}",
                        stats.pids_max_hits.unwrap_or(0),
                        stats.pids_limit.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
                    ),
                });
            }
        }
        if let Some(stack) = layer {
            if let Some(event) = files_event(stack, "exit", None) {
                self.append(&event);
            }
        }
        let (reason, status) = match outcome {
            RunOutcome::Exited(code) if *code > 128 => (format!("signal {}", code - 128), *code),
            RunOutcome::Exited(code) => ("exited".to_string(), *code),
            RunOutcome::TimedOut(_) => ("timeout".to_string(), outcome.exit_code()),
            RunOutcome::ExecFailed { code, .. } => ("exec_failed".to_string(), *code),
            RunOutcome::OutOfMemory { .. } => ("oom_kill".to_string(), outcome.exit_code()),
        };
        self.append(&Event::Exited {
            status,
            reason,
            duration_ms: self.started.elapsed().as_millis() as u64,
            resources: report.stats.as_ref().map(resources_of),
        });
    }

    /// The files the network gateway appends its decisions to, as this recorder does: the log first (chained),
    /// then its copies (`--audit FILE`).
    pub fn gateway_files(&self) -> Vec<PathBuf> {
        let Some(log) = &self.log else { return Vec::new() };
        std::iter::once(log.path()).chain(log.copy_paths()).map(Path::to_path_buf).collect()
    }

    /// Learn mode's suggestion, on stderr: a profile snippet `airlock profile validate` accepts.
    pub fn print_learned(&self) {
        let Some(learned) = &self.learn else { return };
        let domains = self.log.as_ref().map(|l| denied_domains(l.path())).unwrap_or_default();
        eprint!("{}", suggestion(learned, &domains));
    }
}

/// What is mounted over the sandbox's root: `/tmp`, the kernel's `/dev` and `/proc` (writable as far as learn
/// mode is concerned: what is refused there is not the profile's to change), the workspace, the binds and the
/// tmpfs mounts. Everything else is the root, which is read-only (`--rootfs host`, a read-only `--rootfs DIR` or
/// image).
fn places(policy: &SandboxPolicy) -> Vec<Place> {
    let kernel = |dest: &str| Place { dest: dest.to_string(), writable: true, source: None, workspace: false };
    let mut places = vec![kernel("/tmp"), kernel("/dev"), kernel("/proc")];
    if let Some(w) = &policy.workspace {
        places.push(Place {
            dest: w.path.clone(),
            writable: w.mode != WorkspaceMode::Ro,
            source: Some(w.path.clone()),
            workspace: true,
        });
    }
    places.extend(policy.binds.iter().map(|b| Place {
        dest: b.destination.clone(),
        writable: b.writable,
        source: Some(b.source.clone()),
        workspace: false,
    }));
    places.extend(policy.tmpfs.iter().map(|t| kernel(&t.destination)));
    places
}

/// Whether `path` is `dir` or under it (components, not bytes: `/tmpx` is not under `/tmp`).
fn is_at_or_below(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || dir.is_empty() || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

impl Learned {
    /// The mount `path` is on: the deepest place holding it (a mount inside another is on top of it).
    fn place_of(&self, path: &str) -> Option<&Place> {
        self.places.iter().filter(|p| is_at_or_below(path, &p.dest)).max_by_key(|p| p.dest.trim_end_matches('/').len())
    }

    fn is_writable(&self, path: &str) -> bool {
        self.place_of(path).is_some_and(|p| p.writable)
    }
}

/// Host directories learn mode never suggests making writable, nor covering with a tmpfs: the system's own
/// (a writable host `/etc` or `/usr` is the host's to lose), the kernel's, root's home.
const SYSTEM_DIRS: &[&str] = &[
    "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/proc", "/sys", "/dev", "/root",
];

/// Directory names that hold credentials, wherever they are (`~/.ssh`): never suggested either.
const CREDENTIAL_DIRS: &[&str] = &[".ssh", ".gnupg", ".aws", ".kube", ".docker"];

/// Why `path` (inside or on the host) may not be made writable, if it may not: `/` itself, under a system
/// directory, or under a credentials directory.
fn protected(path: &str) -> Option<String> {
    if path.trim_end_matches('/').is_empty() {
        return Some("/ (the whole host)".to_string());
    }
    if let Some(dir) = SYSTEM_DIRS.iter().find(|d| is_at_or_below(path, d)) {
        return Some(format!("{dir}, a host system directory"));
    }
    let mut walked = String::new();
    for component in path.split('/').filter(|c| !c.is_empty()) {
        walked.push('/');
        walked.push_str(component);
        if CREDENTIAL_DIRS.contains(&component) {
            return Some(format!("{walked}, a credentials directory"));
        }
    }
    None
}

/// The narrowest safe change for one refused write.
#[derive(Debug, PartialEq, Eq)]
enum Advice {
    /// A writable bind: `SRC` or `SRC:DST`.
    Bind(String),
    /// A private tmpfs at this directory (the write need not persist on the host).
    Tmpfs(String),
    /// `workspace_mode = "cow"`: the read-only workspace's changes kept in a layer, applied by `airlock commit`.
    CowWorkspace,
    /// No profile change is safe; the comment says why and what to do instead.
    Nothing(String),
}

fn parent_of(path: &str) -> String {
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.display().to_string(),
        _ => "/".to_string(),
    }
}

/// Learn mode's advice for a write to `path` the sandbox refused (`mkdir`: it was a directory to create).
fn advice(learned: &Learned, path: &str, mkdir: bool) -> Advice {
    let elsewhere = match &learned.workspace {
        Some(ws) => format!("have the program write under the workspace ({ws}) or /tmp instead"),
        None => "have the program write under /tmp (or a --workspace) instead".to_string(),
    };
    if let Some(why) = protected(path) {
        return Advice::Nothing(format!("{path} is under {why}, which is never made writable: {elsewhere}"));
    }
    match learned.place_of(path) {
        // Under a read-only share: that share, writable, from the nearest directory that exists on the host.
        Some(place) if place.workspace => Advice::CowWorkspace,
        Some(Place { dest, source: Some(source), .. }) => {
            let rel = Path::new(path).strip_prefix(dest).unwrap_or(Path::new(""));
            let mut host = Path::new(source).join(rel);
            // The directory the entry is in, or its nearest ancestor the host has; never above the share.
            host = host.parent().map(Path::to_path_buf).unwrap_or(host);
            while !host.is_dir() && host.starts_with(source) && host != Path::new(source) {
                host = host.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(source));
            }
            if !host.starts_with(source) {
                host = PathBuf::from(source);
            }
            let host_text = host.display().to_string();
            if let Some(why) = protected(&host_text) {
                return Advice::Nothing(format!(
                    "{path} is shared from {host_text}, under {why}, which is never made writable: {elsewhere}"
                ));
            }
            let inside = match host.strip_prefix(source) {
                Ok(rel) if !rel.as_os_str().is_empty() => Path::new(dest).join(rel).display().to_string(),
                _ => dest.clone(),
            };
            Advice::Bind(if inside == host_text { host_text } else { format!("{host_text}:{inside}") })
        }
        // A tmpfs or the kernel's own is writable, so a refusal there is not a path question.
        Some(_) => Advice::Nothing(format!("{path}: refused on a writable mount (see the audit log)")),
        // The read-only root: a private tmpfs where the entry goes, since nothing written there could persist
        // anyway. Its directory; for a directory created at the top (`mkdir -p /opt/x` is refused at `/opt`),
        // that directory itself.
        None => {
            let parent = parent_of(path);
            match (parent.as_str(), mkdir) {
                ("/", true) => Advice::Tmpfs(path.to_string()),
                ("/", false) => Advice::Nothing(format!(
                    "{path} is a file at the top of the read-only root, which only --writable-root (with --rootfs or \
                     --image) makes possible: {elsewhere}"
                )),
                _ => Advice::Tmpfs(parent),
            }
        }
    }
}

/// The snippet: the narrowest safe change for each refused path (a private tmpfs for what need not persist, a
/// read-only share made writable from the nearest directory the host has, a cow workspace; never `/`, a system
/// directory or a credentials directory, which get a comment instead), allowed domains, and the refused
/// syscalls as comments (no profile setting allows them: the seccomp deny-list is fixed).
fn suggestion(learned: &Learned, domains: &BTreeSet<String>) -> String {
    let mut binds = BTreeSet::new();
    let mut tmpfs: BTreeSet<String> = BTreeSet::new();
    let mut cow = false;
    let mut notes = Vec::new();
    for path in &learned.denied_paths {
        match advice(learned, path, learned.denied_mkdirs.contains(path)) {
            Advice::Bind(entry) => {
                binds.insert(entry);
            }
            Advice::Tmpfs(dir) => {
                tmpfs.insert(dir);
            }
            Advice::CowWorkspace => cow = true,
            Advice::Nothing(why) => notes.push(why),
        }
    }
    // A tmpfs inside another suggested one is already writable.
    let nested: Vec<String> =
        tmpfs.iter().filter(|t| tmpfs.iter().any(|o| o != *t && is_at_or_below(t, o))).cloned().collect();
    for t in nested {
        tmpfs.remove(&t);
    }
    let mut out = String::from(
        "airlock: learn mode: a profile snippet for what the command needed (merge it into a --profile file):\n",
    );
    let quoted = |set: &BTreeSet<String>| set.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    if learned.denied_paths.is_empty() && domains.is_empty() && learned.denied_syscalls.is_empty() {
        out.push_str("# nothing was refused: the policy already allows what the command did\n");
        return out;
    }
    for path in &learned.denied_paths {
        out.push_str(&format!("# write refused (read-only): {path:?}\n"));
    }
    for note in &notes {
        out.push_str(&format!("# not suggested: {}\n", note.escape_debug()));
    }
    if !binds.is_empty() || !tmpfs.is_empty() || cow {
        out.push_str("[filesystem]\n");
        if cow {
            out.push_str("workspace_mode = \"cow\"\n");
        }
        if !binds.is_empty() {
            out.push_str(&format!("bind = [{}]\n", quoted(&binds)));
        }
        if !tmpfs.is_empty() {
            out.push_str(&format!("tmpfs = [{}]\n", quoted(&tmpfs)));
        }
    }
    if !domains.is_empty() {
        out.push_str(&format!("[network]\nallow = [{}]\n", quoted(domains)));
    }
    for (syscall, errno) in &learned.denied_syscalls {
        out.push_str(&format!(
            "# syscall refused by the seccomp deny-list ({errno}): {syscall} — no profile setting allows it\n"
        ));
    }
    out
}

/// Domains the network gateway refused, from its `network` records in the log (`protocol`, `name`, `port`,
/// `decision`). Pending until the gateway writes them: an empty set otherwise.
fn denied_domains(path: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(file) = std::fs::File::open(path) else { return out };
    for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        if v["kind"] != "network" || !v["decision"].as_str().is_some_and(|d| d.starts_with("den")) {
            continue;
        }
        if let Some(name) = v["name"].as_str().filter(|n| !n.is_empty()) {
            out.insert(match v["port"].as_u64() {
                Some(port) if port != 443 && port != 0 => format!("{name}:{port}"),
                _ => name.to_string(),
            });
        }
    }
    out
}

/// The network mode as JSON: `{"mode": "none"}`, `{"mode": "host"}`, or `{"mode": "allow", "allow": [{"domain",
/// "port"}]}` (`port` null: 80 and 443).
fn network_summary(network: &Network) -> Value {
    match network {
        Network::None => json!({ "mode": "none" }),
        Network::Host => json!({ "mode": "host" }),
        Network::Allow(rules) => json!({
            "mode": "allow",
            "allow": rules.iter().map(|r| json!({ "domain": r.domain, "port": r.port })).collect::<Vec<_>>(),
        }),
    }
}

/// What `/` is: `{"type": "host"}`, `{"type": "dir", "path"}`, or `{"type": "layers", "layers": [...]}` (an
/// image's unpacked layers, bottom first: their paths name the layers' digests), and whether it is writable.
fn rootfs_summary(policy: &SandboxPolicy) -> Value {
    let mut v = match &policy.rootfs {
        Rootfs::Host => json!({ "type": "host" }),
        Rootfs::Dir(path) => json!({ "type": "dir", "path": path }),
        Rootfs::Layers(layers) => json!({ "type": "layers", "layers": layers }),
    };
    v["writable"] = Value::Bool(policy.writable_root);
    v
}

fn policy_summary(policy: &SandboxPolicy) -> Value {
    json!({
        "workspace": policy.workspace.as_ref().map(|w| json!({ "path": w.path, "mode": w.mode.as_str() })),
        "rootfs": rootfs_summary(policy),
        "network": network_summary(&policy.network),
        "tmpfs": policy.tmpfs.iter().map(|t| json!({"destination": t.destination, "size_bytes": t.size_bytes})).collect::<Vec<_>>(),
        "hostname": policy.hostname,
        "binds": policy.binds.iter().map(|b| json!({"source": b.source, "destination": b.destination, "writable": b.writable})).collect::<Vec<_>>(),
        "user": { "uid": policy.identity.uid, "gid": policy.identity.gid },
        "limits": {
            "memory_bytes": policy.limits.memory_bytes,
            "pids": policy.limits.pids,
            "cpus": policy.limits.cpus,
            "disk_bytes": policy.limits.disk_bytes,
            "nofile": policy.limits.nofile,
            "fsize_bytes": policy.limits.fsize_bytes,
        },
        "timeout_ms": policy.timeout.map(|t| t.as_millis() as u64),
        "seccomp_unrecorded": unrecorded_refusals(),
    })
}

/// The deny-list's expected fallbacks (`clone3` -> ENOSYS), refused without a `denied` record: named once here, so
/// that a reader of the log knows those refusals happen and why they are not listed.
fn unrecorded_refusals() -> Value {
    let Ok(profile) = policy::seccomp::default_seccomp_profile() else { return Value::Null };
    profile
        .rules
        .iter()
        .filter(|rule| rule.expected_fallback)
        .flat_map(|rule| rule.syscalls.iter().map(|name| json!({ "syscall": name, "errno": rule.errno.name() })))
        .collect()
}

fn resources_of(stats: &CgroupStats) -> Value {
    json!({
        "memory_peak_bytes": stats.memory_peak,
        "memory_limit_bytes": stats.memory_limit,
        "oom_kills": stats.oom_kills,
        "pids_peak": stats.pids_peak,
        "pids_limit": stats.pids_limit,
        "pids_max_hits": stats.pids_max_hits,
        "cpu_usage_usec": stats.cpu_usage_usec,
    })
}

/// A `files` record of the layer's changes, or `None` when it cannot be read (a warning says so).
pub fn files_event(stack: &store::layer::LayerStack, trigger: &str, label: Option<&str>) -> Option<Event> {
    let composed = store::layer::compose(stack).ok()?;
    let changes = store::layer::diff_layer(composed.paths(), &[]).ok()?;
    let total = changes.len();
    let changes = changes
        .iter()
        .take(audit::event::MAX_LIST_ITEMS)
        .map(|c| audit::FileChange { path: c.path.clone(), kind: c.kind.as_str().to_string(), size: c.size })
        .collect();
    Some(Event::Files { trigger: trigger.to_string(), label: label.map(str::to_string), changes, total: Some(total) })
}

/// Appends a `files` record for checkpoint `label` to the log of sandbox `name`, if it has a log: the entries of
/// the layer the checkpoint froze (`frozen`: what changed since the previous checkpoint), compared with the host
/// `workspace`. Bounded: at most [`audit::event::MAX_LIST_ITEMS`] changes listed and [`CHECKPOINT_WALK`]
/// entries looked at, so a checkpoint stays as fast whatever the layer holds (the full list is `airlock diff`'s,
/// and the `files` record at exit's).
pub fn record_checkpoint(state: &StateDir, name: &str, label: &str, frozen: &Path, workspace: &Path) {
    let path = log_path(state, name);
    if !path.exists() {
        return;
    }
    let (changes, complete) = frozen_layer_changes(frozen, workspace);
    let total = complete.then_some(changes.len());
    let event = Event::Files { trigger: "checkpoint".into(), label: Some(label.to_string()), changes, total };
    if let Err(e) = AuditLog::open(&path).map(|log| log.with_sandbox(name)).and_then(|mut log| log.append(&event)) {
        crate::say(&format!("warning: audit log: {}", crate::error_chain(&e)));
    }
}

/// Appends a `workspace` record (commit, refused commit, discard, rollback) to the log of sandbox `name`, if it
/// has one. A failure to write is a warning: the change itself is done and must not be reported as failed.
pub fn record_workspace(
    state: &StateDir,
    name: &str,
    action: &str,
    label: Option<&str>,
    paths: &[String],
    running: bool,
) {
    let path = log_path(state, name);
    if !path.exists() {
        return;
    }
    let event = Event::Workspace {
        action: action.to_string(),
        label: label.map(str::to_string),
        paths: paths.iter().take(audit::event::MAX_LIST_ITEMS).cloned().collect(),
        total: paths.len(),
        running,
    };
    if let Err(e) = AuditLog::open(&path).map(|log| log.with_sandbox(name)).and_then(|mut log| log.append(&event)) {
        crate::say(&format!("warning: audit log: {}", crate::error_chain(&e)));
    }
}

/// Most directory entries a checkpoint's summary looks at.
const CHECKPOINT_WALK: usize = 4096;

/// The changes an overlay upper layer holds (a whiteout: deleted; an entry the host has: modified; else added),
/// and whether the walk saw all of them.
fn frozen_layer_changes(frozen: &Path, workspace: &Path) -> (Vec<audit::FileChange>, bool) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut changes = Vec::new();
    let mut pending = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(relative) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(frozen.join(&relative)) else { continue };
        for entry in entries.flatten() {
            seen += 1;
            if seen > CHECKPOINT_WALK || changes.len() >= audit::event::MAX_LIST_ITEMS {
                return (changes, false);
            }
            let rel = relative.join(entry.file_name());
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            let on_host = workspace.join(&rel).symlink_metadata().ok();
            let shown = rel.to_string_lossy().into_owned();
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                changes.push(audit::FileChange { path: shown, kind: "deleted".into(), size: None });
            } else if meta.is_dir() {
                if !on_host.as_ref().is_some_and(|m| m.is_dir()) {
                    changes.push(audit::FileChange { path: shown, kind: "added".into(), size: None });
                }
                pending.push(rel);
            } else {
                let kind = if on_host.is_some() { "modified" } else { "added" };
                changes.push(audit::FileChange { path: shown, kind: kind.into(), size: Some(meta.len()) });
            }
        }
    }
    (changes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learn_mode_reads_the_gateways_denials_and_suggests_a_valid_profile() {
        let dir = std::env::temp_dir().join(format!("airlock-learn-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let mut log = AuditLog::open(&path).unwrap().with_sandbox("t");
        let network = |name: &str, port: u16, decision: &str| {
            json!({"time": "2026-01-01T00:00:00.000Z", "sandbox": "t", "protocol": "tls", "name": name,
                   "address": "192.0.2.1", "port": port, "decision": decision, "reason": "not allowed",
                   "bytes_out": 0, "bytes_in": 0})
        };
        log.append_value("network", network("pypi.org", 443, "deny")).unwrap();
        log.append_value("network", network("example.com", 8443, "denied")).unwrap();
        log.append_value("network", network("allowed.org", 443, "allow")).unwrap();
        let domains = denied_domains(&path);
        assert_eq!(domains.into_iter().collect::<Vec<_>>(), vec!["example.com:8443", "pypi.org"]);

        let learned = Learned {
            places: places(&policy_with(&[], None)),
            denied_paths: ["/etc/x.conf".to_string(), "/nonexistent-top/dir/file".to_string()].into(),
            denied_syscalls: [("keyctl".to_string(), "EPERM".to_string())].into(),
            ..Default::default()
        };
        let text = suggestion(&learned, &denied_domains(&path));
        assert!(!text.contains("bind ="), "a writable host /etc is never suggested: {text}");
        assert!(text.contains("# not suggested: /etc/x.conf is under /etc, a host system directory"), "{text}");
        assert!(text.contains("tmpfs = [\"/nonexistent-top/dir\"]"), "{text}");
        assert!(text.contains("allow = [\"example.com:8443\", \"pypi.org\"]"), "{text}");
        let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        policy::profile::Profile::parse(&body, "suggestion").unwrap();
        assert!(learned.is_writable("/tmp/a") && learned.is_writable("/tmp") && !learned.is_writable("/tmpx"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A policy with these binds (`(source, destination, writable)`) and workspace (`(path, mode)`).
    fn policy_with(binds: &[(&str, &str, bool)], workspace: Option<(&str, WorkspaceMode)>) -> SandboxPolicy {
        let mut policy = policy::profile::resolve(
            &Profile::default(),
            vec!["true".into()],
            &policy::profile::Invoker { uid: 0, gid: 0, is_root: true, env: Vec::new(), user_name: None },
        )
        .unwrap();
        policy.binds = binds
            .iter()
            .map(|(s, d, w)| policy::sandbox::BindMount {
                source: s.to_string(),
                destination: d.to_string(),
                writable: *w,
            })
            .collect();
        policy.workspace = workspace.map(|(path, mode)| policy::sandbox::Workspace { path: path.to_string(), mode });
        policy
    }

    #[test]
    fn learn_mode_suggests_the_narrowest_safe_change_and_never_a_system_directory() {
        let scratch = std::env::temp_dir().join(format!("airlock-learn-advice-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(scratch.join("data/sub")).unwrap();
        let data = scratch.join("data").display().to_string();
        let ws = scratch.join("ws").display().to_string();
        let policy = policy_with(
            &[(&data, "/data", false), ("/etc", "/hostetc", false), ("/home/u", "/home/u", false)],
            Some((&ws, WorkspaceMode::Ro)),
        );
        let learned = Learned { places: places(&policy), workspace: Some(ws.clone()), ..Default::default() };
        let cases: &[(&str, bool, Advice)] = &[
            ("/etc/foo", false, Advice::Nothing(String::new())),
            ("/usr/local/bin/x", false, Advice::Nothing(String::new())),
            ("/lib64/x", false, Advice::Nothing(String::new())),
            ("/root/.bashrc", false, Advice::Nothing(String::new())),
            ("/home/u/.ssh/known_hosts", false, Advice::Nothing(String::new())),
            ("/hostetc/passwd", false, Advice::Nothing(String::new())),
            ("/topfile", false, Advice::Nothing(String::new())),
            ("/", true, Advice::Nothing(String::new())),
            ("/opt", true, Advice::Tmpfs("/opt".into())),
            ("/opt/x/file", false, Advice::Tmpfs("/opt/x".into())),
            ("/opt/x/y", true, Advice::Tmpfs("/opt/x".into())),
            ("/var/cache/app/f", false, Advice::Tmpfs("/var/cache/app".into())),
            ("/data/sub/f", false, Advice::Bind(format!("{data}/sub:/data/sub"))),
            ("/data/missing/deeper/f", false, Advice::Bind(format!("{data}:/data"))),
            ("/data/f", false, Advice::Bind(format!("{data}:/data"))),
            (&format!("{ws}/out.txt"), false, Advice::CowWorkspace),
        ];
        for (path, mkdir, expected) in cases {
            let got = advice(&learned, path, *mkdir);
            match (expected, &got) {
                (Advice::Nothing(_), Advice::Nothing(why)) => assert!(!why.is_empty()),
                _ => assert_eq!(&got, expected, "{path}"),
            }
        }
        // All of them at once: the snippet is a profile the validator accepts, with nothing of the host's system.
        let learned = Learned {
            denied_paths: cases.iter().map(|(p, _, _)| p.to_string()).collect(),
            denied_mkdirs: cases.iter().filter(|(_, m, _)| *m).map(|(p, _, _)| p.to_string()).collect(),
            ..learned
        };
        let text = suggestion(&learned, &BTreeSet::new());
        let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let parsed = Profile::parse(&body, "suggestion").unwrap();
        assert_eq!(parsed.filesystem.tmpfs, ["/opt", "/var/cache/app"], "{text}");
        assert_eq!(parsed.filesystem.workspace_mode.as_deref(), Some("cow"), "{text}");
        for entry in parsed.filesystem.bind.iter().chain(&parsed.filesystem.tmpfs) {
            let host = entry.split(':').next().unwrap();
            assert!(protected(host).is_none(), "{entry} in {text}");
        }
        let _ = std::fs::remove_dir_all(&scratch);
    }
}
