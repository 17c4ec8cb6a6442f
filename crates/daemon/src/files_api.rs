//! `GET`, `PUT` and `DELETE /v1/sandboxes/{name}/files?path=P`: files inside a running sandbox, by
//! `runtime::sandbox_fs` (paths resolved inside the sandbox's own root, with the sandbox user's rights; see that
//! module for the rule). The work is blocking file I/O, so it runs on tokio's blocking pool.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use runtime::sandbox_fs::{Node, SandboxFsError, SandboxRoot};
use serde::Deserialize;
use serde_json::json;

use crate::api::{owned, running_init, Shared, MAX_FILE_BODY};
use crate::error::{ApiError, ApiResult, Code};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    path: String,
    #[serde(default)]
    mode: Option<String>,
}

type QueryResult = Result<Query<FileQuery>, axum::extract::rejection::QueryRejection>;

fn to_api(e: SandboxFsError) -> ApiError {
    let code = match &e {
        SandboxFsError::NotFound { .. } => Code::NotFound,
        SandboxFsError::NotRunning { .. } => Code::Conflict,
        SandboxFsError::ReadOnlyFilesystem { .. } => Code::Conflict,
        SandboxFsError::Io { .. } => Code::Internal,
        _ => Code::BadRequest,
    };
    ApiError::new(code, e.to_string())
}

/// The running sandbox's root and the checked query.
fn target(app: &Shared, name: &str, query: QueryResult) -> ApiResult<((i32, u64), FileQuery)> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    owned(app, name)?;
    Ok((running_init(app, name)?, query))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, SandboxFsError> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a file operation failed: {e}")))?
        .map_err(to_api)
}

pub async fn read(State(app): State<Shared>, Path(name): Path<String>, query: QueryResult) -> ApiResult<Response> {
    let ((pid, start), q) = target(&app, &name, query)?;
    let node = blocking(move || SandboxRoot::open(pid, start)?.read(&q.path, MAX_FILE_BODY as u64)).await?;
    Ok(match node {
        Node::File(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Node::Dir(entries) => {
            let entries: Vec<_> = entries
                .iter()
                .map(|e| json!({ "name": e.name, "type": e.kind.as_str(), "size": e.size, "mode": e.mode }))
                .collect();
            axum::Json(json!({ "entries": entries })).into_response()
        }
    })
}

pub async fn write(
    State(app): State<Shared>,
    Path(name): Path<String>,
    query: QueryResult,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let ((pid, start), q) = target(&app, &name, query)?;
    let mode = match &q.mode {
        None => None,
        Some(text) => Some(
            u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ApiError::bad_request(format!("mode {text:?}: an octal mode such as 0644")))?,
        ),
    };
    blocking(move || SandboxRoot::open(pid, start)?.write(&q.path, &body, mode)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(State(app): State<Shared>, Path(name): Path<String>, query: QueryResult) -> ApiResult<StatusCode> {
    let ((pid, start), q) = target(&app, &name, query)?;
    if q.mode.is_some() {
        return Err(ApiError::bad_request("mode: only for PUT"));
    }
    blocking(move || SandboxRoot::open(pid, start)?.remove(&q.path)).await?;
    Ok(StatusCode::NO_CONTENT)
}
