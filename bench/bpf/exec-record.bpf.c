// An exec record from the kernel's own view, for bench/audit-sources: what a BPF exec source for airlock's
// audit log would do per exec. Compiled with clang (-target bpf), CO-RE against the running kernel's BTF.
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "exec-record.h"

char LICENSE[] SEC("license") = "GPL";

// Which processes are recorded: those whose UTS namespace's host name is `selector` (the bench sets it with
// `airlock run --hostname`; a real source would match the sandbox's pid namespace, below, instead).
const volatile char selector[16] = {};
// The sandbox's pid namespace (`stat` of /proc/PID/ns/pid: st_dev, st_ino); 0 here, so the helper's answer
// is not used, only its cost paid.
const volatile __u64 pidns_dev = 0, pidns_ino = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} records SEC(".maps");

__u64 lost = 0;

static __always_inline bool selected(struct task_struct *t)
{
	char node[16];
	BPF_CORE_READ_STR_INTO(&node, t, nsproxy, uts_ns, name.nodename);
	for (int i = 0; i < 16; i++) {
		if (node[i] != selector[i])
			return false;
		if (!node[i])
			break;
	}
	return true;
}

static __always_inline __u32 pid_at(struct pid *pid, __u32 level)
{
	if (!pid || BPF_CORE_READ(pid, level) < level)
		return 0;
	struct upid u;
	bpf_probe_read_kernel(&u, sizeof(u), (void *)pid + bpf_core_field_offset(struct pid, numbers) + (__u64)level * bpf_core_type_size(struct upid));
	return u.nr;
}

struct walk {
	struct dentry *d;
	struct vfsmount *mnt;
	struct dentry *root_d;
	struct vfsmount *root_mnt;
	struct exec_record *r;
	__u32 off;
};

static long walk_step(__u32 i, void *ctx)
{
	struct walk *w = ctx;
	struct dentry *d = w->d;
	struct vfsmount *mnt = w->mnt;
	if (d == w->root_d && mnt == w->root_mnt)
		return 1;
	struct mount *m = container_of(mnt, struct mount, mnt);
	if (d == BPF_CORE_READ(mnt, mnt_root)) {
		struct mount *parent = BPF_CORE_READ(m, mnt_parent);
		if (parent == m)
			return 1;
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->mnt = &parent->mnt;
		return 0;
	}
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	__u32 off = w->off;
	if (off >= CWD_MAX)
		return 1;
	long n = bpf_probe_read_kernel_str(&w->r->cwd[off & (CWD_MAX - 1)], NAME_MAX_, name);
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->d = BPF_CORE_READ(d, d_parent);
	return 0;
}

static __always_inline void fill_context(struct exec_record *r, struct task_struct *t)
{
	struct bpf_pidns_info ns = {};
	if (!bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
		r->inner_tgid = ns.tgid;
	struct pid *own = BPF_CORE_READ(t, group_leader, thread_pid);
	__u32 level = BPF_CORE_READ(own, level);
	r->inner_tgid = r->inner_tgid ?: pid_at(own, level);
	r->inner_parent = pid_at(BPF_CORE_READ(t, real_parent, group_leader, thread_pid), level);
	r->host_tgid = bpf_get_current_pid_tgid() >> 32;

	// The working directory, walked up to the process's root, crossing mounts (bpf_loop: one verification
	// of the step, however many components).
	struct path root = BPF_CORE_READ(t, fs, root);
	struct path pwd = BPF_CORE_READ(t, fs, pwd);
	struct walk w = {
		.d = pwd.dentry,
		.mnt = pwd.mnt,
		.root_d = root.dentry,
		.root_mnt = root.mnt,
		.r = r,
	};
	bpf_loop(CWD_DEPTH, walk_step, &w, 0);
	r->cwd_len = w.off;
}

// A record for the current process, when it is one of the selected sandbox's; NULL otherwise, or when the
// ring is full (counted in `lost`).
static __always_inline struct exec_record *reserve_record(struct task_struct *t)
{
	if (!selected(t))
		return NULL;
	struct exec_record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
	if (!r)
		__sync_fetch_and_add(&lost, 1);
	return r;
}

// The reader drains the ring on a 10 ms timer; it is woken early only when the ring is half full.
static __always_inline void submit_record(struct exec_record *r)
{
	__u64 full = bpf_ringbuf_query(&records, BPF_RB_AVAIL_DATA) > (8 << 20);
	bpf_ringbuf_submit(r, full ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

// Every exec that happened: its argv from the new program's own memory (what the kernel copied, not what a
// racing thread may have changed since), the path as given.
SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_done, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct exec_record *r = reserve_record(t);
	if (!r)
		return 0;
	r->error = 0;
	bpf_probe_read_kernel_str(r->path, sizeof(r->path), BPF_CORE_READ(bprm, filename));
	unsigned long start = BPF_CORE_READ(t, mm, arg_start), end = BPF_CORE_READ(t, mm, arg_end);
	__u32 len = end > start ? end - start : 0;
	if (len > ARGV_MAX)
		len = ARGV_MAX;
	r->argv_len = len;
	bpf_probe_read_user(r->argv, len & (ARGV_MAX - 1), (void *)start);
	fill_context(r, t);
	submit_record(r);
	return 0;
}

// One argument of a failed exec, from the caller's memory (bpf_loop: at most ARGS_MAX of them).
struct argv_copy {
	const char *const *argv;
	struct exec_record *r;
	__u32 off;
};

static long copy_arg(__u32 i, void *ctx)
{
	struct argv_copy *a = ctx;
	const char *arg = 0;
	if (bpf_probe_read_user(&arg, sizeof(arg), &a->argv[i]) || !arg)
		return 1;
	__u32 off = a->off;
	if (off >= ARGV_MAX - ARG_MAX_)
		return 1;
	long n = bpf_probe_read_user_str(&a->r->argv[off & (ARGV_MAX - 1)], ARG_MAX_, arg);
	if (n <= 0)
		return 1;
	a->off = off + n;
	return 0;
}

// Every exec that failed (it never reaches the tracepoint above): the caller's memory is still its own, so
// the path and argv are read from the system call's arguments.
SEC("tp_btf/sys_exit")
int BPF_PROG(exec_failed, struct pt_regs *regs, long ret)
{
	if (ret >= 0)
		return 0;
	long nr = BPF_CORE_READ(regs, orig_ax);
	if (nr != 59 && nr != 322) // execve, execveat (x86-64)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	struct exec_record *r = reserve_record(t);
	if (!r)
		return 0;
	r->error = ret;
	const char *path = (const char *)(nr == 59 ? BPF_CORE_READ(regs, di) : BPF_CORE_READ(regs, si));
	const char *const *argv = (const char *const *)(nr == 59 ? BPF_CORE_READ(regs, si) : BPF_CORE_READ(regs, dx));
	bpf_probe_read_user_str(r->path, sizeof(r->path), path);
	struct argv_copy a = { .argv = argv, .r = r };
	bpf_loop(ARGS_MAX, copy_arg, &a, 0);
	r->argv_len = a.off;
	fill_context(r, t);
	submit_record(r);
	return 0;
}
