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

TABLE_DIRS = ("kernel_events", "kernel_hist", "spans", "requests", "resources")


def compact_run(src: Path, dst: Path) -> int:
    """Copies one run directory with each table in a single part; returns bytes written."""
    dst.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / MANIFEST).read_text())
    files = {}
    for table in TABLE_DIRS:
        parts = sorted((src / table).glob("part-*.parquet"))
        if not parts:
            continue
        (dst / table).mkdir(exist_ok=True)
        data = pa.concat_tables(pq.read_table(p) for p in parts)
        pq.write_table(data, dst / table / "part-00000.parquet", compression="zstd", compression_level=19)
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
