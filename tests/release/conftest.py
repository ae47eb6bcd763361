"""One release, built once per session with the real make targets into a temporary DIST.

make release-key (a throw-away key), make release-bench on small real inputs (the
correlation benchmark at 20k generated events; sloan score, repro and compare over a
copy of two scenarios of the committed labelled set, the compare one under a second
tag too), then make release VERSION=v<project version>, which runs make wheel. The
overhead benchmark (root, eBPF, minutes) is left out: BENCHMARKS.md must then say it
was not measured. About a minute, most of it pip (the SBOM's venv) and the build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from release.build import project_version
from release.signing import public_key_path
from tests.release.release_helpers import head, make, small_runs


@dataclass(frozen=True)
class Release:
    dist: Path
    key: Path
    pub: Path
    bench_dir: Path
    version: str
    commits: frozenset[str]  # HEAD before and after the build (others may commit meanwhile)


@pytest.fixture(scope="session")
def release(tmp_path_factory) -> Release:
    base = tmp_path_factory.mktemp("release")
    key = base / "keys" / "release-ed25519.pem"
    make("release-key", f"RELEASE_KEY={key}")
    one, two = small_runs(base / "runs")
    bench = base / "bench"
    make("release-bench", "RELEASE_BENCHES=correlate_throughput score repro compare", f"BENCH_DIR={bench}",
         "BENCH_CORRELATE_ARGS=--sizes 20k --threads 1", f"BENCH_RUNS={one}", f"BENCH_COMPARE_RUNS={two}",
         "BENCH_SCORE_ARGS=--seed 42 --resamples 1000", "BENCH_BASE=main", "BENCH_CANDIDATE=copy",
         "BENCH_COMPARE_ARGS=--resamples 1000")
    version = f"v{project_version()}"
    dist = base / "dist"
    before = head()
    make("release", f"VERSION={version}", f"DIST={dist}", f"RELEASE_KEY={key}", f"BENCH_DIR={bench}")
    return Release(dist, key, public_key_path(key), bench, version, frozenset({before, head()}))
