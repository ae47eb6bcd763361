"""Numbers as a report shows them: values with their units, differences, CI95, p-values
and effect sizes. Shared by the gate's Markdown summary and the sloan tables.

And tables as every `sloan --format` shows them (`Grid`, `render`): whole, never cut to a
width. On a terminal the CLI draws a Grid as a rich table (runfmt/console.py, rich_table);
everywhere else it goes through `render`, which imports neither click nor rich."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the CLI imports this module for --help, numpy stays out
    from analyze import stats

FORMATS = ("table", "markdown", "csv", "json")


def fmt(value: float | None, unit: str = "") -> str:
    """A value for a report: ms to 0.1, ratios to 0.001, percent (points) and seconds to 0.01."""
    if value is None:
        return "n/a"
    if unit == "":
        return f"{value:.3f}"
    if unit in ("%", "pp", "s"):
        return f"{value:.2f} {unit}"
    return f"{value:,.1f} {unit}"


def _diff_unit(unit: str) -> str:
    return "pp" if unit == "%" else unit  # a difference of percentages is in percentage points


def fmt_diff(d: stats.Difference, unit: str) -> str:
    """'+12.0 ms (+3.2 %)': the difference, and relative to the reference."""
    if d.diff is None:
        return "n/a"
    sign = "+" if d.diff >= 0 else "-"
    text = f"{sign}{fmt(abs(d.diff), _diff_unit(unit))}"
    return text if d.pct is None else f"{text} ({d.pct:+.1f} %)"


def fmt_ci(d: stats.Difference, unit: str) -> str:
    if d.ci_low is None:
        return "n/a (< 2 runs)"
    return f"[{fmt(d.ci_low, _diff_unit(unit))}, {fmt(d.ci_high, _diff_unit(unit))}]"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_delta(d: stats.Difference) -> str:
    return "n/a" if d.cliffs_delta is None else f"{d.cliffs_delta:+.2f} {d.magnitude}"


def value_cell(mc, tag: str, runs: int) -> str:
    """A tag's value of a metric; pooled metrics with their CI95, n when not every run counts."""
    u = mc.metric.unit
    text = fmt(mc.values[tag], u)
    if mc.pooled:
        ci = mc.tag_ci.get(tag)
        text += "" if ci is None else f" [{fmt(ci[0], u)}, {fmt(ci[1], u)}]"
        return f"{text} ({mc.n[tag]} test runs)"
    return text if mc.n[tag] == runs else f"{text} (n {mc.n[tag]})"


def diff_cells(mc, tag: str) -> list[str]:
    """Δ, CI95 of Δ, p, Cliff's delta of a tag against the reference."""
    d, u = mc.diffs[tag], mc.metric.unit
    if mc.pooled:
        return [fmt_diff(d, u), "n/a: pooled", "n/a", "n/a"]
    return [fmt_diff(d, u), fmt_ci(d, u), fmt_p(d.p_value), fmt_delta(d)]


# --- tables -------------------------------------------------------------------------------


class Styled(str):
    """Cell text with a terminal style (a rich style, e.g. 'bold red'); plain text in every other format."""

    style: str

    def __new__(cls, text: str, style: str):
        cell = super().__new__(cls, text)
        cell.style = style
        return cell


class Fixed(float):
    """A number shown with `digits` decimals, thousands separated; in CSV and JSON bare
    (CSV with the same decimals)."""

    digits: int

    def __new__(cls, value: float, digits: int = 1):
        number = super().__new__(cls, round(value, digits))
        number.digits = digits
        return number


@dataclass
class Grid:
    """A table: a title, named columns (those in `right` right-aligned), rows of cells and the rows a
    rule follows. Cells are values: None, numbers (ints and Fixed shown with thousands separators,
    written bare to CSV and JSON), strings, lists and dicts (shown as JSON)."""

    title: str | None
    columns: list[str]
    right: set[str] = field(default_factory=set)
    rows: list[list] = field(default_factory=list)
    sections: set[int] = field(default_factory=set)

    def add_row(self, *cells, end_section: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))
        if end_section:
            self.sections.add(len(self.rows) - 1)

    @classmethod
    def from_arrow(cls, table, title: str | None = None) -> Grid:
        """An Arrow table; integer and float columns right-aligned."""
        import pyarrow as pa

        right = {f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
        names = table.column_names
        return cls(title, list(names), right, [[row[n] for n in names] for row in table.to_pylist()])


def cell_text(value) -> str:
    """A cell as a table shows it: '' for None, ints with thousands separators, nested values as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, Fixed):
        return f"{value:,.{value.digits}f}"
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Fixed):
        return f"{value:.{value.digits}f}"
    if isinstance(value, list | dict | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return value


def _width(text: str) -> int:
    """Terminal columns of `text`: wide East Asian characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def render(grid: Grid, fmt: str) -> str:
    """`grid` as text, ending with a newline: 'table' (plain aligned columns, a dashed rule under
    the header and at each section end, no box drawing), 'markdown', 'csv' (header row, then the
    rows; numbers bare) or 'json' (a list of objects, one per row, keyed by column)."""
    if fmt == "table":
        return _plain(grid)
    if fmt == "markdown":
        return _markdown(grid)
    if fmt == "csv":
        buf = io.StringIO()
        out = csv.writer(buf, lineterminator="\n")
        out.writerow(grid.columns)
        out.writerows([_csv_value(v) for v in row] for row in grid.rows)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps([dict(zip(grid.columns, row)) for row in grid.rows], indent=2, default=str,
                          ensure_ascii=False) + "\n"
    raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")


def _plain(grid: Grid) -> str:
    cells = [[_one_line(cell_text(v)) for v in row] for row in grid.rows]
    widths = [max([_width(name)] + [_width(row[i]) for row in cells]) for i, name in enumerate(grid.columns)]

    def line(texts) -> str:
        parts = []
        for text, width, name in zip(texts, widths, grid.columns):
            pad = " " * (width - _width(text))
            parts.append(pad + text if name in grid.right else text + pad)
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [] if grid.title is None else [_one_line(grid.title)]
    lines += [line(grid.columns), rule]
    for i, row in enumerate(cells):
        lines.append(line(row))
        if i in grid.sections and i < len(cells) - 1:
            lines.append(rule)
    return "\n".join(lines) + "\n"


def _markdown(grid: Grid) -> str:
    def md(text: str) -> str:
        return _one_line(text).replace("|", "\\|")

    lines = [] if grid.title is None else [f"**{md(grid.title)}**", ""]
    lines.append("| " + " | ".join(md(name) for name in grid.columns) + " |")
    lines.append("|" + "|".join("---:" if name in grid.right else "---" for name in grid.columns) + "|")
    lines += ["| " + " | ".join(md(cell_text(v)) for v in row) + " |" for row in grid.rows]
    return "\n".join(lines) + "\n"
