//! The namespaces a sandbox gets, in one table: each kind's `CLONE_NEW*` flag (what `clone`, `unshare` and
//! `setns` take), its file in `/proc/PID/ns/`, and the name doctor reports it by.
//!
//! The table's order is the order they are created and entered in: the user namespace first. Every other
//! namespace of the sandbox is created inside it and owned by it, and joining one needs capabilities in its
//! owning user namespace, which a process only has once it is in the sandbox's. (`setns` by pidfd with several
//! flags enters the user namespace first by itself; separate calls must follow this order.)
//!
//! Everything here is a constant or a `const fn` on constants: usable after `clone`, where nothing may allocate.

/// One kind of namespace. Its discriminant is its place in [`ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Mount,
    Pid,
    Net,
    Ipc,
    Uts,
    Cgroup,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    pub kind: Kind,
    /// The `CLONE_NEW*` flag: what `clone`, `unshare` and `setns` take.
    pub flag: libc::c_int,
    /// Its file in `/proc/PID/ns/`.
    pub proc_name: &'static str,
    /// Its name for people (doctor's report).
    pub name: &'static str,
}

/// Every namespace a sandbox gets, user first (see the module's documentation on the order).
pub const ALL: [Namespace; 7] = [
    Namespace { kind: Kind::User, flag: libc::CLONE_NEWUSER, proc_name: "user", name: "user" },
    Namespace { kind: Kind::Mount, flag: libc::CLONE_NEWNS, proc_name: "mnt", name: "mount" },
    Namespace { kind: Kind::Pid, flag: libc::CLONE_NEWPID, proc_name: "pid", name: "pid" },
    Namespace { kind: Kind::Net, flag: libc::CLONE_NEWNET, proc_name: "net", name: "net" },
    Namespace { kind: Kind::Ipc, flag: libc::CLONE_NEWIPC, proc_name: "ipc", name: "ipc" },
    Namespace { kind: Kind::Uts, flag: libc::CLONE_NEWUTS, proc_name: "uts", name: "uts" },
    Namespace { kind: Kind::Cgroup, flag: libc::CLONE_NEWCGROUP, proc_name: "cgroup", name: "cgroup" },
];

impl Kind {
    /// Its row of [`ALL`].
    pub const fn namespace(self) -> &'static Namespace {
        &ALL[self as usize]
    }

    /// Its `CLONE_NEW*` flag.
    pub const fn flag(self) -> libc::c_int {
        self.namespace().flag
    }

    /// Its file in `/proc/PID/ns/`.
    pub const fn proc_name(self) -> &'static str {
        self.namespace().proc_name
    }

    /// Its name for people.
    pub const fn name(self) -> &'static str {
        self.namespace().name
    }
}

/// The flags of `kinds`, or-ed together (for one `setns` by pidfd, or one `clone`).
pub const fn flags(kinds: &[Kind]) -> libc::c_int {
    let mut flags = 0;
    let mut i = 0;
    while i < kinds.len() {
        flags |= kinds[i].flag();
        i += 1;
    }
    flags
}

/// Every namespace a sandbox's init holds: all of [`ALL`], the network namespace only when the sandbox has its
/// own (a sandbox sharing the host's network is in the host's, which its user namespace does not own).
pub const fn sandbox_flags(new_network_namespace: bool) -> libc::c_int {
    let mut flags = 0;
    let mut i = 0;
    while i < ALL.len() {
        if new_network_namespace || !matches!(ALL[i].kind, Kind::Net) {
            flags |= ALL[i].flag;
        }
        i += 1;
    }
    flags
}

/// What `clone` creates the sandbox's init with: [`sandbox_flags`] but the cgroup namespace, which init creates
/// itself once it is in the sandbox's cgroup, so that the namespace's root is that cgroup (see `init.rs`), and
/// the network namespace, which a child of init makes while init builds the mount tree, and init then enters
/// (`net::start_network_namespace`: `clone` would make it in the caller, before the child runs).
pub const fn clone_flags() -> libc::c_int {
    sandbox_flags(false) & !Kind::Cgroup.flag()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 7] = [Kind::User, Kind::Mount, Kind::Pid, Kind::Net, Kind::Ipc, Kind::Uts, Kind::Cgroup];

    #[test]
    fn every_kind_has_one_row_at_its_own_place() {
        assert_eq!(ALL.len(), KINDS.len());
        for kind in KINDS {
            assert_eq!(ALL.iter().filter(|ns| ns.kind == kind).count(), 1, "{kind:?}");
            assert_eq!(kind.namespace().kind, kind);
        }
        assert_eq!(ALL[0].kind, Kind::User, "the user namespace comes first");
    }

    #[test]
    fn flags_are_distinct_single_bits_and_names_unique() {
        for (i, a) in ALL.iter().enumerate() {
            assert_eq!(a.flag.count_ones(), 1, "{:?}", a.kind);
            for b in &ALL[i + 1..] {
                assert_eq!(a.flag & b.flag, 0, "{:?} and {:?}", a.kind, b.kind);
                assert_ne!(a.proc_name, b.proc_name);
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn sandbox_and_clone_flags() {
        let all = ALL.iter().fold(0, |acc, ns| acc | ns.flag);
        assert_eq!(sandbox_flags(true), all);
        assert_eq!(sandbox_flags(false), all & !libc::CLONE_NEWNET);
        assert_eq!(
            clone_flags(),
            libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS
        );
        assert_eq!(flags(&[Kind::User, Kind::Mount]), libc::CLONE_NEWUSER | libc::CLONE_NEWNS);
        assert_eq!(flags(&[]), 0);
    }

    /// Each `/proc/self/ns/` file of the table exists here and is a namespace of the table's kind (asked with
    /// `NS_GET_NSTYPE`, which returns the `CLONE_NEW*` flag; kernels before 4.11 lack it, then only the name is
    /// checked).
    #[test]
    fn proc_names_are_this_kernels_and_of_their_kind() {
        use std::os::fd::AsFd;
        for ns in &ALL {
            let path = format!("/proc/self/ns/{}", ns.proc_name);
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let nstype = match sys::namespace::namespace_type(file.as_fd()) {
                Err(libc::ENOTTY) => continue,
                other => other.unwrap_or_else(|e| panic!("{path}: NS_GET_NSTYPE: errno {e}")),
            };
            assert_eq!(nstype, ns.flag, "{path}");
        }
    }
}
