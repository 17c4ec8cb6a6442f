//! Credentials from Docker's `config.json` and the registry's `WWW-Authenticate` challenges.
//!
//! `config.json` lives in the directory `DOCKER_CONFIG` names, else `~/.docker`. Its `auths.<registry>` entries
//! carry `auth` (base64 of `user:password`), or `username` and `password`, and optionally `identitytoken` (an
//! OAuth2 refresh token, exchanged at the registry's token endpoint). Credential helpers (`credsStore`,
//! `credHelpers`) are not run.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::RegistryError;

/// What `config.json` says for one registry.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: String,
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// The directory `config.json` is read from: the option, else `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub(crate) fn docker_config_dir(option: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = option {
        return Some(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|home| Path::new(&home).join(".docker"))
}

/// The credentials `dir/config.json` has for `registry` (as written in the normalised reference), if any. A
/// missing file means none; an unreadable or malformed one is an error.
pub(crate) fn load_credentials(dir: &Path, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let path = dir.join("config.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RegistryError::ReadDockerConfig { path, source }),
    };
    let bad = |reason: String| RegistryError::ParseDockerConfig { path: path.clone(), reason };
    let config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let Some(auths) = config.get("auths") else { return Ok(None) };
    let auths = auths.as_object().ok_or_else(|| bad("`auths` is not an object".into()))?;
    let Some((key, entry)) = auths.iter().find(|(key, _)| key_names_registry(key, registry)) else {
        return Ok(None);
    };
    let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);
    let identity_token = field("identitytoken");
    let (username, password) = if let Some(auth) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| bad(format!("auths.{key}.auth is not base64: {e}")))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| bad(format!("auths.{key}.auth is not UTF-8 once decoded")))?;
        let (user, password) =
            decoded.split_once(':').ok_or_else(|| bad(format!("auths.{key}.auth is not base64 of user:password")))?;
        (user.to_owned(), password.to_owned())
    } else {
        (field("username").unwrap_or_default(), field("password").unwrap_or_default())
    };
    if username.is_empty() && password.is_empty() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(Credentials { username, password, identity_token }))
}

/// Whether a key of `auths` (`host`, `https://host`, `https://index.docker.io/v1/`) names `registry`.
fn key_names_registry(key: &str, registry: &str) -> bool {
    let host = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    host.eq_ignore_ascii_case(registry) || (hub(registry) && hub(host))
}

/// One challenge of a `WWW-Authenticate` header: its scheme (lowercased) and parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses the first challenge of `Bearer realm="https://auth",service="registry",scope="repository:x:pull"`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim();
        if key.contains(char::is_whitespace) {
            // The next challenge starts here.
            break;
        }
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((key.to_owned(), value));
        rest = remaining;
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
}

/// The `Authorization` value for HTTP basic authentication.
pub(crate) fn basic_header(credentials: &Credentials) -> String {
    let raw = format!("{}:{}", credentials.username, credentials.password);
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-registry-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn credentials_from_auth_and_fields() {
        let dir = temp_dir("creds");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        std::fs::write(
            dir.join("config.json"),
            format!(
                r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "bob", "password": "pw", "identitytoken": "tok"}}}},
                    "credsStore": "desktop"}}"#
            ),
        )
        .unwrap();
        let c = load_credentials(&dir, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str(), c.identity_token), ("alice", "s3:cret", None));
        let c = load_credentials(&dir, "docker.io").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.identity_token.as_deref()), ("bob", Some("tok")));
        assert_eq!(load_credentials(&dir, "localhost:5000").unwrap(), None);
        let missing = temp_dir("missing");
        assert_eq!(load_credentials(&missing, "docker.io").unwrap(), None);
        std::fs::remove_dir_all(&missing).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"auths": {"h": {"auth": "!!"}}}"#).unwrap();
        let e = load_credentials(&dir, "h").unwrap_err().to_string();
        assert!(e.contains("auths.h.auth is not base64"), "{e}");
        std::fs::write(dir.join("config.json"), "{").unwrap();
        assert!(matches!(load_credentials(&dir, "h"), Err(RegistryError::ParseDockerConfig { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_option_names_the_directory_first() {
        assert_eq!(docker_config_dir(Some(Path::new("/x"))), Some(PathBuf::from("/x")));
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/busybox:pull"));
        let c = parse_challenge(r#"Basic realm="a \"quoted\" realm", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c.param("charset"), Some("UTF-8"));
        assert_eq!(parse_challenge(""), None);
    }
}
