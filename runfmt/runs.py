"""Run ids and run directory names: <runs>/tag=<tag>/scenario=<scenario>/run=<id>."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

from runfmt.errors import SloError

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def run_dir_for(runs_root: Path, tag: str, scenario: str, run_id: str) -> Path:
    for what, value in (("tag", tag), ("scenario", scenario), ("run id", run_id)):
        if not _NAME_OK.match(value):
            raise SloError(f"{what} {value!r} is not usable in a run directory name",
                           "use letters, digits, '.', '_', '+' and '-' (at most 64)")
    return runs_root / f"tag={tag}" / f"scenario={scenario}" / f"run={run_id}"
