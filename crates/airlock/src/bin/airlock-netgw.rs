//! `airlock-netgw`: the network gateway of one `--net allow` sandbox, started by its supervisor
//! (`session::gateway`), never by hand. Its own executable, the smallest of airlock's, so that each sandbox's
//! gateway maps only the gateway's code (see `airlock::network`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use airlock::network::{self, NetGatewayArgs};
use airlock::{exit_code, one_line, say, EXIT_USAGE};

fn main() -> ExitCode {
    runtime::host::restore_default_sigpipe();
    // Started through a descriptor (/proc/self/fd/N, see `session::gateway::program`), the process's name is the
    // descriptor's number: named again for ps and top. (Best effort: the name is not a protection.)
    let _ = std::fs::write("/proc/self/comm", network::PROCESS_NAME);
    let args = match NetGatewayArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            say(&format!("network gateway: {}", one_line(&e)));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    exit_code(network::serve(args), false)
}
