"""The committed labelled dataset: lab runs compacted to one zstd-19 part per
table, so a smoke set of every scenario fits in a few MB of git.

    python -m replay.dataset compact RUNS_ROOT datasets/labeled
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from capture.manifest import MANIFEST

# table → the time column it is sorted by; sorted times delta-encode well
TABLES = {"kernel_events": "ts_ns", "kernel_hist": "ts_ns", "spans": "start_ns",
          "requests": "scheduled_ns", "resources": "ts_ns"}


def _write(table: pa.Table, path: Path, sort_key: str) -> None:
    table = table.sort_by(sort_key)
    delta = [f.name for f in table.schema if pa.types.is_integer(f.type) and f.name.endswith("_ns")]
    pq.write_table(table, path, compression="zstd", compression_level=19,
                   use_dictionary=[n for n in table.column_names if n not in delta],
                   column_encoding={n: "DELTA_BINARY_PACKED" for n in delta})


def compact_run(src: Path, dst: Path) -> int:
    """Copies one run directory with each table in a single part; returns bytes written."""
    dst.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / MANIFEST).read_text())
    files = {}
    for table, sort_key in TABLES.items():
        parts = sorted((src / table).glob("part-*.parquet"))
        if not parts:
            continue
        (dst / table).mkdir(exist_ok=True)
        _write(pa.concat_tables(pq.read_table(p) for p in parts), dst / table / "part-00000.parquet", sort_key)
        files[table] = ["part-00000.parquet"]
    manifest["files"] = files
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if (src / "labels.parquet").exists():
        shutil.copy2(src / "labels.parquet", dst / "labels.parquet")
    return sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())


def compact(root: Path, out: Path) -> tuple[int, int]:
    """Every run under `root` (hive layout) into `out`, keeping tag=/scenario=/run=."""
    runs = sorted(m.parent for m in root.rglob(MANIFEST))
    total = sum(compact_run(run, out / run.relative_to(root)) for run in runs)
    return len(runs), total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compact", help="compact runs into the dataset folder")
    c.add_argument("root", type=Path)
    c.add_argument("out", type=Path)
    a = ap.parse_args()
    n, size = compact(a.root, a.out)
    print(f"{n} runs, {size / 1e6:.1f} MB in {a.out}")


if __name__ == "__main__":
    main()
