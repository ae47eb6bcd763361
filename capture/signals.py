"""The signals the recorder knows: which object, which hooks, how a record
becomes kernel_events columns.

Adding a signal: the checklist in docs/architecture.md ("Where to add").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from capture import columns as S
from capture.libraries import LIBC

OBJECT_DIR = Path(__file__).resolve().parent / "_bpf"


@dataclass(frozen=True)
class Hook:
    program: str
    kind: str  # "tracepoint" (tp/, tp_btf/, raw_tp/ by section) | "uprobe" | "uretprobe"
    target: str  # what is hooked, as a human reads it
    function: str = ""  # uprobes: the symbol
    library: str = ""  # uprobes: "libc" | "libssl" | "slotrace" (capture/libraries.py)
    cookie: int = 0  # uprobes: tells the program which function fired
    fallback: str = ""  # a raw_tp program for the same tracepoint, for kernels without tp_btf

    def name(self, path: str = "", use_fallback: bool = False) -> str:
        if use_fallback and self.fallback:
            return self.target.replace("tp_btf/", "raw_tp/")
        return f"{self.kind}:{path or self.library}:{self.function}" if self.function else self.target


@dataclass(frozen=True)
class Signal:
    name: str
    struct: str
    hooks: tuple[Hook, ...]
    to_columns: Callable[[np.ndarray], dict]
    settings: Callable[[dict], dict[str, int]] = lambda capture_cfg: {}  # config → .rodata
    hist: bool = False  # also keeps per-slice histograms in the kernel (bpf/hist.bpf.h)
    stamped: bool = False  # events carry the thread's trace context (bpf/trace.bpf.h)
    drop_maps: tuple[str, ...] = ()  # PERCPU_ARRAY counters of its drops beside the .bss ones
    rider_maps: tuple[str, ...] = ()  # kept for another signal's object to share; 1 entry when none does

    @property
    def object_path(self) -> Path:
        return OBJECT_DIR / f"{self.name}.bpf.o"

    @property
    def has_fallback(self) -> bool:
        return any(h.fallback for h in self.hooks)

    def hook_names(self, use_fallback: bool = False) -> list[str]:
        return [h.name(use_fallback=use_fallback) for h in self.hooks]


# -- record → columns ----------------------------------------------------

def _header_columns(r: np.ndarray) -> dict:
    return {
        "pid": r["pid"].astype(np.int32),
        "tid": r["tid"].astype(np.int32),
        "comm": S.c_strings(r["comm"]),
        "cgroup_id": r["cgroup_id"],
    }


def _trace_columns(r: np.ndarray) -> dict:
    return {"trace_id": S.hex_ids(r["trace_id_hi"], r["trace_id_lo"]),
            "span_id": S.hex_ids(None, r["span_id"])}


def _tuple_columns(r: np.ndarray) -> dict:
    return {
        "saddr": S.addresses(r["family"], r["saddr"]),
        "daddr": S.addresses(r["family"], r["daddr"]),
        # a failed connect has released its port before the CLOSE transition
        "sport": pa.array(r["sport"].astype(np.int32), mask=r["sport"] == 0),
        "dport": r["dport"].astype(np.int32),
        "family": r["family"].astype(np.int32),
    }


def _dns_columns(r: np.ndarray) -> dict:
    return {**_header_columns(r), **_trace_columns(r), "value_ns": r["latency_ns"].astype(np.int64),
            "detail": S.c_strings(r["name"]), "errno": r["ret"]}


def _retransmit_columns(r: np.ndarray) -> dict:
    # retransmits mostly run in timer/softirq context: the current task is whoever was
    # interrupted, so pid/tid/comm would mislead a join; the socket's tuple and cgroup do not
    return {"cgroup_id": r["cgroup_id"], **_tuple_columns(r), "detail": S.tcp_state_names(r["state"])}


def _connect_columns(r: np.ndarray) -> dict:
    return {**_header_columns(r), **_tuple_columns(r), **_trace_columns(r),
            "value_ns": r["latency_ns"].astype(np.int64),
            "detail": S.tcp_state_names(r["new_state"]), "errno": r["err"]}


TLS_FUNCTIONS = ("SSL_do_handshake", "SSL_connect", "SSL_accept")  # index = TLS_FN_* in bpf/tls.h


def _tls_columns(r: np.ndarray) -> dict:
    how = np.empty(len(r), dtype=[("func", "<u4"), ("calls", "<u4")])
    how["func"], how["calls"] = r["func"], r["calls"]
    return {**_header_columns(r), **_trace_columns(r), "value_ns": r["latency_ns"].astype(np.int64),
            "detail": S.strings_by_unique(how, lambda h: f"{TLS_FUNCTIONS[int(h['func'])]} calls={int(h['calls'])}"),
            # SSL_* return 1 on success; 0 (shut down by the peer) is kept as the failure's code
            "errno": pa.array(r["ret"], pa.int32(), mask=r["ret"] == 1).fill_null(0)}


RECLAIM_KINDS = ("direct", "memcg")  # index = RECLAIM_* in bpf/mem_reclaim.h


def _mem_reclaim_columns(r: np.ndarray) -> dict:
    what = np.empty(len(r), dtype=[("kind", "<u4"), ("order", "<u4"), ("pages", "<u8")])
    what["kind"], what["order"], what["pages"] = r["kind"], r["order"], r["nr_reclaimed"]
    return {**_header_columns(r), "value_ns": r["latency_ns"].astype(np.int64),
            "detail": S.strings_by_unique(what, lambda w: (
                f"{RECLAIM_KINDS[int(w['kind'])]} order={int(w['order'])} reclaimed={int(w['pages'])}"))}


def _runqueue_columns(r: np.ndarray) -> dict:
    where = np.empty(len(r), dtype=[("cpu", "<u4"), ("prev", "S16")])
    where["cpu"], where["prev"] = r["cpu"], r["prev_comm"]
    return {**_header_columns(r), "value_ns": r["delay_ns"].astype(np.int64),
            "detail": S.strings_by_unique(
                where, lambda w: f"cpu={int(w['cpu'])} after={bytes(w['prev']).decode('utf-8', 'replace')}")}


# -- hooks ---------------------------------------------------------------

def _slice_settings(c: dict) -> dict[str, int]:
    return {"slice_ns": c["hist_slice_ms"] * 1_000_000}


def _btf_hooks(*pairs: tuple[str, str]) -> tuple[Hook, ...]:
    """(program, tracepoint) pairs with a `<program>_raw` raw_tp fallback each."""
    return tuple(Hook(prog, "tracepoint", f"tp_btf/{tp}", fallback=f"{prog}_raw") for prog, tp in pairs)


def _uprobe_pair(enter: str, exit_: str, library: str, function: str, cookie: int = 0) -> tuple[Hook, Hook]:
    return (Hook(enter, "uprobe", f"uprobe:{library}:{function}", function, library, cookie),
            Hook(exit_, "uretprobe", f"uretprobe:{library}:{function}", function, library, cookie))


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal(
            name="dns",
            struct="dns_event",
            hooks=_uprobe_pair("getaddrinfo_enter", "getaddrinfo_exit", "libc", "getaddrinfo"),
            to_columns=_dns_columns,
            settings=lambda c: {"min_latency_ns": c["dns_min_latency_ns"]},
            stamped=True,
        ),
        Signal(
            name="retransmit",
            struct="retransmit_event",
            hooks=_btf_hooks(("tcp_retransmit_skb", "tcp_retransmit_skb")),
            to_columns=_retransmit_columns,
        ),
        Signal(
            name="connect",
            struct="connect_event",
            hooks=_btf_hooks(("inet_sock_set_state", "inet_sock_set_state")),
            to_columns=_connect_columns,
            stamped=True,
        ),
        Signal(
            name="runqueue",
            struct="runqueue_event",
            hooks=_btf_hooks(("sched_switch", "sched_switch")),
            to_columns=_runqueue_columns,
            settings=lambda c: {**_slice_settings(c), "min_delay_ns": c["runqueue_min_delay_ns"]},
            hist=True,
            rider_maps=("steal_hists",),  # cpu_steal's histograms, when it rides on sched_switch here
        ),
        Signal(
            name="cpu_steal",
            struct="cpu_steal_event",
            hooks=_btf_hooks(("sched_switch", "sched_switch")),
            to_columns=lambda r: {**_header_columns(r), "value_ns": r["steal_ns"].astype(np.int64)},
            settings=_slice_settings,
            hist=True,
            drop_maps=("steal_dropped",),  # counted there by runqueue's program when it rides on it
        ),
        Signal(
            name="tls",
            struct="tls_event",
            hooks=tuple(h for i, fn in enumerate(TLS_FUNCTIONS)
                        for h in _uprobe_pair("tls_enter", "tls_exit", "libssl", fn, cookie=i)),
            to_columns=_tls_columns,
            stamped=True,
        ),
        Signal(
            name="mem_reclaim",
            struct="mem_reclaim_event",
            hooks=_btf_hooks(("direct_begin", "mm_vmscan_direct_reclaim_begin"),
                             ("direct_end", "mm_vmscan_direct_reclaim_end"),
                             ("memcg_begin", "mm_vmscan_memcg_reclaim_begin"),
                             ("memcg_end", "mm_vmscan_memcg_reclaim_end")),
            to_columns=_mem_reclaim_columns,
        ),
    )
}

# Not a signal: the uprobe on the marker library that learns where each traced
# thread keeps its trace context, which the stamped signals read (bpf/tracectx.bpf.c).
TRACECTX = Signal(
    name="tracectx",
    struct="tracectx_event",
    hooks=(Hook("slo_trace_register", "uprobe", "uprobe:slotrace:slo_trace_register", "slo_trace_register",
                "slotrace"),),
    to_columns=lambda r: _header_columns(r),
)

# Not a signal: a synthetic event per getppid() of one process, for the drain
# benchmark and the ring-buffer tests (bpf/flood.bpf.c).
FLOOD = Signal(
    name="flood",
    struct="flood_event",
    hooks=(Hook("flood", "tracepoint", "tp/syscalls/sys_enter_getppid"),),
    to_columns=lambda r: {**_header_columns(r), "value_ns": r["seq"].astype(np.int64)},
)

__all__ = ["FLOOD", "LIBC", "SIGNALS", "TRACECTX", "Hook", "Signal"]
