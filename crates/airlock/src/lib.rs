//! airlock's command modules, shared by its executables (see `siblings` for which runs what):
//! - `airlock` (src/main.rs): every command; what users run per agent command (`run`, `create`, `exec`, ...)
//!   and the rest of the CLI, linking only what those need, so that a sandbox starts fast;
//! - `airlock-server` (src/bin/airlock-server.rs): the cold, heavy subsystems (`serve` with its HTTP stack and
//!   E2B, `mcp`, the OCI runtime `oci`, `image pull`'s registry client), which `airlock` execs with the same
//!   arguments;
//! - `airlock-netgw` (src/bin/airlock-netgw.rs): one `--net allow` sandbox's network gateway process, started
//!   by its supervisor, so that its memory is its own small binary's.
#![forbid(unsafe_code)]

pub mod audit_cmd;
pub mod checkpoint_cmd;
pub mod cli;
pub mod cp_cmd;
pub mod doctor;
pub mod doctor_vm;
pub mod files_cmd;
pub mod home;
pub mod http_client;
pub mod image_cmd;
pub mod longlived;
pub mod network;
pub mod oci_cmd;
pub mod profile_cmd;
pub mod quick_parse;
pub mod remote;
pub mod run;
pub mod sandboxes_cmd;
pub mod serve_cmd;
pub mod siblings;
pub mod state;
pub mod stats_cmd;
pub mod workspace_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;

use cli::Cli;

/// Exit status when the sandbox could not be set up (bad input included): nothing ran.
pub const EXIT_SETUP_FAILED: u8 = 125;
/// Exit status for bad input to any command (an unknown subcommand or flag, a missing argument): the same as a
/// sandbox that could not be set up, so that a script tells airlock's refusals from its command's own statuses.
pub const EXIT_USAGE: u8 = 125;

/// Exit status for other commands' failures (`stats` of an unknown sandbox, say).
pub const EXIT_FAILED: u8 = 1;

/// A command's result as the process's exit status: its own code, or one `airlock:` line and 125 (for the
/// commands that run something) or 1.
pub fn exit_code(result: anyhow::Result<i32>, runs_something: bool) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(EXIT_SETUP_FAILED)),
        Err(err) => {
            say(&one_line(&err));
            ExitCode::from(if runs_something { EXIT_SETUP_FAILED } else { EXIT_FAILED })
        }
    }
}

/// The error and its causes on one line: "what failed: why".
pub fn one_line(err: &anyhow::Error) -> String {
    err.chain().map(|e| e.to_string()).collect::<Vec<_>>().join(": ")
}

/// Prints one `airlock:` line on stderr (control characters shown escaped: see `session::say`).
pub use session::say;

/// clap's errors, reduced to one `airlock:` line. Help and version go to stdout with status 0.
pub fn usage_error(err: &clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = err.print();
        // `airlock` alone (or `airlock profile`): the help, on stderr, as the usage error it is.
        return if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(EXIT_USAGE)
        } else {
            ExitCode::SUCCESS
        };
    }
    // clap's message can span lines ("... not provided:\n  <COMMAND>...\n\nUsage: ..."): keep what comes before
    // the usage and tips, joined on one line.
    let rendered = err.to_string();
    let first = rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.trim_start().starts_with("tip:"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let first = first.trim_start_matches("error: ").trim_end_matches(':');
    // args_os: an argument that is not UTF-8 (a hostile file name) must not panic here.
    let sub = std::env::args_os().nth(1);
    let known = <Cli as clap::CommandFactory>::command();
    let help = match sub.as_ref().and_then(|a| a.to_str()) {
        Some(name) if !name.starts_with("__") && known.find_subcommand(name).is_some() => {
            format!("airlock {name} --help")
        }
        _ => "airlock --help".to_string(),
    };
    say(&format!("{first} (see `{help}`)"));
    ExitCode::from(EXIT_USAGE)
}
