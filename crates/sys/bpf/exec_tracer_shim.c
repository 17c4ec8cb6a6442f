// The few entry points airlock's Rust side (crates/sys/src/bpf.rs) calls around the light skeleton that
// `bpftool gen skeleton -L` generates from exec_tracer.bpf.c at build time (exec_tracer.lskel.h, in OUT_DIR).
// The skeleton is header-only C over the bpf() system call: no libbpf is linked, and no BTF is parsed here (the
// kernel relocates the program against its own BTF).
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <linux/types.h>
#include "exec_record.h"
#include "exec_tracer.lskel.h"
#include "exec_tracer_shared.lskel.h"

// Creates the maps and loads and verifies both programs; not attached yet. NULL with *err set (a positive
// errno) on failure.
struct exec_tracer *airlock_exec_tracer_load(int *err)
{
	struct exec_tracer *skel = exec_tracer__open();
	if (!skel) {
		*err = ENOMEM;
		return NULL;
	}
	int ret = exec_tracer__load(skel);
	if (ret) {
		*err = ret < 0 ? -ret : (errno ? errno : EINVAL);
		exec_tracer__destroy(skel);
		return NULL;
	}
	// The program's variables (target_ns among them) are mapped shared with the kernel: not inherited by the
	// sandbox's init, cloned from this process after the load.
	if (madvise(skel->bss, 4096, MADV_DONTFORK)) {
		*err = errno;
		exec_tracer__destroy(skel);
		return NULL;
	}
	return skel;
}

// Attaches both programs to their tracepoints: 0, or a positive errno.
int airlock_exec_tracer_attach(struct exec_tracer *skel)
{
	int ret = exec_tracer__attach(skel);
	if (ret < 0)
		return errno ? errno : EINVAL;
	return 0;
}

int airlock_exec_tracer_ring_fd(const struct exec_tracer *skel)
{
	return skel->maps.records.map_fd;
}

// The program's global variables, in its .bss map, mapped shared with the kernel by the skeleton's load.
void airlock_exec_tracer_set_target(struct exec_tracer *skel, __u32 target_ns)
{
	__atomic_store_n(&skel->bss->target_ns, target_ns, __ATOMIC_SEQ_CST);
}

__u64 airlock_exec_tracer_lost(const struct exec_tracer *skel)
{
	return __atomic_load_n(&skel->bss->lost, __ATOMIC_SEQ_CST);
}

void airlock_exec_tracer_destroy(struct exec_tracer *skel)
{
	exec_tracer__destroy(skel);
}

// The layout the Rust side decodes, checked at load against its own constants: where the path, argv and cwd
// buffers start, and the whole record's size.
void airlock_exec_tracer_layout(__u32 layout[4])
{
	layout[0] = offsetof(struct exec_record, path);
	layout[1] = offsetof(struct exec_record, argv);
	layout[2] = offsetof(struct exec_record, cwd);
	layout[3] = sizeof(struct exec_record);
}

__u32 airlock_exec_tracer_ring_bytes(void)
{
	return EXEC_RING_BYTES;
}

// The shared variant's slots (its maps' max_entries) and the size of a slot's entry, checked against the Rust
// side's.
void airlock_exec_tracer_shared_layout(__u32 layout[2])
{
	layout[0] = EXEC_SHARED_SLOTS;
	layout[1] = sizeof(struct exec_run);
}

// Loads the shared variant (exec_tracer_shared: the attach cookie names the run, each run's ring in `rings`) and
// hands over its four objects as new close-on-exec descriptors, in this order: the exec_done and exec_failed
// programs, the rings and runs maps. Nothing is attached. 0, or a positive errno (no descriptor left open).
int airlock_exec_tracer_shared_load(int fds[4])
{
	struct exec_tracer_shared *skel = exec_tracer_shared__open();
	if (!skel)
		return ENOMEM;
	int ret = exec_tracer_shared__load(skel);
	if (ret) {
		ret = ret < 0 ? -ret : (errno ? errno : EINVAL);
		exec_tracer_shared__destroy(skel);
		return ret;
	}
	int from[4] = { skel->progs.exec_done.prog_fd, skel->progs.exec_failed.prog_fd, skel->maps.rings.map_fd,
			skel->maps.runs.map_fd };
	ret = 0;
	for (int i = 0; i < 4; i++) {
		fds[i] = ret ? -1 : fcntl(from[i], F_DUPFD_CLOEXEC, 3);
		if (fds[i] < 0 && !ret)
			ret = errno ? errno : EBADF;
	}
	if (ret)
		for (int i = 0; i < 4; i++)
			if (fds[i] >= 0)
				close(fds[i]);
	exec_tracer_shared__destroy(skel);
	return ret;
}
