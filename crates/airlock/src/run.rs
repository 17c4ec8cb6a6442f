//! `airlock run`: flags become one more profile layer over the chosen profile; the merged profile is resolved
//! into a policy and handed to the runtime.

use anyhow::{anyhow, bail, Context, Result};
use policy::names::validate_sandbox_name;
use policy::profile::{self, Profile, ProfileRef};
use policy::sandbox::{Network, WorkspaceMode};
use runtime::sandbox::RunOutcome;
use session::backend::NamespaceBackend;
use session::launch::{launch, Hooks, LaunchSpec, Lifetime};

use crate::cli::{RunArgs, SandboxOptions};
use crate::state;

pub fn run(args: RunArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    if let Some(name) = &args.name {
        validate_sandbox_name(name).map_err(|e| anyhow!("--name: {e}"))?;
    }
    // --image: the image is the bottom of the profile; profiles and flags merged over it win.
    let image = match &args.opts.image {
        Some(reference) => Some(crate::image_cmd::image_base(reference, &args.command, args.opts.workspace.is_some())?),
        None => None,
    };
    let base = load_profiles(&args.opts.profile)?;
    let base = match &image {
        Some(image) => image.profile.clone().merge(base),
        None => base,
    };
    let overlay = flags_profile(&args.opts)?;
    let merged = base.merge(overlay);
    let command = match &image {
        Some(image) if image.command.is_empty() => {
            bail!("--image: the image has no Entrypoint or Cmd; give the command to run")
        }
        Some(image) => image.command.clone(),
        None => args.command.clone(),
    };

    let mut policy = profile::resolve(&merged, command, &session::invoker())?;
    session::gateway::add_proxy_environment(&mut policy, &|key| merged.env.set.contains_key(key));
    // A VM refuses --net host (its guest would get the host's network): no warning for what will not run.
    if policy.network == Network::Host && !vm_isolation(&merged)? {
        crate::say("warning: --net host: the sandbox shares the host's network (no network isolation)");
    }

    // What the sandbox keeps lives under its name: a cow workspace's layer always, otherwise only with --name.
    let cow = policy.workspace.as_ref().is_some_and(|w| w.mode == WorkspaceMode::Cow);
    let generated = args.name.is_none() && cow;
    let name = args.name.clone().or_else(|| cow.then(state::generated_name));
    check_workspace_outside_state(&policy)?;
    // Records name the sandbox; an unnamed run is named by its supervisor's pid.
    let record_name = name.clone().unwrap_or_else(|| format!("run-{}", std::process::id()));
    let state = state::state();
    let spec = LaunchSpec {
        state: &state,
        merged: &merged,
        policy: &policy,
        name: name.clone(),
        record_name,
        lifetime: Lifetime::Run {
            rm: args.rm,
            resume: args.resume,
            tty: args.tty.then(runtime::host::caller_window_size),
            learn: args.learn,
            profile_exec: merged.audit.exec == Some(true),
        },
        audit_copy: args.opts.audit.as_deref(),
        lock_dir: lock_dir(),
    };
    // A kept sandbox keeps its image: `image rm` and `prune` leave it while the sandbox's directory exists.
    if let (Some(image), Some(name)) = (&image, &name) {
        crate::image_cmd::mark_in_use(&image.id, name)?;
    }
    let warn = &mut |w: &str| crate::say(&format!("warning: {w}"));
    let vm_backend;
    let backend: &dyn session::backend::Backend = match vm_isolation(&merged)? {
        false => &NamespaceBackend,
        true => {
            vm_backend = session::vm::VmBackend {
                config: session::vm::VmConfig::new(
                    &policy,
                    &merged.vm,
                    state::state().path().join("cache").join("vm"),
                )?,
            };
            &vm_backend
        }
    };
    let ended = launch(backend, spec, Hooks { warn, on_ready: &mut || {} })?;
    let outcome = &ended.outcome;
    if let Some(r) = &ended.recorder {
        r.print_learned();
    }
    if let Some(stats) = &ended.report.stats {
        if stats.pids_max_hits.unwrap_or(0) > 0 {
            let limit = stats.pids_limit.map(|n| n.to_string()).unwrap_or_else(|| "--pids".to_string());
            crate::say(&format!("note: the process limit ({limit}) was reached: fork failed inside with EAGAIN"));
        }
    }
    match outcome {
        RunOutcome::Exited(_) => {}
        RunOutcome::TimedOut(elapsed) => {
            crate::say(&format!(
                "timed out after {:.1}s (--timeout {}): the sandbox was killed",
                elapsed.as_secs_f64(),
                merged.process.timeout.as_deref().unwrap_or("?")
            ));
        }
        RunOutcome::ExecFailed { message, .. } => crate::say(message),
        RunOutcome::OutOfMemory { summary } => crate::say(&format!("killed: out of memory ({summary})")),
    }
    let exit_code = outcome.exit_code();
    match ended.kept {
        Some(state) if args.rm => {
            let name = state.name.clone();
            if let Err(e) = state.remove() {
                crate::say(&format!("warning: cannot remove sandbox {name}: {}", session::error_chain(&e)));
            }
        }
        Some(state) if generated => crate::say(&format!(
            "the workspace's changes are kept in sandbox {0}: `airlock diff {0}` shows them, `airlock rm {0}` drops them",
            state.name
        )),
        _ => {}
    }
    if args.json {
        print_result_json(name.as_deref(), outcome, started.elapsed())?;
    }
    Ok(exit_code)
}

/// `[security] isolation` / `--isolation`: whether the sandbox runs in a VM of its own.
pub fn vm_isolation(merged: &Profile) -> Result<bool> {
    Ok(merged.isolation().map_err(|e| anyhow::anyhow!("{e}"))? == policy::sandbox::Isolation::Vm)
}

/// `--json` of `run` and `exec`: one JSON object on stdout once the command has ended. `signal` is N when the
/// status is 128+N (the command was killed by signal N), else null.
pub fn print_result_json(name: Option<&str>, outcome: &RunOutcome, elapsed: std::time::Duration) -> Result<()> {
    let code = outcome.exit_code();
    let signal = (129..=128 + 64).contains(&code).then(|| code - 128);
    let doc = serde_json::json!({
        "name": name,
        "exit_code": code,
        "signal": signal,
        "oom": matches!(outcome, RunOutcome::OutOfMemory { .. }),
        "timed_out": matches!(outcome, RunOutcome::TimedOut(_)),
        "duration_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    });
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{doc}")?;
    out.flush()?;
    Ok(())
}

/// The state directory holds the layers: a workspace inside it could reach another sandbox's changes.
pub fn check_workspace_outside_state(policy: &policy::sandbox::SandboxPolicy) -> Result<()> {
    if let Some(ws) = &policy.workspace {
        let state_root =
            std::fs::canonicalize(state::state().path()).unwrap_or_else(|_| state::state().path().to_path_buf());
        let workspace = std::fs::canonicalize(&ws.path).unwrap_or_else(|_| std::path::PathBuf::from(&ws.path));
        if workspace.starts_with(&state_root) {
            bail!(
                "--workspace {} is inside airlock's state directory {}; share a directory outside it",
                ws.path,
                state_root.display()
            );
        }
    }
    Ok(())
}

/// `--profile`, once or more: each merges over the ones before it.
pub fn load_profiles(args: &[String]) -> Result<Profile> {
    let mut merged: Option<Profile> = None;
    for arg in args {
        let next = load_profile(arg)?;
        merged = Some(match merged {
            Some(before) => before.merge(next),
            None => next,
        });
    }
    merged.ok_or_else(|| anyhow!("--profile: no profile given"))
}

/// A built-in by name, or a file.
pub fn load_profile(arg: &str) -> Result<Profile> {
    match ProfileRef::from_arg(arg) {
        ProfileRef::Builtin(name) => Ok(profile::load_builtin_profile(&name)?),
        ProfileRef::File(path) => {
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read profile {}", path.display()))?;
            Ok(Profile::parse(&text, &path.display().to_string())?)
        }
    }
}

/// The run flags as a profile layer (`--home`, `--toolchains` and `--git-identity` beneath the rest, which win).
pub fn flags_profile(args: &SandboxOptions) -> Result<Profile> {
    let home = crate::home::home_profile(&crate::home::HomeOptions {
        mode: args.home.clone(),
        toolchains: args.toolchains,
        git_identity: args.git_identity,
    })?;
    Ok(home.merge(plain_flags_profile(args)?))
}

fn plain_flags_profile(args: &SandboxOptions) -> Result<Profile> {
    let mut p = Profile::default();
    p.filesystem.rootfs = args.rootfs.clone();
    p.filesystem.rootfs_layers =
        args.rootfs_layers.as_deref().map(|l| l.split(':').map(str::to_string).collect()).unwrap_or_default();
    p.filesystem.writable_root = args.writable_root.then_some(true);
    p.security.root_capabilities = args.root_capabilities.clone();
    p.filesystem.workspace = args.workspace.clone();
    p.filesystem.workspace_mode = args.workspace_mode.clone();
    p.filesystem.ro_bind = args.ro_bind.clone();
    p.filesystem.bind = args.bind.clone();
    p.filesystem.tmpfs = args.tmpfs.clone();
    p.network.mode = args.net.clone();
    p.network.allow = args.allow.clone();
    // The files first, in order: a later file, then --env, wins.
    for file in &args.env_file {
        for (key, value) in crate::longlived::read_env_file(file)? {
            p.env.set.insert(key, value);
        }
    }
    for kv in &args.env {
        let (key, value) = kv.split_once('=').ok_or_else(|| anyhow!("--env {kv:?}: expected KEY=VALUE"))?;
        p.env.set.insert(key.to_string(), value.to_string());
    }
    p.env.pass = args.pass_env.clone();
    p.process.user = args.user.clone();
    p.process.hostname = args.hostname.clone();
    p.process.timeout = args.timeout.clone();
    p.security.isolation = args.isolation.clone();
    p.limits.memory = args.memory.clone();
    p.limits.disk = args.disk.clone();
    if let Some(pids) = &args.pids {
        let n = pids
            .trim()
            .parse::<u64>()
            .map_err(|_| anyhow!("--pids {pids:?}: expected a whole number greater than 0"))?;
        p.limits.pids = Some(n);
    }
    if let Some(cpus) = &args.cpus {
        p.limits.cpus = Some(policy::units::parse_cpus(cpus).map_err(|e| anyhow!("--cpus: {e}"))?);
    }
    Ok(p)
}

/// Where the host-id range locks live (as host root): `$AIRLOCK_STATE_DIR/id-ranges`, else under `/run`, which
/// is emptied at boot, so a crash never leaves a range claimed.
pub fn lock_dir() -> std::path::PathBuf {
    match std::env::var_os("AIRLOCK_STATE_DIR") {
        Some(dir) => std::path::PathBuf::from(dir).join("id-ranges"),
        None => std::path::PathBuf::from("/run/airlock/id-ranges"),
    }
}
