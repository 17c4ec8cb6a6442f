//! `--net allow` on the session's side: what the runtime needs to start the network gateway (its command line,
//! the sandbox's `/etc/hosts` and `/etc/resolv.conf`) and the proxy variables inside.
//!
//! The gateway is airlock's executable `airlock-netgw`, installed next to `airlock`, started by the supervisor
//! before the sandbox is cloned (see `runtime::gateway`): it receives the sandbox's TUN interface from the
//! sandbox's init and serves it with `netgw` until the supervisor stops it.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use netgw::addr;
use policy::sandbox::{AllowRule, Network, SandboxPolicy};
use runtime::gateway::{GatewayInterface, GatewaySetup};

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

/// The gateway's executable, installed next to airlock's.
pub const PROGRAM: &str = "airlock-netgw";

/// The gateway's executable is not where it is installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{PROGRAM} not found next to {}: reinstall airlock (scripts/install)", .next_to.display())]
pub struct ProgramMissing {
    /// The running executable's path.
    pub next_to: PathBuf,
}

/// The gateway's executable for `policy` (`None` unless it is `--net allow`), as the path the runtime starts:
/// `/proc/self/fd/N`, a descriptor of this process's on the file. As host root the gateway runs as `nobody`, who
/// may not be able to walk the path to airlock's directory (e.g. under /root) but may execute the file: so the
/// file is opened here, as the user airlock runs as, once per process (next to the running executable's real
/// path, `/proc/self/exe`), and executed through the descriptor (what `fexecve` does). Called first thing by
/// the launch: a missing executable fails the sandbox before anything is made.
pub fn program(policy: &SandboxPolicy) -> Result<Option<PathBuf>, ProgramMissing> {
    static OPENED: OnceLock<Result<File, ProgramMissing>> = OnceLock::new();
    if !matches!(policy.network, Network::Allow(_)) {
        return Ok(None);
    }
    let opened = OPENED.get_or_init(|| {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let path = exe.parent().unwrap_or(Path::new("/")).join(PROGRAM);
        // O_CLOEXEC: the kernel opens the file through /proc/self/fd/N before exec closes the descriptor.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .ok()
            .filter(|file| file.metadata().is_ok_and(|m| m.is_file()))
            .ok_or(ProgramMissing { next_to: exe })
    });
    match opened {
        Ok(file) => Ok(Some(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))),
        Err(missing) => Err(missing.clone()),
    }
}

/// How the runtime starts this sandbox's gateway; `None` unless the policy is `--net allow`.
///
/// `program`: the gateway's executable, from [`program`].
/// `events`: the audit log and its copies (see `crate::recorder::Recorder::gateway_files`), where the gateway appends
/// its decisions. `log`: where the gateway's errors go when the supervisor's own standard error will not stay
/// (`airlock create`).
pub fn gateway_setup(
    policy: &SandboxPolicy,
    program: Option<PathBuf>,
    sandbox: &str,
    events: Vec<PathBuf>,
    log: Option<PathBuf>,
) -> Option<GatewaySetup> {
    let Network::Allow(rules) = &policy.network else {
        return None;
    };
    let program = program?;
    let mut args: Vec<OsString> = vec!["--sandbox".into(), sandbox.into()];
    for rule in rules {
        args.push("--allow".into());
        args.push(allow_entry(rule).into());
    }
    Some(GatewaySetup {
        program,
        arg0: PROGRAM.into(),
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
    })
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
