"""Drains the in-kernel per-slice histograms (bpf/hist.bpf.h) slice by slice."""

from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa

from capture import _libbpf as L
from capture import columns as S
from capture.bpfobj import BpfObject
from runfmt import schema

TASK, CPU = 1, 2  # key kinds, as bpf/hist.h numbers them


class HistReader:
    """Reads and deletes the `hists` entries of finished slices."""

    def __init__(self, obj: BpfObject) -> None:
        self.fd = obj.map_fd("hists")
        self.key_dtype = obj.struct_dtype("hist_key")
        self.value_dtype = obj.struct_dtype("hist")
        self._lib = L.lib()

    def _keys(self) -> np.ndarray:
        keys = []
        prev = None
        cur = ctypes.create_string_buffer(self.key_dtype.itemsize)
        while self._lib.bpf_map_get_next_key(self.fd, prev, cur) == 0:
            keys.append(cur.raw)
            prev = ctypes.create_string_buffer(cur.raw, self.key_dtype.itemsize)
        return np.frombuffer(b"".join(keys), dtype=self.key_dtype)

    def drain(self, before_slice: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, values) of every slice < before_slice (all when None), removed from the map."""
        keys = self._keys()
        if before_slice is not None:
            keys = keys[keys["slice"] < before_slice]
        values = np.zeros(len(keys), dtype=self.value_dtype)
        kept = np.ones(len(keys), dtype=bool)
        value_buf = ctypes.create_string_buffer(self.value_dtype.itemsize)
        for i in range(len(keys)):
            key_buf = ctypes.create_string_buffer(keys[i].tobytes(), self.key_dtype.itemsize)
            if self._lib.bpf_map_lookup_and_delete_elem(self.fd, key_buf, value_buf) != 0:
                kept[i] = False  # gone meanwhile
                continue
            values[i] = np.frombuffer(value_buf.raw, dtype=self.value_dtype)[0]
        return keys[kept], values[kept]


def _merge(values: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with equal `group` (a structured array, one row per key) summed into one:
    count, sum and slots added, max the largest. Returns (unique groups, merged values)."""
    uniq, inverse = np.unique(group, return_inverse=True)
    merged = np.zeros(len(uniq), dtype=values.dtype)
    for field in ("count", "sum_ns", "slots"):
        np.add.at(merged[field], inverse, values[field])
    np.maximum.at(merged["max_ns"], inverse, values["max_ns"])
    return uniq, merged


def rollup(keys: np.ndarray, values: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(kind, groups with fields slice and id, values) per kernel_hist kind: the cpu keys as
    they are; the task keys (a process in a cgroup, bpf/hist.h) summed by process for the pid
    rows and by cgroup for the cgroup rows, so that a sample costs the kernel one update."""
    by = np.dtype([("slice", "<u8"), ("id", "<u8")])
    out = []
    for kind, key_kind, id_field in (("pid", TASK, "id"), ("cgroup", TASK, "cgroup"), ("cpu", CPU, "id")):
        pick = keys["kind"] == key_kind
        if not pick.any():
            continue
        group = np.empty(int(pick.sum()), dtype=by)
        group["slice"], group["id"] = keys["slice"][pick], keys[id_field][pick]
        out.append((kind, *_merge(values[pick], group)))
    return out


def hist_table(signal: str, keys: np.ndarray, values: np.ndarray, *, slice_ns: int,
               offset_ns: int, node: str) -> pa.Table:
    """kernel_hist rows: one per (slice, kind, id), kind pid, cgroup or cpu."""
    parts = rollup(keys, values)
    if not parts:
        return schema.KERNEL_HIST.empty_table()
    kind = np.concatenate([np.full(len(g), k) for k, g, _ in parts])
    groups = np.concatenate([g for _, g, _ in parts])
    values = np.concatenate([v for _, _, v in parts])
    n, ids = len(kind), groups["id"]
    slots = values["slots"].astype(np.int64)
    return pa.Table.from_arrays([
        pa.array(groups["slice"].astype(np.int64) * slice_ns + offset_ns, pa.int64()),
        pa.array(np.full(n, slice_ns, np.int64)),
        S.constant(signal, n, pa.string()),
        pa.array(kind, pa.string()),
        pa.array(ids.astype(np.int32), pa.int32(), mask=kind != "pid"),
        pa.array(ids, pa.uint64(), mask=kind != "cgroup"),
        pa.array(ids.astype(np.int32), pa.int32(), mask=kind != "cpu"),
        pa.nulls(n, pa.string()), pa.nulls(n, pa.string()), pa.nulls(n, pa.string()),
        S.constant(node, n, pa.string()),
        pa.array(values["count"].astype(np.int64)),
        pa.array(values["sum_ns"].astype(np.int64)),
        pa.array(values["max_ns"].astype(np.int64)),
        pa.FixedSizeListArray.from_arrays(pa.array(slots.ravel()), slots.shape[1]).cast(pa.list_(pa.int64())),
    ], schema=schema.KERNEL_HIST)
