//! E2B's control plane (`spec/openapi.yml` in e2b-dev/infra, as SDK 2.63.0 calls it): create, get, list, kill,
//! set the timeout of, and connect to sandboxes. Each maps onto the daemon's own operations (its engine, owner
//! records and lifetimes); what E2B says about a sandbox beyond that (its template, its metadata) is kept in
//! `$STATE/e2b/sandboxes/ID.json`.
//!
//! A sandbox that is not running (it was killed, or its lifetime ran out) is gone as far as E2B is concerned:
//! `404`, as E2B answers, so the SDK raises its NotFound. Errors are E2B's `{"code": int, "message"}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use daemon::spec::{Cpus, SandboxSpec, Size};
use daemon::store::{cli_record, live_init, now, OwnedSandbox};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{E2bState, ENVD_VERSION};

/// E2B's default sandbox lifetime, when a create names none (seconds).
const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The longest lifetime taken (E2B's own limit for its paid tier is 24 hours).
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// The page size of a list without `limit`, and the largest taken.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// An E2B error answer: the status and `{"code": status, "message"}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ControlError {
    pub status: StatusCode,
    pub message: String,
}

impl ControlError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ControlError {
        ControlError { status, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> ControlError {
        ControlError::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(id: &str) -> ControlError {
        ControlError::new(StatusCode::NOT_FOUND, format!("sandbox {id} not found"))
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "code": self.status.as_u16(), "message": self.message }))).into_response()
    }
}

impl From<daemon::error::ApiError> for ControlError {
    fn from(e: daemon::error::ApiError) -> ControlError {
        use daemon::error::Code;
        let status = match e.code {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Conflict => StatusCode::CONFLICT,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Limit => StatusCode::TOO_MANY_REQUESTS,
            Code::SetupFailed | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ControlError::new(status, e.message)
    }
}

type ControlResult<T> = Result<T, ControlError>;

fn check_key(e2b: &crate::E2b, headers: &HeaderMap) -> ControlResult<()> {
    if e2b.api_key_ok(headers) {
        Ok(())
    } else {
        Err(ControlError::new(StatusCode::UNAUTHORIZED, "missing or wrong X-API-KEY (the SDK's E2B_API_KEY)"))
    }
}

/// What E2B says about a sandbox that airlock does not keep.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SideRecord {
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn side_path(e2b: &crate::E2b, id: &str) -> std::path::PathBuf {
    e2b.dir.join("sandboxes").join(format!("{id}.json"))
}

fn read_side(e2b: &crate::E2b, id: &str) -> SideRecord {
    std::fs::read(side_path(e2b, id))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| SideRecord { template_id: "base".into(), metadata: BTreeMap::new() })
}

/// Written whole to a temporary name and renamed, as the daemon's own records are.
fn write_side(e2b: &crate::E2b, id: &str, record: &SideRecord) -> std::io::Result<()> {
    let path = side_path(e2b, id);
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    file.write_all(&text)?;
    std::fs::rename(&tmp, &path)
}

/// `POST /sandboxes` and `/v2/sandboxes`: the fields the SDK sends (`autoPause`, `network`, `mcp`, … are taken
/// and ignored: airlock has no pause, and its network is the profile's).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(rename = "templateID", default)]
    template_id: Option<String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(rename = "allow_internet_access", default)]
    allow_internet_access: Option<bool>,
}

/// The metadata key that picks the sandbox's isolation (`namespaces` or `vm`, as `airlock create --isolation`),
/// after the `dev.airlock.*` annotations of the OCI runtime.
const ISOLATION_KEY: &str = "dev.airlock.isolation";

fn isolation_asked(req: &CreateBody) -> Option<String> {
    req.metadata.as_ref().and_then(|m| m.get(ISOLATION_KEY)).cloned()
}

fn lifetime(seconds: Option<u64>) -> ControlResult<u64> {
    let s = seconds.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if s == 0 || s > MAX_TIMEOUT_SECS {
        return Err(ControlError::bad_request(format!("timeout: 1 to {MAX_TIMEOUT_SECS} seconds")));
    }
    Ok(s)
}

pub async fn create(State(e2b): State<E2bState>, headers: HeaderMap, body: Bytes) -> ControlResult<Response> {
    check_key(&e2b, &headers)?;
    let req: CreateBody = serde_json::from_slice(if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body })
        .map_err(|e| ControlError::bad_request(format!("invalid JSON body: {e}")))?;
    let seconds = lifetime(req.timeout)?;
    let template = req.template_id.clone().unwrap_or_else(|| "base".into());
    let record = match pool_named(&e2b, &template)? {
        Some(pool) => create_from_pool(&e2b, &req, &pool, seconds).await?,
        None => create_from_profile(&e2b, &req, &template, seconds).await?,
    };
    let side = SideRecord { template_id: template, metadata: req.metadata.unwrap_or_default() };
    if let Err(e) = write_side(&e2b, &record.name, &side) {
        // The sandbox is made; without its side record it reads as template `base` with no metadata.
        eprintln!("airlock: cannot keep the E2B record of {}: {e}", record.name);
    }
    Ok((StatusCode::CREATED, Json(created_object(&e2b, &record.name, &side))).into_response())
}

/// The daemon's warm pool named `template`, if there is one (`POST /v1/pools` on its REST API): a pool's name
/// is a template, tried before the profiles, so even `base` (the SDK's default) can be served warm.
fn pool_named(e2b: &crate::E2b, template: &str) -> ControlResult<Option<daemon::store::PoolRecord>> {
    let pools = e2b.app.store.pools().map_err(|e| {
        ControlError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the daemon's pools: {e}"))
    })?;
    Ok(pools.into_iter().find(|p| p.name == template))
}

/// A ready sandbox from the pool (a cold one made from the pool's spec when none is ready; the daemon's filler
/// then makes the pool whole again). Its environment and network were set when it was made: a create that
/// asks for others is refused rather than answered with a sandbox that has not got them.
async fn create_from_pool(
    e2b: &E2bState,
    req: &CreateBody,
    pool: &daemon::store::PoolRecord,
    seconds: u64,
) -> ControlResult<OwnedSandbox> {
    // The pool's sandboxes are made already: an isolation asked for must be the one they have, which their
    // spec gives, or else its profile.
    if let Some(asked) = isolation_asked(req) {
        let Some(asked) = policy::sandbox::Isolation::from_name(&asked) else {
            return Err(ControlError::bad_request(format!(
                "metadata {ISOLATION_KEY}: expected {}, not {asked}",
                policy::sandbox::Isolation::EXPECTED
            )));
        };
        let pooled = pool.sandbox.isolation_of_sandboxes().map_err(|e| {
            ControlError::bad_request(format!(
                "template {}: cannot tell the isolation of the warm pool's sandboxes ({e}); give it in the pool's \
                 spec (\"isolation\")",
                pool.name
            ))
        })?;
        if asked != pooled {
            return Err(ControlError::bad_request(format!(
                "template {}: a warm pool's sandboxes are made already, with isolation {}, not {}: \
                 {ISOLATION_KEY} goes in the pool's spec (\"isolation\") or its profile",
                pool.name,
                pooled.as_str(),
                asked.as_str()
            )));
        }
    }
    if req.env_vars.as_ref().is_some_and(|env| !env.is_empty()) {
        return Err(ControlError::bad_request(format!(
            "template {}: a warm pool's sandboxes are made already, so they take no envs at create (give them to \
             commands.run, or to the pool's spec)",
            pool.name
        )));
    }
    if req.allow_internet_access == Some(false) && pool.sandbox.net.as_deref() != Some("none") {
        return Err(ControlError::bad_request(format!(
            "template {}: the pool's sandboxes have a network; allow_internet_access=False needs a pool made with \
             \"net\": \"none\"",
            pool.name
        )));
    }
    let spec =
        SandboxSpec { pool: Some(pool.name.clone()), timeout: Some(format!("{seconds}s")), ..SandboxSpec::default() };
    Ok(daemon::api::take_or_create_for_pool(&e2b.app, &pool.name, &spec).await?)
}

/// A sandbox made now: template `base`, E2B's default, is airlock's default profile; any other names an image in
/// the daemon's image store (`airlock image pull` / `import`), else a profile (a built-in by name, or a file on
/// the daemon's host when it has a `/` or ends in `.toml`).
async fn create_from_profile(
    e2b: &E2bState,
    req: &CreateBody,
    template: &str,
    seconds: u64,
) -> ControlResult<OwnedSandbox> {
    let image = (template != "base")
        .then(|| image::ImageStore::open(&e2b.app.engine.state_dir).ok())
        .flatten()
        .and_then(|store| store.resolve(template).ok())
        .map(|_| template.to_string());
    if template != "base" && image.is_none() {
        if let policy::profile::ProfileRef::Builtin(name) = policy::profile::ProfileRef::from_arg(template) {
            if policy::profile::builtin_profile_source(&name).is_none() {
                return Err(ControlError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "template {template} not found: it names no warm pool of this daemon (POST /v1/pools), \
                         no image in its store (airlock image pull) and no profile (built-in: {})",
                        policy::profile::builtin_profile_names().join(", ")
                    ),
                ));
            }
        }
    }
    let spec = SandboxSpec {
        profile: (template != "base" && image.is_none()).then(|| template.to_string()),
        isolation: isolation_asked(req),
        image,
        env: req.env_vars.clone().unwrap_or_default(),
        net: (req.allow_internet_access == Some(false)).then(|| "none".to_string()),
        timeout: Some(format!("{seconds}s")),
        ..SandboxSpec::default()
    };
    spec.validate()?;
    Ok(daemon::api::create_sandbox(&e2b.app, spec, None).await?)
}

/// The `Sandbox` object of a create or connect.
fn created_object(e2b: &crate::E2b, id: &str, side: &SideRecord) -> Value {
    json!({
        "templateID": side.template_id,
        "sandboxID": id,
        "clientID": "airlock",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": e2b.envd_token(id),
    })
}

fn rfc3339(unix: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `SandboxDetail` / `ListedSandbox` object.
fn detail_object(e2b: &crate::E2b, record: &OwnedSandbox, with_token: bool) -> Value {
    let side = read_side(e2b, &record.name);
    let started = cli_record(&e2b.app.engine.state_dir, &record.name).map_or(record.requested, |c| c.created);
    // No lifetime: the end E2B shows is far off (a day from now), never "now".
    let end = record.expires_at.unwrap_or(now() + 86400.0);
    let cpus = match &record.spec.cpus {
        Some(Cpus::Number(n)) => n.ceil() as u64,
        Some(Cpus::Text(t)) => t.parse::<f64>().map_or(1, |n| n.ceil() as u64),
        None => std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    };
    let memory_mb = match &record.spec.memory {
        Some(Size::Bytes(b)) => b >> 20,
        Some(Size::Text(t)) => policy::units::parse_nonzero_size(t).map_or(0, |b| b >> 20),
        None => 0,
    };
    let disk_mb = match &record.spec.disk {
        Some(Size::Bytes(b)) => b >> 20,
        Some(Size::Text(t)) => policy::units::parse_nonzero_size(t).map_or(0, |b| b >> 20),
        None => 0,
    };
    let mut object = json!({
        "templateID": side.template_id,
        "sandboxID": record.name,
        "clientID": "airlock",
        "startedAt": rfc3339(started),
        "endAt": rfc3339(end),
        "envdVersion": ENVD_VERSION,
        "cpuCount": cpus,
        "memoryMB": memory_mb,
        "diskSizeMB": disk_mb,
        "state": "running",
        "metadata": side.metadata,
    });
    if with_token {
        object["envdAccessToken"] = Value::String(e2b.envd_token(&record.name));
    }
    object
}

/// The running sandbox `id` this daemon owns, if any.
fn running(e2b: &crate::E2b, id: &str) -> Option<OwnedSandbox> {
    let entry = daemon::api::owned(&e2b.app, id).ok()?;
    cli_record(&e2b.app.engine.state_dir, id).as_ref().and_then(live_init)?;
    Some(entry.record)
}

pub async fn get_one(
    State(e2b): State<E2bState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ControlResult<Json<Value>> {
    check_key(&e2b, &headers)?;
    let record = running(&e2b, &id).ok_or_else(|| ControlError::not_found(&id))?;
    Ok(Json(detail_object(&e2b, &record, true)))
}

pub async fn kill(
    State(e2b): State<E2bState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ControlResult<StatusCode> {
    check_key(&e2b, &headers)?;
    // An exited sandbox is not found for E2B, but a kill still removes what is left of it.
    daemon::api::owned(&e2b.app, &id).map_err(|_| ControlError::not_found(&id))?;
    match daemon::api::remove_sandbox(&e2b.app, &id, false).await {
        Ok(()) => {}
        // Another kill, or the removal of an ended sandbox (see `remove_ended`), got there first: for E2B the
        // sandbox is gone already, which the SDK's kill reports as False.
        Err(e) if e.code == daemon::error::Code::Conflict && e.message.contains("being deleted") => {
            return Err(ControlError::not_found(&id));
        }
        Err(e) => return Err(e.into()),
    }
    let _ = std::fs::remove_file(side_path(&e2b, &id));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct TimeoutBody {
    timeout: Option<u64>,
}

/// A new lifetime for `id`, counted from now (E2B's meaning of `set_timeout`), kept in the owner record.
fn extend(e2b: &crate::E2b, id: &str, seconds: u64) -> ControlResult<OwnedSandbox> {
    let record = e2b
        .app
        .registry
        .update(id, |r| {
            r.expires_at = Some(now() + seconds as f64);
            r.spec.timeout = Some(format!("{seconds}s"));
        })
        .ok_or_else(|| ControlError::not_found(id))?;
    e2b.app
        .store
        .put_sandbox(&record)
        .map_err(|e| ControlError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(record)
}

fn timeout_body(body: &Bytes) -> ControlResult<Option<u64>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<TimeoutBody>(body)
        .map(|b| b.timeout)
        .map_err(|e| ControlError::bad_request(format!("invalid JSON body: {e}")))
}

pub async fn set_timeout(
    State(e2b): State<E2bState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ControlResult<StatusCode> {
    check_key(&e2b, &headers)?;
    let seconds = lifetime(Some(timeout_body(&body)?.ok_or_else(|| ControlError::bad_request("timeout: missing"))?))?;
    running(&e2b, &id).ok_or_else(|| ControlError::not_found(&id))?;
    extend(&e2b, &id, seconds)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/connect`: a running sandbox answers `200` with its `Sandbox` object, its lifetime
/// made at least `timeout` from now. There is no paused state to resume from: anything else is not found.
pub async fn connect(
    State(e2b): State<E2bState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ControlResult<Json<Value>> {
    check_key(&e2b, &headers)?;
    let asked = timeout_body(&body)?;
    let record = running(&e2b, &id).ok_or_else(|| ControlError::not_found(&id))?;
    if let Some(seconds) = asked {
        let seconds = lifetime(Some(seconds))?;
        // Only ever longer: a connect must not cut short a lifetime set before.
        if record.expires_at.is_some_and(|at| at < now() + seconds as f64) {
            extend(&e2b, &id, seconds)?;
        }
    }
    Ok(Json(created_object(&e2b, &id, &read_side(&e2b, &id))))
}

/// How often ended E2B sandboxes are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Removes each E2B sandbox that is no longer running (its lifetime ran out and the daemon stopped it, or its
/// init died). The daemon's own API keeps a stopped sandbox for `diff` and `commit`; E2B has no such state and
/// its clients never delete a sandbox that timed out (to them it is gone), so without this its state would stay
/// on disk for good.
pub async fn remove_ended(e2b: E2bState) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Ok(dir) = std::fs::read_dir(e2b.dir.join("sandboxes")) else { continue };
        let ids: Vec<String> = dir
            .filter_map(|d| d.ok()?.file_name().into_string().ok()?.strip_suffix(".json").map(str::to_string))
            .collect();
        for id in ids {
            let Some(entry) = e2b.app.registry.get(&id) else {
                // Removed through the daemon's own API: only the side record is left.
                let _ = std::fs::remove_file(side_path(&e2b, &id));
                continue;
            };
            if entry.creating || cli_record(&e2b.app.engine.state_dir, &id).as_ref().and_then(live_init).is_some() {
                continue;
            }
            if daemon::api::remove_sandbox(&e2b.app, &id, false).await.is_ok() {
                let _ = std::fs::remove_file(side_path(&e2b, &id));
            }
        }
    }
}

/// `%XX` and `+` decoded (a query string's value).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's pairs, decoded, repeated keys kept.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// What a list asks for.
#[derive(Debug, Default)]
struct ListQuery {
    /// `key=value` pairs every listed sandbox's metadata must hold.
    metadata: Map<String, Value>,
    /// Only `running` ones exist here; asking only for `paused` lists nothing.
    states: Vec<String>,
    limit: Option<usize>,
    next_token: Option<String>,
    newest_first: bool,
}

fn parse_list_query(query: Option<&str>) -> ControlResult<ListQuery> {
    let mut q = ListQuery::default();
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            // `metadata` is itself url-encoded `k=v&k2=v2`.
            "metadata" => {
                for (k, v) in query_pairs(Some(&value)) {
                    q.metadata.insert(k, Value::String(v));
                }
            }
            "state" => q.states.extend(value.split(',').map(str::to_string)),
            "limit" => {
                let n: usize =
                    value.parse().map_err(|_| ControlError::bad_request(format!("limit {value:?}: a number")))?;
                q.limit = Some(n.clamp(1, MAX_PAGE));
            }
            "nextToken" => q.next_token = Some(value).filter(|v| !v.is_empty()),
            "order" => q.newest_first = value.eq_ignore_ascii_case("desc"),
            _ => {}
        }
    }
    Ok(q)
}

/// Where a sandbox sorts in a list: when it was asked for (microseconds), then its id.
type SortKey = (u64, String);

/// A page's next token: the sort key of its last sandbox, `MICROS.ID`. The next page starts after that key, so
/// a sandbox removed in between (the token's own included) shifts nothing.
fn token_of(key: &SortKey) -> String {
    format!("{}.{}", key.0, key.1)
}

fn key_of_token(token: &str) -> ControlResult<SortKey> {
    token
        .split_once('.')
        .and_then(|(micros, id)| Some((micros.parse().ok()?, id.to_string())))
        .ok_or_else(|| ControlError::bad_request("nextToken: not a token this server gave"))
}

/// The running sandboxes a list shows, in order, before paging.
fn listed(e2b: &crate::E2b, q: &ListQuery) -> Vec<(SortKey, Value)> {
    if !q.states.is_empty() && !q.states.iter().any(|s| s == "running") {
        return Vec::new();
    }
    let mut items: Vec<(SortKey, Value)> = e2b
        .app
        .registry
        .all()
        .into_iter()
        .filter(|e| e.record.pool.is_none() && !e.creating)
        .filter(|e| cli_record(&e2b.app.engine.state_dir, &e.record.name).as_ref().and_then(live_init).is_some())
        .map(|e| {
            let key = ((e.record.requested.max(0.0) * 1e6) as u64, e.record.name.clone());
            (key, detail_object(e2b, &e.record, false))
        })
        .filter(|(_, v)| q.metadata.iter().all(|(k, want)| v["metadata"].get(k) == Some(want)))
        .collect();
    // Oldest first unless asked otherwise.
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if q.newest_first {
        items.reverse();
    }
    items
}

fn list_answer(e2b: &crate::E2b, query: Option<&str>, paged: bool) -> ControlResult<Response> {
    let q = parse_list_query(query)?;
    let mut items = listed(e2b, &q);
    let total = items.len();
    if !paged {
        return Ok(Json(items.into_iter().map(|(_, v)| v).collect::<Vec<_>>()).into_response());
    }
    if let Some(token) = &q.next_token {
        let after = key_of_token(token)?;
        items.retain(|(key, _)| if q.newest_first { *key < after } else { *key > after });
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = items.last().map(|(key, _)| token_of(key));
    let page: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    let mut response = Json(page).into_response();
    if let Some(token) = next.filter(|_| more).and_then(|t| HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert("x-next-token", token);
    }
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        response.headers_mut().insert("x-total-running", v);
    }
    Ok(response)
}

pub async fn list_v1(
    State(e2b): State<E2bState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ControlResult<Response> {
    check_key(&e2b, &headers)?;
    list_answer(&e2b, query.as_deref(), false)
}

pub async fn list_v2(
    State(e2b): State<E2bState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ControlResult<Response> {
    check_key(&e2b, &headers)?;
    list_answer(&e2b, query.as_deref(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip() {
        let key = (1_700_000_000_123_456, "sbx-a.b".to_string());
        assert_eq!(key_of_token(&token_of(&key)).unwrap(), key);
        assert!(key_of_token("sbx-abc").is_err());
    }

    #[test]
    fn queries_decode() {
        assert_eq!(percent_decode("a%3Db%26c+d"), "a=b&c d");
        assert_eq!(percent_decode("100%"), "100%");
        let q = parse_list_query(Some("metadata=user%3Dalice%26app%3Dx&state=running&state=paused&limit=2")).unwrap();
        assert_eq!(q.metadata.get("user"), Some(&json!("alice")));
        assert_eq!(q.metadata.get("app"), Some(&json!("x")));
        assert_eq!(q.states, ["running", "paused"]);
        assert_eq!(q.limit, Some(2));
    }
}
