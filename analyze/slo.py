"""SLO evaluation of recorded runs: per-request SLIs, statuses, and error-budget burn
windows with the multi-window rule, scaled to the run's length.

SLIs, per request of the load generator (requests/*.parquet, sql/slo_requests.sql):

  ttft_ms               time to first token, ms            higher is worse   ok requests   pages
  tpot_ms               time per output token, ms          higher is worse   ok requests   pages
  error_rate            1.0 when status <> 'ok', else 0.0  higher is worse   every request pages
  request_latency_ms    e2e_ms, ms                         higher is worse   ok requests   reports
  token_throughput_tps  output_tokens / (e2e_ms / 1000)    LOWER is worse    ok requests   reports

TTFT, TPOT and the error rate are the serving SLIs of vLLM's benchmark and GuideLLM, and
page by default. The E2E latency of a streaming completion, and tokens/s over it, mostly
measure how many tokens were asked for: they are measured and reported, and page only
when config `slo.<sli>.page` says so. How the defaults were chosen: docs/slo.md.

Status against config `slo` (config/defaults.json): higher-is-worse SLIs are `breach` when
value >= breach, `warning` when value >= warning; tokens/s is `breach` when value <= breach
(10) and `warning` when value <= warning (30). Both boundaries are inclusive. A request's
error event (value 1.0) is a breach of error_rate; an ok request's (0.0) is ok.

Error budget: a request is *bad* for an SLI when its status is `breach`. The budget is the
fraction of bad requests the SLO tolerates, by default `slo.error_rate.warning` (2 %): the
config already accepts that share of failed requests before it warns, and we hold every SLI
to the same objective (98 % good). Burn rate over a window = (bad / measured requests in it)
/ budget; 1 spends the budget exactly, 1/budget (50) is every request bad. A window without
measured requests burns 0. A request counts for an SLI in the window where that SLI was
observed, as a serving engine's metrics observe it (vLLM's TTFT histogram at the first
token, its E2E one at the end): ttft_ms at its first token (first_token_ns), every other
SLI when the request ended (done_ns). A TTFT fault so burns while its slow requests still
stream, not only once they end. A TTFT breach counts as soon as it is certain: a request
still without a first token `breach` ms after it was sent is bad from then on
(ttft_observed_ns), so a stall burns while the requests wait.

Multi-window rule (Google SRE workbook, "Alerting on SLOs", page tier): page when both the
1 h and the 5 m window burn >= 14.4, or both the 6 h and the 30 m window burn >= 6.

Scaling: a 40 s smoke run has no 1 h window, so every window is scaled by one factor,
run length / 6 h. The longest window (6 h) becomes the run's length T and the ratios of the
workbook stay exactly as they are (6 h : 1 h : 30 m : 5 m = 72 : 12 : 6 : 1):

  slow pair   long = T        (6 h)     short = T / 12  (30 m)
  fast pair   long = T / 6    (1 h)     short = T / 72  (5 m)

T is the sum of the manifest's phases (40 s for the smoke profile: windows 40 s, 3.33 s,
6.67 s, 0.56 s; 25 min for the full profile: 25 min, 125 s, 250 s, 20.8 s); a recording
without phases uses its first scheduled request to its last ended one. The rule is
evaluated every T / 12 (the short slow window) from the first scheduled request on; each
evaluation closes a *window* [t - T/12, t), the unit the attribution explains. A window
violates when any SLI pages at its end; windows reaching back before the run start see only
the run. The scaling goes into every output (`BurnScaling.to_dict`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from runfmt.errors import ConfigError, DataError

SLIS = ("ttft_ms", "tpot_ms", "error_rate", "request_latency_ms", "token_throughput_tps")
UNITS = {"ttft_ms": "ms", "tpot_ms": "ms", "request_latency_ms": "ms", "token_throughput_tps": "tokens/s",
         "error_rate": "ratio"}
# SLI -> key of its thresholds in config `slo`
CONFIG_KEYS = {"ttft_ms": "ttft_ms", "tpot_ms": "tpot_ms", "request_latency_ms": "request_latency_ms",
               "token_throughput_tps": "tokens_per_second", "error_rate": "error_rate"}
LOWER_IS_WORSE = frozenset({"token_throughput_tps"})
STATUSES = ("ok", "warning", "breach")

# the workbook's page tier: (name, long window, short window, burn rate), windows in hours
WORKBOOK_WINDOWS_H = {"long_slow": 6.0, "short_slow": 0.5, "long_fast": 1.0, "short_fast": 5 / 60}
FAST_BURN = 14.4
SLOW_BURN = 6.0
RULES = (("fast", "long_fast", "short_fast", FAST_BURN), ("slow", "long_slow", "short_slow", SLOW_BURN))
WORKBOOK_LABELS = {"long_slow": "6h", "short_slow": "30m", "long_fast": "1h", "short_fast": "5m"}

_POD_SUFFIX = re.compile(r"-[0-9a-z]{5,10}$")  # kubelet: <workload>-<replicaset hash>-<5 chars>


# --- thresholds -------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    warning: float
    breach: float
    lower_is_worse: bool = False
    page: bool = True  # its burn rate pages; False: measured and reported only

    def statuses(self, values: np.ndarray) -> np.ndarray:
        """ok / warning / breach per value (object array); NaN (not measured) -> None."""
        v = np.asarray(values, dtype=float)
        out = np.full(v.shape, "ok", dtype=object)
        with np.errstate(invalid="ignore"):
            if self.lower_is_worse:
                out[v <= self.warning] = "warning"
                out[v <= self.breach] = "breach"
            else:
                out[v >= self.warning] = "warning"
                out[v >= self.breach] = "breach"
        out[np.isnan(v)] = None
        return out

    def status(self, value: float) -> str:
        return str(self.statuses(np.array([value]))[0])


def thresholds_from_config(config: Mapping) -> dict[str, Thresholds]:
    slo = config.get("slo") if isinstance(config, Mapping) else None
    if not isinstance(slo, Mapping):
        raise ConfigError("config has no 'slo' section", "load it with runfmt.config.load_config()")
    out = {}
    for sli, key in CONFIG_KEYS.items():
        t = slo.get(key)
        if not isinstance(t, Mapping) or "warning" not in t or "breach" not in t:
            raise ConfigError(f"config slo.{key} needs warning and breach", "see config/defaults.json")
        out[sli] = Thresholds(float(t["warning"]), float(t["breach"]), sli in LOWER_IS_WORSE,
                              bool(t.get("page", True)))
    return out


def default_budget(config: Mapping) -> float:
    """The error budget: slo.error_rate.warning (see the module docstring)."""
    return check_budget(float(config["slo"]["error_rate"]["warning"]))


def check_budget(budget: float) -> float:
    if not 0 < budget < 1:
        raise ConfigError(f"error budget {budget!r} is not a fraction between 0 and 1",
                          "pass e.g. --budget 0.02 (an objective of 98 % good requests)")
    return budget


# --- burn windows -----------------------------------------------------------------------


@dataclass(frozen=True)
class BurnScaling:
    """The workbook's windows scaled to a run of `run_s` seconds (module docstring)."""

    run_s: float

    @property
    def factor(self) -> float:
        return self.run_s / (WORKBOOK_WINDOWS_H["long_slow"] * 3600)

    def seconds(self, name: str) -> float:
        return WORKBOOK_WINDOWS_H[name] * 3600 * self.factor

    @property
    def step_s(self) -> float:
        return self.seconds("short_slow")

    def to_dict(self) -> dict:
        return {"rule": "page when long and short window both burn >= threshold: "
                        f"fast 1h+5m >= {FAST_BURN}, slow 6h+30m >= {SLOW_BURN}",
                "scaling": "every workbook window x run_s / 6h (6h -> run length, ratios kept)",
                "run_s": round(self.run_s, 3), "factor": self.factor,
                "windows_s": {n: round(self.seconds(n), 3) for n in WORKBOOK_WINDOWS_H},
                "stands_for": dict(WORKBOOK_LABELS), "step_s": round(self.step_s, 3)}


@dataclass(frozen=True)
class SloWindow:
    """One evaluation: the window [start_ns, end_ns) and the burn rates ending at end_ns."""

    index: int  # 1-based
    start_ns: int
    end_ns: int
    requests: int  # requests that ended inside [start_ns, end_ns)
    burn: dict[str, dict[str, float]]  # sli -> window name -> burn rate
    paging: dict[str, str]  # sli -> "fast" | "slow" | "fast+slow", only SLIs that page

    @property
    def violating(self) -> bool:
        return bool(self.paging)

    def impact(self, scaling: BurnScaling) -> tuple[str, float, float] | None:
        """(sli, burn rate, window seconds) of the paging SLI that burns fastest."""
        best = None
        for sli, rule in self.paging.items():
            long_name = "long_fast" if "fast" in rule else "long_slow"
            rate = self.burn[sli][long_name]
            if best is None or rate > best[1]:
                best = (sli, rate, scaling.seconds(long_name))
        return best

    def to_dict(self, run_start_ns: int | None = None) -> dict:
        d = {"index": self.index, "start_ns": self.start_ns, "end_ns": self.end_ns,
             "requests": self.requests, "violating": self.violating, "paging": dict(self.paging),
             "burn": {s: {w: round(r, 4) for w, r in b.items()} for s, b in self.burn.items()}}
        if run_start_ns is not None:
            d["start_s"] = round((self.start_ns - run_start_ns) / 1e9, 3)
            d["end_s"] = round((self.end_ns - run_start_ns) / 1e9, 3)
        return d


def burn_windows(done_ns: np.ndarray, bad: Mapping[str, np.ndarray], measured: Mapping[str, np.ndarray],
                 start_ns: int, scaling: BurnScaling, budget: float, n_windows: int | None = None,
                 pages: frozenset[str] | None = None,
                 observed_ns: Mapping[str, np.ndarray] | None = None) -> list[SloWindow]:
    """Evaluates the rule every scaling.step_s from start_ns.

    done_ns: when each request ended; bad[sli] / measured[sli]: boolean arrays over the same
    requests; observed_ns[sli]: when that SLI was observed, for the SLIs not observed at
    done_ns. Without n_windows, enough windows to cover the last request. Burn rates are
    computed for every SLI; only those in `pages` (all when None) can page."""
    done = np.asarray(done_ns, dtype=np.int64)
    observed_ns = observed_ns or {}
    step_ns = scaling.step_s * 1e9
    if step_ns <= 0:
        raise DataError(f"run length {scaling.run_s!r} s leaves no burn window", "record a longer run")
    if n_windows is None:
        last = int(done.max()) if done.size else start_ns
        n_windows = max(1, math.ceil((last - start_ns + 1) / step_ns))
    ends = start_ns + np.round(np.arange(1, n_windows + 1) * step_ns).astype(np.int64)
    starts = np.concatenate(([start_ns], ends[:-1]))
    done_sorted = np.sort(done)
    in_window = (np.searchsorted(done_sorted, ends, "left") - np.searchsorted(done_sorted, starts, "left"))
    rates: dict[str, dict[str, np.ndarray]] = {}
    for sli in bad:
        at = np.asarray(observed_ns.get(sli, done), dtype=np.int64)
        by_time = np.argsort(at, kind="stable")
        m = np.asarray(measured[sli], bool)[by_time]
        b = np.asarray(bad[sli], bool)[by_time] & m
        t = at[by_time][m]
        cum_bad = np.concatenate(([0], np.cumsum(b[m])))
        rates[sli] = {}
        for name in WORKBOOK_WINDOWS_H:
            lo = ends - np.int64(round(scaling.seconds(name) * 1e9))
            i_hi = np.searchsorted(t, ends, "left")  # window [end - L, end)
            i_lo = np.searchsorted(t, lo, "left")
            total = i_hi - i_lo
            nbad = cum_bad[i_hi] - cum_bad[i_lo]
            with np.errstate(invalid="ignore", divide="ignore"):
                rates[sli][name] = np.where(total > 0, nbad / np.maximum(total, 1) / budget, 0.0)
    windows = []
    for k in range(n_windows):
        burn = {sli: {name: float(r[k]) for name, r in per.items()} for sli, per in rates.items()}
        paging = {}
        for sli, b in burn.items():
            if pages is not None and sli not in pages:
                continue
            fired = [rule for rule, long_w, short_w, threshold in RULES
                     if b[long_w] >= threshold and b[short_w] >= threshold]
            if fired:
                paging[sli] = "+".join(fired)
        windows.append(SloWindow(k + 1, int(starts[k]), int(ends[k]), int(in_window[k]), burn, paging))
    return windows


# --- runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What the manifest (and folder names) say about a run."""

    run_dir: Path
    run_id: str
    tag: str
    scenario: str
    node: str
    profile: str | None
    mode: str | None
    signals: dict[str, bool]  # signal -> attached
    phases: dict[str, float]  # name -> seconds, in order
    complete: bool | None
    state: str = "finished"  # or recording, or cut (runfmt.manifest.run_state)
    degraded: bool = False  # the recorder shed load (manifest safety.actions)

    @classmethod
    def read(cls, run_dir: Path) -> RunInfo:
        from runfmt.manifest import read_manifest, run_state

        run_dir = Path(run_dir)
        m = read_manifest(run_dir)  # DataError naming the file (and field) when damaged
        cap = m.get("capability") or {}
        signals = {name: bool(s.get("attached")) for name, s in (cap.get("signals") or {}).items()}
        phases = m.get("phases") or {}
        return cls(run_dir, str(m.get("run_id") or run_dir.name.removeprefix("run=")),
                   str(m.get("tag") or ""), str(m.get("scenario") or ""),
                   str(m.get("node") or (m.get("host") or {}).get("hostname") or "unknown"),
                   m.get("profile"), cap.get("mode"), signals,
                   {str(k): float(v) for k, v in phases.items()}, m.get("complete"),
                   run_state(run_dir, m), bool(m.get("degraded")))

    @property
    def run_s(self) -> float | None:
        return sum(self.phases.values()) or None

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "run_id": self.run_id, "tag": self.tag,
                "scenario": self.scenario, "node": self.node, "profile": self.profile,
                "mode": self.mode, "signals": dict(self.signals), "phases": dict(self.phases),
                "complete": self.complete, "state": self.state, "degraded": self.degraded}


@dataclass(frozen=True)
class Workload:
    """Who the SLO events are about (slo-event: cluster, namespace, workload, service)."""

    cluster: str
    namespace: str
    workload: str
    service: str
    pods: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "namespace": self.namespace, "workload": self.workload,
                "service": self.service, "pods": list(self.pods)}


def workload_of(pod: str | None, service: str) -> str:
    """The owner name from a kubelet pod name (<workload>-<hash>[-<suffix>]), else the service."""
    if not pod:
        return service
    name = _POD_SUFFIX.sub("", pod)
    name = _POD_SUFFIX.sub("", name) if name != pod else name
    return name or service


def entry_workload(con, info: RunInfo) -> Workload:
    """The service that served the requests (sql/slo_entry_service.sql); cluster = node."""
    from runfmt import queries

    rows = queries.run(con, "slo_entry_service").to_pylist()
    if not rows:
        return Workload(info.node, "unknown", "unknown", "unknown")
    service = rows[0]["service_name"]
    mine = [r for r in rows if r["service_name"] == service]
    pods = tuple(sorted({r["pod"] for r in mine if r["pod"]}))
    namespace = next((r["namespace"] for r in mine if r["namespace"]), None) or "default"
    return Workload(info.node, namespace, workload_of(pods[0] if pods else None, service), service, pods)


@dataclass
class RunSlo:
    """The SLO view of one run."""

    info: RunInfo
    workload: Workload
    scaling: BurnScaling
    budget: float
    start_ns: int
    requests: dict[str, np.ndarray]  # column -> array (sql/slo_requests.sql), plus <sli>_status
    windows: list[SloWindow]
    thresholds: dict[str, Thresholds]

    @property
    def violating(self) -> list[SloWindow]:
        return [w for w in self.windows if w.violating]

    def summary(self) -> dict[str, dict]:
        out = {}
        for sli in SLIS:
            status = self.requests[f"{sli}_status"]
            values = self.requests[sli][status != None]  # noqa: E711 (object array)
            counts = {s: int(np.sum(status == s)) for s in STATUSES}
            out[sli] = {"measured": int(values.size), **counts,
                        "p50": _q(values, 0.5), "p95": _q(values, 0.95), "unit": UNITS[sli],
                        "bad_share": round(counts["breach"] / values.size, 4) if values.size else None}
        return out

    def to_dict(self) -> dict:
        return {"run": self.info.to_dict(), "workload": self.workload.to_dict(),
                "requests": int(self.requests["request_id"].size), "budget": self.budget,
                "scaling": self.scaling.to_dict(), "summary": self.summary(),
                "windows": [w.to_dict(self.start_ns) for w in self.windows],
                "violating_windows": [w.index for w in self.violating]}

    def events(self, validate: bool = True) -> Iterator[dict]:
        """v1 SLO events, one per request and measured SLI (docs/contracts/v1/slo-event)."""
        from runfmt.contracts import validate as check

        r = self.requests
        base_labels = {"run": self.info.run_id, "tag": self.info.tag, "scenario": self.info.scenario}
        for i in range(r["request_id"].size):
            ts = rfc3339(int(r["done_ns"][i]))
            labels = dict(base_labels)
            if r["phase"][i] is not None:
                labels["phase"] = str(r["phase"][i])
            for sli in SLIS:
                status = r[f"{sli}_status"][i]
                if status is None:
                    continue
                event = {"event_id": f"{self.info.run_id}:{r['request_id'][i]}:{sli}", "timestamp": ts,
                         "cluster": self.workload.cluster, "namespace": self.workload.namespace,
                         "workload": self.workload.workload, "service": self.workload.service,
                         "request_id": str(r["request_id"][i]), "sli_name": sli,
                         "sli_value": round(float(r[sli][i]), 6), "unit": UNITS[sli], "status": status,
                         "labels": labels}
                if r["trace_id"][i] is not None:
                    event["trace_id"] = str(r["trace_id"][i])
                if validate:
                    check("v1/slo-event", event)
                yield event


def _q(values: np.ndarray, q: float) -> float | None:
    return round(float(np.quantile(values.astype(float), q)), 3) if values.size else None


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def evaluate_con(con, info: RunInfo, config: Mapping, budget: float | None = None) -> RunSlo:
    """The SLO view of the one run whose views `con` holds."""
    from runfmt import queries

    thresholds = thresholds_from_config(config)
    budget = default_budget(config) if budget is None else check_budget(budget)
    table = queries.run(con, "slo_requests")
    if table.num_rows == 0:
        raise DataError(f"{info.run_dir}: nothing to analyze: no requests recorded (requests/*.parquet holds no rows)",
                        "SLOs are measured on requests/*.parquet, which the load generator writes; "
                        "leave that run out")
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    # nulls would make it float (NaN), which cannot hold a wall-clock ns exactly: -1 = never sent
    cols["sent_ns"] = table.column("sent_ns").fill_null(-1).to_numpy()
    for sli in SLIS:
        cols[sli] = np.array([np.nan if v is None else v for v in cols[sli]], dtype=float)
        cols[f"{sli}_status"] = thresholds[sli].statuses(cols[sli])
    start_ns = int(cols["scheduled_ns"].min())
    done = cols["done_ns"].astype(np.int64)
    run_s = info.run_s or max((int(done.max()) - start_ns) / 1e9, 1e-3)
    scaling = BurnScaling(run_s)
    measured = {sli: cols[f"{sli}_status"] != None for sli in SLIS}  # noqa: E711
    bad = {sli: cols[f"{sli}_status"] == "breach" for sli in SLIS}
    pages = frozenset(sli for sli, t in thresholds.items() if t.page)
    observed = {"ttft_ms": ttft_observed_ns(cols, thresholds["ttft_ms"].breach)}
    windows = burn_windows(done, bad, measured, start_ns, scaling, budget, pages=pages, observed_ns=observed)
    return RunSlo(info, entry_workload(con, info), scaling, budget, start_ns, cols, windows, thresholds)


def ttft_observed_ns(cols: Mapping[str, np.ndarray], breach_ms: float) -> np.ndarray:
    """When each request's TTFT is known: at its first token, or, for a request whose first
    token comes at or after the breach, as soon as it has waited breach_ms since it was sent
    (the breach is certain then). A stalled connect or a hung backend so burns while the
    requests wait, not only once (or if ever) a first token arrives."""
    first = cols["first_token_ns"].astype(np.int64)
    sent = np.asarray(cols["sent_ns"], dtype=np.int64)  # -1: never sent
    certain = sent + np.int64(round(breach_ms * 1e6))
    late = (sent >= 0) & (cols["ttft_ms_status"] == "breach") & (certain < first)
    return np.where(late, certain, first)


def evaluate_run(run_dir: Path, config: Mapping, budget: float | None = None) -> RunSlo:
    from analyze.session import open_runs

    info = RunInfo.read(run_dir)
    runs = open_runs([Path(run_dir)])
    try:
        return runs.use(lambda con: evaluate_con(con, info, config, budget))
    finally:
        runs.con.close()


@dataclass
class SloResult:
    runs: list[RunSlo] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"slis": {s: {"unit": UNITS[s], "lower_is_worse": s in LOWER_IS_WORSE,
                             "pages": self.runs[0].thresholds[s].page if self.runs else None} for s in SLIS},
                "runs": [r.to_dict() for r in self.runs]}


def evaluate(paths, config: Mapping, budget: float | None = None) -> SloResult:
    """Every run below `paths`."""
    from analyze.session import find_runs

    return SloResult([evaluate_run(d, config, budget) for d in find_runs([Path(p) for p in paths])])
