//! envd's `filesystem.Filesystem` service: `Stat`, `ListDir`, `MakeDir`, `Move`, `Remove`. Each is one small
//! POSIX shell script run in the sandbox by `airlock exec`, so a path means what it means to the sandbox's
//! commands (its root, its mounts, its user's rights, symlinks resolved inside), never a host path.
//!
//! Entries come back from `find -printf`, NUL-separated, and become envd's `EntryInfo` (proto3 JSON). Directory
//! watchers poll (see [`Watchers`]); the streamed `WatchDir` (the async SDK's) polls too, on a short interval,
//! and sends what changed as the stream's events.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::connect::{self, RpcCode, RpcError};
use crate::E2bState;

/// The fields `find -printf` prints per entry, each NUL-terminated: type, size, mode (octal), permissions,
/// owner, group, mtime (seconds with fraction), path, symlink target.
const FIELDS: usize = 9;

/// `sh -c SCRIPT sh OP PATH [ARG]`. Exit statuses: 3 no such path, 5 not a directory, 6 exists already.
const SCRIPT: &str = r#"op=$1; p=$2
fmt='%y\0%s\0%m\0%M\0%u\0%g\0%T@\0%p\0%l\0'
exists() { [ -e "$1" ] || [ -L "$1" ]; }
case $op in
stat) exists "$p" || exit 3; exec find "$p" -maxdepth 0 -printf "$fmt" ;;
list) exists "$p" || exit 3; [ -d "$p" ] || exit 5; exec find "$p" -mindepth 1 -maxdepth "$3" -printf "$fmt" ;;
mkdir) exists "$p" && exit 6; mkdir -p -- "$p" || exit 1; exec find "$p" -maxdepth 0 -printf "$fmt" ;;
move) exists "$p" || exit 3; mkdir -p -- "$(dirname -- "$3")" || exit 1; mv -f -T -- "$p" "$3" || exit 1
      exec find "$3" -maxdepth 0 -printf "$fmt" ;;
remove) exists "$p" || exit 3; exec rm -rf -- "$p" ;;
esac
exit 2
"#;

const EXIT_NOT_FOUND: i32 = 3;
const EXIT_NOT_DIR: i32 = 5;
const EXIT_EXISTS: i32 = 6;

/// The deepest `ListDir` taken.
const MAX_DEPTH: u32 = 64;

#[derive(Debug, Deserialize)]
struct PathRequest {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct MoveRequest {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

/// `POST /filesystem.Filesystem/{method}`.
pub async fn dispatch(
    State(e2b): State<E2bState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match method.as_str() {
        "Stat" => stat(&e2b, &headers, &body).await,
        "ListDir" => list_dir(&e2b, &headers, &body).await,
        "MakeDir" => make_dir(&e2b, &headers, &body).await,
        "Move" => move_entry(&e2b, &headers, &body).await,
        "Remove" => remove(&e2b, &headers, &body).await,
        "WatchDir" => {
            return match watch_dir(&e2b, &headers, &body).await {
                Ok(r) => r,
                Err(e) => connect::stream_error(e),
            }
        }
        "CreateWatcher" => create_watcher(&e2b, &headers, &body).await,
        "GetWatcherEvents" => watcher_events(&e2b, &headers, &body).await,
        "RemoveWatcher" => remove_watcher(&e2b, &headers, &body),
        _ => Err(RpcError::new(RpcCode::Unimplemented, format!("no method filesystem.Filesystem/{method}"))),
    };
    match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A path as the sandbox sees it: absolute (a relative one is taken from `/`, E2B's home directory not being
/// part of an airlock sandbox), without NUL, at most PATH_MAX.
pub fn sandbox_path(path: &str) -> Result<String, RpcError> {
    if path.is_empty() || path.contains('\0') || path.len() > 4096 {
        return Err(RpcError::invalid(format!("path {path:?}: a path without NUL, at most 4096 bytes")));
    }
    Ok(if path.starts_with('/') { path.to_string() } else { format!("/{path}") })
}

/// Runs the script's `op` in the sandbox the request names; its standard output on success.
async fn run_script(e2b: &E2bState, headers: &HeaderMap, op: &str, args: &[&str]) -> Result<Vec<u8>, RpcError> {
    let (name, entry) = e2b.envd_sandbox(headers)?;
    let _shared = entry.lock.share(&name)?;
    let mut argv: Vec<OsString> =
        vec!["exec".into(), name.into(), "--".into(), "/bin/sh".into(), "-c".into(), SCRIPT.into(), "sh".into()];
    argv.push(op.into());
    argv.extend(args.iter().map(OsString::from));
    let done = e2b.app.engine.run(&argv, None).await?;
    let path = args.first().copied().unwrap_or("");
    match done.status {
        0 => Ok(done.stdout),
        EXIT_NOT_FOUND => Err(RpcError::new(RpcCode::NotFound, format!("path {path} does not exist"))),
        EXIT_NOT_DIR => Err(RpcError::invalid(format!("path {path} is not a directory"))),
        EXIT_EXISTS => Err(RpcError::new(RpcCode::AlreadyExists, format!("path {path} exists already"))),
        status => Err(RpcError::internal(if done.message.is_empty() {
            format!("{op} {path} failed (status {status})")
        } else {
            done.message
        })),
    }
}

/// envd's `EntryInfo` objects from the script's output.
fn entries(output: &[u8]) -> Vec<Value> {
    let fields: Vec<String> =
        output.split(|b| *b == 0).map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>();
    fields.chunks_exact(FIELDS).map(entry).collect()
}

fn entry(f: &[String]) -> Value {
    let (kind, size, mode, permissions, owner, group, mtime, path, target) =
        (&f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8]);
    let file_type = match kind.as_str() {
        "f" => "FILE_TYPE_FILE",
        "d" => "FILE_TYPE_DIRECTORY",
        "l" => "FILE_TYPE_SYMLINK",
        _ => "FILE_TYPE_UNSPECIFIED",
    };
    // envd reports Go's FileMode: the permission bits plus a bit for a directory or a symlink.
    let mut mode_bits = u32::from_str_radix(mode, 8).unwrap_or(0);
    match kind.as_str() {
        "d" => mode_bits |= 1 << 31,
        "l" => mode_bits |= 1 << 27,
        _ => {}
    }
    let modified = mtime
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .map(|t| humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_secs_f64(t)).to_string());
    let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or("/");
    let mut value = json!({
        "name": name,
        "type": file_type,
        "path": path,
        // proto3 JSON writes int64 as a string.
        "size": size.parse::<u64>().unwrap_or(0).to_string(),
        "mode": mode_bits,
        "permissions": permissions,
        "owner": owner,
        "group": group,
    });
    if let Some(m) = modified {
        value["modifiedTime"] = Value::String(m);
    }
    if kind == "l" {
        value["symlinkTarget"] = Value::String(target.clone());
    }
    value
}

fn one_entry(output: &[u8]) -> Result<Value, RpcError> {
    entries(output).into_iter().next().ok_or_else(|| RpcError::internal("the entry could not be read"))
}

async fn stat(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: PathRequest = connect::request(body)?;
    let path = sandbox_path(&req.path)?;
    let out = run_script(e2b, headers, "stat", &[&path]).await?;
    Ok(json!({ "entry": one_entry(&out)? }))
}

async fn list_dir(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: PathRequest = connect::request(body)?;
    let path = sandbox_path(&req.path)?;
    let depth = req.depth.unwrap_or(1).clamp(1, MAX_DEPTH).to_string();
    let out = run_script(e2b, headers, "list", &[&path, &depth]).await?;
    let mut list = entries(&out);
    list.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Ok(json!({ "entries": list }))
}

async fn make_dir(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: PathRequest = connect::request(body)?;
    let path = sandbox_path(&req.path)?;
    let out = run_script(e2b, headers, "mkdir", &[&path]).await?;
    Ok(json!({ "entry": one_entry(&out)? }))
}

async fn move_entry(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: MoveRequest = connect::request(body)?;
    let (source, destination) = (sandbox_path(&req.source)?, sandbox_path(&req.destination)?);
    let out = run_script(e2b, headers, "move", &[&source, &destination]).await?;
    Ok(json!({ "entry": one_entry(&out)? }))
}

async fn remove(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: PathRequest = connect::request(body)?;
    let path = sandbox_path(&req.path)?;
    run_script(e2b, headers, "remove", &[&path]).await?;
    Ok(json!({}))
}

/// The most directory watchers one daemon keeps.
const MAX_WATCHERS: usize = 256;

/// A watched directory's entries as last seen, by path.
type Snapshot = BTreeMap<String, Value>;

struct Watcher {
    sandbox: String,
    /// The watched directory, as the list gives its entries' paths (no trailing slash).
    dir: String,
    depth: u32,
    include_entry: bool,
    seen: Snapshot,
}

/// The polling watchers (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`: what the SDK's synchronous
/// `files.watch_dir` uses). airlock runs no agent in the sandbox to hold an inotify watch, so a watcher keeps
/// the directory's listing and each poll compares the listing now with it: a file created, changed (size or
/// modification time) or removed between two polls is one event; one created and removed between them is none.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Watcher>>,
    /// How many `WatchDir` streams are open: each runs a listing in its sandbox every [`WATCH_POLL`], so they
    /// count against [`MAX_WATCHERS`] too.
    streams: AtomicUsize,
}

/// How often a `WatchDir` stream lists its directory: short, since a file created and removed between two
/// listings is never seen; each listing is one `airlock exec` in the sandbox.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// A `WatchDir` stream's place among the open ones, given back when the stream ends.
struct StreamSlot(std::sync::Arc<crate::E2b>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.watchers.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `WatchDir`, a server stream: a start event once the directory's first listing is taken (the SDK waits for
/// it before `watch_dir` returns), then each listing compared with the one before it, the changes sent as
/// `filesystem` events; keepalives while nothing changes. It ends when the client goes (the next send fails),
/// at the client's deadline, or when the sandbox stops.
async fn watch_dir(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Response, RpcError> {
    let req: CreateWatcherRequest = connect::stream_request(body)?;
    let dir = sandbox_path(&req.path)?;
    let dir = if dir.len() > 1 { dir.trim_end_matches('/').to_string() } else { dir };
    let depth = if req.recursive { MAX_DEPTH } else { 1 };
    e2b.envd_sandbox(headers)?;
    if e2b.watchers.streams.fetch_add(1, Ordering::SeqCst) >= MAX_WATCHERS {
        e2b.watchers.streams.fetch_sub(1, Ordering::SeqCst);
        return Err(RpcError::new(RpcCode::ResourceExhausted, format!("{MAX_WATCHERS} watch streams are open")));
    }
    let slot = StreamSlot(e2b.clone());
    let mut seen = snapshot(e2b, headers, &dir, depth).await?;
    let deadline = connect::timeout(headers).map(|t| tokio::time::Instant::now() + t);
    let keepalive = connect::keepalive(headers);
    let (e2b, headers) = (e2b.clone(), headers.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _slot = slot;
        if tx.send(connect::envelope(0, &json!({ "start": {} }))).await.is_err() {
            return;
        }
        let mut poll = tokio::time::interval(WATCH_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = poll.tick() => {}
                _ = sleep_until(deadline) => {
                    let e = RpcError::new(RpcCode::DeadlineExceeded, "the watch's deadline passed");
                    let _ = tx.send(connect::end_of_stream(Some(&e))).await;
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            let now = match snapshot(&e2b, &headers, &dir, depth).await {
                Ok(now) => now,
                // The directory itself gone: everything in it was removed (it may come back).
                Err(e) if e.code == RpcCode::NotFound => Snapshot::new(),
                Err(e) => {
                    let _ = tx.send(connect::end_of_stream(Some(&e))).await;
                    return;
                }
            };
            for event in changes(&dir, &seen, &now, req.include_entry) {
                if tx.send(connect::envelope(0, &json!({ "filesystem": event }))).await.is_err() {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
            seen = now;
            if keepalive.is_some_and(|every| last_sent.elapsed() >= every) {
                if tx.send(connect::envelope(0, &json!({ "keepalive": {} }))).await.is_err() {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    Ok(connect::stream_response(stream))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Watchers {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Watcher>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateWatcherRequest {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    include_entry: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatcherRequest {
    #[serde(default)]
    watcher_id: String,
}

async fn snapshot(e2b: &E2bState, headers: &HeaderMap, dir: &str, depth: u32) -> Result<Snapshot, RpcError> {
    let out = run_script(e2b, headers, "list", &[dir, &depth.to_string()]).await?;
    Ok(entries(&out).into_iter().filter_map(|e| Some((e["path"].as_str()?.to_string(), e))).collect())
}

async fn create_watcher(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: CreateWatcherRequest = connect::request(body)?;
    let dir = sandbox_path(&req.path)?;
    let dir = if dir.len() > 1 { dir.trim_end_matches('/').to_string() } else { dir };
    let depth = if req.recursive { MAX_DEPTH } else { 1 };
    let (sandbox, _) = e2b.envd_sandbox(headers)?;
    let seen = snapshot(e2b, headers, &dir, depth).await?;
    let mut bytes = [0u8; 12];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut map = e2b.watchers.map();
    if map.len() >= MAX_WATCHERS {
        return Err(RpcError::new(RpcCode::ResourceExhausted, format!("{MAX_WATCHERS} watchers exist already")));
    }
    map.insert(id.clone(), Watcher { sandbox, dir, depth, include_entry: req.include_entry, seen });
    Ok(json!({ "watcherId": id }))
}

/// What changed between two listings of `dir`, as envd's events.
fn changes(dir: &str, before: &Snapshot, now: &Snapshot, include_entry: bool) -> Vec<Value> {
    let name = |path: &str| {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        rel.trim_start_matches('/').to_string()
    };
    let event = |path: &str, kind: &str, entry: Option<&Value>| {
        let mut e = json!({ "name": name(path), "type": kind });
        if let (true, Some(entry)) = (include_entry, entry) {
            e["entry"] = entry.clone();
        }
        e
    };
    let mut events = Vec::new();
    for (path, entry) in now {
        match before.get(path) {
            None => events.push(event(path, "EVENT_TYPE_CREATE", Some(entry))),
            Some(old) if old["size"] != entry["size"] || old["modifiedTime"] != entry["modifiedTime"] => {
                if entry["type"] != "FILE_TYPE_DIRECTORY" {
                    events.push(event(path, "EVENT_TYPE_WRITE", Some(entry)));
                }
            }
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !now.contains_key(*p)) {
        events.push(event(path, "EVENT_TYPE_REMOVE", None));
    }
    events
}

async fn watcher_events(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: WatcherRequest = connect::request(body)?;
    let (sandbox, _) = e2b.envd_sandbox(headers)?;
    let not_found = || RpcError::new(RpcCode::NotFound, format!("watcher {} not found", req.watcher_id));
    let (dir, depth) = {
        let map = e2b.watchers.map();
        let w = map.get(&req.watcher_id).filter(|w| w.sandbox == sandbox).ok_or_else(not_found)?;
        (w.dir.clone(), w.depth)
    };
    // The directory itself gone: everything in it was removed.
    let now = match snapshot(e2b, headers, &dir, depth).await {
        Ok(now) => now,
        Err(e) if e.code == RpcCode::NotFound => Snapshot::new(),
        Err(e) => return Err(e),
    };
    let mut map = e2b.watchers.map();
    let w = map.get_mut(&req.watcher_id).filter(|w| w.sandbox == sandbox).ok_or_else(not_found)?;
    let events = changes(&w.dir, &w.seen, &now, w.include_entry);
    w.seen = now;
    Ok(json!({ "events": events }))
}

fn remove_watcher(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: WatcherRequest = connect::request(body)?;
    let (sandbox, _) = e2b.envd_sandbox(headers)?;
    let mut map = e2b.watchers.map();
    if map.get(&req.watcher_id).is_none_or(|w| w.sandbox != sandbox) {
        return Err(RpcError::new(RpcCode::NotFound, format!("watcher {} not found", req.watcher_id)));
    }
    map.remove(&req.watcher_id);
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_output_becomes_entries() {
        let out = b"d\x004096\x00755\x00drwxr-xr-x\x00root\x00root\x001700000000.5\x00/tmp/d\x00\x00\
f\x003\x00644\x00-rw-r--r--\x00root\x00root\x001700000000\x00/tmp/d/a.txt\x00\x00";
        let list = entries(out);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["type"], "FILE_TYPE_DIRECTORY");
        assert_eq!(list[0]["name"], "d");
        assert_eq!(list[0]["mode"], (1u32 << 31) | 0o755);
        assert_eq!(list[1]["name"], "a.txt");
        assert_eq!(list[1]["size"], "3");
        assert_eq!(list[1]["modifiedTime"], "2023-11-14T22:13:20.000000000Z");
    }

    #[test]
    fn listings_compare_into_events() {
        let entry = |size: &str, t: &str| json!({ "type": "FILE_TYPE_FILE", "size": size, "modifiedTime": t });
        let before: Snapshot =
            [("/w/a".to_string(), entry("1", "t1")), ("/w/b".to_string(), entry("1", "t1"))].into_iter().collect();
        let now: Snapshot =
            [("/w/a".to_string(), entry("2", "t2")), ("/w/d/c".to_string(), entry("0", "t1"))].into_iter().collect();
        let events = changes("/w", &before, &now, false);
        let pairs: Vec<(&str, &str)> =
            events.iter().map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap())).collect();
        assert_eq!(pairs, [("a", "EVENT_TYPE_WRITE"), ("d/c", "EVENT_TYPE_CREATE"), ("b", "EVENT_TYPE_REMOVE")]);
    }

    #[test]
    fn relative_paths_start_at_the_root() {
        assert_eq!(sandbox_path("a/b").unwrap(), "/a/b");
        assert!(sandbox_path("").is_err());
    }
}
