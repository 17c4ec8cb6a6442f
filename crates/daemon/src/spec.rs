//! The body of `POST /v1/sandboxes` (and a pool's `sandbox`): what the sandbox is, with the meanings of
//! `airlock create`'s flags. Every field is checked here with the policy crate's own rules, so a bad request is
//! a `400` before anything is created, and the checked spec becomes `airlock create`'s arguments.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use policy::names;
use policy::profile::{Profile, ProfileRef};
use policy::sandbox::Isolation;
use policy::units;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// A size: `"512M"` or a number of bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn flag_value(&self) -> String {
        match self {
            Size::Bytes(n) => n.to_string(),
            Size::Text(t) => t.clone(),
        }
    }
}

/// A CPU count: `1.5` or `"1.5"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Cpus {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A built-in profile name or a profile file on the daemon's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// `namespaces` or `vm`, as `airlock create --isolation`; absent: the profile's (namespaces by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Cpus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Size>,
    /// The sandbox's lifetime (`"5m"`): the daemon stops it when it runs out; `POST …/timeout` extends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Take a ready sandbox from this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The longest value the daemon passes on (a name, a path, a variable): far beyond any real one, and keeps a
/// hostile 64 KiB string out of every argv and log.
const MAX_VALUE: usize = 4096;

fn bad(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{field}: {why}"))
}

fn plain(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(bad(field, "is empty"));
    }
    if value.len() > MAX_VALUE {
        return Err(bad(field, format!("is longer than {MAX_VALUE} bytes")));
    }
    if value.contains('\0') {
        return Err(bad(field, "holds a NUL byte"));
    }
    Ok(())
}

impl SandboxSpec {
    /// The isolation the sandboxes of this (checked) spec get: its own `isolation`, else its profile's
    /// `[security] isolation` (a built-in by name, or the file on the daemon's host), else namespaces, as
    /// `airlock create` decides. `Err` says why the profile could not tell (gone, unreadable, or invalid).
    pub fn isolation_of_sandboxes(&self) -> Result<Isolation, String> {
        if let Some(name) = &self.isolation {
            return Isolation::from_name(name).ok_or_else(|| format!("isolation: expected {}", Isolation::EXPECTED));
        }
        let Some(arg) = &self.profile else { return Ok(Isolation::default()) };
        let profile = match ProfileRef::from_arg(arg) {
            ProfileRef::Builtin(name) => policy::profile::load_builtin_profile(&name).map_err(|e| e.to_string())?,
            ProfileRef::File(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read profile {}: {e}", path.display()))?;
                Profile::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())?
            }
        };
        profile.isolation().map_err(|e| e.to_string())
    }

    /// Checks every field; `Ok` means `airlock create` gets arguments it can parse.
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(name) = &self.name {
            names::validate_sandbox_name(name).map_err(|e| bad("name", e))?;
        }
        if let Some(profile) = &self.profile {
            plain("profile", profile)?;
        }
        if let Some(isolation) = &self.isolation {
            if Isolation::from_name(isolation).is_none() {
                return Err(bad("isolation", format!("expected {}", Isolation::EXPECTED)));
            }
        }
        if let Some(image) = &self.image {
            plain("image", image)?;
            if self.rootfs.is_some() {
                return Err(bad("image", "give an image or a rootfs, not both"));
            }
        }
        if let Some(rootfs) = &self.rootfs {
            plain("rootfs", rootfs)?;
            if rootfs != "host" {
                names::validate_absolute_path(rootfs).map_err(|e| bad("rootfs", e))?;
            }
        }
        if let Some(workspace) = &self.workspace {
            plain("workspace", workspace)?;
            names::validate_absolute_path(workspace).map_err(|e| bad("workspace", e))?;
            if !std::path::Path::new(workspace).is_dir() {
                return Err(bad("workspace", format!("{workspace} is not a directory on the daemon's host")));
            }
        }
        if let Some(mode) = &self.workspace_mode {
            if !matches!(mode.as_str(), "cow" | "rw" | "ro") {
                return Err(bad("workspace_mode", "expected cow, rw or ro"));
            }
            if self.workspace.is_none() {
                return Err(bad("workspace_mode", "needs a workspace"));
            }
        }
        if let Some(net) = &self.net {
            if !matches!(net.as_str(), "none" | "allow" | "host") {
                return Err(bad("net", "expected none, allow or host"));
            }
        }
        for pattern in &self.allow {
            plain("allow", pattern)?;
            names::validate_allow_pattern(pattern).map_err(|e| bad("allow", e))?;
        }
        for (key, value) in &self.env {
            names::validate_env_key(key).map_err(|e| bad("env", e))?;
            if value.len() > MAX_VALUE {
                return Err(bad("env", format!("{key}: the value is longer than {MAX_VALUE} bytes")));
            }
            names::validate_env_value(value).map_err(|e| bad("env", e))?;
        }
        if let Some(memory) = &self.memory {
            units::parse_nonzero_size(&memory.flag_value()).map_err(|e| bad("memory", e))?;
        }
        if let Some(disk) = &self.disk {
            units::parse_nonzero_size(&disk.flag_value()).map_err(|e| bad("disk", e))?;
        }
        if self.pids == Some(0) {
            return Err(bad("pids", "must be at least 1"));
        }
        match &self.cpus {
            Some(Cpus::Number(n)) => {
                units::validate_cpus(*n).map_err(|e| bad("cpus", e))?;
            }
            Some(Cpus::Text(t)) => {
                units::parse_cpus(t).map_err(|e| bad("cpus", e))?;
            }
            None => {}
        }
        self.lifetime()?;
        if let Some(pool) = &self.pool {
            names::validate_sandbox_name(pool).map_err(|e| bad("pool", e))?;
        }
        Ok(())
    }

    /// The lifetime asked for, if any.
    pub fn lifetime(&self) -> Result<Option<Duration>, ApiError> {
        match &self.timeout {
            None => Ok(None),
            Some(text) => {
                let d = units::parse_duration(text).map_err(|e| bad("timeout", e))?;
                Ok(Some(d))
            }
        }
    }

    /// `airlock create`'s arguments for this spec and `name`. Values go as `--flag=value`, so a value that starts
    /// with `-` is never read as a flag.
    pub fn create_args(&self, name: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["create".into()];
        let mut flag = |f: &str, v: &str| args.push(format!("--{f}={v}").into());
        if let Some(p) = &self.profile {
            flag("profile", p);
        }
        if let Some(i) = &self.isolation {
            flag("isolation", i);
        }
        if let Some(r) = &self.rootfs {
            flag("rootfs", r);
        }
        if let Some(i) = &self.image {
            flag("image", i);
        }
        if let Some(w) = &self.workspace {
            flag("workspace", w);
        }
        if let Some(m) = &self.workspace_mode {
            flag("workspace-mode", m);
        }
        if let Some(n) = &self.net {
            flag("net", n);
        }
        for a in &self.allow {
            flag("allow", a);
        }
        for (k, v) in &self.env {
            flag("env", &format!("{k}={v}"));
        }
        if let Some(m) = &self.memory {
            flag("memory", &m.flag_value());
        }
        if let Some(p) = self.pids {
            flag("pids", &p.to_string());
        }
        match &self.cpus {
            Some(Cpus::Number(n)) => flag("cpus", &n.to_string()),
            Some(Cpus::Text(t)) => flag("cpus", t),
            None => {}
        }
        if let Some(d) = &self.disk {
            flag("disk", &d.flag_value());
        }
        args.push("--".into());
        args.push(name.into());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<SandboxSpec, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(parse(r#"{"nmae": "x"}"#).is_err());
    }

    #[test]
    fn the_isolation_of_a_specs_sandboxes_is_its_own_else_its_profiles() {
        let of = |json: &str| parse(json).unwrap().isolation_of_sandboxes();
        assert_eq!(of("{}"), Ok(Isolation::Namespaces));
        assert_eq!(of(r#"{"isolation": "vm"}"#), Ok(Isolation::Vm));
        assert_eq!(of(r#"{"profile": "strict"}"#), Ok(Isolation::Namespaces));
        // The spec's own field wins over its profile's, as `--isolation` over `[security] isolation`.
        let dir = std::env::temp_dir().join(format!("airlock-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vm.toml");
        std::fs::write(&file, "[security]\nisolation = \"vm\"\n").unwrap();
        let with_profile = |extra: &str| format!(r#"{{"profile": "{}"{extra}}}"#, file.display());
        assert_eq!(of(&with_profile("")), Ok(Isolation::Vm));
        assert_eq!(of(&with_profile(r#", "isolation": "namespaces""#)), Ok(Isolation::Namespaces));
        std::fs::write(&file, "[security]\nisolation = \"kvm\"\n").unwrap();
        assert!(of(&with_profile("")).unwrap_err().contains("isolation"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(of(&with_profile("")).unwrap_err().contains("cannot read profile"));
        assert!(of(r#"{"profile": "no-such-builtin"}"#).is_err());
    }

    #[test]
    fn hostile_values_are_bad_requests() {
        for json in [
            r#"{"name": "../x"}"#,
            r#"{"name": "a\u0000b"}"#,
            r#"{"workspace": "relative"}"#,
            r#"{"workspace_mode": "cow"}"#,
            r#"{"net": "all"}"#,
            r#"{"isolation": "kvm"}"#,
            r#"{"memory": "lots"}"#,
            r#"{"pids": 0}"#,
            r#"{"timeout": "soon"}"#,
            r#"{"env": {"A=B": "c"}}"#,
            r#"{"image": "python:3.12", "rootfs": "/srv/r"}"#,
        ] {
            let spec = parse(json).unwrap();
            assert!(spec.validate().is_err(), "{json} passed");
        }
        let long = format!(r#"{{"name": "{}"}}"#, "a".repeat(65536));
        assert!(parse(&long).unwrap().validate().is_err());
    }

    #[test]
    fn values_never_become_flags() {
        let spec = parse(r#"{"profile": "-x", "memory": 1048576, "cpus": 1.5, "env": {"A": "--b"}}"#).unwrap();
        let args: Vec<String> = spec.create_args("box").into_iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["create", "--profile=-x", "--env=A=--b", "--memory=1048576", "--cpus=1.5", "--", "box"]);
    }
}
