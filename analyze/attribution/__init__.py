"""Attribution: which fault domain burned the SLO in each violating window, and why.

The evidence (feature catalogue, shifts against the run's reference period, what a run
holds per window) is in evidence.py, the per-domain logistic model and its verdict on a
window in model.py, the v1 documents and run-level results in documents.py. How it
works and why: docs/attribution.md.
"""

from analyze.attribution.documents import AttributionResult, RunAttribution, attribute, attribute_evidence
from analyze.attribution.evidence import (
    DOMAINS, FEATURE_NAMES, FEATURES, SIGNATURES, UNKNOWN, RunEvidence, collect_run, shift, shifts,
)
from analyze.attribution.model import (
    ABSTAIN_BELOW, PRIOR_INTERCEPT, PRIOR_WEIGHT, Model, WindowAttribution, attribute_window, fit, fit_logistic,
)

__all__ = ["ABSTAIN_BELOW", "AttributionResult", "DOMAINS", "FEATURES", "FEATURE_NAMES", "Model", "PRIOR_INTERCEPT",
           "PRIOR_WEIGHT", "RunAttribution", "RunEvidence", "SIGNATURES", "UNKNOWN", "WindowAttribution",
           "attribute", "attribute_evidence", "attribute_window", "collect_run", "fit", "fit_logistic", "shift",
           "shifts"]
