"""The first look at a run: what the recorder saw, per signal."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from analyze.session import open_runs
from runfmt import queries


def events_by_signal(*paths: Path) -> pa.Table:
    runs = open_runs(list(paths))
    try:
        return queries.run(runs.con, "events_by_signal")
    finally:
        runs.con.close()
