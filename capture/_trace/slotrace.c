/* How a traced process tells the kernel which trace and span its current thread
 * works on, without a trap per span.
 *
 * slo_trace_set() writes the context into a thread-local slot: a plain store.
 * At most once a second per thread it also calls slo_trace_register() with the
 * slot's address; slocap's uprobe on that empty function remembers the address
 * per thread, and the dns, connect and tls probes read the slot from the
 * thread's memory when they fire. So a thread is known to a recorder started
 * later within a second of its next span, and the uprobe's cost is paid once a
 * second, not twice per span. All zero clears. */
#include <stdint.h>
#include <time.h>

struct slo_trace_slot {
	uint64_t trace_hi;
	uint64_t trace_lo;
	uint64_t span;
};

static __thread struct slo_trace_slot slot;
static __thread int64_t registered_s = -1;

/* The probed function is written out so that its first instruction is a 5-byte
 * nop. What a uprobe costs depends on the instruction it replaces: one the
 * kernel must single-step out of line (a plain `ret`, as the compiler makes an
 * empty function) costs two traps, +17.8 µs a hit on this VM; on a 5-byte nop,
 * x86 kernels since 6.18 turn the probe into a call into a trampoline after its
 * first hit: +0.26 µs (bench/stamping_cost.py; README, "Spans, trace stamping
 * and pods"). */
__asm__(".text\n"
	".globl slo_trace_register\n"
	".type slo_trace_register, @function\n"
	"slo_trace_register:\n"
	"	.byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n"	/* nopl 0x0(%rax,%rax,1): the probe's site */
	"	ret\n"
	".size slo_trace_register, .-slo_trace_register\n");
void slo_trace_register(struct slo_trace_slot *where);

__attribute__((visibility("default")))
void slo_trace_set(uint64_t trace_hi, uint64_t trace_lo, uint64_t span)
{
	struct timespec now;

	slot.trace_hi = trace_hi;
	slot.trace_lo = trace_lo;
	slot.span = span;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	if (now.tv_sec != registered_s) {
		registered_s = now.tv_sec;
		slo_trace_register(&slot);
	}
}
