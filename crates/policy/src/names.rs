//! Checks for the names and paths a policy carries: sandbox names, host names, environment keys, absolute paths
//! and network allow entries.
//!
//! These checks are about form only. Whether a path exists or is a symlink is the runtime's question, asked on
//! the host just before use. Everything here must hold for any input, however long or strange, because profile
//! files and flags come from people and scripts that make mistakes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::sandbox::AllowRule;

/// Longest sandbox name. The name becomes a directory under the state directory and appears in `airlock ls`.
pub const MAX_SANDBOX_NAME: usize = 64;

/// Longest host name: the kernel's `HOST_NAME_MAX`; `sethostname` refuses more.
pub const MAX_HOSTNAME: usize = 64;

/// Longest path in bytes: `PATH_MAX` (4096) less the terminating NUL. The kernel refuses longer paths anyway;
/// refusing here gives a message that names the path.
pub const MAX_PATH: usize = 4095;

/// Longest single path component: `NAME_MAX`.
pub const MAX_PATH_COMPONENT: usize = 255;

/// Longest domain name in an allow entry, per RFC 1035.
pub const MAX_DOMAIN: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid sandbox name {}: {reason}; use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit (e.g. fix-tests)",
        Quoted(.name)
    )]
    SandboxName { name: String, reason: &'static str },
    #[error(
        "invalid hostname {}: {reason}; use up to 64 characters of dot-separated labels of letters, digits and '-' (e.g. airlock)",
        Quoted(.name)
    )]
    Hostname { name: String, reason: &'static str },
    #[error(
        "invalid environment variable name {}: {reason}; use letters, digits and '_', not starting with a digit (e.g. MY_TOKEN)",
        Quoted(.key)
    )]
    EnvKey { key: String, reason: &'static str },
    /// A NUL ends a C string, so the program would see a different value from the one in the policy.
    #[error("invalid environment value {}: it contains a NUL byte, which a program's environment cannot hold", Quoted(.value))]
    EnvValue { value: String },
    #[error("invalid path {}: {reason}", Quoted(.path))]
    Path { path: String, reason: &'static str },
    #[error(
        "invalid allow entry {}: {reason}; expected DOMAIN[:PORT] or *.DOMAIN[:PORT] (e.g. pypi.org or *.github.com:443)",
        Quoted(.pattern)
    )]
    AllowPattern { pattern: String, reason: &'static str },
}

/// Shows a value from the user inside a message: quoted, with control characters escaped so that a profile
/// cannot write terminal escape sequences to the invoker's stderr, and cut short so that a 10 000-character
/// mistake still gives a one-line message.
pub struct Quoted<'a>(pub &'a str);

impl Quoted<'_> {
    /// Characters of the value shown before it is cut.
    const SHOWN: usize = 64;
}

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(Self::SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// Checks a sandbox name (`--name`). The name is used as a directory name under the state directory, so it must
/// not be able to name anything else: no `/`, no `..`, no leading `.` or `-` (hidden files, options).
pub fn validate_sandbox_name(name: &str) -> Result<(), NameError> {
    let fail = |reason| Err(NameError::SandboxName { name: name.to_owned(), reason });
    let Some(first) = name.bytes().next() else {
        return fail("it is empty");
    };
    if name.len() > MAX_SANDBOX_NAME {
        return fail("it is longer than 64 bytes");
    }
    if !first.is_ascii_alphanumeric() {
        return fail("it must start with a letter or digit");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return fail("it contains a character other than letters, digits, '_', '.' and '-'");
    }
    if name.contains("..") {
        return fail("it contains '..'");
    }
    Ok(())
}

/// Checks a host name (`--hostname`): RFC 1123 labels joined by dots, at most [`MAX_HOSTNAME`] bytes in all.
pub fn validate_hostname(name: &str) -> Result<(), NameError> {
    let fail = |reason| Err(NameError::Hostname { name: name.to_owned(), reason });
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_HOSTNAME {
        return fail("it is longer than 64 bytes");
    }
    for label in name.split('.') {
        if let Err(reason) = check_dns_label(label) {
            return fail(reason);
        }
    }
    Ok(())
}

/// Checks an environment variable name (`--env KEY=VALUE`, `--pass-env KEY`). The portable shell form is
/// required because a name with `=` would split differently for the program than in the policy, and names
/// outside this form cannot be used from a shell anyway.
pub fn validate_env_key(key: &str) -> Result<(), NameError> {
    let fail = |reason| Err(NameError::EnvKey { key: key.to_owned(), reason });
    let Some(first) = key.bytes().next() else {
        return fail("it is empty");
    };
    if key.contains('=') {
        return fail("it contains '='");
    }
    if key.contains('\0') {
        return fail("it contains a NUL byte");
    }
    if first.is_ascii_digit() {
        return fail("it starts with a digit");
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return fail("it contains a character other than letters, digits and '_'");
    }
    Ok(())
}

/// Checks an environment value: anything but NUL.
pub fn validate_env_value(value: &str) -> Result<(), NameError> {
    if value.contains('\0') {
        return Err(NameError::EnvValue { value: value.to_owned() });
    }
    Ok(())
}

/// Checks an absolute path and returns it normalised: repeated `/`, `.` components and a trailing `/` removed
/// (`//srv/./app/` becomes `/srv/app`). A `..` component is refused rather than resolved, because resolving it
/// without the file system can name a different place than the kernel would (when a component is a symlink), and
/// a policy should say plainly what it shares.
pub fn validate_absolute_path(path: &str) -> Result<String, NameError> {
    let fail = |reason| Err(NameError::Path { path: path.to_owned(), reason });
    if path.is_empty() {
        return fail("it is empty; give an absolute path (e.g. /srv/data)");
    }
    if path.len() > MAX_PATH {
        return fail("it is longer than 4095 bytes, the kernel's limit");
    }
    if path.contains('\0') {
        return fail("it contains a NUL byte");
    }
    if !path.starts_with('/') {
        return fail("it is not absolute; start it with '/' (e.g. /srv/data)");
    }
    let mut normal = String::with_capacity(path.len());
    for component in path.split('/') {
        match component {
            "" | "." => continue,
            ".." => return fail("it contains a '..' component; write the path without it"),
            _ if component.len() > MAX_PATH_COMPONENT => {
                return fail("it has a component longer than 255 bytes, the kernel's limit")
            }
            _ => {
                normal.push('/');
                normal.push_str(component);
            }
        }
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok(normal)
}

/// Parses a network allow entry: `DOMAIN[:PORT]`, `*.DOMAIN[:PORT]`, an IPv4 address with an optional port, or
/// an IPv6 address (`::1`, or `[::1]:443` with a port). The domain is lower-cased; IP addresses are kept in their
/// canonical form. Only a whole leading label may be a wildcard: `*.example.com` matches every name below
/// `example.com`, and anything looser (`*foo.com`, `a.*.com`) would be too easy to misread.
pub fn validate_allow_pattern(pattern: &str) -> Result<AllowRule, NameError> {
    let fail = |reason| Err(NameError::AllowPattern { pattern: pattern.to_owned(), reason });
    if pattern.is_empty() {
        return fail("it is empty");
    }
    if pattern.contains("://") {
        return fail("it is a URL; give only the host name (e.g. pypi.org, not https://pypi.org/simple)");
    }
    if pattern.contains('/') {
        return fail("it contains '/'; give only a host name, without a path or network prefix");
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail("it contains whitespace or a control character");
    }

    let (host, port) = match split_host_port(pattern) {
        Ok(parts) => parts,
        Err(reason) => return fail(reason),
    };
    let port = match port.map(parse_port).transpose() {
        Ok(port) => port,
        Err(reason) => return fail(reason),
    };
    let domain = match host {
        Host::V6(addr) => addr.to_string(),
        Host::Name(name) => match name.parse::<Ipv4Addr>() {
            Ok(addr) => addr.to_string(),
            Err(_) => match check_domain_pattern(name) {
                Ok(domain) => domain,
                Err(reason) => return fail(reason),
            },
        },
    };
    Ok(AllowRule { domain, port })
}

enum Host<'a> {
    V6(Ipv6Addr),
    Name(&'a str),
}

/// Splits an allow entry into host and port. IPv6 addresses contain `:`, so they take a port only in brackets.
fn split_host_port(pattern: &str) -> Result<(Host<'_>, Option<&str>), &'static str> {
    if let Some(bracketed) = pattern.strip_prefix('[') {
        let Some((addr, rest)) = bracketed.split_once(']') else {
            return Err("it has '[' without a closing ']'");
        };
        let Ok(addr) = addr.parse::<Ipv6Addr>() else {
            return Err("the address in brackets is not an IPv6 address");
        };
        return match rest {
            "" => Ok((Host::V6(addr), None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((Host::V6(addr), Some(port))),
                None => Err("only ':PORT' may follow ']'"),
            },
        };
    }
    if let Ok(addr) = pattern.parse::<Ipv6Addr>() {
        return Ok((Host::V6(addr), None));
    }
    Ok(match pattern.split_once(':') {
        Some((host, port)) => (Host::Name(host), Some(port)),
        None => (Host::Name(pattern), None),
    })
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port is not a number from 1 to 65535");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port is not a number from 1 to 65535"),
        Ok(port) => Ok(port),
    }
}

/// Checks a domain with an optional leading `*.` and returns it lower-cased.
fn check_domain_pattern(name: &str) -> Result<String, &'static str> {
    if name.is_empty() {
        return Err("the host name is empty");
    }
    if !name.is_ascii() {
        return Err("the host name is not ASCII; give its punycode form (xn--...)");
    }
    let lower = name.to_ascii_lowercase();
    let rest = match lower.strip_prefix("*.") {
        Some("") => return Err("a wildcard needs a domain after '*.' (e.g. *.example.com)"),
        Some(rest) => rest,
        None => &lower,
    };
    if rest.contains('*') {
        return Err("'*' may only be the whole first label, as in *.example.com");
    }
    if rest.len() > MAX_DOMAIN {
        return Err("the host name is longer than 253 bytes");
    }
    for label in rest.split('.') {
        check_dns_label(label)?;
    }
    // A last label of digits is not a top-level domain: `1.2.3` or `300.1.1.1` are failed IP addresses.
    if rest.rsplit('.').next().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("it looks like an IP address but is not a valid one");
    }
    Ok(lower)
}

/// One RFC 1123 label: 1 to 63 letters, digits and `-`, not starting or ending with `-`.
fn check_dns_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("it has an empty label (two dots in a row, or a dot at an end)");
    }
    if label.len() > 63 {
        return Err("it has a label longer than 63 characters");
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("it contains a character other than letters, digits, '-' and '.'");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label starts or ends with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(domain: &str, port: Option<u16>) -> AllowRule {
        AllowRule { domain: domain.to_owned(), port }
    }

    #[test]
    fn sandbox_names() {
        for good in ["a", "A", "0", "fix-tests", "run_1.2", "a-", "x.y", &"a".repeat(64)] {
            assert_eq!(validate_sandbox_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "..",
            ".",
            "a..b",
            "a/b",
            "/",
            "a\0b",
            "a b",
            "ä",
            "a:b",
            "a\nb",
            &"a".repeat(65),
            &"a".repeat(10_000),
        ] {
            assert!(matches!(validate_sandbox_name(bad), Err(NameError::SandboxName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn hostnames() {
        for good in ["airlock", "a", "my-box", "box1.example.com", "A1", &"a".repeat(63), &"a.".repeat(32)[..63]] {
            assert_eq!(validate_hostname(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a b",
            "a/b",
            "a\0",
            "é",
            &"a".repeat(64),
            &"a.".repeat(33),
            &"a".repeat(10_000),
        ] {
            assert!(matches!(validate_hostname(bad), Err(NameError::Hostname { .. })), "{bad:?}");
        }
    }

    #[test]
    fn env_keys_and_values() {
        for good in ["A", "_", "PATH", "my_var_2", "_X"] {
            assert_eq!(validate_env_key(good), Ok(()), "{good}");
        }
        for bad in ["", "1A", "A=B", "=", "A\0", "A-B", "A B", "Ä", "A.B"] {
            assert!(matches!(validate_env_key(bad), Err(NameError::EnvKey { .. })), "{bad:?}");
        }
        assert_eq!(validate_env_value(""), Ok(()));
        assert_eq!(validate_env_value("a=b c\n\u{1b}"), Ok(()));
        assert_eq!(validate_env_value(&"v".repeat(10_000)), Ok(()));
        assert_eq!(validate_env_value("a\0b"), Err(NameError::EnvValue { value: "a\0b".into() }));
    }

    #[test]
    fn absolute_paths_are_normalised() {
        for (given, normal) in [
            ("/", "/"),
            ("//", "/"),
            ("/.", "/"),
            ("/srv", "/srv"),
            ("/srv/", "/srv"),
            ("//srv//app/", "/srv/app"),
            ("/srv/./app/.", "/srv/app"),
            ("/srv/.app/..x/...", "/srv/.app/..x/..."),
            ("/with space/ü", "/with space/ü"),
        ] {
            assert_eq!(validate_absolute_path(given).unwrap(), normal, "{given}");
        }
    }

    #[test]
    fn absolute_paths_refused() {
        let long_component = format!("/{}", "a".repeat(256));
        let long_path = "/a".repeat(2048);
        for bad in [
            "",
            "srv",
            "./srv",
            "~/srv",
            "/srv/../etc",
            "/..",
            "/srv/..",
            "/srv\0/x",
            long_component.as_str(),
            long_path.as_str(),
        ] {
            assert!(matches!(validate_absolute_path(bad), Err(NameError::Path { .. })), "{bad:?}");
        }
        assert!(validate_absolute_path(&format!("/{}", "a".repeat(255))).is_ok());
        assert!(validate_absolute_path(&"/a".repeat(2047)).is_ok());
    }

    #[test]
    fn allow_patterns() {
        for (given, expected) in [
            ("pypi.org", rule("pypi.org", None)),
            ("PyPI.org", rule("pypi.org", None)),
            ("pypi.org:443", rule("pypi.org", Some(443))),
            ("*.github.com:443", rule("*.github.com", Some(443))),
            ("*.GitHub.com", rule("*.github.com", None)),
            ("localhost:8080", rule("localhost", Some(8080))),
            ("xn--bcher-kva.example", rule("xn--bcher-kva.example", None)),
            ("10.0.0.1", rule("10.0.0.1", None)),
            ("10.0.0.1:65535", rule("10.0.0.1", Some(65535))),
            ("::1", rule("::1", None)),
            ("2001:DB8::1", rule("2001:db8::1", None)),
            ("[2001:db8::1]:8443", rule("2001:db8::1", Some(8443))),
            ("[::1]", rule("::1", None)),
            ("a:1", rule("a", Some(1))),
        ] {
            assert_eq!(validate_allow_pattern(given).unwrap(), expected, "{given}");
        }
    }

    #[test]
    fn allow_patterns_refused() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_domain = format!("{}com", "a.".repeat(130));
        for bad in [
            "",
            "*",
            "*.",
            "**.com",
            "*foo.com",
            "a.*.com",
            "*.*.com",
            "foo.*",
            "https://pypi.org",
            "pypi.org/simple",
            "10.0.0.0/8",
            "pypi.org:0",
            "pypi.org:65536",
            "pypi.org:",
            "pypi.org:+443",
            "pypi.org:https",
            "pypi.org:443:1",
            ":443",
            "pypi..org",
            ".pypi.org",
            "pypi.org.",
            "-pypi.org",
            "py_pi.org",
            "py pi.org",
            "pypi.org\0",
            "bücher.de",
            "1.2.3",
            "300.1.1.1",
            "[::1",
            "[pypi.org]",
            "[::1]443",
            "[::1]:0",
            "fe80::1%eth0",
            long_label.as_str(),
            long_domain.as_str(),
        ] {
            assert!(matches!(validate_allow_pattern(bad), Err(NameError::AllowPattern { .. })), "{bad:?}");
        }
        assert!(validate_allow_pattern(&"a".repeat(10_000)).is_err());
        assert!(validate_allow_pattern(&format!("{}.com", "a.".repeat(5000))).is_err());
    }

    #[test]
    fn quoted_escapes_and_cuts() {
        assert_eq!(Quoted("soon").to_string(), r#""soon""#);
        assert_eq!(Quoted("a\0\u{1b}[2J\n").to_string(), r#""a\0\u{1b}[2J\n""#);
        let long = "x".repeat(10_000);
        assert_eq!(Quoted(&long).to_string(), format!("{:?}... (10000 bytes)", "x".repeat(64)));
        let multibyte = "é".repeat(100);
        assert_eq!(Quoted(&multibyte).to_string(), format!("{:?}... (200 bytes)", "é".repeat(64)));
    }

    #[test]
    fn messages_say_how_to_fix() {
        let message = validate_allow_pattern("https://pypi.org").unwrap_err().to_string();
        assert_eq!(
            message,
            r#"invalid allow entry "https://pypi.org": it is a URL; give only the host name (e.g. pypi.org, not https://pypi.org/simple); expected DOMAIN[:PORT] or *.DOMAIN[:PORT] (e.g. pypi.org or *.github.com:443)"#
        );
        let message = validate_absolute_path("srv").unwrap_err().to_string();
        assert_eq!(message, r#"invalid path "srv": it is not absolute; start it with '/' (e.g. /srv/data)"#);
    }
}
