"""The signals the recorder knows: which object, which hooks, how a record
becomes kernel_events columns.

Adding a signal is one `bpf/<name>.bpf.c` + `bpf/<name>.h` and one `Signal`
entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from capture import schema as S

OBJECT_DIR = Path(__file__).resolve().parent / "_bpf"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


@dataclass(frozen=True)
class Hook:
    program: str
    kind: str  # "tracepoint" (tp/, tp_btf/, raw_tp/ by section) | "uprobe" | "uretprobe"
    target: str  # what is hooked, as a human reads it
    function: str = ""  # uprobes: the symbol
    fallback: str = ""  # a raw_tp program for the same tracepoint, for kernels without tp_btf

    def name(self, libc: str, use_fallback: bool = False) -> str:
        if use_fallback and self.fallback:
            return self.target.replace("tp_btf/", "raw_tp/")
        return f"{self.kind}:{libc}:{self.function}" if self.function else self.target


@dataclass(frozen=True)
class Signal:
    name: str
    struct: str
    hooks: tuple[Hook, ...]
    to_columns: Callable[[np.ndarray], dict]
    settings: Callable[[dict], dict[str, int]] = lambda capture_cfg: {}  # config → .rodata
    hist: bool = False  # also keeps per-slice histograms in the kernel (bpf/hist.bpf.h)

    @property
    def object_path(self) -> Path:
        return OBJECT_DIR / f"{self.name}.bpf.o"

    @property
    def has_fallback(self) -> bool:
        return any(h.fallback for h in self.hooks)

    def hook_names(self, libc: str = LIBC, use_fallback: bool = False) -> list[str]:
        return [h.name(libc, use_fallback) for h in self.hooks]


def _header_columns(r: np.ndarray) -> dict:
    return {
        "pid": r["pid"].astype(np.int32),
        "tid": r["tid"].astype(np.int32),
        "comm": S.c_strings(r["comm"]),
        "cgroup_id": r["cgroup_id"],
    }


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
    return {**_header_columns(r), "value_ns": r["latency_ns"].astype(np.int64),
            "detail": S.c_strings(r["name"]), "errno": r["ret"]}


def _runqueue_columns(r: np.ndarray) -> dict:
    where = np.empty(len(r), dtype=[("cpu", "<u4"), ("prev", "S16")])
    where["cpu"], where["prev"] = r["cpu"], r["prev_comm"]
    return {**_header_columns(r), "value_ns": r["delay_ns"].astype(np.int64),
            "detail": S.strings_by_unique(
                where, lambda w: f"cpu={int(w['cpu'])} after={bytes(w['prev']).decode('utf-8', 'replace')}")}


def _slice_settings(c: dict) -> dict[str, int]:
    return {"slice_ns": c["hist_slice_ms"] * 1_000_000}


def _sched_hooks(names: tuple[str, ...]) -> tuple[Hook, ...]:
    return tuple(Hook(n, "tracepoint", f"tp_btf/{n}", fallback=f"{n}_raw") for n in names)


def _retransmit_columns(r: np.ndarray) -> dict:
    return {**_header_columns(r), **_tuple_columns(r), "detail": S.tcp_state_names(r["state"])}


def _connect_columns(r: np.ndarray) -> dict:
    return {**_header_columns(r), **_tuple_columns(r), "value_ns": r["latency_ns"].astype(np.int64),
            "detail": S.tcp_state_names(r["new_state"]), "errno": r["err"]}


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal(
            name="dns",
            struct="dns_event",
            hooks=(
                Hook("getaddrinfo_enter", "uprobe", "uprobe:libc:getaddrinfo", "getaddrinfo"),
                Hook("getaddrinfo_exit", "uretprobe", "uretprobe:libc:getaddrinfo", "getaddrinfo"),
            ),
            to_columns=_dns_columns,
            settings=lambda c: {"min_latency_ns": c["dns_min_latency_ns"]},
        ),
        Signal(
            name="retransmit",
            struct="retransmit_event",
            hooks=(Hook("tcp_retransmit_skb", "tracepoint", "tp_btf/tcp_retransmit_skb",
                         fallback="tcp_retransmit_skb_raw"),),
            to_columns=_retransmit_columns,
        ),
        Signal(
            name="connect",
            struct="connect_event",
            hooks=(Hook("inet_sock_set_state", "tracepoint", "tp_btf/inet_sock_set_state",
                         fallback="inet_sock_set_state_raw"),),
            to_columns=_connect_columns,
        ),
        Signal(
            name="runqueue",
            struct="runqueue_event",
            hooks=_sched_hooks(("sched_wakeup", "sched_wakeup_new", "sched_switch")),
            to_columns=_runqueue_columns,
            settings=lambda c: {**_slice_settings(c), "min_delay_ns": c["runqueue_min_delay_ns"]},
            hist=True,
        ),
        Signal(
            name="cpu_steal",
            struct="cpu_steal_event",
            hooks=_sched_hooks(("sched_switch",)),
            to_columns=lambda r: {**_header_columns(r), "value_ns": r["steal_ns"].astype(np.int64)},
            settings=_slice_settings,
            hist=True,
        ),
    )
}


# Not a signal: a synthetic event per getppid() of one process, for the drain
# benchmark and the ring-buffer tests (bpf/flood.bpf.c).
FLOOD = Signal(
    name="flood",
    struct="flood_event",
    hooks=(Hook("flood", "tracepoint", "tp/syscalls/sys_enter_getppid"),),
    to_columns=lambda r: {**_header_columns(r), "value_ns": r["seq"].astype(np.int64)},
)
