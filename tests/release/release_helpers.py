"""Helpers of the release tests: make, verify-release, small real run directories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABELED = ROOT / "datasets" / "labeled" / "tag=main"
SCENARIOS = ("baseline", "dns_latency")


def make(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True,
                          text=True, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"make {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def head() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def verify(dist: Path, *, key: Path | None = None, pub: Path | None = None) -> subprocess.CompletedProcess:
    trust = f"RELEASE_PUB={pub}" if pub else f"RELEASE_KEY={key}"
    return make("verify-release", f"DIST={dist}", trust, check=False)


def errors(done: subprocess.CompletedProcess) -> list[str]:
    """verify-release's own lines (make adds its 'Error 1' line after them)."""
    return [ln for ln in done.stderr.splitlines() if ln.startswith("verify-release: ")]


def small_runs(base: Path) -> tuple[Path, Path]:
    """Real recorded runs: two scenarios of the labelled set (tag main), and the same runs
    once more under tag copy, so sloan compare has two tags (an A/A comparison)."""
    one, two = base / "one", base / "two"
    for scenario in SCENARIOS:
        src = LABELED / f"scenario={scenario}"
        shutil.copytree(src, one / "tag=main" / src.name)
        shutil.copytree(src, two / "tag=main" / src.name)
        shutil.copytree(src, two / "tag=copy" / src.name)
    for manifest in (two / "tag=copy").rglob("manifest.json"):
        manifest.write_text(manifest.read_text().replace('"tag": "main"', '"tag": "copy"'))
    return one, two
