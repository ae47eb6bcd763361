"""manifest.json: what a run is, how it was recorded, and whether it is whole."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import jsonschema
from jsonschema.exceptions import best_match

from runfmt.errors import DataError

MANIFEST = "manifest.json"
# held (flock, exclusive) by the recorder while it writes the run; the kernel releases it
# when the recorder dies, even by kill -9, so "state: recording" without the lock means cut
RECORDING_LOCK = ".recording.lock"
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


def hold_recording(run_dir: Path) -> int:
    """Takes the run's recording lock; returns its fd, to close when the recording ends."""
    fd = os.open(Path(run_dir) / RECORDING_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def recorder_alive(run_dir: Path) -> bool:
    """True while a recorder holds the run's recording lock."""
    try:
        fd = os.open(Path(run_dir) / RECORDING_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def run_state(run_dir: Path, manifest: dict) -> str:
    """finished, recording (a recorder is writing it now) or cut (it says recording, but
    its recorder is gone: killed, or the machine stopped). `slocap repair` rebuilds a cut
    run's manifest from its parts and writes state "cut", so the run stays marked."""
    if manifest.get("state") == "cut":
        return "cut"
    if manifest.get("state") != "recording":
        return "finished"
    return "recording" if recorder_alive(run_dir) else "cut"


def _nullable(t: str, **more) -> dict:
    return {"type": [t, "null"], **more}


# the manifest fields the analyzer reads and the JSON types that may stand there
MAX_SECONDS = 1e9  # about 31 years: more is a damaged manifest, not a recording
MANIFEST_SCHEMA = {
    "type": "object",
    "properties": {
        **{k: _nullable("string") for k in ("run_id", "tag", "scenario", "profile", "node", "stop_reason",
                                            "started_at", "git_sha", "state")},
        "degraded": _nullable("boolean"),
        # numbers bounded, so a seed of 1e30 or a duration of 1e400 (inf) is named, not used
        "seed": _nullable("integer", minimum=-2**63, maximum=2**63 - 1), "complete": _nullable("boolean"),
        "duration_s": _nullable("number", minimum=0, maximum=MAX_SECONDS, description="seconds"),
        "capability": _nullable("object", properties={
            "mode": _nullable("string"), "signals": _nullable("object", additionalProperties={"type": "object"})}),
        "phases": _nullable("object", additionalProperties={"type": "number", "minimum": 0, "maximum": MAX_SECONDS,
                                                            "description": "seconds"}),
        "host": _nullable("object", properties={"hostname": _nullable("string")}),
    },
}
_MANIFEST_VALIDATOR = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}


def _manifest_problem(m) -> str | None:
    """None when the fields the analyzer reads have usable types; else the bad field."""
    error = best_match(_MANIFEST_VALIDATOR.iter_errors(m))
    if error is None:
        return None
    have = _JSON_TYPES.get(type(error.instance), type(error.instance).__name__)
    if not error.absolute_path:
        return f"not a JSON object but {have}"
    field = ".".join(map(str, error.absolute_path))
    if error.validator in ("minimum", "maximum"):
        lo, hi = error.schema.get("minimum"), error.schema.get("maximum")
        shown = [f"{x:g}" if isinstance(x, float) else str(x) for x in (lo, hi)]
        return f"field {field} is {error.instance!r}, out of range ({shown[0]} to {shown[1]})"
    expected = [t for t in ([error.validator_value] if isinstance(error.validator_value, str)
                            else error.validator_value) if t != "null"]
    unit = f" ({error.schema['description']})" if "description" in error.schema else ""
    field = ".".join(map(str, error.absolute_path))
    return f"field {field} is {have}, expected {' or '.join(expected)}{unit}"


def read_manifest(run_dir: Path, hint: str = "fix or remove that run") -> dict:
    """The run's manifest.json, with the fields the analyzer reads checked; DataError naming
    the file (and field) when it cannot be read or holds the wrong types."""
    path = Path(run_dir) / MANIFEST
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}", hint) from None
    problem = _manifest_problem(m)
    if problem is not None:
        raise DataError(f"{path}: {problem}", hint)
    return m


def identity(*, run_id: str, tag: str, scenario: str, seed: int | None, profile: str | None,
             phases: dict | None, config: dict) -> dict:
    """What a run is, and where and with what it was recorded: the manifest's fixed part."""
    from runfmt.config import config_hash

    host = host_info()
    return {"schema_version": 1, "run_id": run_id, "tag": tag, "scenario": scenario, "seed": seed,
            "profile": profile, "phases": phases, "git_sha": git_sha(), "tool_version": tool_version(),
            "host": host, "node": host["hostname"], "config_hash": config_hash(config), "config": config}


def timing(started_ns: int, ended_ns: int | None) -> dict:
    """started_at, ended_at (UTC, ISO 8601) and duration_s; the end ones None while recording."""
    return {"started_at": iso(started_ns), "ended_at": iso(ended_ns) if ended_ns else None,
            "duration_s": round((ended_ns - started_ns) / 1e9, 3) if ended_ns else None}


def iso_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()
