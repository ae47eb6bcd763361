"""What both command lines share: one way to report an error, and tables (Arrow
tables among them) as rich tables that fold long cells instead of cutting them.
Only CLI modules import this (it brings click and rich)."""

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


def rich_table(title: str | None, columns, rows, right=(), sections=(), width: int | None = None):
    """A rich Table for a terminal: columns named in `right` right-aligned, a rule after each row
    index in `sections`. Cells are text (their `style` attribute, when they have one, styles them);
    titles and cells are data, never markup. Long cells wrap and long words fold onto the next
    line: nothing is cut off with an ellipsis. Given the console `width`, a table wider than it
    narrows its widest columns first and keeps right-aligned cells (numbers) on one line."""
    from rich.table import Table
    from rich.text import Text

    widths = None if width is None else _fitted_widths(columns, rows, right, width)
    t = Table(title=None if title is None else Text(title), title_justify="left")
    for i, name in enumerate(columns):
        t.add_column(Text(name), justify="right" if name in right else "left", overflow="fold",
                     width=None if widths is None else widths[i])
    for i, row in enumerate(rows):
        t.add_row(*(Text(str(v), style=getattr(v, "style", "")) for v in row), end_section=i in sections)
    return t


def _fitted_widths(columns, rows, right, width: int) -> list[int] | None:
    """Content widths that fit `width`: every column at most level L (the largest that fits), but
    never under its floor (its longest cell when right-aligned, else 8); None when the table
    fits as it is, or not even at its floors (rich then shares the width out itself)."""
    from rich.cells import cell_len

    natural, floor = [], []
    for i, name in enumerate(columns):
        longest = max([cell_len(line) for row in rows for line in str(row[i]).splitlines()] or [0])
        natural.append(max(longest, cell_len(name), 1))
        floor.append(min(natural[-1], max(longest, 1) if name in right else 8))
    room = width - 3 * len(columns) - 1  # a space either side of each cell, and the rules
    if sum(natural) <= room or sum(floor) > room:
        return None
    level = max(natural)
    while level > 1 and sum(max(f, min(n, level)) for n, f in zip(natural, floor)) > room:
        level -= 1
    return [max(f, min(n, level)) for n, f in zip(natural, floor)]


def render_arrow(table, title: str | None = None):
    """An Arrow table as a rich Table, numbers right-aligned."""
    import pyarrow as pa

    right = {f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    rows = [["" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
             for v in row.values()] for row in table.to_pylist()]
    return rich_table(title, table.column_names, rows, right)
