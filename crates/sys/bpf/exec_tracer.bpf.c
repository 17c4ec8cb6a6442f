// SPDX-License-Identifier: GPL-2.0-only
// airlock's kernel-side exec source for the audit log (docs/audit.md, "How records are captured"): one record
// per exec of a process of one sandbox, from two tracepoints, written into a ring buffer the supervisor drains.
//
// - tp_btf/sched_process_exec: every exec that happened. The argv is read from the new program's own memory,
//   where the kernel copied it: what ran, not what a racing thread may have put in the caller's memory since.
// - tp_btf/sys_exit: every execve/execveat that failed (they never reach the first). The caller's memory is
//   still its own, so path and argv are read from the call's arguments, with the errno.
//
// Which processes: those whose pid is numbered in the sandbox's pid namespace (its inode number: `target_ns`,
// set by the supervisor once the sandbox's init exists, or, in the shared variant, the low half of the link's
// attach cookie), at whatever depth — a process in a pid namespace nested inside the sandbox's is still the
// sandbox's. Until it is set (or the links exist), nothing is recorded.
//
// Built twice (crates/sys/build.rs): as `exec_tracer`, loaded by one run with its ring and variables of its
// own, and with -DAIRLOCK_SHARED_TRACER as `exec_tracer_shared`, loaded once per boot and pinned (below).
//
// Compiled with clang (-target bpf) against the few kernel types declared below, relocated (CO-RE) by the
// kernel at load time against its own BTF: the light skeleton (`bpftool gen skeleton -L`) has the kernel do
// the relocations, so user space parses no BTF. x86-64 only: sys_exit reads x86-64's registers and numbers.

#include <linux/types.h>
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "exec_record.h"

// The kernel's types, only the fields read: CO-RE matches them by name against the running kernel's BTF.
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct ns_common {
	unsigned int inum;
};
struct pid_namespace {
	struct ns_common ns;
};
struct upid {
	int nr;
	struct pid_namespace *ns;
};
struct pid {
	unsigned int level;
	struct upid numbers[1];
};
struct qstr {
	const unsigned char *name;
};
struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
};
struct vfsmount {
	struct dentry *mnt_root;
};
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};
struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};
struct fs_struct {
	struct path root, pwd;
};
struct mm_struct {
	unsigned long arg_start, arg_end;
};
struct task_struct {
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct mm_struct *mm;
	struct fs_struct *fs;
};
struct linux_binprm {
	const char *filename;
	int argc;
};
struct pt_regs {
	unsigned long di, si, dx, orig_ax;
};
#pragma clang attribute pop

char LICENSE[] SEC("license") = "GPL";

#define MAX_PID_NS_LEVEL 32
#define NR_EXECVE 59
#define NR_EXECVEAT 322

#ifdef AIRLOCK_SHARED_TRACER
// The shared variant (exec_tracer_shared): loaded once per boot and pinned in bpffs; each audited run attaches
// it with links of its own whose attach cookie is (slot << 32 | the sandbox's pid-namespace inode number). A
// slot is a ring in `rings` and an entry in `runs`, both keyed by the slot number; a run claims a free slot (one
// a finished run left for reuse) or adds one. Slots are reused rather than removed: inserting into or deleting
// from a map of maps waits for an RCU grace period (10-20 ms), which claiming a slot does not.
struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EXEC_RING_BYTES);
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, EXEC_SHARED_SLOTS);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EXEC_SHARED_SLOTS);
	__type(key, __u32);
	__type(value, struct exec_run);
} runs SEC(".maps");
#define SLOT(ctx) ((__u32)(bpf_get_attach_cookie(ctx) >> 32))
#define TARGET_NS(ctx) ((__u32)bpf_get_attach_cookie(ctx))
#define RING_OF(slot) bpf_map_lookup_elem(&rings, &(slot))
static __always_inline void count_lost(__u32 slot)
{
	struct exec_run *run = bpf_map_lookup_elem(&runs, &slot);
	if (run)
		__sync_fetch_and_add(&run->lost, 1);
}
#else
// The per-run variant (exec_tracer): loaded and attached by one run, its ring a map of its own.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EXEC_RING_BYTES);
} records SEC(".maps");

// Set by the supervisor through the mapped .bss: the sandbox's pid namespace (0: nothing is recorded yet).
__u32 target_ns = 0;
// Records that did not fit in the ring: the supervisor reports them in the log.
__u64 lost = 0;
#define SLOT(ctx) 0
#define TARGET_NS(ctx) target_ns
#define RING_OF(slot) ((void *)&records)
static __always_inline void count_lost(__u32 slot)
{
	__sync_fetch_and_add(&lost, 1);
}
#endif

// The upid at `level` of `pid` (the caller checked level <= pid->level).
static __always_inline void *upid_at(struct pid *pid, __u32 level)
{
	return (void *)pid + bpf_core_field_offset(struct pid, numbers) + (__u64)level * bpf_core_type_size(struct upid);
}

static __always_inline struct pid_namespace *ns_at(struct pid *pid, __u32 level)
{
	struct pid_namespace *ns = 0;
	bpf_probe_read_kernel(&ns, sizeof(ns), upid_at(pid, level) + bpf_core_field_offset(struct upid, ns));
	return ns;
}

static __always_inline __u32 nr_at(struct pid *pid, __u32 level)
{
	int nr = 0;
	bpf_probe_read_kernel(&nr, sizeof(nr), upid_at(pid, level) + bpf_core_field_offset(struct upid, nr));
	return nr;
}

struct level_scan {
	struct pid *pid;
	__u32 deepest;
	__u32 target;
	int found;
};

// One level of the scan below (bpf_loop: the verifier checks the step once, not once per level).
static long level_step(__u32 i, void *ctx)
{
	struct level_scan *s = ctx;
	__u32 level = i + 1;
	if (level > s->deepest)
		return 1;
	// Read apart: inside BPF_CORE_READ's argument, `s->pid` would become a relocation against `level_scan`.
	struct pid_namespace *ns = ns_at(s->pid, level);
	if (BPF_CORE_READ(ns, ns.inum) == s->target) {
		s->found = level;
		return 1;
	}
	return 0;
}

// The level at which `pid` is numbered in the target namespace; -1 when it is not (a process outside). Level 0
// is the host's, never a sandbox's.
static __always_inline int sandbox_level(struct pid *pid, __u32 target)
{
	if (!pid || !target)
		return -1;
	struct level_scan s = { .pid = pid, .deepest = BPF_CORE_READ(pid, level), .target = target, .found = -1 };
	if (s.deepest == 0)
		return -1;
	bpf_loop(MAX_PID_NS_LEVEL - 1, level_step, &s, 0);
	return s.found;
}

// The parent's pid at `level`, when the parent is numbered in the same namespace there (0: it is outside).
static __always_inline __u32 parent_at(struct task_struct *t, int level, struct pid_namespace *ns)
{
	struct pid *parent = BPF_CORE_READ(t, real_parent, group_leader, thread_pid);
	if (!parent || BPF_CORE_READ(parent, level) < (__u32)level || ns_at(parent, level) != ns)
		return 0;
	return nr_at(parent, level);
}

struct cwd_walk {
	struct dentry *dentry;
	struct vfsmount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	struct exec_record *r;
	__u32 off;
	bool done;
};

// One step of the walk from the cwd up to the process's root, crossing mount points; appends the component.
static long cwd_step(__u32 i, void *ctx)
{
	struct cwd_walk *w = ctx;
	struct dentry *d = w->dentry;
	struct vfsmount *mnt = w->mnt;
	if (d == w->root_dentry && mnt == w->root_mnt) {
		w->done = true;
		return 1;
	}
	if (d == BPF_CORE_READ(mnt, mnt_root)) {
		struct mount *m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m) {
			// The top of the mount tree without meeting the root: a cwd outside the process's root.
			w->done = true;
			return 1;
		}
		w->dentry = BPF_CORE_READ(m, mnt_mountpoint);
		w->mnt = (void *)parent + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	struct dentry *up = BPF_CORE_READ(d, d_parent);
	if (up == d) {
		// The root of a file system that is not mounted here (a lazily unmounted cwd).
		w->done = true;
		return 1;
	}
	__u32 off = w->off;
	if (off >= EXEC_CWD_MAX)
		return 1;
	long n = bpf_probe_read_kernel_str(&w->r->cwd[off & (EXEC_CWD_MAX - 1)], EXEC_NAME_MAX, BPF_CORE_READ(d, d_name.name));
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->dentry = up;
	return 0;
}

static __always_inline void read_cwd(struct exec_record *r, struct task_struct *t)
{
	struct cwd_walk w = {
		.dentry = BPF_CORE_READ(t, fs, pwd.dentry),
		.mnt = BPF_CORE_READ(t, fs, pwd.mnt),
		.root_dentry = BPF_CORE_READ(t, fs, root.dentry),
		.root_mnt = BPF_CORE_READ(t, fs, root.mnt),
		.r = r,
	};
	bpf_loop(EXEC_CWD_DEPTH, cwd_step, &w, 0);
	r->cwd_len = w.off;
	if (!w.done)
		r->flags |= EXEC_CWD_TRUNCATED;
}

// A record for the current process when it is the sandbox's (NULL otherwise, or when the ring is full: counted
// in `lost`), with its pids and cwd filled in.
static __always_inline struct exec_record *start_record(struct task_struct *t, __u32 target, __u32 slot, void **ring)
{
	struct pid *own = BPF_CORE_READ(t, group_leader, thread_pid);
	int level = sandbox_level(own, target);
	if (level < 1 || level >= MAX_PID_NS_LEVEL)
		return 0;
	*ring = RING_OF(slot);
	if (!*ring)
		return 0;
	struct exec_record *r = bpf_ringbuf_reserve(*ring, sizeof(*r), 0);
	if (!r) {
		count_lost(slot);
		return 0;
	}
	r->target_ns = target;
	r->reserved = 0;
	struct pid_namespace *ns = ns_at(own, level);
	r->pid = nr_at(own, level);
	r->host_pid = nr_at(own, level - 1);
	r->ppid = parent_at(t, level, ns);
	r->error = 0;
	r->dirfd = -100;
	r->flags = 0;
	r->path_len = 0;
	r->argv_len = 0;
	r->argc = 0;
	read_cwd(r, t);
	return r;
}

// The supervisor drains the ring on a short timer; it is woken early only when the ring is half full.
static __always_inline void submit_record(struct exec_record *r, void *ring)
{
	bool half_full = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) > EXEC_RING_BYTES / 2;
	bpf_ringbuf_submit(r, half_full ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void read_path(struct exec_record *r, const char *path, bool user)
{
	long n = user ? bpf_probe_read_user_str(r->path, EXEC_PATH_MAX, path)
		      : bpf_probe_read_kernel_str(r->path, EXEC_PATH_MAX, path);
	r->path_len = n > 0 ? n : 0;
	if (n == EXEC_PATH_MAX)
		r->flags |= EXEC_PATH_TRUNCATED;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_done, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	struct task_struct *t = bpf_get_current_task_btf();
	void *ring = 0;
	struct exec_record *r = start_record(t, TARGET_NS(ctx), SLOT(ctx), &ring);
	if (!r)
		return 0;
	read_path(r, BPF_CORE_READ(bprm, filename), false);
	r->argc = BPF_CORE_READ(bprm, argc);
	unsigned long start = BPF_CORE_READ(t, mm, arg_start), end = BPF_CORE_READ(t, mm, arg_end);
	__u64 len = end > start ? end - start : 0;
	if (len >= EXEC_ARGV_MAX) {
		len = EXEC_ARGV_MAX - 1;
		r->flags |= EXEC_ARGV_TRUNCATED;
	}
	len &= EXEC_ARGV_MAX - 1;
	if (len && !bpf_probe_read_user(r->argv, len, (void *)start))
		r->argv_len = len;
	submit_record(r, ring);
	return 0;
}

struct argv_copy {
	const char *const *argv;
	struct exec_record *r;
	__u32 off;
	bool done;
};

// One argument of a failed exec, from the caller's memory.
static long copy_arg(__u32 i, void *ctx)
{
	struct argv_copy *a = ctx;
	const char *arg = 0;
	if (bpf_probe_read_user(&arg, sizeof(arg), &a->argv[i]) || !arg) {
		a->done = true;
		return 1;
	}
	__u32 off = a->off;
	if (off > EXEC_ARGV_MAX - EXEC_ARG_MAX)
		return 1;
	long n = bpf_probe_read_user_str(&a->r->argv[off & (EXEC_ARGV_MAX - 1)], EXEC_ARG_MAX, arg);
	if (n <= 0) {
		a->done = true;
		return 1;
	}
	a->off = off + n;
	if (n == EXEC_ARG_MAX)
		a->r->flags |= EXEC_ARGV_TRUNCATED;
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(exec_failed, struct pt_regs *regs, long ret)
{
	if (ret >= 0)
		return 0;
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (nr != NR_EXECVE && nr != NR_EXECVEAT)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	void *ring = 0;
	struct exec_record *r = start_record(t, TARGET_NS(ctx), SLOT(ctx), &ring);
	if (!r)
		return 0;
	r->error = ret;
	bool at = nr == NR_EXECVEAT;
	if (at)
		r->dirfd = BPF_CORE_READ(regs, di);
	read_path(r, (const char *)(at ? BPF_CORE_READ(regs, si) : BPF_CORE_READ(regs, di)), true);
	struct argv_copy a = {
		.argv = (const char *const *)(at ? BPF_CORE_READ(regs, dx) : BPF_CORE_READ(regs, si)),
		.r = r,
	};
	if (a.argv)
		bpf_loop(EXEC_ARGS_MAX, copy_arg, &a, 0);
	else
		a.done = true;
	r->argv_len = a.off;
	if (!a.done)
		r->flags |= EXEC_ARGV_TRUNCATED;
	submit_record(r, ring);
	return 0;
}
