// The record the BPF program writes and its reader reads (bench/audit-sources). Both sides include this after
// their own definitions of __u32 and __s32 (vmlinux.h; <linux/types.h>).
#ifndef EXEC_RECORD_H
#define EXEC_RECORD_H

#define ARGV_MAX 4096
#define PATH_MAX_ 256
#define CWD_MAX 4096
#define CWD_DEPTH 32
#define NAME_MAX_ 256
#define ARGS_MAX 64   // arguments of a failed exec read
#define ARG_MAX_ 256  // bytes of one of them

struct exec_record {
	__u32 host_tgid;
	__u32 inner_tgid;      // in the sandbox's pid namespace (0: not resolved)
	__u32 inner_parent;    // the parent's pid at the same namespace level (0: outside the sandbox)
	__s32 error;           // 0: the exec happened; else the failed exec's errno (negative)
	__u32 argv_len;
	__u32 cwd_len;         // bytes used of cwd: its components, innermost first, each ending in a NUL
	char path[PATH_MAX_];  // as the caller gave it
	char argv[ARGV_MAX];
	char cwd[CWD_MAX + NAME_MAX_];
};

#endif
