//! The network gateway's process, the executable `airlock-netgw` (src/bin/airlock-netgw.rs; what starts it, and
//! with which arguments, is the session layer's, `session::gateway`). It is the only airlock process with threads
//! (tokio's) besides the daemon and the MCP server. Its own small executable, so that what it maps is only the
//! gateway's: one runs per `--net allow` sandbox. (`airlock __netgw`, hidden, execs it.)

use std::fs::File;

use anyhow::{Context, Result};
use audit::AuditLog;
use clap::Args;

/// The gateway process's name (as `ps` shows it).
pub const PROCESS_NAME: &str = session::gateway::PROGRAM;

/// The hidden `airlock __netgw`: the network gateway of one sandbox (started by its supervisor, never by hand).
#[derive(Debug, Args)]
pub struct NetGatewayArgs {
    /// The sandbox's name, for the records.
    #[arg(long)]
    pub sandbox: String,
    /// An allowed destination (repeatable), as `--allow` takes it.
    #[arg(long)]
    pub allow: Vec<String>,
    /// The inherited socket on which the sandbox's init passes the TUN interface.
    #[arg(long)]
    pub tun_socket: i32,
    /// Inherited files the decisions go to (repeatable): the sandbox's audit log first (chained), then its
    /// copies (`--audit FILE`). None: nothing is recorded.
    #[arg(long)]
    pub events_fd: Vec<i32>,
    /// `ethernet`: the descriptor passed is a VM's NIC (a datagram socket of Ethernet frames, `--isolation vm`)
    /// rather than a TUN (`tun`, the default).
    #[arg(long, value_parser = parse_link, default_value = "tun")]
    pub link: netgw::Link,
}

/// `--link`'s values.
fn parse_link(value: &str) -> Result<netgw::Link> {
    match value {
        "tun" => Ok(netgw::Link::Tun),
        "ethernet" => Ok(netgw::Link::Ethernet),
        _ => anyhow::bail!("--link {value}: expected tun or ethernet"),
    }
}

impl NetGatewayArgs {
    /// The command line the supervisor gives: `--sandbox NAME [--allow ENTRY]... --tun-socket FD [--events-fd
    /// FD]... [--link tun|ethernet]` (each flag and its value as two arguments, as `session::gateway` writes them). Parsed by hand: the
    /// gateway's executable does without clap.
    pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<NetGatewayArgs> {
        let mut sandbox = None;
        let mut tun_socket = None;
        let (mut allow, mut events_fd) = (Vec::new(), Vec::new());
        let mut link = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            let value = args.next().and_then(|v| v.into_string().ok());
            let value = value.with_context(|| format!("{flag}: a value (UTF-8) is missing"))?;
            let fd = |value: &str| value.parse::<i32>().with_context(|| format!("{flag} {value}: not a descriptor"));
            match flag.as_str() {
                "--sandbox" if sandbox.is_none() => sandbox = Some(value),
                "--allow" => allow.push(value),
                "--tun-socket" if tun_socket.is_none() => tun_socket = Some(fd(&value)?),
                "--events-fd" => events_fd.push(fd(&value)?),
                "--link" if link.is_none() => link = Some(parse_link(&value)?),
                _ => anyhow::bail!("unexpected argument {flag:?} (the gateway is started by a sandbox's supervisor)"),
            }
        }
        Ok(NetGatewayArgs {
            sandbox: sandbox.context("--sandbox is missing")?,
            allow,
            tun_socket: tun_socket.context("--tun-socket is missing")?,
            events_fd,
            link: link.unwrap_or(netgw::Link::Tun),
        })
    }
}

/// The gateway's process: takes the inherited descriptors, receives the sandbox's TUN interface, serves it.
pub fn serve(args: NetGatewayArgs) -> Result<i32> {
    let socket = runtime::gateway::take_inherited_fd(args.tun_socket)?;
    let mut files = args.events_fd.into_iter().map(|fd| runtime::gateway::take_inherited_fd(fd).map(File::from));
    let mut log = match files.next().transpose()? {
        Some(file) => {
            let mut log = AuditLog::from_file(file, "audit log").with_sandbox(&args.sandbox);
            for (index, copy) in files.enumerate() {
                log.add_copy_file(copy?, format!("--audit copy {index}"));
            }
            Some(log)
        }
        None => None,
    };
    let allow =
        args.allow.iter().map(|entry| policy::names::validate_allow_pattern(entry)).collect::<Result<Vec<_>, _>>()?;
    let tun = runtime::gateway::receive_tun(&socket)?;
    drop(socket);
    let mut write_failed = false;
    let config = netgw::GatewayConfig {
        sandbox: args.sandbox,
        allow,
        events: Box::new(move |event: &netgw::NetEvent| {
            if let Some(log) = log.as_mut() {
                if let Err(e) = record_net_event(log, event) {
                    if !write_failed {
                        crate::say(&format!("network gateway: cannot record a decision in the audit log: {e:#}"));
                        write_failed = true;
                    }
                }
            }
        }),
    };
    // The supervisor stops the gateway with SIGTERM once the sandbox is gone: taken as the stop signal, it ends
    // the gateway in order, with a record for each connection still open (bytes each way so far).
    let stop = runtime::gateway::stop_on_sigterm()?;
    let options = netgw::GatewayOptions {
        stop: Some(stop),
        link: args.link,
        settled: Some(release_startup_memory),
        ..netgw::GatewayOptions::default()
    };
    netgw::serve_tun_blocking_with(tun, config, options).context("network gateway")?;
    Ok(0)
}

/// Once the gateway serves: drops the page-table entries of the executable's code and read-only data, which
/// start-up (and the kernel's fault-around, 64 KiB around each fault) left mapped; what the gateway runs from
/// here on comes back at its first use. Best effort: a failure changes only the memory figure.
fn release_startup_memory() {
    let _ = sys::memory::release_executable_pages();
}

/// The one place a `NetEvent` becomes a record: a `network` record of the sandbox's hash-chained audit log
/// (and its `--audit` copies), appended under the log's lock like every other writer's.
fn record_net_event(log: &mut AuditLog, event: &netgw::NetEvent) -> Result<()> {
    log.append_value("network", serde_json::to_value(event)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<NetGatewayArgs> {
        NetGatewayArgs::parse(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn the_supervisors_command_line_parses() {
        let args = parse(&[
            "--sandbox",
            "s",
            "--allow",
            "a.com",
            "--allow",
            "*.b:443",
            "--tun-socket",
            "5",
            "--events-fd",
            "6",
        ])
        .unwrap();
        assert_eq!((args.sandbox.as_str(), args.tun_socket, args.events_fd), ("s", 5, vec![6]));
        assert_eq!(args.allow, ["a.com", "*.b:443"]);
        assert_eq!(args.link, netgw::Link::Tun);
        let vm = parse(&["--sandbox", "s", "--tun-socket", "5", "--link", "ethernet"]).unwrap();
        assert_eq!(vm.link, netgw::Link::Ethernet);
        for bad in [
            &["--sandbox", "s"][..],
            &["--tun-socket", "5"],
            &["--sandbox", "s", "--tun-socket", "x"],
            &["--sandbox", "s", "--tun-socket", "5", "--verbose", "1"],
            &["--sandbox", "s", "--tun-socket", "5", "--allow"],
            &["--sandbox", "s", "--sandbox", "t", "--tun-socket", "5"],
            &["--sandbox", "s", "--tun-socket", "5", "--link", "tap"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
