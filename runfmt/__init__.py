"""The run format shared by the recorder, the analyzer and the lab.

Its package data is the SQL in sql/, the config defaults and schema in config/
and the contracts in docs/contracts/ (linked here from the repository's
top-level folders, so the same files serve a checkout and an installed wheel).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["CONFIG_DIR", "CONTRACTS_DIR", "SQL_DIR"]

# a wheel installs unpacked, so the package's files are plain paths on disk
_ROOT = Path(str(files(__name__)))
SQL_DIR = _ROOT / "sql"
CONFIG_DIR = _ROOT / "config"
CONTRACTS_DIR = _ROOT / "contracts"
