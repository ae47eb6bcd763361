// SPDX-License-Identifier: GPL-2.0
/* dns: uprobe + uretprobe on libc getaddrinfo */
#include "trace.bpf.h"
#include "dns.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct dns_event, event);

const volatile __u64 min_latency_ns = 0;

struct start {
	__u64 ts_ns;
	struct trace_ctx trace;
	char name[DNS_NAME_LEN];
};

/* calls in flight, by thread */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct start);
} starts SEC(".maps");

/* a per-CPU scratch value: struct start is too large for the BPF stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct start);
} scratch SEC(".maps");

/* BPF_KPROBE reads pt_regs arguments, which is what a uprobe gets too */
SEC("uprobe")
int BPF_KPROBE(getaddrinfo_enter, const char *node)
{
	count_run();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct start *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s || !in_target())
		return 0;
	s->ts_ns = bpf_ktime_get_ns();
	stamp_trace(&s->trace);
	/* a NULL node is a service-only lookup; keep it with an empty name */
	s->name[0] = 0;
	if (node)
		bpf_probe_read_user_str(s->name, sizeof(s->name), node);
	bpf_map_update_elem(&starts, &id, s, BPF_ANY);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(getaddrinfo_exit, int ret)
{
	count_run();
	__u64 id = bpf_get_current_pid_tgid();
	struct start *s = bpf_map_lookup_elem(&starts, &id);
	struct dns_event *e;
	__u64 now = bpf_ktime_get_ns();

	if (!s)
		return 0;
	if (now - s->ts_ns < (min_latency_ns << (threshold_shift & 31)))
		goto out;
	e = reserve_event(sizeof(*e));
	if (!e)
		goto out;
	fill_hdr_current(&e->hdr);
	e->hdr.ts_ns = s->ts_ns;
	e->trace = s->trace;
	e->latency_ns = now - s->ts_ns;
	e->ret = ret;
	e->pad = 0;
	__builtin_memcpy(e->name, s->name, sizeof(e->name));
	submit_event(e);
out:
	bpf_map_delete_elem(&starts, &id);
	return 0;
}
