//! `airlock serve --e2b ADDR:PORT`: the E2B API over the daemon's sandboxes, so that the unmodified E2B SDKs
//! (`E2B_API_URL` and `E2B_SANDBOX_URL` both naming this address) drive airlock sandboxes. The contract is the
//! "E2B compatibility" section of `../shared/design/api.md`; the wire details are in
//! `../shared/design/reference-ecosystem.md` section 1.
//!
//! One port, routed by path: the control plane (`/sandboxes…`, `/v2/sandboxes…`, see [`control`]) and envd, the
//! agent E2B runs inside each sandbox (Connect RPC `/process.Process/*` and `/filesystem.Filesystem/*`, plain
//! `/files` and `/health`, see [`process`], [`filesystem`], [`files`]). There is no agent inside an airlock
//! sandbox: envd's calls are answered on the host by the daemon's engine (`airlock exec`, `airlock __files`),
//! so they get the sandbox's namespaces, limits and audit records as the CLI's do. An envd request names its
//! sandbox in the `E2b-Sandbox-Id` header (the SDK sends it whenever `E2B_SANDBOX_URL` is set).
//!
//! An E2B sandbox id is the airlock sandbox's name. Credentials, when the daemon has a token: the control plane
//! wants it as `X-API-KEY` (the SDK's `E2B_API_KEY`), envd wants the sandbox's own `envdAccessToken` (derived
//! from a key kept in the state directory, so it survives a daemon restart) as `X-Access-Token`.
#![forbid(unsafe_code)]

pub mod connect;
pub mod control;
pub mod files;
pub mod filesystem;
pub mod process;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use daemon::api::Shared;
use daemon::registry::Entry;
use daemon::server::same_secret;
use sha2::{Digest, Sha256};

use crate::connect::{RpcCode, RpcError};

/// The envd version reported to the SDK: high enough for every feature gate of SDK 2.63.0
/// (`e2b/envd/versions.py`: default user 0.4.0, close stdin 0.5.2, octet-stream upload 0.5.7, …).
pub const ENVD_VERSION: &str = "0.6.4";

#[derive(Debug, thiserror::Error)]
pub enum E2bError {
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot draw the random key of the sandboxes' access tokens: {0}")]
    Random(std::io::Error),
}

/// What every E2B handler needs: the daemon's state and this front end's own.
pub struct E2b {
    pub app: Shared,
    /// The daemon's token: required as `X-API-KEY` on the control plane when set.
    pub token: Option<String>,
    /// The secret the sandboxes' envd access tokens are derived from.
    key: Vec<u8>,
    /// `$STATE/e2b`: what E2B says about a sandbox that airlock does not keep (its template, metadata).
    pub dir: PathBuf,
    pub procs: process::Procs,
    pub watchers: filesystem::Watchers,
}

pub type E2bState = Arc<E2b>;

/// The E2B router on the daemon's state; `token` is the daemon's (`--token-file`).
pub fn router(app: Shared, token: Option<String>) -> Result<Router, E2bError> {
    let dir = app.engine.state_dir.join("e2b");
    for d in [dir.clone(), dir.join("sandboxes")] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|source| E2bError::CreateDir { path: d.clone(), source })?;
    }
    let key = load_or_make_key(&dir.join("key"))?;
    let state = Arc::new(E2b {
        app,
        token,
        key,
        dir,
        procs: process::Procs::default(),
        watchers: filesystem::Watchers::default(),
    });
    tokio::spawn(control::remove_ended(state.clone()));
    Ok(Router::new()
        .route("/sandboxes", post(control::create).get(control::list_v1))
        .route("/v2/sandboxes", post(control::create).get(control::list_v2))
        .route("/sandboxes/{id}", get(control::get_one).delete(control::kill))
        .route("/sandboxes/{id}/timeout", post(control::set_timeout))
        .route("/sandboxes/{id}/connect", post(control::connect))
        .route("/v2/sandboxes/{id}/connect", post(control::connect))
        .route("/health", get(files::health))
        .route("/files", get(files::download).post(files::upload))
        // Client streaming reads its body as it arrives, so it has its own route (before `{method}`'s).
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/{method}", post(process::dispatch))
        .route("/filesystem.Filesystem/{method}", post(filesystem::dispatch))
        .fallback(|| async { control::ControlError::new(axum::http::StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(daemon::api::MAX_FILE_BODY))
        .with_state(state))
}

/// The key in `path`, made (32 random bytes, mode 0600) when there is none yet.
fn load_or_make_key(path: &Path) -> Result<Vec<u8>, E2bError> {
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(E2bError::Read { path: path.to_path_buf(), source }),
    }
    let mut key = vec![0u8; 32];
    // A key that is not random would make every sandbox's access token guessable: no key, no E2B API.
    match rustix::rand::getrandom(&mut key, rustix::rand::GetRandomFlags::empty()) {
        Ok(32) => {}
        Ok(_) => return Err(E2bError::Random(std::io::Error::other("short read"))),
        Err(e) => return Err(E2bError::Random(e.into())),
    }
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        file.write_all(&key)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| E2bError::Write { path: path.to_path_buf(), source })?;
    Ok(key)
}

impl E2b {
    /// The `envdAccessToken` of sandbox `name`: a keyed hash, so nothing per sandbox needs keeping. (The name's
    /// length goes first, so no two names hash the same input; a length extension would need a name with bytes
    /// a sandbox name cannot hold.)
    pub fn envd_token(&self, name: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(&self.key);
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The running sandbox an envd request is for (`E2b-Sandbox-Id`), its access token checked when the daemon
    /// has a token. A sandbox this daemon does not own, or one that is not running, is the "not found" E2B's
    /// proxy answers (the SDK then raises its not-running error).
    pub fn envd_sandbox(&self, headers: &HeaderMap) -> Result<(String, Entry), RpcError> {
        let Some(name) = headers.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()) else {
            return Err(RpcError::new(
                RpcCode::InvalidArgument,
                "no E2b-Sandbox-Id header: set E2B_SANDBOX_URL to this server's address",
            ));
        };
        let name = name.to_string();
        let not_found = || RpcError::new(RpcCode::Unavailable, format!("The sandbox {name} was not found"));
        let entry = daemon::api::owned(&self.app, &name).map_err(|_| not_found())?;
        if self.token.is_some() {
            let given = headers.get("x-access-token").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !same_secret(given.as_bytes(), self.envd_token(&name).as_bytes()) {
                return Err(RpcError::new(RpcCode::Unauthenticated, "missing or wrong X-Access-Token"));
            }
        }
        daemon::api::running_init(&self.app, &name).map_err(|_| not_found())?;
        Ok((name, entry))
    }

    /// The E2B user a command runs as (`Authorization: Basic base64("USER:")`, what the SDK sends for `user=`),
    /// as `airlock exec --user` takes it: `root` is root inside; `user`, E2B's unprivileged default account, is
    /// uid 1000 (as in E2B's images); a number `UID` or `UID:GID` is itself. No header: the sandbox's own user.
    pub fn envd_user(headers: &HeaderMap) -> Result<Option<String>, RpcError> {
        let Some(value) = headers.get("authorization") else { return Ok(None) };
        let invalid = || RpcError::new(RpcCode::InvalidArgument, "Authorization: expected Basic base64(USER:)");
        let encoded = value.to_str().ok().and_then(|v| v.strip_prefix("Basic ")).ok_or_else(invalid)?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(decoded).map_err(|_| invalid())?;
        let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
        let mapped = match user {
            "" => return Ok(None),
            "user" => "1000:1000".to_string(),
            other if policy::profile::parse_user(other).is_some() => other.to_string(),
            other => {
                return Err(RpcError::new(
                    RpcCode::InvalidArgument,
                    format!("user {other:?}: airlock sandboxes know root, user (uid 1000) and numeric UID[:GID]"),
                ))
            }
        };
        Ok(Some(mapped))
    }

    /// Whether a control-plane request carries the daemon's token (always, when it has none).
    pub fn api_key_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else { return true };
        let given = headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or("");
        same_secret(given.as_bytes(), token.as_bytes())
    }
}
