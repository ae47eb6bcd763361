"""The HTML report of `sloan report --html FILE`: what an SRE looks at, one page per set of
runs, self-contained (plotly.js inlined once, no request at view time).

Per run, on one time axis (seconds since its first request): the SLIs per burn window
(TTFT and TPOT p95, error rate; analyze/slo.py), the kernel evidence per signal and window
(DNS, connect, retransmits, TLS, run-queue delay, reclaim stalls; the window stats of
analyze/attribution/evidence.py against the reference period), the span evidence, and the
attribution's posterior per fault domain with the shifts that moved it (hover). The
labelled fault window (labels.parquet), the paging windows and the reference period are
shaded. Around the chart: the run's capability flags (manifest), cut/degraded warnings
(analyze/session.py run_warnings), the verdict per paging window and the correlation tier
counts (analyze/correlate.py, from the pairs the attribution's own pass computes).

The page of `sloan compare --html FILE` (compare_page) shares the shell: per metric of a
Comparison (analyze/compare.py), each tag's per-run values (box and points, the median
labelled) or, for the pooled attribution scores, each tag's value with scoring's CI95; each
tag's difference to the reference with its CI95 as an error bar. At the top: the baseline
rule, the exploratory flag (and per metric when a tag has fewer than 10 values), the notes
and the table `sloan compare` prints.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from analyze.attribution import DOMAINS, UNKNOWN, Model, RunAttribution, WindowAttribution
from analyze.attribution.evidence import BY_NAME, RunEvidence, feature_values
from analyze.correlate import CONFIDENCE, TIERS
from analyze.slo import UNITS
from runfmt.signals import SIGNAL_NAMES

NO_PAIR = "none"  # events without any candidate span
# domain -> colour, the same on every chart of a page
DOMAIN_COLOURS = dict(zip((*DOMAINS, UNKNOWN), (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")))
SHORT = {"network_dns": "DNS", "network_egress": "egress", "cpu_throttle": "CPU", "memory_pressure": "memory",
         "provider_throttle": "429", "provider_error": "5xx", "retrieval_backend": "retrieval", UNKNOWN: "unknown"}
# the SLI rows: (title, SLI, per-window statistic)
SLI_ROWS = (("TTFT p95 per window", "ttft_ms", "p95"), ("TPOT p95 per window", "tpot_ms", "p95"),
            ("error rate per window", "error_rate", "share"))
# the evidence rows: (title, unit shown, features of analyze/attribution/evidence.py, scale)
KERNEL_ROWS = (
    ("DNS lookup p50 (eBPF dns)", "ms", ("dns_p50_ms",), 1.0),
    ("TCP connect p95 (eBPF connect)", "ms", ("connect_p95_ms",), 1.0),
    ("TCP retransmits (eBPF retransmit)", "1/s", ("syn_retransmits_per_s", "egress_retransmits_per_s"), 1.0),
    ("TLS handshake p50 (eBPF tls)", "ms", ("tls_handshake_p50_ms",), 1.0),
    ("run-queue delay (eBPF runqueue)", "µs/wakeup", ("runq_us_per_wakeup",), 1.0),
    ("reclaim stalls (eBPF mem_reclaim)", "ms/s", ("reclaim_ms_per_s",), 1.0),
)
SPAN_ROWS = (
    ("provider responses and retries (spans, requests)", "%", ("http429_share", "http5xx_share", "retry_share"),
     100.0),
    ("retrieval server time p50 (spans)", "ms", ("retrieval_server_p50_ms",), 1.0),
)
TRACE_NAMES = {"syn_retransmits_per_s": "SYN (lost SYNs)", "egress_retransmits_per_s": "to the provider",
               "http429_share": "HTTP 429", "http5xx_share": "HTTP 5xx", "retry_share": "retried requests"}
LINE = "#444"


# --- what one run shows -------------------------------------------------------------------

@dataclass(frozen=True)
class Incident:
    """Consecutive paging windows with the same verdict."""

    first: int
    last: int
    start_s: float
    end_s: float
    paging: tuple[str, ...]  # the SLIs that paged in any of them
    predicted: str
    confidence: float  # the highest of the windows
    because: str  # the evidence of the most confident window, one line


@dataclass
class RunView:
    """One run as the page shows it."""

    attribution: RunAttribution  # every window, paging or not
    manifest: dict
    labels: list[dict]  # domain, target, intensity, start_ns, end_ns
    tiers: dict[str, dict[str, int]]  # signal -> best tier (or `none`) -> kernel events
    warnings: list[str]  # cut, recording, degraded, capture mode, signals not attached

    @property
    def evidence(self) -> RunEvidence:
        return self.attribution.evidence

    @property
    def info(self):
        return self.evidence.info

    @property
    def anchor(self) -> str:
        return "run-" + "".join(c if c.isalnum() else "-" for c in self.info.run_id)

    def seconds(self, ns: int) -> float:
        return (ns - self.evidence.slo.start_ns) / 1e9

    @property
    def paging(self) -> list[WindowAttribution]:
        return [wa for wa in self.attribution.windows if wa.window.violating]

    def incidents(self) -> list[Incident]:
        out: list[Incident] = []
        group: list[WindowAttribution] = []
        for wa in self.paging + [None]:  # type: ignore[list-item]
            if group and (wa is None or wa.window.index != group[-1].window.index + 1
                          or wa.predicted != group[-1].predicted):
                best = max(group, key=lambda g: g.confidence)
                out.append(Incident(group[0].window.index, group[-1].window.index,
                                    self.seconds(group[0].window.start_ns), self.seconds(group[-1].window.end_ns),
                                    tuple(sorted({s for g in group for s in g.window.paging})), best.predicted,
                                    best.confidence, because(best, self.evidence.reference)))
                group = []
            if wa is not None:
                group.append(wa)
        return out

    def label_text(self) -> str:
        return ", ".join(f"{lb['domain']} {self.seconds(lb['start_ns']):.1f}–{self.seconds(lb['end_ns']):.1f} s"
                         for lb in self.labels) or "no fault"


def strongest_evidence(wa: WindowAttribution, domain: str, reference: Mapping[str, Any]) -> str:
    """The feature that moved `domain`'s posterior in this window, with value, reference and shift."""
    h = next(h for h in wa.hypotheses if h.domain == domain)
    moved = [(name, c) for name, c in h.contributions if c > 0]
    if not moved:
        return "no signal of this domain moved"
    name = moved[0][0]
    f = BY_NAME[name]
    now, ref = feature_values(wa.stats)[name], feature_values(reference)[name]
    return (f"{name} {_value(now, f.unit)} vs {_value(ref, f.unit)} in the reference "
            f"({wa.shifts[name]:+.1f} doublings, {moved[0][1]:+.1f} log-odds)")


def because(wa: WindowAttribution, reference: Mapping[str, Any]) -> str:
    """Why the verdict of a window is what it is, one line."""
    if wa.predicted != UNKNOWN:
        return strongest_evidence(wa, wa.predicted, reference)
    top = sorted(((v, k) for k, v in wa.shifts.items() if v >= 0.05), reverse=True)[:2]
    moved = ", ".join(f"{k} {v:+.1f}" for v, k in top)
    return "no domain reaches posterior 0.5" + (f"; largest shifts (doublings): {moved}" if moved else "")


def _value(v: float | None, unit: str) -> str:
    """A feature's value with its unit; ratios as percentages."""
    if v is not None and unit == "ratio":
        return f"{v:.1%}"
    return f"{_num(v)} {unit}"


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


# --- gathering ------------------------------------------------------------------------------

def _labels_and_tiers(con, ev: RunEvidence) -> dict[str, Any]:
    """Runs inside collect_run, where the correlation's temp tables are: the run's labels,
    and its kernel events per signal and best tier (sql/correlate_best.sql)."""
    import pyarrow.compute as pc

    labels = con.table("labels").to_arrow_table()
    labels = sorted(labels.select(["domain", "target", "intensity", "start_ns", "end_ns"]).to_pylist(),
                    key=lambda lb: (lb["start_ns"], lb["domain"]))
    events = con.table("corr_events").select("event_no, signal").to_arrow_table()
    best = con.table("corr_best").select("event_no, tier").to_arrow_table()
    joined = events.join(best, "event_no", join_type="left outer")
    tier = pc.fill_null(joined.column("tier"), NO_PAIR)
    counts = joined.select(["signal"]).append_column("tier", tier).group_by(["signal", "tier"]).aggregate(
        [("signal", "count")])
    tiers: dict[str, dict[str, int]] = {}
    for row in counts.to_pylist():
        tiers.setdefault(row["signal"], {})[row["tier"]] = row["signal_count"]
    return {"labels": labels, "tiers": tiers}


def run_view(run_dir: Path, config: Mapping, model: Model, budget: float | None = None) -> RunView:
    from analyze.attribution import attribute_evidence, collect_run
    from analyze.session import run_warnings
    from runfmt.manifest import read_manifest

    ev = collect_run(run_dir, config, budget=budget, also=_labels_and_tiers)
    ra = attribute_evidence(ev, model, all_windows=True)
    ra.seen_in_training = ev.info.run_id in set(model.trained.get("runs") or [])
    manifest = read_manifest(run_dir)
    warnings = run_warnings(run_dir, manifest)
    if ev.info.mode and ev.info.mode != "core_full":
        warnings.append(f"capture mode {ev.info.mode}: "
                        + ("BCC degraded mode, only some signals were recorded" if ev.info.mode == "bcc_degraded"
                           else "some probes did not attach"))
    off = [s for s in SIGNAL_NAMES if not ev.info.signals.get(s)]
    if off:
        warnings.append("not recorded: " + ", ".join(off) + " (their rows stay empty, their shifts count 0)")
    if manifest.get("complete") is False:
        warnings.append("manifest says complete: false" + (f" ({manifest['stop_reason']})"
                                                           if manifest.get("stop_reason") else ""))
    return RunView(ra, manifest, ev.extra["labels"], ev.extra["tiers"], warnings)


@dataclass
class HtmlReport:
    """The page and what it holds, for the command's summary."""

    html: str
    runs: list[RunView]
    model: Model
    generated: str = field(default="")


def build(paths: Sequence[Path], config: Mapping, model: Model | None = None, *,
          budget: float | None = None) -> HtmlReport:
    """The report over every run below `paths`, attributed by `model` (default: the shipped one,
    config/model.json)."""
    from analyze.session import find_runs

    model = model or Model.named(None)
    views = [run_view(d, config, model, budget) for d in find_runs([Path(p) for p in paths])]
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return HtmlReport(render_page(views, model, [str(p) for p in paths], generated), views, model, generated)


# --- the chart of one run ------------------------------------------------------------------

def _window_sli(ev: RunEvidence, sli: str, stat: str) -> list[float | None]:
    r = ev.slo.requests
    done = np.asarray(r["done_ns"], np.int64)
    values = np.asarray(r[sli], float)
    out: list[float | None] = []
    for w in ev.slo.windows:
        v = values[(done >= w.start_ns) & (done < w.end_ns)]
        v = v[~np.isnan(v)]
        if not v.size:
            out.append(None)
        elif stat == "p95":
            out.append(float(np.quantile(v, 0.95)))
        else:
            out.append(float(v.mean()) * 100)
    return out


def _axis(row: int, axis: str) -> str:
    return axis if row == 1 else f"{axis}{row}"


def _hline(row: int, y: float, text: str, colour: str, dash: str) -> dict:
    """A horizontal line across one row, labelled at its right end."""
    return dict(type="line", xref=f"{_axis(row, 'x')} domain", yref=_axis(row, "y"), x0=0, x1=1, y0=y, y1=y,
                line=dict(color=colour, dash=dash, width=1),
                label=dict(text=text, textposition="end", font=dict(size=10, color=colour)))


def run_figure(view: RunView):
    """One figure: SLI rows, kernel rows, span rows and the attribution row on a shared x axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ev, ra = view.evidence, view.attribution
    windows = [wa.window for wa in ra.windows]
    mid = [(view.seconds(w.start_ns) + view.seconds(w.end_ns)) / 2 for w in windows]
    span = [f"w{w.index:02d} {view.seconds(w.start_ns):.1f}–{view.seconds(w.end_ns):.1f} s" for w in windows]
    paging_text = [("paging: " + ", ".join(f"{s} ({rule})" for s, rule in sorted(w.paging.items())))
                   if w.paging else "not paging" for w in windows]
    values = [feature_values(wa.stats) for wa in ra.windows]
    reference = feature_values(ev.reference)
    signals = ev.info.signals

    rows: list[tuple[str, float]] = []  # (title, relative height)
    for title, sli, _ in SLI_ROWS:
        rows.append((f"{title}, {'%' if sli == 'error_rate' else UNITS[sli]}", 1.15))
    for title, unit, features, _ in KERNEL_ROWS:
        attached = all(signals.get(BY_NAME[f].signal, False) for f in features)
        rows.append((f"{title}, {unit}" + ("" if attached else " — NOT RECORDED in this run"), 0.85))
    for title, unit, _, _ in SPAN_ROWS:
        rows.append((f"{title}, {unit}", 0.85))
    rows.append(("attribution: posterior per fault domain (verdicts labelled on paging windows)", 1.9))
    unit_px, gap_px, frame_px = 82, 30, 110
    height = int(sum(h for _, h in rows) * unit_px + gap_px * (len(rows) - 1) + frame_px)
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, row_heights=[h for _, h in rows],
                        vertical_spacing=gap_px / (height - frame_px), subplot_titles=[t for t, _ in rows])
    for a in fig.layout.annotations:  # subplot titles: small, left-aligned above their row
        a.update(x=0, xanchor="left", font=dict(size=11, color=LINE))

    traces: list[tuple[Any, int]] = []  # (trace, row)
    shapes: list[dict] = []
    legends: dict[str, dict] = {}

    def hover(unit: str) -> str:
        return "%{customdata[0]}<br>%{y:,.4~g} " + unit + "<br>%{customdata[1]}<extra>%{fullData.name}</extra>"

    def legend_at(row: int, **extra) -> str:
        name = f"legend{len(legends) + 2}"
        top = fig.get_subplot(row, 1).yaxis.domain[1]
        legends[name] = dict(x=1.005, y=top, yanchor="top", xanchor="left", font=dict(size=10),
                             bgcolor="rgba(255,255,255,0.6)", **extra)
        return name

    custom = list(zip(span, paging_text))
    row = 1
    for _, sli, stat in SLI_ROWS:
        unit = "%" if stat == "share" else UNITS[sli]
        traces.append((go.Scatter(x=mid, y=_window_sli(ev, sli, stat), name=sli, mode="lines+markers",
                                  line=dict(color="#222", width=1.5), marker=dict(size=5), customdata=custom,
                                  hovertemplate=hover(unit), showlegend=False), row))
        if stat == "share":
            shapes.append(_hline(row, ev.slo.budget * 100, f"error budget {ev.slo.budget:.0%}", "#d62728", "dash"))
        else:
            t = ev.slo.thresholds[sli].breach
            shapes.append(_hline(row, t, f"breach {t:g} {unit} (per request)", "#d62728", "dash"))
        row += 1
    for _, unit, features, scale in (*KERNEL_ROWS, *SPAN_ROWS):
        several = len(features) > 1
        leg = legend_at(row) if several else None
        for i, name in enumerate(features):
            colour = ("#1f77b4", "#d62728", "#2ca02c")[i] if several else "#222"
            y = [None if v[name] is None else v[name] * scale for v in values]
            traces.append((go.Scatter(x=mid, y=y, name=TRACE_NAMES.get(name, name), mode="lines+markers",
                                      line=dict(color=colour, width=1.5), marker=dict(size=5), customdata=custom,
                                      hovertemplate=hover(unit), showlegend=several, legend=leg), row))
            ref = reference[name]
            if ref is not None and not several:
                shapes.append(_hline(row, ref * scale, f"reference {_num(ref * scale)} {unit}", "#777", "dot"))
        row += 1
    # the attribution row: a line per domain, the verdict on each paging window
    leg = legend_at(row, title=dict(text="domain", font=dict(size=10)))
    for d in (*DOMAINS, UNKNOWN):
        why = [strongest_evidence(wa, d, ev.reference) if d != UNKNOWN
               else "1 − posterior, multiplied over the domains" for wa in ra.windows]
        traces.append((go.Scatter(
            x=mid, y=[wa.posteriors[d] for wa in ra.windows], name=d, mode="lines+markers", legend=leg,
            line=dict(color=DOMAIN_COLOURS[d], width=1.5, dash="dot" if d == UNKNOWN else "solid"),
            marker=dict(size=4), customdata=list(zip(span, why)),
            hovertemplate="%{customdata[0]}: posterior %{y:.2f}<br>%{customdata[1]}<extra>" + d + "</extra>"), row))
    verdicts = [(m, wa) for m, wa in zip(mid, ra.windows) if wa.window.violating]
    if verdicts:
        traces.append((go.Scatter(
            x=[m for m, _ in verdicts], y=[wa.confidence for _, wa in verdicts], mode="markers+text",
            name="verdict", legend=leg, text=[SHORT[wa.predicted] for _, wa in verdicts],
            textposition="top center", textfont=dict(size=10),
            marker=dict(size=11, symbol="diamond", color=[DOMAIN_COLOURS[wa.predicted] for _, wa in verdicts],
                        line=dict(color="#000", width=1)),
            customdata=[(f"w{wa.window.index:02d}", wa.predicted, because(wa, ev.reference)) for _, wa in verdicts],
            hovertemplate="%{customdata[0]} paged → %{customdata[1]} (%{y:.2f})<br>%{customdata[2]}<extra></extra>"),
            row))
    shapes.append(_hline(row, 0.5, "abstain below 0.5", "#777", "dash"))
    fig.add_traces([t for t, _ in traces], rows=[r for _, r in traces], cols=[1] * len(traces))
    end_s = max(view.seconds(w.end_ns) for w in windows) if windows else 1.0
    fig.update_xaxes(range=[0, end_s], showgrid=True, gridcolor="#eee", zeroline=False, showspikes=True,
                     spikemode="across", spikethickness=1, spikecolor="#999", spikedash="dot")
    fig.update_xaxes(title=dict(text="seconds since the run's first request", font=dict(size=11)),
                     row=len(rows), col=1)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", zeroline=False, rangemode="tozero", tickfont=dict(size=10))
    fig.update_yaxes(range=[-0.03, 1.18], row=row, col=1)
    fig.update_layout(height=height, margin=dict(l=60, r=170, t=70, b=45), template="plotly_white",
                      hovermode="x unified", font=dict(family="system-ui, sans-serif", size=11),
                      legend=dict(orientation="h", x=0, y=1.0, yref="container", yanchor="top", font=dict(size=11)),
                      shapes=_shades(view) + shapes, **legends)
    return fig


def _shades(view: RunView) -> list[dict]:
    """The reference period, the labelled fault windows and the paging windows, over every row."""
    lo, hi = view.evidence.reference_ns

    def band(x0_ns: int, x1_ns: int, colour: str, opacity: float, name: str, first: bool, **extra) -> dict:
        return dict(type="rect", xref="x", yref="paper", x0=view.seconds(x0_ns), x1=view.seconds(x1_ns), y0=0,
                    y1=1, fillcolor=colour, opacity=opacity, layer="below", name=name, showlegend=first,
                    legendgroup=name, **extra)

    out = [band(lo, hi, "#4a90d9", 0.06, "reference period", True, line_width=0)]
    faults: dict[tuple[int, int], list[str]] = {}  # faults injected together share one band
    for lb in view.labels:
        faults.setdefault((lb["start_ns"], lb["end_ns"]), []).append(
            lb["domain"] + (f" ({lb['target']})" if lb.get("target") else ""))
    for i, ((lo_ns, hi_ns), names) in enumerate(faults.items()):
        out.append(band(lo_ns, hi_ns, "#d62728", 0.09, "labelled fault window", i == 0, line_width=0,
                        label=dict(text="fault: " + " + ".join(names), textposition="top left",
                                   font=dict(size=11, color="#a00"))))
    for i, wa in enumerate(view.paging):
        out.append(band(wa.window.start_ns, wa.window.end_ns, "#ff9900", 0.16, "paging window", i == 0,
                        line=dict(color="#ff9900", width=1)))
    return out


# --- the page --------------------------------------------------------------------------------

def _e(v: Any) -> str:
    return html.escape(str(v))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """Cells are escaped unless they are Raw."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else _e(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Raw(str):
    """HTML built here, from escaped parts."""


def _flags(view: RunView) -> Raw:
    caps = ((view.manifest.get("capability") or {}).get("signals") or {})
    out = []
    for s in SIGNAL_NAMES:
        on = view.info.signals.get(s, False)
        err = (caps.get(s) or {}).get("error")
        title = f' title="{_e(err)}"' if err else ""
        out.append(f'<span class="flag {"on" if on else "off"}"{title}>{"✓" if on else "✗"} {_e(s)}</span>')
    return Raw(" ".join(out))


def _mode(view: RunView) -> Raw:
    mode = view.info.mode or "unknown"
    bad = mode != "core_full"
    badges = [f'<span class="badge {"warn" if bad else "ok"}">{_e(mode)}</span>']
    if view.info.state != "finished":
        badges.append(f'<span class="badge warn">{_e(view.info.state)}</span>')
    if view.info.degraded:
        badges.append('<span class="badge warn">degraded</span>')
    return Raw(" ".join(badges))


def _verdicts(view: RunView) -> Raw:
    incidents = view.incidents()
    if not incidents:
        return Raw('<span class="muted">no window paged</span>')
    return Raw(", ".join(f'<span class="dom" style="border-color:{DOMAIN_COLOURS[i.predicted]}">'
                         f'{_e(i.predicted)}</span> w{i.first:02d}' + (f"–w{i.last:02d}" if i.last != i.first else "")
                         for i in incidents))


def _summary_table(views: Sequence[RunView]) -> str:
    rows = []
    for v in views:
        w = v.attribution.windows
        rows.append([Raw(f'<a href="#{v.anchor}">{_e(v.info.run_id)}</a>'), v.info.scenario, _mode(v),
                     _flags(v), v.label_text(), f"{len(v.paging)} / {len(w)}", _verdicts(v)])
    return _table(["run", "scenario", "capture", "signals (manifest)", "labelled fault", "paging / windows",
                   "attribution of the paging windows"], rows, "summary")


def _tier_table(view: RunView) -> str:
    cols = (*TIERS, NO_PAIR)
    rows = []
    for s in sorted(view.tiers):
        counts = view.tiers[s]
        total = sum(counts.values())
        enriched = sum(counts.get(t, 0) for t in TIERS if t != "service_node")
        rows.append([s, *[f"{counts.get(t, 0):,}" for t in cols], f"{total:,}",
                     f"{enriched / total:.0%}" if total else "–"])
    if not rows:
        return '<p class="muted">No kernel events in this run.</p>'
    header = ["signal", *[f"{t} ({CONFIDENCE[t]:g})" for t in TIERS], "no span", "events", "enrich a span"]
    return _table(header, rows, "tiers")


def _incident_table(view: RunView) -> str:
    if not view.paging:
        return '<p class="muted">No window paged in this run.</p>'
    rows = []
    for wa in view.paging:
        w = wa.window
        truth = {lb["domain"] for lb in view.labels if lb["start_ns"] < w.end_ns and lb["end_ns"] > w.start_ns}
        rows.append([f"w{w.index:02d}", f"{view.seconds(w.start_ns):.1f}–{view.seconds(w.end_ns):.1f}",
                     ", ".join(f"{s} ({r})" for s, r in sorted(w.paging.items())),
                     Raw(f'<span class="dom" style="border-color:{DOMAIN_COLOURS[wa.predicted]}">'
                         f'{_e(wa.predicted)}</span>'), f"{wa.confidence:.2f}", because(wa, view.evidence.reference),
                     ", ".join(sorted(truth)) or "none"])
    return _table(["window", "s", "paging SLIs (rule)", "verdict", "posterior", "because", "labelled"], rows,
                  "incidents")


def _figure_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True,
                               "modeBarButtonsToRemove": ["select2d", "lasso2d"]})


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 24px 40px;color:#222;font-size:14px}
h1{font-size:22px;margin:18px 0 4px} h2{font-size:17px;margin:34px 0 6px;padding-top:10px;border-top:2px solid #ddd}
p{margin:4px 0 8px} .muted{color:#777} code{font-size:12px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12px} th,td{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top} th{background:#f5f5f5} table.tiers td{text-align:right}
table.tiers td:first-child{text-align:left}
.flag{display:inline-block;padding:0 4px;margin:1px;border-radius:3px;font-size:11px}
.flag.on{background:#e6f4ea;color:#1e6b34} .flag.off{background:#fde2e1;color:#a00;font-weight:600}
.badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:11px;font-weight:600}
.badge.ok{background:#e6f4ea;color:#1e6b34} .badge.warn{background:#fff1c2;color:#7a5600}
.dom{border-left:5px solid;padding-left:4px}
.warnings{background:#fff8e1;border:1px solid #f0c36d;padding:6px 12px;margin:8px 0} .warnings li{margin:2px 0}
.meta{color:#555;font-size:12px}
"""


def render_page(views: Sequence[RunView], model: Model, paths: Sequence[str], generated: str) -> str:
    warned = [(v, w) for v in views for w in v.warnings]
    head = ["<h1>SLO attribution report</h1>",
            f'<p class="meta">{len(views)} run(s) below {_e(", ".join(paths))}; generated {_e(generated)}.</p>',
            f"<p><b>Attribution model:</b> {_e(model.describe())}.</p>"]
    if views:
        slo = views[0].evidence.slo
        sc = slo.scaling.to_dict()
        head.append(f'<p class="meta">Error budget {slo.budget:.0%} per SLI. Paging rule: {_e(sc["rule"])}; '
                    f"windows scaled by run length / 6 h (this run set: {sc['run_s']:g} s, evaluated every "
                    f"{sc['step_s']:g} s). Evidence shifts are doublings of each window's value over the run's "
                    "reference period (its baseline phase).</p>")
    if warned:
        head.append('<div class="warnings"><b>Before trusting these numbers:</b><ul>'
                    + "".join(f'<li><a href="#{v.anchor}">{_e(v.info.scenario)} {_e(v.info.run_id)}</a>: {_e(w)}</li>'
                              for v, w in warned) + "</ul></div>")
    head.append(_summary_table(views))
    sections = []
    for n, v in enumerate(views):
        note = (' <span class="badge warn" title="the shipped model was fitted on this run">seen in training'
                "</span>" if v.attribution.seen_in_training else "")
        parts = [f'<h2 id="{v.anchor}">{_e(v.info.scenario)} · {_e(v.info.run_id)} {_mode(v)}{note}</h2>',
                 (f'<p class="meta">tag {_e(v.info.tag)}, profile {_e(v.info.profile or "–")}, node '
                  f'{_e(v.info.node)}, service {_e(v.evidence.workload.service)}; labelled fault: '
                  f"{_e(v.label_text())}</p>"),
                 f"<p>{_flags(v)}</p>"]
        if v.warnings:
            parts.append('<div class="warnings"><ul>' + "".join(f"<li>{_e(w)}</li>" for w in v.warnings)
                         + "</ul></div>")
        parts.append(_incident_table(v))
        parts.append(_figure_html(run_figure(v), f"fig-{n}"))
        parts.append("<p><b>Correlation</b> of kernel events with spans, events per best tier (confidence); "
                     "pairs of confidence ≥ 0.7 enrich a span:</p>" + _tier_table(v))
        sections.append("\n".join(parts))
    return _page("SLO attribution report", "\n".join(head) + "\n" + "\n".join(sections))


def _page(title: str, body: str, css: str = CSS) -> str:
    """The page shell every HTML page of sloan shares: the style and plotly.js, inlined once."""
    import plotly.offline

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title>"
            f"<style>{css}</style>"
            f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>"
            "</head><body>\n" + body + "\n</body></html>\n")


# --- the release comparison: `sloan compare --html FILE` ----------------------------------------

# tag -> colour by position: the reference first
TAG_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")
WORSE, BETTER, UNSURE = "#c44e52", "#2e8b57", "#555"
COMPARE_CSS = CSS + """
table.metrics td{text-align:right;white-space:nowrap} table.metrics td:first-child{text-align:left}
.exploratory{background:#fff1c2;border:1px solid #e0b000;padding:8px 12px;margin:10px 0;font-size:15px}
.stat{margin:2px 0 2px 12px;font-size:13px} .scroll{overflow-x:auto}
h2 .badge{vertical-align:middle;margin-left:6px}
"""


def _diff_unit(unit: str) -> str:
    return "pp" if unit == "%" else unit  # as analyze/formatting.py shows a difference of percentages


def _tag_colour(cmp, tag: str) -> str:
    return TAG_COLOURS[cmp.tags.index(tag) % len(TAG_COLOURS)]


def _direction(mc, d) -> tuple[str, str]:
    """(colour, word) of a difference: worse / better when its CI95 excludes 0, else unsure."""
    if mc.pooled or d.diff is None or not d.ci_excludes_zero:
        return UNSURE, ""
    worse = (d.diff > 0) == mc.metric.higher_is_worse
    return (WORSE, "worse") if worse else (BETTER, "better")


def _short_runs(mc, cmp) -> dict[str, int]:
    """Tags with fewer than cmp.min_runs values of this metric (pooled: test runs)."""
    return {t: mc.n.get(t, 0) for t in cmp.tags if mc.n.get(t, 0) < cmp.min_runs}


def _has_data(mc) -> bool:
    return any(v is not None for v in mc.values.values()) or any(mc.samples.values())


def compare_figure(mc, cmp):
    """One metric: left, the per-run values of each tag (box and every run as a point, the
    median labelled) or, pooled, each tag's value with scoring's CI95; right, each tag's
    difference to the reference with the CI95 of the difference as an error bar."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from analyze.formatting import fmt, fmt_ci, fmt_diff

    unit, ref = mc.metric.unit, cmp.reference
    others = cmp.tags[1:]
    left_title = ("value per tag with scoring's CI95 (pooled over SLO windows)" if mc.pooled
                  else "per-run values per tag: box, every run a point, the median labelled")
    right_title = (f"difference to {ref} (pooled: no CI of the difference)" if mc.pooled
                   else f"difference of medians to {ref}, CI95 (bootstrap over runs)")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=[left_title, right_title])
    for a in fig.layout.annotations:
        a.update(font=dict(size=11, color=LINE))
    hover_unit = f" {unit}" if unit else ""
    notes: list[dict] = []
    for i, tag in enumerate(cmp.tags):
        colour = _tag_colour(cmp, tag)
        value = mc.values.get(tag)
        if mc.pooled:
            ci = mc.tag_ci.get(tag)
            error = None if ci is None or value is None else dict(
                type="data", symmetric=False, array=[max(ci[1] - value, 0)], arrayminus=[max(value - ci[0], 0)],
                color=colour, thickness=2, width=10)
            fig.add_trace(go.Scatter(
                x=[i], y=[value], mode="markers", name=tag, error_y=error, showlegend=False,
                marker=dict(size=11, color=colour, line=dict(color="#000", width=1)),
                hovertemplate=(f"{_e(tag)}: %{{y:,.4~g}}{hover_unit}"
                               + ("" if ci is None else f" [{fmt(ci[0], unit)}, {fmt(ci[1], unit)}]")
                               + f"<br>{mc.n.get(tag, 0)} test runs<extra></extra>")), row=1, col=1)
            text = fmt(value, unit) + ("" if ci is None else f"<br>[{fmt(ci[0], unit)}, {fmt(ci[1], unit)}]")
        else:
            ys = mc.samples.get(tag, [])
            fig.add_trace(go.Box(
                x=[i] * len(ys), y=ys, name=tag, width=0.42, boxpoints="all", jitter=0.5, pointpos=0,
                marker=dict(color=colour, size=7, opacity=0.8, line=dict(color="#fff", width=0.5)),
                line=dict(color=colour, width=1.5), fillcolor="rgba(0,0,0,0)", showlegend=False,
                customdata=mc.sample_runs.get(tag, []), hoveron="points",
                hovertemplate=f"{_e(tag)} %{{customdata}}<br>%{{y:,.4~g}}{hover_unit}<extra></extra>"),
                row=1, col=1)
            text = f"median {fmt(value, unit)}"
        if value is not None:
            notes.append(dict(x=i + 0.24, y=value, xref="x", yref="y", text=text, showarrow=False,
                              xanchor="left", align="left", font=dict(size=11, color=colour)))
    for j, tag in enumerate(others):
        d = mc.diffs.get(tag)
        if d is None or d.diff is None:
            notes.append(dict(x=j, y=0, xref="x2", yref="y2", text="n/a: a tag without values",
                              showarrow=False, yshift=14, font=dict(size=11, color=UNSURE)))
            continue
        colour, word = _direction(mc, d)
        has_ci = not mc.pooled and d.ci_low is not None
        error = dict(type="data", symmetric=False, array=[max(d.ci_high - d.diff, 0)],
                     arrayminus=[max(d.diff - d.ci_low, 0)], color=colour, thickness=2, width=10) if has_ci else None
        ci_text = "no CI: pooled" if mc.pooled else f"CI95 {fmt_ci(d, unit)}"
        fig.add_trace(go.Scatter(
            x=[j], y=[d.diff], mode="markers", name=f"{tag} − {ref}", error_y=error, showlegend=False,
            marker=dict(size=11, color=colour, symbol="diamond", line=dict(color="#000", width=1)),
            hovertemplate=f"{_e(tag)} − {_e(ref)}: {_e(fmt_diff(d, unit))}<br>{_e(ci_text)}<extra></extra>"),
            row=1, col=2)
        notes.append(dict(x=j + 0.12, y=d.diff, xref="x2", yref="y2", showarrow=False, xanchor="left",
                          align="left", font=dict(size=11, color=colour),
                          text=f"Δ {_e(fmt_diff(d, unit))}<br>{_e(ci_text)}" + (f"<br><b>{word}</b>" if word else "")))
    fig.update_xaxes(tickvals=list(range(len(cmp.tags))), range=[-0.6, len(cmp.tags) - 0.1],
                     ticktext=[_e(f"{t} (ref)" if t == ref else t) + f"<br>n {mc.n.get(t, 0)}" for t in cmp.tags],
                     row=1, col=1)
    fig.update_xaxes(tickvals=list(range(len(others))), range=[-0.5, len(others) - 0.05],
                     ticktext=[_e(f"{t} − {ref}") for t in others], row=1, col=2)
    axis = mc.metric.label + (f" ({unit})" if unit else "")
    fig.update_yaxes(title=dict(text=_e(axis), font=dict(size=11)), row=1, col=1)
    fig.update_yaxes(title=dict(text=_e(f"Δ {_diff_unit(unit)}".strip()), font=dict(size=11)), zeroline=True,
                     zerolinecolor="#999", zerolinewidth=1, row=1, col=2)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", tickfont=dict(size=10))
    fig.update_xaxes(showgrid=False, tickfont=dict(size=11))
    fig.update_layout(height=340, margin=dict(l=70, r=30, t=40, b=50), template="plotly_white",
                      hovermode="closest", font=dict(family="system-ui, sans-serif", size=11),
                      annotations=list(fig.layout.annotations) + notes,
                      shapes=[dict(type="line", xref="x2 domain", yref="y2", x0=0, x1=1, y0=0, y1=0,
                                   line=dict(color="#999", dash="dot", width=1))])
    return fig


def _metric_badges(mc, cmp) -> str:
    out = []
    short = _short_runs(mc, cmp)
    if short:
        what = "test runs" if mc.pooled else "runs with a value"
        detail = ", ".join(f"{t} {n}" for t, n in short.items())
        out.append(f'<span class="badge warn" title="fewer than {cmp.min_runs} {what}: {_e(detail)}">'
                   f"exploratory: n &lt; {cmp.min_runs} ({_e(detail)})</span>")
    if mc.metric.source == "scoring" and cmp.scoring_exploratory:
        reasons = "; ".join(f"{t}: {', '.join(r)}" for t, r in cmp.scoring_exploratory.items())
        out.append(f'<span class="badge warn" title="{_e(reasons)}">scoring exploratory</span>')
    if mc.pooled:
        out.append('<span class="badge ok" title="one value per tag, pooled over the SLO windows of its test '
                   'runs">pooled</span>')
    for tag in cmp.tags[1:]:
        d = mc.diffs.get(tag)
        if d is not None:
            colour, word = _direction(mc, d)
            if word:
                out.append(f'<span class="badge" style="background:{colour};color:#fff">{_e(tag)} {word}</span>')
    return " ".join(out)


def _metric_text(mc, cmp) -> str:
    from analyze.formatting import fmt, fmt_ci, fmt_delta, fmt_diff, fmt_p

    unit, ref = mc.metric.unit, cmp.reference
    per_tag = []
    for t in cmp.tags:
        v = fmt(mc.values.get(t), unit)
        if mc.pooled:
            ci = mc.tag_ci.get(t)
            v += "" if ci is None else f" [{fmt(ci[0], unit)}, {fmt(ci[1], unit)}]"
            v += f" over {mc.n.get(t, 0)} test runs"
        else:
            runs = cmp.runs_of(t).runs
            v += f" over {runs} runs" if mc.n.get(t, 0) == runs else f" over {mc.n.get(t, 0)} of {runs} runs"
        per_tag.append(f"<b>{_e(t)}</b>{' (ref)' if t == ref else ''} {_e(v)}")
    what = "value (scoring's CI95)" if mc.pooled else "median"
    lines = [f'<p class="stat">{what}: ' + " · ".join(per_tag) + "</p>"]
    for t in cmp.tags[1:]:
        d = mc.diffs.get(t)
        if d is None:
            continue
        if mc.pooled:
            rest = "no CI of the difference, p-value or effect size: the scores are pooled over windows"
        else:
            rest = f"CI95 {fmt_ci(d, unit)}, p (Mann-Whitney U) {fmt_p(d.p_value)}, Cliff's δ {fmt_delta(d)}"
        lines.append(f'<p class="stat"><b>{_e(t)} − {_e(ref)}</b>: Δ {_e(fmt_diff(d, unit))}; {_e(rest)}</p>')
    return "\n".join(lines)


def _metric_anchor(mc) -> str:
    return "metric-" + mc.metric.key


def _compare_table(cmp) -> str:
    from analyze.formatting import diff_cells, value_cell

    several = len(cmp.tags) > 2
    header = ["metric"] + [f"{t}{' (ref)' if t == cmp.reference else ''}" for t in cmp.tags]
    for t in cmp.tags[1:]:
        suffix = f" {t}" if several else ""
        header += [f"Δ{suffix}", f"CI95 Δ{suffix}", f"p MWU{suffix}", f"Cliff's δ{suffix}"]
    rows = []
    for mc in cmp.metrics:
        row: list[Any] = [Raw(f'<a href="#{_metric_anchor(mc)}">{_e(mc.metric.label)}</a>')]
        row += [value_cell(mc, t, cmp.runs_of(t).runs) for t in cmp.tags]
        for t in cmp.tags[1:]:
            row += diff_cells(mc, t)
        rows.append(row)
    return '<div class="scroll">' + _table(header, rows, "metrics") + "</div>"


def _balance_table(cmp) -> str:
    tags = [tr.tag for tr in cmp.tag_runs]
    rows = [[s, *(tr.scenarios.get(s, 0) for tr in cmp.tag_runs)]
            for s in sorted({s for tr in cmp.tag_runs for s in tr.scenarios})]
    rows.append([f"all runs ({cmp.profile})", *(tr.runs for tr in cmp.tag_runs)])
    return _table(["scenario", *tags], rows, "tiers")


def render_compare_page(cmp, paths: Sequence[str], generated: str) -> str:
    """The page of a Comparison (analyze/compare.py): the verdict's context at the top (the
    baseline rule, the exploratory flag, notes, the table `sloan compare` prints), then one
    section and chart per metric."""
    title = "Release comparison: " + " vs ".join(cmp.tags)
    runs = ", ".join(f"{tr.tag} {tr.runs}" for tr in cmp.tag_runs)
    head = [f"<h1>{_e(title)}</h1>",
            (f'<p class="meta">profile {_e(cmp.profile)}; runs per tag: {_e(runs)}; runs below '
             f"{_e(', '.join(paths))}; generated {_e(generated)}.</p>")]
    if cmp.exploratory:
        head.append(f'<div class="exploratory" id="exploratory"><b>EXPLORATORY</b>: fewer than {cmp.min_runs} '
                    f"runs per tag and profile ({_e(runs)}); no distribution claim, never a release gate.</div>")
    else:
        head.append(f'<p><span class="badge ok">not exploratory</span> every tag has at least {cmp.min_runs} '
                    "runs of this profile.</p>")
    head.append(f"<p><b>Baseline:</b> {_e(cmp.rule)} (reference <b>{_e(cmp.reference)}</b>, "
                f"rule <code>{_e(cmp.rule_kind)}</code>).</p>")
    if cmp.notes:
        head.append('<div class="warnings"><b>Notes:</b><ul>' + "".join(f"<li>{_e(n)}</li>" for n in cmp.notes)
                    + "</ul></div>")
    head.append(_compare_table(cmp))
    head.append("<p><b>Runs per scenario</b> (class balance):</p>" + _balance_table(cmp))
    head.append(f'<p class="meta">Each run gives one value per metric; a tag\'s value is the median over its '
                f"runs. CI95: bootstrap over runs ({cmp.resamples:,} resamples, seed {cmp.seed}, within "
                "scenario); p: Mann-Whitney U, two-sided; Cliff's δ: negligible &lt; 0.147 ≤ small &lt; 0.33 ≤ "
                "medium &lt; 0.474 ≤ large. Attribution precision, recall and F1 are pooled by scoring over "
                "windows: one value per tag with scoring's CI95, the difference without a CI.</p>")
    head.append(f"<p><b>Attribution:</b> {_e(cmp.attribution)}</p>")
    sections = []
    for n, mc in enumerate(cmp.metrics):
        parts = [f'<h2 id="{_metric_anchor(mc)}">{_e(mc.metric.label)} {_metric_badges(mc, cmp)}</h2>',
                 _metric_text(mc, cmp)]
        if _has_data(mc):
            parts.append(_figure_html(compare_figure(mc, cmp), f"fig-{n}"))
        else:
            parts.append('<p class="muted">No run of any tag has a value of this metric.</p>')
        sections.append("\n".join(parts))
    return _page(title, "\n".join(head) + "\n" + "\n".join(sections), COMPARE_CSS)


def compare_page(cmp, paths: Sequence[str | Path]) -> str:
    """`sloan compare --html`: the self-contained page of a comparison, generated now."""
    return render_compare_page(cmp, [str(p) for p in paths], datetime.now(UTC).isoformat(timespec="seconds"))
