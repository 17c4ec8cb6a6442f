//! The endpoints. Each handler checks its input, takes the sandbox's lock the way [`crate::registry`] says, and
//! runs the engine. The route table [`ROUTES`] is the one list the router and the OpenAPI test both read.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::engine::{classify, Engine};
use crate::error::{ApiError, ApiResult, Code};
use crate::registry::{Entry, Registry};
use crate::spec::SandboxSpec;
use crate::store::{cli_record, live_init, now, OwnedSandbox, PoolRecord, Store};

/// Limits of one daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sandboxes: usize,
    pub max_execs: usize,
    /// With any: a spec's `workspace` and `rootfs` must resolve under one of these (canonical) directories.
    pub host_roots: Vec<std::path::PathBuf>,
    /// The lifetime of a sandbox created without a `timeout`.
    pub default_timeout: Option<String>,
}

/// Everything a handler needs.
pub struct App {
    pub engine: Engine,
    pub store: Store,
    pub registry: Registry,
    pub limits: Limits,
    pub execs: Arc<Semaphore>,
    /// Wakes the pool filler (a sandbox was taken, a pool was added).
    pub pools_changed: tokio::sync::Notify,
    /// Unix time this daemon started (what was creating before then was adopted from a daemon that died).
    pub started: f64,
}

pub type Shared = Arc<App>;

/// Every route: method, path (axum syntax), as the OpenAPI document must list them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/health"),
    ("post", "/v1/sandboxes"),
    ("get", "/v1/sandboxes"),
    ("get", "/v1/sandboxes/{name}"),
    ("delete", "/v1/sandboxes/{name}"),
    ("post", "/v1/sandboxes/{name}/exec"),
    ("get", "/v1/sandboxes/{name}/files"),
    ("put", "/v1/sandboxes/{name}/files"),
    ("delete", "/v1/sandboxes/{name}/files"),
    ("get", "/v1/sandboxes/{name}/diff"),
    ("post", "/v1/sandboxes/{name}/commit"),
    ("post", "/v1/sandboxes/{name}/discard"),
    ("post", "/v1/sandboxes/{name}/checkpoints"),
    ("get", "/v1/sandboxes/{name}/checkpoints"),
    ("post", "/v1/sandboxes/{name}/rollback"),
    ("get", "/v1/sandboxes/{name}/logs"),
    ("get", "/v1/sandboxes/{name}/stats"),
    ("post", "/v1/sandboxes/{name}/timeout"),
    ("post", "/v1/pools"),
    ("get", "/v1/pools"),
    ("delete", "/v1/pools/{name}"),
    ("get", "/openapi.json"),
];

/// The largest JSON body (a sandbox spec, an exec with its stdin).
pub const MAX_JSON_BODY: usize = 4 << 20;
/// The largest file a `PUT …/files` takes.
pub const MAX_FILE_BODY: usize = 64 << 20;

pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/sandboxes", post(create).get(list))
        .route("/v1/sandboxes/{name}", get(get_one).delete(delete))
        .route("/v1/sandboxes/{name}/exec", post(crate::exec::exec))
        .route(
            "/v1/sandboxes/{name}/files",
            get(crate::files_api::read).put(crate::files_api::write).delete(crate::files_api::remove),
        )
        .route("/v1/sandboxes/{name}/diff", get(diff))
        .route("/v1/sandboxes/{name}/commit", post(commit))
        .route("/v1/sandboxes/{name}/discard", post(discard))
        .route("/v1/sandboxes/{name}/checkpoints", post(checkpoint).get(checkpoints))
        .route("/v1/sandboxes/{name}/rollback", post(rollback))
        .route("/v1/sandboxes/{name}/logs", get(logs))
        .route("/v1/sandboxes/{name}/stats", get(stats))
        .route("/v1/sandboxes/{name}/timeout", post(set_timeout))
        .route("/v1/pools", post(create_pool).get(list_pools))
        .route("/v1/pools/{name}", axum::routing::delete(delete_pool))
        .route("/openapi.json", get(crate::openapi::document))
        .fallback(|| async { ApiError::not_found("no such endpoint (see GET /openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(Code::BadRequest, "method not allowed on this endpoint (see GET /openapi.json)")
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FILE_BODY))
        .with_state(app)
}

/// A JSON body into `T`: malformed JSON, a wrong type or an unknown field is a `400` with serde's reason. An
/// empty body is `T`'s default when `T` has one (`{}`).
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> ApiResult<T> {
    if body.len() > MAX_JSON_BODY {
        return Err(ApiError::bad_request(format!("the body is larger than {MAX_JSON_BODY} bytes")));
    }
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let value: Value =
        serde_json::from_slice(text).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    // An object, never an array: serde would read a struct from a sequence of its fields in order (so `[null]`
    // would be a sandbox spec).
    if !value.is_object() {
        return Err(ApiError::bad_request("invalid JSON body: expected an object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The sandbox `name` if this daemon owns it (and it is not waiting in a pool).
pub fn owned(app: &App, name: &str) -> ApiResult<Entry> {
    policy::names::validate_sandbox_name(name).map_err(|_| ApiError::no_sandbox(&short(name)))?;
    match app.registry.get(name) {
        Some(e) if e.record.pool.is_none() && !e.creating => Ok(e),
        _ => Err(ApiError::no_sandbox(name)),
    }
}

/// A name cut for a message (a hostile 64 KiB name is not echoed whole).
fn short(name: &str) -> String {
    if name.len() <= 80 {
        return name.to_string();
    }
    let mut end = 80;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

/// The running sandbox's init (pid, start time), or a `409`.
pub fn running_init(app: &App, name: &str) -> ApiResult<(i32, u64)> {
    cli_record(&app.engine.state_dir, name)
        .as_ref()
        .and_then(live_init)
        .ok_or_else(|| ApiError::conflict(format!("sandbox {name} is not running")))
}

/// The JSON object of a sandbox (the fields of `airlock ls --json`, and the daemon's own).
pub fn sandbox_object(app: &App, record: &OwnedSandbox) -> Value {
    let cli = cli_record(&app.engine.state_dir, &record.name);
    let running = cli.as_ref().and_then(live_init).is_some();
    json!({
        "name": record.name,
        "state": match &cli { None => "creating", Some(_) if running => "running", Some(_) => "exited" },
        "created": cli.as_ref().map_or(record.requested, |c| c.created),
        "workspace": cli.as_ref().and_then(|c| c.workspace.clone()),
        "workspace_mode": cli.as_ref().and_then(|c| c.workspace_mode.clone()),
        "exit_code": if running { None } else { cli.as_ref().and_then(|c| c.exit_code) },
        "expires_at": record.expires_at,
        "spec": record.spec,
    })
}

async fn health(State(app): State<Shared>) -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "sandboxes": app.registry.len() }))
}

async fn create(State(app): State<Shared>, body: Bytes) -> ApiResult<Response> {
    let mut spec: SandboxSpec = parse_body(&body)?;
    spec.validate()?;
    confine_host_paths(&app, &mut spec)?;
    if spec.timeout.is_none() {
        spec.timeout.clone_from(&app.limits.default_timeout);
    }
    let record = match &spec.pool {
        Some(pool) => take_or_create_for_pool(&app, pool, &spec).await?,
        None => create_sandbox(&app, spec, None).await?,
    };
    Ok((StatusCode::CREATED, Json(sandbox_object(&app, &record))).into_response())
}

/// With `--workspace-root`: the spec's host paths (`workspace`, `rootfs` other than `host`) resolved, each under
/// one of the roots, else a `400`. The resolved path replaces the given one, so a symlink swapped in after this
/// check changes nothing.
fn confine_host_paths(app: &App, spec: &mut SandboxSpec) -> ApiResult<()> {
    if app.limits.host_roots.is_empty() {
        return Ok(());
    }
    let confine = |what: &str, path: &str| -> ApiResult<String> {
        let resolved = std::fs::canonicalize(path)
            .map_err(|e| ApiError::bad_request(format!("{what} {}: cannot resolve it: {e}", short(path))))?;
        if !app.limits.host_roots.iter().any(|root| resolved.starts_with(root)) {
            return Err(ApiError::bad_request(format!(
                "{what} {}: outside the directories this daemon shares (--workspace-root)",
                short(path)
            )));
        }
        Ok(resolved.display().to_string())
    };
    if let Some(w) = &spec.workspace {
        spec.workspace = Some(confine("workspace", w)?);
    }
    if let Some(r) = spec.rootfs.as_ref().filter(|r| r.as_str() != "host") {
        spec.rootfs = Some(confine("rootfs", r)?);
    }
    Ok(())
}

/// A sandbox from `pool` if one is ready; otherwise one made now from the pool's spec. The request may add a
/// lifetime (and nothing else: the rest of the sandbox was set up already). The E2B front end's creates from a
/// pool come here too.
pub async fn take_or_create_for_pool(app: &Shared, pool: &str, spec: &SandboxSpec) -> ApiResult<OwnedSandbox> {
    let extra = SandboxSpec { timeout: spec.timeout.clone(), pool: spec.pool.clone(), ..SandboxSpec::default() };
    if *spec != extra {
        return Err(ApiError::bad_request(
            "a create from a pool takes only `pool` and `timeout`; the pool's spec says the rest",
        ));
    }
    let Some(pool_record) = app.store.pools().ok().and_then(|p| p.into_iter().find(|p| p.name == pool)) else {
        return Err(ApiError::not_found(format!("no pool named {pool}")));
    };
    let lifetime = spec.lifetime()?;
    while let Some(mut taken) = app.registry.take_from_pool(pool) {
        app.pools_changed.notify_one();
        if cli_record(&app.engine.state_dir, &taken.name).as_ref().and_then(live_init).is_none() {
            // It died while waiting (killed from outside): remove it and take the next.
            let _ = remove_sandbox(app, &taken.name, false).await;
            continue;
        }
        taken.expires_at = lifetime.map(|d| now() + d.as_secs_f64());
        taken.spec.timeout = spec.timeout.clone();
        app.store.put_sandbox(&taken).map_err(|e| ApiError::internal(e.to_string()))?;
        app.registry.update(&taken.name, |r| *r = taken.clone());
        return Ok(taken);
    }
    let mut cold = pool_record.sandbox.clone();
    cold.timeout = spec.timeout.clone();
    create_sandbox(app, cold, None).await
}

/// Creates a sandbox from a checked spec: the owner record first, then `airlock create`; on failure both go.
/// `pool`: made to wait in that pool.
pub async fn create_sandbox(app: &Shared, spec: SandboxSpec, pool: Option<&str>) -> ApiResult<OwnedSandbox> {
    if app.registry.len() >= app.limits.max_sandboxes {
        return Err(ApiError::new(
            Code::Limit,
            format!("this daemon runs {} sandboxes, its limit (--max-sandboxes)", app.limits.max_sandboxes),
        ));
    }
    let name = match &spec.name {
        Some(name) => name.clone(),
        None => random_name(if pool.is_some() { "pool" } else { "sbx" }),
    };
    if app.engine.state_dir.join("sandboxes").join(&name).exists() {
        return Err(ApiError::conflict(format!("a sandbox named {name} exists already")));
    }
    let lifetime = spec.lifetime()?;
    let requested = now();
    let record = OwnedSandbox {
        name: name.clone(),
        requested,
        // A pooled sandbox's lifetime starts when a client takes it.
        expires_at: if pool.is_some() { None } else { lifetime.map(|d| requested + d.as_secs_f64()) },
        pool: pool.map(str::to_string),
        spec: SandboxSpec { name: Some(name.clone()), pool: None, ..spec },
    };
    if !app.registry.reserve(record.clone()) {
        return Err(ApiError::conflict(format!("a sandbox named {name} exists already")));
    }
    if let Err(e) = app.store.put_sandbox(&record) {
        app.registry.remove(&name);
        return Err(ApiError::internal(e.to_string()));
    }
    let done = app.engine.run(&record.spec.create_args(&name), None).await;
    match done {
        Ok(done) if done.ok() => {
            // A pooled sandbox is ready once it runs a command the fast way (`agent::wait_ready_for_pool`). (A
            // direct create answers at once; its first execs may go the long way.)
            if pool.is_some() {
                let dir = store::StateDir::at(app.engine.state_dir.clone()).sandbox(&name);
                crate::agent::wait_ready_for_pool(
                    &dir.agent_socket(),
                    &dir.path().join(session::vm::held::SOCKET_NAME),
                )
                .await;
            }
            app.registry.created(&name);
            Ok(record)
        }
        other => {
            // `airlock create` removes what it made when the setup fails; the owner record goes after it.
            let _ = app.store.remove_sandbox(&name);
            app.registry.remove(&name);
            Err(match other {
                Ok(done) => classify(&done),
                Err(e) => e,
            })
        }
    }
}

fn random_name(prefix: &str) -> String {
    let mut bytes = [0u8; 6];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

async fn list(State(app): State<Shared>) -> Json<Value> {
    let items: Vec<Value> = app
        .registry
        .all()
        .into_iter()
        .filter(|e| e.record.pool.is_none() && !e.creating)
        .map(|e| sandbox_object(&app, &e.record))
        .collect();
    Json(json!({ "sandboxes": items }))
}

async fn get_one(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let entry = owned(&app, &name)?;
    Ok(Json(sandbox_object(&app, &entry.record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    keep: bool,
}

async fn delete(
    State(app): State<Shared>,
    Path(name): Path<String>,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    owned(&app, &name)?;
    remove_sandbox(&app, &name, query.keep).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops `name` and, unless `keep`, removes it and its owner record. One at a time per sandbox (a second is a
/// `409`); execs end with the sandbox, so the delete does not wait behind them.
pub async fn remove_sandbox(app: &Shared, name: &str, keep: bool) -> ApiResult<()> {
    let entry = app.registry.get(name).ok_or_else(|| ApiError::no_sandbox(name))?;
    // A lifetime stop in progress ends first (the sandbox may already show `exited` while its supervisor
    // finishes): this delete follows it rather than being refused as a second delete.
    drop(entry.lock.lifetime_stop.lock().await);
    delete_entry(app, &entry, name, keep).await
}

/// A sandbox's lifetime ran out: the daemon stops it (and keeps it, for `diff` and `commit`).
pub async fn stop_at_end_of_lifetime(app: &Shared, name: &str) -> ApiResult<()> {
    let entry = app.registry.get(name).ok_or_else(|| ApiError::no_sandbox(name))?;
    let _stopping = entry.lock.lifetime_stop.lock().await;
    delete_entry(app, &entry, name, true).await
}

/// Stops the sandbox, waits for its execs and changes to end, and unless `keep` removes it.
async fn delete_entry(app: &Shared, entry: &Entry, name: &str, keep: bool) -> ApiResult<()> {
    let _mark = entry.lock.begin_delete(name)?;
    if running_init(app, name).is_ok() {
        let stopped = app.engine.run(&[OsString::from("stop"), "--".into(), name.into()], None).await?;
        // "not running": it ended between the check and the stop, which is what was wanted.
        if !stopped.ok() && !stopped.message.contains("not running") {
            return Err(classify(&stopped));
        }
    }
    let _all = entry.lock.drain().await;
    if keep {
        return Ok(());
    }
    if app.engine.state_dir.join("sandboxes").join(name).exists() {
        // The supervisor writes its last records (final stats, the audit log's end) after init is gone; a
        // removal racing those writes can find a directory refilled under it. Retried briefly, then an error.
        let mut last = None;
        for attempt in 0..20 {
            let done = app.engine.run(&[OsString::from("rm"), "--".into(), name.into()], None).await?;
            if done.ok() || done.message.starts_with("no sandbox named") {
                last = None;
                break;
            }
            last = Some(classify(&done));
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        if let Some(err) = last {
            return Err(err);
        }
    }
    app.store.remove_sandbox(name).map_err(|e| ApiError::internal(e.to_string()))?;
    app.registry.remove(name);
    Ok(())
}

fn name_args(sub: &str, name: &str, rest: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![sub.into()];
    args.extend(rest.iter().map(OsString::from));
    args.push("--".into());
    args.push(name.into());
    args
}

fn json_of(stdout: &[u8], what: &str) -> ApiResult<Value> {
    serde_json::from_slice(stdout).map_err(|e| ApiError::internal(format!("airlock {what} printed no JSON: {e}")))
}

async fn diff(
    State(app): State<Shared>,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut exclude = Vec::new();
    let mut gitignore = false;
    for (key, value) in query {
        match key.as_str() {
            "exclude" => exclude.push(value),
            "gitignore" => {
                gitignore = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "gitignore: {:?} is not true or false",
                            short(&value)
                        )))
                    }
                }
            }
            _ => return Err(ApiError::bad_request(format!("unknown query parameter {:?}", short(&key)))),
        }
    }
    let entry = owned(&app, &name)?;
    let _shared = entry.lock.share(&name)?;
    let mut flags: Vec<String> = vec!["--json".into()];
    flags.extend(exclude_flags(&exclude, gitignore)?);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let done = app.engine.run_ok(&name_args("diff", &name, &flags)).await?;
    Ok(Json(json_of(&done.stdout, "diff --json")?))
}

/// `--exclude=PATTERN` (one argument, so a pattern can never be read as a flag) and `--gitignore`.
fn exclude_flags(exclude: &[String], gitignore: bool) -> ApiResult<Vec<String>> {
    let mut flags = Vec::new();
    for pattern in exclude {
        store::layer::check_patterns(std::slice::from_ref(pattern))
            .map_err(|e| ApiError::bad_request(format!("exclude: {e}")))?;
        flags.push(format!("--exclude={pattern}"));
    }
    if gitignore {
        flags.push("--gitignore".into());
    }
    Ok(flags)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    gitignore: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathsBody {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    force: bool,
}

/// `NAME -- PATH...` after a subcommand: the paths can never be read as flags.
fn with_paths(sub: &str, name: &str, flags: &[&str], paths: &[String]) -> ApiResult<Vec<OsString>> {
    let mut args: Vec<OsString> = vec![sub.into()];
    args.extend(flags.iter().map(OsString::from));
    args.push("--".into());
    args.push(name.into());
    for p in paths {
        if p.is_empty() || p.contains('\0') || p.len() > 4096 {
            return Err(ApiError::bad_request(format!("paths: {p:?} is not a path")));
        }
        args.push(p.into());
    }
    Ok(args)
}

/// The count in "committed 3 changes to …" / "discarded 1 change".
fn count_in(stdout: &[u8]) -> u64 {
    String::from_utf8_lossy(stdout).split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

async fn commit(State(app): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Value>> {
    let req: CommitBody = parse_body(&body)?;
    let mut flags: Vec<String> = if req.force { vec!["--force".into()] } else { Vec::new() };
    let excluding = !req.exclude.is_empty() || req.gitignore;
    flags.extend(exclude_flags(&req.exclude, req.gitignore)?);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let entry = owned(&app, &name)?;
    let _change = entry.lock.change(&name)?;
    let done = app.engine.run(&with_paths("commit", &name, &flags, &req.paths)?, None).await?;
    if done.ok() {
        if excluding {
            // "12 paths excluded (...), left in the layer" on the second line, when any were.
            let excluded: u64 = String::from_utf8_lossy(&done.stdout)
                .lines()
                .nth(1)
                .and_then(|line| line.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            return Ok(Json(json!({ "committed": count_in(&done.stdout), "excluded": excluded })));
        }
        return Ok(Json(json!({ "committed": count_in(&done.stdout) })));
    }
    let mut err = classify(&done);
    if done.status == 1 && done.message.starts_with("commit refused") {
        let conflicts: Vec<String> = String::from_utf8_lossy(&done.stdout).lines().map(str::to_string).collect();
        err = ApiError::conflict(done.message.clone());
        err.details = Some(json!({ "conflicts": conflicts }));
    }
    Err(err)
}

async fn discard(State(app): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Value>> {
    let req: PathsBody = parse_body(&body)?;
    if req.force {
        return Err(ApiError::bad_request("discard takes no `force`"));
    }
    let entry = owned(&app, &name)?;
    let _change = entry.lock.change(&name)?;
    let done = app.engine.run_ok(&with_paths("discard", &name, &[], &req.paths)?).await?;
    Ok(Json(json!({ "discarded": count_in(&done.stdout) })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelBody {
    #[serde(default)]
    label: Option<String>,
}

fn check_label(label: &str) -> ApiResult<()> {
    if label.is_empty()
        || label.len() > 64
        || !label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || label.starts_with(['-', '.'])
    {
        return Err(ApiError::bad_request(format!(
            "label {:?}: letters, digits, `.`, `_`, `-`, at most 64, not starting with `-` or `.`",
            short(label)
        )));
    }
    Ok(())
}

async fn checkpoint(State(app): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult<Response> {
    let req: LabelBody = parse_body(&body)?;
    if let Some(label) = &req.label {
        check_label(label)?;
    }
    let entry = owned(&app, &name)?;
    let _change = entry.lock.change(&name)?;
    let mut args = name_args("checkpoint", &name, &[]);
    if let Some(label) = &req.label {
        args.push(label.into());
    }
    app.engine.run_ok(&args).await?;
    let list = checkpoint_list(&app, &name).await?;
    let newest = list.get("checkpoints").and_then(Value::as_array).and_then(|a| a.last()).cloned();
    Ok((StatusCode::CREATED, Json(newest.unwrap_or(json!({ "label": req.label })))).into_response())
}

async fn checkpoint_list(app: &App, name: &str) -> ApiResult<Value> {
    let done = app.engine.run_ok(&name_args("checkpoints", name, &["--json"])).await?;
    json_of(&done.stdout, "checkpoints --json")
}

async fn checkpoints(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    owned(&app, &name)?;
    Ok(Json(checkpoint_list(&app, &name).await?))
}

async fn rollback(State(app): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult<StatusCode> {
    let req: LabelBody = parse_body(&body)?;
    let Some(label) = req.label else {
        return Err(ApiError::bad_request("rollback needs a `label`"));
    };
    check_label(&label)?;
    let entry = owned(&app, &name)?;
    let _change = entry.lock.change(&name)?;
    let mut args = name_args("rollback", &name, &[]);
    args.push(label.into());
    app.engine.run_ok(&args).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(app): State<Shared>,
    Path(name): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    owned(&app, &name)?;
    let flags: &[&str] = if query.follow { &["--json", "--follow"] } else { &["--json"] };
    let args = name_args("logs", &name, flags);
    if !query.follow {
        let done = app.engine.run_ok(&args).await?;
        return Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], done.stdout).into_response());
    }
    // Follow: the records as `airlock logs -f` prints them, until the sandbox ends or the client goes (then the
    // follower is killed: dropping the body drops the child, which `kill_on_drop` ends).
    let mut cmd = app.engine.command(&args);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| ApiError::internal(format!("cannot start airlock logs: {e}")))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(ApiError::internal("airlock logs has no output pipe"));
    };
    let stream = futures::stream::unfold((stdout, child), |(mut out, child)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16 << 10];
        match out.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (out, child)))
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

async fn stats(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    owned(&app, &name)?;
    let done = app.engine.run(&name_args("stats", &name, &["--json"]), None).await?;
    let no_cgroup = || {
        ApiError::conflict(format!(
            "sandbox {name} has no resource limits, so no cgroup counts what it uses (create it with memory, pids \
             or cpus to have stats)"
        ))
    };
    if !done.ok() {
        // The sandbox exists (owned says so): an ended one that "kept no numbers" had no cgroup.
        if done.message.contains("kept no numbers") {
            return Err(no_cgroup());
        }
        return Err(classify(&done));
    }
    let stats = json_of(&done.stdout, "stats --json")?;
    // A running sandbox without a cgroup: the CLI reads its processes from /proc (`source: proc`); the API keeps
    // its answer for that case, no stats.
    if stats["source"] == "proc" {
        return Err(no_cgroup());
    }
    Ok(Json(stats))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutBody {
    timeout: String,
}

async fn set_timeout(State(app): State<Shared>, Path(name): Path<String>, body: Bytes) -> ApiResult<Json<Value>> {
    let req: TimeoutBody = parse_body(&body)?;
    let spec = SandboxSpec { timeout: Some(req.timeout.clone()), ..SandboxSpec::default() };
    let Some(lifetime) = spec.lifetime()? else {
        return Err(ApiError::bad_request("timeout: missing"));
    };
    owned(&app, &name)?;
    let record = app
        .registry
        .update(&name, |r| {
            r.expires_at = Some(now() + lifetime.as_secs_f64());
            r.spec.timeout = Some(req.timeout.clone());
        })
        .ok_or_else(|| ApiError::no_sandbox(&name))?;
    app.store.put_sandbox(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(sandbox_object(&app, &record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolBody {
    name: String,
    size: usize,
    #[serde(default)]
    sandbox: SandboxSpec,
}

/// The most sandboxes one pool keeps ready.
const MAX_POOL_SIZE: usize = 64;

async fn create_pool(State(app): State<Shared>, body: Bytes) -> ApiResult<Response> {
    let mut req: PoolBody = parse_body(&body)?;
    policy::names::validate_sandbox_name(&req.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    if req.size > MAX_POOL_SIZE {
        return Err(ApiError::bad_request(format!("size: at most {MAX_POOL_SIZE}")));
    }
    if req.sandbox.name.is_some() || req.sandbox.pool.is_some() {
        return Err(ApiError::bad_request("sandbox: a pool's sandboxes take no `name` or `pool`"));
    }
    req.sandbox.validate()?;
    confine_host_paths(&app, &mut req.sandbox)?;
    if app.store.pools().map_err(|e| ApiError::internal(e.to_string()))?.iter().any(|p| p.name == req.name) {
        return Err(ApiError::conflict(format!("a pool named {} exists already", req.name)));
    }
    let record = PoolRecord { name: req.name, size: req.size, sandbox: req.sandbox };
    app.store.put_pool(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    app.pools_changed.notify_one();
    Ok((StatusCode::CREATED, Json(pool_object(&app, &record))).into_response())
}

fn pool_object(app: &App, pool: &PoolRecord) -> Value {
    json!({ "name": pool.name, "size": pool.size, "ready": app.registry.pooled(&pool.name), "sandbox": pool.sandbox })
}

async fn list_pools(State(app): State<Shared>) -> ApiResult<Json<Value>> {
    let pools = app.store.pools().map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "pools": pools.iter().map(|p| pool_object(&app, p)).collect::<Vec<_>>() })))
}

async fn delete_pool(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let pools = app.store.pools().map_err(|e| ApiError::internal(e.to_string()))?;
    if !pools.iter().any(|p| p.name == name) {
        return Err(ApiError::not_found(format!("no pool named {}", short(&name))));
    }
    // The record first: the filler stops refilling, then the ready sandboxes go.
    app.store.remove_pool(&name).map_err(|e| ApiError::internal(e.to_string()))?;
    for entry in app.registry.all() {
        if entry.record.pool.as_deref() == Some(&name) && !entry.creating {
            match remove_sandbox(&app, &entry.record.name, false).await {
                // Gone already, or being removed by the filler (its create finished after the pool went): that
                // removal ends on its own.
                Err(e) if matches!(e.code, Code::Conflict | Code::NotFound) => {}
                other => other?,
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the request asked for JSON lines.
pub fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with("application/x-ndjson")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    /// A value of the schema's type (the first alternative of a `oneOf`, the first of an `enum`).
    fn sample(schema: &Value, doc: &Value) -> Value {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.rsplit('/').next().unwrap();
            return sample(&doc["components"]["schemas"][name], doc);
        }
        if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
            return first.clone();
        }
        if let Some(first) = schema["oneOf"].as_array().and_then(|e| e.first()) {
            return sample(first, doc);
        }
        match schema["type"].as_str() {
            Some("string") => json!("x"),
            Some("integer") => json!(1),
            Some("number") => json!(1.5),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            _ => json!({}),
        }
    }

    /// Every property the document gives a request schema: the struct takes it; one it does not give: refused.
    fn check_request_schema<T: for<'de> Deserialize<'de>>(name: &str) {
        let doc: Value = serde_json::from_str(crate::openapi::DOCUMENT).unwrap();
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["additionalProperties"], false, "{name}: unknown fields are refused, so say so");
        let mut full = Map::new();
        for (prop, s) in schema["properties"].as_object().unwrap() {
            full.insert(prop.clone(), sample(s, &doc));
        }
        let parsed = serde_json::from_value::<T>(Value::Object(full.clone()));
        assert!(parsed.is_ok(), "{name}: documented properties refused: {:?}", parsed.err());
        for required in schema["required"].as_array().into_iter().flatten() {
            let mut without = full.clone();
            without.remove(required.as_str().unwrap());
            assert!(serde_json::from_value::<T>(Value::Object(without)).is_err(), "{name}: {required} is required");
        }
        full.insert("undocumented_property".into(), json!(1));
        assert!(serde_json::from_value::<T>(Value::Object(full)).is_err(), "{name} takes an undocumented property");
    }

    #[test]
    fn a_body_is_an_object() {
        for bad in ["[null, null]", "[]", "null", "1", "\"x\"", "{", "{\"name\": 1}"] {
            let body = Bytes::from(bad);
            assert!(parse_body::<SandboxSpec>(&body).is_err(), "{bad} was taken");
        }
        assert!(parse_body::<SandboxSpec>(&Bytes::from("  ")).is_ok(), "an empty body is {{}}");
        assert!(parse_body::<SandboxSpec>(&Bytes::from("{}")).is_ok());
    }

    #[test]
    fn request_schemas_are_the_structs() {
        check_request_schema::<SandboxSpec>("SandboxSpec");
        check_request_schema::<crate::exec::ExecRequest>("ExecRequest");
        check_request_schema::<PathsBody>("PathsBody");
        check_request_schema::<LabelBody>("LabelBody");
        check_request_schema::<TimeoutBody>("TimeoutBody");
        check_request_schema::<PoolBody>("PoolBody");
    }

    #[test]
    fn error_codes_are_the_documented_ones() {
        let doc: Value = serde_json::from_str(crate::openapi::DOCUMENT).unwrap();
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"];
        for code in [
            Code::BadRequest,
            Code::NotFound,
            Code::Conflict,
            Code::Unauthorized,
            Code::Limit,
            Code::SetupFailed,
            Code::Internal,
        ] {
            let text = json!(code.as_str());
            assert!(codes.as_array().unwrap().contains(&text), "{text} is not documented");
        }
    }
}
