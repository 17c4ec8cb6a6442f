//! An OCI runtime bundle's `config.json` (runtime-spec 1.x) translated into an airlock [`Profile`] and the
//! process to run, with a note for every part of the bundle airlock does not take as asked.
//!
//! airlock keeps its own protections whatever the bundle says: its user namespace and id mapping, its seccomp
//! filter, its own namespaces (a bundle's namespace paths are not joined; no namespace is shared with the host),
//! Landlock where it applies, its own `/proc`, `/sys`, `/dev` and `/tmp`. What the bundle asks beyond that is
//! refused, and said in a [`Note`] (the command writes them to runc's `--log`). The annotations
//! `dev.airlock.net.allow`, `dev.airlock.profile` and `dev.airlock.audit` say what OCI cannot: the network allow
//! list (through airlock's gateway), a profile to start from, and the audit log.
//!
//! Only the fields airlock reads are modelled; the rest of the document is accepted and ignored or noted.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use policy::profile::Profile;
use serde::Deserialize;

/// The annotation naming the network allow list: comma-separated `DOMAIN[:PORT]`.
pub const ANNOTATION_NET_ALLOW: &str = "dev.airlock.net.allow";
/// The annotation naming a profile (built-in name or file) the bundle is layered over.
pub const ANNOTATION_PROFILE: &str = "dev.airlock.profile";
/// The annotation turning the audit log on (`true`).
pub const ANNOTATION_AUDIT: &str = "dev.airlock.audit";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig { path: PathBuf, source: std::io::Error },
    #[error("{} is not an OCI runtime config: {source}", path.display())]
    ParseConfig { path: PathBuf, source: serde_json::Error },
    #[error("the bundle's config.json has no process")]
    NoProcess,
    #[error("the bundle's process has no args")]
    NoArgs,
    #[error("the bundle's config.json has no root")]
    NoRoot,
    #[error("the bundle's process.env entry {entry:?} is not KEY=VALUE")]
    BadEnv { entry: String },
    #[error("annotation {key}={value:?}: {reason}")]
    BadAnnotation { key: &'static str, value: String, reason: &'static str },
}

/// The parts of the runtime spec's `config.json` airlock reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub oci_version: String,
    pub root: Option<Root>,
    pub process: Option<Process>,
    pub hostname: Option<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    pub linux: Option<Linux>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub hooks: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Root {
    pub path: String,
    #[serde(default)]
    pub readonly: bool,
}

/// `process` in `config.json`, and the whole of an `exec --process` file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    pub capabilities: Option<serde_json::Value>,
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Mount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Linux {
    pub resources: Option<Resources>,
    pub cgroups_path: Option<String>,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    pub seccomp: Option<serde_json::Value>,
    #[serde(default)]
    pub devices: Vec<serde_json::Value>,
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Resources {
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
    pub pids: Option<Pids>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Memory {
    pub limit: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Cpu {
    pub quota: Option<i64>,
    pub period: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pids {
    pub limit: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct Namespace {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: Option<String>,
}

/// How much a note matters: `Info` for what airlock does its own way with the same effect, `Warn` for what the
/// bundle asked and does not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warning",
        }
    }
}

/// One part of the bundle airlock handles its own way or refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub message: String,
}

/// A bundle as airlock runs it.
#[derive(Debug)]
pub struct Translation {
    /// The bundle's settings as a profile layer (to merge over the default or the annotated profile).
    pub profile: Profile,
    /// `dev.airlock.profile`: the profile the layer goes over (`None`: the default one).
    pub base_profile: Option<String>,
    /// `dev.airlock.audit=true`.
    pub audit: bool,
    /// The container's process.
    pub process: ProcessPlan,
    /// The root directory (absolute: a relative `root.path` is the bundle's).
    pub rootfs: PathBuf,
    pub notes: Vec<Note>,
}

/// A process to run in the container (the bundle's, or an `exec --process` file's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, in order.
    pub env: Vec<(String, String)>,
    /// `None`: airlock's default.
    pub cwd: Option<String>,
    /// `UID:GID`.
    pub user: String,
    pub terminal: bool,
}

/// Reads `BUNDLE/config.json`.
pub fn read_spec(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    read_json(&path)
}

/// Reads an `exec --process` file.
pub fn read_process(path: &Path) -> Result<Process, OciError> {
    read_json(path)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, OciError> {
    let text = std::fs::read(path).map_err(|source| OciError::ReadConfig { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&text).map_err(|source| OciError::ParseConfig { path: path.to_path_buf(), source })
}

/// The process to run, and notes on what of it airlock does not apply.
pub fn process_plan(process: &Process, notes: &mut Vec<Note>) -> Result<ProcessPlan, OciError> {
    if process.args.is_empty() {
        return Err(OciError::NoArgs);
    }
    let mut env = Vec::new();
    for entry in &process.env {
        let (key, value) = entry.split_once('=').ok_or_else(|| OciError::BadEnv { entry: entry.clone() })?;
        env.push((key.to_string(), value.to_string()));
    }
    if !process.user.additional_gids.is_empty() && process.user.additional_gids.iter().any(|g| *g != process.user.gid) {
        notes.push(warn("process.user.additionalGids: refused (airlock sets no supplementary groups)"));
    }
    if process.capabilities.is_some() {
        notes.push(info(
            "process.capabilities: airlock grants its own capability set (none, or its package-manager set for root \
             with a writable root), never more",
        ));
    }
    if process.apparmor_profile.is_some() || process.selinux_label.is_some() {
        notes.push(info(
            "process.apparmorProfile/selinuxLabel: not applied (airlock confines with seccomp and Landlock)",
        ));
    }
    Ok(ProcessPlan {
        args: process.args.clone(),
        env,
        cwd: (!process.cwd.is_empty()).then(|| process.cwd.clone()),
        user: format!("{}:{}", process.user.uid, process.user.gid),
        terminal: process.terminal,
    })
}

fn info(message: &str) -> Note {
    Note { level: Level::Info, message: message.to_string() }
}

fn warn(message: &str) -> Note {
    Note { level: Level::Warn, message: message.to_string() }
}

/// The mount types airlock provides itself, at the places it provides them.
const OWN_MOUNTS: &[&str] = &["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"];
/// Places airlock mounts its own filesystems on, whatever the bundle mounts there.
const OWN_PLACES: &[&str] = &["/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys/fs/cgroup", "/tmp"];

/// Translates a bundle (its `config.json` already read) into what airlock runs.
pub fn translate(spec: &Spec, bundle: &Path) -> Result<Translation, OciError> {
    let mut notes = Vec::new();
    let mut p = Profile::default();
    let root = spec.root.as_ref().ok_or(OciError::NoRoot)?;
    let rootfs = bundle.join(&root.path);
    p.filesystem.rootfs = Some(rootfs.display().to_string());
    p.filesystem.writable_root = Some(!root.readonly);

    let process = spec.process.as_ref().ok_or(OciError::NoProcess)?;
    let plan = process_plan(process, &mut notes)?;
    for (key, value) in &plan.env {
        p.env.set.insert(key.clone(), value.clone());
    }
    p.process.user = Some(plan.user.clone());
    p.process.cwd = plan.cwd.clone();
    p.process.hostname = spec.hostname.clone().filter(|h| !h.is_empty());
    rlimits(process, &mut p, &mut notes);
    mounts(spec, &mut p, &mut notes);
    if let Some(linux) = &spec.linux {
        linux_section(linux, &mut p, &mut notes);
    }
    if spec.hooks.as_ref().is_some_and(|h| h.as_object().is_some_and(|o| !o.is_empty())) {
        notes.push(warn("hooks: refused (airlock runs no host commands for a container)"));
    }

    let mut base_profile = None;
    let mut audit = false;
    if let Some(allow) = spec.annotations.get(ANNOTATION_NET_ALLOW) {
        let list: Vec<String> = allow.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if list.is_empty() {
            return Err(OciError::BadAnnotation {
                key: ANNOTATION_NET_ALLOW,
                value: allow.clone(),
                reason: "expected comma-separated DOMAIN[:PORT]",
            });
        }
        p.network.mode = Some("allow".to_string());
        p.network.allow = list;
    }
    if let Some(name) = spec.annotations.get(ANNOTATION_PROFILE) {
        base_profile = Some(name.clone());
    }
    if let Some(value) = spec.annotations.get(ANNOTATION_AUDIT) {
        audit = match value.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(OciError::BadAnnotation {
                    key: ANNOTATION_AUDIT,
                    value: value.clone(),
                    reason: "expected true or false",
                })
            }
        };
    }
    Ok(Translation { profile: p, base_profile, audit, process: plan, rootfs, notes })
}

fn rlimits(process: &Process, p: &mut Profile, notes: &mut Vec<Note>) {
    for limit in &process.rlimits {
        // airlock sets one value per limit, soft and hard alike: the soft one, the one the process lives under.
        match limit.kind.as_str() {
            "RLIMIT_NOFILE" => p.limits.nofile = Some(limit.soft),
            "RLIMIT_FSIZE" => p.limits.fsize = Some(limit.soft.to_string()),
            other => notes.push(warn(&format!("process.rlimits {other}: refused (airlock sets NOFILE and FSIZE)"))),
        }
    }
}

fn mounts(spec: &Spec, p: &mut Profile, notes: &mut Vec<Note>) {
    for mount in &spec.mounts {
        let kind = mount.kind.as_deref().unwrap_or("");
        let is_bind = kind == "bind" || mount.options.iter().any(|o| o == "bind" || o == "rbind");
        let dest = mount.destination.as_str();
        if !is_bind && (OWN_MOUNTS.contains(&kind) || OWN_PLACES.contains(&dest)) {
            // containerd's defaults: airlock's own /proc, /sys, /dev, /dev/pts, /dev/shm, /dev/mqueue.
            continue;
        }
        if is_bind {
            let Some(source) = mount.source.as_deref().filter(|s| s.starts_with('/')) else {
                notes.push(warn(&format!("mount {dest}: refused (a bind mount needs an absolute source)")));
                continue;
            };
            if OWN_PLACES.contains(&dest) || dest == "/" {
                notes.push(warn(&format!("mount {source} on {dest}: refused (airlock's own filesystem is there)")));
                continue;
            }
            let entry = format!("{source}:{dest}");
            if mount.options.iter().any(|o| o == "ro") {
                p.filesystem.ro_bind.push(entry);
            } else {
                p.filesystem.bind.push(entry);
            }
            continue;
        }
        if kind == "tmpfs" {
            let size = mount.options.iter().find_map(|o| o.strip_prefix("size="));
            p.filesystem.tmpfs.push(match size {
                Some(size) => format!("{dest}:{size}"),
                None => dest.to_string(),
            });
            continue;
        }
        notes.push(warn(&format!("mount {dest} (type {kind:?}): refused (airlock mounts binds and tmpfs only)")));
    }
}

fn linux_section(linux: &Linux, p: &mut Profile, notes: &mut Vec<Note>) {
    if let Some(resources) = &linux.resources {
        if let Some(limit) = resources.memory.as_ref().and_then(|m| m.limit).filter(|l| *l > 0) {
            p.limits.memory = Some(limit.to_string());
        }
        if let Some(limit) = resources.pids.as_ref().map(|p| p.limit).filter(|l| *l > 0) {
            p.limits.pids = u64::try_from(limit).ok();
        }
        if let Some(cpu) = &resources.cpu {
            if let (Some(quota), Some(period)) = (cpu.quota.filter(|q| *q > 0), cpu.period.filter(|p| *p > 0)) {
                // airlock's --cpus: at least 0.01.
                let cpus = (quota as f64 / period as f64).max(0.01);
                p.limits.cpus = Some((cpus * 100.0).round() / 100.0);
            }
        }
    }
    if linux.cgroups_path.is_some() {
        notes.push(info("linux.cgroupsPath: airlock puts the container in a cgroup of its own (under airlock's)"));
    }
    let mut has_network = false;
    for ns in &linux.namespaces {
        if ns.kind == "network" {
            has_network = true;
        }
        if let Some(path) = &ns.path {
            notes.push(warn(&format!(
                "linux.namespaces {} path {path}: refused (airlock makes its own namespaces, it joins none)",
                ns.kind
            )));
        }
    }
    if !has_network {
        notes.push(warn(
            "linux.namespaces: the host network was asked (no network namespace): refused; the container has its \
             own network (none, or the dev.airlock.net.allow list through airlock's gateway)",
        ));
    }
    if linux.seccomp.is_some() {
        notes.push(info("linux.seccomp: airlock applies its own seccomp filter (the bundle's is not loaded)"));
    }
    if !linux.sysctl.is_empty() {
        notes.push(warn("linux.sysctl: refused"));
    }
    if !linux.devices.is_empty() {
        notes.push(warn("linux.devices: refused (airlock's /dev has its own fixed set of devices)"));
    }
}

/// The layers of an overlayfs mounted at `mount_point` (`/proc/self/mountinfo`'s text), bottom first: the lower
/// directories, then the upper one. `None` when nothing is mounted there or it is not an overlayfs.
///
/// A bundle's root is often one (Docker's overlay2, containerd's overlayfs snapshotter); an overlayfs cannot be
/// idmapped, so airlock stacks its layers itself, under a writable layer of its own.
pub fn overlay_layers(mountinfo: &str, mount_point: &Path) -> Option<Vec<String>> {
    let wanted = mount_point.to_str()?;
    // The last mount on that point is the one seen there.
    let line = mountinfo.lines().rfind(|line| line.split(' ').nth(4) == Some(wanted))?;
    let (_, right) = line.split_once(" - ")?;
    let mut fields = right.split(' ');
    if fields.next()? != "overlay" {
        return None;
    }
    let options = fields.nth(1)?;
    let mut lower_top_first = Vec::new();
    let mut upper = None;
    for option in options.split(',') {
        if let Some(dirs) = option.strip_prefix("lowerdir=") {
            lower_top_first.extend(dirs.split(':').filter(|d| !d.is_empty()).map(str::to_string));
        } else if let Some(dir) = option.strip_prefix("lowerdir+=") {
            lower_top_first.push(dir.to_string());
        } else if let Some(dir) = option.strip_prefix("upperdir=") {
            upper = Some(dir.to_string());
        }
    }
    // mountinfo escapes a space, tab, newline and backslash in a path as an octal sequence; such paths are not
    // taken apart here.
    if lower_top_first.is_empty() || lower_top_first.iter().chain(upper.iter()).any(|d| d.contains('\\')) {
        return None;
    }
    let mut layers: Vec<String> = lower_top_first.into_iter().rev().collect();
    layers.extend(upper);
    Some(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const MINIMAL: &str = r#"{
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["/bin/sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=b=c"], "cwd": "/",
                    "user": {"uid": 1000, "gid": 100},
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512},
                                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]},
        "hostname": "box",
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                   {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "ro"]},
                   {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["size=64m"]},
                   {"destination": "/mnt", "type": "nfs", "source": "host:/x"}],
        "linux": {"resources": {"memory": {"limit": 67108864}, "pids": {"limit": 64},
                                "cpu": {"quota": 50000, "period": 100000}},
                  "cgroupsPath": "/default/t1",
                  "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc", "path": "/proc/1/ns/ipc"}]},
        "annotations": {"dev.airlock.net.allow": "example.com:443, pypi.org", "dev.airlock.audit": "true"}
    }"#;

    #[test]
    fn a_bundle_becomes_a_profile_layer() {
        let t = translate(&spec(MINIMAL), Path::new("/b")).unwrap();
        let p = &t.profile;
        assert_eq!(p.filesystem.rootfs.as_deref(), Some("/b/rootfs"));
        assert_eq!(p.filesystem.writable_root, Some(false));
        assert_eq!(p.env.set.get("A").map(String::as_str), Some("b=c"));
        assert_eq!(p.process.user.as_deref(), Some("1000:100"));
        assert_eq!(p.process.hostname.as_deref(), Some("box"));
        assert_eq!(p.limits.memory.as_deref(), Some("67108864"));
        assert_eq!(p.limits.pids, Some(64));
        assert_eq!(p.limits.cpus, Some(0.5));
        assert_eq!(p.limits.nofile, Some(512));
        assert_eq!(p.filesystem.ro_bind, vec!["/srv/data:/data".to_string()]);
        assert_eq!(p.filesystem.tmpfs, vec!["/run:64m".to_string()]);
        assert_eq!(p.network.mode.as_deref(), Some("allow"));
        assert_eq!(p.network.allow, vec!["example.com:443".to_string(), "pypi.org".to_string()]);
        assert!(t.audit);
        assert_eq!(t.process.args, vec!["/bin/sh", "-c", "echo hi"]);
        let warned: Vec<&str> = t.notes.iter().filter(|n| n.level == Level::Warn).map(|n| n.message.as_str()).collect();
        assert!(warned.iter().any(|m| m.contains("RLIMIT_CORE")), "{warned:?}");
        assert!(warned.iter().any(|m| m.contains("nfs")), "{warned:?}");
        assert!(warned.iter().any(|m| m.contains("ipc path")), "{warned:?}");
        assert!(!warned.iter().any(|m| m.contains("host network")), "{warned:?}");
    }

    #[test]
    fn the_translated_layer_resolves_to_a_policy() {
        let t = translate(&spec(MINIMAL), Path::new("/b")).unwrap();
        let invoker = policy::profile::Invoker {
            uid: 0,
            gid: 0,
            is_root: true,
            env: Vec::new(),
            user_name: Some("root".to_string()),
        };
        let policy = policy::profile::resolve(&t.profile, t.process.args.clone(), &invoker).unwrap();
        assert_eq!(policy.limits.memory_bytes, Some(64 << 20));
    }

    #[test]
    fn host_network_and_joined_namespaces_are_refused_not_taken() {
        let t = translate(
            &spec(
                r#"{"root": {"path": "/r"}, "process": {"args": ["x"]}, "linux": {"namespaces": [{"type": "pid"}]}}"#,
            ),
            Path::new("/b"),
        )
        .unwrap();
        assert_eq!(t.rootfs, PathBuf::from("/r"));
        assert_eq!(t.profile.network.mode, None);
        assert!(t.notes.iter().any(|n| n.level == Level::Warn && n.message.contains("host network")));
    }

    #[test]
    fn an_overlay_root_is_taken_apart_into_its_layers_bottom_first() {
        let mountinfo = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
            90 22 0:50 / /b/rootfs rw,relatime - overlay overlay rw,lowerdir=/l/top:/l/bottom,upperdir=/u/diff,workdir=/u/work\n";
        assert_eq!(
            overlay_layers(mountinfo, Path::new("/b/rootfs")),
            Some(vec!["/l/bottom".to_string(), "/l/top".to_string(), "/u/diff".to_string()])
        );
        assert_eq!(overlay_layers(mountinfo, Path::new("/")), None);
        assert_eq!(overlay_layers(mountinfo, Path::new("/elsewhere")), None);
        let read_only = "90 22 0:50 / /r ro - overlay overlay ro,lowerdir=/a:/b\n";
        assert_eq!(overlay_layers(read_only, Path::new("/r")), Some(vec!["/b".to_string(), "/a".to_string()]));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            translate(&spec(r#"{"root": {"path": "/r"}, "process": {"args": []}}"#), Path::new("/b")),
            Err(OciError::NoArgs)
        ));
        assert!(matches!(translate(&spec(r#"{"process": {"args": ["x"]}}"#), Path::new("/b")), Err(OciError::NoRoot)));
        assert!(matches!(
            translate(
                &spec(
                    r#"{"root": {"path": "/r"}, "process": {"args": ["x"]}, "annotations": {"dev.airlock.audit": "yes"}}"#
                ),
                Path::new("/b")
            ),
            Err(OciError::BadAnnotation { .. })
        ));
    }
}
