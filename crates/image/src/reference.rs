//! Image references, normalised as Docker does: `busybox` is `docker.io/library/busybox:latest`,
//! `localhost:5055/x/y` is `localhost:5055/x/y:latest`, `name@sha256:…` names a manifest by digest.

use std::fmt;

use crate::digest::sha256_hex;
use crate::error::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry: `docker.io`, `localhost:5055`, `ghcr.io`...
    pub domain: String,
    /// The repository path in that registry: `library/busybox`, `x/y`.
    pub path: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// A manifest digest (`sha256:…`), when the reference pins one.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `text`.
    pub fn parse(text: &str) -> Result<Reference, ImageError> {
        let bad = |why: &'static str| ImageError::ParseReference { reference: text.to_string(), why };
        if text.is_empty() || text.len() > 512 {
            return Err(bad("empty or too long"));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                sha256_hex(digest).map_err(|_| bad("the digest after @ is not sha256:<64 hex digits>"))?;
                (name, Some(digest.to_string()))
            }
            None => (text, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_string())),
            None => (name, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !tag.starts_with(['.', '-']);
            if !valid {
                return Err(bad("a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"));
            }
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':']) || first == "localhost" || first != first.to_lowercase() =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" { DEFAULT_DOMAIN.to_string() } else { domain };
        let domain_ok = domain.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '[')
            && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            && !domain.contains("..");
        if !domain_ok {
            return Err(bad("the registry is not a host name with an optional port"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if path.len() > 255 || !path.split('/').all(component_ok) {
            return Err(bad("a repository is lowercase letters, digits and '.', '_', '-' separators, in '/' parts"));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { domain, path, tag, digest })
    }

    /// `domain/path` (`docker.io/library/busybox`).
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short form people type: `busybox:latest` for `docker.io/library/busybox:latest`, `user/x:1` for
    /// `docker.io/user/x:1`; other registries keep their domain.
    pub fn familiar(&self) -> String {
        let full = self.to_string();
        full.strip_prefix("docker.io/library/")
            .or_else(|| full.strip_prefix("docker.io/"))
            .map(str::to_string)
            .unwrap_or(full)
    }
}

impl fmt::Display for Reference {
    /// The canonical form: `docker.io/library/busybox:latest`, `host:5000/x/y@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn references_normalise_as_docker_does() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(canon("user/app:v1"), "docker.io/user/app:v1");
        assert_eq!(canon("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("localhost:5055/x/y:tag"), "localhost:5055/x/y:tag");
        assert_eq!(canon("localhost/x"), "localhost/x:latest");
        assert_eq!(canon("ghcr.io/o/r"), "ghcr.io/o/r:latest");
        let d = crate::digest::sha256_of(b"m");
        assert_eq!(canon(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
        assert_eq!(Reference::parse("busybox").unwrap().familiar(), "busybox:latest");
        assert_eq!(Reference::parse("localhost:5055/x/y:t").unwrap().familiar(), "localhost:5055/x/y:t");
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["", "Busybox", "busybox:", "a//b", "busybox:-x", "x@sha256:zz", "../x", "a b"] {
            assert!(Reference::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
