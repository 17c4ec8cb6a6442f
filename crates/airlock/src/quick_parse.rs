//! The command line of the commands that start or join sandboxes (`run`, `create`, `exec`, and `create`'s
//! `__supervise`), parsed against that one subcommand's arguments instead of clap's whole command tree.
//!
//! `Cli::try_parse` builds every subcommand's arguments, parses, then drops them all: measured with callgrind,
//! about 40% of the instructions `airlock run -- /bin/true` executes before it clones the sandbox (issue 15). A
//! tree of the root's global arguments and the one subcommand the command line names first parses the same
//! command lines into the same [`Cli`]. Only a success is taken from it: help, version, and every error (an
//! unknown flag, a missing argument) come from the full parse, as before, so what users read is unchanged.

use std::ffi::OsString;

use clap::{Args, FromArgMatches, Parser};

use crate::cli::{Cli, CreateArgs, ExecArgs, RunArgs};

/// The command line, parsed.
pub fn parse() -> Result<Cli, clap::Error> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match parse_one_subcommand(&args) {
        Some(cli) => Ok(cli),
        None => Cli::try_parse_from(args),
    }
}

/// `args` (the program's name first) parsed against the root's global arguments and the subcommand named by
/// `args[1]`, when that is one of the sandbox commands and the parse succeeds; `None` otherwise.
fn parse_one_subcommand(args: &[OsString]) -> Option<Cli> {
    let name = args.get(1)?.to_str()?;
    let (name, augment): (&'static str, fn(clap::Command) -> clap::Command) = match name {
        "run" => ("run", <RunArgs as Args>::augment_args),
        "create" => ("create", <CreateArgs as Args>::augment_args),
        "exec" => ("exec", <ExecArgs as Args>::augment_args),
        "__supervise" => ("__supervise", <crate::longlived::SuperviseArgs as Args>::augment_args),
        _ => return None,
    };
    // As `Cli`'s derive declares them: `--host` global, a subcommand required.
    let tree = clap::Command::new("airlock")
        .arg(
            clap::Arg::new("host")
                .long("host")
                .global(true)
                .value_name("URL")
                .action(clap::ArgAction::Set)
                .value_parser(clap::value_parser!(String)),
        )
        .subcommand_required(true)
        .subcommand(augment(clap::Command::new(name)));
    let mut matches = tree.try_get_matches_from(args).ok()?;
    // `_mut`: takes the values out of the matches instead of cloning them first (what `from_arg_matches` does).
    Cli::from_arg_matches_mut(&mut matches).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<OsString> {
        std::iter::once("airlock").chain(line.iter().copied()).map(OsString::from).collect()
    }

    /// The same `Cli` as the full parse, for every command line the quick one accepts; and the rest left to the
    /// full parse.
    #[test]
    fn the_quick_parse_agrees_with_the_full_one() {
        let accepted: &[&[&str]] = &[
            &["run", "--", "/bin/true"],
            &["run", "/bin/echo", "-n", "--rm", "x"],
            &[
                "run",
                "--rm",
                "--net",
                "allow",
                "--allow",
                "a.com",
                "--allow",
                "*.b.org:443",
                "--memory",
                "1G",
                "--",
                "sh",
            ],
            &["run", "--host", "unix:///s", "--name", "n", "--resume", "--json", "--", "true"],
            &["run", "--image", "alpine:3.20"],
            &["run", "--profile", "strict", "--profile", "net-pypi", "--pids", "-1", "--cpus", "1.5", "-t", "--", "x"],
            &["run", "--workspace", "/w", "--workspace-mode", "cow", "--ro-bind", "/a:/b", "--env", "K=V", "--", "x"],
            &["create", "--allow", "x.com", "--json", "name"],
            &[
                "exec",
                "-t",
                "--env",
                "A=1",
                "--cwd",
                "/tmp",
                "--user",
                "root",
                "--timeout",
                "5s",
                "name",
                "--",
                "ls",
                "-l",
            ],
            &["exec", "--host", "http://127.0.0.1:1", "name", "--", "true"],
            &["__supervise", "--name", "n"],
        ];
        for line in accepted {
            let quick = parse_one_subcommand(&args(line)).unwrap_or_else(|| panic!("not accepted: {line:?}"));
            let full = Cli::try_parse_from(args(line)).unwrap();
            assert_eq!(format!("{quick:?}"), format!("{full:?}"), "{line:?}");
        }
        let left: &[&[&str]] = &[
            &["--host", "unix:///s", "run", "--", "true"],
            &["run"],
            &["run", "--help"],
            &["run", "-h"],
            &["run", "--version"],
            &["run", "--no-such-flag", "--", "true"],
            &["run", "--resume", "--", "true"],
            &["run", "--image", "a", "--rootfs", "/r"],
            &["create"],
            &["exec", "name"],
            &["ls"],
            &["serve"],
            &[],
        ];
        for line in left {
            assert!(parse_one_subcommand(&args(line)).is_none(), "{line:?}");
        }
    }
}
