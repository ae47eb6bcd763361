#!/usr/bin/env python3
"""Drain benchmark: how many events/s the recorder's ring-buffer drain sustains
with zero drops, and the consumer's CPU time per event.

A generator process calls getppid() in a tight loop; bpf/flood.bpf.c emits one
104-byte event per call into the ring (no wakeup per event, a wakeup past the
fill threshold). This process drains it exactly as `slocap record` does
(edge-triggered epoll with a timeout, mmap + numpy batch parse) and measures
its own CPU time. With --pipeline it also converts every batch to kernel_events
columns and writes Parquet parts, as the recorder does.

Usage: .venv/bin/python bench/drain.py [--seconds 5] [--pipeline] [--ring-mb 16]
Needs root (loads a BPF program).
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from capture import columns as S
from capture.probe import LoadedSignal  # noqa: E402
from capture.signals import FLOOD  # noqa: E402
from runfmt import schema  # noqa: E402
from runfmt.writer import PartWriter  # noqa: E402

GENERATOR = """
import os, sys, time
sys.stdin.readline()                      # wait until the probe is attached
end = time.monotonic() + float(sys.argv[1])
n = 0
getppid = os.getppid
while time.monotonic() < end:
    for _ in range(1000):
        getppid()
    n += 1000
print(n, flush=True)
"""


def convert(raw: list[np.ndarray], writer: PartWriter) -> None:
    if not raw:
        return
    records = np.concatenate(raw)
    raw.clear()
    n = len(records)
    cols = FLOOD.to_columns(records)
    cols["ts_ns"] = records["ts_ns"].astype(np.int64)
    cols["signal"] = S.constant("flood", n, pa.string())
    writer.add(S.kernel_events_table(cols, n))
    writer.flush()


def run(seconds: float, pipeline: bool, ring_mb: int, wakeup_pct: int) -> dict:
    ring = ring_mb << 20
    gen = subprocess.Popen([sys.executable, "-c", GENERATOR, str(seconds)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    probe = LoadedSignal(FLOOD, ring_bytes=ring, wakeup_bytes=ring * wakeup_pct // 100,
                         settings={"target_pid": gen.pid})
    poller = select.epoll()
    poller.register(probe.ring_fd, select.EPOLLIN | select.EPOLLET)
    tmp = tempfile.TemporaryDirectory()
    writer = PartWriter(Path(tmp.name), schema.KERNEL_EVENTS, max_rows=200_000, max_seconds=10)
    raw: list[np.ndarray] = []
    read = 0
    last_seq = -1
    gaps = 0
    cpu0, wall0 = time.process_time(), time.monotonic()
    gen.stdin.write("go\n")
    gen.stdin.flush()
    while True:
        poller.poll(0.1)
        records = probe.read()
        if len(records):
            seq = records["seq"]
            gaps += int(np.count_nonzero(np.diff(seq) != 1)) + int(seq[0] != last_seq + 1)
            last_seq = int(seq[-1])
            read += len(records)
            if pipeline:  # as the recorder: raw batches, converted once per part
                raw.append(records)
                if sum(len(b) for b in raw) >= writer.max_rows:
                    convert(raw, writer)
        elif gen.poll() is not None:
            break
    if pipeline:
        convert(raw, writer)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    calls = int(gen.stdout.read().strip())
    dropped = probe.dropped()
    probe.close()
    tmp.cleanup()
    return {
        "mode": "drain+convert+parquet" if pipeline else "drain+parse",
        "events": read, "generator_calls": calls, "dropped": dropped, "seq_gaps": gaps,
        "wall_s": wall, "events_per_s": read / wall, "consumer_cpu_us_per_event": cpu * 1e6 / max(read, 1),
        "consumer_cpu_pct_of_one_core": 100 * cpu / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--pipeline", action="store_true", help="also convert and write Parquet")
    ap.add_argument("--ring-mb", type=int, default=16)
    ap.add_argument("--wakeup-pct", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/drain.py loads a BPF program: run it as root")
    for i in range(a.repeat):
        r = run(a.seconds, a.pipeline, a.ring_mb, a.wakeup_pct)
        print(f"[{i + 1}/{a.repeat}] {r['mode']}: {r['events_per_s']:,.0f} events/s sustained over {r['wall_s']:.1f}s, "
              f"{r['events']:,} events, {r['dropped']:,} dropped, {r['seq_gaps']} sequence gaps, "
              f"consumer CPU {r['consumer_cpu_us_per_event']:.3f} µs/event "
              f"({r['consumer_cpu_pct_of_one_core']:.1f}% of one core)")


if __name__ == "__main__":
    main()
