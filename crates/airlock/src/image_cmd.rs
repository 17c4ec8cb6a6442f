//! `airlock image pull | import | ls | inspect | rm | prune`: the image store of this machine's state directory
//! (crate `image`, under `$STATE/images/`); `pull` fetches over the OCI distribution API (crate `registry`) into
//! the store's pull cache, an OCI image layout, and imports from there.

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use image::store::short_id;
use image::{ImageRecord, ImageStore};
use serde_json::json;

use crate::state;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry (OCI distribution API): `alpine:3.20`, `ghcr.io/o/i:tag`, `host:5000/x/y`.
    /// Credentials come from `~/.docker/config.json` (`$DOCKER_CONFIG`).
    Pull {
        #[arg(value_name = "REF")]
        reference: String,
        /// Plain HTTP to a registry that is not on a loopback address (loopback ones may always use it).
        #[arg(long)]
        insecure: bool,
    },
    /// Import an image: a `docker save` tarball, or an OCI image layout (a directory or a tar of one).
    Import {
        /// The tarball or directory.
        #[arg(value_name = "FILE|DIR")]
        path: PathBuf,
        /// The reference to give it (`name:tag`), instead of the one the file carries.
        #[arg(long, value_name = "REF")]
        tag: Option<String>,
    },
    /// The images in the store.
    Ls {
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One image's record as JSON: references, config, layers (with their unpacked directories), users.
    Inspect {
        /// A reference (`alpine:3.20`), an image id or a digest prefix.
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Remove references (an image goes with its last one, unless a sandbox uses it); `prune` frees the space.
    Rm {
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
    },
    /// Free what nothing uses: untagged images no sandbox uses, layers and blobs no image uses.
    Prune,
}

fn open_store() -> Result<ImageStore> {
    Ok(ImageStore::open(state::state().path())?)
}

/// `airlock image ...` but `pull`, which is airlock-server's ([`pull_command`]): the registry client (an HTTP
/// and TLS stack) stays out of the executable that runs sandboxes.
pub fn run(cmd: ImageCommand) -> Result<i32> {
    let store = open_store()?;
    match cmd {
        ImageCommand::Pull { .. } => bail!("internal error: image pull is {}'s", crate::siblings::SERVER),
        ImageCommand::Import { path, tag } => {
            let record = store.import(&path, tag.as_deref())?;
            let skipped: usize = record.layers.iter().map(|l| l.skipped.len()).sum();
            if skipped > 0 {
                crate::say(&format!(
                    "{skipped} device node(s) or FIFO(s) in the image were skipped (see `airlock image inspect`)"
                ));
            }
            match record.references.first() {
                Some(reference) => println!("imported {reference} ({})", short_id(&record.id)),
                None => println!("imported {} (untagged: name it with --tag)", record.id),
            }
            Ok(0)
        }
        ImageCommand::Ls { json } => ls(&store, json),
        ImageCommand::Inspect { reference } => {
            let record = store.inspect(&reference)?;
            let users = store.users(&record.id)?;
            let dirs = record.layers.iter().map(|l| store.layer_dir(&l.diff_id)).collect::<Result<Vec<_>, _>>()?;
            let mut doc = serde_json::to_value(&record)?;
            doc["layer_dirs"] = json!(dirs);
            doc["used_by"] = json!(users);
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(0)
        }
        ImageCommand::Rm { references } => {
            for reference in references {
                let report = store.remove(&reference)?;
                for r in &report.untagged {
                    println!("untagged {r}");
                }
                if report.deleted {
                    println!("deleted {}", report.id);
                }
            }
            Ok(0)
        }
        ImageCommand::Prune => {
            // The pull cache holds only what a pull may reuse: all of it goes (a pull running now holds its lock
            // and keeps it).
            let cache = pull_cache(&store);
            if cache.exists() {
                if let Some(_lock) = runtime::host::try_lock_file(&cache.join(".lock"))? {
                    let _ = std::fs::remove_dir_all(cache.join("blobs"));
                    let _ = std::fs::remove_file(cache.join("index.json"));
                }
            }
            let report = store.prune()?;
            for id in &report.images {
                println!("deleted {id}");
            }
            println!("freed {} layer(s), {} blob(s), {}", report.layers, report.blobs, human_size(report.bytes));
            Ok(0)
        }
    }
}

/// The pull cache: an OCI image layout the registry crate fills (blobs kept for the next pull, partial downloads
/// resumed) and the store imports from. `prune` empties it.
fn pull_cache(store: &ImageStore) -> PathBuf {
    store.root().join("pull-cache")
}

/// `airlock image pull` (in airlock-server).
pub fn pull_command(cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Pull { reference, insecure } => pull(&open_store()?, &reference, insecure),
        other => run(other),
    }
}

fn pull(store: &ImageStore, reference: &str, insecure: bool) -> Result<i32> {
    let cache = pull_cache(store);
    std::fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let options = registry::PullOptions { insecure, ..registry::PullOptions::default() };
    let mut shown = PullProgress::new(std::io::stderr().is_terminal());
    let pulled = registry::pull_to_oci_layout(reference, &cache, &options, &mut |p| shown.show(p))?;
    shown.finish();
    let record = store.import_oci_layout(&cache, Some(&pulled.reference))?;
    println!("pulled {} ({})", pulled.reference, short_id(&record.id));
    Ok(0)
}

/// The pull's progress on stderr: a bar per layer, redrawn in place, on a terminal; a line per layer otherwise.
struct PullProgress {
    terminal: bool,
    layers: usize,
    /// Whether the cursor is on a bar line that the next event redraws.
    drawing: bool,
}

impl PullProgress {
    fn new(terminal: bool) -> PullProgress {
        PullProgress { terminal, layers: 0, drawing: false }
    }

    fn show(&mut self, event: registry::Progress) {
        use registry::Progress;
        match event {
            Progress::Resolved { reference, layers, total_size, .. } => {
                self.layers = layers;
                eprintln!("{reference}: {layers} layer(s), {}", human_size(total_size));
            }
            Progress::LayerStarted { .. } => {}
            Progress::LayerBytes { index, digest, done, size } => {
                if self.terminal {
                    let width = 30usize;
                    let filled = (done.min(size) * width as u64).checked_div(size).map_or(width, |f| f as usize);
                    eprint!(
                        "\r  layer {}/{} {} [{}{}] {} / {}   ",
                        index + 1,
                        self.layers,
                        short_digest(&digest),
                        "#".repeat(filled),
                        " ".repeat(width - filled),
                        human_size(done),
                        human_size(size)
                    );
                    self.drawing = true;
                }
            }
            Progress::LayerDone { index, digest, size, reused } => {
                if self.drawing {
                    eprint!("\r");
                    self.drawing = false;
                }
                let how = if reused { "already here" } else { "done" };
                eprintln!(
                    "  layer {}/{} {} {how} ({})",
                    index + 1,
                    self.layers,
                    short_digest(&digest),
                    human_size(size)
                );
            }
        }
    }

    fn finish(&mut self) {
        if self.drawing {
            eprintln!();
            self.drawing = false;
        }
    }
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn ls(store: &ImageStore, json_output: bool) -> Result<i32> {
    let records = store.list()?;
    if json_output {
        println!("{}", serde_json::to_string_pretty(&json!({ "images": records }))?);
        return Ok(0);
    }
    if records.is_empty() {
        println!("no images");
        return Ok(0);
    }
    println!("{:<48} {:<12} {:>6} {:>10}", "REFERENCE", "ID", "LAYERS", "SIZE");
    for record in &records {
        for reference in names(record) {
            println!(
                "{:<48} {:<12} {:>6} {:>10}",
                reference,
                short_id(&record.id),
                record.layers.len(),
                human_size(record.size)
            );
        }
    }
    Ok(0)
}

/// The references of an image in their familiar form (`busybox:latest`), or `<none>`.
fn names(record: &ImageRecord) -> Vec<String> {
    if record.references.is_empty() {
        return vec!["<none>".to_string()];
    }
    record
        .references
        .iter()
        .map(|r| image::Reference::parse(r).map(|p| p.familiar()).unwrap_or_else(|_| r.clone()))
        .collect()
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS.get(unit).copied().unwrap_or("B"))
    }
}

/// What `--image REF` gives a sandbox: the bottom of its profile (the image's layers as a writable root, its
/// Env, WorkingDir and User; profiles and flags merged over it win), the command to run, and the image's id.
pub struct ImageBase {
    pub profile: policy::profile::Profile,
    pub command: Vec<String>,
    pub id: String,
}

/// Resolves `reference` in this machine's store into an [`ImageBase`]. `command` is the one given on the command
/// line: it replaces the image's Cmd and follows its Entrypoint, as `docker run IMAGE COMMAND` does; without one
/// the image's Entrypoint and Cmd run (empty when it has neither). `workspace_given`: the workspace stays the working directory then.
pub fn image_base(reference: &str, command: &[String], workspace_given: bool) -> Result<ImageBase> {
    let store = open_store()?;
    let image = store.resolve(reference).map_err(|e| anyhow::anyhow!("--image {reference}: {e}"))?;
    let mut profile = policy::profile::Profile::default();
    profile.filesystem.rootfs_layers = image.layers.iter().map(|l| l.display().to_string()).collect();
    profile.filesystem.writable_root = Some(true);
    for var in &image.config.env {
        match var.split_once('=') {
            Some((key, value)) => {
                profile.env.set.insert(key.to_string(), value.to_string());
            }
            None => bail!("--image {reference}: its config's Env entry {var:?} is not KEY=VALUE"),
        }
    }
    if !workspace_given {
        profile.process.cwd = image.config.working_dir.clone().filter(|d| !d.is_empty());
    }
    // An image without a User runs as its root, rootless too (as root the default is root already; rootless it
    // would be the invoker's uid, which means nothing in the image's passwd), as `docker run` and `podman run` do.
    profile.process.user = Some(match image.config.user.as_deref().filter(|u| !u.is_empty()) {
        Some(user) => numeric_user(user, &image.layers).map_err(|e| anyhow::anyhow!("--image {reference}: {e}"))?,
        None => "0:0".to_owned(),
    });
    let rest = if command.is_empty() { &image.config.cmd } else { command };
    let command: Vec<String> = image.config.entrypoint.iter().chain(rest).cloned().collect();
    Ok(ImageBase { profile, command, id: image.id })
}

/// The image config's `User` (`name`, `uid`, `name:group`, `uid:gid`) as the `UID:GID` airlock takes: names are
/// looked up in the image's own `/etc/passwd` and `/etc/group` (the topmost layer that has the file).
fn numeric_user(user: &str, layers: &[PathBuf]) -> std::result::Result<String, String> {
    let (who, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let topmost = |file: &str| -> Option<String> {
        layers.iter().rev().map(|l| l.join(file)).find(|p| p.is_file()).and_then(|p| std::fs::read_to_string(p).ok())
    };
    let passwd = topmost("etc/passwd");
    let (uid, mut gid) = match who.parse::<u32>() {
        // A number: its primary group from the image's passwd, else the same number.
        Ok(uid) => {
            (uid, id_entry(passwd.as_deref(), |f| f[2].parse().ok() == Some(uid)).and_then(|e| e.1).unwrap_or(uid))
        }
        Err(_) => match id_entry(passwd.as_deref(), |f| f[0] == who) {
            Some((uid, Some(gid))) => (uid, gid),
            _ => return Err(format!("its User {who:?} is not in its /etc/passwd")),
        },
    };
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => id_entry(topmost("etc/group").as_deref(), |f| f[0] == group)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("its group {group:?} is not in its /etc/group"))?,
        };
    }
    Ok(format!("{uid}:{gid}"))
}

/// The third field (the id) and the fourth as a number (passwd's primary gid; `None` in the group file, where it
/// lists members) of the first line of a passwd- or group-format `text` that `matches` (its fields split on `:`,
/// at least four).
fn id_entry(text: Option<&str>, matches: impl Fn(&[&str]) -> bool) -> Option<(u32, Option<u32>)> {
    text?.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && matches(&fields))
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok())))
            .flatten()
    })
}

/// Records that the kept sandbox `name` uses the image `id`, so `image rm` and `prune` keep it while the sandbox
/// exists.
pub fn mark_in_use(id: &str, name: &str) -> Result<()> {
    Ok(open_store()?.mark_in_use(id, name)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_and_groups_resolve_in_the_images_own_files() {
        let dir = std::env::temp_dir().join(format!("airlock-image-user-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
            .unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let layers = [dir.clone()];
        assert_eq!(numeric_user("app", &layers).unwrap(), "1000:1001");
        assert_eq!(numeric_user("1000", &layers).unwrap(), "1000:1001");
        assert_eq!(numeric_user("4242", &layers).unwrap(), "4242:4242");
        assert_eq!(numeric_user("app:staff", &layers).unwrap(), "1000:50");
        assert_eq!(numeric_user("app:7", &layers).unwrap(), "1000:7");
        assert!(numeric_user("nobody-here", &layers).is_err());
        assert!(numeric_user("app:nogroup", &layers).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
