//! Where the tools' work happens: this machine (`airlock`'s own subcommands) or a daemon (`AIRLOCK_HOST`). Both
//! take the same checked input and give the same JSON.

use serde_json::{json, Value};

use crate::error::{ServeError, ToolError};
use crate::local::Local;
use crate::remote::Remote;

/// The most bytes of each output stream `run_command` returns (the rest is dropped, `truncated`).
pub const MAX_OUTPUT: usize = 1 << 20;
/// The largest file `read_file` returns.
pub const MAX_FILE: usize = 16 << 20;
/// The most audit records `logs` returns (the newest).
pub const MAX_LOG_RECORDS: usize = 1000;
/// `airlock exec --timeout` exits 124 when the command ran out of time.
pub const EXIT_TIMED_OUT: i32 = 124;

/// A checked `create_sandbox`.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    /// An image in the store (`airlock image pull` / `import`) as `/`, writable for the sandbox.
    pub image: Option<String>,
    pub workspace: Option<String>,
    pub allow: Vec<String>,
    pub timeout: Option<String>,
}

/// What a path in a sandbox is.
#[derive(Debug)]
pub enum FileAnswer {
    File(Vec<u8>),
    /// `[{name, type, size, mode}]`.
    Dir(Value),
}

#[derive(Debug, Clone)]
pub enum Backend {
    Local(Local),
    Remote(Remote),
}

impl Backend {
    /// The daemon at `host` (`unix:///…` or `http://host:port`) when there is one, else this machine through
    /// `exe`.
    pub fn new(exe: std::path::PathBuf, host: Option<String>) -> Result<Backend, ServeError> {
        match host {
            Some(host) => Ok(Backend::Remote(Remote::new(&host)?)),
            None => Ok(Backend::Local(Local { exe })),
        }
    }

    pub async fn create(&self, name: &str, req: &SandboxRequest) -> Result<Value, ToolError> {
        match self {
            Backend::Local(l) => l.create(name, req).await,
            Backend::Remote(r) => r.create(name, req).await,
        }
    }

    pub async fn exec(&self, name: &str, argv: &[String], timeout: Option<&str>) -> Result<Value, ToolError> {
        match self {
            Backend::Local(l) => l.exec(name, argv, timeout).await,
            Backend::Remote(r) => r.exec(name, argv, timeout).await,
        }
    }

    pub async fn write(&self, name: &str, path: &str, content: Vec<u8>) -> Result<(), ToolError> {
        match self {
            Backend::Local(l) => l.write(name, path, content).await,
            Backend::Remote(r) => r.write(name, path, content).await,
        }
    }

    pub async fn read(&self, name: &str, path: &str) -> Result<FileAnswer, ToolError> {
        match self {
            Backend::Local(l) => l.read(name, path).await,
            Backend::Remote(r) => r.read(name, path).await,
        }
    }

    pub async fn diff(&self, name: &str) -> Result<Value, ToolError> {
        match self {
            Backend::Local(l) => l.diff(name).await,
            Backend::Remote(r) => r.diff(name).await,
        }
    }

    pub async fn commit(&self, name: &str, paths: &[String]) -> Result<Value, ToolError> {
        match self {
            Backend::Local(l) => l.commit(name, paths).await,
            Backend::Remote(r) => r.commit(name, paths).await,
        }
    }

    pub async fn checkpoint(&self, name: &str, label: &str) -> Result<(), ToolError> {
        match self {
            Backend::Local(l) => l.checkpoint(name, label).await,
            Backend::Remote(r) => r.checkpoint(name, label).await,
        }
    }

    pub async fn rollback(&self, name: &str, label: &str) -> Result<(), ToolError> {
        match self {
            Backend::Local(l) => l.rollback(name, label).await,
            Backend::Remote(r) => r.rollback(name, label).await,
        }
    }

    /// The audit records (`airlock logs --json`), the newest [`MAX_LOG_RECORDS`].
    pub async fn logs(&self, name: &str) -> Result<Value, ToolError> {
        let lines = match self {
            Backend::Local(l) => l.logs(name).await?,
            Backend::Remote(r) => r.logs(name).await?,
        };
        let text = String::from_utf8_lossy(&lines);
        let mut records: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.to_string())))
            .collect();
        let total = records.len();
        if total > MAX_LOG_RECORDS {
            records.drain(..total - MAX_LOG_RECORDS);
        }
        Ok(json!({ "records": records, "total": total, "truncated": total > MAX_LOG_RECORDS }))
    }

    pub async fn list(&self) -> Result<Value, ToolError> {
        match self {
            Backend::Local(l) => l.list().await,
            Backend::Remote(r) => r.list().await,
        }
    }

    pub async fn destroy(&self, name: &str) -> Result<(), ToolError> {
        match self {
            Backend::Local(l) => l.destroy(name).await,
            Backend::Remote(r) => r.destroy(name).await,
        }
    }
}
