"""What both command lines share: one way to report an error, and Arrow tables
as rich tables. Only CLI modules import this (it brings click and rich)."""

from __future__ import annotations

import sys

import click

from runfmt.errors import ExitCode, SloError


def print_error(exc: SloError) -> None:
    """`error: what failed` and, on the next line, what to do. Paths are data, never markup."""
    from rich.console import Console
    from rich.markup import escape

    err = Console(stderr=True, highlight=False)
    err.print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    if exc.hint:
        err.print(f"  {exc.hint}", soft_wrap=True, markup=False)


class ErrorGroup(click.Group):
    """Turns SloError into one clear message and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SloError as exc:
            print_error(exc)
            sys.exit(ExitCode.USER)


def render_arrow(table, title: str | None = None):
    """An Arrow table as a rich Table, numbers right-aligned."""
    import pyarrow as pa
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        t.add_column(field.name, justify="right" if numeric else "left")
    for row in table.to_pylist():
        t.add_row(*("" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
                    for v in row.values()))
    return t
