"""Trace-context stamping for traced processes: an OpenTelemetry SpanProcessor
that tells the kernel which trace and span each thread works on.

On span start it calls slo_trace_set() of the tiny shared library the package
builds (capture/_trace/libslotrace.so), which stores the context in a
thread-local slot and now and then registers the slot's address through a
function slocap has a uprobe on; the dns, connect and tls probes read the slot
and stamp their events with it. On span end the thread goes back to the parent
span, or to none when the parent is remote or absent. Without slocap running the call costs a function call.

    from capture.tracing import KernelTraceContextProcessor
    provider.add_span_processor(KernelTraceContextProcessor())
"""

from __future__ import annotations

import ctypes

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from capture.libraries import SLOTRACE
from runfmt.errors import CaptureError

_MASK64 = (1 << 64) - 1


def load_marker() -> ctypes._CFuncPtr:
    try:
        lib = ctypes.CDLL(str(SLOTRACE))
    except OSError as exc:
        raise CaptureError(f"cannot load the trace marker library {SLOTRACE}: {exc}",
                           "build it with 'make bpf' (or 'make setup')") from None
    fn = lib.slo_trace_set
    fn.argtypes = [ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
    fn.restype = None
    return fn


class KernelTraceContextProcessor(SpanProcessor):
    """Publishes the current span of each thread to the kernel."""

    def __init__(self) -> None:
        self._set = load_marker()

    def publish(self, trace_id: int, span_id: int) -> None:
        self._set(trace_id >> 64, trace_id & _MASK64, span_id)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ctx = span.get_span_context()
        self.publish(ctx.trace_id, ctx.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        parent = span.parent
        # a remote parent's work is not on this thread: an idle server thread
        # must not stay stamped with its last caller's span
        if parent is not None and parent.is_valid and not parent.is_remote:
            self.publish(parent.trace_id, parent.span_id)
        else:
            self.publish(0, 0)

    def shutdown(self) -> None:
        self.publish(0, 0)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
