//! airlock's session layer: the lifecycle of one sandbox as a library. `airlock run` and `airlock create`'s
//! supervisor are two thin front ends over [`launch::launch`], which does the steps they share, in order: claim
//! the sandbox's state in the workspace store (or resume it), lay out its copy-on-write layer, open the audit
//! recorder, describe the network gateway, run the sandbox on a [`backend::Backend`] (today's namespace engine
//! is the first; a microVM backend is planned), then record how it ended. A failure at any step undoes what the
//! steps before it made.
//!
//! Synchronous, like the runtime it drives: a process can only enter a new user namespace while it has one
//! thread.

#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod files;
pub mod gateway;
pub mod handle;
pub mod launch;
pub mod recorder;
pub mod stats;
pub mod vm;

pub use error::SessionError;

/// Who runs airlock, for resolving a profile (`$HOME`, `--pass-env`, the default user).
pub fn invoker() -> policy::profile::Invoker {
    let (uid, gid) = runtime::host::current_ids();
    policy::profile::Invoker {
        uid,
        gid,
        is_root: runtime::host::is_host_root(),
        env: std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect(),
        // Only for `USER` inside when the identity inside is the invoker's own non-root uid (uid 0 is `root`
        // whatever /etc/passwd says): root's runs skip reading /etc/passwd at every start.
        user_name: if uid == 0 { None } else { runtime::host::user_name(uid) },
    }
}

/// Prints one `airlock:` line on stderr. Control characters (a newline in a hostile file name, an escape
/// sequence) are shown escaped, so the message stays one line and cannot drive the terminal.
pub fn say(message: &str) {
    let clean: String =
        message.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect();
    eprintln!("airlock: {clean}");
}

/// An error and its sources on one line, `: `-separated (what `airlock:` messages show).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_is_one_line() {
        let inner = std::io::Error::from(std::io::ErrorKind::NotFound);
        let outer = crate::SessionError::CreateDir { path: "/x".into(), source: inner };
        assert_eq!(crate::error_chain(&outer), "cannot create /x: entity not found");
    }
}
