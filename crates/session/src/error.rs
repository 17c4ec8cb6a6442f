//! What can go wrong in a session. Each variant names the failed operation and what it failed on.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Store(Box<store::StoreError>),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The backend could not set the sandbox up or run it.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("cannot create the state directory {}", .path.display())]
    CreateStateDir { path: PathBuf, source: io::Error },
    #[error("cannot create {}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot create {}", .path.display())]
    CreateLog { path: PathBuf, source: io::Error },
    #[error("cannot write {}", .path.display())]
    WriteFile { path: PathBuf, source: io::Error },
    #[error("cannot read the sandbox's id map {}", .path.display())]
    ReadIdMap { path: PathBuf, source: io::Error },
    #[error("cannot remember the --audit copy")]
    RememberAuditCopy { path: PathBuf, source: io::Error },
    #[error("cannot record sandbox {name}")]
    RecordSandbox { name: String, source: Box<store::StoreError> },
    #[error(transparent)]
    Serialize(serde_json::Error),
    #[error(transparent)]
    InvalidName(policy::names::NameError),
    #[error(transparent)]
    Policy(#[from] policy::profile::PolicyError),
    #[error(transparent)]
    GatewayProgram(#[from] crate::gateway::ProgramMissing),
}

impl From<store::StoreError> for SessionError {
    fn from(e: store::StoreError) -> SessionError {
        SessionError::Store(Box::new(e))
    }
}
