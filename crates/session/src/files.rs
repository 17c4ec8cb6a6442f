//! One file operation of `airlock __files` (the daemon's files API, `airlock cp`), done by a process that has
//! already entered the sandbox as its user (`runtime::attach::enter_sandbox_as_its_user`): on the host for a
//! namespace sandbox, in the guest for a VM sandbox (`vm::held_guest`), so both follow the same rules with the
//! same code.
//!
//! Output: `get` prints one JSON line (`{"type":"file","size","mode"}` then the file's bytes, or
//! `{"type":"dir","entries":[{"name","type","size","mode"}]}`); `put` copies its standard input into the file
//! (parent directories created); `rm` removes a file, a symlink or a whole directory. Exit status: 0 done,
//! [`EXIT_NOT_FOUND`], [`EXIT_DENIED`] (or a read-only filesystem), [`EXIT_WRONG_KIND`] (a directory to write, a
//! file as a parent), 1 another failure, 125 the sandbox could not be entered.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};

/// Exit status: no such file.
pub const EXIT_NOT_FOUND: i32 = 3;
/// Exit status: permission denied, as the sandbox's user (or a read-only filesystem).
pub const EXIT_DENIED: i32 = 4;
/// Exit status: not possible on that kind of file.
pub const EXIT_WRONG_KIND: i32 = 5;
/// The longest path taken (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Most bytes of a file that says it is empty but is not (a kernel pseudo-file of `/proc` or `/sys`, whose size
/// is known only once it is read) sent where the header must give the exact size (`exact_size`).
pub const MAX_UNSIZED_FILE: u64 = 4 << 20;

/// The operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Get,
    Put,
    Rm,
}

/// One operation on one path, as `airlock __files` was asked (and as it travels to a VM's guest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRequest {
    pub op: FileOp,
    /// Absolute, inside the sandbox, at most [`MAX_PATH`] bytes.
    pub path: String,
    /// With `put`: the file's mode (at most 0o7777).
    pub mode: Option<u32>,
}

impl FileRequest {
    /// `None` when the request is one `__files` refuses (the guest checks what the host sent, too).
    pub fn checked(self) -> Option<FileRequest> {
        let path_ok = self.path.starts_with('/') && self.path.len() <= MAX_PATH && !self.path.contains('\0');
        (path_ok && self.mode.is_none_or(|m| m <= 0o7777)).then_some(self)
    }
}

/// Does `request` in this process (already inside the sandbox) with standard input and output; on failure
/// prints one `airlock:` line and returns the exit status. `exact_size`: a file's bytes are exactly the size its
/// header says (the size at the start; a file that shrank while read is a failure, one that grew is cut), for a
/// reader that checks them (a VM's host, which does not trust the guest).
pub fn perform(request: &FileRequest, exact_size: bool) -> i32 {
    let done = match request.op {
        FileOp::Get => get(&request.path, exact_size),
        FileOp::Put => put(&request.path, request.mode),
        FileOp::Rm => remove(&request.path),
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            crate::say(&format!("{}: {}", short(&request.path), describe(&e)));
            exit_status_of(&e)
        }
    }
}

/// `path`, cut to 200 bytes for a message.
pub fn short(path: &str) -> String {
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

fn get(path: &str, exact_size: bool) -> io::Result<()> {
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
    if exact_size && meta.len() == 0 {
        // Size 0 is what `/proc` and `/sys` files report whatever they hold: read whole (bounded), the header
        // then says what was read. (A really empty file reads as empty.)
        let mut bytes = Vec::new();
        let mut file = file;
        (&mut file).take(MAX_UNSIZED_FILE + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_UNSIZED_FILE {
            return Err(io::Error::other(format!(
                "the file says it is empty but holds more than {} MiB",
                MAX_UNSIZED_FILE >> 20
            )));
        }
        let header = serde_json::json!({ "type": "file", "size": bytes.len(), "mode": meta.mode() & 0o7777 });
        writeln!(out, "{header}")?;
        out.write_all(&bytes)?;
        return out.flush();
    }
    let header = serde_json::json!({ "type": "file", "size": meta.len(), "mode": meta.mode() & 0o7777 });
    writeln!(out, "{header}")?;
    if exact_size {
        let copied = io::copy(&mut file.take(meta.len()), &mut out)?;
        if copied < meta.len() {
            out.flush()?;
            return Err(io::Error::other("the file shrank while it was read"));
        }
    } else {
        let mut file = file;
        io::copy(&mut file, &mut out)?;
    }
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
