//! Starting the daemon: its state, the sandboxes it had before a restart, its listeners and background work.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::api::{self, App, Limits};
use crate::engine::Engine;
use crate::error::{ApiError, Code};
use crate::registry::Registry;
use crate::store::{now, Store, StoreError};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The Unix socket; none when only `listen` is asked for.
    pub socket: Option<PathBuf>,
    /// A TCP address, which needs `token`.
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
    pub state_dir: PathBuf,
    pub exe: PathBuf,
    pub limits: Limits,
    /// More TCP listeners, each serving a router of its own on the daemon's state (the E2B-compatible API).
    pub extra: Vec<ExtraListener>,
}

/// A listener that serves another front end over the same sandboxes (see [`ServeConfig::extra`]). Its router
/// checks its own credentials: the daemon's bearer token is not required on it.
#[derive(Clone)]
pub struct ExtraListener {
    pub addr: SocketAddr,
    /// What it serves, for the log line (`E2B`).
    pub what: &'static str,
    /// Builds the router once the daemon's state is loaded; an error stops the daemon before it serves.
    pub router: Arc<dyn Fn(api::Shared) -> Result<axum::Router, String> + Send + Sync>,
}

impl std::fmt::Debug for ExtraListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraListener").field("addr", &self.addr).field("what", &self.what).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "--listen needs --token-file: a TCP address without a token would let anyone who can reach it run commands"
    )]
    ListenWithoutToken,
    #[error("cannot start the daemon's async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the socket's directory {path}: {source}")]
    SocketDir { path: PathBuf, source: std::io::Error },
    #[error("another daemon listens on {0} already")]
    SocketInUse(PathBuf),
    #[error("cannot listen on {what}: {source}")]
    Listen { what: String, source: std::io::Error },
    #[error("cannot set the permissions of {path}: {source}")]
    SocketMode { path: PathBuf, source: std::io::Error },
    #[error("the server on {what} failed: {source}")]
    Serve { what: String, source: std::io::Error },
    #[error("cannot set up the {what} API: {message}")]
    Extra { what: &'static str, message: String },
}

/// The default socket: `/run/airlock/airlock.sock` as root, `$XDG_RUNTIME_DIR/airlock/airlock.sock` otherwise.
pub fn default_socket() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/run/airlock/airlock.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("airlock/airlock.sock"),
        None => PathBuf::from(format!("/tmp/airlock-{}/airlock.sock", rustix::process::getuid().as_raw())),
    }
}

/// Runs the daemon until SIGTERM or SIGINT. Sandboxes keep running after it ends; the next daemon adopts them.
pub fn serve(config: ServeConfig) -> Result<(), ServeError> {
    if config.listen.is_some() && config.token.is_none() {
        return Err(ServeError::ListenWithoutToken);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Two cores are enough for an API whose work happens in child processes.
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(run(config))
}

async fn run(config: ServeConfig) -> Result<(), ServeError> {
    // `airlock` restores SIGPIPE's default action (for `airlock … | head`), which would kill the daemon when an
    // engine child exits before reading all of its stdin (a `PUT …/files` refused before the body is copied, an
    // exec whose command never reads its stdin). A listener replaces the default action for the rest of the
    // process: such writes fail with EPIPE instead. (Children get the default back at exec.)
    let _sigpipe = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe());
    let store = Store::open(&config.state_dir)?;
    let registry = Registry::default();
    adopt(&store, &registry, &config.state_dir)?;
    let app = Arc::new(App {
        engine: Engine { exe: config.exe.clone(), state_dir: config.state_dir.clone() },
        store,
        registry,
        execs: Arc::new(Semaphore::new(config.limits.max_execs)),
        limits: config.limits.clone(),
        pools_changed: tokio::sync::Notify::new(),
        started: now(),
    });
    let router = api::router(app.clone());
    let mut servers = tokio::task::JoinSet::new();
    if let Some(path) = &config.socket {
        let listener = bind_socket(path)?;
        let what = path.display().to_string();
        let router = router.clone();
        eprintln!("airlock: serving on unix://{what}");
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|source| ServeError::Serve { what, source })
        });
    }
    if let (Some(addr), Some(token)) = (config.listen, config.token.clone()) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { what: addr.to_string(), source })?;
        let token = Arc::new(token);
        let router = router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = token.clone();
            async move { check_token(&token, req, next).await }
        }));
        let what = addr.to_string();
        eprintln!("airlock: serving on http://{what}");
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|source| ServeError::Serve { what, source })
        });
    }
    for extra in &config.extra {
        let router = (extra.router)(app.clone()).map_err(|message| ServeError::Extra { what: extra.what, message })?;
        let listener = tokio::net::TcpListener::bind(extra.addr)
            .await
            .map_err(|source| ServeError::Listen { what: extra.addr.to_string(), source })?;
        let what = extra.addr.to_string();
        eprintln!("airlock: serving the {} API on http://{what}", extra.what);
        servers.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|source| ServeError::Serve { what, source })
        });
    }
    tokio::spawn(crate::pools::keep_pools_filled(app.clone()));
    tokio::spawn(crate::pools::stop_expired(app.clone()));
    while let Some(done) = servers.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(e);
        }
    }
    if let Some(path) = &config.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The sandboxes a previous daemon owned. One whose state is gone (its `airlock create` never finished, or it
/// was removed by hand) is forgotten; every other one is served again, running or exited.
fn adopt(store: &Store, registry: &Registry, state_dir: &Path) -> Result<(), ServeError> {
    for record in store.sandboxes()? {
        if state_dir.join("sandboxes").join(&record.name).is_dir() {
            registry.insert(record);
        } else if now() - record.requested < crate::pools::IN_FLIGHT_CREATE {
            // Asked for just before the daemon died: its `airlock create` (its own process, not killed with
            // the daemon) may still be setting it up. Kept as creating; the reaper adopts it once its directory
            // exists, or forgets it when that never happens (see pools::settle_adopted_creates).
            registry.reserve(record);
        } else {
            store.remove_sandbox(&record.name)?;
        }
    }
    Ok(())
}

fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| ServeError::SocketDir { path: dir.to_path_buf(), source })?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServeError::SocketInUse(path.to_path_buf()));
        }
        // A socket left by a daemon that was killed: nobody answers on it.
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|source| ServeError::Listen { what: path.display().to_string(), source })?;
    // The socket's permissions are its access control: the owner only (root's daemon: group `airlock` too,
    // when that group exists, for the users an administrator put in it).
    let group = rustix::process::geteuid().is_root().then(airlock_group).flatten();
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|source| ServeError::SocketMode { path: path.to_path_buf(), source })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| ServeError::SocketMode { path: path.to_path_buf(), source })?;
    Ok(listener)
}

/// The gid of group `airlock`, from /etc/group.
fn airlock_group() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == "airlock").then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

async fn check_token(token: &str, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(given.as_bytes(), token.as_bytes()) {
        return ApiError::new(Code::Unauthorized, "missing or wrong token (Authorization: Bearer TOKEN)")
            .into_response();
    }
    next.run(req).await
}

/// Compares in time that does not depend on where the first difference is (the daemon's token, E2B's keys).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
