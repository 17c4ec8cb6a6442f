//! `airlock`: the thin command-line edge over the policy and runtime crates.
#![forbid(unsafe_code)]

// The command modules are the library's (src/lib.rs), shared with `airlock-server` and `airlock-netgw`: this
// executable links what its own commands reach, not the heavy subsystems it execs `airlock-server` for.
use airlock::{
    audit_cmd, checkpoint_cmd, cli, cp_cmd, doctor, exit_code, files_cmd, image_cmd, longlived, profile_cmd,
    quick_parse, remote, run, sandboxes_cmd, say, siblings, state, stats_cmd, usage_error, workspace_cmd,
    EXIT_SETUP_FAILED, EXIT_USAGE,
};

use std::process::ExitCode;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // PID 1 of an `--isolation vm` guest (the initramfs's /init is this executable): the guest agent.
    if session::vm::guest::is_guest_init() {
        session::vm::guest::main();
    }
    runtime::host::restore_default_sigpipe();
    // `airlock oci …` is runc's command line (global flags of its own, runc's exit statuses): parsed apart, by
    // airlock-server.
    if std::env::args_os().nth(1).is_some_and(|a| a == "oci") {
        return siblings::exec(siblings::SERVER, std::env::args_os().skip(1), EXIT_SETUP_FAILED);
    }
    // `run`, `create`, `exec`: against their own arguments only (quick_parse); the rest, and every error, by clap's
    // whole tree.
    let cli = match quick_parse::parse() {
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
    // The heavy subsystems are airlock-server's: the same command line, parsed again there. (`oci` after global
    // flags, `airlock --host X oci ...`, included.)
    if matches!(
        cli.command,
        Command::Serve(_)
            | Command::Mcp { .. }
            | Command::Oci { .. }
            | Command::Image(image_cmd::ImageCommand::Pull { .. })
    ) {
        return siblings::exec(siblings::SERVER, std::env::args_os().skip(1), EXIT_SETUP_FAILED);
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
    // Where a run's exec records come from (AIRLOCK_EXEC_RECORDS): a bad value is refused before anything runs.
    if matches!(cli.command, Command::Run(_)) {
        if let Err(bad) = session::recorder::exec_source_from_env_checked() {
            say(&format!("{}={bad:?}: expected auto, seccomp or kernel", session::recorder::EXEC_RECORDS_VAR));
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Create(args) => longlived::create(*args),
        Command::Supervise(args) => longlived::supervise(args),
        // The gateway's process is airlock-netgw's (session::gateway starts it directly).
        Command::NetGateway(_) => {
            return siblings::exec(session::gateway::PROGRAM, std::env::args_os().skip(2), EXIT_SETUP_FAILED)
        }
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
        // airlock-server's, exec'd above.
        Command::Serve(_) | Command::Mcp { .. } | Command::Oci { .. } => unreachable_server_command(),
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

/// The commands handed to airlock-server before the dispatch: never reached, an internal error if it were.
fn unreachable_server_command() -> anyhow::Result<i32> {
    anyhow::bail!("internal error: this command is {}'s", siblings::SERVER)
}
