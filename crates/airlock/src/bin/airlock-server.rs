//! `airlock-server`: airlock's cold, heavy subsystems, kept out of the `airlock` executable that runs sandboxes
//! (see the library's front page): `serve` (the daemon, its HTTP stack, E2B), `mcp`, `oci` (the OCI runtime)
//! and `image pull` (the registry client, TLS). `airlock` execs it with its own command line, which it parses
//! again the same way; the other commands are `airlock`'s.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use airlock::cli::{Cli, Command};
use airlock::image_cmd::ImageCommand;
use airlock::{exit_code, image_cmd, oci_cmd, remote, say, serve_cmd, siblings, usage_error, EXIT_USAGE};

fn main() -> ExitCode {
    runtime::host::restore_default_sigpipe();
    // `oci …` is runc's command line (global flags of its own, runc's exit statuses): parsed apart. (The
    // `airlock-oci` wrapper containerd and Docker call comes here straight.)
    if std::env::args_os().nth(1).is_some_and(|a| a == "oci") {
        return oci_cmd::main(std::env::args_os().skip(2).collect());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    if cli.host.is_some() && matches!(cli.command, Command::Serve(_)) {
        say("airlock serve starts a daemon here; it takes no --host");
        return ExitCode::from(EXIT_USAGE);
    }
    let result = match cli.command {
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Mcp { http } => mcp_server(remote::chosen(cli.host.as_deref()), http),
        // After global flags (`airlock --host X oci ...`): `oci` itself is parsed apart above.
        Command::Oci { args } => return oci_cmd::main(args),
        Command::Image(cmd @ ImageCommand::Pull { .. }) => image_cmd::pull_command(cmd),
        _ => {
            say(&format!("{} runs serve, mcp, oci and image pull: the other commands are airlock's", siblings::SERVER));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    exit_code(result, false)
}

/// `airlock mcp`: the MCP server, its tools run by `airlock`'s own subcommands (or a daemon's API).
fn mcp_server(host: Option<String>, http: Option<std::net::SocketAddr>) -> anyhow::Result<i32> {
    let exe = siblings::airlock()?;
    mcp::serve(mcp::McpConfig { exe, host, http })?;
    Ok(0)
}
