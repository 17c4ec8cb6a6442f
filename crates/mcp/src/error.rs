//! What goes wrong: a tool's refusal (a tool result with `isError: true`) and the server's own failures.

/// Why a tool call did not do what it was asked. Shown to the client as one `airlock:` sentence in a tool result
/// with `isError: true`, never as a protocol error: the model reads it and can act on it.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// airlock refused or failed (policy, limits, no such sandbox, bad input): its own sentence.
    #[error("{0}")]
    Refused(String),
    /// An `airlock` subcommand could not be started or waited for.
    #[error("cannot run {exe} {what}: {source}")]
    Spawn { exe: String, what: String, source: std::io::Error },
    /// The daemon named by `AIRLOCK_HOST` could not be reached or answered nonsense.
    #[error("the airlock daemon at {target}: {why}")]
    Daemon { target: String, why: String },
    /// A subcommand's or the daemon's answer was not what airlock prints.
    #[error("{0}")]
    Malformed(String),
}

impl ToolError {
    pub fn refused(message: impl Into<String>) -> ToolError {
        ToolError::Refused(message.into())
    }

    /// The sentence a client sees: `airlock: …`, on one line.
    pub fn sentence(&self) -> String {
        let text: String = self
            .to_string()
            .chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.into() })
            .collect();
        format!("airlock: {text}")
    }
}

/// Why `airlock mcp` itself could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("AIRLOCK_HOST {0:?}: expected unix:///path/to/socket or http://host:port")]
    BadHost(String),
    #[error(
        "AIRLOCK_TOKEN would go in the clear to {0} (not a loopback address); set AIRLOCK_TOKEN_INSECURE=1 to send \
         it anyway, or reach the daemon through an SSH tunnel"
    )]
    TokenInTheClear(String),
    #[error("--http {0}: only a loopback address (127.0.0.1, [::1]): the MCP endpoint has no authentication")]
    NotLoopback(std::net::SocketAddr),
    #[error("cannot find airlock's own executable: {0}")]
    NoExe(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error("the MCP session over stdio failed: {0}")]
    Stdio(String),
}
