"""SQL lives in sql/<name>.sql, one query per file, loaded by name."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from runfmt import SQL_DIR
from runfmt.errors import SloError

_NAME = re.compile(r"^[a-z0-9_]+$")


def available() -> list[str]:
    return sorted(p.stem for p in SQL_DIR.glob("*.sql"))


@cache
def load(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not _NAME.match(name) or not path.is_file():
        raise SloError(f"no query named {name!r} in {SQL_DIR}", f"known queries: {', '.join(available())}")
    return path.read_text()


def run(con, name: str, params: dict | None = None):
    """Runs a named query with DuckDB-bound parameters; returns an Arrow table."""
    return con.sql(load(name), params=params or {}).to_arrow_table()


def events_by_signal(run_dir: Path):
    """The first look at a fresh run: its kernel events per signal (sql/events_by_signal.sql)."""
    import duckdb

    from runfmt.schema import KERNEL_EVENTS

    parts = sorted(str(p) for p in (run_dir / "kernel_events").glob("part-*.parquet"))
    con = duckdb.connect()
    try:
        events = con.read_parquet(parts) if parts else con.from_arrow(KERNEL_EVENTS.empty_table())
        events.create_view("kernel_events")
        return run(con, "events_by_signal")
    finally:
        con.close()
