//! `airlock mcp`: airlock's sandboxes as the tools of a Model Context Protocol server (`rmcp`, the official Rust
//! SDK), over stdio or streamable HTTP. Without a daemon it drives this machine's sandboxes through the `airlock`
//! binary's own subcommands (see [`local`]); with `AIRLOCK_HOST` it talks to that `airlock serve` (see
//! [`remote`]).
#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod local;
pub mod remote;
pub mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServiceExt;

pub use backend::Backend;
pub use error::{ServeError, ToolError};
pub use tools::AirlockTools;

/// How `airlock mcp` serves.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The `airlock` executable the tools run (the server's own).
    pub exe: PathBuf,
    /// The daemon to use (`--host`, `AIRLOCK_HOST`); none: this machine's sandboxes.
    pub host: Option<String>,
    /// Streamable HTTP on this address (at `/mcp`) instead of stdio.
    pub http: Option<SocketAddr>,
}

/// Serves until the client goes (stdio: its end of the input) or, over HTTP, until SIGINT/SIGTERM.
pub fn serve(config: McpConfig) -> Result<(), ServeError> {
    let backend = Arc::new(Backend::new(config.exe, config.host)?);
    if let Some(addr) = config.http {
        if !addr.ip().is_loopback() {
            return Err(ServeError::NotLoopback(addr));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        match config.http {
            Some(addr) => serve_http(backend, addr).await,
            None => serve_stdio(backend).await,
        }
    })
}

async fn serve_stdio(backend: Arc<Backend>) -> Result<(), ServeError> {
    let service = AirlockTools::new(backend)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Stdio(e.to_string()))?;
    service.waiting().await.map_err(|e| ServeError::Stdio(e.to_string()))?;
    Ok(())
}

async fn serve_http(backend: Arc<Backend>, addr: SocketAddr) -> Result<(), ServeError> {
    let token = tokio_util::sync::CancellationToken::new();
    // Loopback only (checked above); the Host header must name it too (no DNS rebinding from a browser).
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(["localhost".to_string(), "127.0.0.1".into(), "::1".into(), "[::1]".into()])
        .with_cancellation_token(token.child_token());
    let service = StreamableHttpService::new(
        move || Ok(AirlockTools::new(backend.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    eprintln!("airlock: MCP over streamable HTTP at http://{bound}/mcp");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            token.cancel();
        })
        .await
        .map_err(ServeError::Http)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
