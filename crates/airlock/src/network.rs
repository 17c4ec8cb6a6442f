//! `--net allow` on airlock's side: what the runtime needs to start the network gateway (its command line, the
//! sandbox's `/etc/hosts` and `/etc/resolv.conf`), the proxy variables inside, and the hidden `__netgw`
//! subcommand the gateway's process runs.
//!
//! The gateway is this binary again (`airlock __netgw`), started by the supervisor before the sandbox is cloned
//! (see `runtime::gateway`): it receives the sandbox's TUN interface from the sandbox's init and serves it with
//! `netgw` until the supervisor stops it. It is the only airlock process with threads (tokio's).

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result};
use audit::AuditLog;
use clap::Args;
use netgw::addr;
use policy::sandbox::{AllowRule, Network, SandboxPolicy};
use runtime::gateway::{GatewayInterface, GatewaySetup};

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
}

/// The sandbox's `/etc/hosts`: localhost only. Every other name is the gateway's DNS to answer (or refuse).
const SANDBOX_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The sandbox's `/etc/resolv.conf`: the gateway, and nothing else.
fn sandbox_resolv_conf() -> String {
    format!("# airlock: names are answered by the sandbox's network gateway\nnameserver {}\n", addr::GATEWAY_ADDR)
}

/// The proxy the gateway serves inside, for tools that prefer one (same policy as direct connections).
fn proxy_url() -> String {
    format!("http://{}:{}", addr::GATEWAY_ADDR, addr::PROXY_PORT)
}

/// How the runtime starts this sandbox's gateway; `None` unless the policy is `--net allow`.
///
/// `events`: the audit log and its copies (see `audit_cmd::Recorder::gateway_files`), where the gateway appends
/// its decisions. `log`: where the gateway's errors go when the supervisor's own standard error will not stay
/// (`airlock create`).
pub fn gateway_setup(
    policy: &SandboxPolicy,
    sandbox: &str,
    events: Vec<PathBuf>,
    log: Option<PathBuf>,
) -> Result<Option<GatewaySetup>> {
    let Network::Allow(rules) = &policy.network else {
        return Ok(None);
    };
    // This very binary, by the kernel's link to it rather than by path: as host root the gateway runs as
    // `nobody`, who may not be able to walk the path to airlock (e.g. under /root), but may execute the file.
    let program = PathBuf::from("/proc/self/exe");
    let mut args: Vec<OsString> = vec!["__netgw".into(), "--sandbox".into(), sandbox.into()];
    for rule in rules {
        args.push("--allow".into());
        args.push(allow_entry(rule).into());
    }
    Ok(Some(GatewaySetup {
        program,
        args,
        events,
        log,
        interface: GatewayInterface {
            name: addr::INTERFACE.to_string(),
            address: addr::SANDBOX_ADDR,
            prefix: addr::SANDBOX_PREFIX,
            gateway: addr::GATEWAY_ADDR,
            mtu: u32::from(addr::MTU),
        },
        files: vec![
            ("/etc/hosts".to_string(), SANDBOX_HOSTS.as_bytes().to_vec()),
            ("/etc/resolv.conf".to_string(), sandbox_resolv_conf().into_bytes()),
        ],
    }))
}

/// An allow rule written back as `--allow` takes it (IPv6 addresses in brackets when a port follows).
fn allow_entry(rule: &AllowRule) -> String {
    match (rule.port, rule.domain.contains(':')) {
        (None, _) => rule.domain.clone(),
        (Some(port), true) => format!("[{}]:{port}", rule.domain),
        (Some(port), false) => format!("{}:{port}", rule.domain),
    }
}

/// `--net allow`: `HTTP_PROXY`, `HTTPS_PROXY` (and lower-case), `NO_PROXY` point at the gateway's proxy, unless
/// the profile or `--env` set them (`explicit` says whether a key was set so); a value passed through from the
/// caller (`--pass-env`) is replaced: the host's proxy is not reachable from inside.
pub fn add_proxy_environment(policy: &mut SandboxPolicy, explicit: &dyn Fn(&str) -> bool) {
    if !matches!(policy.network, Network::Allow(_)) {
        return;
    }
    let proxy = proxy_url();
    let no_proxy = "localhost,127.0.0.1".to_string();
    let values = [
        ("HTTP_PROXY", &proxy),
        ("HTTPS_PROXY", &proxy),
        ("http_proxy", &proxy),
        ("https_proxy", &proxy),
        ("NO_PROXY", &no_proxy),
        ("no_proxy", &no_proxy),
    ];
    for (key, value) in values {
        if explicit(key) {
            continue;
        }
        match policy.env.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.clone(),
            None => policy.env.push((key.to_string(), value.clone())),
        }
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
    let options = netgw::GatewayOptions { stop: Some(stop), ..netgw::GatewayOptions::default() };
    netgw::serve_tun_blocking_with(tun, config, options).context("network gateway")?;
    Ok(0)
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

    #[test]
    fn allow_entries_round_trip() {
        for entry in ["pypi.org", "*.github.com:443", "10.0.0.1:8080", "::1", "[2001:db8::1]:8443"] {
            let rule = policy::names::validate_allow_pattern(entry).unwrap();
            assert_eq!(policy::names::validate_allow_pattern(&allow_entry(&rule)).unwrap(), rule, "{entry}");
        }
    }
}
