//! A small blocking HTTP/1.1 client for the CLI against a daemon (`--host`, `AIRLOCK_HOST`): over a Unix socket
//! or TCP, a request with a Content-Length body, an answer with a Content-Length or chunked body, read whole or
//! as it arrives. Hand-written because the CLI is a static binary whose start-up time is measured: a full HTTP
//! stack (and an async runtime) for one request per process would cost more than it brings.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("AIRLOCK_HOST/--host {0:?}: expected unix:///path/to/socket or http://host:port")]
    BadAddress(String),
    #[error("cannot connect to the airlock daemon at {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("the airlock daemon at {target} did not answer properly: {source}")]
    Exchange { target: String, source: io::Error },
    #[error("the airlock daemon at {target} sent a malformed answer: {what}")]
    Malformed { target: String, what: String },
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, HttpError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Endpoint::Unix(PathBuf::from(path)));
            }
        } else if let Some(rest) = text.strip_prefix("http://") {
            let hostport = rest.trim_end_matches('/');
            if !hostport.is_empty() && !hostport.contains('/') && hostport.contains(':') {
                return Ok(Endpoint::Tcp(hostport.to_string()));
            }
        }
        Err(HttpError::BadAddress(text.to_string()))
    }

    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp(a) => format!("http://{a}"),
        }
    }

    /// Whether a TCP endpoint names a loopback address (the only place a token goes over plain HTTP unasked).
    pub fn is_loopback(&self) -> bool {
        match self {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp(a) => {
                a.to_socket_addrs().map(|mut addrs| addrs.all(|s| s.ip().is_loopback())).unwrap_or(false)
            }
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// An answer: its status, then its body (read whole or piece by piece).
pub struct Answer {
    pub status: u16,
    reader: BufReader<Box<dyn Stream>>,
    chunked: bool,
    remaining: Option<u64>,
    chunk_left: u64,
    done: bool,
    target: String,
}

impl Answer {
    fn malformed(&self, what: &str) -> HttpError {
        HttpError::Malformed { target: self.target.clone(), what: what.to_string() }
    }

    /// The next piece of the body; empty at its end.
    pub fn read_some(&mut self) -> Result<Vec<u8>, HttpError> {
        if self.done {
            return Ok(Vec::new());
        }
        let io = |target: &str, source: io::Error| HttpError::Exchange { target: target.to_string(), source };
        if !self.chunked {
            let want = self.remaining.map_or(65536, |r| r.min(65536)) as usize;
            if want == 0 {
                self.done = true;
                return Ok(Vec::new());
            }
            let mut buf = vec![0u8; want];
            let n = self.reader.read(&mut buf).map_err(|e| io(&self.target, e))?;
            buf.truncate(n);
            if n == 0 {
                self.done = true;
                if self.remaining.is_some_and(|r| r > 0) {
                    return Err(self.malformed("the body ended early"));
                }
            }
            if let Some(r) = &mut self.remaining {
                *r -= n as u64;
            }
            return Ok(buf);
        }
        if self.chunk_left == 0 {
            let mut line = String::new();
            self.reader.read_line(&mut line).map_err(|e| io(&self.target, e))?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text, 16).map_err(|_| self.malformed("a bad chunk size"))?;
            if size == 0 {
                // The trailer's end.
                let mut rest = String::new();
                let _ = self.reader.read_line(&mut rest);
                self.done = true;
                return Ok(Vec::new());
            }
            self.chunk_left = size;
        }
        let mut buf = vec![0u8; self.chunk_left.min(65536) as usize];
        let n = self.reader.read(&mut buf).map_err(|e| io(&self.target, e))?;
        if n == 0 {
            self.done = true;
            return Err(self.malformed("the body ended inside a chunk"));
        }
        buf.truncate(n);
        self.chunk_left -= n as u64;
        if self.chunk_left == 0 {
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf).map_err(|e| io(&self.target, e))?;
        }
        Ok(buf)
    }

    /// The whole body.
    pub fn body(mut self) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        loop {
            let part = self.read_some()?;
            if part.is_empty() {
                return Ok(out);
            }
            out.extend(part);
        }
    }
}

/// Sends one request (`Connection: close`) and reads the answer's head.
pub fn request(
    endpoint: &Endpoint,
    token: Option<&str>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    accept: Option<&str>,
) -> Result<Answer, HttpError> {
    let target = endpoint.describe();
    let connect = |source: io::Error| HttpError::Connect { target: target.clone(), source };
    let stream: Box<dyn Stream> = match endpoint {
        Endpoint::Unix(p) => Box::new(UnixStream::connect(p).map_err(connect)?),
        Endpoint::Tcp(a) => {
            let addr = a
                .to_socket_addrs()
                .map_err(connect)?
                .next()
                .ok_or_else(|| connect(io::Error::new(io::ErrorKind::NotFound, "no address")))?;
            Box::new(TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(connect)?)
        }
    };
    let exchange = |source: io::Error| HttpError::Exchange { target: target.clone(), source };
    let host = match endpoint {
        Endpoint::Unix(_) => "localhost",
        Endpoint::Tcp(a) => a.as_str(),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(a) = accept {
        head.push_str(&format!("Accept: {a}\r\n"));
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    stream.write_all(head.as_bytes()).map_err(exchange)?;
    stream.write_all(body).map_err(exchange)?;
    stream.flush().map_err(exchange)?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).map_err(exchange)?;
    let malformed = |what: &str| HttpError::Malformed { target: target.clone(), what: what.to_string() };
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed("no status line"))?;
    let (mut chunked, mut remaining) = (false, None);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(exchange)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                remaining = Some(v.parse::<u64>().map_err(|_| malformed("a bad Content-Length"))?);
            }
        }
    }
    let done = status == 204 || method == "HEAD";
    Ok(Answer { status, reader, chunked, remaining, chunk_left: 0, done, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(Endpoint::parse("unix:///run/a.sock").unwrap(), Endpoint::Unix("/run/a.sock".into()));
        assert_eq!(Endpoint::parse("http://127.0.0.1:7000").unwrap(), Endpoint::Tcp("127.0.0.1:7000".into()));
        assert_eq!(Endpoint::parse("http://127.0.0.1:7000/").unwrap(), Endpoint::Tcp("127.0.0.1:7000".into()));
        for bad in ["", "unix://relative", "https://x:1", "http://nohost", "http://a:1/path", "/run/a.sock"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("http://127.0.0.1:1").unwrap().is_loopback());
        assert!(Endpoint::parse("http://[::1]:1").unwrap().is_loopback());
        assert!(!Endpoint::parse("http://192.0.2.1:1").unwrap().is_loopback());
    }
}
