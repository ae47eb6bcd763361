"""The attribution model: one logistic model per fault domain over the strongest shift
of its features, its MAP fit, and its verdict on one window (docs/attribution.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyze.slo import SloWindow
from runfmt import CONFIG_DIR
from runfmt.errors import ConfigError
from analyze.attribution.evidence import DOMAINS, FEATURES, SIGNATURES, UNKNOWN, shifts

ABSTAIN_BELOW = 0.5  # a domain needs this posterior to be predicted (and blamed)
PRIOR_INTERCEPT, PRIOR_WEIGHT = -4.0, 1.5
PRIOR_SD_INTERCEPT, PRIOR_SD_WEIGHT = 2.0, 1.0
MODEL_VERSION = 1
# the model sloan attribute uses by default: `make model` trains it on datasets/labeled
SHIPPED = CONFIG_DIR / "model.json"


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
    """One logistic model per domain over that domain's features (docs/attribution.md)."""

    intercepts: dict[str, float]
    weights: dict[str, float]  # log-odds per doubling of the domain's strongest signal
    trained: dict[str, Any] = field(default_factory=dict)  # runs, split, windows, per-domain counts
    origin: str = field(default="", compare=False)  # the file it was loaded from, for messages

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
    def named(cls, spec: str | Path | None) -> Model:
        """The model a user names: None, the one shipped with the toolkit
        (config/model.json, trained on the committed labelled set); "prior", the untrained
        prior; anything else, a model file (sloan score --save-model)."""
        if spec is None:
            return cls.load(SHIPPED)
        if str(spec) == "prior":
            return cls.prior()
        return cls.load(Path(spec))

    def describe(self) -> str:
        """Which model this is, in one line: where it came from and what it scored."""
        t = self.trained
        if t.get("source") == "prior":
            return "untrained prior (--model prior)"
        where = self.origin or "fitted here"
        parts = [f"{where}: fitted on {len(t.get('runs') or [])} run(s)"]
        if t.get("split"):
            parts.append(f"seed {t['split'].get('seed')}")
        if t.get("git_sha"):
            parts.append(f"git {str(t['git_sha'])[:10]}")
        score = t.get("score")
        if score:
            flag = ", exploratory" if score.get("exploratory") else ""
            shown = {k: "n/a" if score.get(k) is None else f"{score[k]:.3f}" for k in ("precision", "recall")}
            parts.append(f"test P {shown['precision']} R {shown['recall']} on {score['test_runs']} run(s){flag}")
        return ", ".join(parts)

    @classmethod
    def load(cls, path: Path) -> Model:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"model {path}: cannot read: {exc}",
                              "write one with 'sloan score --runs RUNS --save-model FILE'") from None
        model = cls.from_dict(doc, str(path))
        model.origin = "shipped config/model.json" if Path(path) == SHIPPED else str(path)
        return model


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
