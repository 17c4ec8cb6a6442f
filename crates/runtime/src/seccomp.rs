//! Seccomp: the last wall, installed on the command's process just before `execve`. Compiles the policy's
//! deny-list (`policy::seccomp`) to classic BPF with our own small compiler, and installs it.
//!
//! The program, top to bottom:
//! 1. `arch` must be the native audit architecture, else `ENOSYS`. This refuses the 32-bit `int 0x80` ABI as a
//!    whole (its syscall numbers differ, so native rules would not match them), and with it `socketcall`.
//! 2. x86_64 only: `nr` must be below `__X32_SYSCALL_BIT`, else `ENOSYS`. x32 calls report the native arch, so
//!    without this check `0x40000000 | nr` would reach the same kernel code past every rule.
//! 3. A binary search on `nr` leads to the blocks of that call: one per rule naming it, in profile order, each
//!    testing its conditions on the low 32 bits of the arguments and returning `SECCOMP_RET_ERRNO | errno`; a
//!    failed test jumps to the next block. A call a rule denies outright returns right in the search.
//! 4. `SECCOMP_RET_ALLOW`, for a call no rule names and for one none of whose blocks matched.
//!
//! A block loads arguments only after the search matched its `nr`. So for every syscall no rule names, the
//! program's answer depends on `arch` and `nr` alone, and the kernel's seccomp action cache (5.11+) records it as
//! always allowed: `read`, `write` and the rest never run the filter.
//!
//! seccompiler is not used: it allows one match action per filter and cannot refuse x32 syscall numbers.
//!
//! Its test in a real process (the filter installed in a forked child, refusing what it must) is
//! `tests/seccomp_filter.rs`: it makes raw calls by number, which this module does not.

use std::collections::BTreeMap;
use std::fmt;
use std::mem::offset_of;
use std::os::fd::IntoRawFd;

use policy::seccomp::{ArgCondition, ArgTest, SeccompProfile};

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("airlock's seccomp filter supports x86_64 and aarch64 only");

/// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_003E;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64` (183) | `__AUDIT_ARCH_64BIT` | `__AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xC000_00B7;

/// `__X32_SYSCALL_BIT`: set in `nr` for calls made through the x32 ABI.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `BPF_MAXINSNS`: the kernel refuses longer programs.
const MAX_INSTRUCTIONS: usize = 4096;
/// Conditional jumps in classic BPF skip at most this many instructions (`jt` and `jf` are `u8`).
const MAX_CONDITIONAL_JUMP: usize = u8::MAX as usize;

/// Offsets into `struct seccomp_data`, which is what `BPF_ABS` loads read.
const NR_OFFSET: u32 = offset_of!(libc::seccomp_data, nr) as u32;
const ARCH_OFFSET: u32 = offset_of!(libc::seccomp_data, arch) as u32;
const ARGS_OFFSET: u32 = offset_of!(libc::seccomp_data, args) as u32;
/// Where the low 32 bits of a 64-bit argument sit within it.
#[cfg(target_endian = "little")]
const LOW_WORD_OFFSET: u32 = 0;
#[cfg(target_endian = "big")]
const LOW_WORD_OFFSET: u32 = 4;

// Opcodes. The values all fit in the 16-bit `code` field (they are below 0x100).
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JMP_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
#[cfg(target_arch = "x86_64")]
const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JMP_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp rule {rule} names syscall {name:?}, which airlock knows on neither x86_64 nor aarch64")]
    LookupSyscall { rule: usize, name: String },
    #[error("cannot compile seccomp rule {rule} ({name}): a jump of {distance} instructions does not fit classic BPF")]
    CompileJump { rule: usize, name: String, distance: usize },
    #[error(
        "seccomp filter would have {instructions} instructions, more than the kernel's {MAX_INSTRUCTIONS}: \
         shorten the profile"
    )]
    CompileProgram { instructions: usize },
}

/// A compiled filter, ready to install. Built only by [`compile_seccomp_program`], so it is never empty and
/// never longer than the kernel accepts.
#[derive(Clone)]
pub struct SeccompProgram {
    filter: Vec<libc::sock_filter>,
    /// Some calls return `SECCOMP_RET_USER_NOTIF`: the filter is installed with a listener, and whoever holds it
    /// answers them (see `notify`).
    notify: NotifyOptions,
    /// With `notify.denials`: the deny rules in program order, so the listener gives each refused call exactly
    /// the errno the kernel would have returned.
    denials: Vec<DenyEntry>,
}

/// Which calls an audited filter sends to the listener instead of deciding in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifyOptions {
    /// `execve` and `execveat`: recorded, then continued.
    pub exec: bool,
    /// The deny-list's calls: recorded, then refused with the rule's errno (identical behaviour).
    pub denials: bool,
    /// Learn mode: calls that write to a path (`openat` with a write flag, `mkdir`, `unlink`, `rename`...):
    /// recorded, then continued (the kernel still decides).
    pub writes: bool,
}

impl NotifyOptions {
    pub fn any(&self) -> bool {
        self.exec || self.denials || self.writes
    }
}

/// One deny rule for one syscall, as compiled.
#[derive(Debug, Clone)]
pub struct DenyEntry {
    pub nr: u32,
    pub name: String,
    /// 1-based index of the profile rule.
    pub rule: usize,
    pub conditions: Vec<ArgCondition>,
    /// Positive errno.
    pub errno: i32,
    pub errno_name: &'static str,
}

/// What a notified call is, decided the way the program decided to notify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifiedCall<'a> {
    /// A deny rule matched: refuse with `errno`.
    Denied { name: &'a str, rule: usize, errno: i32, errno_name: &'static str },
    /// `execve` (`dirfd` None) or `execveat`: path and argv pointers.
    Exec { path: u64, argv: u64, dirfd: Option<i32> },
    /// A path-writing call (learn mode): the path pointer, its directory fd (None: `AT_FDCWD` or an absolute
    /// path's call without one), and the call's name.
    Write { name: &'static str, path: u64, dirfd: Option<i32> },
    /// Nothing this program notifies: continue.
    Other,
}

impl SeccompProgram {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.filter.len()
    }

    /// Always false: a program has at least its architecture check and final `ALLOW`.
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
    }
}

impl fmt::Debug for SeccompProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeccompProgram").field("instructions", &self.filter.len()).finish()
    }
}

/// Compiles `profile` for the architecture airlock was built for. Syscalls that exist only on the other
/// supported architecture are skipped; names unknown on both are an error.
pub fn compile_seccomp_program(profile: &SeccompProfile) -> Result<SeccompProgram, SeccompError> {
    compile_notifying_seccomp_program(profile, NotifyOptions::default())
}

/// As [`compile_seccomp_program`], but the calls `notify` names return `SECCOMP_RET_USER_NOTIF` (the audit log and
/// learn mode). The deny rules keep their order and conditions: a notified denial is answered with the same
/// errno by the listener ([`SeccompProgram::classify`]). Exec and write notifications come after the rules, so a
/// rule that denies them still wins, as it would without auditing.
pub fn compile_notifying_seccomp_program(
    profile: &SeccompProfile,
    notify: NotifyOptions,
) -> Result<SeccompProgram, SeccompError> {
    let mut filter = Vec::new();
    let mut denials = Vec::new();

    // 1. Only the native ABI: the 32-bit `int 0x80` entry reports another arch and gets ENOSYS.
    filter.push(statement(LD_W_ABS, ARCH_OFFSET));
    filter.push(jump(JMP_JEQ_K, AUDIT_ARCH_NATIVE, 1, 0));
    filter.push(statement(RET_K, return_errno(libc::ENOSYS)));

    // 2. x32 calls report the native arch with bit 30 set in nr: refuse them before any rule is matched. nr is
    // loaded here on every architecture: the search (step 4) reads it from the accumulator.
    filter.push(statement(LD_W_ABS, NR_OFFSET));
    #[cfg(target_arch = "x86_64")]
    {
        filter.push(jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        filter.push(statement(RET_K, return_errno(libc::ENOSYS)));
    }

    // 3. The profile's rules, in order, then the audited calls (after the rules: a denial stays a denial). Each
    // is a block that returns when its conditions match; the first that matches wins. Blocks of one call keep
    // that order; blocks of different calls never both match, so they are grouped by call (step 4).
    let mut calls: BTreeMap<u32, CallCode> = BTreeMap::new();
    for (index, rule) in profile.rules.iter().enumerate() {
        let rule_number = index + 1;
        for name in &rule.syscalls {
            let nr = match syscall_number(name) {
                SyscallNumber::Native(nr) => nr,
                SyscallNumber::OtherArchitectureOnly => continue,
                SyscallNumber::Unknown => {
                    return Err(SeccompError::LookupSyscall { rule: rule_number, name: name.clone() })
                }
            };
            // An expected fallback (clone3 -> ENOSYS) is answered in the kernel even when auditing: it is not
            // worth a record, and every thread start would otherwise wait for a round trip to the supervisor.
            let notified = notify.denials && !rule.expected_fallback;
            let ret = if notified { libc::SECCOMP_RET_USER_NOTIF } else { return_errno(rule.errno.number()) };
            let block = compile_block(&rule.conditions, ret).map_err(|distance| SeccompError::CompileJump {
                rule: rule_number,
                name: name.clone(),
                distance,
            })?;
            calls.entry(nr).or_default().append(block, rule.conditions.is_empty());
            if notified {
                denials.push(DenyEntry {
                    nr,
                    name: name.clone(),
                    rule: rule_number,
                    conditions: rule.conditions.clone(),
                    errno: rule.errno.number(),
                    errno_name: rule.errno.name(),
                });
            }
        }
    }
    let mut notified: Vec<(u32, Vec<ArgCondition>)> = Vec::new();
    if notify.exec {
        notified.push((libc::SYS_execve as u32, Vec::new()));
        notified.push((libc::SYS_execveat as u32, Vec::new()));
    }
    if notify.writes {
        for (nr, _, flags_arg, _) in WRITE_CALLS {
            let conditions = match flags_arg {
                Some(arg) => vec![ArgCondition { arg: *arg, test: ArgTest::AnyBits(WRITE_OPEN_FLAGS) }],
                None => Vec::new(),
            };
            notified.push((*nr as u32, conditions));
        }
    }
    for (nr, conditions) in &notified {
        let block = compile_block(conditions, libc::SECCOMP_RET_USER_NOTIF).map_err(|distance| {
            SeccompError::CompileJump { rule: 0, name: format!("audited syscall {nr}"), distance }
        })?;
        calls.entry(*nr).or_default().append(block, conditions.is_empty());
    }

    // 4. A binary search on the call's number leads to its blocks; a call with none, and a call none of whose
    // blocks matches, is allowed (this is a deny-list). Linear, every call walked every block: the kernel runs
    // the filter once per call number when it is installed (`seccomp_cache_prepare`, to learn which calls it
    // always allows), about 3.8 ns per instruction walked on this VM, so each instruction on the common path cost
    // ~1.7 us of every start, besides its cost on every call the command makes.
    compile_dispatch(&calls, &mut filter);

    if filter.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::CompileProgram { instructions: filter.len() });
    }
    Ok(SeccompProgram { filter, notify, denials })
}

/// `open`/`openat` flags that mean a write: the learn-mode filter notifies only those opens.
const WRITE_OPEN_FLAGS: u32 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32;

/// A path-writing call for learn mode: (nr, name, index of the open flags argument, path argument and its dirfd
/// argument).
type WriteCall = (libc::c_long, &'static str, Option<u8>, (u8, Option<u8>));

/// The path-writing calls learn mode is notified of.
#[cfg(target_arch = "x86_64")]
const WRITE_CALLS: &[WriteCall] = &[
    (libc::SYS_open, "open", Some(1), (0, None)),
    (libc::SYS_openat, "openat", Some(2), (1, Some(0))),
    (libc::SYS_creat, "creat", None, (0, None)),
    (libc::SYS_mkdir, "mkdir", None, (0, None)),
    (libc::SYS_mkdirat, "mkdirat", None, (1, Some(0))),
    (libc::SYS_unlink, "unlink", None, (0, None)),
    (libc::SYS_unlinkat, "unlinkat", None, (1, Some(0))),
    (libc::SYS_rmdir, "rmdir", None, (0, None)),
    (libc::SYS_rename, "rename", None, (1, None)),
    (libc::SYS_renameat, "renameat", None, (3, Some(2))),
    (libc::SYS_renameat2, "renameat2", None, (3, Some(2))),
    (libc::SYS_symlink, "symlink", None, (1, None)),
    (libc::SYS_symlinkat, "symlinkat", None, (2, Some(1))),
    (libc::SYS_link, "link", None, (1, None)),
    (libc::SYS_linkat, "linkat", None, (3, Some(2))),
    (libc::SYS_truncate, "truncate", None, (0, None)),
    (libc::SYS_mknodat, "mknodat", None, (1, Some(0))),
];
#[cfg(target_arch = "aarch64")]
const WRITE_CALLS: &[WriteCall] = &[
    (libc::SYS_openat, "openat", Some(2), (1, Some(0))),
    (libc::SYS_mkdirat, "mkdirat", None, (1, Some(0))),
    (libc::SYS_unlinkat, "unlinkat", None, (1, Some(0))),
    (libc::SYS_renameat, "renameat", None, (3, Some(2))),
    (libc::SYS_renameat2, "renameat2", None, (3, Some(2))),
    (libc::SYS_symlinkat, "symlinkat", None, (2, Some(1))),
    (libc::SYS_linkat, "linkat", None, (3, Some(2))),
    (libc::SYS_truncate, "truncate", None, (0, None)),
    (libc::SYS_mknodat, "mknodat", None, (1, Some(0))),
];

impl SeccompProgram {
    /// Whether the program has calls answered by a listener (install it with one).
    pub fn notify(&self) -> NotifyOptions {
        self.notify
    }

    /// What a notified call with `nr` and `args` is: the first deny rule that matches it (the order and tests
    /// the BPF program used), else an audited exec or write.
    pub fn classify(&self, nr: i32, args: &[u64; 6]) -> NotifiedCall<'_> {
        let Ok(nr) = u32::try_from(nr) else { return NotifiedCall::Other };
        for entry in self.denials.iter().filter(|e| e.nr == nr) {
            if entry.conditions.iter().all(|c| condition_holds(c, args)) {
                return NotifiedCall::Denied {
                    name: &entry.name,
                    rule: entry.rule,
                    errno: entry.errno,
                    errno_name: entry.errno_name,
                };
            }
        }
        let dirfd_of = |arg: u64| {
            let fd = arg as u32 as i32;
            (fd != libc::AT_FDCWD).then_some(fd)
        };
        if self.notify.exec {
            if i64::from(nr) == libc::SYS_execve {
                return NotifiedCall::Exec { path: args[0], argv: args[1], dirfd: None };
            }
            if i64::from(nr) == libc::SYS_execveat {
                return NotifiedCall::Exec { path: args[1], argv: args[2], dirfd: dirfd_of(args[0]) };
            }
        }
        if self.notify.writes {
            if let Some((_, name, _, (path_arg, dirfd_arg))) = WRITE_CALLS.iter().find(|w| w.0 == i64::from(nr)) {
                return NotifiedCall::Write {
                    name,
                    path: args[usize::from(*path_arg)],
                    dirfd: dirfd_arg.and_then(|a| dirfd_of(args[usize::from(a)])),
                };
            }
        }
        NotifiedCall::Other
    }
}

/// The BPF block's test on the low 32 bits of an argument.
fn condition_holds(condition: &ArgCondition, args: &[u64; 6]) -> bool {
    let value = args[usize::from(condition.arg).min(5)] as u32;
    match &condition.test {
        ArgTest::Equals(v) => value == *v,
        ArgTest::AnyBits(mask) => value & mask != 0,
        ArgTest::NotIn(values) => !values.contains(&value),
    }
}

/// Installs `program` on the calling thread with `seccomp(SECCOMP_SET_MODE_FILTER)`, without TSYNC.
///
/// Runs after `fork`, as the last step before `execve`: it allocates nothing, takes no lock and makes one
/// system call. The caller must already have set `PR_SET_NO_NEW_PRIVS` (else the kernel answers `EACCES`).
/// Returns the errno of the failed call.
pub fn install_seccomp_on_current_thread(program: &SeccompProgram) -> Result<(), i32> {
    install_seccomp_with_listener(program).map(drop)
}

/// As [`install_seccomp_on_current_thread`]; when the program notifies calls, the filter is installed with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER` and the listener's descriptor (close-on-exec) is returned: the caller must
/// hand it to the supervisor and close its own copy before `execve` (a process holding its own listener could
/// answer its own notifications). Async-signal-safe like the plain install.
pub fn install_seccomp_with_listener(program: &SeccompProgram) -> Result<Option<i32>, i32> {
    if program.notify.any() {
        // By number: the caller hands it over and closes it by number before `execve` (`exec::exec_command`).
        sys::seccomp::install_filter_with_listener(&program.filter, 0).map(|listener| Some(listener.into_raw_fd()))
    } else {
        sys::seccomp::install_filter(&program.filter, 0).map(|()| None)
    }
}

fn return_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno.unsigned_abs() & libc::SECCOMP_RET_DATA)
}

fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn load_arg_low_word(arg: u8) -> libc::sock_filter {
    statement(LD_W_ABS, ARGS_OFFSET + 8 * u32::from(arg) + LOW_WORD_OFFSET)
}

/// How many calls a leaf of the search compares one by one (each a `jeq` and a `ja` or a return).
const CALLS_PER_LEAF: usize = 4;

/// The code the search leads to for one call: its blocks in order. Once a block returns whatever the arguments
/// (a rule with no conditions), nothing after it can run: later blocks are left out, and so is the `return
/// ALLOW` that otherwise follows the last block.
#[derive(Default)]
struct CallCode {
    code: Vec<libc::sock_filter>,
    decided: bool,
}

impl CallCode {
    fn append(&mut self, block: Vec<libc::sock_filter>, unconditional: bool) {
        if !self.decided {
            self.code.extend(block);
            self.decided = unconditional;
        }
    }

    /// The call's only instruction when it is one `return` (a call denied outright): the search returns it in
    /// place of a jump to it.
    fn single_return(&self) -> Option<libc::sock_filter> {
        match self.code.as_slice() {
            [only] if self.decided => Some(*only),
            _ => None,
        }
    }
}

/// Appends the search over the call numbers of `calls` (the accumulator holds the call's number), then each
/// call's blocks followed by `return ALLOW` (unless the last block always returns). Internal nodes are `jge
/// pivot, 0, 1` + `ja upper half`; leaves are, per call, `jeq nr, 0, 1` + either the call's single `return` or
/// `ja its blocks`, then `return ALLOW`. Every conditional jump goes 0 or 1 ahead and every longer one is a `ja`
/// (32-bit offset), so no size of profile overflows a jump (the program's length is checked by the caller).
fn compile_dispatch(calls: &BTreeMap<u32, CallCode>, filter: &mut Vec<libc::sock_filter>) {
    fn search(
        numbers: &[u32],
        calls: &BTreeMap<u32, CallCode>,
        filter: &mut Vec<libc::sock_filter>,
        to_blocks: &mut Vec<(usize, u32)>,
    ) {
        if numbers.len() <= CALLS_PER_LEAF {
            for &nr in numbers {
                filter.push(jump(JMP_JEQ_K, nr, 0, 1));
                match calls.get(&nr).and_then(CallCode::single_return) {
                    Some(ret) => filter.push(ret),
                    None => {
                        to_blocks.push((filter.len(), nr));
                        filter.push(statement(JMP_JA, 0));
                    }
                }
            }
            filter.push(statement(RET_K, libc::SECCOMP_RET_ALLOW));
            return;
        }
        let (low, high) = numbers.split_at(numbers.len() / 2);
        filter.push(jump(JMP_JGE_K, high[0], 0, 1));
        let to_high = filter.len();
        filter.push(statement(JMP_JA, 0));
        search(low, calls, filter, to_blocks);
        filter[to_high].k = (filter.len() - to_high - 1) as u32;
        search(high, calls, filter, to_blocks);
    }
    let numbers: Vec<u32> = calls.keys().copied().collect();
    let mut to_blocks = Vec::new();
    search(&numbers, calls, filter, &mut to_blocks);
    let mut starts = BTreeMap::new();
    for (nr, call) in calls {
        if call.single_return().is_some() {
            continue;
        }
        starts.insert(*nr, filter.len());
        filter.extend_from_slice(&call.code);
        if !call.decided {
            filter.push(statement(RET_K, libc::SECCOMP_RET_ALLOW));
        }
    }
    for (at, nr) in to_blocks {
        filter[at].k = (starts[&nr] - at - 1) as u32;
    }
}

/// One block of a call the search has already matched: `if conditions { return ret }`. Every failed test leaves
/// the block by jumping just past its end; every test loads the argument it tests, so a block needs nothing in
/// the accumulator. On error, returns the jump distance that did not fit.
fn compile_block(conditions: &[ArgCondition], ret: u32) -> Result<Vec<libc::sock_filter>, usize> {
    let mut block = BlockBuilder::default();
    for condition in conditions {
        block.push(load_arg_low_word(condition.arg))?;
        match &condition.test {
            ArgTest::Equals(value) => block.push_exit_unless(JMP_JEQ_K, *value)?,
            ArgTest::AnyBits(mask) => block.push_exit_unless(JMP_JSET_K, *mask)?,
            ArgTest::NotIn(values) => {
                for value in values {
                    block.push_exit_if(JMP_JEQ_K, *value)?;
                }
            }
        }
    }
    block.push(statement(RET_K, ret))?;
    block.finish()
}

/// Builds a block whose conditional jumps to "past the end" are patched once the end is known.
///
/// A conditional jump reaches at most 255 instructions ahead. When a block grows longer than that (a long
/// `not_in` list), the pending exits are sent to a trampoline: `ja +1` steps over it on the straight path,
/// and the trampoline itself is an unconditional `ja`, whose 32-bit offset reaches the end.
#[derive(Default)]
struct BlockBuilder {
    code: Vec<libc::sock_filter>,
    /// Conditional jumps not yet patched, and whether each leaves on its true (`jt`) or false (`jf`) branch.
    pending_exits: Vec<(usize, bool)>,
    /// `ja` instructions whose offset must be set to the end of the block.
    trampolines: Vec<usize>,
}

impl BlockBuilder {
    fn push(&mut self, instruction: libc::sock_filter) -> Result<(), usize> {
        // Checked before every instruction, so a trampoline placed now, after its `ja +1`, is at most 255
        // instructions past the oldest pending exit.
        if let Some(&(oldest, _)) = self.pending_exits.first() {
            if self.code.len() - oldest >= MAX_CONDITIONAL_JUMP {
                self.code.push(statement(JMP_JA, 1));
                let trampoline = self.code.len();
                self.code.push(statement(JMP_JA, 0));
                self.trampolines.push(trampoline);
                self.patch_pending_exits(trampoline)?;
            }
        }
        self.code.push(instruction);
        Ok(())
    }

    /// Continue when the test holds, leave the block otherwise.
    fn push_exit_unless(&mut self, code: u16, k: u32) -> Result<(), usize> {
        self.push(jump(code, k, 0, 0))?;
        self.pending_exits.push((self.code.len() - 1, false));
        Ok(())
    }

    /// Leave the block when the test holds, continue otherwise.
    fn push_exit_if(&mut self, code: u16, k: u32) -> Result<(), usize> {
        self.push(jump(code, k, 0, 0))?;
        self.pending_exits.push((self.code.len() - 1, true));
        Ok(())
    }

    /// Points every pending exit at `target`.
    fn patch_pending_exits(&mut self, target: usize) -> Result<(), usize> {
        for (at, on_true) in std::mem::take(&mut self.pending_exits) {
            let distance = target - at - 1;
            let offset = u8::try_from(distance).map_err(|_| distance)?;
            let instruction = &mut self.code[at];
            if on_true {
                instruction.jt = offset;
            } else {
                instruction.jf = offset;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<libc::sock_filter>, usize> {
        let end = self.code.len();
        self.patch_pending_exits(end)?;
        for at in std::mem::take(&mut self.trampolines) {
            let distance = end - at - 1;
            self.code[at].k = u32::try_from(distance).map_err(|_| distance)?;
        }
        Ok(self.code)
    }
}

/// What a syscall name means on the architecture airlock was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyscallNumber {
    Native(u32),
    /// The name exists only on the other supported architecture (e.g. `iopl` on aarch64).
    OtherArchitectureOnly,
    Unknown,
}

fn syscall_number(name: &str) -> SyscallNumber {
    let entry = SYSCALLS.iter().find(|(entry, _)| entry.strip_prefix("SYS_") == Some(name));
    match entry {
        // Every number in the table is below 1000 (a unit test checks it), so the conversion cannot fail.
        Some((_, Some(nr))) => u32::try_from(*nr).map_or(SyscallNumber::Unknown, SyscallNumber::Native),
        Some((_, None)) => SyscallNumber::OtherArchitectureOnly,
        None => SyscallNumber::Unknown,
    }
}

/// Picks the x86_64 or the aarch64 expression; the other one is dropped before name resolution, so it may name
/// constants that libc does not define for the target.
#[cfg(target_arch = "x86_64")]
macro_rules! on_arch {
    (x86_64: $x86_64:expr, aarch64: $aarch64:expr) => {
        $x86_64
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! on_arch {
    (x86_64: $x86_64:expr, aarch64: $aarch64:expr) => {
        $aarch64
    };
}

macro_rules! syscall_table {
    (
        both_from_libc: [$($both:ident)*]
        x86_64_only_from_libc: [$($x86_64:ident)*]
        both_numbered_here: [$($here:ident = $here_x86_64:literal / $here_aarch64:literal),* $(,)?]
        x86_64_only_numbered_here: [$($here_x86:ident = $here_x86_nr:literal),* $(,)?]
    ) => {
        &[
            $((stringify!($both), Some(libc::$both)),)*
            $((stringify!($x86_64), on_arch!(x86_64: Some(libc::$x86_64), aarch64: None)),)*
            $((stringify!($here), Some(on_arch!(x86_64: $here_x86_64, aarch64: $here_aarch64))),)*
            $((stringify!($here_x86), on_arch!(x86_64: Some($here_x86_nr), aarch64: None)),)*
        ]
    };
}

/// Every syscall name of Linux x86_64 and aarch64 (up to 6.18), with its number on the target, or `None` when
/// it exists only on the other architecture. A profile naming anything else has a typo.
const SYSCALLS: &[(&str, Option<libc::c_long>)] = syscall_table! {
    // Same name on both architectures; libc has the number for each target (glibc and musl alike).
    both_from_libc: [
        SYS_accept SYS_accept4 SYS_acct SYS_add_key SYS_adjtimex SYS_bind SYS_bpf SYS_brk SYS_capget
        SYS_capset SYS_chdir SYS_chroot SYS_clock_adjtime SYS_clock_getres SYS_clock_gettime
        SYS_clock_nanosleep SYS_clock_settime SYS_clone SYS_clone3 SYS_close SYS_close_range SYS_connect
        SYS_copy_file_range SYS_delete_module SYS_dup SYS_dup3 SYS_epoll_create1 SYS_epoll_ctl
        SYS_epoll_pwait SYS_epoll_pwait2 SYS_eventfd2 SYS_execve SYS_execveat SYS_exit SYS_exit_group
        SYS_faccessat SYS_faccessat2 SYS_fadvise64 SYS_fallocate SYS_fanotify_init SYS_fanotify_mark
        SYS_fchdir SYS_fchmod SYS_fchmodat SYS_fchown SYS_fchownat SYS_fcntl SYS_fdatasync SYS_fgetxattr
        SYS_finit_module SYS_flistxattr SYS_flock SYS_fremovexattr SYS_fsconfig SYS_fsetxattr SYS_fsmount
        SYS_fsopen SYS_fspick SYS_fstat SYS_fstatfs SYS_fsync SYS_ftruncate SYS_futex SYS_futex_waitv
        SYS_get_mempolicy SYS_get_robust_list SYS_getcpu SYS_getcwd SYS_getdents64 SYS_getegid SYS_geteuid
        SYS_getgid SYS_getgroups SYS_getitimer SYS_getpeername SYS_getpgid SYS_getpid SYS_getppid
        SYS_getpriority SYS_getrandom SYS_getresgid SYS_getresuid SYS_getrlimit SYS_getrusage SYS_getsid
        SYS_getsockname SYS_getsockopt SYS_gettid SYS_gettimeofday SYS_getuid SYS_getxattr SYS_init_module
        SYS_inotify_add_watch SYS_inotify_init1 SYS_inotify_rm_watch SYS_io_cancel SYS_io_destroy
        SYS_io_getevents SYS_io_setup SYS_io_submit SYS_io_uring_enter SYS_io_uring_register
        SYS_io_uring_setup SYS_ioctl SYS_ioprio_get SYS_ioprio_set SYS_kcmp SYS_kexec_load SYS_keyctl
        SYS_kill SYS_landlock_add_rule SYS_landlock_create_ruleset SYS_landlock_restrict_self SYS_lgetxattr
        SYS_linkat SYS_listen SYS_listxattr SYS_llistxattr SYS_lookup_dcookie SYS_lremovexattr SYS_lseek
        SYS_lsetxattr SYS_madvise SYS_mbind SYS_membarrier SYS_memfd_create SYS_memfd_secret
        SYS_migrate_pages SYS_mincore SYS_mkdirat SYS_mknodat SYS_mlock SYS_mlock2 SYS_mlockall SYS_mmap
        SYS_mount SYS_mount_setattr SYS_move_mount SYS_move_pages SYS_mprotect SYS_mq_getsetattr
        SYS_mq_notify SYS_mq_open SYS_mq_timedreceive SYS_mq_timedsend SYS_mq_unlink SYS_mremap SYS_mseal
        SYS_msgctl SYS_msgget SYS_msgrcv SYS_msgsnd SYS_msync SYS_munlock SYS_munlockall SYS_munmap
        SYS_name_to_handle_at SYS_nanosleep SYS_newfstatat SYS_nfsservctl SYS_open_by_handle_at
        SYS_open_tree SYS_openat SYS_openat2 SYS_perf_event_open SYS_personality SYS_pidfd_getfd
        SYS_pidfd_open SYS_pidfd_send_signal SYS_pipe2 SYS_pivot_root SYS_pkey_alloc SYS_pkey_free
        SYS_pkey_mprotect SYS_ppoll SYS_prctl SYS_pread64 SYS_preadv SYS_preadv2 SYS_prlimit64
        SYS_process_madvise SYS_process_mrelease SYS_process_vm_readv SYS_process_vm_writev SYS_pselect6
        SYS_ptrace SYS_pwrite64 SYS_pwritev SYS_pwritev2 SYS_quotactl SYS_quotactl_fd SYS_read SYS_readahead
        SYS_readlinkat SYS_readv SYS_reboot SYS_recvfrom SYS_recvmmsg SYS_recvmsg SYS_remap_file_pages
        SYS_removexattr SYS_renameat SYS_renameat2 SYS_request_key SYS_restart_syscall SYS_rseq
        SYS_rt_sigaction SYS_rt_sigpending SYS_rt_sigprocmask SYS_rt_sigqueueinfo SYS_rt_sigreturn
        SYS_rt_sigsuspend SYS_rt_sigtimedwait SYS_rt_tgsigqueueinfo SYS_sched_get_priority_max
        SYS_sched_get_priority_min SYS_sched_getaffinity SYS_sched_getattr SYS_sched_getparam
        SYS_sched_getscheduler SYS_sched_rr_get_interval SYS_sched_setaffinity SYS_sched_setattr
        SYS_sched_setparam SYS_sched_setscheduler SYS_sched_yield SYS_seccomp SYS_semctl SYS_semget
        SYS_semop SYS_semtimedop SYS_sendfile SYS_sendmmsg SYS_sendmsg SYS_sendto SYS_set_mempolicy
        SYS_set_mempolicy_home_node SYS_set_robust_list SYS_set_tid_address SYS_setdomainname SYS_setfsgid
        SYS_setfsuid SYS_setgid SYS_setgroups SYS_sethostname SYS_setitimer SYS_setns SYS_setpgid
        SYS_setpriority SYS_setregid SYS_setresgid SYS_setresuid SYS_setreuid SYS_setrlimit SYS_setsid
        SYS_setsockopt SYS_settimeofday SYS_setuid SYS_setxattr SYS_shmat SYS_shmctl SYS_shmdt SYS_shmget
        SYS_shutdown SYS_sigaltstack SYS_signalfd4 SYS_socket SYS_socketpair SYS_splice SYS_statfs SYS_statx
        SYS_swapoff SYS_swapon SYS_symlinkat SYS_sync SYS_sync_file_range SYS_syncfs SYS_sysinfo SYS_syslog
        SYS_tee SYS_tgkill SYS_timer_create SYS_timer_delete SYS_timer_getoverrun SYS_timer_gettime
        SYS_timer_settime SYS_timerfd_create SYS_timerfd_gettime SYS_timerfd_settime SYS_times SYS_tkill
        SYS_truncate SYS_umask SYS_umount2 SYS_uname SYS_unlinkat SYS_unshare SYS_userfaultfd SYS_utimensat
        SYS_vhangup SYS_vmsplice SYS_wait4 SYS_waitid SYS_write SYS_writev
    ]
    // x86_64 only: the legacy calls aarch64's newer table replaced (`open` by `openat`, `fork` by `clone`...)
    // and x86 specifics (`iopl`, `arch_prctl`).
    x86_64_only_from_libc: [
        SYS__sysctl SYS_access SYS_afs_syscall SYS_alarm SYS_arch_prctl SYS_chmod SYS_chown SYS_creat
        SYS_dup2 SYS_epoll_create SYS_epoll_ctl_old SYS_epoll_wait SYS_epoll_wait_old SYS_eventfd SYS_fork
        SYS_futimesat SYS_get_thread_area SYS_getdents SYS_getpgrp SYS_getpmsg SYS_inotify_init SYS_ioperm
        SYS_iopl SYS_lchown SYS_link SYS_lstat SYS_mkdir SYS_mknod SYS_modify_ldt SYS_open SYS_pause
        SYS_pipe SYS_poll SYS_putpmsg SYS_readlink SYS_rename SYS_rmdir SYS_security SYS_select
        SYS_set_thread_area SYS_signalfd SYS_stat SYS_symlink SYS_sysfs SYS_time SYS_tuxcall SYS_unlink
        SYS_uselib SYS_ustat SYS_utime SYS_utimes SYS_vfork SYS_vserver
    ]
    // Missing from libc 0.2.191 for at least one target; numbers from arch/x86/entry/syscalls/syscall_64.tbl
    // and scripts/syscall.tbl (asm-generic, aarch64). Numbers from 424 up are the same on every architecture.
    both_numbered_here: [
        SYS_kexec_file_load = 320 / 294, // not in musl's aarch64 list
        SYS_io_pgetevents = 333 / 292,   // not in glibc's lists
        SYS_cachestat = 451 / 451,
        SYS_fchmodat2 = 452 / 452,
        SYS_map_shadow_stack = 453 / 453,
        SYS_futex_wake = 454 / 454,
        SYS_futex_wait = 455 / 455,
        SYS_futex_requeue = 456 / 456,
        SYS_statmount = 457 / 457,
        SYS_listmount = 458 / 458,
        SYS_lsm_get_self_attr = 459 / 459,
        SYS_lsm_set_self_attr = 460 / 460,
        SYS_lsm_list_modules = 461 / 461,
        SYS_setxattrat = 463 / 463,
        SYS_getxattrat = 464 / 464,
        SYS_listxattrat = 465 / 465,
        SYS_removexattrat = 466 / 466,
        SYS_open_tree_attr = 467 / 467,
        SYS_file_getattr = 468 / 468,
        SYS_file_setattr = 469 / 469,
    ]
    // Removed long ago but still numbered (the kernel answers ENOSYS), and x86_64's newest.
    x86_64_only_numbered_here: [
        SYS_create_module = 174,
        SYS_get_kernel_syms = 177,
        SYS_query_module = 178,
        SYS_uretprobe = 335,
    ]
};

#[cfg(test)]
mod tests {
    use super::*;
    use policy::seccomp::{default_seccomp_profile, parse_seccomp_profile, Errno};

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn profile(text: &str) -> SeccompProfile {
        parse_seccomp_profile(text, "test").unwrap()
    }

    fn default_program() -> SeccompProgram {
        compile_seccomp_program(&default_seccomp_profile().unwrap()).unwrap()
    }

    /// Refuses what the kernel's checker (`bpf_check_classic`, `seccomp_check_filter`) would refuse for the
    /// instructions this compiler emits.
    fn assert_valid(program: &SeccompProgram) {
        let filter = &program.filter;
        assert!(!filter.is_empty() && filter.len() <= MAX_INSTRUCTIONS, "length {}", filter.len());
        let data_size = std::mem::size_of::<libc::seccomp_data>();
        for (at, instruction) in filter.iter().enumerate() {
            let k = instruction.k as usize;
            let in_range = |offset: usize| at + 1 + offset < filter.len();
            match instruction.code {
                LD_W_ABS => assert!(k & 3 == 0 && k + 4 <= data_size, "load at {at} reads offset {k}"),
                RET_K => {}
                JMP_JA => assert!(in_range(k), "ja at {at} jumps past the end"),
                code if u32::from(code) & 0x07 == libc::BPF_JMP => {
                    let jt = usize::from(instruction.jt);
                    let jf = usize::from(instruction.jf);
                    assert!(in_range(jt) && in_range(jf), "jump at {at} leaves the program");
                }
                code => panic!("unexpected opcode {code:#x} at {at}"),
            }
        }
        assert_eq!(filter.last().unwrap().code, RET_K, "the program must end with a return");
    }

    /// `struct seccomp_data` as the kernel lays it out, for the interpreter below.
    fn seccomp_data(arch: u32, nr: u32, args: [u64; 6]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[NR_OFFSET as usize..][..4].copy_from_slice(&nr.to_ne_bytes());
        data[ARCH_OFFSET as usize..][..4].copy_from_slice(&arch.to_ne_bytes());
        for (index, arg) in args.iter().enumerate() {
            data[ARGS_OFFSET as usize + 8 * index..][..8].copy_from_slice(&arg.to_ne_bytes());
        }
        data
    }

    /// Runs the program the way the kernel does, and returns its verdict.
    fn run(program: &SeccompProgram, data: &[u8; 64]) -> u32 {
        run_counting(program, data).0
    }

    /// As [`run`], and how many instructions it took (the return included).
    fn run_counting(program: &SeccompProgram, data: &[u8; 64]) -> (u32, usize) {
        let mut accumulator = 0u32;
        let mut pc = 0;
        let mut steps = 0;
        loop {
            let instruction = program.filter[pc];
            let k = instruction.k;
            steps += 1;
            match instruction.code {
                LD_W_ABS => {
                    accumulator = u32::from_ne_bytes(data[k as usize..][..4].try_into().unwrap());
                    pc += 1;
                }
                RET_K => return (k, steps),
                JMP_JA => pc += 1 + k as usize,
                code => {
                    let taken = match u32::from(code) & 0xf0 {
                        libc::BPF_JEQ => accumulator == k,
                        libc::BPF_JGE => accumulator >= k,
                        libc::BPF_JSET => accumulator & k != 0,
                        other => panic!("unexpected jump {other:#x}"),
                    };
                    pc += 1 + usize::from(if taken { instruction.jt } else { instruction.jf });
                }
            }
        }
    }

    fn verdict(program: &SeccompProgram, nr: libc::c_long, args: [u64; 6]) -> u32 {
        run(program, &seccomp_data(AUDIT_ARCH_NATIVE, u32::try_from(nr).unwrap(), args))
    }

    fn args(first: &[u64]) -> [u64; 6] {
        let mut all = [0; 6];
        all[..first.len()].copy_from_slice(first);
        all
    }

    #[test]
    fn seccomp_default_profile_compiles_to_a_valid_program() {
        let profile = default_seccomp_profile().unwrap();
        let program = compile_seccomp_program(&profile).unwrap();
        assert_valid(&program);
        assert!(!program.is_empty());

        // Header (arch check, the load of the call's number, and the x32 check on x86_64), the search, then per
        // call its blocks (per rule naming it, up to the first with no conditions: per condition a load and its
        // tests, then a return) and a return ALLOW unless its last block always returns. A call whose first rule
        // has no conditions is one return, placed in the search. No trampoline is needed at this size.
        let header = if cfg!(target_arch = "x86_64") { 6 } else { 4 };
        let mut calls: BTreeMap<u32, (usize, bool)> = BTreeMap::new();
        for rule in &profile.rules {
            let block: usize = 1 + rule
                .conditions
                .iter()
                .map(|condition| match &condition.test {
                    ArgTest::NotIn(values) => 1 + values.len(),
                    ArgTest::Equals(_) | ArgTest::AnyBits(_) => 2,
                })
                .sum::<usize>();
            for name in &rule.syscalls {
                if let SyscallNumber::Native(nr) = syscall_number(name) {
                    let (length, decided) = calls.entry(nr).or_default();
                    if !*decided {
                        *length += block;
                        *decided = rule.conditions.is_empty();
                    }
                }
            }
        }
        let blocks: usize = calls
            .values()
            .map(|&(length, decided)| match (length, decided) {
                (1, true) => 0,
                (length, true) => length,
                (length, false) => length + 1,
            })
            .sum();
        // The search: a jeq and a ja (or the call's return) per call, a return per leaf, a jge and a ja per inner
        // node.
        let leaves = calls.len().div_ceil(CALLS_PER_LEAF).next_power_of_two().min(calls.len()).max(1);
        let search = program.len() - header - blocks;
        assert!(search >= 2 * calls.len() + leaves, "search of {search} instructions for {} calls", calls.len());
        assert!(
            search <= 2 * calls.len() + 3 * 2 * leaves,
            "search of {search} instructions for {} calls",
            calls.len()
        );
        eprintln!("default profile: {} BPF instructions", program.len());
    }

    /// What the profile says of a call, read from the profile itself: the first rule that names it and whose
    /// conditions hold, else allowed.
    fn reference_verdict(profile: &SeccompProfile, nr: u32, args: &[u64; 6]) -> u32 {
        for rule in &profile.rules {
            let names_it = rule.syscalls.iter().any(|name| syscall_number(name) == SyscallNumber::Native(nr));
            if names_it && rule.conditions.iter().all(|c| condition_holds(c, args)) {
                return return_errno(rule.errno.number());
            }
        }
        ALLOW
    }

    /// Arguments that make each of the rule's conditions hold, and, for each condition, the same with that one
    /// failing (the rule then must not match).
    fn argument_cases(conditions: &[ArgCondition]) -> Vec<[u64; 6]> {
        let holding = |test: &ArgTest| -> u64 {
            match test {
                ArgTest::Equals(v) | ArgTest::AnyBits(v) => u64::from(*v),
                ArgTest::NotIn(values) => u64::from(values.iter().max().map_or(0, |m| m.wrapping_add(1))),
            }
        };
        let failing = |test: &ArgTest| -> u64 {
            match test {
                ArgTest::Equals(v) => u64::from(v.wrapping_add(1)),
                ArgTest::AnyBits(mask) => u64::from(!mask),
                ArgTest::NotIn(values) => u64::from(values.first().copied().unwrap_or(0)),
            }
        };
        let mut all = [0u64; 6];
        for c in conditions {
            all[usize::from(c.arg).min(5)] = holding(&c.test);
        }
        let mut cases = vec![all, [0; 6], [u64::MAX; 6]];
        for c in conditions {
            let mut one_failing = all;
            one_failing[usize::from(c.arg).min(5)] = failing(&c.test);
            cases.push(one_failing);
        }
        cases
    }

    /// The search changes nothing of what the profile decides: every call number of the table, and a few
    /// beyond it, with the arguments each rule tests, gets the verdict the profile's first matching rule gives.
    #[test]
    fn seccomp_program_decides_every_call_as_the_profile_does() {
        let custom = profile(
            "[[rule]]\nsyscalls = [\"getpid\", \"personality\"]\nerrno = \"EACCES\"\n\
             when = { arg = 0, equals = 7 }\nreason = \"a\"\n\
             [[rule]]\nsyscalls = [\"personality\"]\nerrno = \"EPERM\"\nreason = \"b\"\n\
             [[rule]]\nsyscalls = [\"getpid\"]\nerrno = \"EINVAL\"\nwhen = { arg = 1, not_in = [1, 2] }\n\
             reason = \"c\"\n",
        );
        for profile in [default_seccomp_profile().unwrap(), custom, SeccompProfile { rules: Vec::new() }] {
            let program = compile_seccomp_program(&profile).unwrap();
            assert_valid(&program);
            let mut cases = vec![[0u64; 6], [u64::MAX; 6]];
            for rule in &profile.rules {
                cases.extend(argument_cases(&rule.conditions));
            }
            let highest = SYSCALLS.iter().filter_map(|(_, nr)| *nr).max().unwrap() as u32;
            for nr in 0..=highest + 8 {
                for a in &cases {
                    let data = seccomp_data(AUDIT_ARCH_NATIVE, nr, *a);
                    assert_eq!(run(&program, &data), reference_verdict(&profile, nr, a), "nr {nr} args {a:?}");
                }
            }
        }
    }

    /// The kernel runs the filter for every call number when it is installed (to learn which calls it always
    /// allows), and each call of the command runs it: a call reaches its verdict in a few instructions, not by
    /// walking every rule (the linear program took up to ~150 for the default profile).
    #[test]
    fn seccomp_program_reaches_a_call_in_a_few_instructions() {
        let program = default_program();
        let highest = SYSCALLS.iter().filter_map(|(_, nr)| *nr).max().unwrap() as u32;
        let longest = (0..=highest + 8)
            .map(|nr| run_counting(&program, &seccomp_data(AUDIT_ARCH_NATIVE, nr, [0; 6])).1)
            .max()
            .unwrap();
        // Header 6, load 1, about 2 per level of the search, up to 2 per call of a leaf, then the call's blocks.
        assert!(longest <= 48, "the longest path is {longest} instructions");
        let allowed = run_counting(&program, &seccomp_data(AUDIT_ARCH_NATIVE, libc::SYS_getpid as u32, [0; 6])).1;
        assert!(allowed <= 24, "getpid takes {allowed} instructions");
    }

    #[test]
    fn seccomp_program_refuses_foreign_abis_before_any_rule() {
        let program = default_program();
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
        for arch in [AUDIT_ARCH_I386, AUDIT_ARCH_ARM, 0] {
            // 20 is getpid in the i386 table: allowed natively, refused through the foreign ABI.
            assert_eq!(run(&program, &seccomp_data(arch, 20, [0; 6])), return_errno(libc::ENOSYS));
        }
        #[cfg(target_arch = "x86_64")]
        for nr in [X32_SYSCALL_BIT | 39, X32_SYSCALL_BIT | 250, u32::MAX] {
            assert_eq!(run(&program, &seccomp_data(AUDIT_ARCH_NATIVE, nr, [0; 6])), return_errno(libc::ENOSYS));
        }
    }

    #[test]
    fn seccomp_program_follows_the_default_rules() {
        let program = default_program();
        let eperm = return_errno(libc::EPERM);
        let eafnosupport = return_errno(libc::EAFNOSUPPORT);
        let high_bits = 0xffff_ffff_0000_0000_u64;
        let cases: &[(&str, libc::c_long, &[u64], u32)] = &[
            ("getpid", libc::SYS_getpid, &[], ALLOW),
            ("ptrace", libc::SYS_ptrace, &[16], ALLOW),
            ("keyctl", libc::SYS_keyctl, &[0], eperm),
            ("clone3", libc::SYS_clone3, &[], return_errno(libc::ENOSYS)),
            ("clone fork", libc::SYS_clone, &[libc::SIGCHLD as u64], ALLOW),
            ("clone thread", libc::SYS_clone, &[0x003d_0f00], ALLOW),
            ("clone newuser", libc::SYS_clone, &[(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64], eperm),
            ("unshare newnet", libc::SYS_unshare, &[libc::CLONE_NEWNET as u64], eperm),
            ("unshare newtime", libc::SYS_unshare, &[0x80], eperm),
            ("unshare files", libc::SYS_unshare, &[libc::CLONE_FILES as u64], ALLOW),
            ("ioctl TIOCSTI", libc::SYS_ioctl, &[0, 0x5412], eperm),
            ("ioctl TIOCSTI high bits", libc::SYS_ioctl, &[0, high_bits | 0x5412], eperm),
            ("ioctl TIOCLINUX", libc::SYS_ioctl, &[0, 0x541C], eperm),
            ("ioctl FIONREAD", libc::SYS_ioctl, &[0, 0x541B], ALLOW),
            ("ioctl TIOCSTI in arg 2", libc::SYS_ioctl, &[0, 0x541B, 0x5412], ALLOW),
            ("socket AF_INET", libc::SYS_socket, &[2, 1], ALLOW),
            ("socket AF_PACKET", libc::SYS_socket, &[17, 3], eafnosupport),
            ("socket AF_PACKET high bits", libc::SYS_socket, &[high_bits | 17, 3], eafnosupport),
            ("socket AF_ALG", libc::SYS_socket, &[38, 5], eafnosupport),
            ("socket AF_VSOCK", libc::SYS_socket, &[40, 1], eafnosupport),
            ("socket AF_KEY", libc::SYS_socket, &[15, 3], eafnosupport),
            ("socket NETLINK_AUDIT", libc::SYS_socket, &[16, 3, 9], eafnosupport),
            ("socket NETLINK_ROUTE", libc::SYS_socket, &[16, 3, 0], ALLOW),
            ("personality query", libc::SYS_personality, &[0xffff_ffff], ALLOW),
            ("personality linux", libc::SYS_personality, &[0], ALLOW),
            ("personality no-ASLR", libc::SYS_personality, &[0x0040000], ALLOW),
            ("personality READ_IMPLIES_EXEC", libc::SYS_personality, &[0x0400000], eperm),
            ("personality MMAP_PAGE_ZERO", libc::SYS_personality, &[0x0100000], eperm),
        ];
        for (what, nr, first_args, expected) in cases {
            assert_eq!(verdict(&program, *nr, args(first_args)), *expected, "{what}");
        }
    }

    #[test]
    fn notifying_program_sends_exactly_the_denials_and_the_listener_gives_the_same_errno() {
        let plain = default_program();
        let all = NotifyOptions { exec: true, denials: true, writes: true };
        let notifying = compile_notifying_seccomp_program(&default_seccomp_profile().unwrap(), all).unwrap();
        assert_valid(&notifying);
        let high_bits = 0xffff_ffff_0000_0000_u64;
        let cases: &[(libc::c_long, &[u64])] = &[
            (libc::SYS_getpid, &[]),
            (libc::SYS_keyctl, &[0]),
            (libc::SYS_clone3, &[]),
            (libc::SYS_clone, &[libc::SIGCHLD as u64]),
            (libc::SYS_clone, &[(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64]),
            (libc::SYS_unshare, &[libc::CLONE_NEWNET as u64]),
            (libc::SYS_unshare, &[libc::CLONE_FILES as u64]),
            (libc::SYS_ioctl, &[0, high_bits | 0x5412]),
            (libc::SYS_ioctl, &[0, 0x541B]),
            (libc::SYS_socket, &[17, 3]),
            (libc::SYS_socket, &[16, 3, 0]),
            (libc::SYS_personality, &[0x0400000]),
        ];
        for (nr, first) in cases {
            let a = args(first);
            let before = verdict(&plain, *nr, a);
            let now = verdict(&notifying, *nr, a);
            let call = notifying.classify(*nr as i32, &a);
            if before == ALLOW {
                assert_eq!(now, ALLOW, "nr {nr} {first:?}");
                assert_eq!(call, NotifiedCall::Other, "nr {nr} {first:?}");
            } else if *nr == libc::SYS_clone3 {
                // An expected fallback: refused in the kernel with the same errno, never sent to the listener.
                assert_eq!(now, before, "nr {nr} {first:?}");
                assert_eq!(call, NotifiedCall::Other, "nr {nr} {first:?}");
            } else {
                assert_eq!(now, libc::SECCOMP_RET_USER_NOTIF, "nr {nr} {first:?}");
                let NotifiedCall::Denied { errno, .. } = call else { panic!("nr {nr} {first:?}: {call:?}") };
                assert_eq!(return_errno(errno), before, "nr {nr} {first:?}");
            }
        }
        // Execs and (learn mode) writes go to the listener; reads do not.
        assert_eq!(verdict(&notifying, libc::SYS_execve, args(&[])), libc::SECCOMP_RET_USER_NOTIF);
        assert_eq!(verdict(&notifying, libc::SYS_execveat, args(&[])), libc::SECCOMP_RET_USER_NOTIF);
        assert!(matches!(
            notifying.classify(libc::SYS_execve as i32, &args(&[1, 2])),
            NotifiedCall::Exec { path: 1, argv: 2, dirfd: None }
        ));
        let at_fdcwd = libc::AT_FDCWD as u32 as u64;
        assert_eq!(verdict(&notifying, libc::SYS_openat, args(&[at_fdcwd, 0, libc::O_RDONLY as u64])), ALLOW);
        assert_eq!(
            verdict(&notifying, libc::SYS_openat, args(&[at_fdcwd, 0, (libc::O_WRONLY | libc::O_CREAT) as u64])),
            libc::SECCOMP_RET_USER_NOTIF
        );
        assert!(matches!(
            notifying.classify(libc::SYS_openat as i32, &args(&[at_fdcwd, 7, 1])),
            NotifiedCall::Write { name: "openat", path: 7, dirfd: None }
        ));
        assert_eq!(verdict(&notifying, libc::SYS_mkdirat, args(&[3, 0])), libc::SECCOMP_RET_USER_NOTIF);
        // Without options nothing is notified: the program is the plain one.
        let none =
            compile_notifying_seccomp_program(&default_seccomp_profile().unwrap(), NotifyOptions::default()).unwrap();
        assert_eq!(none.filter.len(), plain.filter.len());
        assert!(!none.notify().any());
    }

    #[test]
    fn seccomp_program_denies_every_unconditional_rule() {
        let profile = default_seccomp_profile().unwrap();
        let program = compile_seccomp_program(&profile).unwrap();
        for rule in profile.rules.iter().filter(|rule| rule.conditions.is_empty()) {
            for name in &rule.syscalls {
                if let SyscallNumber::Native(nr) = syscall_number(name) {
                    let verdict = run(&program, &seccomp_data(AUDIT_ARCH_NATIVE, nr, [0; 6]));
                    assert_eq!(verdict, return_errno(rule.errno.number()), "{name}");
                }
            }
        }
    }

    #[test]
    fn seccomp_long_not_in_lists_reach_past_the_8_bit_jumps() {
        let values: Vec<String> = (1000..1700).map(|value| value.to_string()).collect();
        let program = compile_seccomp_program(&profile(&format!(
            "[[rule]]\nsyscalls = [\"personality\", \"getpid\"]\nerrno = \"EACCES\"\n\
             when = [{{ arg = 0, not_in = [{}] }}, {{ arg = 1, equals = 7 }}]\nreason = \"test\"\n",
            values.join(", ")
        )))
        .unwrap();
        assert_valid(&program);
        let eacces = return_errno(libc::EACCES);
        for nr in [libc::SYS_personality, libc::SYS_getpid] {
            for listed in [1000, 1001, 1254, 1255, 1256, 1500, 1699] {
                assert_eq!(verdict(&program, nr, args(&[listed, 7])), ALLOW, "{listed} is in the list");
            }
            for unlisted in [0, 999, 1700, 0xffff_ffff] {
                assert_eq!(verdict(&program, nr, args(&[unlisted, 7])), eacces, "{unlisted} is not in the list");
                assert_eq!(verdict(&program, nr, args(&[unlisted, 8])), ALLOW, "second condition");
            }
        }
        assert_eq!(verdict(&program, libc::SYS_getppid, args(&[0, 7])), ALLOW);
    }

    #[test]
    fn seccomp_program_longer_than_the_kernel_accepts_is_an_error() {
        let values: Vec<String> = (0..5000).map(|value| value.to_string()).collect();
        let error = compile_seccomp_program(&profile(&format!(
            "[[rule]]\nsyscalls = [\"personality\"]\nerrno = \"EPERM\"\nwhen = {{ arg = 0, not_in = [{}] }}\n\
             reason = \"test\"\n",
            values.join(", ")
        )))
        .unwrap_err();
        assert!(matches!(error, SeccompError::CompileProgram { instructions } if instructions > 5000), "{error}");
    }

    #[test]
    fn seccomp_unknown_syscall_names_are_errors_and_foreign_ones_are_skipped() {
        let error = compile_seccomp_program(&profile(
            "[[rule]]\nsyscalls = [\"bpf\"]\nerrno = \"EPERM\"\nreason = \"a\"\n\
             [[rule]]\nsyscalls = [\"getpid\", \"keyctrl\"]\nerrno = \"EPERM\"\nreason = \"b\"\n",
        ))
        .unwrap_err();
        assert!(matches!(&error, SeccompError::LookupSyscall { rule: 2, name } if name == "keyctrl"), "{error}");

        let iopl =
            compile_seccomp_program(&profile("[[rule]]\nsyscalls = [\"iopl\"]\nerrno = \"EPERM\"\nreason = \"a\"\n"));
        let empty = compile_seccomp_program(&SeccompProfile { rules: Vec::new() }).unwrap();
        // iopl, denied outright: a jeq and its return in the search.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(iopl.unwrap().len(), empty.len() + 2);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(iopl.unwrap().len(), empty.len());
    }

    #[test]
    fn seccomp_syscall_table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        let mut numbers = std::collections::HashMap::new();
        for (name, number) in SYSCALLS {
            assert!(name.starts_with("SYS_"), "{name}");
            assert!(names.insert(*name), "{name} is listed twice");
            if let Some(number) = number {
                assert!((0..1000).contains(number), "{name} = {number}");
                if let Some(other) = numbers.insert(*number, *name) {
                    panic!("{name} and {other} both have number {number}");
                }
            }
        }
        assert_eq!(syscall_number("getpid"), SyscallNumber::Native(libc::SYS_getpid as u32));
        assert_eq!(syscall_number("lsm_set_self_attr"), SyscallNumber::Native(460));
        assert_eq!(syscall_number("SYS_getpid"), SyscallNumber::Unknown);
        assert_eq!(syscall_number("getpidd"), SyscallNumber::Unknown);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall_number("iopl"), SyscallNumber::Native(172));
            assert_eq!(syscall_number("kexec_file_load"), SyscallNumber::Native(320));
            assert_eq!(syscall_number("query_module"), SyscallNumber::Native(178));
        }
        #[cfg(target_arch = "aarch64")]
        {
            assert_eq!(syscall_number("iopl"), SyscallNumber::OtherArchitectureOnly);
            assert_eq!(syscall_number("kexec_file_load"), SyscallNumber::Native(294));
            assert_eq!(syscall_number("query_module"), SyscallNumber::OtherArchitectureOnly);
        }
    }

    #[test]
    fn seccomp_constants_match_the_kernel_headers() {
        assert_eq!(MAX_INSTRUCTIONS, libc::BPF_MAXINSNS as usize);
        assert_eq!((NR_OFFSET, ARCH_OFFSET, ARGS_OFFSET), (0, 4, 16));
        for (errno, number) in [
            (Errno::Eperm, libc::EPERM),
            (Errno::Eacces, libc::EACCES),
            (Errno::Einval, libc::EINVAL),
            (Errno::Enosys, libc::ENOSYS),
            (Errno::Eafnosupport, libc::EAFNOSUPPORT),
        ] {
            assert_eq!(errno.number(), number, "{}", errno.name());
        }
    }
}
