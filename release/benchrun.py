"""`make release-bench`: run one benchmark command and record how its JSON was made.

    python -m release bench-run --out build/bench/repro.json --runs datasets/labeled \
        -- .venv/bin/sloan repro --runs datasets/labeled --json build/bench/repro.json

writes the command's JSON to --out (its stdout with --stdout; otherwise the command
writes --out itself) and NAME.meta.json beside it: the command, its exit code, start
and end (UTC), the git commit and dirty flag of this checkout, the machine, and for
analyses of recorded runs (--runs) the hosts and git commits the runs were recorded
at (from their manifest.json). A failed command leaves neither file behind.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from release.artifacts import ReleaseError, dump_json, git_facts, utc_now

ROOT = Path(__file__).resolve().parents[1]


def meta_path(out: Path) -> Path:
    return out.with_name(f"{out.name.removesuffix('.json')}.meta.json")


def host_facts() -> dict:
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                  if ln.startswith("MemTotal:"))
        mem = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {"node": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": model,
            "memory_gib": mem, "python": platform.python_version()}


def runs_facts(paths: list[Path]) -> dict:
    """Where and at which commit the run directories below `paths` were recorded."""
    hosts: dict[str, int] = {}
    shas: dict[str, int] = {}
    n = 0
    for root in paths:
        found = [root / "manifest.json"] if (root / "manifest.json").is_file() else sorted(root.rglob("manifest.json"))
        for manifest in found:
            try:
                m = json.loads(manifest.read_text())
            except (OSError, ValueError):
                continue
            n += 1
            h = m.get("host") or {}
            name = h.get("hostname") or m.get("node") or "?"
            host = f"{name} (kernel {h.get('kernel', '?')}, {h.get('cpus', '?')} CPUs)"
            hosts[host] = hosts.get(host, 0) + 1
            sha = m.get("git_sha") or "not recorded"
            shas[sha] = shas.get(sha, 0) + 1
    return {"paths": [str(p) for p in paths], "runs": n, "hosts": hosts, "git_shas": shas}


def run(out: Path, cmd: list[str], *, stdout: bool, runs: list[Path]) -> int:
    if not cmd:
        raise ReleaseError("bench-run", "no command given after --")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = meta_path(out)
    for stale in (out, meta):
        stale.unlink(missing_ok=True)
    git = git_facts(ROOT, exclude=(out.parent,))
    started = utc_now()
    print(f"release-bench: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    if stdout:
        with open(out, "wb") as fh:
            code = subprocess.run(cmd, stdout=fh).returncode
    else:
        code = subprocess.run(cmd).returncode
    finished = utc_now()
    if code != 0 or not out.is_file():
        out.unlink(missing_ok=True)
        why = f"exited {code}" if code != 0 else f"wrote no {out}"
        raise ReleaseError(out.name, f"`{shlex.join(cmd)}` {why}: not measured")
    try:
        json.loads(out.read_text())
    except ValueError as exc:
        out.unlink()
        raise ReleaseError(out.name, f"`{shlex.join(cmd)}` wrote no JSON ({exc}): not measured") from None
    meta.write_text(dump_json({
        "output": out.name, "command": shlex.join(cmd), "exit_code": code, "started": started,
        "finished": finished, "git": git, "host": host_facts(),
        "runs": runs_facts(runs) if runs else None,
    }))
    print(f"release-bench: wrote {out} and {meta.name}", file=sys.stderr)
    return 0
