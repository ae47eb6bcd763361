"""Errors of the toolkit. The library raises these; only the CLIs print them.

Every message says what failed and why; `hint` says what to do next.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    USER = 1  # bad input, missing privilege, failed gate
    INTERNAL = 2
    # a gate without what it needs to judge: what CI must read neither as pass
    # nor as a regression; "no verdict", as an internal error is
    CANNOT_JUDGE = 2


class SloError(Exception):
    """Root of every error the toolkit raises on purpose."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class CaptureError(SloError):
    """The recorder cannot load, attach or drain a probe, or lacks privilege."""


class DataError(SloError):
    """A run directory, Parquet file or record is missing or malformed."""


class ConfigError(SloError):
    """A configuration file does not validate against config/toolkit.schema.json."""
