"""SQL lives in sql/<name>.sql, one query per file, loaded by name."""

from __future__ import annotations

import re
from functools import cache

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
