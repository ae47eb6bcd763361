"""manifest.json: what a run is, how it was recorded, and whether it is whole."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path

MANIFEST = "manifest.json"
REPO_ROOT = Path(__file__).resolve().parents[1]


def git_sha() -> str | None:
    """The checkout's commit; None for an installed wheel (no checkout around it)."""
    if not (REPO_ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def host_info() -> dict:
    u = platform.uname()
    return {"hostname": socket.gethostname(), "kernel": u.release, "machine": u.machine,
            "cpus": os.cpu_count()}


def tool_version() -> str:
    return version("llm-slo-ebpf-toolkit")


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """Atomic: a reader sees the previous manifest or the new one, never half."""
    tmp = run_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / MANIFEST)


def read_manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / MANIFEST).read_text())
