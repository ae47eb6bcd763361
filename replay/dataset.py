"""The committed labelled dataset: lab runs compacted to one zstd-19 part per
table, so a smoke set of every scenario fits in about 20 MB of git.

    python -m replay.dataset compact RUNS_ROOT datasets/labeled [--reps 2] [--mixed-reps 1]

Rows and values are kept as recorded; only the layout changes: each table is
sorted (spans by trace, so a trace's ids repeat next to each other), floats are
byte-stream-split, and a column gets a dictionary only when its values repeat
(fewer distinct values than an eighth of its rows). Other integer columns (times,
ports, thread ids) are delta-encoded and other strings (ids) stored plainly: a
dictionary of mostly distinct values only repeats them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from runfmt.manifest import MANIFEST

# table → the columns it is sorted by; sorted times delta-encode well
TABLES = {"kernel_events": ("ts_ns",), "kernel_hist": ("ts_ns",), "spans": ("trace_id", "start_ns"),
          "span_resources": ("resource_id",), "requests": ("scheduled_ns",), "resources": ("ts_ns",)}
REPEATS = 8  # a column gets a dictionary when it has fewer distinct values than rows / REPEATS


def _repeats(column: pa.ChunkedArray) -> bool:
    if pa.types.is_dictionary(column.type) or not (pa.types.is_integer(column.type) or pa.types.is_string(column.type)):
        return True  # already a dictionary, or nested: leave it to the writer's default
    return pc.count_distinct(column).as_py() * REPEATS < len(column)


def _write(table: pa.Table, path: Path, sort_keys: tuple[str, ...]) -> None:
    table = table.sort_by([(k, "ascending") for k in sort_keys])
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    dictionary = [n for n in table.column_names if n not in floats and _repeats(table.column(n))]
    delta = [f.name for f in table.schema
             if pa.types.is_integer(f.type) and f.name not in dictionary]
    pq.write_table(table, path, compression="zstd", compression_level=19, use_dictionary=dictionary,
                   column_encoding={**{n: "DELTA_BINARY_PACKED" for n in delta},
                                    **{n: "BYTE_STREAM_SPLIT" for n in floats}})


def compact_run(src: Path, dst: Path) -> int:
    """Copies one run directory with each table in a single part; returns bytes written."""
    dst.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / MANIFEST).read_text())
    files = {}
    for table, sort_keys in TABLES.items():
        parts = sorted((src / table).glob("part-*.parquet"))
        if not parts:
            continue
        (dst / table).mkdir(exist_ok=True)
        _write(pa.concat_tables(pq.read_table(p) for p in parts), dst / table / "part-00000.parquet", sort_keys)
        files[table] = ["part-00000.parquet"]
    manifest["files"] = files
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if (src / "labels.parquet").exists():
        shutil.copy2(src / "labels.parquet", dst / "labels.parquet")
    return sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())


def select_runs(root: Path, reps: int | None = None, mixed_reps: int | None = None) -> list[Path]:
    """Every run under `root` (hive layout), in order (run ids start with their
    time); only the first `reps` of each scenario and `mixed_reps` of each mixed
    one (a name with '+') when given."""
    kept, seen = [], {}
    for run in sorted(m.parent for m in root.rglob(MANIFEST)):
        scenario = run.parent.name
        limit = mixed_reps if "+" in scenario and mixed_reps is not None else reps
        seen[scenario] = seen.get(scenario, 0) + 1
        if limit is None or seen[scenario] <= limit:
            kept.append(run)
    return kept


def compact(root: Path, out: Path, reps: int | None = None, mixed_reps: int | None = None) -> tuple[int, int]:
    """The selected runs under `root` into `out`, keeping tag=/scenario=/run=."""
    runs = select_runs(root, reps, mixed_reps)
    total = sum(compact_run(run, out / run.relative_to(root)) for run in runs)
    return len(runs), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compact", help="compact runs into the dataset folder")
    c.add_argument("root", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--reps", type=int, default=None, metavar="N",
                   help="keep only the first N runs of each scenario (default: all)")
    c.add_argument("--mixed-reps", type=int, default=None, metavar="N",
                   help="keep only the first N runs of each mixed scenario (default: as --reps)")
    a = ap.parse_args()
    n, size = compact(a.root, a.out, a.reps, a.mixed_reps)
    print(f"{n} runs, {size / 1e6:.1f} MB in {a.out}")


if __name__ == "__main__":
    main()
