//! The CLI against a daemon: with `--host URL` or `AIRLOCK_HOST`, the sandbox commands (`create`, `exec`, `ls`,
//! `stop`, `rm`, `diff`, `commit`, `discard`, `checkpoint`, `checkpoints`, `rollback`, `logs`, `stats`) become
//! requests to `airlock serve` (the contract is `../shared/design/api.md`) instead of work on this machine's state
//! directory. Without either, the CLI works as it always did, daemonless.
//!
//! Exit statuses: a command's own (exec), 0 for success, and for an error answer the status the local CLI uses
//! for the same situation: 125 when a protection could not be applied (`setup_failed`), 2 for a request the
//! daemon found malformed (`bad_request`), 1 otherwise (no such sandbox, a conflict, a limit, unauthorized). Not
//! reaching the daemon is 125 for the commands that run something (`create`, `exec`), 1 for the others.
//!
//! The token (`AIRLOCK_TOKEN`, for `http://` daemons started with `--listen --token-file`) goes as
//! `Authorization: Bearer`. Plain HTTP carries it in the clear, so it is sent unasked only to a loopback address;
//! to another host the user must say so with `AIRLOCK_TOKEN_INSECURE=1` (or use an SSH tunnel to a Unix socket).

use std::io::{IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::cli::{Command, CreateArgs, ExecArgs};
use crate::http_client::{request, Answer, Endpoint};

/// The local CLI's exit statuses.
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 125;
const EXIT_SETUP_FAILED: i32 = 125;

/// The daemon this invocation talks to, if any: `--host`, else a non-empty `AIRLOCK_HOST`.
pub fn chosen(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string).or_else(|| std::env::var("AIRLOCK_HOST").ok().filter(|h| !h.is_empty()))
}

/// Whether a command has a remote form (the others run locally whatever `AIRLOCK_HOST` says: `doctor`, `profile`,
/// `serve` (a daemon started where AIRLOCK_HOST is set for its clients), the internal ones).
pub fn is_remote_command(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Run(_)
            | Command::Create(_)
            | Command::Exec(_)
            | Command::Stop { .. }
            | Command::Ls { .. }
            | Command::Rm(_)
            | Command::Prune
            | Command::Diff(_)
            | Command::Commit(_)
            | Command::Discard(_)
            | Command::Checkpoint { .. }
            | Command::Checkpoints { .. }
            | Command::Rollback { .. }
            | Command::Logs { .. }
            | Command::Stats { .. }
    )
}

struct Daemon {
    endpoint: Endpoint,
    token: Option<String>,
}

/// An error answer, as the CLI says it: `airlock: MESSAGE`, and the local CLI's exit status for it.
fn error_exit(status: u16, body: &[u8]) -> i32 {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().and_then(|v| v["error"]["code"].as_str()).unwrap_or("").to_string();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("the daemon answered {status}: {}", String::from_utf8_lossy(body).trim()));
    crate::say(&message);
    if let Some(conflicts) = parsed.as_ref().and_then(|v| v["error"]["details"]["conflicts"].as_array()) {
        for c in conflicts.iter().filter_map(Value::as_str) {
            println!("{c}");
        }
    }
    match code.as_str() {
        "setup_failed" => EXIT_SETUP_FAILED,
        "bad_request" => EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

impl Daemon {
    fn send(&self, method: &str, path: &str, body: Option<&Value>, accept: Option<&str>) -> Result<Answer> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let ct = body.map(|_| "application/json");
        Ok(request(&self.endpoint, self.token.as_deref(), method, path, ct, &bytes, accept)?)
    }

    /// A request whose answer is read whole: `Ok(Ok(body))` for a 2xx, `Ok(Err(exit status))` for an error
    /// answer (already said).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Result<Vec<u8>, i32>> {
        let answer = self.send(method, path, body, None)?;
        let status = answer.status;
        let bytes = answer.body()?;
        if (200..300).contains(&status) {
            Ok(Ok(bytes))
        } else {
            Ok(Err(error_exit(status, &bytes)))
        }
    }

    fn json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Result<Value, i32>> {
        Ok(match self.call(method, path, body)? {
            Ok(bytes) if bytes.is_empty() => Ok(Value::Null),
            Ok(bytes) => {
                Ok(serde_json::from_slice(&bytes).map_err(|e| anyhow!("the daemon's answer is not JSON: {e}"))?)
            }
            Err(code) => Err(code),
        })
    }
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs `cmd` against the daemon at `host`.
pub fn run(host: &str, cmd: Command) -> Result<i32> {
    let runs_something = matches!(cmd, Command::Create(_) | Command::Exec(_));
    let endpoint = Endpoint::parse(host)?;
    let token = std::env::var("AIRLOCK_TOKEN").ok().filter(|t| !t.is_empty());
    if token.is_some()
        && !endpoint.is_loopback()
        && std::env::var("AIRLOCK_TOKEN_INSECURE").ok().as_deref() != Some("1")
    {
        bail!(
            "AIRLOCK_TOKEN would go in the clear to {} (not a loopback address); set AIRLOCK_TOKEN_INSECURE=1 to \
             send it anyway, or reach the daemon through an SSH tunnel",
            endpoint.describe()
        );
    }
    let d = Daemon { endpoint, token };
    let outcome = dispatch(&d, cmd);
    match outcome {
        Err(e) if e.downcast_ref::<crate::http_client::HttpError>().is_some() => {
            crate::say(&format!("{e}"));
            Ok(if runs_something { EXIT_SETUP_FAILED } else { EXIT_FAILED })
        }
        other => other,
    }
}

fn done(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn dispatch(d: &Daemon, cmd: Command) -> Result<i32> {
    let sb = |name: &str| format!("/v1/sandboxes/{}", encode(name));
    Ok(match cmd {
        Command::Run(_) => {
            crate::say("`run` is daemonless: with --host or AIRLOCK_HOST, use create, exec and rm");
            EXIT_USAGE
        }
        Command::Create(args) => create(d, &args)?,
        Command::Exec(args) => exec(d, args)?,
        Command::Stop { name } => done(d.call("DELETE", &format!("{}?keep=true", sb(&name)), None)?.map(drop)),
        Command::Rm(args) if args.all => {
            crate::say("rm --all cannot go through a daemon (the API removes sandboxes one by one); name them");
            EXIT_USAGE
        }
        Command::Prune => {
            crate::say("prune cannot go through a daemon (the API removes sandboxes one by one); use rm NAME");
            EXIT_USAGE
        }
        // The daemon's DELETE stops a running sandbox before removing it: --force or not.
        Command::Rm(args) => {
            for name in args.names {
                if let Err(code) = d.call("DELETE", &sb(&name), None)? {
                    return Ok(code);
                }
            }
            0
        }
        Command::Ls { json } => match d.json("GET", "/v1/sandboxes", None)? {
            Err(code) => code,
            Ok(v) if json => {
                print_json(&v)?;
                0
            }
            Ok(v) => {
                println!("{:<24} {:<8} WORKSPACE", "NAME", "STATE");
                for s in v["sandboxes"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<8} {}",
                        s["name"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?"),
                        s["workspace"].as_str().unwrap_or("-")
                    );
                }
                0
            }
        },
        Command::Diff(args) => {
            if args.patch || !args.paths.is_empty() {
                crate::say("with --host, diff takes only NAME, --json, --exclude and --gitignore");
                return Ok(EXIT_USAGE);
            }
            let mut query: Vec<String> = args.exclude.iter().map(|p| format!("exclude={}", encode(p))).collect();
            if args.gitignore {
                query.push("gitignore=true".into());
            }
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            match d.json("GET", &format!("{}/diff{query}", sb(&args.name)), None)? {
                Err(code) => code,
                Ok(v) if args.json => {
                    print_json(&v)?;
                    0
                }
                Ok(v) => {
                    for c in v["changes"].as_array().into_iter().flatten() {
                        let kind = c["kind"].as_str().unwrap_or("?");
                        let letter = match kind {
                            "added" => "A",
                            "modified" => "M",
                            "deleted" => "D",
                            _ => kind,
                        };
                        println!("{letter}  {}", c["path"].as_str().unwrap_or("?"));
                    }
                    if let Some(n) = v["excluded"]["count"].as_u64().filter(|&n| n > 0) {
                        let sources: Vec<&str> = v["excluded"]["sources"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str())
                            .collect();
                        println!("{n} path{} excluded ({})", if n == 1 { "" } else { "s" }, sources.join(", "));
                    }
                    0
                }
            }
        }
        Command::Commit(args) => {
            let mut body = json!({ "paths": args.paths, "force": args.force });
            if !args.exclude.is_empty() || args.gitignore {
                body["exclude"] = json!(args.exclude);
                body["gitignore"] = json!(args.gitignore);
            }
            match d.json("POST", &format!("{}/commit", sb(&args.name)), Some(&body))? {
                Err(code) => code,
                Ok(v) => {
                    println!("committed {} changes of sandbox {}", v["committed"], args.name);
                    if let Some(n) = v["excluded"].as_u64().filter(|&n| n > 0) {
                        println!("{n} path{} excluded, left in the layer", if n == 1 { "" } else { "s" });
                    }
                    0
                }
            }
        }
        Command::Discard(args) => {
            let body = json!({ "paths": args.paths });
            match d.json("POST", &format!("{}/discard", sb(&args.name)), Some(&body))? {
                Err(code) => code,
                Ok(v) => {
                    println!("discarded {} changes of sandbox {}", v["discarded"], args.name);
                    0
                }
            }
        }
        Command::Checkpoint { name, label } => {
            let body = match &label {
                Some(l) => json!({ "label": l }),
                None => json!({}),
            };
            done(d.call("POST", &format!("{}/checkpoints", sb(&name)), Some(&body))?.map(drop))
        }
        Command::Checkpoints { name, json: _ } => match d.json("GET", &format!("{}/checkpoints", sb(&name)), None)? {
            Err(code) => code,
            Ok(v) => {
                print_json(&v)?;
                0
            }
        },
        Command::Rollback { name, label } => {
            done(d.call("POST", &format!("{}/rollback", sb(&name)), Some(&json!({ "label": label })))?.map(drop))
        }
        Command::Stats { name, json: _ } => match d.json("GET", &format!("{}/stats", sb(&name)), None)? {
            Err(code) => code,
            Ok(v) => {
                print_json(&v)?;
                0
            }
        },
        Command::Logs { name, follow, json: _, verify } => {
            if verify {
                crate::say("with --host, logs cannot --verify (run it on the daemon's machine)");
                return Ok(EXIT_USAGE);
            }
            let path = format!("{}/logs{}", sb(&name), if follow { "?follow=true" } else { "" });
            let mut answer = d.send("GET", &path, None, None)?;
            if !(200..300).contains(&answer.status) {
                let status = answer.status;
                return Ok(error_exit(status, &answer.body()?));
            }
            let mut out = std::io::stdout();
            loop {
                let part = answer.read_some()?;
                if part.is_empty() {
                    break;
                }
                out.write_all(&part)?;
                out.flush()?;
            }
            0
        }
        // Local whatever --host says (see is_remote_command).
        _ => bail!("this command does not go to a daemon"),
    })
}

fn create(d: &Daemon, args: &CreateArgs) -> Result<i32> {
    let o = &args.opts;
    let unsupported: Vec<&str> = [
        (!o.ro_bind.is_empty(), "--ro-bind"),
        (!o.bind.is_empty(), "--bind"),
        (!o.tmpfs.is_empty(), "--tmpfs"),
        (o.writable_root, "--writable-root"),
        (o.root_capabilities.is_some(), "--root-capabilities"),
        (o.home.is_some(), "--home"),
        (o.toolchains, "--toolchains"),
        (o.git_identity, "--git-identity"),
        (o.rootfs_layers.is_some(), "--rootfs-layers"),
        (!o.pass_env.is_empty(), "--pass-env"),
        (o.user.is_some(), "--user"),
        (o.hostname.is_some(), "--hostname"),
        (o.audit.is_some(), "--audit"),
        (args.json, "--json"),
        (o.profile.len() > 1, "more than one --profile"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if !unsupported.is_empty() {
        crate::say(&format!("{} cannot go through a daemon (the API does not take it)", unsupported.join(", ")));
        return Ok(EXIT_USAGE);
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(args.sandbox));
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            body.insert(k.into(), json!(v));
        }
    };
    put("rootfs", &o.rootfs);
    put("image", &o.image);
    put("workspace", &o.workspace.as_ref().map(|w| absolute(w)));
    put("workspace_mode", &o.workspace_mode);
    put("net", &o.net);
    put("memory", &o.memory);
    put("cpus", &o.cpus);
    put("disk", &o.disk);
    put("timeout", &o.timeout);
    if let Some(p) = o.profile.first().filter(|p| p.as_str() != "default") {
        body.insert("profile".into(), json!(p));
    }
    if let Some(p) = &o.pids {
        let Ok(n) = p.parse::<u64>() else {
            crate::say(&format!("--pids {p:?}: expected a number"));
            return Ok(EXIT_USAGE);
        };
        body.insert("pids".into(), json!(n));
    }
    if !o.allow.is_empty() {
        body.insert("allow".into(), json!(o.allow));
    }
    let mut env = Map::new();
    for file in &o.env_file {
        for (k, v) in crate::longlived::read_env_file(file)? {
            env.insert(k, json!(v));
        }
    }
    for kv in &o.env {
        let Some((k, v)) = kv.split_once('=') else {
            crate::say(&format!("--env {kv:?}: expected KEY=VALUE"));
            return Ok(EXIT_USAGE);
        };
        env.insert(k.into(), json!(v));
    }
    if !env.is_empty() {
        body.insert("env".into(), Value::Object(env));
    }
    Ok(match d.json("POST", "/v1/sandboxes", Some(&Value::Object(body)))? {
        Ok(_) => 0,
        Err(code) => code,
    })
}

/// A workspace given relative to the caller's directory, as the local CLI reads it (the daemon has no idea of
/// our working directory).
fn absolute(path: &str) -> String {
    std::path::absolute(path).map(|p| p.display().to_string()).unwrap_or_else(|_| path.to_string())
}

fn exec(d: &Daemon, args: ExecArgs) -> Result<i32> {
    if args.tty {
        crate::say("exec -t cannot go through a daemon (the API has no terminal); drop -t");
        return Ok(EXIT_USAGE);
    }
    if args.json {
        crate::say(
            "exec --json cannot go through a daemon (its answer does not say how the command ended); drop --json",
        );
        return Ok(EXIT_USAGE);
    }
    let mut env = Map::new();
    for file in &args.env_file {
        // Read here, as the local exec reads it (lines or NUL-terminated entries, checked), sent as values.
        for (k, v) in crate::longlived::read_env_file(file)? {
            env.insert(k, json!(v));
        }
    }
    for kv in &args.env {
        let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("--env {kv:?}: expected KEY=VALUE"))?;
        env.insert(k.into(), json!(v));
    }
    let mut body = Map::new();
    body.insert("cmd".into(), json!(args.command));
    if !env.is_empty() {
        body.insert("env".into(), Value::Object(env));
    }
    if let Some(user) = &args.user {
        body.insert("user".into(), json!(user));
    }
    if let Some(cwd) = &args.cwd {
        body.insert("cwd".into(), json!(cwd));
    }
    if let Some(t) = &args.timeout {
        body.insert("timeout".into(), json!(t));
    }
    // Standard input: what a pipe or file gives, sent whole; a terminal gives nothing (no interactive input).
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut data = Vec::new();
        stdin.lock().read_to_end(&mut data)?;
        if !data.is_empty() {
            let text =
                String::from_utf8(data).map_err(|_| anyhow!("with --host, standard input must be UTF-8 text"))?;
            body.insert("stdin".into(), json!(text));
        }
    }
    let path = format!("/v1/sandboxes/{}/exec", encode(&args.name));
    let mut answer = d.send("POST", &path, Some(&Value::Object(body)), Some("application/x-ndjson"))?;
    if !(200..300).contains(&answer.status) {
        let status = answer.status;
        return Ok(error_exit(status, &answer.body()?));
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut pending: Vec<u8> = Vec::new();
    let mut exit = None;
    loop {
        let part = answer.read_some()?;
        let end = part.is_empty();
        pending.extend(part);
        while let Some(at) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else { continue };
            let data = match (event["data"].as_str(), event["data_b64"].as_str()) {
                (_, Some(b64)) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default(),
                (Some(text), None) => text.as_bytes().to_vec(),
                (None, None) => Vec::new(),
            };
            match event["type"].as_str() {
                Some("stdout") => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Some("stderr") => {
                    err.write_all(&data)?;
                    err.flush()?;
                }
                Some("exit") => exit = event["exit_code"].as_i64(),
                _ => {}
            }
        }
        if end {
            break;
        }
    }
    match exit {
        // (A timeout's `airlock:` line came with the command's stderr: the daemon's `airlock exec` wrote it there.)
        Some(code) => Ok(i32::try_from(code).unwrap_or(EXIT_FAILED)),
        None => {
            crate::say("the daemon's answer ended before the command's exit");
            Ok(EXIT_SETUP_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_encoded() {
        assert_eq!(encode("a/../b c"), "a%2F..%2Fb%20c");
        assert_eq!(encode("plain-name_1.x"), "plain-name_1.x");
    }
}
