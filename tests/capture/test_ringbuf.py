"""The ring-buffer drain against a real ring: no loss, no duplicates, drops counted."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
from conftest import OBJECT_DIR

from capture import columns as S
from capture.bpfobj import BpfObject
from capture.probe import LoadedSignal
from capture.ringbuf import record_stride
from capture.signals import FLOOD, SIGNALS
from runfmt import schema


def _flood(ring_bytes: int) -> LoadedSignal:
    return LoadedSignal(FLOOD, ring_bytes=ring_bytes, wakeup_bytes=ring_bytes // 4,
                        settings={"target_pid": os.getpid()})


@pytest.mark.kernel
def test_every_event_is_read_once_in_order_across_wraparounds():
    probe = _flood(1 << 16)  # 64 KiB: 630 records, so 20,000 events wrap it many times
    try:
        seqs = []
        for _ in range(200):
            for _ in range(100):
                os.getppid()
            seqs.append(probe.read()["seq"])
        seqs.append(probe.read()["seq"])
        dropped = probe.dropped()
    finally:
        probe.close()
    seq = np.concatenate(seqs)
    assert dropped == 0
    assert len(seq) == 20_000
    assert np.array_equal(seq, np.arange(20_000))


@pytest.mark.kernel
def test_a_full_ring_counts_every_lost_event():
    probe = _flood(1 << 12)  # one page: 39 records of 96 bytes + 8 of header
    try:
        for _ in range(5_000):
            os.getppid()
        read = len(probe.read())
        dropped = probe.dropped()
    finally:
        probe.close()
    assert read == 4096 // record_stride(FLOOD_SIZE)
    assert read + dropped == 5_000


FLOOD_SIZE = 96  # bpf/flood.h: header 40 + seq 8 + payload 48


@pytest.mark.skipif(not any(OBJECT_DIR.glob("*.bpf.o")), reason="probes not built (make bpf)")
@pytest.mark.parametrize("signal", [*SIGNALS.values(), FLOOD], ids=lambda s: s.name)
def test_python_view_follows_the_c_header(signal):
    """The dtype comes from BTF; the decoder must still find every field it reads."""
    with BpfObject(signal.object_path) as obj:
        dtype = obj.struct_dtype(signal.struct)
    assert {"ts_ns", "pid", "tid", "cgroup_id", "comm"} <= set(dtype.names)
    if signal is FLOOD:
        assert dtype.itemsize == FLOOD_SIZE
    records = np.zeros(3, dtype=dtype)
    table = S.kernel_events_table(
        {**signal.to_columns(records), "ts_ns": records["ts_ns"].astype(np.int64),
         "signal": S.constant(signal.name, 3, pa.string())}, 3)
    assert table.schema == schema.KERNEL_EVENTS
    assert table.num_rows == 3


@pytest.mark.kernel
def test_rate_limit_is_enforced_in_the_kernel():
    probe = LoadedSignal(FLOOD, ring_bytes=1 << 22, wakeup_bytes=1 << 20,
                         settings={"target_pid": os.getpid(), "rate_limit": 1000})
    try:
        for _ in range(20_000):
            os.getppid()
        read, left_out = len(probe.read()), probe.sampled_out()
    finally:
        probe.close()
    assert read + left_out == 20_000
    assert 1000 <= read <= 2000  # 1000 per ~1.07 s window; the loop may straddle two


@pytest.mark.kernel
def test_load_shedding_sampling_keeps_about_one_in_two():
    probe = _flood(1 << 22)
    try:
        probe.tune(sample_shift=1)
        for _ in range(20_000):
            os.getppid()
        read, left_out = len(probe.read()), probe.sampled_out()
    finally:
        probe.close()
    assert read + left_out == 20_000
    assert 9_000 <= read <= 11_000
