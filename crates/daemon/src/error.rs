//! The API's error answer: an HTTP status and `{"error": {"code", "message"}}`, `code` one of the contract's
//! names (`../shared/design/api.md`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    NotFound,
    Conflict,
    Unauthorized,
    Limit,
    SetupFailed,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::NotFound => "not_found",
            Code::Conflict => "conflict",
            Code::Unauthorized => "unauthorized",
            Code::Limit => "limit",
            Code::SetupFailed => "setup_failed",
            Code::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Conflict => StatusCode::CONFLICT,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Limit => StatusCode::TOO_MANY_REQUESTS,
            // The sandbox could not be set up from a well-formed request (a workspace that does not exist, a
            // protection this host cannot apply): the request is understood but cannot be carried out.
            Code::SetupFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer. The message is one line, like the CLI's `airlock:` lines (without the prefix).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// More about this error, answered as `error.details` (a refused commit's `conflicts`).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: one_line(&message.into()), details: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Conflict, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Internal, message)
    }
    pub fn no_sandbox(name: &str) -> ApiError {
        ApiError::not_found(format!("no sandbox named {name}"))
    }
}

/// Control characters escaped: a hostile name inside a message cannot split it or drive a terminal.
fn one_line(message: &str) -> String {
    message
        .trim()
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

impl ApiError {
    /// The answer's body: `{"error": {"code", "message", "details"?}}`, as the OpenAPI document's `Error`.
    fn body(self) -> serde_json::Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let (Some(details), Some(map)) = (self.details, error.as_object_mut()) {
            map.insert("details".to_string(), details);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        (status, axum::Json(self.body())).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_answered_under_details() {
        let mut err = ApiError::conflict("commit refused: 1 conflict");
        err.details = Some(json!({ "conflicts": ["a.txt"] }));
        assert_eq!(
            err.body(),
            json!({ "error": { "code": "conflict", "message": "commit refused: 1 conflict",
                               "details": { "conflicts": ["a.txt"] } } })
        );
        assert_eq!(
            ApiError::no_sandbox("x").body(),
            json!({ "error": { "code": "not_found", "message": "no sandbox named x" } })
        );
    }
}
