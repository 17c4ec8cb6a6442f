//! One repository on one registry, spoken to over HTTP(S): requests with the authorisation the registry asked
//! for (anonymous, a Bearer token from its token endpoint, or basic), retried with backoff on connection errors,
//! 429 and 5xx.

use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};

use crate::auth::{basic_header, parse_challenge, Credentials};
use crate::reference::{is_loopback_host, scheme_for, ImageRef};
use crate::{PullOptions, RegistryError};

/// The longest error body quoted in an error message.
const QUOTED_BODY: usize = 200;

pub(crate) struct Session {
    client: reqwest::Client,
    /// `scheme://host[:port]`.
    base: String,
    repository: String,
    credentials: Option<Credentials>,
    authorization: Option<HeaderValue>,
    insecure: bool,
    pub max_retries: u32,
    retry_delay: Duration,
}

impl Session {
    pub fn new(
        image: &ImageRef,
        options: &PullOptions,
        credentials: Option<Credentials>,
    ) -> Result<Self, RegistryError> {
        let insecure = options.insecure;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if url_allowed(attempt.url(), insecure) {
                attempt.follow()
            } else {
                let message = format!("a redirect to plain HTTP: {}", attempt.url());
                attempt.error(message)
            }
        });
        // The TLS provider, once per process (an error means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("airlock/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .redirect(redirects)
            .build()
            .map_err(RegistryError::BuildClient)?;
        let host = image.api_host();
        Ok(Session {
            client,
            base: format!("{}://{host}", scheme_for(host, insecure)),
            repository: image.repository.clone(),
            credentials,
            authorization: None,
            insecure,
            max_retries: options.max_retries,
            retry_delay: options.retry_delay,
        })
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}/v2/{}/manifests/{reference}", self.base, self.repository)
    }

    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }

    /// How long to wait before retry number `attempt` (0-based): the delay doubled each time, at most 30 s.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_delay.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(30))
    }

    /// GETs `url`, authenticating when the registry asks to, retrying transient failures. Answers 2xx and 416
    /// (a range the blob does not have); any other status is an error naming the URL.
    pub async fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<Response, RegistryError> {
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            let mut request = self.client.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(from) = range_from {
                request = request.header(RANGE, format!("bytes={from}-"));
            }
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(source) if attempt < self.max_retries && transient(&source) => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                Err(source) => return Err(RegistryError::Request { url: url.to_owned(), source }),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                authenticated = true;
                self.authenticate(url, &response).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED {
                let detail = match &self.credentials {
                    Some(c) => format!("the credentials for user {:?} were refused", c.username),
                    None => "no credentials for this registry in the Docker config.json".to_owned(),
                };
                return Err(RegistryError::Unauthorized { url: url.to_owned(), detail });
            }
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) && attempt < self.max_retries {
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
                return Ok(response);
            }
            return Err(status_error(url, response).await);
        }
    }

    /// Answers a 401: fetches a Bearer token from the realm the challenge names, or uses basic authentication.
    async fn authenticate(&mut self, url: &str, response: &Response) -> Result<(), RegistryError> {
        let header = response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let unauthorized = |detail: String| RegistryError::Unauthorized { url: url.to_owned(), detail };
        let challenge = parse_challenge(header)
            .ok_or_else(|| unauthorized("the registry answered 401 without a WWW-Authenticate challenge".into()))?;
        let value = match challenge.scheme.as_str() {
            "basic" => match &self.credentials {
                Some(c) if !c.username.is_empty() => basic_header(c),
                _ => return Err(unauthorized("basic authentication is required and the Docker config.json has no user and password for this registry".into())),
            },
            "bearer" => {
                let realm = challenge
                    .param("realm")
                    .ok_or_else(|| unauthorized(format!("the Bearer challenge names no realm: {header}")))?;
                let default_scope = format!("repository:{}:pull", self.repository);
                let scope = challenge.param("scope").unwrap_or(&default_scope);
                let token = self.fetch_token(realm, challenge.param("service"), scope).await?;
                format!("Bearer {token}")
            }
            other => return Err(unauthorized(format!("unsupported authentication scheme {other:?}"))),
        };
        let value = HeaderValue::from_str(&value)
            .map_err(|_| unauthorized("the credentials or token are not a valid header value".into()))?;
        self.authorization = Some(value);
        Ok(())
    }

    /// The token flow: an identity token is exchanged by a POST (OAuth2 refresh token); otherwise a GET, with
    /// basic authentication when there are credentials, anonymous when not.
    async fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String, RegistryError> {
        let fail = |reason: String| RegistryError::FetchToken { realm: realm.to_owned(), reason };
        let mut url = Url::parse(realm).map_err(|e| fail(format!("the realm is not a URL: {e}")))?;
        if !url_allowed(&url, self.insecure) {
            return Err(RegistryError::InsecureUrl { url: realm.to_owned() });
        }
        let identity_token = self.credentials.as_ref().and_then(|c| c.identity_token.as_deref());
        let mut attempt = 0;
        let response = loop {
            let request = if let Some(refresh_token) = identity_token {
                let mut form = Url::parse("http://form.invalid/").map_err(|e| fail(e.to_string()))?;
                {
                    let mut pairs = form.query_pairs_mut();
                    pairs.append_pair("grant_type", "refresh_token");
                    pairs.append_pair("refresh_token", refresh_token);
                    pairs.append_pair("client_id", "airlock");
                    pairs.append_pair("scope", scope);
                    if let Some(service) = service {
                        pairs.append_pair("service", service);
                    }
                }
                let body = form.query().unwrap_or("").to_owned();
                self.client.post(url.clone()).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body)
            } else {
                {
                    let mut pairs = url.query_pairs_mut();
                    if let Some(service) = service {
                        pairs.append_pair("service", service);
                    }
                    pairs.append_pair("scope", scope);
                }
                let request = self.client.get(url.clone());
                match &self.credentials {
                    Some(c) if !c.username.is_empty() => request.basic_auth(&c.username, Some(&c.password)),
                    _ => request,
                }
            };
            match request.send().await {
                Ok(r)
                    if (r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS)
                        && attempt < self.max_retries => {}
                Ok(r) => break r,
                Err(e) if attempt < self.max_retries && transient(&e) => {}
                Err(e) => return Err(fail(e.to_string())),
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
            if identity_token.is_none() {
                // The query pairs are appended again on the next round.
                url.set_query(None);
            }
        };
        let status = response.status();
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("HTTP {}: {}", status.as_u16(), quote(&body))));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the answer is not JSON ({e}): {}", quote(&body))))?;
        ["token", "access_token"]
            .iter()
            .find_map(|k| answer.get(k).and_then(|v| v.as_str()).filter(|t| !t.is_empty()))
            .map(str::to_owned)
            .ok_or_else(|| fail("the answer has neither `token` nor `access_token`".into()))
    }
}

/// Whether an error sending a request is worth retrying: anything but a request that could not be built or a
/// redirect refused.
pub(crate) fn transient(e: &reqwest::Error) -> bool {
    !e.is_builder() && !e.is_redirect() && !e.is_status()
}

/// HTTPS anywhere; plain HTTP only with the insecure option or to a loopback host.
fn url_allowed(url: &Url, insecure: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => insecure || url.host_str().is_some_and(is_loopback_host),
        _ => false,
    }
}

/// An error for an unexpected status, quoting the start of the body.
pub(crate) async fn status_error(url: &str, response: Response) -> RegistryError {
    let status = response.status().as_u16();
    let body = response.bytes().await.map(|b| quote(&b)).unwrap_or_default();
    RegistryError::Status { url: url.to_owned(), status, body }
}

/// The first bytes of a body, lossily as text, for an error message.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)]);
    let text = text.trim();
    if body.len() > QUOTED_BODY {
        format!("{text}…")
    } else {
        text.to_owned()
    }
}
