"""Attribution: which fault domain burned the SLO in each violating window, and why.

For every window the SLO evaluation flags (analyze.slo: multi-window burn rule, windows
scaled to the run), the attribution compares what the *entry service* (the gateway that
served the requests, sql/slo_entry_service.sql) went through in that window with what it
went through in the run's own reference period, and turns the shifts into one posterior per
v1 fault domain. It never reads labels.parquet, nor the lab's `lab.*` span attributes.

Evidence (sql/attr_calls.sql, sql/attr_window_stats.sql; correlation by
analyze.correlate.prepare on the same connection, pairs of confidence >= 0.7):

  feature                   source       domain             what
  dns_p50_ms                ebpf         network_dns        median getaddrinfo of the gateway
                                                            (trace-stamped lookups)
  connect_p95_ms            ebpf         network_egress     p95 kernel connect time (SYN -> ESTABLISHED)
  syn_retransmits_per_s     ebpf         network_egress     lost SYNs of the gateway
  egress_retransmits_per_s  ebpf         network_egress     retransmits on gateway -> provider tuples
  tls_handshake_p50_ms      ebpf         network_egress     median handshake wall time of provider
                                                            calls (tls rows matched to the call's span)
  runq_us_per_wakeup        ebpf         cpu_throttle       mean run-queue delay of a wakeup in the
                                                            gateway's cgroups (kernel_hist)
  reclaim_ms_per_s          ebpf         memory_pressure    reclaim stalls of the gateway's tasks
  http429_share             otel         provider_throttle  provider calls answered 429
  retry_share               application  provider_throttle  requests that needed > 1 attempt
                                                            (retry-storm detector)
  http5xx_share             otel         provider_error     provider calls answered 5xx
  retrieval_server_p50_ms   otel+ebpf    retrieval_backend  retrieval call minus its kernel connect
                                                            and TLS time (server + transfer); the
                                                            lookup, connect and TLS parts are
                                                            listed as evidence

Shift of a feature: s = clip(log2((window + floor) / (reference + floor)), 0, 8): doublings
above the reference; a fall is no evidence. The floor is the smallest amount that matters
(10 ms for latencies, 1 % of the TTFT breach threshold; 0.1 ms of run-queue delay per wakeup;
1 ms/s of reclaim; 0.5/s retransmits; 2 percentage points of a share). DNS and TLS use medians:
the lab's faults slow every lookup or handshake, while a tail would also catch the gateway's
own scheduling stalls (CPU contention, a busy host). Span evidence counts a call in the window
it started in (its connect and handshake happen then). A signal the recorder did not attach
(manifest) gives no shift.

Reference period: the manifest's `baseline` phase from the first scheduled request (the
lab's plan, not its labels); a recording without phases uses its first quarter.

Model, per domain d (one-vs-rest logistic, so two faults at once can both be likely):

  strength(d) = max_j s_j        over the features of d: the strongest of its signals
  log-odds(d) = b_d + w_d * strength(d),   w_d >= 0

The strongest signal counts once: a domain's features often see one mechanism several
times (a lost SYN is a slow connect AND a SYN retransmit), and adding them would count it
twice; several mechanisms of one domain (slow TLS, lost packets, lost SYNs) each reach it
alone. Prior (the untrained model): b_d = -4 (p = 0.018 without evidence) and w_d = 1.5 per
doubling, so 2 doublings give 0.27, 4 give 0.88. Training (`fit`) moves (b_d, w_d) to the MAP
estimate under Gaussian priors around them (sd 2 for b, 1 for w) on windows of training
runs only (analyze.scoring splits runs, seeded); a domain without labelled runs keeps its
prior. posterior(d) = sigmoid(log-odds(d)); posterior(unknown) = prod(1 - posterior(d)),
the chance that no domain holds. The predicted domain is the most likely one when its
posterior is >= 0.5, otherwise `unknown` (abstain); every domain >= 0.5 is *blamed*. Each
hypothesis lists its prior log-odds, the strongest signal's contribution w_d * s in
log-odds, and the shifts of its other signals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyze.slo import RunInfo, RunSlo, SloWindow, Workload, evaluate_con, rfc3339
from runfmt.contracts import fault_domains
from runfmt.errors import ConfigError

UNKNOWN = "unknown"
# the v1 contract's fault domains (docs/contracts/v1/incident-attribution.schema.json)
DOMAINS = tuple(d for d in fault_domains() if d != UNKNOWN)
ABSTAIN_BELOW = 0.5  # a domain needs this posterior to be predicted (and blamed)
MAX_SHIFT = 8.0
PRIOR_INTERCEPT, PRIOR_WEIGHT = -4.0, 1.5
PRIOR_SD_INTERCEPT, PRIOR_SD_WEIGHT = 2.0, 1.0
MODEL_VERSION = 1


@dataclass(frozen=True)
class Feature:
    name: str
    source: str  # ebpf | otel | application (v1 evidence source)
    unit: str
    floor: float
    domains: tuple[str, ...]
    signal: str | None  # kernel signal it needs, None for span/request evidence
    value: Callable[[Mapping[str, Any]], float | None]


def _per_s(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda st: (st[key] or 0) / st["window_s"] if st["window_s"] else None


def _share(num: str, den: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda st: st[num] / st[den] if st[den] else None


def _stat(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda st: st[key]


FEATURES = (
    Feature("dns_p50_ms", "ebpf", "ms", 10.0, ("network_dns",), "dns", _stat("dns_p50_ms")),
    Feature("connect_p95_ms", "ebpf", "ms", 10.0, ("network_egress",), "connect", _stat("connect_p95_ms")),
    Feature("syn_retransmits_per_s", "ebpf", "1/s", 0.5, ("network_egress",), "retransmit",
            _per_s("syn_retransmits")),
    Feature("egress_retransmits_per_s", "ebpf", "1/s", 0.5, ("network_egress",), "retransmit",
            _per_s("egress_retransmits")),
    Feature("tls_handshake_p50_ms", "ebpf", "ms", 10.0, ("network_egress",), "tls", _stat("tls_p50_ms")),
    Feature("runq_us_per_wakeup", "ebpf", "us", 100.0, ("cpu_throttle",), "runqueue",
            lambda st: st["runq_ms"] * 1e3 / st["runq_wakeups"] if st["runq_wakeups"] else None),
    Feature("reclaim_ms_per_s", "ebpf", "ms/s", 1.0, ("memory_pressure",), "mem_reclaim",
            _per_s("reclaim_ms")),
    Feature("http429_share", "otel", "ratio", 0.02, ("provider_throttle",), None, _share("gen_429", "gen_calls")),
    Feature("retry_share", "application", "ratio", 0.02, ("provider_throttle",), None,
            _share("retried", "requests")),
    Feature("http5xx_share", "otel", "ratio", 0.02, ("provider_error",), None, _share("gen_5xx", "gen_calls")),
    Feature("retrieval_server_p50_ms", "otel", "ms", 10.0, ("retrieval_backend",), None,
            _stat("retrieval_server_p50_ms")),
)
FEATURE_NAMES = tuple(f.name for f in FEATURES)
BY_NAME = {f.name: f for f in FEATURES}
SIGNATURES = {d: tuple(f.name for f in FEATURES if d in f.domains) for d in DOMAINS}
# listed with a retrieval hypothesis: the parts of a retrieval call (decomposition)
RETRIEVAL_PARTS = (("retrieval_ms_p50", "otel", "call"), ("retrieval_dns_p50_ms", "ebpf", "dns"),
                   ("retrieval_connect_p50_ms", "ebpf", "connect"), ("retrieval_tls_p50_ms", "ebpf", "tls"),
                   ("retrieval_server_p50_ms", "otel", "server"))


def shift(value: float | None, reference: float | None, floor: float) -> float:
    """Doublings of `value` above `reference`, both lifted by `floor`; 0 without a value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    ref = 0.0 if reference is None or (isinstance(reference, float) and math.isnan(reference)) else reference
    return float(min(MAX_SHIFT, max(0.0, math.log2((value + floor) / (ref + floor)))))


def feature_values(stats: Mapping[str, Any]) -> dict[str, float | None]:
    return {f.name: f.value(stats) for f in FEATURES}


def shifts(window: Mapping[str, Any], reference: Mapping[str, Any],
           signals: Mapping[str, bool] | None = None) -> dict[str, float]:
    """Feature shifts of a window's stats against the reference's; signals: attached per signal."""
    w, r = feature_values(window), feature_values(reference)
    out = {}
    for f in FEATURES:
        recorded = f.signal is None or signals is None or signals.get(f.signal, False)
        out[f.name] = shift(w[f.name], r[f.name], f.floor) if recorded else 0.0
    return out


# --- the model ---------------------------------------------------------------------------


def strongest(domain: str, x: Mapping[str, float]) -> tuple[str | None, float]:
    """(feature, shift) of the domain's largest shift; (None, 0.0) when none moved."""
    best: tuple[str | None, float] = (None, 0.0)
    for f in SIGNATURES[domain]:
        v = float(x.get(f, 0.0))
        if v > best[1]:
            best = (f, v)
    return best


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


@dataclass
class Model:
    """One logistic model per domain over that domain's features (module docstring)."""

    intercepts: dict[str, float]
    weights: dict[str, float]  # log-odds per doubling of the domain's strongest signal
    trained: dict[str, Any] = field(default_factory=dict)  # runs, split, windows, per-domain counts

    @classmethod
    def prior(cls) -> Model:
        return cls({d: PRIOR_INTERCEPT for d in DOMAINS},
                   {d: PRIOR_WEIGHT for d in DOMAINS},
                   {"source": "prior", "runs": []})

    def explain(self, x: Mapping[str, float]) -> dict[str, tuple[float, list[tuple[str, float]]]]:
        """domain -> (posterior, [(feature, contribution in log-odds)]): the strongest feature
        contributes w_d * shift, the others 0 (they are listed with their shifts elsewhere)."""
        out = {}
        for d in DOMAINS:
            name, strength = strongest(d, x)
            parts = [(f, self.weights[d] * strength if f == name else 0.0) for f in SIGNATURES[d]]
            z = self.intercepts[d] + self.weights[d] * strength
            out[d] = (float(_sigmoid(z)), parts)
        return out

    def posteriors(self, x: Mapping[str, float]) -> dict[str, float]:
        post = {d: p for d, (p, _) in self.explain(x).items()}
        post[UNKNOWN] = float(np.prod([1 - p for p in post.values()]))
        return post

    def to_dict(self) -> dict:
        return {"version": MODEL_VERSION, "kind": "one-vs-rest logistic, MAP under Gaussian priors",
                "prior": {"intercept": PRIOR_INTERCEPT, "weight": PRIOR_WEIGHT,
                          "sd_intercept": PRIOR_SD_INTERCEPT, "sd_weight": PRIOR_SD_WEIGHT},
                "abstain_below": ABSTAIN_BELOW,
                "features": {f.name: {"floor": f.floor, "unit": f.unit, "source": f.source,
                                      "domains": list(f.domains)} for f in FEATURES},
                "intercepts": {d: round(v, 6) for d, v in self.intercepts.items()},
                "weights": {d: round(w, 6) for d, w in self.weights.items()},
                "signatures": {d: list(SIGNATURES[d]) for d in DOMAINS},
                "trained": self.trained}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "model") -> Model:
        try:
            if d.get("version") != MODEL_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {MODEL_VERSION}")
            intercepts = {k: float(d["intercepts"][k]) for k in DOMAINS}
            weights = {k: float(d["weights"][k]) for k in DOMAINS}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: not an attribution model: {exc}",
                              "write one with 'sloan score --runs RUNS --save-model FILE'") from None
        return cls(intercepts, weights, dict(d.get("trained") or {}))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Model:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model {path}: cannot read: {exc}",
                              "write one with 'sloan score --runs RUNS --save-model FILE'") from None
        return cls.from_dict(doc, str(path))


def fit_logistic(X: np.ndarray, y: np.ndarray, mean: np.ndarray, sd: np.ndarray,
                 nonneg: np.ndarray, iterations: int = 100) -> np.ndarray:
    """MAP logistic regression: X (n, k) with its intercept column, Gaussian prior (mean, sd),
    parameters flagged in `nonneg` kept >= 0 (projected Newton). Deterministic."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    prec = 1.0 / np.asarray(sd, float) ** 2
    theta = np.where(nonneg, np.maximum(mean, 0.0), mean).astype(float)

    def loss(t):
        z = X @ t
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(prec * (t - mean) ** 2))

    current = loss(theta)
    for _ in range(iterations):
        p = _sigmoid(X @ theta)
        grad = X.T @ (p - y) + prec * (theta - mean)
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(prec)
        # bound parameters at 0 with a gradient pushing them below stay fixed this step
        free = ~(nonneg & (theta <= 0) & (grad > 0))
        step = np.zeros_like(theta)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        alpha = 1.0
        while alpha > 1e-8:
            cand = theta - alpha * step
            cand = np.where(nonneg, np.maximum(cand, 0.0), cand)
            new = loss(cand)
            if new <= current + 1e-12:
                break
            alpha /= 2
        else:
            break
        done = abs(current - new) < 1e-10
        theta, current = cand, new
        if done:
            break
    return theta


def fit(rows: Sequence[Mapping[str, float]], truth: Sequence[frozenset[str] | set[str]],
        trained: Mapping[str, Any] | None = None) -> Model:
    """A model from training windows: `rows` of feature shifts and each window's true domains.

    A domain with no positive window keeps its prior (nothing to learn from)."""
    if len(rows) != len(truth):
        raise ValueError("rows and truth differ in length")
    model = Model.prior()
    counts = {}
    for d in DOMAINS:
        y = np.array([d in t for t in truth], float)
        counts[d] = {"positive": int(y.sum()), "negative": int(len(y) - y.sum())}
        if y.sum() == 0:
            continue
        X = np.column_stack([np.ones(len(rows)), [strongest(d, r)[1] for r in rows]])
        theta = fit_logistic(X, y, np.array([PRIOR_INTERCEPT, PRIOR_WEIGHT]),
                             np.array([PRIOR_SD_INTERCEPT, PRIOR_SD_WEIGHT]), np.array([False, True]))
        model.intercepts[d], model.weights[d] = float(theta[0]), float(theta[1])
    model.trained = {"source": "fit", "windows": len(rows), "per_domain": counts, **(trained or {})}
    return model


# --- one window ------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypothesis:
    domain: str
    posterior: float
    prior_log_odds: float | None
    contributions: tuple[tuple[str, float], ...]  # (feature, log-odds), largest first


@dataclass(frozen=True)
class WindowAttribution:
    window: SloWindow
    stats: dict[str, Any]
    shifts: dict[str, float]
    hypotheses: tuple[Hypothesis, ...]  # every domain and unknown, most likely first

    @property
    def posteriors(self) -> dict[str, float]:
        return {h.domain: h.posterior for h in self.hypotheses}

    @property
    def predicted(self) -> str:
        top = max((h for h in self.hypotheses if h.domain != UNKNOWN), key=lambda h: h.posterior)
        return top.domain if top.posterior >= ABSTAIN_BELOW else UNKNOWN

    @property
    def confidence(self) -> float:
        return self.posteriors[self.predicted]

    @property
    def blamed(self) -> frozenset[str]:
        return frozenset(h.domain for h in self.hypotheses if h.domain != UNKNOWN and h.posterior >= ABSTAIN_BELOW)


def attribute_window(window: SloWindow, stats: Mapping[str, Any], reference: Mapping[str, Any],
                     model: Model, signals: Mapping[str, bool] | None = None) -> WindowAttribution:
    x = shifts(stats, reference, signals)
    explained = model.explain(x)
    hyps = [Hypothesis(d, p, model.intercepts[d],
                       tuple(sorted(((f, c) for f, c in parts), key=lambda fc: -fc[1])))
            for d, (p, parts) in explained.items()]
    p_unknown = float(np.prod([1 - h.posterior for h in hyps]))
    hyps.append(Hypothesis(UNKNOWN, p_unknown, None, ()))
    hyps.sort(key=lambda h: (-h.posterior, h.domain))
    return WindowAttribution(window, dict(stats), x, tuple(hyps))


# --- runs -------------------------------------------------------------------------------


@dataclass
class RunEvidence:
    """What one run holds for attribution: its SLO view and the stats per window."""

    info: RunInfo
    slo: RunSlo
    reference: dict[str, Any]  # stats of the reference period
    reference_ns: tuple[int, int]
    stats: dict[int, dict[str, Any]]  # window index -> stats
    extra: Any = None  # what `also` returned (analyze.scoring: correlation truth)

    @property
    def workload(self) -> Workload:
        return self.slo.workload

    def shift_rows(self) -> list[tuple[SloWindow, dict[str, float]]]:
        return [(w, shifts(self.stats[w.index], self.reference, self.info.signals)) for w in self.slo.windows]


def reference_period(info: RunInfo, slo: RunSlo) -> tuple[int, int]:
    baseline_s = info.phases.get("baseline") or slo.scaling.run_s / 4
    return slo.start_ns, slo.start_ns + int(round(baseline_s * 1e9))


def collect_run(run_dir: Path, config: Mapping, *, budget: float | None = None, window_ms: int | None = None,
                also: Callable[[Any, RunEvidence], Any] | None = None) -> RunEvidence:
    """Opens one run, evaluates its SLOs, correlates it and gathers the window stats.

    `also(con, evidence)` runs on the same connection before it closes (the correlation
    temp tables corr_events / corr_best are there)."""
    import pyarrow as pa

    from analyze import correlate
    from analyze.session import open_runs
    from runfmt import queries

    info = RunInfo.read(run_dir)
    runs = open_runs([Path(run_dir)])
    con = runs.con
    try:
        slo = evaluate_con(con, info, config, budget)
        correlate.prepare(con, window_ms or int(config.get("correlation", {}).get("window_ms",
                                                                                    correlate.DEFAULT_WINDOW_MS)))
        lo, hi = reference_period(info, slo)
        windows = pa.table({"window_no": [0] + [w.index for w in slo.windows],
                            "lo_ns": [lo] + [w.start_ns for w in slo.windows],
                            "hi_ns": [hi] + [w.end_ns for w in slo.windows]},
                           schema=pa.schema([("window_no", pa.int64()), ("lo_ns", pa.int64()),
                                             ("hi_ns", pa.int64())]))
        con.from_arrow(windows).create_view("attr_windows")
        con.from_arrow(pa.table({"pod": pa.array(list(slo.workload.pods), pa.string())})).create_view("attr_pods")
        req = slo.requests
        attempts = np.asarray(req["attempts"], dtype=float)
        con.from_arrow(pa.table({
            "done_ns": pa.array(np.asarray(req["done_ns"], np.int64)),
            "attempts": pa.array(attempts, pa.float64(), mask=np.isnan(attempts)),
        })).create_view("attr_requests")
        # the service name comes from the run's own spans and is bound, never formatted in
        con.execute("CREATE OR REPLACE TEMP TABLE attr_calls AS\n" + queries.load("attr_calls"),
                    {"service": slo.workload.service})
        rows = queries.run(con, "attr_window_stats").to_pylist()
        by_no = {r.pop("window_no"): r for r in rows}
        ev = RunEvidence(info, slo, by_no.pop(0), (lo, hi), by_no)
        if also is not None:
            ev.extra = also(con, ev)
        return ev
    finally:
        con.close()


@dataclass
class RunAttribution:
    evidence: RunEvidence
    windows: list[WindowAttribution]  # violating windows only
    seen_in_training: bool = False  # the model was fitted on this run: not an honest test

    @property
    def info(self) -> RunInfo:
        return self.evidence.info

    def documents(self, validate: bool = True) -> list[dict]:
        from runfmt.contracts import validate as check

        docs = []
        for wa in self.windows:
            doc = incident_document(self.evidence, wa)
            if validate:
                check("v1/incident-attribution", doc)
            docs.append(doc)
        return docs

    def to_dict(self) -> dict:
        ev = self.evidence
        return {"run": ev.info.to_dict(), "workload": ev.workload.to_dict(),
                "seen_in_training": self.seen_in_training,
                "reference": {"start_ns": ev.reference_ns[0], "end_ns": ev.reference_ns[1],
                              "stats": _round(ev.reference)},
                "windows": [{"index": wa.window.index,
                             "start_s": round((wa.window.start_ns - ev.slo.start_ns) / 1e9, 3),
                             "end_s": round((wa.window.end_ns - ev.slo.start_ns) / 1e9, 3),
                             "paging": dict(wa.window.paging), "predicted": wa.predicted,
                             "confidence": round(wa.confidence, 4), "blamed": sorted(wa.blamed),
                             "shifts": {k: round(v, 3) for k, v in wa.shifts.items() if v},
                             "attribution": incident_document(ev, wa)} for wa in self.windows]}


def _round(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()}


def _fmt(v: float | None) -> str:
    return "none" if v is None else f"{v:.3g}"


def hypothesis_evidence(h: Hypothesis, stats: Mapping[str, Any], reference: Mapping[str, Any],
                        x: Mapping[str, float]) -> list[str]:
    """Why a hypothesis stands where it does: its prior, the strongest signal's contribution,
    and the other signals that moved (shift > 0) but do not count."""
    if h.domain == UNKNOWN:
        return ["product of (1 - posterior) over the domains: no domain explains the window"]
    out = [f"prior log-odds {h.prior_log_odds:+.2f}"]
    w, r = feature_values(stats), feature_values(reference)
    for name, contribution in h.contributions:
        f = BY_NAME[name]
        if contribution <= 0 and x.get(name, 0.0) <= 0:
            continue
        moved = (f"{contribution:+.2f} log-odds (strongest signal)" if contribution > 0
                 else "not counted: only the strongest signal counts")
        out.append(f"{name} {_fmt(w[name])} {f.unit} vs {_fmt(r[name])} {f.unit} in the reference, "
                   f"{x.get(name, 0.0):+.2f} doublings: {moved}")
    if h.domain == "retrieval_backend":
        out.append("retrieval call decomposed (p50 ms, window / reference): " + ", ".join(
            f"{part} {_fmt(stats.get(k))} / {_fmt(reference.get(k))}" for k, _, part in RETRIEVAL_PARTS))
    return out


def incident_document(ev: RunEvidence, wa: WindowAttribution, max_ids: int = 20) -> dict:
    """The v1 incident-attribution document of one violating window."""
    slo, w = ev.slo, wa.window
    impact = w.impact(slo.scaling) or ("ttft_ms", 0.0, slo.scaling.seconds("long_fast"))
    sli, burn, window_s = impact
    values, ref_values = feature_values(wa.stats), feature_values(ev.reference)
    evidence = []
    # the signals that moved, most first; at least two, so a quiet window still shows some
    ranked = sorted((f for f in FEATURES if values[f.name] is not None),
                    key=lambda f: (-wa.shifts[f.name], FEATURE_NAMES.index(f.name)))
    for rank, f in enumerate(ranked):
        if rank >= 2 and wa.shifts[f.name] <= 0:
            break
        evidence.append({"signal": f.name, "value": round(float(values[f.name]), 4), "source": f.source})
        if ref_values[f.name] is not None:
            evidence.append({"signal": f"{f.name}_reference", "value": round(float(ref_values[f.name]), 4),
                             "source": f.source})
    if wa.predicted == "retrieval_backend":
        for key, source, _part in RETRIEVAL_PARTS:
            if wa.stats.get(key) is not None:
                evidence.append({"signal": key, "value": round(float(wa.stats[key]), 3), "source": source})
    evidence.append({"signal": "paging_slis", "value": ",".join(sorted(w.paging)), "source": "application"})
    evidence.append({"signal": "burn_window_s", "value": round(window_s, 3), "source": "application"})
    r = slo.requests
    done = np.asarray(r["done_ns"], np.int64)
    in_w = (done >= w.start_ns) & (done < w.end_ns)
    breached = np.zeros(done.shape, bool)
    for key in ("ttft_ms", "request_latency_ms", "token_throughput_tps", "error_rate"):
        breached |= r[f"{key}_status"] == "breach"
    idx = np.flatnonzero(in_w & breached)[:max_ids]
    doc = {
        "incident_id": f"{ev.info.run_id}/w{w.index:03d}",
        "timestamp": rfc3339(w.end_ns),
        "cluster": ev.workload.cluster,
        "namespace": ev.workload.namespace,
        "service": ev.workload.service,
        "predicted_fault_domain": wa.predicted,
        "confidence": round(min(1.0, max(0.0, wa.confidence)), 4),
        "evidence": evidence,
        # the contract counts whole minutes; a scaled window is shorter, so its exact
        # length is in the evidence as burn_window_s
        "slo_impact": {"sli": sli, "burn_rate": round(float(burn), 4),
                       "window_minutes": max(1, math.ceil(window_s / 60))},
        "trace_ids": [str(r["trace_id"][i]) for i in idx if r["trace_id"][i] is not None],
        "request_ids": [str(r["request_id"][i]) for i in idx],
        "fault_hypotheses": [{"domain": h.domain, "posterior": round(min(1.0, max(0.0, h.posterior)), 4),
                              "evidence": hypothesis_evidence(h, wa.stats, ev.reference, wa.shifts)}
                             for h in wa.hypotheses],
    }
    return doc


def attribute_evidence(ev: RunEvidence, model: Model, all_windows: bool = False) -> RunAttribution:
    windows = [attribute_window(w, ev.stats[w.index], ev.reference, model, ev.info.signals)
               for w in ev.slo.windows if all_windows or w.violating]
    return RunAttribution(ev, windows)


@dataclass
class AttributionResult:
    model: Model
    runs: list[RunAttribution]

    def documents(self) -> list[dict]:
        return [d for r in self.runs for d in r.documents()]

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "runs": [r.to_dict() for r in self.runs]}


def attribute(paths, config: Mapping, model: Model | None = None, *, budget: float | None = None
              ) -> AttributionResult:
    """Attributes every violating window of every run below `paths` (the prior model unless
    a trained one is given). A run the model was trained on is marked `seen_in_training`."""
    from analyze.session import find_runs

    model = model or Model.prior()
    trained_on = set(model.trained.get("runs") or [])
    out = []
    for run_dir in find_runs([Path(p) for p in paths]):
        ra = attribute_evidence(collect_run(run_dir, config, budget=budget), model)
        ra.seen_in_training = ra.info.run_id in trained_on
        out.append(ra)
    return AttributionResult(model, out)
