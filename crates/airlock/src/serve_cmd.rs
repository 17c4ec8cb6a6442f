//! `airlock serve`: flags into the daemon crate's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The Unix socket (default: /run/airlock/airlock.sock as root, $XDG_RUNTIME_DIR/airlock/airlock.sock
    /// otherwise).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also listen on a TCP address; needs --token-file (clients send `Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "ADDR:PORT", requires = "token_file")]
    pub listen: Option<SocketAddr>,
    /// Also serve the E2B-compatible API (control plane and envd, one port) for the unmodified E2B SDKs
    /// (E2B_API_URL=E2B_SANDBOX_URL=http://ADDR:PORT). With --token-file, clients send the token as their
    /// E2B_API_KEY; without one, only a loopback address is accepted.
    #[arg(long, value_name = "ADDR:PORT")]
    pub e2b: Option<SocketAddr>,
    /// The file holding the token for --listen and --e2b (its first line).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Where sandboxes keep state (default: airlock's state directory, as for the CLI).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The most sandboxes this daemon keeps at once (pooled ones included); more is answered 429.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_sandboxes: usize,
    /// Only host directories under DIR may be a sandbox's workspace or rootfs (repeatable; symlinks resolved).
    /// Without it, clients may name any directory this daemon's user can reach.
    #[arg(long = "workspace-root", value_name = "DIR")]
    pub workspace_roots: Vec<PathBuf>,
    /// The lifetime of a sandbox created without a `timeout` (e.g. 300s, as E2B's default); none when unset.
    #[arg(long, value_name = "DURATION")]
    pub default_timeout: Option<String>,
    /// The most commands running at once through this daemon; more is answered 429.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_execs: usize,
}

pub fn serve(args: ServeArgs) -> Result<i32> {
    let token = match &args.token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            if token.len() < 16 {
                bail!("the token in {} is shorter than 16 characters; use a long random one", file.display());
            }
            Some(token)
        }
        None => None,
    };
    if args.max_sandboxes == 0 || args.max_execs == 0 {
        bail!("--max-sandboxes and --max-execs must be at least 1");
    }
    let host_roots = args
        .workspace_roots
        .iter()
        .map(|d| std::fs::canonicalize(d).with_context(|| format!("--workspace-root {}", d.display())))
        .collect::<Result<Vec<_>>>()?;
    if let Some(t) = &args.default_timeout {
        policy::units::parse_duration(t).map_err(|e| anyhow::anyhow!("--default-timeout {t:?}: {e}"))?;
    }
    let state_dir = match args.state_dir {
        Some(dir) => std::path::absolute(&dir).with_context(|| format!("--state-dir {}", dir.display()))?,
        None => crate::state::state().path().to_path_buf(),
    };
    if let Some(addr) = args.e2b {
        if token.is_none() && !addr.ip().is_loopback() {
            bail!("--e2b {addr} needs --token-file: without a token it may listen on a loopback address only");
        }
    }
    // Only TCP listeners asked for: no socket unless asked for too.
    let socket = match (args.socket, args.listen.is_some() || args.e2b.is_some()) {
        (Some(path), _) => Some(path),
        (None, true) => None,
        (None, false) => Some(daemon::server::default_socket()),
    };
    let extra = match args.e2b {
        Some(addr) => {
            let e2b_token = token.clone();
            vec![daemon::server::ExtraListener {
                addr,
                what: "E2B",
                router: std::sync::Arc::new(move |app| e2b::router(app, e2b_token.clone()).map_err(|e| e.to_string())),
            }]
        }
        None => Vec::new(),
    };
    let config = daemon::ServeConfig {
        socket,
        listen: args.listen,
        token,
        state_dir,
        // The sandboxes are run by `airlock` (this is airlock-server, see the library's front page).
        exe: crate::siblings::airlock()?,
        limits: daemon::api::Limits {
            max_sandboxes: args.max_sandboxes,
            max_execs: args.max_execs,
            host_roots,
            default_timeout: args.default_timeout,
        },
        extra,
    };
    daemon::serve(config)?;
    Ok(0)
}
