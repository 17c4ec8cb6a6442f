//! `airlock cp NAME:PATH HOSTPATH` and `airlock cp HOSTPATH NAME:PATH`: files and directories out of and into a
//! running sandbox (one created by `airlock create`).
//!
//! The sandbox side is always `airlock __files` (see `files_cmd`): a process that enters the sandbox and touches
//! the path with its command's rights, inside its own root, so a symlink the sandbox planted resolves inside the
//! sandbox, never on the host. The host side is this process, with the invoker's rights, which never follows a
//! link the sandbox made:
//! - out: a directory's entries are read one by one (`__files get`); regular files are written with `O_NOFOLLOW`,
//!   directories made fresh; symlinks and special files inside the sandbox are not copied (they are named on
//!   stderr), and names come from the sandbox's directory listing, one component each.
//! - in: the host tree is walked without following symlinks (they are named and skipped); each regular file is
//!   written by `__files put` (its mode kept; parent directories made).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use policy::names::validate_sandbox_name;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// `NAME:PATH` (inside the running sandbox NAME; PATH absolute) or a host path.
    pub source: String,
    /// `NAME:PATH` or a host path: exactly one of the two names a sandbox.
    pub destination: String,
}

/// One side of a copy.
enum Side {
    Sandbox { name: String, path: String },
    Host(PathBuf),
}

fn side(text: &str) -> Result<Side> {
    // `NAME:PATH` with a valid name and an absolute path; anything else is a host path (`./a:b` included).
    if let Some((name, path)) = text.split_once(':') {
        if validate_sandbox_name(name).is_ok() && path.starts_with('/') {
            return Ok(Side::Sandbox { name: name.to_owned(), path: path.to_owned() });
        }
    }
    if text.is_empty() {
        bail!("cp: an empty path");
    }
    Ok(Side::Host(PathBuf::from(text)))
}

pub fn cp(args: &CpArgs) -> Result<i32> {
    match (side(&args.source)?, side(&args.destination)?) {
        (Side::Sandbox { name, path }, Side::Host(host)) => copy_out(&name, &path, &host),
        (Side::Host(host), Side::Sandbox { name, path }) => copy_in(&host, &name, &path),
        _ => {
            crate::say(
                "cp: exactly one of SOURCE and DESTINATION is NAME:/path (a running sandbox's), the other a host path",
            );
            Ok(i32::from(crate::EXIT_USAGE))
        }
    }
}

/// The `airlock __files OP NAME PATH` child for `op`.
fn files_command(op: &str, name: &str, path: &str) -> Result<Command> {
    let exe = std::env::current_exe().context("cannot find the airlock binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["__files", op, name, path]).stderr(Stdio::piped());
    Ok(cmd)
}

/// What `__files get` said on its first line.
#[derive(serde::Deserialize)]
struct Header {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    mode: u32,
    #[serde(default)]
    entries: Vec<Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

fn copy_out(name: &str, path: &str, host: &Path) -> Result<i32> {
    // Into an existing directory: under the source's last name, as cp does.
    let target = match fs::symlink_metadata(host) {
        Ok(m) if m.is_dir() => host.join(Path::new(path).file_name().unwrap_or_else(|| std::ffi::OsStr::new("root"))),
        _ => host.to_path_buf(),
    };
    let mut skipped = Vec::new();
    get_tree(name, path, &target, &mut skipped)?;
    for s in &skipped {
        crate::say(&format!("cp: {s} is not a file or a directory: not copied"));
    }
    Ok(0)
}

/// Copies `path` (inside) to `target` (on the host): a file's bytes, or a directory's entries, recursively.
fn get_tree(name: &str, path: &str, target: &Path, skipped: &mut Vec<String>) -> Result<()> {
    let mut child = files_command("get", name, path)?.stdout(Stdio::piped()).stdin(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("cp: no output from the sandbox"))?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let header: Option<Header> = serde_json::from_str(line.trim_end()).ok();
    let result = match header {
        Some(h) if h.kind == "file" => write_host_file(&mut reader, target, h.mode),
        Some(h) if h.kind == "dir" => {
            // The listing is read whole before anything is fetched (the child then exits).
            std::io::copy(&mut reader, &mut std::io::sink())?;
            make_host_dir(target)?;
            for entry in &h.entries {
                // One component from the sandbox's listing: never `/`, `.` or `..`.
                if entry.name.is_empty() || entry.name.contains('/') || entry.name == "." || entry.name == ".." {
                    continue;
                }
                let inside = format!("{}/{}", path.trim_end_matches('/'), entry.name);
                match entry.kind.as_str() {
                    "file" | "dir" => get_tree(name, &inside, &target.join(&entry.name), skipped)?,
                    _ => skipped.push(inside),
                }
            }
            Ok(())
        }
        _ => Ok(()),
    };
    let out = child.wait_with_output()?;
    if !out.status.success() {
        // `__files` said why, as one `airlock:` line.
        let said = String::from_utf8_lossy(&out.stderr);
        bail!("cp: {}", said.trim().trim_start_matches("airlock: "));
    }
    result
}

/// A new or replaced regular file on the host; a symlink at `target` is not followed (refused).
fn write_host_file(reader: &mut impl Read, target: &Path, mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(target)
        .with_context(|| format!("cp: cannot write {}", target.display()))?;
    std::io::copy(reader, &mut file).with_context(|| format!("cp: cannot write {}", target.display()))?;
    Ok(())
}

/// A directory on the host (0755 less the umask): made, or one that is there already (a symlink there is
/// refused, not followed).
fn make_host_dir(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("cp: {} exists and is not a directory", target.display()),
        Err(_) => fs::DirBuilder::new()
            .mode(0o755)
            .create(target)
            .with_context(|| format!("cp: cannot make {}", target.display())),
    }
}

fn copy_in(host: &Path, name: &str, path: &str) -> Result<i32> {
    let meta = fs::symlink_metadata(host).with_context(|| format!("cp: {}", host.display()))?;
    let mut skipped = Vec::new();
    // Into the sandbox under the same name when PATH ends with `/`, else at PATH.
    let dest = match path.ends_with('/') {
        true => {
            let unnamed = if meta.is_dir() { "dir" } else { "file" };
            format!("{path}{}", host.file_name().and_then(|n| n.to_str()).unwrap_or(unnamed))
        }
        false => path.to_owned(),
    };
    if meta.is_dir() {
        put_tree(host, name, &dest, &mut skipped)?;
    } else if meta.is_file() {
        put_file(host, name, &dest, meta.permissions().mode())?;
    } else {
        bail!("cp: {} is not a file or a directory", host.display());
    }
    for s in &skipped {
        crate::say(&format!("cp: {s} is a symlink or a special file: not copied"));
    }
    Ok(0)
}

fn put_tree(dir: &Path, name: &str, inside: &str, skipped: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir).with_context(|| format!("cp: {}", dir.display()))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
            skipped.push(path.display().to_string());
            continue;
        };
        let meta = fs::symlink_metadata(&path)?;
        let target = format!("{}/{file_name}", inside.trim_end_matches('/'));
        if meta.is_dir() {
            put_tree(&path, name, &target, skipped)?;
        } else if meta.is_file() {
            put_file(&path, name, &target, meta.permissions().mode())?;
        } else {
            skipped.push(path.display().to_string());
        }
    }
    Ok(())
}

fn put_file(host: &Path, name: &str, inside: &str, mode: u32) -> Result<()> {
    let mut source = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(host)
        .with_context(|| format!("cp: {}", host.display()))?;
    let mut cmd = files_command("put", name, inside)?;
    cmd.arg(format!("--mode={:o}", mode & 0o777)).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::copy(&mut source, &mut stdin)?;
        stdin.flush()?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        bail!("cp: {}", said.trim().trim_start_matches("airlock: "));
    }
    Ok(())
}
