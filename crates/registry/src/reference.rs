//! Image references, normalised the way Docker does (`busybox` is `docker.io/library/busybox:latest`), and
//! which scheme a registry is spoken to with.

use std::net::IpAddr;

use crate::RegistryError;

/// Docker Hub's name in references, and the host its API is served from.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// The registry as written in the normalised reference (`docker.io`, `localhost:5055`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, RegistryError> {
        let parsed = oci_spec::distribution::Reference::try_from(reference)
            .map_err(|e| RegistryError::ParseReference { reference: reference.to_owned(), reason: e.to_string() })?;
        Ok(ImageRef {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().map(str::to_owned),
            digest: parsed.digest().map(str::to_owned),
        })
    }

    /// `registry/repository[:tag][@digest]`.
    pub fn normalised(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }

    /// The host (and port) the registry's API answers on.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What goes after `/manifests/`: the digest when there is one (it pins the content), else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

/// Whether `host[:port]` (or `[v6]:port`) names this machine: `localhost` or a loopback address.
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host_port.matches(':').count() == 1 {
        host_port.split(':').next().unwrap_or(host_port)
    } else {
        host_port
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http` when allowed (the insecure option, or a loopback registry), `https` otherwise.
pub(crate) fn scheme_for(host_port: &str, insecure: bool) -> &'static str {
    if insecure || is_loopback_host(host_port) {
        "http"
    } else {
        "https"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_are_normalised() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.normalised(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository, "library/busybox");
        let r = ImageRef::parse("someone/tool:1.2").unwrap();
        assert_eq!(r.normalised(), "docker.io/someone/tool:1.2");
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let r = ImageRef::parse("localhost:5055/x/y:tag").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5055", "x/y", Some("tag"))
        );
        assert_eq!(r.manifest_reference(), "tag");
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/test/img@{digest}")).unwrap();
        assert_eq!(r.manifest_reference(), digest);
        assert_eq!(r.normalised(), format!("127.0.0.1:5000/test/img@{digest}"));
        assert!(ImageRef::parse("with spaces:tag").is_err());
        assert!(ImageRef::parse("").is_err());
    }

    #[test]
    fn plain_http_only_for_loopback_or_insecure() {
        for host in ["localhost:5055", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1", "LOCALHOST"] {
            assert_eq!(scheme_for(host, false), "http", "{host}");
        }
        for host in ["registry-1.docker.io", "10.0.0.1:5000", "[fe80::1]:5000", "localhost.example.com"] {
            assert_eq!(scheme_for(host, false), "https", "{host}");
            assert_eq!(scheme_for(host, true), "http", "{host}");
        }
    }
}
