//! Seccomp rules as data: which system calls the sandboxed command may not make, with which errno, and why.
//!
//! The default profile is `seccomp/default.toml`, embedded in the binary. It is a deny-list on top of
//! default-allow; the runtime compiles it to classic BPF (`runtime::seccomp`) and adds the architecture and x32
//! checks itself. This module only parses and validates: it does not know syscall numbers, which differ per
//! architecture.

use serde::Deserialize;

/// The embedded default profile, `seccomp/default.toml` as JSON (made by `build.rs`: every sandbox start reads
/// it, and JSON parses in a tenth of the time; the same document, validated the same way).
const DEFAULT_PROFILE_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/default.json"));
const DEFAULT_PROFILE_ORIGIN: &str = "built-in seccomp/default.toml";
/// Rules added for a sandbox that writes as host root (see `seccomp/set-id.toml`), as JSON likewise.
const SET_ID_RULES_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/set-id.json"));
const SET_ID_RULES_ORIGIN: &str = "built-in seccomp/set-id.toml";

/// Highest argument index a syscall has (`seccomp_data.args` has six entries).
const MAX_ARG_INDEX: u8 = 5;

/// A validated seccomp profile. Rules are tried in order; the first that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProfile {
    pub rules: Vec<SeccompRule>,
}

/// One deny rule: these syscalls fail with `errno` when all `conditions` hold (always, when there are none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompRule {
    /// Syscall names as the kernel spells them (`io_uring_setup`, `_sysctl`); never empty.
    pub syscalls: Vec<String>,
    pub errno: Errno,
    /// All must hold. Each compares the low 32 bits of one argument.
    pub conditions: Vec<ArgCondition>,
    /// The attack this rule stops; never empty.
    pub reason: String,
    /// `expected_fallback = true`: the errno is an answer callers are built to handle by retrying another way
    /// (`clone3` -> ENOSYS makes glibc and musl use `clone`), so ordinary programs hit it all the time. The
    /// audit log does not record it as a denial (the filter answers it in the kernel, never notifying the
    /// listener); the call is refused all the same.
    pub expected_fallback: bool,
}

/// The errno values a rule may return. The numbers are the asm-generic ones, which x86_64 and aarch64 share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    Eperm,
    Eacces,
    Einval,
    Enosys,
    Eafnosupport,
}

impl Errno {
    const ALL: [Errno; 5] = [Errno::Eperm, Errno::Eacces, Errno::Einval, Errno::Enosys, Errno::Eafnosupport];

    /// The name as written in a profile, e.g. `EPERM`.
    pub fn name(self) -> &'static str {
        match self {
            Errno::Eperm => "EPERM",
            Errno::Eacces => "EACCES",
            Errno::Einval => "EINVAL",
            Errno::Enosys => "ENOSYS",
            Errno::Eafnosupport => "EAFNOSUPPORT",
        }
    }

    /// The errno number on Linux x86_64 and aarch64.
    pub fn number(self) -> i32 {
        match self {
            Errno::Eperm => 1,
            Errno::Eacces => 13,
            Errno::Einval => 22,
            Errno::Enosys => 38,
            Errno::Eafnosupport => 97,
        }
    }

    /// The errno a profile names, or `None` for a name this table does not have.
    pub fn from_name(name: &str) -> Option<Errno> {
        Errno::ALL.into_iter().find(|errno| errno.name() == name)
    }
}

/// A test on the low 32 bits of one syscall argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCondition {
    /// Argument index, 0..=5.
    pub arg: u8,
    pub test: ArgTest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgTest {
    /// `arg == value`
    Equals(u32),
    /// `arg & mask != 0`; the mask is never 0.
    AnyBits(u32),
    /// `arg` is none of the values; the list is never empty.
    NotIn(Vec<u32>),
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompProfileError {
    #[error("cannot parse seccomp profile {origin}")]
    ParseProfile {
        origin: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The built-in rules as `build.rs` wrote them: only a broken build gets here.
    #[error("cannot parse seccomp profile {origin} (as built into this binary)")]
    ParseBuiltIn {
        origin: String,
        #[source]
        source: Box<serde_json::Error>,
    },
    #[error("cannot parse condition {condition} of seccomp rule {rule} ({first_syscall}) in {origin}")]
    ParseCondition {
        origin: String,
        /// 1-based, in file order.
        rule: usize,
        first_syscall: String,
        /// 1-based, in the order of the `when` list.
        condition: usize,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid seccomp rule {rule} ({first_syscall}) in {origin}: {problem}")]
    ValidateRule {
        origin: String,
        /// 1-based, in file order.
        rule: usize,
        first_syscall: String,
        problem: String,
    },
}

/// The built-in profile every sandbox gets.
pub fn default_seccomp_profile() -> Result<SeccompProfile, SeccompProfileError> {
    parse_built_in(DEFAULT_PROFILE_JSON, DEFAULT_PROFILE_ORIGIN)
}

/// The default profile, followed, with `guard_set_id`, by the rules of `seccomp/set-id.toml`: no set-user-ID or
/// set-group-ID bit may be set (for a sandbox whose root writes as host root through an idmapped workspace).
pub fn sandbox_seccomp_profile(guard_set_id: bool) -> Result<SeccompProfile, SeccompProfileError> {
    let mut profile = default_seccomp_profile()?;
    if guard_set_id {
        profile.rules.extend(parse_built_in(SET_ID_RULES_JSON, SET_ID_RULES_ORIGIN)?.rules);
    }
    Ok(profile)
}

/// Only the rules of `seccomp/set-id.toml` (no set-user-ID or set-group-ID bit may be set), on their own: for a
/// process that writes host files as host root on a guest's behalf (the VM backend's QEMU serving a 9p share),
/// where the sandbox's deny-list would be the wrong list.
pub fn set_id_guard_profile() -> Result<SeccompProfile, SeccompProfileError> {
    parse_built_in(SET_ID_RULES_JSON, SET_ID_RULES_ORIGIN)
}

/// Parses and validates a profile in the `default.toml` format. `origin` names the source in error messages.
pub fn parse_seccomp_profile(text: &str, origin: &str) -> Result<SeccompProfile, SeccompProfileError> {
    let raw: RawProfile = toml::from_str(text)
        .map_err(|source| SeccompProfileError::ParseProfile { origin: origin.to_owned(), source: Box::new(source) })?;
    validate_profile(raw, origin)
}

/// A built-in profile, from the JSON `build.rs` made of its TOML: the same document, the same checks.
fn parse_built_in(json: &str, origin: &str) -> Result<SeccompProfile, SeccompProfileError> {
    let raw: RawProfile = serde_json::from_str(json)
        .map_err(|source| SeccompProfileError::ParseBuiltIn { origin: origin.to_owned(), source: Box::new(source) })?;
    validate_profile(raw, origin)
}

/// Each rule converted and checked, in file order.
fn validate_profile(raw: RawProfile, origin: &str) -> Result<SeccompProfile, SeccompProfileError> {
    let mut rules = Vec::with_capacity(raw.rule.len());
    for (index, raw_rule) in raw.rule.into_iter().enumerate() {
        let rule = convert_rule(raw_rule, origin, index + 1)?;
        reject_unreachable_rule(&rules, &rule, origin, index + 1)?;
        rules.push(rule);
    }
    Ok(SeccompProfile { rules })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    syscalls: Vec<String>,
    errno: String,
    /// One condition table, or a list of them. Kept as a value so that each shape gets its own error message.
    when: Option<toml::Value>,
    reason: String,
    #[serde(default)]
    expected_fallback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    arg: i64,
    equals: Option<i64>,
    any_bits: Option<i64>,
    not_in: Option<Vec<i64>>,
}

fn convert_rule(raw: RawRule, origin: &str, rule: usize) -> Result<SeccompRule, SeccompProfileError> {
    let first_syscall = raw.syscalls.first().cloned().unwrap_or_else(|| "no syscalls".to_owned());
    let invalid = |problem: String| SeccompProfileError::ValidateRule {
        origin: origin.to_owned(),
        rule,
        first_syscall: first_syscall.clone(),
        problem,
    };

    if raw.syscalls.is_empty() {
        return Err(invalid("`syscalls` is empty".to_owned()));
    }
    for (position, name) in raw.syscalls.iter().enumerate() {
        if !is_syscall_name(name) {
            return Err(invalid(format!("{name:?} is not a syscall name (lower-case letters, digits and `_`)")));
        }
        if raw.syscalls[..position].contains(name) {
            return Err(invalid(format!("{name:?} is listed twice")));
        }
    }
    if raw.reason.trim().is_empty() {
        return Err(invalid("`reason` is empty: say which attack the rule stops".to_owned()));
    }
    let errno = Errno::from_name(&raw.errno).ok_or_else(|| {
        let known: Vec<&str> = Errno::ALL.iter().map(|errno| errno.name()).collect();
        invalid(format!("unknown errno {:?} (known: {})", raw.errno, known.join(", ")))
    })?;

    let raw_conditions = match raw.when {
        None => Vec::new(),
        Some(toml::Value::Array(items)) if items.is_empty() => {
            return Err(invalid("`when` is an empty list; leave it out for an unconditional rule".to_owned()))
        }
        Some(toml::Value::Array(items)) => items,
        Some(table @ toml::Value::Table(_)) => vec![table],
        Some(_) => return Err(invalid("`when` must be a condition table or a list of them".to_owned())),
    };
    let mut conditions = Vec::with_capacity(raw_conditions.len());
    for (position, value) in raw_conditions.into_iter().enumerate() {
        let raw_condition: RawCondition = value.try_into().map_err(|source| SeccompProfileError::ParseCondition {
            origin: origin.to_owned(),
            rule,
            first_syscall: first_syscall.clone(),
            condition: position + 1,
            source: Box::new(source),
        })?;
        let condition = convert_condition(raw_condition)
            .map_err(|problem| invalid(format!("condition {}: {problem}", position + 1)))?;
        conditions.push(condition);
    }

    Ok(SeccompRule {
        syscalls: raw.syscalls,
        errno,
        conditions,
        reason: raw.reason,
        expected_fallback: raw.expected_fallback,
    })
}

fn convert_condition(raw: RawCondition) -> Result<ArgCondition, String> {
    let arg = u8::try_from(raw.arg)
        .ok()
        .filter(|arg| *arg <= MAX_ARG_INDEX)
        .ok_or_else(|| format!("arg = {} is not an argument index (0..={MAX_ARG_INDEX})", raw.arg))?;
    let test = match (raw.equals, raw.any_bits, raw.not_in) {
        (Some(value), None, None) => ArgTest::Equals(low_word(value, "equals")?),
        (None, Some(mask), None) => match low_word(mask, "any_bits")? {
            0 => return Err("any_bits = 0 never matches".to_owned()),
            mask => ArgTest::AnyBits(mask),
        },
        (None, None, Some(values)) if values.is_empty() => {
            return Err("not_in = [] always matches; leave the condition out instead".to_owned())
        }
        (None, None, Some(values)) => {
            let values = values.into_iter().map(|value| low_word(value, "not_in")).collect::<Result<_, _>>()?;
            ArgTest::NotIn(values)
        }
        _ => return Err("needs exactly one of `equals`, `any_bits`, `not_in`".to_owned()),
    };
    Ok(ArgCondition { arg, test })
}

/// Conditions compare 32-bit words: a value outside 0..=0xffffffff could never match and is a mistake.
fn low_word(value: i64, kind: &str) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{kind} value {value:#x} does not fit in 32 bits (0..=0xffffffff)"))
}

/// A rule naming a syscall that an earlier unconditional rule already denies would never be reached: in a
/// deny-list that usually means the author expected it to change something, so it is an error.
fn reject_unreachable_rule(
    earlier: &[SeccompRule],
    rule: &SeccompRule,
    origin: &str,
    index: usize,
) -> Result<(), SeccompProfileError> {
    for name in &rule.syscalls {
        let shadowing =
            earlier.iter().position(|previous| previous.conditions.is_empty() && previous.syscalls.contains(name));
        if let Some(previous) = shadowing {
            return Err(SeccompProfileError::ValidateRule {
                origin: origin.to_owned(),
                rule: index,
                first_syscall: rule.syscalls.first().cloned().unwrap_or_default(),
                problem: format!("{name:?} is already denied without conditions by rule {}", previous + 1),
            });
        }
    }
    Ok(())
}

fn is_syscall_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SeccompProfile, SeccompProfileError> {
        parse_seccomp_profile(text, "test")
    }

    /// What every start reads (the JSON build.rs made) is exactly the TOML source, parsed as a user's profile is.
    #[test]
    fn built_in_rules_are_their_toml_sources() {
        let default = parse_seccomp_profile(include_str!("../seccomp/default.toml"), DEFAULT_PROFILE_ORIGIN).unwrap();
        assert_eq!(default_seccomp_profile().unwrap(), default);
        assert!(default.rules.len() > 20, "the default profile has its rules");
        let set_id = parse_seccomp_profile(include_str!("../seccomp/set-id.toml"), SET_ID_RULES_ORIGIN).unwrap();
        assert_eq!(set_id_guard_profile().unwrap(), set_id);
        assert!(!set_id.rules.is_empty());
        let mut both = default.clone();
        both.rules.extend(set_id.rules.iter().cloned());
        assert_eq!(sandbox_seccomp_profile(true).unwrap(), both);
        assert_eq!(sandbox_seccomp_profile(false).unwrap(), default);
        // A damaged document fails with its own error, not a panic.
        let err = parse_built_in("{\"rule\": 1}", "test").unwrap_err();
        assert!(matches!(err, SeccompProfileError::ParseBuiltIn { .. }), "{err}");
    }

    fn problem(text: &str) -> String {
        match parse(text) {
            Ok(profile) => panic!("expected an error, got {profile:?}"),
            Err(error) => {
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                message
            }
        }
    }

    fn rule<'a>(profile: &'a SeccompProfile, syscall: &str) -> Vec<&'a SeccompRule> {
        profile.rules.iter().filter(|rule| rule.syscalls.iter().any(|name| name == syscall)).collect()
    }

    #[test]
    fn seccomp_default_profile_parses_and_every_rule_has_a_reason() {
        let profile = default_seccomp_profile().unwrap();
        assert!(profile.rules.len() > 20);
        for rule in &profile.rules {
            assert!(rule.reason.len() > 20, "rule {:?} has a thin reason", rule.syscalls);
        }
    }

    #[test]
    fn seccomp_default_profile_denies_the_threat_model_calls() {
        let profile = default_seccomp_profile().unwrap();
        for name in [
            "add_key",
            "request_key",
            "keyctl",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "reboot",
            "clock_settime",
            "settimeofday",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsmount",
            "setns",
            "open_by_handle_at",
            "lsm_set_self_attr",
        ] {
            let rules = rule(&profile, name);
            assert_eq!(rules.len(), 1, "{name}");
            assert!(rules[0].conditions.is_empty(), "{name} must be denied unconditionally");
            assert_eq!(rules[0].errno, Errno::Eperm, "{name}");
        }
        let clone3 = rule(&profile, "clone3");
        assert_eq!((clone3.len(), clone3[0].errno), (1, Errno::Enosys));
    }

    #[test]
    fn seccomp_default_profile_keeps_debugging_calls_allowed() {
        let profile = default_seccomp_profile().unwrap();
        for name in ["ptrace", "process_vm_readv", "kcmp", "process_madvise", "seccomp", "prctl"] {
            assert!(rule(&profile, name).is_empty(), "{name} must stay allowed");
        }
    }

    #[test]
    fn the_set_id_guard_adds_mode_rules_after_the_default_ones() {
        let plain = sandbox_seccomp_profile(false).unwrap();
        assert_eq!(plain, default_seccomp_profile().unwrap());
        let guarded = sandbox_seccomp_profile(true).unwrap();
        let added = &guarded.rules[plain.rules.len()..];
        let chmod = added.iter().find(|r| r.syscalls.contains(&"fchmodat".to_string())).unwrap();
        assert_eq!(chmod.conditions, vec![ArgCondition { arg: 2, test: ArgTest::AnyBits(0o6000) }]);
        let openat = added.iter().find(|r| r.syscalls == ["openat"]).unwrap();
        assert_eq!(openat.conditions.len(), 2, "only a creating open is checked: {openat:?}");
        assert!(added.iter().any(|r| r.syscalls == ["openat2"] && r.errno == Errno::Enosys));
    }

    #[test]
    fn seccomp_default_profile_namespace_flags_and_arguments() {
        let profile = default_seccomp_profile().unwrap();
        for name in ["clone", "unshare"] {
            let rules = rule(&profile, name);
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0].conditions, vec![ArgCondition { arg: 0, test: ArgTest::AnyBits(0x7E02_0080) }]);
        }
        let ioctl: Vec<_> = rule(&profile, "ioctl").iter().map(|rule| rule.conditions.clone()).collect();
        assert_eq!(
            ioctl,
            vec![
                vec![ArgCondition { arg: 1, test: ArgTest::Equals(0x5412) }],
                vec![ArgCondition { arg: 1, test: ArgTest::Equals(0x541C) }],
            ]
        );
        let socket = rule(&profile, "socket");
        assert!(socket.iter().all(|rule| rule.errno == Errno::Eafnosupport));
        let audit = socket.iter().find(|rule| rule.conditions.len() == 2).unwrap();
        assert_eq!(
            audit.conditions,
            vec![ArgCondition { arg: 0, test: ArgTest::Equals(16) }, ArgCondition { arg: 2, test: ArgTest::Equals(9) }]
        );
        let personality = rule(&profile, "personality");
        assert!(matches!(&personality[0].conditions[0].test, ArgTest::NotIn(values) if values.contains(&0xffff_ffff)));
    }

    #[test]
    fn seccomp_errno_names_round_trip() {
        for errno in Errno::ALL {
            assert_eq!(Errno::from_name(errno.name()), Some(errno));
        }
        assert_eq!(Errno::from_name("eperm"), None);
    }

    #[test]
    fn seccomp_profile_accepts_hex_and_condition_lists() {
        let profile = parse(
            r#"
            [[rule]]
            syscalls = ["socket"]
            errno = "EACCES"
            when = [{ arg = 0, equals = 0x10 }, { arg = 5, not_in = [1, 0xffffffff] }]
            reason = "test"
            "#,
        )
        .unwrap();
        assert_eq!(profile.rules[0].errno, Errno::Eacces);
        assert_eq!(
            profile.rules[0].conditions,
            vec![
                ArgCondition { arg: 0, test: ArgTest::Equals(16) },
                ArgCondition { arg: 5, test: ArgTest::NotIn(vec![1, 0xffff_ffff]) },
            ]
        );
    }

    #[test]
    fn seccomp_profile_rejects_mistakes() {
        let cases = [
            ("syscalls = []\nerrno = \"EPERM\"\nreason = \"r\"", "`syscalls` is empty"),
            ("syscalls = [\"Mount\"]\nerrno = \"EPERM\"\nreason = \"r\"", "not a syscall name"),
            ("syscalls = [\"bpf\", \"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"", "listed twice"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \" \"", "`reason` is empty"),
            ("syscalls = [\"bpf\"]\nerrno = \"EBOGUS\"\nreason = \"r\"", "unknown errno \"EBOGUS\""),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"", "missing field `reason`"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\ncomment = \"x\"", "unknown field `comment`"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 6, equals = 1 }", "0..=5"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = -1, equals = 1 }", "0..=5"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0 }", "exactly one"),
            (
                "syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0, equals = 1, any_bits = 1 }",
                "exactly one",
            ),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0, any_bits = 0 }", "never"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0, not_in = [] }", "always"),
            (
                "syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0, equals = 0x100000000 }",
                "32 bits",
            ),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0, equals = -1 }", "32 bits"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = []", "empty list"),
            ("syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = 3", "condition table"),
            (
                "syscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"r\"\nwhen = { arg = 0, equal = 1 }",
                "unknown field `equal`",
            ),
        ];
        for (body, expected) in cases {
            let message = problem(&format!("[[rule]]\n{body}\n"));
            assert!(message.contains(expected), "{body:?}: {message:?} does not contain {expected:?}");
        }
    }

    #[test]
    fn seccomp_profile_rejects_a_rule_shadowed_by_an_unconditional_one() {
        let message = problem(
            r#"
            [[rule]]
            syscalls = ["socket"]
            errno = "EPERM"
            reason = "all sockets"
            [[rule]]
            syscalls = ["bind", "socket"]
            errno = "EAFNOSUPPORT"
            when = { arg = 0, equals = 17 }
            reason = "packet sockets"
            "#,
        );
        assert!(message.contains("rule 2 (bind)") && message.contains("by rule 1"), "{message}");
    }

    #[test]
    fn seccomp_profile_conditional_rules_for_one_syscall_may_follow_each_other() {
        let profile = parse(
            r#"
            [[rule]]
            syscalls = ["socket"]
            errno = "EPERM"
            when = { arg = 0, equals = 17 }
            reason = "a"
            [[rule]]
            syscalls = ["socket"]
            errno = "EPERM"
            reason = "b"
            "#,
        )
        .unwrap();
        assert_eq!(profile.rules.len(), 2);
    }
}
