"""What a release directory (DIST) holds, how its files are named and hashed, and the
git facts a release records. Shared by the assemble and verify steps."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import json
import re
import subprocess
from pathlib import Path

DIST_NAME = "llm-slo-ebpf-toolkit"  # the distribution's name
FILE_PREFIX = "llm_slo_ebpf_toolkit"  # its file names (wheel, sdist, SBOM, provenance)
PUBKEY_NAME = "release-ed25519.pub.pem"
SUMS_NAME = "SHA256SUMS"
BENCHMARKS_NAME = "BENCHMARKS.md"

# every kind of file a release directory holds, by file-name pattern; anything else
# in DIST is refused by `make release` and reported by `make verify-release`
KINDS = {
    "wheel": f"{FILE_PREFIX}-*.whl",
    "sdist": f"{FILE_PREFIX}-*.tar.gz",
    "sbom": f"{FILE_PREFIX}-*.cdx.json",
    "provenance": f"{FILE_PREFIX}-*.intoto.jsonl",
    "benchmarks": BENCHMARKS_NAME,
    "public key": PUBKEY_NAME,
    "checksums": SUMS_NAME,
}


class ReleaseError(Exception):
    """One failure, printed as one line: the artifact it concerns and what failed."""

    def __init__(self, artifact: str, what: str) -> None:
        super().__init__(f"{artifact}: {what}")
        self.artifact = artifact
        self.what = what


def kind_of(name: str) -> str | None:
    return next((k for k, pattern in KINDS.items() if fnmatch.fnmatchcase(name, pattern)), None)


def sbom_name(version: str) -> str:
    return f"{FILE_PREFIX}-{version}.cdx.json"


def envelope_name(version: str) -> str:
    return f"{FILE_PREFIX}-{version}.intoto.jsonl"


def wheel_version(wheel: Path) -> str:
    """The version field of a wheel's file name (PEP 427: name-version-...)."""
    return wheel.name.split("-")[1]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sums_text(digests: dict[str, str]) -> str:
    """SHA256SUMS in the format of `sha256sum` (so `sha256sum -c SHA256SUMS` checks it)."""
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def parse_sums(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not name:
            raise ValueError(f"line {n} is not '<sha256>  <file>'")
        if name in out:
            raise ValueError(f"line {n} names {name} a second time")
        out[name] = digest
    return out


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError("git", f"`git {' '.join(args)}` failed in {root}: {done.stderr.strip()}")
    return done.stdout


def git_facts(root: Path, exclude: tuple[Path, ...] = ()) -> dict:
    """Commit, dirty flag and source URI of the checkout at `root`. Paths under `exclude`
    (DIST, BENCH_DIR: made by the release itself) do not make the tree dirty."""
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    commit = _git(root, "rev-parse", "HEAD").strip()
    skip = []
    for p in exclude:
        try:
            skip.append(p.resolve().relative_to(top.resolve()).as_posix().rstrip("/") + "/")
        except ValueError:
            pass  # outside the checkout: cannot show in git status
    changed = []
    for line in _git(root, "status", "--porcelain").splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        if not any((path.rstrip("/") + "/").startswith(s) for s in skip):
            changed.append(path)
    origin = subprocess.run(["git", "-C", str(root), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True).stdout.strip()
    scp = re.fullmatch(r"([\w.-]+@)?([\w.-]+):(?!//)(.+)", origin)  # git@host:owner/repo.git
    repo = f"ssh://{scp[1] or ''}{scp[2]}/{scp[3]}" if scp else origin or f"file://{top}"
    if not repo.startswith("git+"):
        repo = f"git+{repo}"
    return {"repository": repo, "commit": commit, "dirty": bool(changed), "changed_paths": len(changed)}
