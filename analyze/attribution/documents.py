"""What attribution answers per run: the v1 incident-attribution documents, each
hypothesis with the evidence that moved it, and the run-level results."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analyze.slo import RunInfo, rfc3339
from analyze.attribution.evidence import (
    BY_NAME, FEATURE_NAMES, FEATURES, RETRIEVAL_PARTS, UNKNOWN, RunEvidence, collect_run, feature_values,
)
from analyze.attribution.model import Model, WindowAttribution, Hypothesis, attribute_window


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
    for key in w.paging:  # the requests that breached the SLIs that paged
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
