//! `airlock __files OP NAME PATH` (internal): one file operation inside a running sandbox, for the daemon's
//! files API (`GET`/`PUT`/`DELETE /v1/sandboxes/{name}/files`).
//!
//! Why a process of its own, entering the sandbox: a path must resolve inside the sandbox's own root and with
//! its command's rights, never on the host and never as host root. This process enters the sandbox's user and
//! mount namespaces (its `/` is then the sandbox's root, so `..` stops there and an absolute symlink leads to
//! the sandbox's `/`, not the host's), takes the sandbox's user ids, drops every capability and applies the
//! sandbox's Landlock ruleset (`runtime::attach::enter_sandbox_as_its_user`); only then does it touch the path,
//! with ordinary file calls. What it may read or write is exactly what a command in the sandbox may, and what it
//! creates belongs to the sandbox's user (writes to a copy-on-write workspace land in the layer, as a
//! command's do). The daemon is multi-threaded and may not `setns` into a user namespace; a fresh
//! single-threaded process can.
//!
//! Output, for the daemon: `get` prints one JSON line (`{"type":"file","size","mode"}` then the file's bytes, or
//! `{"type":"dir","entries":[{"name","type","size","mode"}]}`); `put` copies its standard input into the file
//! (parent directories created); `rm` removes a file, a symlink or a whole directory. Exit status: 0 done, 3 no
//! such file, 4 permission denied (or a read-only filesystem), 5 not possible on that kind of file (a directory
//! to write, a file as a parent), 1 the sandbox is not running or another failure, 125 the sandbox could not be
//! entered.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use policy::names::validate_sandbox_name;
use policy::profile;
use runtime::attach::{enter_sandbox_as_its_user, AttachError};
use session::handle::{lookup, Lookup};

use crate::state;

#[derive(Debug, Args)]
pub struct FilesArgs {
    /// With `put`: the new file's mode (octal, e.g. 0644); an existing file's mode is changed to it.
    #[arg(long, value_name = "OCTAL")]
    pub mode: Option<String>,
    pub op: FilesOp,
    /// The running sandbox.
    pub name: String,
    /// An absolute path inside the sandbox.
    pub path: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FilesOp {
    Get,
    Put,
    Rm,
}

const EXIT_NOT_FOUND: i32 = 3;
const EXIT_DENIED: i32 = 4;
const EXIT_WRONG_KIND: i32 = 5;
/// The longest path taken (PATH_MAX).
const MAX_PATH: usize = 4096;

pub fn files(args: FilesArgs) -> Result<i32> {
    validate_sandbox_name(&args.name).map_err(|e| anyhow!("{e}"))?;
    if !args.path.starts_with('/') || args.path.len() > MAX_PATH {
        crate::say(&format!("path {:?}: must be absolute and at most {MAX_PATH} bytes", short(&args.path)));
        return Ok(EXIT_WRONG_KIND);
    }
    let mode = match &args.mode {
        Some(m) => match u32::from_str_radix(m, 8) {
            Ok(v) if v <= 0o7777 => Some(v),
            _ => {
                crate::say(&format!("--mode {m:?}: expected an octal mode such as 0644"));
                return Ok(EXIT_WRONG_KIND);
            }
        },
        None => None,
    };
    let sandbox = match lookup(&state::state(), &args.name)? {
        Lookup::Running(sandbox) => sandbox,
        Lookup::Missing => {
            crate::say(&format!("no sandbox named {}", args.name));
            return Ok(1);
        }
        Lookup::NotLongLived => {
            crate::say(&format!("sandbox {} was not started by `airlock create`", args.name));
            return Ok(1);
        }
        Lookup::NotRunning => {
            crate::say(&format!("sandbox {} is not running", args.name));
            return Ok(1);
        }
    };
    // The policy of the sandbox's commands (the stored profile), for its ids and its Landlock ruleset.
    let merged = sandbox.profile()?;
    // `--isolation vm`: the recorded init is the guest's QEMU, whose namespaces are the host's: never entered.
    if crate::run::vm_isolation(&merged)? {
        crate::say(&format!(
            "sandbox {} runs in a VM (--isolation vm): cp and files do not reach into it yet (use `airlock exec`)",
            args.name
        ));
        return Ok(i32::from(crate::EXIT_SETUP_FAILED));
    }
    let policy = profile::resolve(&merged, vec!["/bin/true".to_string()], &session::invoker())?;
    let host = sandbox.host_context(&policy, crate::run::lock_dir())?;
    let target = sandbox.target();
    match enter_sandbox_as_its_user(&policy, &host, target) {
        Ok(()) => {}
        Err(AttachError::NotRunning(_)) => {
            crate::say(&format!("sandbox {} is not running", args.name));
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    }
    // From here on, this process is inside the sandbox, with its command's rights.
    let done = match args.op {
        FilesOp::Get => get(&args.path),
        FilesOp::Put => put(&args.path, mode),
        FilesOp::Rm => remove(&args.path),
    };
    Ok(match done {
        Ok(()) => 0,
        Err(e) => {
            crate::say(&format!("{}: {}", short(&args.path), describe(&e)));
            exit_status_of(&e)
        }
    })
}

fn short(path: &str) -> String {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    if end < path.len() {
        format!("{}…", &path[..end])
    } else {
        path.to_string()
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied (as the sandbox's user)".to_string(),
        _ => e.to_string(),
    }
}

fn exit_status_of(e: &io::Error) -> i32 {
    match e.raw_os_error() {
        Some(libc::ENOENT) => EXIT_NOT_FOUND,
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => EXIT_DENIED,
        Some(libc::EISDIR | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP | libc::EINVAL) => EXIT_WRONG_KIND,
        _ => 1,
    }
}

fn kind_of(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "other"
    }
}

fn get(path: &str) -> io::Result<()> {
    // Opened before it is looked at, non-blocking: a FIFO the sandbox put there (or swapped in after a check)
    // cannot make this process wait for a writer; what the descriptor is, is then read from it.
    let file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if meta.is_dir() {
        let mut entries = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            // The entry itself, not what a symlink points to.
            let Ok(m) = entry.metadata() else { continue };
            entries.push(serde_json::json!({
                "name": entry.file_name().to_string_lossy(),
                "type": kind_of(&m.file_type()),
                "size": m.len(),
                "mode": m.mode() & 0o7777,
            }));
        }
        entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let header = serde_json::json!({ "type": "dir", "entries": entries });
        writeln!(out, "{header}")?;
        return out.flush();
    }
    if !meta.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut file = file;
    let header = serde_json::json!({ "type": "file", "size": meta.len(), "mode": meta.mode() & 0o7777 });
    writeln!(out, "{header}")?;
    io::copy(&mut file, &mut out)?;
    out.flush()
}

fn put(path: &str, mode: Option<u32>) -> io::Result<()> {
    if let Some(parent) = std::path::Path::new(path).parent() {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
    }
    // Non-blocking, for the reason `get` gives (a FIFO without a reader is then ENXIO, not a wait), and only a
    // regular file is written.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode.unwrap_or(0o644))
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if let Some(m) = mode {
        // An existing file keeps its mode on open; asked for one, it gets it. (A new one's was cut by the umask.)
        file.set_permissions(fs::Permissions::from_mode(m))?;
    }
    let mut input = io::stdin().lock();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
    }
    file.sync_all()
}

fn remove(path: &str) -> io::Result<()> {
    if path == "/" {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        // remove_dir_all never follows symlinks.
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}
