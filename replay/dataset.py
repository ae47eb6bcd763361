"""The committed labelled dataset: lab runs compacted to one zstd-19 part per
table, so a smoke set of every scenario fits in about 20 MB of git.

    python -m replay.dataset compact RUNS_ROOT datasets/labeled [--reps 2] [--mixed-reps 1]

Rows and values are kept as recorded; only the layout changes: each table is
sorted (spans by trace, so a trace's ids repeat next to each other), time
columns are delta-encoded, floats byte-stream-split, and unique ids are stored
plainly instead of in a dictionary that would only repeat them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from runfmt.manifest import MANIFEST

# table → the columns it is sorted by; sorted times delta-encode well
TABLES = {"kernel_events": ("ts_ns",), "kernel_hist": ("ts_ns",), "spans": ("trace_id", "start_ns"),
          "span_resources": ("resource_id",), "requests": ("scheduled_ns",), "resources": ("ts_ns",)}
UNIQUE_IDS = {"span_id", "parent_span_id", "request_id"}  # a dictionary of them only repeats them


def _write(table: pa.Table, path: Path, sort_keys: tuple[str, ...]) -> None:
    table = table.sort_by([(k, "ascending") for k in sort_keys])
    delta = [f.name for f in table.schema if pa.types.is_integer(f.type) and f.name.endswith("_ns")]
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    plain = set(delta) | set(floats) | UNIQUE_IDS
    pq.write_table(table, path, compression="zstd", compression_level=19,
                   use_dictionary=[n for n in table.column_names if n not in plain],
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
