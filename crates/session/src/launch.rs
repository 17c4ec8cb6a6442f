//! The steps `airlock run` and `airlock create`'s supervisor share, in order (see the crate's documentation).
//! Each step's failure undoes what the steps before it made: a new sandbox leaves nothing behind, a resumed one
//! stays as it was.

use std::fs::File;
use std::path::PathBuf;

use policy::profile::Profile;
use policy::sandbox::{SandboxPolicy, WorkspaceMode};
use runtime::prepare::HostContext;
use runtime::sandbox::{RunOutcome, RunReport};
use store::sandbox::{SandboxState, WorkspaceRef};
use store::StateDir;

use crate::backend::Backend;
use crate::error::SessionError;
use crate::recorder::Recorder;

/// How long the sandbox lives.
#[derive(Debug, Clone, Copy)]
pub enum Lifetime {
    /// `airlock run`: the command runs to its end.
    Run {
        /// `--rm`: nothing is kept (the state is removed by the front end once it has reported).
        rm: bool,
        /// `--resume`: the kept sandbox `name` runs again in its layers.
        resume: bool,
        /// `-t`: the window size the sandbox's terminal starts with.
        tty: Option<libc::winsize>,
        /// `--learn`: the recorder collects what the command was refused.
        learn: bool,
        /// The profile's `[audit] exec = true`.
        profile_exec: bool,
    },
    /// `airlock create`'s supervisor: init holds the sandbox until it is stopped.
    Held,
}

/// One sandbox to launch.
pub struct LaunchSpec<'a> {
    pub state: &'a StateDir,
    /// The merged profile (kept for `airlock exec` by a held sandbox; fingerprinted in the audit log).
    pub merged: &'a Profile,
    pub policy: &'a SandboxPolicy,
    /// The name the sandbox's state is kept under; `None`: an anonymous run, which keeps nothing.
    pub name: Option<String>,
    /// What its records and cgroup are named by: the name, or `run-PID` for an anonymous run.
    pub record_name: String,
    pub lifetime: Lifetime,
    /// `--audit FILE`: a copy of the audit log.
    pub audit_copy: Option<&'a str>,
    /// Where the host-id range locks live (as host root).
    pub lock_dir: PathBuf,
}

/// What the front end is told while the sandbox is launched.
pub struct Hooks<'a> {
    /// What the sandbox does without, and what could not be recorded: one line each, printed as warnings.
    pub warn: &'a mut dyn FnMut(&str),
    /// A held sandbox is set up and recorded (`airlock create` is waiting for this). The supervisor's standard
    /// output and error move to its log right after.
    pub on_ready: &'a mut dyn FnMut(),
}

/// A sandbox that has ended.
pub struct Ended {
    pub outcome: RunOutcome,
    pub report: RunReport,
    /// Its kept state, `None` for an anonymous run; its record says how it ended.
    pub kept: Option<SandboxState>,
    /// The audit recorder (learn mode's suggestion is read from it).
    pub recorder: Option<Recorder>,
}

/// Launches the sandbox on `backend` and waits for it to end.
pub fn launch(backend: &dyn Backend, spec: LaunchSpec<'_>, hooks: Hooks<'_>) -> Result<Ended, SessionError> {
    let policy = spec.policy;
    let (held, resume, rm) = match spec.lifetime {
        Lifetime::Run { resume, rm, .. } => (false, resume, rm),
        Lifetime::Held => (true, false, false),
    };
    let cow = policy.workspace.as_ref().filter(|w| w.mode == WorkspaceMode::Cow);

    // 0. The network gateway's executable (`--net allow`), opened before anything is made: missing, the launch
    //    fails with nothing to undo.
    let gateway_program = crate::gateway::program(policy)?;

    // 1. The sandbox's state, under its name: created, or claimed again to resume.
    let mut kept = match &spec.name {
        Some(name) => {
            let workspace = policy.workspace.as_ref().map(|w| WorkspaceRef { path: &w.path, mode: w.mode.as_str() });
            Some(match resume {
                true => SandboxState::resume(spec.state, name, workspace)?,
                false => SandboxState::create(spec.state, name, workspace, cow.is_some())?,
            })
        }
        None => None,
    };
    // A failure from here on leaves a new sandbox's state removed and a resumed one's as it was.
    let fail = |kept: Option<SandboxState>, e: SessionError| {
        abandon(kept, resume);
        Err(e)
    };

    // 2. A held sandbox keeps its merged profile (what `airlock exec` plans from) and a log for its supervisor,
    //    whose standard error `airlock create` stops reading once the sandbox is ready.
    let supervisor_log = match (&kept, held) {
        (Some(state), true) => {
            let path = state.dir.supervisor_log();
            let made = state.write_profile(spec.merged).map_err(SessionError::from).and_then(|()| {
                File::create(&path).map_err(|source| SessionError::CreateLog { path: path.clone(), source })
            });
            match made {
                Ok(file) => Some((path, file)),
                Err(e) => return fail(kept, e),
            }
        }
        _ => None,
    };

    // 3. The copy-on-write layer's directories (an image first with --disk).
    let disk = policy.limits.disk_bytes;
    let layer = match kept.as_ref().filter(|_| cow.is_some()).map(|s| s.layer_dirs(disk)).transpose() {
        Ok(layer) => layer,
        Err(e) => return fail(kept, e.into()),
    };

    // 3b. The writable root's layer: the named sandbox's own (kept until `rm`). An anonymous run's writable root
    //     has none on the host: its writes stay in a private tmpfs of the sandbox's (see the runtime's plan).
    let root_layer = match (policy.writable_root, &kept) {
        (true, Some(state)) => match store::sandbox::make_root_layer(&state.dir.root_layer()) {
            Ok(dir) => Some(dir),
            Err(e) => return fail(kept, e.into()),
        },
        _ => None,
    };

    // 4. The audit recorder: opened now that the state directory exists, and before the gateway, which appends
    //    its network decisions to the same files.
    let recorder = match spec.lifetime {
        Lifetime::Run { rm, learn, profile_exec, .. } => Recorder::for_run(
            spec.state,
            spec.name.as_deref(),
            &spec.record_name,
            rm,
            spec.audit_copy,
            learn,
            profile_exec,
            policy,
        ),
        Lifetime::Held => {
            let name = spec.name.as_deref().unwrap_or(&spec.record_name);
            Recorder::for_create(spec.state, name, spec.audit_copy).map(Some)
        }
    };
    let mut recorder = match recorder {
        Ok(recorder) => recorder,
        Err(e) => return fail(kept, e),
    };

    // 5. The network gateway (`--net allow`), described for the runtime, which starts it. A held sandbox's
    //    gateway writes its errors to the supervisor's log.
    let events = recorder.as_ref().map(Recorder::gateway_files).unwrap_or_default();
    let gateway_log = supervisor_log.as_ref().map(|(path, _)| path.clone());
    let gateway = crate::gateway::gateway_setup(policy, gateway_program, &spec.record_name, events, gateway_log);

    if let Some(r) = recorder.as_mut() {
        r.start(spec.merged, policy, held);
    }
    let tty = match spec.lifetime {
        Lifetime::Run { tty, .. } => tty,
        Lifetime::Held => None,
    };
    let host = HostContext {
        lock_dir: spec.lock_dir.clone(),
        tty,
        name: spec.name.clone(),
        layer,
        hold: held,
        gateway,
        root_layer,
        joining: false,
        watch_state: kept.as_ref().filter(|_| held).map(|state| runtime::prepare::WatchedState {
            dir: state.dir.path().to_path_buf(),
            record: state.dir.record_file(),
        }),
        in_vm_guest: false,
        vm_id_base: None,
        // An anonymous run without an audit log keeps no numbers: its cgroup needs only its limits' controllers.
        cgroup_accounting: if recorder.is_some() || spec.name.is_some() {
            runtime::cgroups::Accounting::Full
        } else {
            runtime::cgroups::Accounting::LimitsOnly
        },
    };

    // 6. The sandbox runs, to its command's end or until it is stopped.
    let ran = if let (true, Some(state)) = (held, kept.as_mut()) {
        let mut record_error = None;
        let log = supervisor_log.as_ref().map(|(_, file)| file);
        let ran = backend.run_held(policy, &host, hooks.warn, &mut |pid| {
            state.record.init_pid = Some(pid);
            state.record.init_start_time = runtime::host::process_start_time(pid);
            let me = std::process::id() as i32;
            state.record.supervisor_pid = Some(me);
            state.record.supervisor_start_time = runtime::host::process_start_time(me);
            if let Err(e) = state.write_record() {
                // `exec` and `stop` could not find it: take it down now.
                let _ = sys::signal::kill(pid, libc::SIGKILL);
                record_error = Some(e);
                return;
            }
            (hooks.on_ready)();
            if let Some(log) = log {
                let _ = runtime::host::redirect_stdout_stderr_to(log);
            }
        });
        match (ran, record_error) {
            (ran, None) => ran.map_err(SessionError::from),
            (_, Some(source)) => {
                let name = state.name.clone();
                Err(SessionError::RecordSandbox { name, source: Box::new(source) })
            }
        }
    } else {
        let request = recorder.as_mut().and_then(Recorder::request);
        backend.run(policy, &host, hooks.warn, request).map_err(SessionError::from)
    };
    let (outcome, report) = match ran {
        Ok(done) => done,
        Err(e) => return fail(kept, e),
    };

    // 7. How it ended: the audit's closing records, the record, the final numbers of a named sandbox.
    if let Some(r) = recorder.as_mut() {
        let stack = match (&kept, cow) {
            (Some(state), Some(w)) => store::sandbox::layer_stack(&state.dir, &w.path).ok(),
            _ => None,
        };
        r.finish(&outcome, &report, stack.as_ref());
    }
    // A held sandbox whose directory was removed while it ran was stopped for it (see `HostContext::watch_state`):
    // writing its record or numbers now would bring back a directory someone meant to be gone.
    if let Some(state) = kept.as_ref().filter(|state| held && !state.dir.path().exists()) {
        (hooks.warn)(&format!("the state of sandbox {} was removed while it ran: it was stopped", state.name));
        return Ok(Ended { outcome, report, kept: None, recorder });
    }
    if let Some(state) = kept.as_mut() {
        if let Err(e) = state.finish(Some(outcome.exit_code())) {
            (hooks.warn)(&format!("cannot record how sandbox {} ended: {}", state.name, crate::error_chain(&e)));
        }
        if let (Some(stats), false) = (&report.stats, rm) {
            if let Err(e) = crate::stats::keep_final_stats(&state.dir, &state.name, stats, outcome.exit_code()) {
                (hooks.warn)(&format!("cannot keep the final stats of {}: {}", state.name, crate::error_chain(&e)));
            }
        }
    }
    Ok(Ended { outcome, report, kept, recorder })
}

/// A launch that did not get the sandbox running. A new sandbox: nothing of it is worth keeping. A resumed one:
/// it stays as it was.
fn abandon(kept: Option<SandboxState>, resumed: bool) {
    match kept {
        Some(mut state) if resumed => {
            let _ = state.abandon();
        }
        Some(state) => {
            let _ = state.remove();
        }
        None => {}
    }
}
