//! `airlock`: the thin command-line edge over the policy and runtime crates.
#![forbid(unsafe_code)]

mod audit_cmd;
mod checkpoint_cmd;
mod cli;
mod cp_cmd;
mod doctor;
mod doctor_vm;
mod files_cmd;
mod home;
mod http_client;
mod image_cmd;
mod longlived;
mod network;
mod oci_cmd;
mod profile_cmd;
mod remote;
mod run;
mod sandboxes_cmd;
mod serve_cmd;
mod state;
mod stats_cmd;
mod workspace_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use cli::{Cli, Command};

/// Exit status when the sandbox could not be set up (bad input included): nothing ran.
const EXIT_SETUP_FAILED: u8 = 125;
/// Exit status for bad input to any command (an unknown subcommand or flag, a missing argument): the same as a
/// sandbox that could not be set up, so that a script tells airlock's refusals from its command's own statuses.
const EXIT_USAGE: u8 = 125;

/// Exit status for other commands' failures (`stats` of an unknown sandbox, say).
const EXIT_FAILED: u8 = 1;

fn main() -> ExitCode {
    // PID 1 of an `--isolation vm` guest (the initramfs's /init is this executable): the guest agent.
    if session::vm::guest::is_guest_init() {
        session::vm::guest::main();
    }
    runtime::host::restore_default_sigpipe();
    // `airlock oci …` is runc's command line (global flags of its own, runc's exit statuses): parsed apart.
    if std::env::args_os().nth(1).is_some_and(|a| a == "oci") {
        return oci_cmd::main(std::env::args_os().skip(2).collect());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let runs_something = matches!(
        cli.command,
        Command::Run(_) | Command::Create(_) | Command::Exec(_) | Command::Supervise(_) | Command::Files(_)
    );
    // With --host or AIRLOCK_HOST, the sandbox commands go to a daemon (remote.rs); the rest stays local.
    if cli.host.is_some() && matches!(cli.command, Command::Serve(_)) {
        say("airlock serve starts a daemon here; it takes no --host");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(host) = remote::chosen(cli.host.as_deref()) {
        if matches!(cli.command, Command::Cp(_)) {
            say("cp does not go through a daemon (use its files API: GET/PUT /v1/sandboxes/NAME/files)");
            return ExitCode::from(EXIT_USAGE);
        }
        if remote::is_remote_command(&cli.command) {
            return exit_code(remote::run(&host, cli.command), runs_something);
        }
    }
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Create(args) => longlived::create(*args),
        Command::Supervise(args) => longlived::supervise(args),
        Command::NetGateway(args) => network::serve(args),
        Command::Exec(args) => longlived::exec(args),
        Command::Files(args) => files_cmd::files(args),
        Command::Stop { name } => longlived::stop(&name),
        Command::Doctor { json } => doctor::run_doctor(json),
        Command::Profile(cmd) => profile_cmd::run(cmd),
        Command::Image(cmd) => image_cmd::run(cmd),
        Command::Stats { name, json } => stats_cmd::run(&name, json),
        Command::Ls { json } => sandboxes_cmd::ls(json),
        Command::Diff(args) => store::sandbox::layer_of(&state::state(), &args.name, false)
            .map_err(anyhow::Error::from)
            .and_then(|layer| workspace_cmd::diff(&layer, &args)),
        Command::Discard(args) => workspace_cmd::discard_cmd(&args),
        Command::Commit(args) => workspace_cmd::commit_cmd(&args),
        Command::Rm(args) => sandboxes_cmd::rm(&args),
        Command::Prune => sandboxes_cmd::prune(),
        Command::Cp(args) => cp_cmd::cp(&args),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man_pages(dir.as_deref()),
        Command::Checkpoint { name, label } => checkpoint_cmd::checkpoint(&name, label.as_deref()),
        Command::Checkpoints { name, json } => checkpoint_cmd::list(&name, json),
        Command::Rollback { name, label } => checkpoint_cmd::rollback(&name, &label),
        Command::Logs { name, follow, json, verify } => audit_cmd::logs(&name, follow, json, verify),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Mcp { http } => mcp_server(remote::chosen(cli.host.as_deref()), http),
        // Reached only after global flags (`airlock --host X oci ...`): `airlock oci` itself is parsed apart above.
        Command::Oci { args } => return oci_cmd::main(args),
    };
    exit_code(result, runs_something)
}

/// `airlock completions SHELL`: the completion script on stdout.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    // Without the hidden, internal subcommands (clap_complete would offer them).
    let full = <Cli as clap::CommandFactory>::command();
    let mut command = clap::Command::new("airlock")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    clap_complete::generate(shell, &mut command, "airlock", &mut std::io::stdout());
    Ok(0)
}

/// `airlock man`: the airlock(1) page, roff, on stdout; with `--dir DIR`, that page and one `airlock-SUB.1` per
/// subcommand written into DIR.
fn man_pages(dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    use anyhow::Context;
    let mut command = <Cli as clap::CommandFactory>::command();
    // Built: the global --host and the version are propagated to every subcommand.
    command.build();
    let render = |cmd: clap::Command| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        Ok(out)
    };
    let Some(dir) = dir else {
        std::io::Write::write_all(&mut std::io::stdout(), &render(command)?)?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |file: String, roff: Vec<u8>| -> anyhow::Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, roff).with_context(|| format!("cannot write {}", path.display()))
    };
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        let name = format!("airlock-{}", sub.get_name());
        // Built, a subcommand's display name is `airlock-SUB` (the page's title) and its bin name `airlock SUB`.
        write(format!("{name}.1"), render(sub.clone().display_name(name.clone()))?)?;
    }
    write("airlock.1".to_string(), render(command)?)?;
    Ok(0)
}

/// `airlock mcp`: the MCP server, its tools run by this executable's own subcommands (or a daemon's API).
fn mcp_server(host: Option<String>, http: Option<std::net::SocketAddr>) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().map_err(mcp::ServeError::NoExe)?;
    mcp::serve(mcp::McpConfig { exe, host, http })?;
    Ok(0)
}

/// A command's result as the process's exit status: its own code, or one `airlock:` line and 125 (for the
/// commands that run something) or 1.
fn exit_code(result: anyhow::Result<i32>, runs_something: bool) -> ExitCode {
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
fn usage_error(err: &clap::Error) -> ExitCode {
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
