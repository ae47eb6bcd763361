"""Load the toolkit configuration: defaults.json, a user file merged over it, validated."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from runfmt import CONFIG_DIR
from runfmt.errors import ConfigError

SCHEMA_PATH = CONFIG_DIR / "toolkit.schema.json"
DEFAULTS_PATH = CONFIG_DIR / "defaults.json"

_HINT = "fix that field, or see config/toolkit.schema.json for what is allowed"

# Higher-is-worse SLIs need warning <= breach; tokens/s is the other way round.
_LOWER_IS_WORSE = {"tokens_per_second"}


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Return defaults.json with the user's file at `path` deep-merged over it, validated."""
    cfg = _read_json(DEFAULTS_PATH)
    source = DEFAULTS_PATH
    if path is not None:
        source = Path(path)
        user = _read_json(source)
        if not isinstance(user, dict):
            raise ConfigError(
                f"config {source}: $: the top level must be an object, not {type(user).__name__}",
                hint=_HINT,
            )
        cfg = _merge(cfg, user)
    _validate(cfg, source)
    return cfg


def config_hash(cfg: dict[str, Any]) -> str:
    """First 16 hex chars of the sha256 of canonical JSON, to tag runs with their config."""
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config {path}: file not found",
            hint="pass an existing file, or none to use config/defaults.json",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config {path}: cannot read: {exc}") from None
    try:
        # NaN and Infinity would slip past every minimum/maximum check.
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config {path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            hint="fix the JSON syntax there",
        ) from None
    except ValueError as exc:
        raise ConfigError(f"config {path}: invalid JSON: {exc}", hint="use a finite number") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Objects merge key by key; anything else (lists too) in `over` replaces `base`."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _validate(cfg: dict[str, Any], source: Path) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))
    error = best_match(validator.iter_errors(cfg))
    if error is not None:
        raise ConfigError(f"config {source}: {error.json_path}: {error.message}", hint=_HINT)

    # What the schema cannot say: runs only once types and ranges are known good.
    ring = cfg["capture"]["ring_buffer_bytes"]
    if ring & (ring - 1):
        lower = 1 << (ring.bit_length() - 1)
        raise ConfigError(
            f"config {source}: $.capture.ring_buffer_bytes: {ring} is not a power of two",
            hint=f"the kernel needs a power of two: use {lower} or {lower * 2}",
        )
    for sli, levels in cfg["slo"].items():
        warning, breach = levels["warning"], levels["breach"]
        if sli in _LOWER_IS_WORSE and warning < breach:
            raise ConfigError(
                f"config {source}: $.slo.{sli}: warning {warning} is below breach {breach}, "
                "but lower is worse for this SLI",
                hint="set warning at or above breach",
            )
        if sli not in _LOWER_IS_WORSE and warning > breach:
            raise ConfigError(
                f"config {source}: $.slo.{sli}: warning {warning} is above breach {breach}, "
                "but higher is worse for this SLI",
                hint="set warning at or below breach",
            )
