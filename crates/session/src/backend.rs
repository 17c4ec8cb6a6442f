//! Where a sandbox runs. A [`Backend`] takes the resolved policy and the host context the session prepared and
//! runs the sandbox: to the end of its command (`airlock run`), or held until it is stopped (`airlock create`).
//! [`NamespaceBackend`], today's engine (`runtime::sandbox`: namespaces, pivot_root, seccomp, Landlock,
//! cgroups), is the first implementation; [`crate::vm::VmBackend`] (a VM of its own per sandbox) the second.

use policy::sandbox::SandboxPolicy;
use runtime::attach::{AttachError, RunningSandbox};
use runtime::prepare::HostContext;
use runtime::sandbox::{AuditRequest, RunOutcome, RunReport, SandboxError};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Namespace(#[from] SandboxError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
}

pub trait Backend {
    /// The backend's name (for messages and records).
    fn name(&self) -> &'static str;

    /// Sets the sandbox up and runs its command to the end. `warn` gets what the sandbox does without (a
    /// best-effort protection missing); `audit`, when set, receives the exec and denial records.
    fn run(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<(RunOutcome, RunReport), BackendError>;

    /// Sets the sandbox up with its init holding it (no command): `on_ready(init_pid)` once it is set up; returns
    /// when the sandbox is stopped.
    fn run_held(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        on_ready: &mut dyn FnMut(libc::pid_t),
    ) -> Result<(RunOutcome, RunReport), BackendError>;

    /// Runs `policy.command` in the running sandbox `target`, with its protections (and the command's own
    /// timeout), to its end.
    fn exec(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        target: &RunningSandbox,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<RunOutcome, BackendError>;

    /// Makes the exec agent of the running sandbox `target` (a process confined as `exec`'s command would be,
    /// which starts commands on request over `listener`); returns when it has ended, with the sandbox.
    /// The socket (where `listener` is bound) is given to the sandbox's user, then published (`AgentSocket`).
    fn serve_exec_agent(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        target: &RunningSandbox,
        audit: Option<AuditRequest<'_>>,
        listener: std::os::fd::OwnedFd,
        socket: &runtime::agent::AgentSocket,
    ) -> Result<RunOutcome, BackendError>;
}

/// Linux namespaces, pivot_root, capabilities, no_new_privs, seccomp, Landlock and cgroups, in this process
/// (see `runtime::sandbox::run_sandbox` for the setup order).
#[derive(Debug, Clone, Copy, Default)]
pub struct NamespaceBackend;

impl Backend for NamespaceBackend {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn run(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<(RunOutcome, RunReport), BackendError> {
        Ok(runtime::sandbox::run_sandbox(policy, host, warn, audit)?)
    }

    fn run_held(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        on_ready: &mut dyn FnMut(libc::pid_t),
    ) -> Result<(RunOutcome, RunReport), BackendError> {
        Ok(runtime::sandbox::run_held_sandbox(policy, host, warn, on_ready)?)
    }

    fn exec(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        target: &RunningSandbox,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<RunOutcome, BackendError> {
        Ok(runtime::attach::exec_in_sandbox(policy, host, target, warn, audit)?)
    }

    fn serve_exec_agent(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        target: &RunningSandbox,
        audit: Option<AuditRequest<'_>>,
        listener: std::os::fd::OwnedFd,
        socket: &runtime::agent::AgentSocket,
    ) -> Result<RunOutcome, BackendError> {
        Ok(runtime::attach::serve_agent_in_sandbox(policy, host, target, &mut |_| {}, audit, listener, socket)?)
    }
}

/// `--isolation vm`: a VM of its own per sandbox (see [`crate::vm`]): `run`, and `create` (a held guest, whose
/// execs go through [`crate::vm::held::HeldVm`]); the exec agent is refused, never run without the VM.
impl Backend for crate::vm::VmBackend {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn run(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<(RunOutcome, RunReport), BackendError> {
        Ok(self.run_vm(policy, host, warn, audit)?)
    }

    fn run_held(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        warn: &mut dyn FnMut(&str),
        on_ready: &mut dyn FnMut(libc::pid_t),
    ) -> Result<(RunOutcome, RunReport), BackendError> {
        Ok(crate::vm::held::run_held_vm(self, policy, host, warn, on_ready)?)
    }

    fn exec(
        &self,
        _policy: &SandboxPolicy,
        _host: &HostContext,
        _target: &RunningSandbox,
        _warn: &mut dyn FnMut(&str),
        _audit: Option<AuditRequest<'_>>,
    ) -> Result<RunOutcome, BackendError> {
        Err(crate::vm::VmError::Unsupported("exec".to_string()).into())
    }

    fn serve_exec_agent(
        &self,
        _policy: &SandboxPolicy,
        _host: &HostContext,
        _target: &RunningSandbox,
        _audit: Option<AuditRequest<'_>>,
        _listener: std::os::fd::OwnedFd,
        _socket: &runtime::agent::AgentSocket,
    ) -> Result<RunOutcome, BackendError> {
        Err(crate::vm::VmError::Unsupported("exec".to_string()).into())
    }
}
