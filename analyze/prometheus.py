"""Prometheus rules for the SLOs of the config: a recording rule per SLI and window for the
share of bad requests, and multi-window, multi-burn-rate alerts over them (Google SRE
workbook, "Alerting on SLOs"), read from the metrics the serving engine already exports.

Alerts, per SLI whose config `slo.<sli>.page` is true; burn rate = bad share / budget:

  fast    page     burn >= 14.4 over both 1 h and 5 m      (2 % of a 30-day budget in 1 h)
  slow    page     burn >= 6    over both 6 h and 30 m     (5 % of it in 6 h)
  ticket  ticket   burn >= 1    over both 3 d and 6 h      (the budget is being spent)

The page tiers are those of analyze/slo.py (RULES), unscaled: Prometheus sees real time.
An SLI with `page: false` (E2E latency and tokens/s by default) gets its recording rules
only: `sloan slo` measures and reports it without paging, and so do these rules. A ticket
on it would be noise: the lab's healthy E2E p50 (about 2.1 s) is above its 1.5 s breach.

Budget: `slo.error_rate.warning` (2 %) unless given, the same for every SLI, as in
analyze/slo.py.

Bad events, from histograms (`_bucket{le}`, `_count`) and counters:

  latency SLI   1 - rate(<histogram>_bucket{le="<breach>"}) / rate(<histogram>_count)
  error_rate    rate(<finished requests>{<failed>}) / rate(<finished requests>)

A histogram only tells how many requests took at most a bucket boundary, so the breach must
be one. When the config's breach is none of the exporter's default boundaries, the nearest
boundary is used (the lower on a tie: no request above the breach goes uncounted) and a
warning says so; it is also written at the top of the rules file. A request exactly at the
breach is bad for `sloan slo` (value >= breach) and good here (value <= le); for
continuous times that difference is empty.

Metric sets (`METRIC_SETS`): vLLM's Prometheus metrics (vllm/v1/metrics/loggers.py upstream)
and the OpenTelemetry GenAI server metrics as Prometheus names them. Every name can be
overridden; an overridden histogram is assumed to keep the set's bucket boundaries.

Python's Prometheus client (vLLM) writes a whole bucket boundary as le="1.0", and so does
Prometheus 3 on ingestion; an OpenTelemetry Collector exporter writes le="1". A whole
boundary is therefore matched as le=~"1(\\.0)?".

The rules file is YAML, written here without a YAML library: keys are plain, strings are
JSON-quoted (valid YAML) and expressions are literal blocks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from analyze.slo import (
    CONFIG_KEYS, RULES, SLIS, WORKBOOK_LABELS, check_budget, default_budget, thresholds_from_config,
)
from runfmt.config import config_hash
from runfmt.errors import ConfigError

TICKET_BURN = 1.0
RECORD = "sloan:bad_requests:ratio_rate{window}"  # level:metric:operations, one per window

# (tier, severity, burn rate, long window, short window)
TIERS = (*((rule, "page", burn, WORKBOOK_LABELS[long_w], WORKBOOK_LABELS[short_w])
           for rule, long_w, short_w, burn in RULES),
         ("ticket", "ticket", TICKET_BURN, "3d", "6h"))
WINDOWS = ("5m", "30m", "1h", "6h", "3d")  # every window of TIERS, shortest first

# in alert names and summaries
SHORT = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "error_rate": "Errors", "request_latency_ms": "E2ELatency"}
# what makes a request bad, completed with the threshold
BAD_BECAUSE = {"ttft_ms": "first token after {t}", "tpot_ms": "more than {t} per output token",
               "request_latency_ms": "more than {t} end to end"}

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MATCHER = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*')


@dataclass(frozen=True)
class Histogram:
    """A latency histogram in seconds: its name without _bucket/_count, its boundaries."""

    name: str
    buckets: tuple[float, ...]


@dataclass(frozen=True)
class Requests:
    """A counter of finished requests (or a histogram's _count) and the matcher of failed ones."""

    name: str
    failed: str


@dataclass(frozen=True)
class MetricSet:
    ttft_ms: Histogram
    tpot_ms: Histogram
    request_latency_ms: Histogram
    error_rate: Requests
    about: str

    def replace(self, **names: str | None) -> MetricSet:
        """The set with some names overridden (None keeps the set's)."""
        hist = {sli: Histogram(names[sli], getattr(self, sli).buckets) if names.get(sli) else getattr(self, sli)
                for sli in ("ttft_ms", "tpot_ms", "request_latency_ms")}
        err = self.error_rate
        err = Requests(names.get("requests") or err.name, names.get("failed") or err.failed)
        return MetricSet(**hist, error_rate=err, about=self.about)


# vLLM's default boundaries (vllm/v1/metrics/loggers.py upstream): TTFT, per-request TPOT, E2E
_VLLM_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
              20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_VLLM_TPOT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
              20.0, 40.0, 80.0)
_VLLM_E2E = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
             240.0, 480.0, 960.0, 1920.0, 7680.0)
# the boundaries the OpenTelemetry GenAI semantic conventions recommend
_OTEL_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_OTEL_TPOT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_OTEL_DURATION = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

METRIC_SETS = {
    # TPOT: the per-request histogram, as the SLI is per request. vllm:time_per_output_token_seconds
    # (one sample per token, the same boundaries) was renamed vllm:inter_token_latency_seconds in
    # vLLM 0.11 and removed later. A failed request: finished_reason "error" (an internal error,
    # answered 500) or "abort" (the client gave up, as the load generator does on a timeout).
    "vllm": MetricSet(
        ttft_ms=Histogram("vllm:time_to_first_token_seconds", _VLLM_TTFT),
        tpot_ms=Histogram("vllm:request_time_per_output_token_seconds", _VLLM_TPOT),
        request_latency_ms=Histogram("vllm:e2e_request_latency_seconds", _VLLM_E2E),
        error_rate=Requests("vllm:request_success_total", 'finished_reason=~"error|abort"'),
        about="vLLM's Prometheus metrics"),
    # gen_ai.server.* histograms (unit s) under their Prometheus names; a failed request carries
    # error.type, which becomes the label error_type
    "otel-genai": MetricSet(
        ttft_ms=Histogram("gen_ai_server_time_to_first_token_seconds", _OTEL_TTFT),
        tpot_ms=Histogram("gen_ai_server_time_per_output_token_seconds", _OTEL_TPOT),
        request_latency_ms=Histogram("gen_ai_server_request_duration_seconds", _OTEL_DURATION),
        error_rate=Requests("gen_ai_server_request_duration_seconds_count", 'error_type!=""'),
        about="the OpenTelemetry GenAI server metrics"),
}


@dataclass(frozen=True)
class SliRules:
    """What the rules of one SLI measure."""

    sli: str
    pages: bool
    metric: str
    threshold_s: float | None = None  # the bucket boundary used, seconds; None for error_rate

    def bad_because(self) -> str:
        if self.threshold_s is None:
            return "failed"
        return BAD_BECAUSE[self.sli].format(t=_seconds_text(self.threshold_s))


@dataclass
class RuleFile:
    """A Prometheus rules file: `groups` as Prometheus reads them, `notes` for its header."""

    groups: list[dict]
    slis: list[SliRules]
    budget: float
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def alerts(self) -> list[str]:
        return [r["alert"] for g in self.groups for r in g["rules"] if "alert" in r]

    @property
    def records(self) -> int:
        return sum("record" in r for g in self.groups for r in g["rules"])

    def to_yaml(self) -> str:
        header = "".join(f"# {line}\n" if line else "#\n" for line in self.notes)
        return header + "\n".join(_yaml({"groups": self.groups})) + "\n"


def nearest_boundary(threshold_s: float, buckets: Sequence[float]) -> tuple[float, bool]:
    """(the boundary to use, whether it is the threshold itself): the nearest, the lower on a tie."""
    for b in buckets:
        if math.isclose(b, threshold_s, rel_tol=1e-9):
            return b, True
    best = min(buckets, key=lambda b: (abs(b - threshold_s), b))
    return best, False


def prometheus_rules(config: Mapping, metrics: str = "vllm", *, budget: float | None = None,
                     names: Mapping[str, str | None] | None = None, selector: str = "",
                     by: Sequence[str] = (), source: str = "config/defaults.json") -> RuleFile:
    """The rules file for the SLOs of `config`, reading the metric set `metrics`.

    names: overrides of the set's metric names: ttft_ms, tpot_ms, request_latency_ms (histogram
    names without _bucket), requests (finished requests), failed (the matcher of failed ones).
    selector: label matchers added to every series read ('job="vllm"'). by: labels the sums keep;
    each value of them is then an SLO of its own, and alerts carry them."""
    if metrics not in METRIC_SETS:
        raise ConfigError(f"unknown metric set {metrics!r}", f"use one of: {', '.join(METRIC_SETS)}")
    mset = METRIC_SETS[metrics].replace(**(names or {}))
    _check_names(mset)
    selector = _check_selector(selector)
    by = _check_by(by)
    budget = default_budget(config) if budget is None else check_budget(budget)
    thresholds = thresholds_from_config(config)

    slis, groups, warnings, uncovered = [], [], [], []
    for sli in SLIS:
        source_of = getattr(mset, sli, None)
        if source_of is None:
            uncovered.append(sli)
            continue
        pages = thresholds[sli].page
        if isinstance(source_of, Histogram):
            configured = thresholds[sli].breach / 1000  # every latency SLI is in ms
            le, exact = nearest_boundary(configured, source_of.buckets)
            if not exact:
                warnings.append(
                    f"slo.{CONFIG_KEYS[sli]}.breach {_seconds_text(configured)} is not a bucket boundary of "
                    f"{source_of.name}; using le=\"{_le_text(le)}\" ({_seconds_text(le)}), the nearest: "
                    + (f"requests between {_seconds_text(le)} and {_seconds_text(configured)} count as bad"
                       if le < configured else
                       f"requests between {_seconds_text(configured)} and {_seconds_text(le)} count as good"))
            rules = SliRules(sli, pages, source_of.name, le)
            ratio = {w: _latency_ratio(source_of.name, le, w, selector, by) for w in WINDOWS}
        else:
            rules = SliRules(sli, pages, source_of.name)
            ratio = {w: _error_ratio(source_of, w, selector, by) for w in WINDOWS}
        slis.append(rules)
        groups.append(_group(rules, ratio, budget, mset))

    notes = _header(metrics, mset, source, config_hash(dict(config)), budget, slis, uncovered, selector, by)
    notes += [f"warning: {w}" for w in warnings]
    return RuleFile(groups, slis, budget, notes, warnings)


# --- expressions ---------------------------------------------------------------------------


def _series(name: str, *matchers: str) -> str:
    inner = ", ".join(m for m in matchers if m)
    return f"{name}{{{inner}}}" if inner else name


def _sum(by: Sequence[str]) -> str:
    return f"sum by ({', '.join(by)}) " if by else "sum"


def _rate(series: str, window: str, by: Sequence[str]) -> str:
    return f"{_sum(by)}(rate({series}[{window}]))"


def _le_text(le: float) -> str:
    return repr(float(le))


def _le_matcher(le: float) -> str:
    if float(le).is_integer():
        return f'le=~"{int(le)}(\\\\.0)?"'
    return f'le="{_le_text(le)}"'


def _latency_ratio(name: str, le: float, window: str, selector: str, by: Sequence[str]) -> str:
    good = _rate(_series(f"{name}_bucket", selector, _le_matcher(le)), window, by)
    total = _rate(_series(f"{name}_count", selector), window, by)
    return f"1 - (\n  {good}\n  /\n  {total}\n)"


def _error_ratio(req: Requests, window: str, selector: str, by: Sequence[str]) -> str:
    failed = _rate(_series(req.name, selector, req.failed), window, by)
    total = _rate(_series(req.name, selector), window, by)
    # no series of failed requests yet (none failed) is a share of 0, not no data
    return f"(\n  {failed}\n  or\n  0 * {total}\n)\n/\n{total}"


def _record(window: str) -> str:
    return RECORD.format(window=window)


def _group(rules: SliRules, ratio: Mapping[str, str], budget: float, mset: MetricSet) -> dict:
    sli = rules.sli
    out: list[dict] = [{"record": _record(w), "expr": ratio[w], "labels": {"sli": sli}} for w in WINDOWS]
    if rules.pages:
        for tier, severity, burn, long_w, short_w in TIERS:
            limit = f"({_num(burn)} * {_num(budget)})"
            expr = (f'{_record(long_w)}{{sli="{sli}"}} >= {limit}\n'
                    f"and\n"
                    f'{_record(short_w)}{{sli="{sli}"}} >= {limit}')
            out.append({
                "alert": f"{SHORT[sli]}ErrorBudget{tier.capitalize()}Burn" if tier != "ticket"
                else f"{SHORT[sli]}ErrorBudgetTicket",
                "expr": expr,
                "labels": {"severity": severity, "burn": tier},
                "annotations": {
                    "summary": f"{SHORT[sli]}: error budget burning at {_num(burn)}x or more "
                               f"over {long_w} and {short_w}",
                    "description": (
                        f"{{{{ $value | humanizePercentage }}}} of requests in the last {long_w} were bad: "
                        f"{rules.bad_because()} ({_what(rules, mset)}). The SLO allows {_pct(budget)}; "
                        f"this fires at {_num(burn)}x that ({_pct(burn * budget)}) over both {long_w} "
                        f"and {short_w}."),
                },
            })
    return {"name": f"sloan-slo-{sli}", "rules": out}


def _what(rules: SliRules, mset: MetricSet) -> str:
    if rules.threshold_s is None:
        return f"{mset.error_rate.name}{{{mset.error_rate.failed}}}"
    return f"{rules.metric}, le={_le_text(rules.threshold_s)}"


def _header(metrics: str, mset: MetricSet, source: str, chash: str, budget: float,
            slis: list[SliRules], uncovered: list[str], selector: str, by: Sequence[str]) -> list[str]:
    lines = [
        f"Prometheus rules for the LLM SLOs: sloan rules prometheus --metrics {metrics}",
        f"from {source} (config hash {chash}); regenerate rather than edit. docs/slo.md explains them.",
        f"Reads {mset.about}" + (f", series matching {{{selector}}}" if selector else "")
        + (f", one SLO per {', '.join(by)}" if by else "") + ".",
        f"Error budget {_pct(budget)} of requests per SLI (objective {_pct(1 - budget)} good).",
        "Alerts (SRE workbook, multi-window multi-burn-rate): "
        + "; ".join(f"{sev} at {_num(burn)}x over {lw} and {sw}" for _, sev, burn, lw, sw in TIERS) + ".",
        "",
    ]
    for r in slis:
        what = "pages and tickets" if r.pages else "recorded only (slo." + CONFIG_KEYS[r.sli] + ".page is false)"
        lines.append(f"{r.sli}: bad = {r.bad_because()} ({_what(r, mset)}); {what}")
    for sli in uncovered:
        lines.append(f"{sli}: not covered; no exporter has a per-request histogram of it")
    return lines


def _seconds_text(s: float) -> str:
    return f"{s * 1000:g} ms" if s < 1 else f"{s:g} s"


def _num(v: float) -> str:
    return f"{v:g}"


def _pct(v: float) -> str:
    return f"{v * 100:.4g}%"


# --- checks --------------------------------------------------------------------------------


def _check_names(mset: MetricSet) -> None:
    for sli in ("ttft_ms", "tpot_ms", "request_latency_ms"):
        name = getattr(mset, sli).name
        if not _METRIC_NAME.fullmatch(name):
            raise ConfigError(f"{name!r} is not a Prometheus metric name",
                              "give the histogram's name without _bucket or _count, e.g. "
                              "vllm:time_to_first_token_seconds")
    if not _METRIC_NAME.fullmatch(mset.error_rate.name):
        raise ConfigError(f"{mset.error_rate.name!r} is not a Prometheus metric name",
                          "give the counter of finished requests, e.g. vllm:request_success_total")
    if not _matchers(mset.error_rate.failed):
        raise ConfigError(f"{mset.error_rate.failed!r} is not a label matcher",
                          'give one or more matchers, e.g. finished_reason="error"')


def _check_selector(selector: str) -> str:
    selector = selector.strip().strip(",")
    if selector and not _matchers(selector):
        raise ConfigError(f"selector {selector!r} is not a list of label matchers",
                          'write them as inside braces, without the braces: job="vllm",model_name=~"llama.*"')
    return selector


def _matchers(text: str) -> bool:
    parts, rest = [], text
    while rest:
        m = _MATCHER.match(rest)
        if not m:
            return False
        parts.append(m.group(0))
        rest = rest[m.end():]
        if rest.startswith(","):
            rest = rest[1:]
        elif rest:
            return False
    return bool(parts)


def _check_by(by: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(b.strip() for b in by if b.strip())
    for label in labels:
        if not _LABEL_NAME.fullmatch(label) or label == "le":
            raise ConfigError(f"{label!r} cannot group the SLO",
                              "give label names, comma-separated, e.g. model_name,namespace")
    return labels


# --- YAML ----------------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_:.\-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def _yaml(value, indent: int = 0) -> list[str]:
    """Block-style YAML lines for dicts, lists of dicts and scalars."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, (dict, list)):
                lines.append(f"{pad}{key}:")
                lines += _yaml(v, indent + 2)
            elif isinstance(v, str) and "\n" in v:
                lines.append(f"{pad}{key}: |-")
                lines += [f"{pad}  {line}" if line else "" for line in v.split("\n")]
            else:
                lines.append(f"{pad}{key}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            sub = _yaml(item, indent + 2)
            lines.append(f"{pad}- {sub[0].lstrip()}")
            lines += sub[1:]
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines
