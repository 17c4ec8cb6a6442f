//! The Connect protocol as envd speaks it to the SDK, JSON codec only: a unary call is a JSON body and a JSON
//! answer (an error is an HTTP status and `{"code", "message"}`); a server stream (`application/connect+json`)
//! is a sequence of envelopes `flags: u8, length: u32 big-endian, JSON`, the last one with flag `0x02` holding
//! `{}` or `{"error": {"code", "message"}}`.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The Connect error codes envd answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    DeadlineExceeded,
    Unauthenticated,
}

impl RpcCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcCode::InvalidArgument => "invalid_argument",
            RpcCode::NotFound => "not_found",
            RpcCode::AlreadyExists => "already_exists",
            RpcCode::PermissionDenied => "permission_denied",
            RpcCode::ResourceExhausted => "resource_exhausted",
            RpcCode::FailedPrecondition => "failed_precondition",
            RpcCode::Unimplemented => "unimplemented",
            RpcCode::Internal => "internal",
            RpcCode::Unavailable => "unavailable",
            RpcCode::DeadlineExceeded => "deadline_exceeded",
            RpcCode::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error, as the Connect protocol maps the code.
    pub fn status(self) -> StatusCode {
        match self {
            RpcCode::InvalidArgument | RpcCode::FailedPrecondition => StatusCode::BAD_REQUEST,
            RpcCode::NotFound => StatusCode::NOT_FOUND,
            RpcCode::AlreadyExists => StatusCode::CONFLICT,
            RpcCode::PermissionDenied => StatusCode::FORBIDDEN,
            RpcCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            RpcCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            RpcCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            RpcCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RpcCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            RpcCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// A Connect error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct RpcError {
    pub code: RpcCode,
    pub message: String,
}

impl RpcError {
    pub fn new(code: RpcCode, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> RpcError {
        RpcError::new(RpcCode::InvalidArgument, message)
    }
    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(RpcCode::Internal, message)
    }
    pub fn json(&self) -> Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }
}

/// A unary error answer.
impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        (self.code.status(), axum::Json(self.json())).into_response()
    }
}

impl From<daemon::error::ApiError> for RpcError {
    fn from(e: daemon::error::ApiError) -> RpcError {
        use daemon::error::Code;
        let code = match e.code {
            Code::BadRequest => RpcCode::InvalidArgument,
            Code::NotFound => RpcCode::NotFound,
            Code::Conflict => RpcCode::FailedPrecondition,
            Code::Unauthorized => RpcCode::Unauthenticated,
            Code::Limit => RpcCode::ResourceExhausted,
            Code::SetupFailed | Code::Internal => RpcCode::Internal,
        };
        RpcError::new(code, e.message)
    }
}

/// A unary request's JSON body (an empty body is `{}`); unknown fields are ignored, as the SDK's own codec does.
pub fn request<T: DeserializeOwned>(body: &Bytes) -> Result<T, RpcError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(text).map_err(|e| RpcError::invalid(format!("invalid request: {e}")))
}

/// A server stream's request: one envelope (or, leniently, a bare JSON body).
pub fn stream_request<T: DeserializeOwned>(body: &Bytes) -> Result<T, RpcError> {
    if body.len() >= 5 && body[0] & 0x01 == 0 && body[0] != b'{' {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let Some(message) = body.get(5..5 + len) else {
            return Err(RpcError::invalid("the request envelope is cut short"));
        };
        if body[0] != 0 {
            return Err(RpcError::new(RpcCode::Unimplemented, "compressed requests are not supported"));
        }
        return request(&Bytes::copy_from_slice(message));
    }
    request(body)
}

/// The largest message taken from a client stream.
pub const MAX_MESSAGE: usize = 16 << 20;

/// A client stream's messages as they arrive: the request body is a sequence of envelopes, each read as soon
/// as it is whole (the client sends them over time, e.g. input as a user types it), never the whole body first.
pub struct Envelopes {
    body: axum::body::BodyDataStream,
    buf: Vec<u8>,
    done: bool,
}

impl Envelopes {
    pub fn new(body: Body) -> Envelopes {
        Envelopes { body: body.into_data_stream(), buf: Vec::new(), done: false }
    }

    /// The next message, or `None` at the end of the body (a client ends its stream by ending the body).
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, RpcError> {
        use futures::StreamExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
                if len > MAX_MESSAGE {
                    return Err(RpcError::new(RpcCode::ResourceExhausted, "a message over 16 MiB"));
                }
                if self.buf.len() >= 5 + len {
                    let flags = self.buf[0];
                    let message: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
                    if flags & 0x01 != 0 {
                        return Err(RpcError::new(RpcCode::Unimplemented, "compressed requests are not supported"));
                    }
                    if flags & 0x02 != 0 {
                        // An end-of-stream envelope from the client: nothing follows it.
                        self.done = true;
                        return Ok(None);
                    }
                    return request(&Bytes::from(message)).map(Some);
                }
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(RpcError::invalid("the request ends inside an envelope"));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => return Err(RpcError::new(RpcCode::Unavailable, format!("reading the request: {e}"))),
                None => self.done = true,
            }
        }
    }
}

/// One envelope: `flags`, then the JSON's length and the JSON.
pub fn envelope(flags: u8, message: &Value) -> Bytes {
    let text = message.to_string();
    let mut out = Vec::with_capacity(text.len() + 5);
    out.push(flags);
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

/// The end-of-stream envelope: `{}` or the error.
pub fn end_of_stream(error: Option<&RpcError>) -> Bytes {
    match error {
        None => envelope(0x02, &json!({})),
        Some(e) => envelope(0x02, &json!({ "error": e.json() })),
    }
}

/// A server stream's answer from a stream of envelopes (which must end with [`end_of_stream`]).
pub fn stream_response<S>(envelopes: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(envelopes));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/connect+json"));
    response
}

/// A stream that fails before it starts: one end-of-stream envelope with the error (Connect streams answer
/// HTTP 200 and carry their error in the stream).
pub fn stream_error(error: RpcError) -> Response {
    let bytes = end_of_stream(Some(&error));
    stream_response(futures::stream::once(async move { Ok(bytes) }))
}

/// `Connect-Timeout-Ms`: the deadline of a stream the client asked for.
pub fn timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
}

/// `Keepalive-Ping-Interval` (seconds): how often a stream sends a keepalive event while nothing happens.
pub fn keepalive(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_are_flag_length_json() {
        let e = envelope(0, &json!({"a": 1}));
        assert_eq!(&e[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(&e[5..], b"{\"a\":1}");
        let back: Value = stream_request(&e).unwrap();
        assert_eq!(back, json!({"a": 1}));
        let bare: Value = stream_request(&Bytes::from_static(b"{\"b\":2}")).unwrap();
        assert_eq!(bare, json!({"b": 2}));
    }

    #[tokio::test]
    async fn client_stream_envelopes_are_read_across_chunks() {
        let all = [envelope(0, &json!({"n": 1})), envelope(0, &json!({"n": 2}))].concat();
        let chunks: Vec<Result<Bytes, std::io::Error>> = all.chunks(3).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let mut messages = Envelopes::new(Body::from_stream(futures::stream::iter(chunks)));
        assert_eq!(messages.next::<Value>().await.unwrap(), Some(json!({"n": 1})));
        assert_eq!(messages.next::<Value>().await.unwrap(), Some(json!({"n": 2})));
        assert_eq!(messages.next::<Value>().await.unwrap(), None);
        let cut = envelope(0, &json!({"n": 3}));
        let mut messages = Envelopes::new(Body::from(cut.slice(..cut.len() - 1)));
        assert!(messages.next::<Value>().await.is_err());
    }
}
