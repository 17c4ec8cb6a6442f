// The user-space half of bench/audit-sources' BPF exec source: loads exec-record.bpf.o (its skeleton), selects
// the sandboxes whose host name is argv[1], and appends one line per exec record to argv[2], reading the ring
// every 10 ms (and when the program wakes it: a half-full ring). Stops on SIGINT or SIGTERM and prints
// "records N lost M" to stderr.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <linux/types.h>
#include <bpf/libbpf.h>
#include "exec-record.h"
#include "exec-record.skel.h"


static FILE *out;
static long records;
static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int write_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	const struct exec_record *r = data;
	if (size < sizeof(*r))
		return 0;
	records++;
	fprintf(out, "pid=%u parent=%u host_pid=%u error=%d path=%s cwd=", r->inner_tgid, r->inner_parent, r->host_tgid,
		r->error, r->path);
	// cwd's components come innermost first.
	unsigned end = r->cwd_len < sizeof(r->cwd) ? r->cwd_len : sizeof(r->cwd);
	if (end == 0)
		fputc('/', out);
	while (end > 0) {
		unsigned start = end - 1;
		while (start > 0 && r->cwd[start - 1])
			start--;
		fprintf(out, "/%s", &r->cwd[start]);
		end = start;
	}
	fputs(" argv=", out);
	for (unsigned i = 0; i < r->argv_len && i < sizeof(r->argv); i++)
		fputc(r->argv[i] ? r->argv[i] : ' ', out);
	fputc('\n', out);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 || strlen(argv[1]) >= 16) {
		fprintf(stderr, "usage: exec-record HOSTNAME OUTPUT\n");
		return 2;
	}
	struct exec_record_bpf *skel = exec_record_bpf__open();
	if (!skel)
		return 1;
	strcpy((char *)skel->rodata->selector, argv[1]);
	if (exec_record_bpf__load(skel) || exec_record_bpf__attach(skel)) {
		fprintf(stderr, "exec-record: cannot load or attach the BPF program\n");
		return 1;
	}
	out = fopen(argv[2], "w");
	struct ring_buffer *ring = ring_buffer__new(bpf_map__fd(skel->maps.records), write_record, NULL, NULL);
	if (!out || !ring)
		return 1;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	fprintf(stderr, "attached\n");
	while (!stop) {
		int n = ring_buffer__poll(ring, 10);
		if (n < 0 && n != -EINTR)
			break;
		if (n == 0)
			ring_buffer__consume(ring);
	}
	ring_buffer__consume(ring);
	fclose(out);
	fprintf(stderr, "records %ld lost %llu\n", records, (unsigned long long)skel->bss->lost);
	return 0;
}
