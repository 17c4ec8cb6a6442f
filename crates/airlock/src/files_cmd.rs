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
//! A VM sandbox (`--isolation vm`): its files are in the guest. This process sends the operation through the
//! supervisor's socket (`session::vm::files`); the guest's agent does it in a child that enters the held sandbox
//! as its user in the same way, with the same code (`session::files`), and this process checks what the guest
//! sends back (the guest is not trusted) before it passes it on.
//!
//! Output, for the daemon: `get` prints one JSON line (`{"type":"file","size","mode"}` then the file's bytes, or
//! `{"type":"dir","entries":[{"name","type","size","mode"}]}`); `put` copies its standard input into the file
//! (parent directories created); `rm` removes a file, a symlink or a whole directory. Exit status: 0 done, 3 no
//! such file, 4 permission denied (or a read-only filesystem), 5 not possible on that kind of file (a directory
//! to write, a file as a parent), 1 the sandbox is not running or another failure (a VM's guest that broke the
//! protocol: `airlock: vm: ...`), 125 the sandbox could not be entered.

use anyhow::{anyhow, Result};
use clap::{Args, ValueEnum};
use policy::names::validate_sandbox_name;
use policy::profile;
use runtime::attach::{enter_sandbox_as_its_user, AttachError};
use session::files::{FileOp, FileRequest, EXIT_WRONG_KIND, MAX_PATH};
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

pub fn files(args: FilesArgs) -> Result<i32> {
    validate_sandbox_name(&args.name).map_err(|e| anyhow!("{e}"))?;
    if !args.path.starts_with('/') || args.path.len() > MAX_PATH {
        crate::say(&format!(
            "path {:?}: must be absolute and at most {MAX_PATH} bytes",
            session::files::short(&args.path)
        ));
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
    let policy = profile::resolve(&merged, vec!["/bin/true".to_string()], &session::invoker())?;
    let request = FileRequest {
        op: match args.op {
            FilesOp::Get => FileOp::Get,
            FilesOp::Put => FileOp::Put,
            FilesOp::Rm => FileOp::Rm,
        },
        path: args.path.clone(),
        mode,
    };
    if crate::run::vm_isolation(&merged)? {
        // Through the supervisor into the guest, where the guest's agent enters the held sandbox.
        let vm = session::vm::held::HeldVm { socket: sandbox.dir.path().join(session::vm::held::SOCKET_NAME) };
        return match vm.files_in_vm(&policy, &request) {
            Ok(code) => Ok(code),
            Err(e) => {
                crate::say(&session::error_chain(&e));
                Ok(1)
            }
        };
    }
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
    Ok(session::files::perform(&request, false))
}
