// One exec record, as the BPF program (exec_tracer.bpf.c) writes it into the ring buffer and airlock reads it
// (crates/sys/src/bpf.rs decodes the same layout: keep both in step). Fixed size: a ring-buffer reservation is
// made before the lengths are known.
#ifndef AIRLOCK_EXEC_RECORD_H
#define AIRLOCK_EXEC_RECORD_H

#define EXEC_RING_BYTES (8 << 20) // the ring buffer: about 200 records
#define EXEC_PATH_MAX 4096    // bytes of the path, with its NUL
#define EXEC_ARGV_MAX 32768   // bytes of argv, all arguments with their NULs
#define EXEC_ARG_MAX 4096     // bytes of one argument of a failed exec (read one by one)
#define EXEC_ARGS_MAX 256     // arguments of a failed exec read
#define EXEC_CWD_MAX 4096     // bytes of the cwd's components before the walk stops
#define EXEC_NAME_MAX 256     // bytes of one component, with its NUL
#define EXEC_CWD_DEPTH 64     // components of the cwd walked

#define EXEC_PATH_TRUNCATED 1
#define EXEC_ARGV_TRUNCATED 2
#define EXEC_CWD_TRUNCATED 4

struct exec_record {
	__u32 pid;          // at the sandbox's pid-namespace level
	__u32 ppid;         // the parent's, at the same level (0: the parent is outside the sandbox)
	__u32 host_pid;     // at the level above the sandbox's: the supervisor's
	__s32 error;        // 0: the exec happened; else the failed exec's -errno
	__s32 dirfd;        // a failed execveat's directory descriptor; -100 (AT_FDCWD) otherwise
	__u32 flags;        // EXEC_*_TRUNCATED
	__u32 path_len;     // bytes of path, with its NUL (0: unreadable)
	__u32 argv_len;     // bytes of argv: NUL-terminated arguments
	__u32 cwd_len;      // bytes of cwd: its components, innermost first, each NUL-terminated
	__u32 argc;         // arguments the exec had (0: not known, a failed exec's)
	char path[EXEC_PATH_MAX];
	char argv[EXEC_ARGV_MAX];
	char cwd[EXEC_CWD_MAX + EXEC_NAME_MAX];
};

#endif
