#!/usr/bin/env python3
"""Cost of trace-context stamping per span, measured.

Times an OpenTelemetry span start+end with the SDK alone, with the
KernelTraceContextProcessor (two marker calls per span), and with the processor
while slocap's uprobe on the marker is attached (the real cost while
recording). The marker registers a thread's slot at most once a second, so
the last row times the registration call itself, the one call that hits the
uprobe: paid on a thread's first span and once a second after that.

Usage: .venv/bin/python bench/stamping_cost.py [--spans 100000]   (root for the last row)
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from capture.libraries import SLOTRACE  # noqa: E402
from capture.probe import LoadedSignal  # noqa: E402
from capture.signals import TRACECTX  # noqa: E402
from capture.tracing import KernelTraceContextProcessor  # noqa: E402


def per_span_us(provider: TracerProvider, spans: int) -> float:
    tracer = provider.get_tracer("bench")
    best = float("inf")
    for _ in range(3):  # best of three: the VM is noisy
        t0 = time.perf_counter()
        for _ in range(spans):
            with tracer.start_as_current_span("s"):
                pass
        best = min(best, (time.perf_counter() - t0) / spans * 1e6)
    return best


def per_register_us(calls: int) -> float:
    """One call of the marker the uprobe sits on, best of three."""
    register = ctypes.CDLL(str(SLOTRACE)).slo_trace_register
    register.argtypes = [ctypes.c_void_p]
    register.restype = None
    slot = ctypes.create_string_buffer(24)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            register(slot)
        best = min(best, (time.perf_counter() - t0) / calls * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=100_000)
    a = ap.parse_args()
    plain = TracerProvider()
    stamped = TracerProvider()
    stamped.add_span_processor(KernelTraceContextProcessor())
    base = per_span_us(plain, a.spans)
    with_proc = per_span_us(stamped, a.spans)
    print(f"span start+end, SDK only:                     {base:6.2f} µs")
    print(f"  + KernelTraceContextProcessor, no recorder: {with_proc:6.2f} µs  (+{with_proc - base:.2f} µs)")
    if os.geteuid() == 0:
        calls = max(1_000, a.spans // 10)
        bare = per_register_us(calls)
        probe = LoadedSignal(TRACECTX, ring_bytes=1 << 12, wakeup_bytes=1 << 12)
        try:
            hooked = per_span_us(stamped, a.spans)
            hit = per_register_us(calls)
        finally:
            probe.close()
        print(f"  + uprobe attached (recording):              {hooked:6.2f} µs  (+{hooked - base:.2f} µs)")
        print(f"slot registration, uprobe hit (1/s/thread):   {hit:6.2f} µs  (+{hit - bare:.2f} µs over the bare call)")
    else:
        print("  (run as root to measure with the uprobe attached)")
    plain.shutdown()
    stamped.shutdown()


if __name__ == "__main__":
    main()
