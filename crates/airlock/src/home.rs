//! `--home`, `--toolchains`, `--git-identity`: what of the invoker's home a sandbox sees. Nothing by default
//! (`HOME=/tmp`, the sandbox's private tmpfs); each of these is asked for explicitly, and none of them shows the
//! home itself: credentials (`~/.ssh`, `~/.aws`, tokens under `~/.config`) stay out.
//!
//! - `--home empty`: an empty private tmpfs at the invoker's home path, and `HOME` set to it, so tools that keep
//!   their files under `~` (and paths written into project files) work, without any of the real home's content.
//! - `--toolchains`: the invoker's toolchain installations (rustup's, pyenv's, nvm's, `~/.local/bin`, ...)
//!   bound read-only at the same paths, their variables (`RUSTUP_HOME`, `PYENV_ROOT`, `NVM_DIR`, ...) set, and
//!   the invoker's `PATH` entries that lie inside them put before the default `PATH`.
//! - `--git-identity`: `GIT_AUTHOR_NAME`/`EMAIL` and `GIT_COMMITTER_NAME`/`EMAIL` from the invoker's git config,
//!   so commits made inside are the invoker's, without showing `~/.gitconfig` (which may hold credential
//!   helpers and tokens).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use policy::profile::{Profile, DEFAULT_PATH};

/// Toolchain installations under the home, relative to it, and the variable that names each (if any). Only
/// what a toolchain runs from: caches and credentials stay out (a read-only cache is useless; a writable one
/// would carry a sandbox's writes back to the host).
const TOOLCHAINS: &[(&str, Option<&str>)] = &[
    (".rustup", Some("RUSTUP_HOME")),
    (".cargo/bin", None),
    (".pyenv", Some("PYENV_ROOT")),
    (".nvm", Some("NVM_DIR")),
    (".volta", Some("VOLTA_HOME")),
    (".bun", Some("BUN_INSTALL")),
    (".deno", Some("DENO_INSTALL")),
    (".sdkman", Some("SDKMAN_DIR")),
    (".local/share/pnpm", Some("PNPM_HOME")),
    (".elan", Some("ELAN_HOME")),
    (".ghcup", Some("GHCUP_INSTALL_BASE_PREFIX")),
    (".local/bin", None),
    ("go/bin", None),
];

/// What the three flags ask for.
#[derive(Debug, Clone, Default)]
pub struct HomeOptions {
    /// `--home tmp|empty`.
    pub mode: Option<String>,
    pub toolchains: bool,
    pub git_identity: bool,
}

/// The flags as a profile layer (merged under the other flags, which win). Empty when none is given.
pub fn home_profile(options: &HomeOptions) -> Result<Profile> {
    let mut p = Profile::default();
    let empty_home = match options.mode.as_deref() {
        None | Some("tmp") => false,
        Some("empty") => true,
        Some(other) => bail!("--home {other:?}: expected tmp or empty"),
    };
    if !empty_home && !options.toolchains && !options.git_identity {
        return Ok(p);
    }
    if empty_home || options.toolchains {
        let home = invoker_home()?;
        let home_text = home.to_str().ok_or_else(|| anyhow!("your home {} is not UTF-8", home.display()))?;
        if empty_home {
            p.filesystem.tmpfs.push(home_text.to_owned());
            p.env.set.insert("HOME".into(), home_text.to_owned());
        }
        if options.toolchains {
            let caller_path = std::env::var("PATH").unwrap_or_default();
            let (binds, env, path) = toolchain_binds(&home, &caller_path);
            if binds.is_empty() {
                crate::say(&format!("warning: --toolchains: no toolchain installation found under {home_text}"));
            }
            p.filesystem.ro_bind.extend(binds);
            for (key, value) in env {
                p.env.set.insert(key, value);
            }
            p.env.set.insert("PATH".into(), path);
        }
    }
    if options.git_identity {
        for (key, value) in git_identity()? {
            p.env.set.insert(key, value);
        }
    }
    Ok(p)
}

/// The invoker's home: its passwd entry's (not `$HOME`, which `sudo` and scripts change), else `$HOME`;
/// canonical when it exists (a bind source may not pass through a symlink; a home that does not exist can still
/// be an empty tmpfs inside).
fn invoker_home() -> Result<PathBuf> {
    let from_passwd =
        runtime::host::passwd_entry(sys::process::effective_uid()).and_then(|entry| entry.home).map(PathBuf::from);
    let home = from_passwd
        .filter(|h| h.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from).filter(|h| h.is_absolute()))
        .ok_or_else(|| anyhow!("cannot tell your home directory (no passwd entry, no absolute $HOME)"))?;
    match std::fs::canonicalize(&home) {
        Ok(real) => Ok(real),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(home),
        Err(e) => Err(e).with_context(|| format!("your home directory {}", home.display())),
    }
}

/// For each toolchain installation that exists under `home`: a read-only bind (`REAL:PATH`, the real path
/// bound at the path under the home), its variable, and the `PATH`: the caller's entries inside a bound
/// directory, in the caller's order, then the default.
fn toolchain_binds(home: &Path, caller_path: &str) -> (Vec<String>, Vec<(String, String)>, String) {
    let mut binds = Vec::new();
    let mut env = Vec::new();
    let mut bound: Vec<PathBuf> = Vec::new();
    for (relative, variable) in TOOLCHAINS {
        let at = home.join(relative);
        // Inside another one already bound (`.local/share/pnpm` then `.local/bin` are siblings; none nests).
        if bound.iter().any(|b| at.starts_with(b)) {
            continue;
        }
        let Ok(real) = std::fs::canonicalize(&at) else { continue };
        if !real.is_dir() {
            continue;
        }
        let (Some(real_text), Some(at_text)) = (real.to_str(), at.to_str()) else { continue };
        if real_text.contains(':') || at_text.contains(':') {
            continue;
        }
        binds.push(format!("{real_text}:{at_text}"));
        if let Some(variable) = variable {
            env.push(((*variable).to_owned(), at_text.to_owned()));
        }
        bound.push(at);
    }
    let mut path: Vec<&str> = caller_path
        .split(':')
        .filter(|entry| !entry.is_empty() && bound.iter().any(|b| Path::new(entry).starts_with(b)))
        .collect();
    path.dedup();
    let path = path.into_iter().chain(DEFAULT_PATH.split(':')).collect::<Vec<_>>().join(":");
    (binds, env, path)
}

/// `user.name` and `user.email` from the invoker's git config, as the four `GIT_*` variables.
fn git_identity() -> Result<Vec<(String, String)>> {
    let get = |key: &str| -> Result<String> {
        let out = Command::new("git")
            .args(["config", "--get", key])
            .output()
            .map_err(|e| anyhow!("--git-identity: cannot run git ({e}); is it installed?"))?;
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() || value.is_empty() {
            bail!("--git-identity: your git config has no {key} (git config --global {key} ...)");
        }
        Ok(value)
    };
    let (name, email) = (get("user.name")?, get("user.email")?);
    Ok(vec![
        ("GIT_AUTHOR_NAME".into(), name.clone()),
        ("GIT_COMMITTER_NAME".into(), name),
        ("GIT_AUTHOR_EMAIL".into(), email.clone()),
        ("GIT_COMMITTER_EMAIL".into(), email),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchains_bind_what_exists_and_path_keeps_the_callers_entries_inside_them() {
        let home = std::env::temp_dir().join(format!("airlock-home-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(home.join(".rustup/toolchains")).unwrap();
        std::fs::create_dir_all(home.join(".cargo/bin")).unwrap();
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        let home = std::fs::canonicalize(&home).unwrap();
        let h = home.display().to_string();
        let caller = format!("{h}/.cargo/bin:{h}/.ssh:/opt/elsewhere/bin:/usr/bin");
        let (binds, env, path) = toolchain_binds(&home, &caller);
        assert_eq!(binds, vec![format!("{h}/.rustup:{h}/.rustup"), format!("{h}/.cargo/bin:{h}/.cargo/bin")]);
        assert_eq!(env, vec![("RUSTUP_HOME".to_owned(), format!("{h}/.rustup"))]);
        assert_eq!(path, format!("{h}/.cargo/bin:{DEFAULT_PATH}"));
        let _ = std::fs::remove_dir_all(&home);
    }

    #[test]
    fn nothing_asked_is_an_empty_layer_and_a_bad_mode_is_refused() {
        assert_eq!(home_profile(&HomeOptions::default()).unwrap(), Profile::default());
        let bad = HomeOptions { mode: Some("ro".into()), ..HomeOptions::default() };
        assert!(home_profile(&bad).unwrap_err().to_string().contains("expected tmp or empty"));
    }
}
