#!/usr/bin/env python3
"""The I/O floor of `sloan correlate` on GENERATED data: how long it takes only to
read a run's kernel events and write them back, one zstd Parquet row per event
with the three columns correlation adds, as the outputs have them. No join, no
tier: whatever `sloan correlate` does costs at least this on the machine.

It answers whether a target is reachable here at all. For example, being 10x
faster than a peer that takes P seconds needs the whole correlation, this floor
included, under P / 10 (README, "Correlation").

The run is made by bench/correlate_throughput.py's generator (seed 42, spans =
events / 10), in a temporary folder removed at the end.

Usage: .venv/bin/python bench/io_floor.py [--events 10M] [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.correlate_throughput import generate_run, parse_size  # noqa: E402

# the columns correlation adds to each event row (analyze/correlate.py's outputs)
ADDED = "NULL::VARCHAR AS trace_id, NULL::VARCHAR AS span_id, 'trace_id'::VARCHAR AS tier, 1.0 AS confidence"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--events", type=parse_size, default=10_000_000, help="kernel events (default 10M)")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes; the median is printed (default 3)")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: every CPU)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="io-floor-") as tmp:
        run = Path(tmp) / "run"
        print(f"generating {a.events:,} events (GENERATED, seed 42)", file=sys.stderr)
        generate_run(run, a.events, max(1, a.events // 10))
        con = duckdb.connect()
        if a.threads:
            con.execute(f"SET threads = {a.threads}")
        events = f"read_parquet('{run}/kernel_events/*.parquet')"
        reads, copies = [], []
        for i in range(a.repeat):
            t = time.perf_counter()
            con.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {events}").fetchall()
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            con.execute(f"COPY (SELECT *, {ADDED} FROM {events}) TO '{tmp}/out-{i}.parquet' "
                        "(FORMAT parquet, COMPRESSION zstd)")
            copies.append(time.perf_counter() - t)
        print(f"{a.events:,} events, median of {a.repeat}: read every column {statistics.median(reads):.2f} s; "
              f"read them and write one zstd Parquet row per event {statistics.median(copies):.2f} s "
              f"(passes: {', '.join(f'{c:.2f}' for c in copies)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
