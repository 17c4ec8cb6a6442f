//! Classifies the first bytes a sandbox sends on a connection: a TLS ClientHello (and its SNI), an HTTP/1 request
//! (and its `Host`), or anything else. Pure functions over a byte prefix, so that hostile input can be thrown at
//! them in tests; they never panic and never read past the buffer.

/// Largest prefix buffered while waiting for a complete ClientHello or request head. A ClientHello with
/// post-quantum key shares is about 2 KiB; request heads are rarely above 8 KiB.
pub const MAX_PREFIX: usize = 32 * 1024;

/// What the first bytes turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstData {
    /// A TLS ClientHello with the server name it asks for (`None`: no SNI extension).
    Tls { sni: Option<String> },
    /// Something starting like TLS that is not a well-formed ClientHello.
    MalformedTls(&'static str),
    /// An HTTP/1 request head.
    Http(HttpRequest),
    /// Something starting like an HTTP request whose head is malformed or too large.
    MalformedHttp(&'static str),
    /// Another protocol: passed through uninspected.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent (origin form `/x`, absolute form `http://h/x`, authority form `h:443`).
    pub target: String,
    /// `Host` header, lower-cased, without the port.
    pub host: Option<String>,
    /// Length of the head including the final CRLFCRLF.
    pub head_len: usize,
}

/// Result of looking at a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Not decidable yet: read more bytes (unless the buffer is full or the peer stopped sending).
    NeedMore,
    Done(FirstData),
}

const HTTP_METHODS: &[&str] =
    &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PROPFIND", "PURGE"];

/// Classifies `buf`, the bytes received so far.
pub fn classify(buf: &[u8]) -> Classified {
    if buf.is_empty() {
        return Classified::NeedMore;
    }
    if buf[0] == 0x16 {
        return classify_tls(buf);
    }
    if looks_like_http(buf) {
        return classify_http(buf);
    }
    if buf.len() < 8 && HTTP_METHODS.iter().any(|m| m.as_bytes().starts_with(buf) || buf.starts_with(m.as_bytes())) {
        return Classified::NeedMore;
    }
    Classified::Done(FirstData::Other)
}

fn looks_like_http(buf: &[u8]) -> bool {
    HTTP_METHODS.iter().any(|m| buf.len() > m.len() && buf.starts_with(m.as_bytes()) && buf[m.len()] == b' ')
}

/// Strips an optional `:port` (and IPv6 brackets) from a host, lower-cases it and drops a trailing dot.
pub fn host_without_port(host: &str) -> String {
    let host = host.trim();
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() > 1 {
        host // a bare IPv6 address has no port
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    bare.trim_end_matches('.').to_ascii_lowercase()
}

fn classify_http(buf: &[u8]) -> Classified {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_PREFIX {
                Classified::Done(FirstData::MalformedHttp("request head too large"))
            } else {
                Classified::NeedMore
            }
        }
        Ok(httparse::Status::Complete(head_len)) => {
            let mut hosts = request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
            let host = hosts.next().map(|h| String::from_utf8_lossy(h.value).into_owned());
            if hosts.next().is_some() {
                return Classified::Done(FirstData::MalformedHttp("more than one Host header"));
            }
            Classified::Done(FirstData::Http(HttpRequest {
                method: request.method.unwrap_or_default().to_owned(),
                target: request.path.unwrap_or_default().to_owned(),
                host: host.map(|h| host_without_port(&h)),
                head_len,
            }))
        }
        Err(_) => Classified::Done(FirstData::MalformedHttp("malformed request head")),
    }
}

/// Reads TLS records until the handshake layer holds a complete first message, then parses it.
fn classify_tls(buf: &[u8]) -> Classified {
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return need_more_or(buf, "ClientHello too large");
        };
        if header[0] != 0x16 {
            return Classified::Done(FirstData::MalformedTls("record before the ClientHello is not a handshake"));
        }
        if header[1] != 0x03 {
            return Classified::Done(FirstData::MalformedTls("not a TLS record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16_384 + 256 {
            return Classified::Done(FirstData::MalformedTls("bad record length"));
        }
        let Some(fragment) = buf.get(at + 5..at + 5 + len) else {
            return need_more_or(buf, "ClientHello too large");
        };
        handshake.extend_from_slice(fragment);
        at += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Classified::Done(FirstData::MalformedTls("first handshake message is not a ClientHello"));
            }
            let body_len =
                (usize::from(handshake[1]) << 16) | (usize::from(handshake[2]) << 8) | usize::from(handshake[3]);
            if body_len > MAX_PREFIX {
                return Classified::Done(FirstData::MalformedTls("ClientHello too large"));
            }
            if let Some(body) = handshake.get(4..4 + body_len) {
                return Classified::Done(match parse_client_hello(body) {
                    Ok(sni) => FirstData::Tls { sni },
                    Err(reason) => FirstData::MalformedTls(reason),
                });
            }
        }
    }
}

fn need_more_or(buf: &[u8], reason: &'static str) -> Classified {
    if buf.len() >= MAX_PREFIX {
        Classified::Done(FirstData::MalformedTls(reason))
    } else {
        Classified::NeedMore
    }
}

/// A cursor over a byte slice whose reads fail instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("truncated ClientHello");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    /// A sub-reader over a vector with a `len_bytes`-byte length prefix.
    fn vector(&mut self, len_bytes: usize) -> Result<Reader<'a>, &'static str> {
        let len = if len_bytes == 1 { self.u8()? } else { self.u16()? };
        Ok(Reader { buf: self.take(len)? })
    }
}

/// Returns the host_name of the server_name extension (RFC 6066), if any.
fn parse_client_hello(body: &[u8]) -> Result<Option<String>, &'static str> {
    let mut r = Reader { buf: body };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vector(1)?; // legacy_session_id
    r.vector(2)?; // cipher_suites
    r.vector(1)?; // legacy_compression_methods
    if r.buf.is_empty() {
        return Ok(None); // no extensions at all
    }
    let mut extensions = r.vector(2)?;
    let mut sni = None;
    while !extensions.buf.is_empty() {
        let kind = extensions.u16()?;
        let mut data = extensions.vector(2)?;
        if kind != 0 {
            continue;
        }
        if sni.is_some() {
            return Err("more than one server_name extension");
        }
        let mut names = data.vector(2)?;
        while !names.buf.is_empty() {
            let name_type = names.u8()?;
            let name = names.vector(2)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name.buf).map_err(|_| "server name is not ASCII")?;
                // Only the trailing dot of a fully qualified name is dropped: a name of dots alone ("." ...) is
                // not a host name either (it would be recorded as an empty SNI).
                let name = name.trim_end_matches('.');
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("server name is not a host name");
                }
                if sni.replace(name.to_ascii_lowercase()).is_some() {
                    return Err("more than one host_name in server_name");
                }
            }
        }
    }
    Ok(sni)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal but well-formed ClientHello for `sni`, as one TLS record.
    pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut list = vec![0u8];
            list.extend_from_slice(&(name.len() as u16).to_be_bytes());
            list.extend_from_slice(name.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            ext.extend_from_slice(&[0, 0]);
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        // supported_versions, so that the extension list has more than SNI
        ext.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.extend_from_slice(&[0]); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        record.extend_from_slice(&hs);
        record
    }

    #[test]
    fn sni_is_extracted() {
        let hello = client_hello(Some("Allowed.Test"));
        assert_eq!(classify(&hello), Classified::Done(FirstData::Tls { sni: Some("allowed.test".into()) }));
        assert_eq!(classify(&client_hello(None)), Classified::Done(FirstData::Tls { sni: None }));
    }

    /// Found by the fuzz harness's invariant (fuzz/corpus/first_bytes/regression-sni-only-dots): an SNI of dots
    /// alone was accepted as an empty name.
    #[test]
    fn sni_of_dots_alone_is_malformed() {
        for name in [".", "..", "..."] {
            let hello = client_hello(Some(name));
            assert_eq!(classify(&hello), Classified::Done(FirstData::MalformedTls("server name is not a host name")));
        }
        let hello = client_hello(Some("fqdn.test."));
        assert_eq!(classify(&hello), Classified::Done(FirstData::Tls { sni: Some("fqdn.test".into()) }));
    }

    #[test]
    fn partial_client_hello_needs_more() {
        let hello = client_hello(Some("allowed.test"));
        for cut in 1..hello.len() {
            assert_eq!(classify(&hello[..cut]), Classified::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn client_hello_split_over_records() {
        let hello = client_hello(Some("split.test"));
        let hs = &hello[5..];
        let mut split = Vec::new();
        for chunk in hs.chunks(7) {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            split.extend_from_slice(chunk);
        }
        assert_eq!(classify(&split), Classified::Done(FirstData::Tls { sni: Some("split.test".into()) }));
    }

    #[test]
    fn http_host_is_extracted_without_port() {
        let req = b"GET /x HTTP/1.1\r\nHost: Allowed.Test:8080\r\nAccept: */*\r\n\r\nbody";
        let Classified::Done(FirstData::Http(r)) = classify(req) else { panic!() };
        assert_eq!(r.host.as_deref(), Some("allowed.test"));
        assert_eq!(r.head_len, req.len() - 4);
        assert_eq!(classify(b"GET /x HTTP/1.1\r\nHost: a"), Classified::NeedMore);
        assert_eq!(classify(b"GE"), Classified::NeedMore);
        let two = b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n";
        assert!(matches!(classify(two), Classified::Done(FirstData::MalformedHttp(_))));
        let none = b"GET / HTTP/1.0\r\n\r\n";
        assert!(matches!(classify(none), Classified::Done(FirstData::Http(HttpRequest { host: None, .. }))));
    }

    #[test]
    fn other_protocols_pass() {
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.2\r\n"), Classified::Done(FirstData::Other));
        assert_eq!(classify(&[0u8; 10]), Classified::Done(FirstData::Other));
    }

    #[test]
    fn host_forms() {
        assert_eq!(host_without_port("a.test:443"), "a.test");
        assert_eq!(host_without_port("A.TEST."), "a.test");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("::1"), "::1");
    }

    /// Random bytes and mutated ClientHellos/requests never panic the classifier.
    #[test]
    fn hostile_prefixes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [client_hello(Some("a.test")), b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec()];
        for i in 0..100_000 {
            let mut p = seeds[i % 2].clone();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p.truncate((next() as usize) % (p.len() + 1));
            let _ = classify(&p);
            let random: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let _ = classify(&random);
        }
    }
}
