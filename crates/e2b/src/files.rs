//! envd's plain HTTP: `GET /health`, and `GET`/`POST /files?path=P` (download; upload as `multipart/form-data`,
//! field `file`, or `application/octet-stream`). Files go through `airlock __files` as the daemon's own files
//! API does: resolved inside the sandbox's root with its user's rights, never through a host path.
//!
//! Errors are envd's `{"code": int, "message"}`; a sandbox that is not there is the `502` "… was not found"
//! that E2B's proxy answers, which the SDK turns into its not-running error.

use std::ffi::OsString;
use std::process::Stdio;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::connect::{RpcCode, RpcError};
use crate::filesystem::sandbox_path;
use crate::E2bState;

/// `airlock __files`' exit statuses (see that command's module in the binary).
const EXIT_NOT_FOUND: i32 = 3;
const EXIT_DENIED: i32 = 4;
const EXIT_WRONG_KIND: i32 = 5;

fn envd_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "code": status.as_u16(), "message": message.into() }))).into_response()
}

/// An RPC error as envd's HTTP endpoints answer it.
fn http_error(e: RpcError) -> Response {
    let status = match e.code {
        RpcCode::Unavailable => StatusCode::BAD_GATEWAY,
        other => other.status(),
    };
    envd_error(status, e.message)
}

/// `GET /health`: `204` (for the sandbox `E2b-Sandbox-Id` names, when it names one: the SDK probes a sandbox's
/// envd this way after a failed request, to tell a sandbox that is gone from a network failure).
pub async fn health(State(e2b): State<E2bState>, headers: HeaderMap) -> Response {
    if headers.contains_key("e2b-sandbox-id") {
        if let Err(e) = e2b.envd_sandbox(&headers) {
            return http_error(e);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
pub struct FilesQuery {
    #[serde(default)]
    path: Option<String>,
    /// The user the SDK asks for; commands and files are the sandbox's own user's in airlock.
    #[serde(default, rename = "username")]
    _username: Option<String>,
}

type QueryResult = Result<Query<FilesQuery>, axum::extract::rejection::QueryRejection>;

fn failed(status: i32, message: String) -> Response {
    let message = if message.is_empty() { format!("the file operation failed (status {status})") } else { message };
    match status {
        EXIT_NOT_FOUND => envd_error(StatusCode::NOT_FOUND, message),
        EXIT_DENIED => envd_error(StatusCode::FORBIDDEN, message),
        EXIT_WRONG_KIND => envd_error(StatusCode::BAD_REQUEST, message),
        _ => envd_error(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

pub async fn download(State(e2b): State<E2bState>, headers: HeaderMap, query: QueryResult) -> Response {
    let path = match query {
        Ok(Query(FilesQuery { path: Some(p), .. })) => p,
        Ok(_) => return envd_error(StatusCode::BAD_REQUEST, "path: missing"),
        Err(e) => return envd_error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let path = match sandbox_path(&path) {
        Ok(p) => p,
        Err(e) => return http_error(e),
    };
    let (name, entry) = match e2b.envd_sandbox(&headers) {
        Ok(found) => found,
        Err(e) => return http_error(e),
    };
    let shared = match entry.lock.share(&name) {
        Ok(s) => s,
        Err(e) => return http_error(e.into()),
    };
    let args: Vec<OsString> = vec!["__files".into(), "get".into(), "--".into(), name.into(), path.clone().into()];
    let mut cmd = e2b.app.engine.command(&args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return envd_error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot start airlock __files: {e}")),
    };
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return envd_error(StatusCode::INTERNAL_SERVER_ERROR, "airlock __files has no output pipes");
    };
    // `__files get` prints one JSON line saying what the path is, then a file's bytes.
    let mut out = BufReader::new(stdout);
    let mut head = String::new();
    if let Err(e) = out.read_line(&mut head).await {
        return envd_error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read airlock __files: {e}"));
    }
    if head.is_empty() {
        let mut err = Vec::new();
        let _ = stderr.read_to_end(&mut err).await;
        let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(1);
        return failed(status, daemon::engine::airlock_lines(&err));
    }
    let kind: Value = serde_json::from_str(&head).unwrap_or(Value::Null);
    if kind["type"] == "dir" {
        let _ = child.wait().await;
        return envd_error(StatusCode::BAD_REQUEST, format!("path {path} is a directory"));
    }
    let mut response = Response::new(daemon::files_api::file_body(out, child, shared));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    response
}

pub async fn upload(State(e2b): State<E2bState>, headers: HeaderMap, query: QueryResult, body: Bytes) -> Response {
    let query_path = match query {
        Ok(Query(q)) => q.path,
        Err(e) => return envd_error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if headers.get(header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() != b"identity") {
        return envd_error(StatusCode::BAD_REQUEST, "compressed uploads are not supported by airlock yet");
    }
    // (path, bytes) for each file: the query's path names a single file; in a multipart body without one, each
    // part's file name is its path.
    let files: Vec<(String, Bytes)> = if content_type.starts_with("multipart/form-data") {
        let Some(boundary) = boundary_of(content_type) else {
            return envd_error(StatusCode::BAD_REQUEST, "multipart/form-data without a boundary");
        };
        let parts = match multipart_parts(&body, &boundary) {
            Ok(p) => p,
            Err(message) => return envd_error(StatusCode::BAD_REQUEST, message),
        };
        let mut files = Vec::new();
        for part in parts {
            let path = match (&query_path, part.filename) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => f,
                (None, None) => return envd_error(StatusCode::BAD_REQUEST, "a file without a path"),
            };
            files.push((path, part.data));
        }
        files
    } else {
        match &query_path {
            Some(p) => vec![(p.clone(), body)],
            None => return envd_error(StatusCode::BAD_REQUEST, "path: missing"),
        }
    };
    let (name, entry) = match e2b.envd_sandbox(&headers) {
        Ok(found) => found,
        Err(e) => return http_error(e),
    };
    let mut written = Vec::new();
    for (path, data) in files {
        let path = match sandbox_path(&path) {
            Ok(p) => p,
            Err(e) => return http_error(e),
        };
        let _shared = match entry.lock.share(&name) {
            Ok(s) => s,
            Err(e) => return http_error(e.into()),
        };
        let args: Vec<OsString> =
            vec!["__files".into(), "put".into(), "--".into(), name.clone().into(), path.clone().into()];
        let done = match e2b.app.engine.run(&args, Some(&data)).await {
            Ok(done) => done,
            Err(e) => return http_error(e.into()),
        };
        if !done.ok() {
            return failed(done.status, done.message);
        }
        let file_name = path.rsplit('/').next().unwrap_or("").to_string();
        written.push(json!({ "name": file_name, "type": "file", "path": path }));
    }
    Json(written).into_response()
}

/// The `boundary` parameter of a multipart content type.
fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_string())
    })
}

#[derive(Debug)]
struct Part {
    filename: Option<String>,
    data: Bytes,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// The parts of a `multipart/form-data` body (RFC 7578): each between `--BOUNDARY` lines, its headers, an empty
/// line, its bytes (any bytes: the delimiter is found by search, not by reading lines).
fn multipart_parts(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    if boundary.is_empty() || boundary.len() > 200 {
        return Err("multipart boundary: 1 to 200 characters".into());
    }
    let opening = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    let mut at = find(body, opening.as_bytes(), 0).ok_or("multipart body without its first boundary")?;
    at += opening.len();
    let mut parts = Vec::new();
    loop {
        // After a boundary: `--` ends the body, CRLF starts a part.
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err("multipart boundary not followed by a line end".into());
        }
        at += 2;
        let headers_end = find(body, b"\r\n\r\n", at).ok_or("multipart part without the end of its headers")?;
        let head = String::from_utf8_lossy(&body[at..headers_end]).into_owned();
        let data_start = headers_end + 4;
        let data_end = find(body, delimiter.as_bytes(), data_start).ok_or("multipart part without its end")?;
        parts.push(Part { filename: filename_of(&head), data: body.slice(data_start..data_end) });
        at = data_end + delimiter.len();
    }
}

/// `filename="…"` of a part's `Content-Disposition`.
fn filename_of(head: &str) -> Option<String> {
    head.lines().filter(|l| l.to_ascii_lowercase().starts_with("content-disposition:")).find_map(|line| {
        line.split(';').find_map(|param| {
            let (key, value) = param.trim().split_once('=')?;
            (key.trim() == "filename").then(|| value.trim().trim_matches('"').replace("\\\"", "\""))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_split_into_files() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/tmp/a b.bin\"\r\n\
Content-Type: application/octet-stream\r\n\r\n\x00\x01\r\n--X\xff\r\n--XyZ\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"/tmp/c\"\r\n\r\n\r\n--XyZ--\r\n",
        );
        let parts = multipart_parts(&body, "XyZ").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].filename.as_deref(), Some("/tmp/a b.bin"));
        assert_eq!(&parts[0].data[..], b"\x00\x01\r\n--X\xff");
        assert_eq!(parts[1].filename.as_deref(), Some("/tmp/c"));
        assert!(parts[1].data.is_empty());
        assert_eq!(boundary_of("multipart/form-data; boundary=\"XyZ\"").as_deref(), Some("XyZ"));
        assert!(multipart_parts(&Bytes::from_static(b"--XyZ\r\nnothing"), "XyZ").is_err());
    }
}
