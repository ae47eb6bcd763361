// SPDX-License-Identifier: GPL-2.0
/* flood: tp syscalls/sys_enter_getppid of one process, an event per call */
#include "common.bpf.h"
#include "flood.h"

char LICENSE[] SEC("license") = "GPL";

KEEP_BTF(struct flood_event, event);

const volatile __u32 target_pid = 0;

__u64 next_seq = 0;

SEC("tp/syscalls/sys_enter_getppid")
int flood(void *ctx)
{
	count_run();
	struct flood_event *e;

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	fill_hdr_current(&e->hdr);
	e->seq = __sync_fetch_and_add(&next_seq, 1);
	submit_event(e);
	return 0;
}
