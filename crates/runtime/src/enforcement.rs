//! What a sandbox got: every protection airlock applies, and for each whether it is enforced, missing because
//! the profile let it be best-effort, or not asked for. Built by `prepare` from the policy and what this host
//! offers, before anything is set up; a protection that is required and cannot be applied never gets here (the
//! run fails closed instead). The warnings printed before a run are this report's gaps and notices, as text.

use std::fmt;

/// One layer of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// User, PID, mount, IPC, UTS and cgroup namespaces.
    Namespaces,
    /// A network namespace of its own (none with `--net host`).
    NetworkNamespace,
    /// `pivot_root` into the sandbox's root, the old root detached.
    PivotRoot,
    /// Every capability dropped, the bounding set emptied.
    Capabilities,
    NoNewPrivs,
    Seccomp,
    Landlock,
    /// Memory, process and CPU limits (a cgroup).
    CgroupLimits,
    /// `RLIMIT_NOFILE`, `RLIMIT_FSIZE`.
    ResourceLimits,
    /// `--disk`: the copy-on-write layer on a bounded image.
    DiskLimit,
}

impl Protection {
    /// Its name in machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Namespaces => "namespaces",
            Protection::NetworkNamespace => "network_namespace",
            Protection::PivotRoot => "pivot_root",
            Protection::Capabilities => "capabilities",
            Protection::NoNewPrivs => "no_new_privs",
            Protection::Seccomp => "seccomp",
            Protection::Landlock => "landlock",
            Protection::CgroupLimits => "cgroup_limits",
            Protection::ResourceLimits => "resource_limits",
            Protection::DiskLimit => "disk_limit",
        }
    }
}

/// Whether a protection applies to this sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Enforced,
    /// Missing on this host, and the profile allows that (`best-effort`); `reason` says why.
    BestEffortMissing {
        reason: String,
    },
    /// The policy does not ask for it (no limits given, `--net host`).
    NotRequested,
}

/// Something about the sandbox that is not a missing protection but that its user should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A writable share owned by host root: root inside is not root outside, so the sandbox writes there only
    /// where anyone may.
    RootOwnedWritableShare { path: String },
    /// Rootless with a writable root, and only the invoker's id mapped: what is missing for the subordinate
    /// ids.
    SingleIdMap { missing: String },
    /// A `cow` or `rw` workspace owned by host root, as host root, on a filesystem that cannot be mounted
    /// idmapped: the same as [`Notice::RootOwnedWritableShare`].
    RootOwnedWorkspaceWithoutIdmap { path: String },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::RootOwnedWritableShare { path } => write!(
                f,
                "{path} is owned by host root and root inside is not root outside: the sandbox can write there only \
                 where the permissions let anyone write (chown it to a user to let the sandbox write as that user)"
            ),
            Notice::SingleIdMap { missing } => write!(
                f,
                "only your own id is mapped into the sandbox, so programs that switch users (apt's _apt, \
                 useradd) fail: {missing}"
            ),
            Notice::RootOwnedWorkspaceWithoutIdmap { path } => write!(
                f,
                "workspace {path} is owned by host root and its filesystem cannot be mounted idmapped (ext4, xfs, \
                 btrfs and tmpfs can): the sandbox can write there only where the permissions let anyone write \
                 (move it to such a filesystem, or chown it to a user to let the sandbox write as that user)"
            ),
        }
    }
}

/// Every protection's status, in setup order, and the notices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnforcementReport {
    pub protections: Vec<(Protection, Status)>,
    pub notices: Vec<Notice>,
}

impl EnforcementReport {
    pub fn set(&mut self, protection: Protection, status: Status) {
        match self.protections.iter_mut().find(|(p, _)| *p == protection) {
            Some((_, old)) => *old = status,
            None => self.protections.push((protection, status)),
        }
    }

    pub fn status(&self, protection: Protection) -> Option<&Status> {
        self.protections.iter().find(|(p, _)| *p == protection).map(|(_, s)| s)
    }

    /// Whether every protection that applies is enforced (no best-effort gap).
    pub fn fully_enforced(&self) -> bool {
        !self.protections.iter().any(|(_, s)| matches!(s, Status::BestEffortMissing { .. }))
    }

    /// What is printed before the run: each best-effort gap, then each notice.
    pub fn warnings(&self) -> Vec<String> {
        let gaps = self.protections.iter().filter_map(|(p, s)| match (p, s) {
            (Protection::Landlock, Status::BestEffortMissing { reason }) => {
                Some(format!("Landlock is not enforced: {reason} (profile allows best-effort)"))
            }
            (p, Status::BestEffortMissing { reason }) => {
                Some(format!("{} is not enforced: {reason} (profile allows best-effort)", p.as_str()))
            }
            _ => None,
        });
        gaps.chain(self.notices.iter().map(Notice::to_string)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_notices_become_the_warnings() {
        let mut report = EnforcementReport::default();
        report.set(Protection::Seccomp, Status::Enforced);
        report.set(Protection::Landlock, Status::Enforced);
        assert!(report.fully_enforced());
        assert!(report.warnings().is_empty());
        report.set(Protection::Landlock, Status::BestEffortMissing { reason: "the kernel lacks it".into() });
        report.notices.push(Notice::RootOwnedWritableShare { path: "/srv".into() });
        assert!(!report.fully_enforced());
        assert_eq!(report.protections.len(), 2, "set replaces");
        let warnings = report.warnings();
        assert_eq!(warnings[0], "Landlock is not enforced: the kernel lacks it (profile allows best-effort)");
        assert!(warnings[1].starts_with("/srv is owned by host root"));
        assert_eq!(
            report.status(Protection::Landlock),
            Some(&Status::BestEffortMissing { reason: "the kernel lacks it".into() })
        );
    }
}
