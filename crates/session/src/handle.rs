//! A running long-lived sandbox (`airlock create`), found by name: what `airlock exec` and the daemon's files
//! API visit. A visit builds its plan from the profile the sandbox was created with, sees the sandbox's layer as
//! it stands (nothing is mounted again), and enters through the backend.

use std::path::PathBuf;

use policy::profile::Profile;
use policy::sandbox::{SandboxPolicy, WorkspaceMode};
use runtime::attach::RunningSandbox;
use runtime::prepare::{HostContext, LayerDirs};
use runtime::sandbox::{RunOutcome, RunReport};
use store::{SandboxDir, SandboxRecord, StateDir};

use crate::backend::Backend;
use crate::error::SessionError;
use crate::recorder::Recorder;

/// What a name stands for.
pub enum Lookup {
    Running(Box<RunningHandle>),
    /// No sandbox of that name.
    Missing,
    /// A sandbox of `airlock run` (its init is not recorded: there is nothing to enter).
    NotLongLived,
    /// It has ended.
    NotRunning,
}

/// Finds the sandbox `name` (validated here) in the state directory.
pub fn lookup(state: &StateDir, name: &str) -> Result<Lookup, SessionError> {
    policy::names::validate_sandbox_name(name).map_err(SessionError::InvalidName)?;
    let dir = state.sandbox(name);
    if !dir.exists() {
        return Ok(Lookup::Missing);
    }
    let record = store::record::read_record(&dir)?;
    let (Some(init_pid), Some(init_start_time)) = (record.init_pid, record.init_start_time) else {
        return Ok(Lookup::NotLongLived);
    };
    if !store::sandbox::is_running(&dir) {
        return Ok(Lookup::NotRunning);
    }
    let target = RunningSandbox { name: name.to_string(), init_pid, init_start_time };
    Ok(Lookup::Running(Box::new(RunningHandle { dir, record, target })))
}

/// A running long-lived sandbox.
pub struct RunningHandle {
    pub dir: SandboxDir,
    pub record: SandboxRecord,
    target: RunningSandbox,
}

impl RunningHandle {
    pub fn name(&self) -> &str {
        &self.target.name
    }

    /// Its init, for the runtime's attach functions.
    pub fn target(&self) -> &RunningSandbox {
        &self.target
    }

    /// Whether the sandbox's user namespace maps the inside ids `uid` and `gid` (a command can run as them).
    pub fn maps_inside_ids(&self, uid: u32, gid: u32) -> Result<bool, SessionError> {
        let pid = self.target.init_pid;
        let read = |file: &str| {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            std::fs::read_to_string(&path).map_err(|source| SessionError::ReadIdMap { path, source })
        };
        let inside = runtime::userns::IdSide::Inside;
        Ok(runtime::userns::translate_id(&read("uid_map")?, uid, inside).is_some()
            && runtime::userns::translate_id(&read("gid_map")?, gid, inside).is_some())
    }

    /// The merged profile it was created with (what its commands' plans are built from).
    pub fn profile(&self) -> Result<Profile, SessionError> {
        Ok(store::record::read_profile(&self.dir)?)
    }

    /// The host context of a visit: the layer as it stands, no terminal, no gateway (a visit joins the
    /// sandbox's network and starts none).
    pub fn host_context(&self, policy: &SandboxPolicy, lock_dir: PathBuf) -> Result<HostContext, SessionError> {
        let cow = policy.workspace.as_ref().is_some_and(|w| w.mode == WorkspaceMode::Cow);
        let layer = match cow {
            true => {
                let layer = self.dir.layer()?;
                let frozen = store::checkpoint::checkpoints(&self.dir)?.into_iter().rev().map(|c| c.dir).collect();
                Some(LayerDirs { upper: layer.upper(), work: layer.work(), frozen })
            }
            false => None,
        };
        // A visit mounts nothing: the writable root's layer is named only so the plan is the sandbox's.
        let root_layer = policy.writable_root.then(|| self.dir.root_layer().path().to_path_buf());
        Ok(HostContext {
            lock_dir,
            tty: None,
            name: Some(self.target.name.clone()),
            layer,
            hold: false,
            gateway: None,
            root_layer,
            joining: true,
            // A visit ends with its command; the sandbox's own supervisor watches its state.
            watch_state: None,
            in_vm_guest: false,
            vm_id_base: None,
            cgroup_accounting: runtime::cgroups::Accounting::Full,
        })
    }

    /// Runs `policy.command` in the sandbox on `backend`, recorded in its audit log (an `attached` record, its
    /// execs and denials, how it ended). The setup's warnings were shown when the sandbox was created; a visit
    /// would only repeat them.
    pub fn exec(
        &self,
        backend: &dyn Backend,
        state: &StateDir,
        policy: &SandboxPolicy,
        host: &HostContext,
    ) -> Result<RunOutcome, SessionError> {
        let mut recorder = Recorder::for_exec(state, self.name())?;
        if let Some(r) = recorder.as_mut() {
            r.attached(&policy.command);
        }
        let request = recorder.as_mut().and_then(Recorder::request);
        let outcome = backend.exec(policy, host, &self.target, &mut |_| {}, request)?;
        if let Some(r) = recorder.as_mut() {
            r.finish(&outcome, &RunReport::default(), None);
        }
        Ok(outcome)
    }

    /// Serves the sandbox's exec agent on `listener` (`socket`) on `backend` until the sandbox
    /// ends. The commands it starts are audited in the sandbox's log as an exec's are (their `exec` records from
    /// this process's seccomp listener; the client writes `attached` and `exited`).
    pub fn serve_exec_agent(
        &self,
        backend: &dyn Backend,
        state: &StateDir,
        policy: &SandboxPolicy,
        host: &HostContext,
        listener: std::os::fd::OwnedFd,
        socket: &runtime::agent::AgentSocket,
    ) -> Result<RunOutcome, SessionError> {
        let mut recorder = Recorder::for_exec(state, self.name())?;
        let request = recorder.as_mut().and_then(Recorder::request);
        Ok(backend.serve_exec_agent(policy, host, &self.target, request, listener, socket)?)
    }
}
