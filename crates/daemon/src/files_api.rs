//! `GET`, `PUT` and `DELETE /v1/sandboxes/{name}/files?path=P`: files inside a running sandbox, by
//! `airlock __files` (see that command's module in the binary: it enters the sandbox's user and mount
//! namespaces with its command's ids, no capabilities and its Landlock ruleset, so a path resolves inside the
//! sandbox's own root, never through a symlink to the host, and with the sandbox user's rights only; for a VM
//! sandbox it asks the guest's agent, which does the same inside the guest).
//!
//! A file's bytes stream out as the child reads them (no size limit on reading); a `PUT` takes at most the
//! daemon's body limit. Each operation holds the sandbox's shared lock, as an exec does: a commit or rollback
//! (exclusive) never runs under a write.

use std::ffi::OsString;
use std::process::Stdio;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::api::{owned, running_init, Shared};
use crate::engine::{airlock_lines, Finished};
use crate::error::{ApiError, ApiResult, Code};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    path: String,
    #[serde(default)]
    mode: Option<String>,
}

type QueryResult = Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>;

/// `airlock __files`' exit statuses (see its module).
const EXIT_NOT_FOUND: i32 = 3;
const EXIT_DENIED: i32 = 4;
const EXIT_WRONG_KIND: i32 = 5;

/// The longest path taken (PATH_MAX).
const MAX_PATH: usize = 4096;

fn check_query(query: QueryResult, mode_allowed: bool) -> ApiResult<FileQuery> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if !q.path.starts_with('/') || q.path.contains('\0') || q.path.len() > MAX_PATH {
        return Err(ApiError::bad_request(format!(
            "path: an absolute path inside the sandbox, without NUL, at most {MAX_PATH} bytes"
        )));
    }
    if let Some(text) = &q.mode {
        if !mode_allowed {
            return Err(ApiError::bad_request("mode: only for PUT"));
        }
        if !u32::from_str_radix(text, 8).is_ok_and(|m| m <= 0o7777) {
            return Err(ApiError::bad_request(format!("mode {text:?}: an octal mode such as 0644")));
        }
    }
    Ok(q)
}

fn files_args(op: &str, name: &str, q: &FileQuery) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["__files".into()];
    if let Some(m) = &q.mode {
        args.push(format!("--mode={m}").into());
    }
    args.extend([op.into(), "--".into(), name.into(), q.path.clone().into()]);
    args
}

fn error_of(done: &Finished) -> ApiError {
    let message = if done.message.is_empty() {
        format!("the file operation failed (status {})", done.status)
    } else {
        done.message.clone()
    };
    match done.status {
        EXIT_NOT_FOUND => ApiError::new(Code::NotFound, message),
        EXIT_DENIED => ApiError::new(Code::Conflict, message),
        EXIT_WRONG_KIND => ApiError::bad_request(message),
        _ => crate::engine::classify(done),
    }
}

pub async fn read(State(app): State<Shared>, Path(name): Path<String>, query: QueryResult) -> ApiResult<Response> {
    let q = check_query(query, false)?;
    let entry = owned(&app, &name)?;
    running_init(&app, &name)?;
    let shared = entry.lock.share(&name)?;
    let mut cmd = app.engine.command(&files_args("get", &name, &q));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ApiError::internal(format!("cannot start airlock __files: {e}")))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ApiError::internal("airlock __files has no output pipes"));
    };
    let mut out = BufReader::new(stdout);
    let mut head = String::new();
    out.read_line(&mut head).await.map_err(|e| ApiError::internal(format!("cannot read airlock __files: {e}")))?;
    if head.is_empty() {
        // Nothing printed: it failed; its status and message say how.
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(1);
        return Err(error_of(&Finished { status, stdout: Vec::new(), message: airlock_lines(&err) }));
    }
    let header: serde_json::Value = serde_json::from_str(&head)
        .map_err(|e| ApiError::internal(format!("airlock __files printed no JSON header: {e}")))?;
    if header["type"] == "dir" {
        let _ = child.wait().await;
        return Ok(axum::Json(serde_json::json!({ "entries": header["entries"] })).into_response());
    }
    // A file: its bytes as they are read, the child and the shared lock kept until the end.
    let size = header["size"].as_u64();
    let mut response = Response::new(file_body(out, child, shared));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/octet-stream"));
    if let Some(size) = size {
        // Informational (the file may change while it is read): the body itself is chunked.
        if let Ok(v) = header::HeaderValue::from_str(&size.to_string()) {
            response.headers_mut().insert("x-airlock-file-size", v);
        }
    }
    Ok(response)
}

pub async fn write(
    State(app): State<Shared>,
    Path(name): Path<String>,
    query: QueryResult,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let q = check_query(query, true)?;
    let entry = owned(&app, &name)?;
    running_init(&app, &name)?;
    let _shared = entry.lock.share(&name)?;
    let done = app.engine.run(&files_args("put", &name, &q), Some(&body)).await?;
    if !done.ok() {
        return Err(error_of(&done));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(State(app): State<Shared>, Path(name): Path<String>, query: QueryResult) -> ApiResult<StatusCode> {
    let q = check_query(query, false)?;
    let entry = owned(&app, &name)?;
    running_init(&app, &name)?;
    let _shared = entry.lock.share(&name)?;
    let done = app.engine.run(&files_args("rm", &name, &q), None).await?;
    if !done.ok() {
        return Err(error_of(&done));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The bytes `airlock __files get` writes after its header, as a response body streamed while they are read.
/// The child, and `held` (the sandbox's shared lock: no change runs under a read), are kept until its output
/// ends; then the child is reaped.
pub fn file_body<R, H>(out: R, child: tokio::process::Child, held: H) -> Body
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    H: Send + 'static,
{
    let stream = futures::stream::unfold((out, child, held), |(mut out, mut child, held)| async move {
        let mut buf = vec![0u8; 64 << 10];
        match out.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = child.wait().await;
                drop(held);
                None
            }
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), (out, child, held)))
            }
        }
    });
    Body::from_stream(stream)
}
