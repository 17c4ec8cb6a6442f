// One exec record, as the BPF program (exec_tracer.bpf.c) writes it into the ring buffer and airlock reads it
// (crates/sys/src/bpf.rs decodes the same layout, twelve 32-bit words of header, then the buffers: keep both in
// step). Fixed size: a ring-buffer reservation is made before the lengths are known.
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

// The shared variant's entry for one slot, in its `runs` map: the records lost to the slot's full ring, and the
// run that holds the slot (pid 0: free), so that a slot whose supervisor died can be taken by another run.
#define EXEC_SHARED_SLOTS 1024 // audited runs at once, with the shared variant
struct exec_run {
	__u64 lost;
	__u64 supervisor_start;  // the supervisor's start time, in clock ticks after boot (/proc/PID/stat)
	__u32 supervisor_pid;    // as its own pid namespace numbers it; 0: the slot is free
	__u32 supervisor_pid_ns; // that pid namespace's inode number
};

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
	__u32 target_ns;    // the pid namespace the record was made for (a reused ring's reader drops others')
	__u32 reserved;
	char path[EXEC_PATH_MAX];
	char argv[EXEC_ARGV_MAX];
	char cwd[EXEC_CWD_MAX + EXEC_NAME_MAX];
};

#endif
