//! airlock's executables, installed side by side (scripts/install, the Debian package), find each other next to
//! the running one: `airlock` execs `airlock-server` for the commands it does not link (`serve`, `mcp`, `oci`,
//! `image pull`), and `airlock-server`'s daemon and MCP server run `airlock` for the sandboxes. (The network
//! gateway, `airlock-netgw`, is found the same way by the session layer: `session::gateway`.)
//!
//! Next to the running executable's real path, the kernel's `/proc/self/exe` (symlinks resolved: an
//! `airlock` linked into PATH finds its siblings in the directory the files are installed in), read once, at the
//! first use, which is before anything changes the process's privileges.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};

/// The executable users run: every command (those it does not link are `airlock-server`'s).
pub const AIRLOCK: &str = "airlock";
/// The cold, heavy subsystems: `serve`, `mcp`, `oci`, `image pull`.
pub const SERVER: &str = "airlock-server";

/// The running executable's real path.
pub fn own_exe() -> Result<&'static Path> {
    static EXE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match EXE.get_or_init(|| std::env::current_exe().map_err(|e| e.to_string())) {
        Ok(path) => Ok(path),
        Err(e) => Err(anyhow!("cannot find airlock's own executable (/proc/self/exe): {e}")),
    }
}

/// The `airlock` executable, which runs the sandboxes (`__supervise`, `__files`, `run`, ...): this one, when it
/// is not one of its siblings (whatever its name: a copy under another name runs itself), else `airlock` next
/// to it (for the daemon, the MCP server and the OCI runtime in airlock-server).
pub fn airlock() -> Result<PathBuf> {
    let exe = own_exe()?;
    match exe.file_name().and_then(|n| n.to_str()) {
        Some(SERVER | session::gateway::PROGRAM) => sibling(AIRLOCK),
        _ => Ok(exe.to_path_buf()),
    }
}

/// The path of the sibling executable `name`, which must exist (else the one-line error naming it).
pub fn sibling(name: &str) -> Result<PathBuf> {
    let exe = own_exe()?;
    let path = exe.parent().unwrap_or(Path::new("/")).join(name);
    if !path.is_file() {
        return Err(missing(name, exe));
    }
    Ok(path)
}

/// What to say when a sibling is not installed.
fn missing(name: &str, exe: &Path) -> anyhow::Error {
    anyhow!("{name} not found next to {}: reinstall airlock (scripts/install)", exe.display())
}

/// Replaces this process with the sibling `name`, given `args` (the command line after the program's name,
/// unchanged: the sibling parses it as airlock did). Returns only if that fails: one `airlock:` line, and
/// `failed` as the status (125 for the commands that run something, as if they had failed to set up).
pub fn exec(name: &str, args: impl IntoIterator<Item = OsString>, failed: u8) -> ExitCode {
    let error = match own_exe() {
        Ok(exe) => {
            let path = exe.parent().unwrap_or(Path::new("/")).join(name);
            let error = std::process::Command::new(&path).args(args).exec();
            if error.kind() == std::io::ErrorKind::NotFound {
                missing(name, exe)
            } else {
                anyhow!("cannot run {}: {error}", path.display())
            }
        }
        Err(e) => e,
    };
    crate::say(&crate::one_line(&error));
    ExitCode::from(failed)
}
