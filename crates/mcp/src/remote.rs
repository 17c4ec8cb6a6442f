//! The tools against an `airlock serve` daemon (`AIRLOCK_HOST`): each is one request to its REST API
//! (`../shared/design/api.md`), over its Unix socket or TCP, with `AIRLOCK_TOKEN` as a bearer token.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::backend::{FileAnswer, SandboxRequest, MAX_FILE};
use crate::error::{ServeError, ToolError};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, ServeError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Endpoint::Unix(path.into()));
            }
        } else if let Some(rest) = text.strip_prefix("http://") {
            let hostport = rest.trim_end_matches('/');
            if !hostport.is_empty() && !hostport.contains('/') && hostport.contains(':') {
                return Ok(Endpoint::Tcp(hostport.to_string()));
            }
        }
        Err(ServeError::BadHost(text.to_string()))
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp(a) => format!("http://{a}"),
        }
    }

    fn is_loopback(&self) -> bool {
        use std::net::ToSocketAddrs;
        match self {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp(a) => a.to_socket_addrs().is_ok_and(|mut addrs| addrs.all(|s| s.ip().is_loopback())),
        }
    }
}

/// A daemon and its token.
#[derive(Debug, Clone)]
pub struct Remote {
    endpoint: Endpoint,
    token: Option<String>,
}

/// An answer read whole.
struct Answer {
    status: u16,
    content_type: String,
    body: Bytes,
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

impl Remote {
    /// The daemon at `host`, with `AIRLOCK_TOKEN` (sent in the clear only to a loopback address unless
    /// `AIRLOCK_TOKEN_INSECURE=1`, as the CLI does).
    pub fn new(host: &str) -> Result<Remote, ServeError> {
        let endpoint = Endpoint::parse(host)?;
        let token = std::env::var("AIRLOCK_TOKEN").ok().filter(|t| !t.is_empty());
        if token.is_some()
            && !endpoint.is_loopback()
            && std::env::var("AIRLOCK_TOKEN_INSECURE").ok().as_deref() != Some("1")
        {
            return Err(ServeError::TokenInTheClear(endpoint.describe()));
        }
        Ok(Remote { endpoint, token })
    }

    fn daemon_error(&self, why: impl std::fmt::Display) -> ToolError {
        ToolError::Daemon { target: self.endpoint.describe(), why: why.to_string() }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, ToolError> {
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let stream = tokio::net::UnixStream::connect(p).await.map_err(|e| self.daemon_error(e))?;
                self.exchange(stream, "localhost", method, path, content_type, body).await
            }
            Endpoint::Tcp(a) => {
                let stream = tokio::net::TcpStream::connect(a.as_str()).await.map_err(|e| self.daemon_error(e))?;
                self.exchange(stream, a, method, path, content_type, body).await
            }
        }
    }

    async fn exchange<S>(
        &self,
        stream: S,
        host: &str,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, ToolError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| self.daemon_error(e))?;
        let connection = tokio::spawn(conn);
        let mut request = Request::builder().method(method).uri(path).header(HOST, host);
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        if let Some(t) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| self.daemon_error(e))?;
        let response = sender.send_request(request).await.map_err(|e| self.daemon_error(e))?;
        let status = response.status().as_u16();
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = response.into_body().collect().await.map_err(|e| self.daemon_error(e))?.to_bytes();
        connection.abort();
        Ok(Answer { status, content_type, body })
    }

    /// A request; a 2xx answer's body, or the daemon's error sentence as a refusal.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer, ToolError> {
        let (ct, bytes) = match body {
            Some(v) => (Some("application/json"), v.to_string().into_bytes()),
            None => (None, Vec::new()),
        };
        let answer = self.send(method, path, ct, bytes).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        Err(self.refusal(&answer))
    }

    fn refusal(&self, answer: &Answer) -> ToolError {
        let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let Some(message) = parsed.as_ref().and_then(|v| v["error"]["message"].as_str()) else {
            return self.daemon_error(format!(
                "answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        };
        let mut message = message.to_string();
        if let Some(conflicts) = parsed.as_ref().and_then(|v| v["error"]["details"]["conflicts"].as_array()) {
            let list: Vec<&str> = conflicts.iter().filter_map(Value::as_str).collect();
            if !list.is_empty() {
                message.push_str(&format!(": {}", list.join(", ")));
            }
        }
        ToolError::Refused(message)
    }

    fn json(&self, answer: &Answer) -> Result<Value, ToolError> {
        if answer.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&answer.body).map_err(|e| self.daemon_error(format!("an answer that is not JSON: {e}")))
    }

    fn sandbox_path(name: &str, rest: &str) -> String {
        format!("/v1/sandboxes/{}{rest}", encode(name))
    }

    pub async fn create(&self, name: &str, req: &SandboxRequest) -> Result<Value, ToolError> {
        let mut spec = json!({ "name": name });
        if let Some(image) = &req.image {
            spec["image"] = json!(image);
        }
        if let Some(w) = &req.workspace {
            spec["workspace"] = json!(w);
        }
        if !req.allow.is_empty() {
            spec["allow"] = json!(req.allow);
        }
        if let Some(t) = &req.timeout {
            spec["timeout"] = json!(t);
        }
        let answer = self.call(Method::POST, "/v1/sandboxes", Some(spec)).await?;
        let created = self.json(&answer)?;
        Ok(json!({ "name": created["name"].as_str().unwrap_or(name) }))
    }

    pub async fn exec(&self, name: &str, argv: &[String], timeout: Option<&str>) -> Result<Value, ToolError> {
        let mut body = json!({ "cmd": argv });
        if let Some(t) = timeout {
            body["timeout"] = json!(t);
        }
        let answer = self.call(Method::POST, &Self::sandbox_path(name, "/exec"), Some(body)).await?;
        let mut done = self.json(&answer)?;
        if let Some(map) = done.as_object_mut() {
            map.remove("duration_ms");
        }
        Ok(done)
    }

    fn files_path(name: &str, path: &str) -> String {
        Self::sandbox_path(name, &format!("/files?path={}", encode(path)))
    }

    pub async fn write(&self, name: &str, path: &str, content: Vec<u8>) -> Result<(), ToolError> {
        let answer =
            self.send(Method::PUT, &Self::files_path(name, path), Some("application/octet-stream"), content).await?;
        if !(200..300).contains(&answer.status) {
            return Err(self.refusal(&answer));
        }
        Ok(())
    }

    pub async fn read(&self, name: &str, path: &str) -> Result<FileAnswer, ToolError> {
        let answer = self.call(Method::GET, &Self::files_path(name, path), None).await?;
        if answer.content_type.starts_with("application/json") {
            return Ok(FileAnswer::Dir(self.json(&answer)?["entries"].clone()));
        }
        if answer.body.len() > MAX_FILE {
            return Err(ToolError::Refused(format!(
                "{path} is larger than {} MiB, the most read_file returns",
                MAX_FILE >> 20
            )));
        }
        Ok(FileAnswer::File(answer.body.to_vec()))
    }

    pub async fn diff(&self, name: &str) -> Result<Value, ToolError> {
        let answer = self.call(Method::GET, &Self::sandbox_path(name, "/diff"), None).await?;
        self.json(&answer)
    }

    pub async fn commit(&self, name: &str, paths: &[String]) -> Result<Value, ToolError> {
        let answer =
            self.call(Method::POST, &Self::sandbox_path(name, "/commit"), Some(json!({ "paths": paths }))).await?;
        self.json(&answer)
    }

    pub async fn checkpoint(&self, name: &str, label: &str) -> Result<(), ToolError> {
        self.call(Method::POST, &Self::sandbox_path(name, "/checkpoints"), Some(json!({ "label": label }))).await?;
        Ok(())
    }

    pub async fn rollback(&self, name: &str, label: &str) -> Result<(), ToolError> {
        self.call(Method::POST, &Self::sandbox_path(name, "/rollback"), Some(json!({ "label": label }))).await?;
        Ok(())
    }

    pub async fn logs(&self, name: &str) -> Result<Vec<u8>, ToolError> {
        Ok(self.call(Method::GET, &Self::sandbox_path(name, "/logs"), None).await?.body.to_vec())
    }

    pub async fn list(&self) -> Result<Value, ToolError> {
        let answer = self.call(Method::GET, "/v1/sandboxes", None).await?;
        self.json(&answer)
    }

    pub async fn destroy(&self, name: &str) -> Result<(), ToolError> {
        self.call(Method::DELETE, &Self::sandbox_path(name, ""), None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(Endpoint::parse("unix:///run/a.sock").ok(), Some(Endpoint::Unix("/run/a.sock".into())));
        assert_eq!(Endpoint::parse("http://127.0.0.1:7").ok(), Some(Endpoint::Tcp("127.0.0.1:7".into())));
        for bad in ["", "unix://rel", "https://x:1", "http://nohost", "/a.sock"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(encode("a b/ü"), "a%20b%2F%C3%BC");
    }
}
