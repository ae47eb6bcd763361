"""Numbers as a report shows them: values with their units, differences, CI95, p-values
and effect sizes. Shared by the gate's Markdown summary and the sloan tables."""

from __future__ import annotations

from analyze import stats


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
